"""Morphological cleaning of change masks (pure numpy block kernels with declared halos).

Opening removes speckle, closing bridges narrow gaps, and holes are filled when they fit in
a small box. The minimum mapping unit is *not* applied here: patches can span blocks, so
the vectoriser applies it on merged patches.

Every step is exact given its halo, so a block computed with :func:`clean_halo_px` pixels of
context gives the same core as the whole image. Hole filling is limited by the *extent*
(bounding box) of a hole, not its area: a hole whose bounding box is at most ``hole_px``
on each side lies within ``hole_px`` pixels of each of its pixels, so that many pixels of
halo decide it exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .features import box_max, box_min

__all__ = ["open_mask", "close_mask", "fill_small_holes", "clean_mask", "clean_halo_px"]


def open_mask(mask: np.ndarray, *, radius: int) -> np.ndarray:
    """Opening by a (2r+1)^2 square: erosion then dilation. Halo = ``2 * radius``."""
    if radius == 0:
        return mask.copy()
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    return box_max(box_min(m, radius=radius), radius=radius).astype(bool)


def close_mask(mask: np.ndarray, *, radius: int) -> np.ndarray:
    """Closing by a (2r+1)^2 square: dilation then erosion. Halo = ``2 * radius``."""
    if radius == 0:
        return mask.copy()
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    return box_min(box_max(m, radius=radius), radius=radius).astype(bool)


def fill_small_holes(mask: np.ndarray, *, max_extent_px: int) -> np.ndarray:
    """Fill background regions enclosed by ``mask`` whose bounding box is at most
    ``max_extent_px`` rows and columns. Halo = ``max_extent_px``.

    Background connectivity is 4-neighbour; regions touching the array border are never
    holes.
    """
    out = mask.copy()
    if max_extent_px <= 0 or not mask.any():
        return out
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, mask.shape[0])
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, mask.shape[1])
    sub = ~mask[r0:r1, c0:c1]
    labels, n = ndi.label(sub)
    if n == 0:
        return out
    h, w = sub.shape
    fill = np.zeros(n + 1, dtype=bool)
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        ys, xs = sl
        if ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w:
            continue
        if ys.stop - ys.start <= max_extent_px and xs.stop - xs.start <= max_extent_px:
            fill[k] = True
    if fill.any():
        out[r0:r1, c0:c1] |= fill[labels]
    return out


def clean_halo_px(*, open_px: int, close_px: int, hole_px: int) -> int:
    """Halo of :func:`clean_mask`: the sum of the halos of its steps."""
    return 2 * open_px + 2 * close_px + max(hole_px, 0)


def clean_mask(mask: np.ndarray, *, open_px: int, close_px: int, hole_px: int) -> np.ndarray:
    """Opening, then closing, then filling of small holes of a bool (y, x) mask.

    Parameters
    ----------
    mask : ndarray (y, x), bool
    open_px, close_px : int
        Radii of the square structuring elements in pixels.
    hole_px : int
        Largest hole extent (rows and columns) that is filled; 0 = none.

    Returns
    -------
    ndarray (y, x), bool

    Notes
    -----
    Halo: :func:`clean_halo_px`. An empty mask is returned as a copy at once.
    """
    if not mask.any():
        return mask.copy()
    m = open_mask(mask, radius=open_px)
    if not m.any():
        return m
    m = close_mask(m, radius=close_px)
    return fill_small_holes(m, max_extent_px=hole_px)
