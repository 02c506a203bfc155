"""New buildings found on image segments, without training (``detect-pairs``).

The pixel rules of :mod:`~imagery_watch.detect` compare land-cover classes pixel by pixel.
On real imagery the strongest generic sign of a new building is different: a *roof* is a
segment of nearly uniform, unsaturated colour (concrete, asphalt shingle, metal, grey
tiles) that is also clearly lit, where the earlier image had soil, crop or grass (more
saturated) or a smooth field (less edge texture). This module finds those segments:

1. **segments** of the after image (:func:`skimage.segmentation.felzenszwalb`, the graph
   method of Felzenszwalb and Huttenlocher 2004), at least ``min_segment_m2``;
2. per segment, means of: saturation ``(max - min) / max`` of each epoch, brightness of
   the after epoch, and an **edge-texture change**: the gradient magnitude of brightness,
   averaged over ``texture_window_m``, robustly z-scored within each image (median and MAD,
   so a different camera or season does not matter), after minus before;
3. a segment is **roof-like** when its saturation is below a share of the after image's
   *median* saturation (``grey_strong`` for seeds, ``grey_weak`` for growth) and it is not
   dark (brightness >= ``dark_share`` of the image median: shadows and water). With a near
   infra-red band, roofs also have an NDVI in (0, ``ndvi_roof_max``) after and an NDVI
   above ``ndvi_before_min`` before (bare wet ground and water before are not a building
   site);
4. a roof-like segment **changed** when its saturation dropped (by ``sat_drop`` for seeds,
   by anything for growth) or its edge texture rose (``texture_z_strong``,
   ``texture_z_weak`` robust z-units);
5. seeds grow into the touching growth segments (hysteresis); long narrow shapes (at least
   ``road_length_m`` along some direction, under ``road_width_m`` across it: roads,
   parking strips, field tracks) are removed; the mask is opened by ``open_m`` and its
   holes filled;
6. components are kept when their area is within ``min_area_m2`` .. ``max_area_m2`` (and
   at least ``min_pixels``) and they are compact: area over ``(2 r)^2`` at most
   ``max_elongation``, with ``r`` the largest inscribed radius.

Every threshold is either physical (metres, NDVI) or relative to the image's own
statistics (median saturation, median brightness, robust z-scores): none is an absolute
colour value fitted to one dataset.

Demolition is the same question asked backwards in time: a roof that was there before
and is no longer (:func:`find_demolished_buildings`).

Notes
-----
Segmentation and the component filters look at whole images: this is an image-pair
method. It is not chunk-independent and is not used by the chunked ``detect`` job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["BuildingParams", "find_new_buildings", "find_demolished_buildings"]


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
        Smallest segment, m2.
    dark_share : float
        Segments darker than this share of the after image's median brightness are shadow
        or water, never a roof.
    grey_strong, grey_weak : float
        Roof-like: segment saturation below this share of the after image's median
        saturation (seeds, growth).
    sat_drop : float
        Seeds: saturation drop (before minus after) of at least this much.
    texture_z_strong, texture_z_weak : float
        Edge-texture rise in robust z-units that also counts as change (seeds, growth).
    texture_window_m : float
        Side of the window the gradient magnitude is averaged over, metres.
    ndvi_roof_max, ndvi_before_min : float
        With a near infra-red band: a roof's NDVI after is in (0, ``ndvi_roof_max``); the
        NDVI before must exceed ``ndvi_before_min``.
    road_length_m, road_width_m : float
        Shapes at least this long along some direction and narrower than the width across
        it are roads or tracks and are removed.
    open_m : float
        Radius of the final opening, metres.
    min_area_m2, max_area_m2 : float
        Area range of a kept building, m2.
    min_pixels : int
        Smallest kept building, pixels (guards coarse imagery).
    max_elongation : float
        Largest ``area / (2 r)^2`` of a kept building (``r`` inscribed radius): 1 for a
        square, about 0.8 for a disc, large for thin or branched shapes.
    """

    segment_scale: float = 100.0
    segment_sigma: float = 0.8
    min_segment_m2: float = 10.0
    dark_share: float = 0.55
    grey_strong: float = 0.7
    grey_weak: float = 0.8
    sat_drop: float = 0.05
    texture_z_strong: float = 2.0
    texture_z_weak: float = 1.0
    texture_window_m: float = 10.0
    ndvi_roof_max: float = 0.2
    ndvi_before_min: float = 0.1
    road_length_m: float = 40.0
    road_width_m: float = 14.0
    open_m: float = 1.0
    min_area_m2: float = 30.0
    max_area_m2: float = 4000.0
    min_pixels: int = 6
    max_elongation: float = 3.0


