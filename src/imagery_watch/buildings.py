"""New buildings found on image segments, without training (``detect-pairs``).

The pixel rules of :mod:`~imagery_watch.detect` compare land-cover classes pixel by pixel.
On real imagery the strongest generic signs of a new building are different: a *roof* is a
segment of nearly uniform, unsaturated colour (concrete, asphalt shingle, metal, grey
tiles) that is clearly lit, where the earlier image had soil, crop or grass (more
saturated); and a building *casts a shadow* that was not there before. This module finds
those segments:

1. **segments** of the after image (:func:`skimage.segmentation.felzenszwalb`, the graph
   method of Felzenszwalb and Huttenlocher 2004), at least ``min_segment_m2``;
2. per segment, means of saturation ``(max - min) / max`` of each epoch and of the after
   epoch's brightness;
3. a segment is **roof-like** when its saturation is below a share of the after image's
   *median* saturation (``grey_strong`` for seeds, ``grey_weak`` for growth) and it is not
   itself a shadow (brightness >= ``shadow_share`` of the image median). With a near
   infra-red band, a roof's NDVI is in (0, ``ndvi_roof_max``): not vegetation, not water;
4. **new shadow** pixels are darker than ``shadow_share`` of the after image's median
   brightness and were not that dark before; a roof-like segment **changed** when its
   saturation dropped (by ``sat_drop`` for seeds, by anything for growth: a roof replaced
   vegetation or coloured soil), or when new shadow covers more than ``new_shadow_min`` of
   a box of +-``shadow_length_m`` along its border (houses built on bare grey ground, where
   saturation has nothing to see; no sun direction needed);
5. seeds grow into the touching growth segments (hysteresis); long narrow shapes (at least
   ``road_length_m`` along some direction, under ``road_width_m`` across it: roads,
   parking strips, field tracks) are removed; the mask is opened by ``open_m`` and its
   holes filled;
6. components are kept when their area is within ``min_area_m2`` .. ``max_area_m2`` (and
   at least ``min_pixels``) and they are compact: area over ``(2 r)^2`` at most
   ``max_elongation``, with ``r`` the largest inscribed radius;
7. **shadow check** (``shadow_check``): at least ``new_shadow_min`` of the ring of width
   ``shadow_length_m`` around a building must be new shadow *relative to the building*:
   darker than ``shadow_share`` of its brightness after, and not darker than that share of
   the same footprint's brightness before. Crop, soil moisture, wetland margins and
   re-coloured existing roofs cast no new shadow. Flat construction (hardstanding, yards)
   casts none either: turn the check off to find it, at the cost of more false alarms.

Every threshold is either physical (metres, NDVI) or relative to the image's own
statistics (median saturation, median brightness, the building's own brightness): none is
an absolute colour value fitted to one dataset.

Demolition is the same question asked backwards in time: a roof that was there before
and is no longer (:func:`find_demolished_buildings`).

Notes
-----
Segmentation and the component filters look at whole images: this is an image-pair
method: ``detect`` uses it patch by patch (:mod:`~imagery_watch.building_check`). The
shadow evidence needs imagery fine enough to show a building's shadow (about 2 m or finer,
:data:`FINEST_USEFUL_M`); on coarser imagery the shadow check removes nearly everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk

from .errors import ConfigError, GridMismatchError
from .features import block_average

__all__ = ["BuildingParams", "BuildingEvidence", "building_evidence", "find_new_buildings",
           "find_demolished_buildings", "turns_into"]


@dataclass(frozen=True)
class BuildingParams:
    """Constants of the segment method (see the module docstring for each step).

    Attributes
    ----------
    segment_scale : float
        Felzenszwalb ``scale``: larger gives larger segments.
    segment_sigma : float
        Gaussian smoothing (pixels) before segmenting.
    min_segment_m2 : float
        Smallest segment, m2 (about half a small roof).
    grey_strong, grey_weak : float
        Roof-like: segment saturation below this share of the after image's median
        saturation (seeds, growth).
    sat_drop : float
        Seeds: saturation drop (before minus after, 0..1) of at least this much.
    shadow_share : float
        Shadow: darker than this share of the reference brightness (the image's median, or
        the building's own for the shadow check); a cast shadow reflects well under half of
        the sunlit scene.
    shadow_length_m : float
        How far from a building its shadow is looked for: the shadow of a one- or
        two-storey building at mid sun elevation.
    new_shadow_min : float
        Share of new-shadow pixels along a segment's border that counts as change, and
        around a building that the shadow check asks for.
    shadow_check : bool
        Keep only buildings with new shadow around them (step 7).
    ndvi_roof_max : float
        With a near infra-red band: a roof's NDVI is in (0, ``ndvi_roof_max``).
    road_length_m, road_width_m : float
        Shapes at least this long along some direction and narrower than the width across
        it are roads or tracks and are removed.
    open_m : float
        Radius of the final opening, metres.
    min_area_m2, max_area_m2 : float
        Area range of a kept building, m2 (up to a 140 m x 140 m warehouse; larger
        components are fields and water bodies far more often than buildings).
    min_pixels : int
        Smallest kept building, pixels (guards coarse imagery).
    max_elongation : float
        Largest ``area / (2 r)^2`` of a kept building (``r`` inscribed radius): 1 for a
        square, about 0.8 for a disc, large for thin or branched shapes.
    working_m : float
        Imagery finer than this is averaged over blocks of ``round(working_m / pixel size)``
        pixels first and the results repeated back: the method was measured at 0.5 m, and
        at 0.2 m it would cost about 8 times more for nothing.
    """

    segment_scale: float = 100.0
    segment_sigma: float = 0.8
    min_segment_m2: float = 10.0
    grey_strong: float = 0.7
    grey_weak: float = 0.9
    sat_drop: float = 0.05
    shadow_share: float = 0.5
    shadow_length_m: float = 4.0
    new_shadow_min: float = 0.10
    shadow_check: bool = True
    ndvi_roof_max: float = 0.2
    road_length_m: float = 40.0
    road_width_m: float = 14.0
    open_m: float = 1.0
    min_area_m2: float = 30.0
    max_area_m2: float = 20000.0
    min_pixels: int = 6
    max_elongation: float = 3.0
    working_m: float = 0.5


#: coarsest pixel size (m) at which one- and two-storey buildings cast a visible shadow
FINEST_USEFUL_M = 2.0

#: directions (degrees) of the road test
ROAD_DIRECTIONS = (0.0, 22.5, 45.0, 67.5, 90.0, 112.5, 135.0, 157.5)


class BuildingEvidence(NamedTuple):
    """Per-pixel planes (y, x) of :func:`building_evidence`: each segment's value on its pixels.

    ``grey``: after saturation over the after image's median saturation; ``drop``:
    saturation before minus after; ``new_shadow``: share of new shadow along the segment's
    border; ``lit``: after brightness over the after image's median brightness; ``found``:
    the final new-building mask (bool).
    """

    grey: np.ndarray
    drop: np.ndarray
    new_shadow: np.ndarray
    lit: np.ndarray
    found: np.ndarray


def find_new_buildings(before: np.ndarray, after: np.ndarray, *, pixel_size_m: float,
                       params: BuildingParams = BuildingParams(), valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels of buildings present after and not before.

    Parameters
    ----------
    before, after : ndarray (band, y, x), uint8 or float 0..255
        The pair, co-registered; bands red, green, blue and optionally near infra-red.
        The after epoch need not be radiometrically matched: every colour threshold is
        relative to the image's own statistics.
    pixel_size_m : float
        Ground pixel size in metres.
    params : BuildingParams
    valid : ndarray (y, x) of bool, optional
        Usable pixels of both epochs (default: all); statistics use these only and the
        result is False elsewhere.

    Returns
    -------
    ndarray (y, x) of bool

    Raises
    ------
    GridMismatchError
        ``before``, ``after`` and ``valid`` of different sizes, or fewer than 3 bands.
    ConfigError
        A pixel size <= 0.

    Notes
    -----
    Pixels that are not finite (NaN, inf) count as not valid.
    """
    return building_evidence(before, after, pixel_size_m=pixel_size_m, params=params, valid=valid).found


def building_evidence(before: np.ndarray, after: np.ndarray, *, pixel_size_m: float,
                      params: BuildingParams = BuildingParams(), valid: np.ndarray | None = None) -> BuildingEvidence:
    """The segment measurements behind :func:`find_new_buildings`, and its mask.

    Parameters
    ----------
    before, after, pixel_size_m, params, valid
        As :func:`find_new_buildings`.

    Returns
    -------
    BuildingEvidence
        Per-pixel planes (y, x); they serve as features of the supervised model
        (:mod:`~imagery_watch.pair_features`).

    Raises
    ------
    GridMismatchError
        ``before``, ``after`` and ``valid`` of different sizes, or fewer than 3 bands.
    ConfigError
        A pixel size <= 0.
    """
    before, after, valid = _check(before, after, valid, pixel_size_m)
    if not valid.any():
        return BuildingEvidence(*(np.zeros(valid.shape, np.float32) for _ in range(4)),
                                found=np.zeros(valid.shape, bool))
    factor = max(1, int(round(params.working_m / pixel_size_m)))
    if factor > 1:  # fine imagery: work on block means at about working_m, repeat the results back
        shape = valid.shape
        ev = _evidence(block_average(before, factor), block_average(after, factor),
                       block_average(valid.astype(np.float32), factor) == 1, pixel_size_m * factor, params)
        planes = [np.repeat(np.repeat(x, factor, axis=0), factor, axis=1)[:shape[0], :shape[1]] for x in ev]
        planes[-1] &= valid
        return BuildingEvidence(*planes)
    return _evidence(before, after, valid, float(pixel_size_m), params)


def _evidence(before: np.ndarray, after: np.ndarray, valid: np.ndarray, px: float,
              p: BuildingParams) -> BuildingEvidence:
    """:func:`building_evidence` at the images' own pixels (checked float arrays)."""
    from skimage.segmentation import felzenszwalb

    rgb_after = np.moveaxis(after[:3], 0, -1) / np.float32(255)
    seg = felzenszwalb(rgb_after, scale=p.segment_scale, sigma=p.segment_sigma,
                       min_size=max(4, int(p.min_segment_m2 / px / px)))
    seg = np.where(valid, seg + 1, 0)  # 0 = not valid: its own segment, never kept

    sat_after, sat_before = _saturation(after), _saturation(before)
    value_after, value_before = after[:3].mean(axis=0), before[:3].mean(axis=0)
    seg_mean = _SegmentMeans(seg)
    s_after, s_before = seg_mean(sat_after), seg_mean(sat_before)
    sat_median = max(float(np.median(sat_after[valid])), 1e-3)
    value_median = float(np.median(value_after[valid]))
    lit = seg_mean(value_after) / max(value_median, 1.0)

    ok = lit >= p.shadow_share
    if after.shape[0] >= 4:
        ndvi_after = seg_mean(_ndvi(after))
        ok &= (ndvi_after > 0) & (ndvi_after < p.ndvi_roof_max)
    dark_after = value_after < p.shadow_share * value_median
    dark_before = value_before < p.shadow_share * float(np.median(value_before[valid]))
    shadow_px = max(1, int(round(p.shadow_length_m / px)))
    near_new_shadow = ndi.uniform_filter((dark_after & ~dark_before & valid).astype(np.float32), 2 * shadow_px + 1)
    new_shadow = _border_means(near_new_shadow, seg)
    changed_by_shadow = new_shadow > p.new_shadow_min
    drop = s_before - s_after
    grey = s_after / sat_median
    strong = ok & (grey < p.grey_strong) & ((drop > p.sat_drop) | changed_by_shadow)
    weak = ok & (grey < p.grey_weak) & ((drop > 0) | changed_by_shadow)
    strong[0], weak[0] = False, False
    mask = ndi.binary_propagation(strong[seg], structure=np.ones((3, 3), bool), mask=(weak | strong)[seg])
    mask &= ~_roads(mask, px, p.road_length_m, p.road_width_m)
    if p.open_m >= px:  # an opening under one pixel is none
        mask = ndi.binary_opening(mask, disk(int(round(p.open_m / px))))
    mask = ndi.binary_fill_holes(mask) & valid
    found = _keep_compact(mask, px, p)
    if p.shadow_check:
        found = _with_new_shadow(found, value_before, value_after, valid, shadow_px, p)
    planes = [np.where(valid, v[seg], 0).astype(np.float32) for v in (grey, drop, new_shadow, lit)]
    return BuildingEvidence(*planes, found=found)


def find_demolished_buildings(before: np.ndarray, after: np.ndarray, *, pixel_size_m: float,
                              params: BuildingParams = BuildingParams(),
                              valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels of buildings present before and not after: :func:`find_new_buildings` backwards.

    Parameters and errors as :func:`find_new_buildings`; returns (y, x) bool.
    """
    return find_new_buildings(after, before, pixel_size_m=pixel_size_m, params=params, valid=valid)


def turns_into(rule, *, built: bool) -> bool:
    """Whether a rule turns other land into built land only (``built``), or built land only
    into other land: the rules this module answers (construction, demolition)."""
    from .classes import LandCover

    into, out_of = rule.after, rule.before
    if not built:
        into, out_of = out_of, into
    return into == {LandCover.BUILT} and LandCover.BUILT not in out_of


# ------------------------------------------------------------------------------------------


def _check(before, after, valid, pixel_size_m) -> tuple:
    before = np.asarray(before, np.float32)
    after = np.asarray(after, np.float32)
    if before.shape != after.shape:
        raise GridMismatchError(f"before {before.shape} and after {after.shape} differ; co-register the pair "
                                "onto one grid first")
    if before.ndim != 3 or before.shape[0] < 3:
        raise GridMismatchError(f"expected (band, y, x) arrays with red, green, blue first, found shape "
                                f"{before.shape}")
    if not pixel_size_m > 0:
        raise ConfigError(f"pixel_size_m: expected the ground pixel size in metres (> 0), found {pixel_size_m}")
    valid = np.ones(before.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != before.shape[1:]:
        raise GridMismatchError(f"valid {valid.shape} does not match the images {before.shape[1:]}")
    finite = np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0)
    if not finite.all():
        valid = valid & finite
        before, after = np.where(finite, before, 0), np.where(finite, after, 0)
    return before, after, valid


class _SegmentMeans:
    """Mean of a (y, x) plane over each segment (a vector indexed by segment id)."""

    def __init__(self, seg: np.ndarray):
        self.flat = seg.ravel()
        self.n = int(self.flat.max()) + 1
        self.count = np.maximum(np.bincount(self.flat, minlength=self.n), 1)

    def __call__(self, plane: np.ndarray) -> np.ndarray:
        return np.bincount(self.flat, plane.ravel().astype(np.float64), self.n) / self.count


def _saturation(image: np.ndarray) -> np.ndarray:
    top, bottom = image[:3].max(axis=0), image[:3].min(axis=0)
    return (top - bottom) / np.maximum(top, 1.0)


def _ndvi(image: np.ndarray) -> np.ndarray:
    red, nir = image[0], image[3]
    return (nir - red) / (nir + red + 1e-6)


def _border_means(plane: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Mean of ``plane`` over the inner border pixels of each segment (vector by segment id)."""
    from skimage.segmentation import find_boundaries

    border = find_boundaries(seg, mode="inner")
    n = int(seg.max()) + 1
    ids = seg[border]
    return (np.bincount(ids, plane[border].astype(np.float64), n)
            / np.maximum(np.bincount(ids, minlength=n), 1))


def _line(length_px: float, angle_deg: float) -> np.ndarray:
    """Binary footprint of a 1-pixel line of odd length through the centre."""
    n = max(int(round(length_px)), 1) | 1
    r = n // 2
    out = np.zeros((n, n), bool)
    t = np.deg2rad(angle_deg)
    s = np.linspace(-r, r, 4 * n)
    out[np.rint(r - s * np.sin(t)).astype(int), np.rint(r + s * np.cos(t)).astype(int)] = True
    return out


def _roads(mask: np.ndarray, px: float, length_m: float, width_m: float) -> np.ndarray:
    """Parts of ``mask`` at least ``length_m`` long in a direction and under ``width_m`` across."""
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    for angle in ROAD_DIRECTIONS:
        long = ndi.binary_opening(mask, _line(length_m / px, angle))
        if not long.any():
            continue
        wide = ndi.binary_opening(mask, _line(width_m / px, angle + 90))
        out |= long & ~wide
    return out


def _keep_compact(mask: np.ndarray, px: float, p: BuildingParams) -> np.ndarray:
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    area = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    inscribed = np.asarray(ndi.maximum(ndi.distance_transform_edt(mask), labels, index=np.arange(n + 1)), np.float64)
    area_m2 = area * px * px
    keep = ((area_m2 >= p.min_area_m2) & (area >= p.min_pixels) & (area_m2 <= p.max_area_m2)
            & (area / np.maximum(4 * inscribed ** 2, 1) <= p.max_elongation))
    keep[0] = False
    return keep[labels]


def _with_new_shadow(found: np.ndarray, value_before: np.ndarray, value_after: np.ndarray, valid: np.ndarray,
                     shadow_px: int, p: BuildingParams) -> np.ndarray:
    """Buildings of ``found`` with at least ``new_shadow_min`` new shadow in the ring around them."""
    labels, n = ndi.label(found, structure=np.ones((3, 3), bool))
    keep = np.zeros(n + 1, bool)
    ring_shape = disk(shadow_px)
    for i, box in enumerate(ndi.find_objects(labels), 1):
        box = tuple(slice(max(b.start - shadow_px - 1, 0), b.stop + shadow_px + 1) for b in box)
        inside = labels[box] == i
        ring = ndi.binary_dilation(inside, ring_shape) & ~found[box] & valid[box]
        if not ring.any():
            continue
        after, before = value_after[box], value_before[box]
        new_dark = ((after[ring] < p.shadow_share * after[inside].mean())
                    & ~(before[ring] < p.shadow_share * before[inside].mean()))
        keep[i] = new_dark.mean() >= p.new_shadow_min
    return keep[labels]
