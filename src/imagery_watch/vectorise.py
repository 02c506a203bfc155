"""Vectorise: rule rasters to change patches, per chunk, merged across chunk seams.

Two steps, so that the heavy part runs per chunk on any worker and only a small
merge runs at the end:

1. :func:`vectorise_block` turns the core of one chunk (halo already cropped) into
   :class:`BlockPieces`: one polygon and a few counts per 4-connected component of
   equal rule value, plus the component labels along the chunk's four edges.
   :func:`save_pieces` / :func:`load_pieces` store them as one small ``.npz`` file
   per chunk.
2. :func:`merge_pieces` joins the pieces that touch across chunk seams (union-find on
   the edge labels of neighbouring chunks, linear in the number of edge pixels), sums
   their counts, dissolves their polygons, drops patches under each rule's minimum
   mapping unit and builds the patch table of DESIGN.md §3.
   :func:`merge_pieces_in_batches` gives the same table a batch of rows at a time, so
   that a city-sized job never holds all its polygons at once.

Geometries are built and dissolved in *pixel* coordinates (x = column, y = row of the
processing grid; integers, exact in float64), put into one canonical form (valid,
no collinear vertices, :func:`shapely.normalize` order) and only then mapped through
the grid's affine transform. The result, ids, areas, polygons and every attribute,
is bit-for-bit the same whatever the chunking.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import measure

from .classes import M2_PER_MU, LandCover
from .features import upsample
from .io.patches import load_pieces, save_pieces

log = logging.getLogger(__name__)

#: number of land-cover codes counted in the class histograms
N_CLASSES = len(LandCover)

#: scores are summed as integers in units of 2**-24 so that sums are exact, hence
#: independent of the order in which chunks are added up
SCORE_SCALE = float(2**24)

#: column order of the patch table (DESIGN.md §3), geometry last
PATCH_COLUMNS = (
    "patch_id", "rule", "county", "area_m2", "area_mu", "area_ellipsoidal_m2", "farmland_m2",
    "approved_m2", "before_class", "after_class", "score", "status", "reviewer", "reviewed_at",
    "note", "version", "job_id", "epoch_before", "epoch_after",
)

_EDGES = ("top", "bottom", "left", "right")


@dataclass
class BlockPieces:
    """The change components of one chunk core, ready to be merged with its neighbours.

    Arrays have one entry (row) per component ``i``; the component's label in the
    edge arrays is ``i + 1`` (0 = no change).

    Attributes
    ----------
    row0, col0 : int
        Global pixel offset of the chunk core in the processing grid.
    shape : tuple of int
        ``(height, width)`` of the chunk core.
    transform : tuple of 6 float
        The processing grid's global affine ``(a, b, c, d, e, f)``.
    rule : ndarray (n,), uint8
        Rule value (index in the config's rules + 1).
    geometry : ndarray (n,) of shapely.Polygon
        Component outlines in global *pixel* coordinates (x = column, y = row), canonical.
    pixel_count : ndarray (n,), int64
    score_sum : ndarray (n,), int64
        Sum of scores in units of ``1 / SCORE_SCALE`` (exact integer sums).
    score_max : ndarray (n,), float32
    before_hist, after_hist : ndarray (n, N_CLASSES), int64
        Pixel counts per :class:`~imagery_watch.classes.LandCover` code.
    farmland_px, approved_px : ndarray (n,), int64
        Pixels inside farmland / approved construction land.
    county_px : ndarray (n, k), int64
        Pixel counts per county code (column 0 = outside every county).
    anchor : ndarray (n, 2), int64
        Global ``(row, col)`` of the component's first pixel in raster order.
    edges : dict of str to ndarray, int32
        Component labels along the ``top``/``bottom`` rows and ``left``/``right`` columns.
    """

    row0: int
    col0: int
    shape: tuple
    transform: tuple
    rule: np.ndarray
    geometry: np.ndarray
    pixel_count: np.ndarray
    score_sum: np.ndarray
    score_max: np.ndarray
    before_hist: np.ndarray
    after_hist: np.ndarray
    farmland_px: np.ndarray
    approved_px: np.ndarray
    county_px: np.ndarray
    anchor: np.ndarray
    edges: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rule.shape[0])

    # -- plain-array form, for storage (see imagery_watch.io.patches.save_pieces) ------

    def to_arrays(self) -> dict:
        """Return a dict of plain numpy arrays (no objects) describing these pieces.

        Polygons become ragged int32 arrays (``coords``, ``ring_offsets``,
        ``poly_offsets``), which are exact since every vertex is a pixel corner.
        """
        out = {
            "meta": np.array([self.row0, self.col0, self.shape[0], self.shape[1]], np.int64),
            "transform": np.asarray(self.transform, np.float64),
            "rule": self.rule, "pixel_count": self.pixel_count, "score_sum": self.score_sum,
            "score_max": self.score_max, "before_hist": self.before_hist, "after_hist": self.after_hist,
            "farmland_px": self.farmland_px, "approved_px": self.approved_px,
            "county_px": self.county_px, "anchor": self.anchor,
        }
        for name in _EDGES:
            out[f"edge_{name}"] = self.edges[name]
        if len(self):
            _, coords, (ring_offsets, poly_offsets) = shapely.to_ragged_array(self.geometry)
            out["coords"] = coords.astype(np.int32)
            out["ring_offsets"] = ring_offsets.astype(np.int64)
            out["poly_offsets"] = poly_offsets.astype(np.int64)
        else:
            out["coords"] = np.zeros((0, 2), np.int32)
            out["ring_offsets"] = np.zeros(1, np.int64)
            out["poly_offsets"] = np.zeros(1, np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping) -> "BlockPieces":
        """Rebuild pieces from the dict written by :meth:`to_arrays`."""
        row0, col0, h, w = (int(v) for v in arrays["meta"])
        n = int(arrays["rule"].shape[0])
        if n:
            geometry = shapely.from_ragged_array(
                shapely.GeometryType.POLYGON, arrays["coords"].astype(np.float64),
                (arrays["ring_offsets"], arrays["poly_offsets"]))
        else:
            geometry = np.empty(0, dtype=object)
        return cls(
            row0=row0, col0=col0, shape=(h, w), transform=tuple(float(v) for v in arrays["transform"]),
            rule=arrays["rule"], geometry=geometry, pixel_count=arrays["pixel_count"],
            score_sum=arrays["score_sum"], score_max=arrays["score_max"],
            before_hist=arrays["before_hist"], after_hist=arrays["after_hist"],
            farmland_px=arrays["farmland_px"], approved_px=arrays["approved_px"],
            county_px=arrays["county_px"], anchor=arrays["anchor"],
            edges={name: arrays[f"edge_{name}"] for name in _EDGES},
        )


# --------------------------------------------------------------------------------------
# per chunk


def _canonical(geoms: np.ndarray) -> np.ndarray:
    """Put pixel-space polygons in one canonical form (same point set -> same coordinates).

    Snap-rounding to the integer grid makes the topology canonical (holes touching the
    shell, dissolved seams), ``simplify(0)`` drops the collinear vertices a dissolve
    leaves on former seams, and ``normalize`` fixes ring order, start and orientation.
    """
    geoms = shapely.set_precision(geoms, 1.0)
    geoms = shapely.simplify(geoms, 0.0)
    return shapely.normalize(geoms)


def _check_plane(name: str, array, shape: tuple, kinds: str):
    if array is None:
        return None
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} like rule, found {array.shape}")
    if array.dtype.kind not in kinds:
        raise ValueError(f"{name}: expected dtype kind {kinds!r}, found {array.dtype}")
    return array


def vectorise_block(rule: np.ndarray, *, score: np.ndarray, before_class: np.ndarray,
                    after_class: np.ndarray, farmland: np.ndarray | None = None,
                    approved: np.ndarray | None = None, county: np.ndarray | None = None,
                    row0: int, col0: int, transform: Affine,
                    min_pixels: Sequence[int] | None = None) -> BlockPieces:
    """Polygonise the change components of one chunk core and gather their counts.

    A component is a 4-connected set of pixels with the same non-zero rule value.

    Parameters
    ----------
    rule : ndarray (y, x), unsigned integer
        0 = no change, ``k`` = rule ``k - 1`` of the config fired.
    score : ndarray (y, x), float
        Change evidence in [0, 1].
    before_class, after_class : ndarray (y, x), uint8
        :class:`~imagery_watch.classes.LandCover` codes.
    farmland, approved : ndarray (y, x), bool, optional
        True inside farmland / approved construction land.
    county : ndarray (y, x), uint16, optional
        0 = outside every county, ``i`` = county ``i - 1`` of the job's county names.
    row0, col0 : int
        Global pixel offset of this core in the processing grid.
    transform : Affine
        The processing grid's *global* transform (not the chunk's).
    min_pixels : sequence of int, optional
        Minimum mapping unit of each rule in pixels (rule ``k`` at index ``k - 1``).
        Components smaller than theirs that do not touch the block's edges can never grow
        by merging, so they are dropped here instead of being polygonised; the result of
        :func:`merge_pieces` is the same with or without it.

    Returns
    -------
    BlockPieces

    Raises
    ------
    ValueError
        On arrays of different shapes or unexpected dtypes, class codes outside
        :class:`~imagery_watch.classes.LandCover`, or non-finite scores on changed pixels.

    Notes
    -----
    Halo: none; pass the chunk *core*. Components cut by the core's edges are joined by
    :func:`merge_pieces`, so the final patches do not depend on the chunking. Inputs are
    not modified.
    """
    rule = np.asarray(rule)
    if rule.ndim != 2:
        raise ValueError(f"rule: expected a 2-D (y, x) array, found shape {rule.shape}")
    if rule.dtype.kind not in "ub":
        raise ValueError(f"rule: expected an unsigned integer array, found {rule.dtype}")
    shape = rule.shape
    score = _check_plane("score", score, shape, "fiu")
    before_class = _check_plane("before_class", before_class, shape, "ui")
    after_class = _check_plane("after_class", after_class, shape, "ui")
    farmland = _check_plane("farmland", farmland, shape, "bui")
    approved = _check_plane("approved", approved, shape, "bui")
    county = _check_plane("county", county, shape, "ui")
    row0, col0 = int(row0), int(col0)
    affine = tuple(float(v) for v in Affine(*tuple(transform)[:6])[:6])
    h, w = shape

    if rule.dtype != np.uint8:
        if rule.size and rule.max() > 255:
            raise ValueError(f"rule: values are rule indices 1..255, found {rule.max()}")
        rule = rule.astype(np.uint8)
    labels, n = _label(rule)
    if min_pixels is not None and n:
        labels, n = _drop_small_interior(labels, n, rule, np.asarray(min_pixels, np.int64))
    return _pieces(labels, n, rule, score=score, before_class=before_class, after_class=after_class,
                   farmland=farmland, approved=approved, county=county, row0=row0, col0=col0,
                   affine=affine, shape=shape)


def _pieces(labels: np.ndarray, n: int, rule: np.ndarray, *, score, before_class, after_class, farmland,
            approved, county, row0: int, col0: int, affine: tuple, shape: tuple, scale: int = 1) -> BlockPieces:
    """The pieces of labelled components; with ``scale`` > 1 every label pixel stands for
    ``scale x scale`` pixels of a core of ``shape`` (``farmland`` and ``approved`` are then
    given at the core's resolution and counted over those pixels, ``county`` holds a code
    uniform over them)."""
    h, w = shape
    area = scale * scale
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx].astype(np.intp) - 1
    lw = labels.shape[1]

    def edge(line: np.ndarray, length: int) -> np.ndarray:
        return np.repeat(line, scale)[:length].copy() if scale > 1 else line.copy()

    edges = {"top": edge(labels[0], w), "bottom": edge(labels[-1], w),
             "left": edge(labels[:, 0], h), "right": edge(labels[:, -1], h)} if h and w else \
        {name: np.zeros(0, np.int32) for name in _EDGES}

    def count(weights=None) -> np.ndarray:
        if weights is None:
            return np.bincount(lab, minlength=n).astype(np.int64) * area
        return np.rint(np.bincount(lab, weights=weights, minlength=n)).astype(np.int64)

    def hist(codes: np.ndarray, width: int, name: str) -> np.ndarray:
        values = codes.ravel()[idx].astype(np.intp)
        if values.size and (values.max() >= width or values.min() < 0):
            raise ValueError(f"{name}: code {values.max()} outside 0..{width - 1}")
        return np.bincount(lab * width + values, minlength=n * width).reshape(n, width).astype(np.int64) * area

    s = score.ravel()[idx].astype(np.float64)
    if s.size and not np.isfinite(s).all():
        raise ValueError("score: non-finite values on changed pixels; fill them before vectorising")
    s = np.clip(s, 0.0, 1.0)
    score_sum = count(np.rint(s * SCORE_SCALE)) * area
    score_max = np.zeros(n, np.float64)
    np.maximum.at(score_max, lab, s)
    before_hist = hist(before_class, N_CLASSES, "before_class")
    after_hist = hist(after_class, N_CLASSES, "after_class")

    def inside(layer) -> np.ndarray:
        if layer is None:
            return np.zeros(n, np.int64)
        if scale == 1:
            return count((layer.ravel()[idx] != 0).astype(np.float64))
        # counted over the changed label pixels only (a few percent of a chunk), not the whole core
        return count(_block_counts_at(layer, scale, idx // lw, idx % lw).astype(np.float64))

    farmland_px = inside(farmland)
    approved_px = inside(approved)
    if county is not None and idx.size:
        county_px = hist(county, int(county.ravel()[idx].max()) + 1, "county")
    else:
        county_px = np.zeros((n, 1), np.int64)

    # anchor: each component's first pixel in raster order (``idx`` is sorted; a scaled
    # component's first pixel is the first pixel of its first label pixel)
    _, first = np.unique(lab, return_index=True)
    first_px = idx[first]
    anchor = np.stack([row0 + (first_px // lw) * scale, col0 + (first_px % lw) * scale], axis=1).astype(np.int64)
    comp_rule = rule.ravel()[first_px].astype(np.uint8)

    geometry = _polygonise(labels, n, row0, col0, scale)
    log.debug("block (%d, %d) %dx%d: %d components", row0, col0, h, w, n)
    return BlockPieces(
        row0=row0, col0=col0, shape=(h, w), transform=affine, rule=comp_rule, geometry=geometry,
        pixel_count=count(), score_sum=score_sum, score_max=score_max.astype(np.float32),
        before_hist=before_hist, after_hist=after_hist, farmland_px=farmland_px,
        approved_px=approved_px, county_px=county_px, anchor=anchor, edges=edges)


def vectorise_analysis_block(rule: np.ndarray, *, score: np.ndarray, before_class: np.ndarray,
                             after_class: np.ndarray, factor: int, shape: tuple, inexact: np.ndarray,
                             expand: Callable, farmland: np.ndarray | None = None,
                             approved: np.ndarray | None = None, county: np.ndarray | None = None,
                             row0: int, col0: int, transform: Affine,
                             min_pixels: Sequence[int] | None = None) -> BlockPieces:
    """:func:`vectorise_block` of a result given at the analysis resolution; same pieces.

    Components are traced on the analysis pixels and scaled by ``factor``, which is exact
    for components whose every analysis pixel stands for ``factor x factor`` input pixels of
    its own values; the few others (``inexact``: cut to the farmland boundary, partial
    edge blocks, blocks over a county boundary) are expanded to input pixels each over its
    bounding box and traced there. 16 times fewer pixels to label and trace at factor 4.

    Parameters
    ----------
    rule, score, before_class, after_class : ndarray (cy, cx)
        The analysis-resolution result of the core (``cy = ceil(shape[0] / factor)``).
    factor : int
        Input pixels per analysis pixel, along each axis.
    shape : tuple of int
        ``(height, width)`` of the core in input pixels.
    inexact : ndarray (cy, cx), bool
        Changed analysis pixels whose input pixels do not all take its values
        (:func:`~imagery_watch.detect.inexact_pixels`).
    expand : callable
        ``expand((rows, cols))`` with slices of input pixels starting at multiples of
        ``factor`` returns the input-resolution ``(rule, score, before_class,
        after_class)`` of that window (:func:`~imagery_watch.detect.expand_result`).
    farmland, approved, county, row0, col0, transform, min_pixels
        As :func:`vectorise_block`, at input resolution (``shape``).

    Returns
    -------
    BlockPieces
        Whose merge gives the same patches as the pieces of :func:`vectorise_block` on the
        expanded result.
    """
    f = int(factor)
    h, w = (int(v) for v in shape)
    rule = np.asarray(rule)
    cshape = (-(-h // f), -(-w // f))
    if rule.shape != cshape or np.shape(inexact) != cshape:
        raise ValueError(f"rule and inexact: expected analysis shape {cshape} for a {shape} core at factor {f}, "
                         f"found {rule.shape} and {np.shape(inexact)}")
    if rule.dtype != np.uint8:
        raise ValueError(f"rule: expected uint8, found {rule.dtype}")
    farmland = _check_plane("farmland", farmland, (h, w), "bui")
    approved = _check_plane("approved", approved, (h, w), "bui")
    county = _check_plane("county", county, (h, w), "ui")
    row0, col0 = int(row0), int(col0)
    affine = tuple(float(v) for v in Affine(*tuple(transform)[:6])[:6])
    inexact = np.asarray(inexact, bool) & (rule > 0)
    county_c = None
    if county is not None:
        county_c = county[::f, ::f]
        # blocks over a county boundary (or cut by the core's edges) matter on changed pixels only
        rows, cols = np.nonzero(rule)
        inexact[rows, cols] |= ~_uniform_blocks_at(county, f, rows, cols)

    labels_all, n = _label(rule)
    labels = labels_all
    fine_ids = np.unique(labels[inexact]) if inexact.any() else np.zeros(0, np.int32)
    simple = rule
    if fine_ids.size:
        # the other components keep their shapes and raster order: renumber, no relabelling
        fine = np.isin(labels_all, fine_ids)
        simple = np.where(fine, 0, rule).astype(np.uint8)
        kept = np.ones(n + 1, bool)
        kept[0] = False
        kept[fine_ids] = False
        remap = np.zeros(n + 1, np.int32)
        n = int(kept.sum())
        remap[kept] = np.arange(1, n + 1, dtype=np.int32)
        labels = remap[labels_all]
    if min_pixels is not None and n:
        coarse_min = -(-np.asarray(min_pixels, np.int64) // (f * f))  # s * f**2 < m  <=>  s < ceil(m / f**2)
        labels, n = _drop_small_interior(labels, n, simple, coarse_min)
    pieces = _pieces(labels, n, simple, score=score, before_class=before_class, after_class=after_class,
                     farmland=farmland, approved=approved,
                     county=county_c, row0=row0, col0=col0, affine=affine, shape=(h, w), scale=f)
    if not fine_ids.size:
        return pieces

    # the components that need input pixels, each over its own bounding box
    parts = []
    boxes = ndimage.find_objects(np.where(fine, labels_all, 0))
    for cid in fine_ids:
        by, bx = boxes[cid - 1]
        wy = slice(by.start * f, min(by.stop * f, h))
        wx = slice(bx.start * f, min(bx.stop * f, w))
        wshape = (wy.stop - wy.start, wx.stop - wx.start)
        sub = expand((wy, wx))
        member = upsample(labels_all[by, bx] == cid, f, wshape)
        fine_rule = np.where(member, sub[0], 0).astype(np.uint8)
        flabels, fn = _label(fine_rule)
        if min_pixels is not None and fn:
            # the window holds the whole component: only the core's edges can continue it
            touch = (wy.start == 0, wy.stop == h, wx.start == 0, wx.stop == w)
            flabels, fn = _drop_small_interior(flabels, fn, fine_rule, np.asarray(min_pixels, np.int64),
                                               touch=touch)
        if not fn:
            continue

        def cut(a, wy=wy, wx=wx):
            return None if a is None else a[wy, wx]

        parts.append((_pieces(flabels, fn, fine_rule, score=sub[1], before_class=sub[2], after_class=sub[3],
                              farmland=cut(farmland), approved=cut(approved), county=cut(county),
                              row0=row0 + wy.start, col0=col0 + wx.start, affine=affine, shape=wshape),
                      (wy, wx)))
    return _join(pieces, parts)


def _join(a: BlockPieces, parts: list) -> BlockPieces:
    """The pieces of a core (``a``) and of windows of it (``(pieces, (rows, cols))``, all
    components disjoint) as the pieces of the core."""
    if not parts:
        return a
    h, w = a.shape
    edges = {name: e.copy() for name, e in a.edges.items()}
    shift = len(a)
    for b, (wy, wx) in parts:
        for name, on_edge, lo in (("top", wy.start == 0, wx.start), ("bottom", wy.stop == h, wx.start),
                                  ("left", wx.start == 0, wy.start), ("right", wx.stop == w, wy.start)):
            if on_edge:
                line = b.edges[name]
                np.copyto(edges[name][lo:lo + line.size], line + np.int32(shift), where=line > 0)
        shift += len(b)
    every = [a] + [b for b, _ in parts]
    width = max(p.county_px.shape[1] for p in every)

    def cat(name):
        return np.concatenate([getattr(p, name) for p in every])

    county_px = np.zeros((shift, width), np.int64)
    k = 0
    for p in every:
        county_px[k:k + len(p), :p.county_px.shape[1]] = p.county_px
        k += len(p)
    return BlockPieces(
        row0=a.row0, col0=a.col0, shape=a.shape, transform=a.transform, rule=cat("rule"),
        geometry=cat("geometry"), pixel_count=cat("pixel_count"), score_sum=cat("score_sum"),
        score_max=cat("score_max"), before_hist=cat("before_hist"), after_hist=cat("after_hist"),
        farmland_px=cat("farmland_px"), approved_px=cat("approved_px"), county_px=county_px,
        anchor=cat("anchor"), edges=edges)


def _blocks_at(a: np.ndarray, factor: int, rows: np.ndarray, cols: np.ndarray) -> tuple:
    """The ``factor x factor`` blocks of ``a`` at block ``(rows, cols)``, as an (n, factor,
    factor) array, and whether each of their pixels lies inside ``a`` (None: all do; pixels
    of blocks cut by the edges repeat the last row or column)."""
    h, w = a.shape
    if not (h % factor or w % factor):
        # a strided (y, x, dy, dx) view of the blocks, even of a cropped plane: no copy
        s0, s1 = a.strides
        blocks = np.lib.stride_tricks.as_strided(a, (h // factor, w // factor, factor, factor),
                                                 (s0 * factor, s1 * factor, s0, s1), writeable=False)
        return blocks[rows, cols], None
    d = np.arange(factor)
    r = rows.astype(np.intp)[:, None] * factor + d
    c = cols.astype(np.intp)[:, None] * factor + d
    inside = (r < h)[:, :, None] & (c < w)[:, None, :]
    r, c = np.minimum(r, h - 1), np.minimum(c, w - 1)
    return a[r[:, :, None], c[:, None, :]], inside


def _block_counts_at(mask: np.ndarray, factor: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Non-zero pixels of ``mask`` in its ``factor x factor`` blocks at ``(rows, cols)``
    (blocks cut by the edges count their pixels inside): ``block_count(mask != 0,
    factor)[rows, cols]`` without counting the blocks nobody asks for."""
    blocks, inside = _blocks_at(mask, factor, rows, cols)
    nonzero = blocks if blocks.dtype == bool else blocks != 0
    if inside is not None:
        nonzero = nonzero & inside
    return nonzero.sum(axis=(1, 2))


