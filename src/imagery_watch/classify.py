"""Land cover of one epoch by rules that need no training (block kernels: numpy, and
compiled numba kernels for the per-pixel rules and the majority filter).

The classes (:class:`~imagery_watch.classes.LandCover`) are decided per pixel from the
evidence of :mod:`imagery_watch.features`, in this order:

1. ``NODATA`` where ``valid`` is False;
2. ``SHADOW``: very dark (brightness below ``shadow_brightness``), unless clearly green;
3. vegetation (``exg > exg_veg`` and green above red, or ``ndvi > ndvi_veg`` when NIR exists), split into
   ``TREE`` (rough canopy with shaded gaps: roughness >= ``tree_texture`` and darkest
   luminance nearby < ``tree_darkest``) and ``LOW_VEGETATION``;
4. ``WATER``: dark, smooth, not reddish and at most moderately green;
5. ``BUILT``: grey/white (low saturation), bluish (steel sheet) or red tiles (red
   chromaticity well above green), or very bright; at analysis pixels of 2 m or more,
   also textured (built-up land is a mix at that scale; a pale field is smooth);
6. ``BARE``: everything else (brown/yellow soil, tilled or harvested fields, rubble).

Finally a majority filter over a small window makes the classes robust to speckle and to
the ragged edges of misregistered objects.

Thresholds come from :class:`ClassifierParams`, fitted once per epoch by
:func:`fit_classifier` from sample blocks drawn across the whole mosaic (Otsu on one
histogram of all samples, or robust medians), clipped to physically sensible ranges so that
a scene with little vegetation or no shadow cannot produce absurd thresholds.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from .classes import LandCover
from .features import Features, compute_features, features_halo_px, radius_px

__all__ = [
    "ClassifierParams",
    "fit_classifier",
    "classify_block",
    "classify_features",
    "majority_filter",
    "classify_halo_px",
    "otsu_threshold",
]

_N_CLASSES = 6

#: analysis pixels at least this large (metres) see built-up land as a textured mix
COARSE_PIXEL_M = 2.0
#: the smallest local roughness of built land at such pixels (luminance units)
COARSE_BUILT_MIN_TEXTURE = 4.0


def check_fields(cls, data: dict, what: str) -> None:
    """Refuse keys of ``data`` that are not fields of the dataclass ``cls`` (``ValueError``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; known: {', '.join(sorted(names))}")


@dataclass(frozen=True)
class ClassifierParams:
    """Thresholds and window sizes of the rule-based classifier of one epoch.

    Attributes
    ----------
    exg_veg : float
        Excess-green (chromaticity) above which a pixel is vegetation (RGB only).
    green_excess : float
        Green minus red chromaticity above which a pixel may be vegetation (RGB only):
        ripe, yellow crops and straw have red >= green and count as bare.
    ndvi_veg : float
        NDVI above which a pixel is vegetation (used when the image has NIR).
    shadow_brightness : float
        Mean brightness (0..255) below which a pixel is shadow.
    water_brightness, water_texture : float
        Water is darker than ``water_brightness`` and smoother than ``water_texture``.
    tree_texture : float
        Local roughness of luminance above which vegetation may be tree canopy.
    tree_darkest : float
        Tree canopy also has shaded gaps: the darkest luminance in the texture window is
        below this (bright crops with rows are rough but have no dark gaps).
    grey_saturation : float
        Saturation below which a non-vegetated pixel is built (concrete, grey/white roof).
    red_excess : float
        Red minus green chromaticity above which a non-vegetated pixel is a tiled roof.
    blue_excess : float
        Blue minus red chromaticity above which a non-vegetated pixel is built (steel).
    white_brightness : float
        Brightness above which a non-vegetated pixel is built (white roofs, greenhouses).
    built_min_texture : float
        Built pixels smoother than this are bare instead; 0 = off. :func:`fit_classifier`
        turns it on for analysis pixels of ``COARSE_PIXEL_M`` or more: such a pixel of
        built-up land mixes roofs, walls, shadows and paving, so built land is never smooth
        at that scale, while pale harvested fields (grey like concrete) are. Below it, roofs
        and concrete slabs are smooth surfaces and the test would remove them.
    smooth_m, texture_m, majority_m : float
        Radii in metres of the band smoothing, the texture window and the majority filter.
    model_path : str or None
        Hook for a trained per-scene classifier (not used yet).
    """

    exg_veg: float = 0.06
    ndvi_veg: float = 0.2
    green_excess: float = 0.0
    shadow_brightness: float = 40.0
    water_brightness: float = 70.0
    water_texture: float = 1.5
    tree_texture: float = 4.0
    tree_darkest: float = 60.0
    grey_saturation: float = 0.13
    red_excess: float = 0.17
    blue_excess: float = 0.01
    white_brightness: float = 215.0
    built_min_texture: float = 0.0
    smooth_m: float = 0.0
    texture_m: float = 1.6
    majority_m: float = 0.8
    model_path: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClassifierParams":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        check_fields(cls, data, "classifier parameter")
        return cls(**data)

    def radii_px(self, pixel_size_m: float) -> tuple:
        """(smooth, texture, majority) radii in pixels."""
        return (min(3, radius_px(self.smooth_m, pixel_size_m)),
                min(7, radius_px(self.texture_m, pixel_size_m)),
                min(2, radius_px(self.majority_m, pixel_size_m)))


def otsu_threshold(hist: np.ndarray, edges: np.ndarray) -> float:
    """Otsu threshold of a histogram (counts per bin, ``len(edges) == len(hist) + 1``).

    Returns the upper edge of the bin that maximises the between-class variance, so one
    histogram gathered over all samples of a mosaic is thresholded once.
    """
    hist = np.asarray(hist, dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    total = w0[-1]
    if total <= 0:
        return float(centres[len(centres) // 2])
    m0 = np.cumsum(hist * centres)
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = m0 / w0
        mu1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between[~np.isfinite(between)] = -1
    return float(edges[int(np.argmax(between)) + 1])


def classify_halo_px(*, params: ClassifierParams, pixel_size_m: float) -> int:
    """Halo of :func:`classify_block` in pixels (features plus majority filter)."""
    s, t, m = params.radii_px(pixel_size_m)
    return features_halo_px(smooth_px=s, texture_px=t) + m


def classify_features(feat: Features, valid: np.ndarray, *, params: ClassifierParams) -> np.ndarray:
    """Per-pixel classes from features (no neighbourhood, halo 0), uint8 LandCover codes."""
    p = params
    f32 = np.float32
    # the rules of the module docstring, pixel by pixel in one compiled pass (each rule was
    # a numpy pass over the whole block); the same float32 comparisons, so the same classes
    thresholds = np.array([p.ndvi_veg, p.exg_veg, p.green_excess, p.grey_saturation, p.red_excess,
                           p.blue_excess, p.white_brightness, p.built_min_texture, p.tree_texture,
                           p.tree_darkest, p.water_brightness, p.water_texture, 0.37, 0.2,
                           p.shadow_brightness, 0.5 * p.shadow_brightness], dtype=f32)
    out = np.empty(valid.shape, np.uint8)
    if out.size:
        has_ndvi = feat.ndvi is not None
        _kernels().classify(feat.brightness, feat.red, feat.green, feat.blue, feat.exg, feat.saturation,
                            feat.texture, feat.darkest, feat.ndvi if has_ndvi else feat.exg, has_ndvi,
                            np.asarray(valid, dtype=bool), thresholds, p.built_min_texture > 0, _CODES, out)
    return out


#: the codes classify_features assigns, in the order of its rules (BARE is the default)
_CODES = tuple(np.uint8(c) for c in (LandCover.BARE, LandCover.BUILT, LandCover.LOW_VEGETATION, LandCover.TREE,
                                    LandCover.WATER, LandCover.SHADOW, LandCover.NODATA))


def majority_filter(classes: np.ndarray, *, radius: int) -> np.ndarray:
    """Most frequent class over the (2r+1)^2 window; ties keep the pixel's own class.

    ``NODATA`` (0) pixels stay 0 and are not counted; nor are codes above 6. Halo = ``radius``.

    Notes
    -----
    The counts of all six classes are gathered in one exact integer box sum of a packed
    one-hot code (5 bits per class in a uint32, so windows up to 5 x 5 fit), in a compiled
    kernel that also picks the class.
    """
    if radius == 0:
        return classes.copy()
    if radius > 2:
        raise ValueError(f"majority_filter radius must be <= 2, found {radius}")
    out = np.empty(classes.shape, np.uint8)
    if out.size:
        _kernels().majority(np.asarray(classes, dtype=np.uint8), int(radius), _ONEHOT, out)
    return out


#: packed one-hot code of each class value: 5 bits per class 1..6; NODATA and others count nothing
_ONEHOT = np.zeros(256, np.uint32)
_ONEHOT[1:_N_CLASSES + 1] = np.left_shift(np.uint32(1), 5 * np.arange(_N_CLASSES, dtype=np.uint32))


@functools.cache  # made once, on first use (importing numba takes a while)
def _kernels():
    """The compiled (numba) kernels of this module, made or loaded from numba's cache on
    first use. They release the GIL, so worker threads run them in parallel."""
    from types import SimpleNamespace

    import numba

    jit = numba.njit(nogil=True, cache=True)

    @jit
    def classify(bright, red, green, blue, exg, sat, tex, dark, ndvi, has_ndvi, valid, t, min_texture, codes,
                 out):  # pragma: no cover (compiled)
        # later rules win, in the order of the module docstring: built, vegetation, tree,
        # water, shadow, nodata; float32 differences as numpy computes them. Two loops per
        # row, each reading few arrays: LLVM vectorises a loop only when it can check that
        # few pointers do not overlap the output
        bare, built_c, low_veg, tree_c, water_c, shadow_c, nodata = codes
        ny, nx = out.shape
        is_veg = np.empty(nx, np.bool_)
        for y in range(ny):
            br, r, g, b, e, sa, nd, o = bright[y], red[y], green[y], blue[y], exg[y], sat[y], ndvi[y], out[y]
            for x in range(nx):
                if has_ndvi:
                    veg = nd[x] > t[0]
                else:
                    veg = (e[x] > t[1]) & ((g[x] - r[x]) > t[2])  # yellow (ripe) crops are not green
                built = (sa[x] < t[3]) | ((r[x] - g[x]) > t[4]) | ((b[x] - r[x]) > t[5]) | (br[x] > t[6])
                is_veg[x] = veg
                o[x] = built_c if built & ~veg else bare
            tx, dk, v = tex[y], dark[y], valid[y]
            for x in range(nx):
                veg = is_veg[x]
                c = o[x]
                if min_texture and tx[x] < t[7]:
                    c = bare
                c = low_veg if veg else c
                c = tree_c if (tx[x] >= t[8]) & (dk[x] < t[9]) & veg else c
                water = (br[x] < t[10]) & (tx[x] < t[11]) & (r[x] < t[12]) & (e[x] < t[13])
                c = water_c if water else c
                shadow = (br[x] < t[14]) & ~(veg & (br[x] >= t[15]))  # green shade stays vegetation
                c = shadow_c if shadow else c
                o[x] = c if v[x] else nodata

    @jit
    def majority(cls, r, onehot, out):  # pragma: no cover (compiled)
        # the packed one-hot codes, then per row: their vertical sums into an edge-padded
        # row buffer, the horizontal sums and the class with the highest count (ties: the
        # own class, then the lowest code); contiguous loops, vectorised
        ny, nx = cls.shape
        codes = np.empty((ny, nx), np.uint32)
        for y in range(ny):
            row, cd = cls[y], codes[y]
            for x in range(nx):
                cd[x] = onehot[row[x]]
        v = np.empty(nx + 2 * r, np.uint32)
        packed = np.empty(nx, np.uint32)
        for y in range(ny):
            v[r:r + nx] = codes[y]
            for d in range(1, r + 1):
                ca, cb = codes[max(y - d, 0)], codes[min(y + d, ny - 1)]  # rows repeat at the edges
                for x in range(nx):
                    v[r + x] += ca[x] + cb[x]
            for x in range(r):
                v[x] = v[r]
                v[r + nx + x] = v[r + nx - 1]
            for x in range(nx):
                packed[x] = v[x]
            for d in range(1, 2 * r + 1):
                for x in range(nx):
                    packed[x] += v[x + d]
            row, o = cls[y], out[y]
            for x in range(nx):
                p = packed[x]
                c = row[x]
                # 5 * (c - 1) for classes 1..6, else 0 (the count of class 1, as before)
                shift = 5 * min(max(np.int32(c), 1), 6) - 5 if c <= 6 else 0
                own = (p >> np.uint32(shift)) & np.uint32(31)
                best = c
                for k in range(1, 7):
                    cnt = (p >> np.uint32(5 * (k - 1))) & np.uint32(31)
                    better = cnt > own
                    best = np.uint8(k) if better else best
                    own = cnt if better else own
                o[x] = best if c != 0 else np.uint8(0)

    return SimpleNamespace(classify=classify, majority=majority)


def classify_block(image: np.ndarray, valid: np.ndarray, *, params: ClassifierParams,
                   pixel_size_m: float) -> np.ndarray:
    """Land-cover class of every pixel of one epoch.

    Parameters
    ----------
    image : ndarray (band, y, x), uint8
        R, G, B and optionally NIR.
    valid : ndarray (y, x), bool
        True where the pixel is usable.
    params : ClassifierParams
        Thresholds fitted once for the whole mosaic (:func:`fit_classifier`).
    pixel_size_m : float
        Ground size of one pixel in metres (window sizes are given in metres).

    Returns
    -------
    ndarray (y, x), uint8
        :class:`~imagery_watch.classes.LandCover` codes; ``NODATA`` where not valid.

    Notes
    -----
    Halo: :func:`classify_halo_px`; block cores are bit-identical to the whole image.
    """
    if params.model_path is not None:
        raise NotImplementedError("trained classifiers (params.model_path) are not supported yet")
    s, t, m = params.radii_px(pixel_size_m)
    feat = compute_features(image, smooth_px=s, texture_px=t)
    raw = classify_features(feat, valid, params=params)
    return majority_filter(raw, radius=m)


def _hist(values: np.ndarray, lo: float, hi: float, bins: int = 256):
    return np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))


def fit_classifier(samples, valid_samples, *, pixel_size_m: float,
                   base: ClassifierParams | None = None) -> ClassifierParams:
    """Fit the thresholds of one epoch once, from sample blocks across the whole mosaic.

    Parameters
    ----------
    samples : list of ndarray (band, y, x), uint8
        Sample blocks of one epoch.
    valid_samples : list of ndarray (y, x), bool
        Usable pixels of each sample.
    pixel_size_m : float
        Ground size of one pixel in metres.
    base : ClassifierParams, optional
        Defaults (window sizes, fixed colour thresholds) to start from.

    Returns
    -------
    ClassifierParams
        ``exg_veg``/``ndvi_veg`` by Otsu on one histogram of all samples,
        ``tree_texture`` by Otsu on the texture of vegetated pixels; shadow and water
        brightness and the darkest-gap level of tree canopy relative to the median
        brightness; each clipped to a sensible range.
    """
    p = base or ClassifierParams()
    s, t, _ = p.radii_px(pixel_size_m)
    exg_h = np.zeros(256)
    ndvi_h = np.zeros(256)
    bright_h = np.zeros(256)
    tex_parts = []
    feats = []
    has_nir = False
    for img, val in zip(samples, valid_samples):
        f = compute_features(img, smooth_px=s, texture_px=t)
        v = np.asarray(val, dtype=bool)
        if not v.any():
            continue
        exg_h += _hist(f.exg[v], -0.3, 0.5)[0]
        bright_h += _hist(f.brightness[v], 0, 256)[0]
        if f.ndvi is not None:
            has_nir = True
            ndvi_h += _hist(f.ndvi[v], -0.5, 1.0)[0]
        feats.append((f, v))
    if not feats:
        return p
    edges_exg = np.linspace(-0.3, 0.5, 257)
    exg_veg = float(np.clip(otsu_threshold(exg_h, edges_exg), 0.03, 0.10))
    ndvi_veg = p.ndvi_veg
    if has_nir:
        ndvi_veg = float(np.clip(otsu_threshold(ndvi_h, np.linspace(-0.5, 1.0, 257)), 0.1, 0.4))
    for f, v in feats:
        veg = (f.ndvi > ndvi_veg) if f.ndvi is not None else (f.exg > exg_veg)
        veg &= v
        tex_parts.append(_hist(f.texture[veg], 0, 40, 160)[0])
    tex_h = np.sum(tex_parts, axis=0)
    tree_texture = p.tree_texture
    if tex_h.sum() > 1000:
        tree_texture = float(np.clip(otsu_threshold(tex_h, np.linspace(0, 40, 161)), 2.5, 8.0))
    cum = np.cumsum(bright_h)
    median_b = float(np.searchsorted(cum, cum[-1] / 2)) if cum[-1] > 0 else 120.0
    shadow = float(np.clip(0.35 * median_b, 20.0, 55.0))
    water = float(np.clip(0.6 * median_b, shadow + 5.0, 100.0))
    tree_darkest = float(np.clip(0.7 * median_b, shadow + 10.0, 110.0))
    built_min_texture = COARSE_BUILT_MIN_TEXTURE if pixel_size_m >= COARSE_PIXEL_M else p.built_min_texture
    return dataclasses.replace(p, exg_veg=exg_veg, ndvi_veg=ndvi_veg, tree_texture=tree_texture,
                               shadow_brightness=shadow, water_brightness=water, tree_darkest=tree_darkest,
                               built_min_texture=built_min_texture)
