"""The one helper that applies a pure-numpy block kernel to numpy, Dask or xarray input.

A block kernel takes numpy arrays whose last two axes are (y, x) and returns one numpy
array whose last two axes are the same (y, x). It declares a halo: how many pixels of
context it needs on every side so that its result in a block's core equals the
whole-image result. :func:`map_blocks_with_halo` reads each chunk with that halo
(``dask.array.overlap`` with ``boundary="none"``: no padding at the outer edges of the
image, where the kernel sees exactly what it would see on the whole image), runs the
kernel, and crops the halo. On numpy input it simply calls the kernel once.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["map_blocks_with_halo", "is_lazy"]


def is_lazy(a) -> bool:
    """True when ``a`` (or the data of an xarray object) is a Dask array."""
    data = getattr(a, "data", a)
    return type(data).__module__.split(".")[0] == "dask"


def _merge_small(chunks: tuple, minimum: int) -> tuple:
    """Merge neighbouring chunks so that every chunk is at least ``minimum`` long."""
    out = []
    for c in chunks:
        if out and out[-1] < minimum:
            out[-1] += c
        else:
            out.append(c)
    if len(out) > 1 and out[-1] < minimum:
        last = out.pop()
        out[-1] += last
    return tuple(out)


def map_blocks_with_halo(kernel: Callable, *arrays, halo_px: int, dtype, out_bands: int | None = None,
                         **kwargs):
    """Apply ``kernel(*blocks, **kwargs)`` over (y, x) chunks with ``halo_px`` of context.

    Parameters
    ----------
    kernel : callable
        Pure-numpy function of the arrays (each (..., y, x)) returning one array
        (y, x), or (out_bands, y, x) when ``out_bands`` is given.
    *arrays : numpy, Dask or xarray arrays
        Same (y, x) shape; leading axes (bands) are kept whole in every chunk. Chunking of
        (y, x) follows the first Dask array.
    halo_px : int
        Pixels of context the kernel needs on each side.
    dtype : numpy dtype
        Output dtype.
    out_bands : int, optional
        Number of leading output bands, when the kernel returns (band, y, x).
    **kwargs
        Passed to the kernel unchanged (plain options, not arrays).

    Returns
    -------
    numpy or Dask array
        numpy when every input is numpy, else a lazy Dask array chunked like the first Dask
        input (chunks smaller than ``halo_px`` are merged with a neighbour first).

    Notes
    -----
    Chunk-independence holds when the kernel's declared halo is right: then the result
    is identical for any chunking.
    """
    data = [getattr(a, "data", a) for a in arrays]
    shapes = {tuple(d.shape[-2:]) for d in data}
    if len(shapes) != 1:
        raise ValueError(f"all arrays must share the (y, x) shape, found {sorted(shapes)}")
    if not any(is_lazy(d) for d in data):
        return kernel(*[np.asarray(d) for d in data], **kwargs)

    import dask.array as da

    ref = next(d for d in data if is_lazy(d))
    h = int(halo_px)
    cy = _merge_small(ref.chunks[-2], max(h, 1))
    cx = _merge_small(ref.chunks[-1], max(h, 1))
    prepared = []
    for d in data:
        d = da.asarray(d)
        lead = tuple((n,) for n in d.shape[:-2])
        d = d.rechunk(lead + (cy, cx))
        if h > 0:
            depth = {ax: 0 for ax in range(d.ndim - 2)}
            depth.update({d.ndim - 2: h, d.ndim - 1: h})
            boundary = {ax: "none" for ax in range(d.ndim)}
            d = da.overlap.overlap(d, depth=depth, boundary=boundary)
        prepared.append(d)
    ny_blocks, nx_blocks = len(cy), len(cx)

    def run(*blocks, block_id=None):
        iy, ix = block_id[-2], block_id[-1]
        out = kernel(*blocks, **kwargs)
        if h == 0:
            return out
        top = 0 if iy == 0 else h
        left = 0 if ix == 0 else h
        bottom = out.shape[-2] - (0 if iy == ny_blocks - 1 else h)
        right = out.shape[-1] - (0 if ix == nx_blocks - 1 else h)
        return out[..., top:bottom, left:right]

    max_nd = max(d.ndim for d in prepared)
    if max_nd > 3:
        raise ValueError(f"arrays must be 2-D (y, x) or 3-D (band, y, x), found {max_nd}-D")
    extra = {}
    if out_bands is None:
        chunks = (cy, cx)
        if max_nd == 3:
            extra["drop_axis"] = 0
    else:
        chunks = ((out_bands,), cy, cx)
        if max_nd == 2:
            extra["new_axis"] = 0
    return da.map_blocks(run, *prepared, dtype=dtype, chunks=chunks,
                         meta=np.empty((0,) * len(chunks), dtype), **extra)