def _uniform_blocks_at(a: np.ndarray, factor: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether the ``factor x factor`` blocks of ``a`` at ``(rows, cols)`` are whole (not cut by
    the edges) and hold one value."""
    blocks, inside = _blocks_at(a, factor, rows, cols)
    uniform = (blocks == blocks[:, :1, :1]).all(axis=(1, 2))
    if inside is not None:
        uniform &= inside.all(axis=(1, 2))
    return uniform


def _label(rule: np.ndarray) -> tuple:
    """4-connected components of equal non-zero value; labels 1..n (int32) in raster order.

    One pass of :func:`skimage.measure.label` over the bounding box of the changed pixels
    (changes are sparse in most chunks).
    """
    labels = np.zeros(rule.shape, np.int32)
    rows = np.flatnonzero(rule.any(axis=1))
    if rows.size == 0:
        return labels, 0
    cols = np.flatnonzero(rule.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    sub, n = measure.label(rule[box], background=0, connectivity=1, return_num=True)
    labels[box] = sub
    return labels, int(n)


def _drop_small_interior(labels: np.ndarray, n: int, rule: np.ndarray, min_pixels: np.ndarray,
                         touch: tuple = (True, True, True, True)) -> tuple:
    """Remove components below their rule's minimum that do not touch the block's edges
    (of the edges ``top, bottom, left, right`` flagged in ``touch``: the others are not
    chunk edges)."""
    flat = labels.ravel()
    changed = np.flatnonzero(flat)
    sizes = np.bincount(flat[changed], minlength=n + 1)
    comp_rule = np.zeros(n + 1, np.int64)
    comp_rule[flat[changed]] = rule.ravel()[changed]  # every pixel of a component has its rule
    touches = np.zeros(n + 1, bool)
    for edge, counts in zip((labels[0], labels[-1], labels[:, 0], labels[:, -1]), touch):
        if counts:
            touches[edge] = True  # may continue in the next block
    drop = ~touches & (sizes < min_pixels[np.maximum(comp_rule, 1) - 1])
    drop[0] = False
    if not drop.any():
        return labels, n
    remap = np.zeros(n + 1, np.int32)
    kept = np.flatnonzero(~drop[1:]) + 1
    remap[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    return remap[labels], int(kept.size)


#: GDAL's polygoniser costs about the same for every pixel of the raster it is given,
#: changed or not (12 ns a pixel, against 0.25 ms a call): components scattered over a
#: chunk are packed side by side into a smaller raster first when that raster is at most
#: this fraction of their bounding box
PACK_FRACTION = 0.5


def _pack(labels: np.ndarray, n: int) -> tuple | None:
    """Labels 1..n moved, each as a whole, into a smaller raster (shelves of bounding boxes).

    Returns ``(packed, shift)``: the packed labels and, per label ``i + 1``, the ``(x, y)``
    to add to its packed pixel coordinates to get back to ``labels``' own; None when packing
    would not save much (components cover most of the box, or a label is missing).

    Every component keeps its pixels' relative positions and its own value, so that GDAL
    traces it the same there; components may touch other components' boxes but not share
    pixels.
    """
    boxes = ndimage.find_objects(labels, max_label=n)
    if any(b is None for b in boxes):
        return None
    r0 = np.array([b[0].start for b in boxes], np.intp)
    c0 = np.array([b[1].start for b in boxes], np.intp)
    hs = np.array([b[0].stop for b in boxes], np.intp) - r0
    ws = np.array([b[1].stop for b in boxes], np.intp) - c0
    budget = PACK_FRACTION * labels.size
    area = int((hs * ws).sum())
    if area > 0.8 * budget:
        return None
    # shelves, tallest boxes first, about as wide as a square of the boxes' area
    width = max(int(ws.max()), int(np.sqrt(area * 1.25)))
    px = np.zeros(n, np.intp)
    py = np.zeros(n, np.intp)
    x = y = shelf = 0
    order = np.argsort(-hs, kind="stable")
    for k, bh, bw in zip(order.tolist(), hs[order].tolist(), ws[order].tolist()):
        if x + bw > width:
            x, y, shelf = 0, y + shelf, 0
        px[k], py[k] = x, y
        x += bw
        shelf = max(shelf, bh)
    height = y + shelf
    if height * width > budget:
        return None
    rows, cols = np.nonzero(labels)
    values = labels[rows, cols]
    lab = values.astype(np.intp) - 1
    packed = np.zeros((height, width), labels.dtype)
    packed[rows - r0[lab] + py[lab], cols - c0[lab] + px[lab]] = values
    return packed, np.column_stack([c0 - px, r0 - py]).astype(np.float64)


def _polygonise(labels: np.ndarray, n: int, row0: int, col0: int, scale: int = 1) -> np.ndarray:
    """One canonical polygon per label, in global pixel coordinates (a label pixel is
    ``scale x scale`` pixels)."""
    if n == 0:
        return np.empty(0, dtype=object)
    rings, ring_ends, poly_ends, values = [], [], [], []
    n_rings = 0
    # only the bounding box of the changed pixels is traced (changes are sparse in most chunks)
    rows = np.flatnonzero(labels.any(axis=1))
    cols = np.flatnonzero(labels.any(axis=0))
    labels = labels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    row0, col0 = row0 + int(rows[0]) * scale, col0 + int(cols[0]) * scale
    packed = _pack(labels, n)
    raster = labels if packed is None else packed[0]
    for geojson, value in rasterio.features.shapes(raster, mask=raster > 0, connectivity=4,
                                                    transform=Affine.identity()):
        for ring in geojson["coordinates"]:
            rings.append(np.asarray(ring, np.float64))
            n_rings += 1
            ring_ends.append(n_rings)
        poly_ends.append(n_rings)
        values.append(int(value))
    values = np.asarray(values, np.intp) - 1
    if values.size != n or np.bincount(values, minlength=n).max() != 1:  # pragma: no cover
        raise RuntimeError("polygonising did not give exactly one polygon per component")
    coords = np.concatenate(rings)
    ring_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int64)
    poly_offsets = np.concatenate([[0], poly_ends]).astype(np.int64)
    if packed is not None:  # back to the labels' pixel coordinates (integers: exact)
        per_poly = np.diff(ring_offsets[poly_offsets])
        coords += np.repeat(packed[1][values], per_poly, axis=0)
    coords = coords * scale + np.array([col0, row0], np.float64)
    polys = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, poly_offsets))
    geometry = np.empty(n, dtype=object)
    geometry[values] = polys
    # GDAL's polygons of 4-connected regions are already valid, snapped to pixel corners
    # and free of collinear vertices (checked against _canonical on tens of thousands of
    # random components in the tests); only ring order and start need fixing
    return shapely.normalize(geometry)


# --------------------------------------------------------------------------------------
# merge across seams


def _sparse_edge(labels: np.ndarray, start: int, gid0: int) -> tuple:
    """Global positions and global component ids of the changed pixels of one edge."""
    pos = np.flatnonzero(labels)
    return pos + start, labels[pos].astype(np.int64) - 1 + gid0


def _seam_pairs(a: tuple, b: tuple, rule: np.ndarray) -> np.ndarray:
    """Pairs of component ids facing each other across a seam, with the same rule."""
    _, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    ga, gb = a[1][ia], b[1][ib]
    same = rule[ga] == rule[gb]
    return np.stack([ga[same], gb[same]])


def _neighbours(index: dict, key: int, lo: int, hi: int) -> list:
    """Blocks of ``index[key]`` (sorted ``(start, length, block)``) overlapping [lo, hi)."""
    entries = index.get(key)
    if not entries:
        return []
    starts = [e[0] for e in entries]
    k = max(bisect_right(starts, lo) - 1, 0)
    out = []
    while k < len(entries) and entries[k][0] < hi:
        if entries[k][0] + entries[k][1] > lo:
            out.append(entries[k][2])
        k += 1
    return out


#: patches per batch of :func:`merge_pieces_in_batches`: bounds the shapely geometries that
#: are alive at once (a batch of 2,048 patches of a city holds about 0.2 M vertices)
MERGE_BATCH = 2048


@dataclass
class _Gathered:
    """All chunks' pieces as compact arrays (one row per piece, pieces of chunk after chunk).

    Geometries stay as one ragged int32 array (:meth:`BlockPieces.to_arrays` layout,
    offsets made global), 8 bytes a vertex: the 3,844 chunks of a 16 Gpx job took
    0.18 GiB loaded as shapely objects, and every whole-table step on them as much again.
    """

    transform: tuple
    rule: np.ndarray
    pixel_count: np.ndarray
    score_sum: np.ndarray
    before_hist: np.ndarray
    after_hist: np.ndarray
    farmland_px: np.ndarray
    approved_px: np.ndarray
    county_px: np.ndarray
    anchor: np.ndarray
    coords: np.ndarray
    ring_offsets: np.ndarray
    poly_offsets: np.ndarray
    pairs: np.ndarray
    n_chunks: int


def _widened(a: np.ndarray, n: int, width: int) -> np.ndarray:
    """``a`` (n, k) as int64 (n, width): columns cut or zero-padded."""
    out = np.zeros((n, width), np.int64)
    k = min(a.shape[1], width) if a.ndim == 2 else 0
    out[:, :k] = a[:, :k]
    return out


def _gather(pieces_iterable: Iterable[BlockPieces], *, n_rules: int, rule_names: list,
            n_county: int) -> _Gathered:
    """One pass over the chunks: check them, keep their counts, seam edges and polygons
    compactly, then match the seams (pairs of piece ids to join)."""
    transform = None
    seen: set = set()
    blocks: list = []  # per chunk: (row0, col0, height, width, number of pieces)
    seams: list = []  # per chunk: sparse edges {name: (positions, global ids)}
    parts: dict = {name: [] for name in ("rule", "pixel_count", "score_sum", "before_hist", "after_hist",
                                         "farmland_px", "approved_px", "county_px", "anchor", "coords",
                                         "ring_offsets", "poly_offsets")}
    n_seen = n_rings = n_coords = 0
    for p in pieces_iterable:
        if transform is None:
            transform = tuple(p.transform)
        elif tuple(p.transform) != transform:
            raise ValueError(f"pieces of chunk ({p.row0}, {p.col0}) come from another grid: transform "
                             f"{p.transform} != {transform}; merge the pieces of one job only")
        if (p.row0, p.col0) in seen:
            raise ValueError(f"chunk ({p.row0}, {p.col0}) appears twice; pass each chunk's pieces once")
        seen.add((p.row0, p.col0))
        if p.county_px.shape[1] > n_county and p.county_px[:, n_county:].any():
            raise ValueError(f"chunk ({p.row0}, {p.col0}): county code {p.county_px.shape[1] - 1} has no name; "
                             f"pass all {p.county_px.shape[1] - 1} county_names")
        n = len(p)
        # keep only the changed pixels of the edges: the dense edge arrays of every chunk
        # of a city would add up to gigabytes (4 x chunk_px labels per chunk)
        seams.append({name: _sparse_edge(p.edges[name], p.row0 if name in ("left", "right") else p.col0, n_seen)
                      for name in _EDGES})
        blocks.append((p.row0, p.col0, p.shape[0], p.shape[1], n))
        n_seen += n
        if n == 0:
            continue
        rule = np.asarray(p.rule, np.int64)
        if rule.min() < 1 or rule.max() > n_rules:
            raise ValueError(f"rule value {int(rule.max())} has no name; expected 1..{n_rules} "
                             f"for rule_names {rule_names}")
        parts["rule"].append(rule)
        for name in ("pixel_count", "score_sum", "farmland_px", "approved_px"):
            parts[name].append(np.asarray(getattr(p, name), np.int64))
        parts["before_hist"].append(_widened(p.before_hist, n, N_CLASSES))
        parts["after_hist"].append(_widened(p.after_hist, n, N_CLASSES))
        parts["county_px"].append(_widened(p.county_px, n, n_county))
        parts["anchor"].append(_widened(p.anchor, n, 2))
        _, coords, (ring_offsets, poly_offsets) = shapely.to_ragged_array(p.geometry)
        parts["coords"].append(coords.astype(np.int32))  # exact: every vertex is a pixel corner
        parts["ring_offsets"].append(ring_offsets[1:].astype(np.int64) + n_coords)
        parts["poly_offsets"].append(poly_offsets[1:].astype(np.int64) + n_rings)
        n_coords += coords.shape[0]
        n_rings += ring_offsets.shape[0] - 1

    def cat(name, shape):
        return np.concatenate(parts.pop(name)) if parts[name] else np.zeros(shape, np.int64)

    arrays = {name: cat(name, shape) for name, shape in (
        ("rule", (0,)), ("pixel_count", (0,)), ("score_sum", (0,)), ("farmland_px", (0,)), ("approved_px", (0,)),
        ("before_hist", (0, N_CLASSES)), ("after_hist", (0, N_CLASSES)), ("county_px", (0, n_county)),
        ("anchor", (0, 2)))}
    coords = np.concatenate(parts["coords"]) if parts["coords"] else np.zeros((0, 2), np.int32)
    ring_offsets = np.concatenate([np.zeros(1, np.int64)] + parts["ring_offsets"])
    poly_offsets = np.concatenate([np.zeros(1, np.int64)] + parts["poly_offsets"])
    del parts

    # -- seams: pairs of pieces facing each other across the seams of neighbouring chunks
    rule = arrays["rule"]
    sizes = [b[4] for b in blocks]
    by_left: dict = {}
    by_top: dict = {}
    for k, (row0, col0, h, w, _n) in enumerate(blocks):
        by_left.setdefault(col0, []).append((row0, h, k))
        by_top.setdefault(row0, []).append((col0, w, k))
    for d in (by_left, by_top):
        for entries in d.values():
            entries.sort()
    pairs = []
    for k, (row0, col0, h, w, n) in enumerate(blocks):
        if n == 0:
            continue
        for q in _neighbours(by_left, col0 + w, row0, row0 + h):
            if sizes[q]:
                pairs.append(_seam_pairs(seams[k]["right"], seams[q]["left"], rule))
        for q in _neighbours(by_top, row0 + h, col0, col0 + w):
            if sizes[q]:
                pairs.append(_seam_pairs(seams[k]["bottom"], seams[q]["top"], rule))
    pairs = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64)
    return _Gathered(transform=transform, coords=coords, ring_offsets=ring_offsets, poly_offsets=poly_offsets,
                     pairs=pairs, n_chunks=len(blocks), **arrays)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``concatenate([arange(a, b) for a, b in zip(lo, hi)])``, without the loop."""
    n = hi - lo
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    return np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(total, dtype=np.int64)


def _take_polygons(g: _Gathered, idx: np.ndarray) -> np.ndarray:
    """Shapely polygons of pieces ``idx`` (the same objects :func:`load_pieces` gives)."""
    if idx.size == 0:
        return np.empty(0, dtype=object)
    r_lo, r_hi = g.poly_offsets[idx], g.poly_offsets[idx + 1]
    rings = _ranges(r_lo, r_hi)
    c_lo, c_hi = g.ring_offsets[rings], g.ring_offsets[rings + 1]
    coords = g.coords[_ranges(c_lo, c_hi)].astype(np.float64)
    ring_offsets = np.concatenate([[0], np.cumsum(c_hi - c_lo)]).astype(np.int64)
    poly_offsets = np.concatenate([[0], np.cumsum(r_hi - r_lo)]).astype(np.int64)
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, poly_offsets))


