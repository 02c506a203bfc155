"""Construction patches of ``detect`` checked by the segments' new buildings (``[detection] building_check``).

The pixel rules of :mod:`~imagery_watch.detect` find construction patches chunk by chunk.
On real imagery many of them are crop, soil or water change that looks built; the segment
method of :mod:`~imagery_watch.buildings` (roof-like segments the before image lacks)
tells them apart far better on real imagery (``benchmarks/accuracy.py``), but it looks at
whole images and cannot run chunk by chunk. So it runs patch by patch: for each
construction patch, a square window of :data:`WINDOW_M` centred on the patch is read from
both mosaics, averaged to the analysis resolution, and
:func:`~imagery_watch.buildings.find_new_buildings` runs on it; the patch's **building
share** is the share of its analysis pixels that the segments call new building. A
construction patch is kept when its share reaches :data:`MIN_SHARE`.

The window depends on the patch's geometry only, so the result does not depend on the
chunking, like the patches themselves. Its size matches the scenes the segment method was
measured on (LEVIR-CD crops, 256 m): the method's thresholds are relative to the window's
own median saturation and brightness.
"""

from __future__ import annotations

import math

import numpy as np

from .buildings import BuildingParams, find_new_buildings
from .features import block_all, block_mean

__all__ = ["WINDOW_M", "MIN_SHARE", "MODES", "building_shares"]

#: side of the square window read around each patch, metres
WINDOW_M = 256.0
#: share of a construction patch that must be new building for the patch to be kept
MIN_SHARE = 0.25
#: values of ``[detection] building_check``: off; new buildings with their new shadow;
#: any new roof-like surface, flat construction (hardstanding, yards) included
MODES = ("off", "buildings", "construction")


def building_shares(geometries, before, after, *, analysis_m: float, window_m: float = WINDOW_M,
                    params: BuildingParams = BuildingParams()) -> np.ndarray:
    """Share of each geometry's analysis pixels that the segment method calls new building.

    Parameters
    ----------
    geometries : sequence of shapely geometries
        Patches in the processing grid's CRS.
    before, after : EpochReader
        Both epochs on the processing grid.
    analysis_m : float
        Analysis resolution, metres.
    window_m : float
        Side of the window read around each patch, metres; a larger patch gets a window
        that covers it with a margin of a quarter of ``window_m`` on each side.
    params : BuildingParams

    Returns
    -------
    ndarray (n,) float64
        In [0, 1]; NaN for an empty geometry.
    """
    from rasterio.features import rasterize
    from rasterio.transform import Affine, rowcol

    grid = before.grid
    f = max(1, int(round(analysis_m / grid.pixel_size_m)))
    ap_m = grid.pixel_size_m * f
    side = max(8, int(math.ceil(window_m / ap_m)))
    out = np.full(len(geometries), np.nan)
    for i, geom in enumerate(geometries):
        if geom is None or geom.is_empty:
            continue
        left, bottom, right, top = geom.bounds
        r_top, c_left = rowcol(grid.affine, left, top, op=math.floor)
        r_bot, c_right = rowcol(grid.affine, right, bottom, op=math.ceil)
        rows = (min(r_top, r_bot) // f, -(-max(r_top, r_bot) // f))
        cols = (min(c_left, c_right) // f, -(-max(c_left, c_right) // f))
        h = max(side, rows[1] - rows[0] + side // 2)
        w = max(side, cols[1] - cols[0] + side // 2)
        r0 = (rows[0] + rows[1]) // 2 - h // 2
        c0 = (cols[0] + cols[1]) // 2 - w // 2
        b, valid_b = before.read(r0 * f, c0 * f, h * f, w * f)
        a, valid_a = after.read(r0 * f, c0 * f, h * f, w * f)
        valid = block_all(valid_b & valid_a, f)
        if not valid.any():
            out[i] = 0.0
            continue
        found = find_new_buildings(block_mean(b, f), block_mean(a, f), pixel_size_m=ap_m, params=params,
                                   valid=valid)
        transform = grid.window_transform(r0 * f, c0 * f) @ Affine.scale(f)
        inside = rasterize([(geom, 1)], out_shape=(h, w), transform=transform, fill=0, dtype="uint8").astype(bool)
        if not inside.any():  # a sliver under one analysis pixel: the pixels it touches
            inside = rasterize([(geom, 1)], out_shape=(h, w), transform=transform, fill=0, dtype="uint8",
                               all_touched=True).astype(bool)
        out[i] = float(found[inside].mean()) if inside.any() else 0.0
    return out