#: directions (degrees) of the road test
ROAD_DIRECTIONS = (0.0, 22.5, 45.0, 67.5, 90.0, 112.5, 135.0, 157.5)


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
    ValueError
        On arrays of different shapes, fewer than 3 bands, or a pixel size <= 0.
    """
    before, after, valid = _check(before, after, valid, pixel_size_m)
    if not valid.any():
        return np.zeros(valid.shape, bool)
    from skimage.segmentation import felzenszwalb

    px = float(pixel_size_m)
    p = params
    rgb_after = np.moveaxis(after[:3], 0, -1) / np.float32(255)
    seg = felzenszwalb(rgb_after, scale=p.segment_scale, sigma=p.segment_sigma,
                       min_size=max(4, int(p.min_segment_m2 / px / px)))
    seg = np.where(valid, seg + 1, 0)  # 0 = not valid: its own segment, never kept

    sat_after, sat_before = _saturation(after), _saturation(before)
    value_after, value_before = after[:3].mean(axis=0), before[:3].mean(axis=0)
    seg_mean = _SegmentMeans(seg)
    s_after, s_before = seg_mean(sat_after), seg_mean(sat_before)
    sat_median = float(np.median(sat_after[valid]))

    ok = seg_mean(value_after) >= p.dark_share * float(np.median(value_after[valid]))
    if after.shape[0] >= 4:
        ndvi_after, ndvi_before = seg_mean(_ndvi(after)), seg_mean(_ndvi(before))
        ok &= (ndvi_after > 0) & (ndvi_after < p.ndvi_roof_max) & (ndvi_before > p.ndvi_before_min)
    width = 2 * int(round(p.texture_window_m / px / 2)) + 1
    texture_rise = seg_mean(_robust_z(ndi.uniform_filter(ndi.gaussian_gradient_magnitude(value_after, 1.0), width),
                                      valid)
                            - _robust_z(ndi.uniform_filter(ndi.gaussian_gradient_magnitude(value_before, 1.0), width),
                                        valid))
    drop = s_before - s_after
    strong = ok & (s_after < p.grey_strong * sat_median) & ((drop > p.sat_drop) | (texture_rise > p.texture_z_strong))
    weak = ok & (s_after < p.grey_weak * sat_median) & ((drop > 0) | (texture_rise > p.texture_z_weak))
    strong[0], weak[0] = False, False
    mask = ndi.binary_propagation(strong[seg], structure=np.ones((3, 3), bool), mask=(weak | strong)[seg])
    mask &= ~_roads(mask, px, p.road_length_m, p.road_width_m)
    if p.open_m >= px:  # an opening under one pixel is none
        mask = ndi.binary_opening(mask, _disk(int(round(p.open_m / px))))
    mask = ndi.binary_fill_holes(mask) & valid
    return _keep_compact(mask, px, p)


def find_demolished_buildings(before: np.ndarray, after: np.ndarray, *, pixel_size_m: float,
                              params: BuildingParams = BuildingParams(),
                              valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels of buildings present before and not after: :func:`find_new_buildings` backwards."""
    return find_new_buildings(after, before, pixel_size_m=pixel_size_m, params=params, valid=valid)


# ------------------------------------------------------------------------------------------


def _check(before, after, valid, pixel_size_m) -> tuple:
    before = np.asarray(before, np.float32)
    after = np.asarray(after, np.float32)
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ; co-register the pair first")
    if before.ndim != 3 or before.shape[0] < 3:
        raise ValueError(f"expected (band, y, x) arrays with red, green, blue first, found shape {before.shape}")
    if not pixel_size_m > 0:
        raise ValueError(f"pixel_size_m: expected > 0, found {pixel_size_m}")
    if valid is None:
        valid = np.ones(before.shape[1:], bool)
    elif valid.shape != before.shape[1:]:
        raise ValueError(f"valid {valid.shape} does not match the images {before.shape[1:]}")
    return before, after, np.asarray(valid, bool)


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


def _robust_z(plane: np.ndarray, valid: np.ndarray) -> np.ndarray:
    values = plane[valid]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median))) + 1e-6
    return (plane - median) / spread


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


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


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