def merge_pieces_in_batches(pieces_iterable: Iterable[BlockPieces], *, rule_names: Sequence[str],
                            min_area_m2: Sequence[float], pixel_area_m2: float, crs,
                            county_names: Sequence[str] = (), provenance: Mapping,
                            batch_size: int = MERGE_BATCH) -> Iterator:
    """Join the pieces of all chunks into the patch table, yielded in batches of rows.

    Same parameters, checks and rows as :func:`merge_pieces`, which is this function's
    batches put together; ``batch_size`` is the most rows per batch.

    Yields
    ------
    geopandas.GeoDataFrame
        Consecutive rows of the patch table (columns :data:`PATCH_COLUMNS` and
        ``geometry``), in ``patch_id`` order; at least one frame (empty when there is no
        patch).

    Notes
    -----
    Memory: the chunks are read once and kept as compact arrays (a few numbers per piece,
    8 bytes per polygon vertex); shapely geometries exist for one batch at a time. Nothing
    is computed before the first frame is asked for; the checks of :func:`merge_pieces`
    raise then.
    """
    import geopandas
    import pyproj

    rule_names = [str(r) for r in rule_names]
    min_area = np.asarray(list(min_area_m2), np.float64)
    if min_area.shape != (len(rule_names),):
        raise ValueError(f"min_area_m2: expected {len(rule_names)} values (one per rule), found {min_area.size}")
    pixel_area_m2 = float(pixel_area_m2)
    if not pixel_area_m2 > 0:
        raise ValueError(f"pixel_area_m2: expected > 0, found {pixel_area_m2}")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
    crs = pyproj.CRS.from_user_input(crs)
    county_names = [str(c) for c in county_names]
    n_county = len(county_names) + 1

    g = _gather(pieces_iterable, n_rules=len(rule_names), rule_names=rule_names, n_county=n_county)
    total = int(g.rule.shape[0])
    graph = coo_matrix((np.ones(g.pairs.shape[1], np.int8), (g.pairs[0], g.pairs[1])), shape=(total, total))
    n_groups, group = connected_components(graph, directed=False)
    log.info("merge: %d chunks, %d pieces, %d seam links, %d components", g.n_chunks, total,
             g.pairs.shape[1], n_groups)
    g.pairs = None

    # -- sum the counts per merged component -------------------------------------------
    def summed(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_groups,) + values.shape[1:], values.dtype)
        np.add.at(out, group, values)
        return out

    pixel_count = summed(g.pixel_count)
    key = g.anchor[:, 0] * (1 << 31) + g.anchor[:, 1]
    first = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, group, key)
    g_rule = np.zeros(n_groups, np.int64)
    g_rule[group] = g.rule

    keep = np.flatnonzero(pixel_count * pixel_area_m2 >= min_area[g_rule - 1]) if n_groups else \
        np.zeros(0, np.intp)
    log.info("merge: %d of %d components at or above the minimum mapping unit", keep.size, n_groups)

    # -- the table, without geometries, in patch_id order ----------------------------------
    rows_k = first[keep] >> 31
    cols_k = first[keep] & ((1 << 31) - 1)
    names = np.array(rule_names, dtype=object)
    rule_k = names[g_rule[keep] - 1] if keep.size else np.zeros(0, object)
    patch_id = np.array([f"{r}-{row:07d}-{col:07d}" for r, row, col in zip(rule_k, rows_k, cols_k)],
                        dtype=object)
    srt = np.argsort(patch_id, kind="stable") if keep.size else np.zeros(0, np.intp)
    keep, patch_id, rule_k = keep[srt], patch_id[srt], rule_k[srt]
    n_keep = keep.size
    labels = np.array([c.label for c in LandCover], dtype=object)
    area_m2 = pixel_count[keep] * pixel_area_m2
    if n_county > 1 and n_keep:
        inside = summed(g.county_px)[keep, 1:]
        best = np.argmax(inside, axis=1)
        county = np.where(inside.max(axis=1) > 0, np.array(county_names, dtype=object)[best], "")
    else:
        county = np.full(n_keep, "", dtype=object)
    columns = {
        "patch_id": patch_id,
        "rule": rule_k,
        "county": county.astype(object),
        "area_m2": area_m2.astype(np.float64),
        "area_mu": area_m2 / M2_PER_MU,
        "area_ellipsoidal_m2": None,  # from the geometries, per batch
        "farmland_m2": summed(g.farmland_px)[keep] * pixel_area_m2,
        "approved_m2": summed(g.approved_px)[keep] * pixel_area_m2,
        "before_class": labels[np.argmax(summed(g.before_hist)[keep], axis=1)] if n_keep else np.zeros(0, object),
        "after_class": labels[np.argmax(summed(g.after_hist)[keep], axis=1)] if n_keep else np.zeros(0, object),
        "score": summed(g.score_sum)[keep] / SCORE_SCALE / np.maximum(pixel_count[keep], 1),
        "status": np.full(n_keep, "pending", dtype=object),
        "reviewer": np.full(n_keep, "", dtype=object),
        "reviewed_at": np.full(n_keep, "", dtype=object),
        "note": np.full(n_keep, "", dtype=object),
        "version": np.zeros(n_keep, np.int64),
        "job_id": np.full(n_keep, str(provenance.get("job_id", "")), dtype=object),
        "epoch_before": np.full(n_keep, str(provenance.get("epoch_before", "")), dtype=object),
        "epoch_after": np.full(n_keep, str(provenance.get("epoch_after", "")), dtype=object),
    }
    for name in ("pixel_count", "score_sum", "before_hist", "after_hist", "farmland_px", "approved_px",
                 "county_px", "anchor", "rule"):
        setattr(g, name, None)  # summed; only the polygons are needed from here on

    # -- geometries, a batch at a time: dissolve the pieces of components that cross a seam
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(n_groups + 1))
    del group
    for b0 in range(0, max(n_keep, 1), batch_size):
        comps = keep[b0:b0 + batch_size]
        lo, hi = starts[comps], starts[comps + 1]
        polys = _take_polygons(g, order[_ranges(lo, hi)])
        ends = np.cumsum(hi - lo)
        geoms = np.empty(comps.size, dtype=object)
        for k, (end, n) in enumerate(zip(ends, hi - lo)):
            if n == 1:
                geoms[k] = polys[end - 1]
            else:
                geoms[k] = _canonical(np.array([shapely.union_all(polys[end - n:end])], dtype=object))[0]
        del polys
        geoms = _to_map(geoms, g.transform)
        batch = {k: (v[b0:b0 + batch_size] if v is not None else ellipsoidal_area_m2(geoms, crs))
                 for k, v in columns.items()}
        yield geopandas.GeoDataFrame(batch, geometry=geopandas.GeoSeries(geoms, crs=crs), crs=crs)


def merge_pieces(pieces_iterable: Iterable[BlockPieces], *, rule_names: Sequence[str],
                 min_area_m2: Sequence[float], pixel_area_m2: float, crs,
                 county_names: Sequence[str] = (), provenance: Mapping) -> "geopandas.GeoDataFrame":  # noqa: F821
    """Join the pieces of all chunks into the patch table.

    Parameters
    ----------
    pieces_iterable : iterable of BlockPieces
        The pieces of every chunk of one processing grid (chunks tile the grid without
        overlap; any order, any chunk shapes).
    rule_names : sequence of str
        Rule names in config order (rule value ``k`` is ``rule_names[k - 1]``).
    min_area_m2 : sequence of float
        Minimum mapping unit of each rule, same order; smaller patches are dropped.
    pixel_area_m2 : float
        Area of one grid pixel in m2 (0.04 at 0.2 m).
    crs : pyproj.CRS, rasterio CRS, str or int
        CRS of the processing grid (projected).
    county_names : sequence of str
        County ``i`` of the county raster is ``county_names[i - 1]``.
    provenance : mapping
        ``job_id``, ``epoch_before``, ``epoch_after`` written to every patch.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per patch with the columns of :data:`PATCH_COLUMNS` and a ``geometry``
        (Polygon in the grid CRS), sorted by ``patch_id``.

    Raises
    ------
    ValueError
        On pieces of different grids (transform), duplicate chunks, rule values or
        county codes without a name, or a ``min_area_m2`` of the wrong length.

    Notes
    -----
    Cost is linear in the number of pieces and edge pixels: seams are matched through
    the chunks' edge labels, and only the polygons of one merged component are unioned.
    Identical output (ids, areas, geometries) for any chunking. The whole table is held
    in memory: a city-sized job streams it with :func:`merge_pieces_in_batches` instead.
    """
    import pandas as pd

    batches = list(merge_pieces_in_batches(pieces_iterable, rule_names=rule_names, min_area_m2=min_area_m2,
                                           pixel_area_m2=pixel_area_m2, crs=crs, county_names=county_names,
                                           provenance=provenance, batch_size=MERGE_BATCH))
    if len(batches) == 1:
        return batches[0]
    return pd.concat(batches, ignore_index=True)


def _to_map(geoms: np.ndarray, transform) -> np.ndarray:
    """Map pixel-space (col, row) geometries through the grid's affine, then normalise."""
    if geoms.size == 0:
        return geoms
    a, b, c, d, e, f = transform[:6]

    def affine(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([a * col + b * row + c, d * col + e * row + f])

    return shapely.normalize(shapely.transform(geoms, affine))


#: polygons of a call to :func:`ellipsoidal_area_m2` whose fast area is checked against the
#: geodesic one (the largest, and some spread over the call), and the agreement required
#: (relative, and absolute in m2: the geodesic sums lose about 1e-4 m2 on any polygon)
AREA_CHECKS = 8
AREA_CHECK_RTOL = 1e-6
AREA_CHECK_ATOL_M2 = 1e-3


def ellipsoidal_area_m2(geoms, crs) -> np.ndarray:
    """Area of polygons on the ellipsoid of ``crs`` (land-survey area), in m2.

    For a projected ``crs``, each polygon's plane area (in m2) divided by the projection's
    areal scale factor at its centroid (:meth:`pyproj.Proj.get_factors`), all polygons at
    once. The scale varies across a polygon (by about 2e-5 across 5 km, 70 km from a
    Gauss-Kruger meridian), but its first-order change cancels about the centroid: what is
    left grows as the square of the polygon's extent over the earth's radius, below 1e-9
    for a connected patch of a few kilometres (parts of a multipolygon far apart would
    not be). On the 11,760 patches of the 4 Gpx city benchmark it agrees with
    :meth:`pyproj.Geod.polygon_area_perimeter`, ring by ring, to 5e-8 (the geodesic sums
    themselves lose about 1e-7 on small polygons). A few polygons of every call are
    checked against the geodesic area (:data:`AREA_CHECKS`); where they differ by more
    than :data:`AREA_CHECK_RTOL` and :data:`AREA_CHECK_ATOL_M2` (a projection whose scale
    factors are not those of the ellipsoid, such as Web Mercator), and for a geographic
    ``crs``, every polygon gets the geodesic area, ring by ring (60 times slower).

    Parameters
    ----------
    geoms : array of shapely Polygon / MultiPolygon
        Geometries in ``crs``.
    crs : pyproj.CRS or anything it accepts
        A CRS with a geodetic datum (e.g. EPSG:4549, CGCS2000 Gauss-Kruger).

    Returns
    -------
    ndarray (n,), float64
        Areas (holes subtracted); 0 for an empty or missing geometry.
    """
    import pyproj

    geoms = np.asarray(geoms, dtype=object)
    if geoms.size == 0:
        return np.zeros(0, np.float64)
    crs = pyproj.CRS.from_user_input(crs)
    if crs.get_geod() is None:
        raise ValueError(f"CRS {crs.name!r} has no ellipsoid; cannot compute ellipsoidal areas")
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    out = np.zeros(geoms.size, np.float64)
    todo = np.flatnonzero(~empty)
    if todo.size == 0:
        return out
    shapes = geoms[todo]
    if crs.is_projected:
        proj = pyproj.Proj(crs)
        metre = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        centre = shapely.centroid(shapes)
        lon, lat = proj(shapely.get_x(centre), shapely.get_y(centre), inverse=True)
        plane = shapely.area(shapes) * metre**2
        fast = plane / np.asarray(proj.get_factors(lon, lat).areal_scale, np.float64)
        check = np.unique(np.concatenate([np.argsort(-plane)[:AREA_CHECKS // 2],
                                          np.linspace(0, todo.size - 1, AREA_CHECKS // 2).astype(np.int64)]))
        if np.allclose(fast[check], _geodesic_area_m2(shapes[check], crs), rtol=AREA_CHECK_RTOL,
                       atol=AREA_CHECK_ATOL_M2):
            out[todo] = fast
            return out
    out[todo] = _geodesic_area_m2(shapes, crs)
    return out


def _geodesic_area_m2(geoms: np.ndarray, crs) -> np.ndarray:
    """Geodesic area of each polygon, ring by ring (:func:`ellipsoidal_area_m2`)."""
    import pyproj

    geod = crs.get_geod()
    to_lonlat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    def ring_area(ring) -> float:
        xy = np.asarray(ring.coords)
        return abs(geod.polygon_area_perimeter(xy[:, 0], xy[:, 1])[0])

    out = np.zeros(geoms.size, np.float64)
    for i, g in enumerate(shapely.transform(geoms, project)):
        for poly in getattr(g, "geoms", [g]):
            out[i] += ring_area(poly.exterior) - sum(ring_area(r) for r in poly.interiors)
    return out


__all__ = ["BlockPieces", "vectorise_block", "merge_pieces", "merge_pieces_in_batches", "save_pieces", "load_pieces",
           "ellipsoidal_area_m2", "PATCH_COLUMNS", "N_CLASSES", "SCORE_SCALE"]
