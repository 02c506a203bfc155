"""Seeded, coordinate-addressed noise: the same world position gives the same value.

Every texture of the generator is a function of *global* coordinates (scene metres or
global pixel indices) and a seed, never of a sheet's position in memory, so sheets
rendered independently join without seams.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)


def hash_u32(*keys) -> np.ndarray:
    """Mix integer arrays (broadcast together) into well-scrambled uint32 values.

    Parameters
    ----------
    *keys : int or array of int
        Keys to combine (lattice indices, seeds, salts). Negative values are allowed.

    Returns
    -------
    ndarray of uint32
    """
    h = np.uint32(0x9E3779B9)
    with np.errstate(over="ignore"):
        for k in keys:
            k = np.asarray(k).astype(np.int64).astype(np.uint32)
            h = h ^ (k + np.uint32(0x9E3779B9) + (h << np.uint32(6)) + (h >> np.uint32(2)))
            h = h ^ (h >> np.uint32(16))
            h = h * _M1
            h = h ^ (h >> np.uint32(15))
            h = h * _M2
            h = h ^ (h >> np.uint32(16))
    return np.asarray(h, dtype=np.uint32)


def hash_unit(*keys) -> np.ndarray:
    """Uniform float32 values in [0, 1) from integer keys (see :func:`hash_u32`)."""
    return (hash_u32(*keys) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _axis_weights(coords_m: np.ndarray, cell_m: float):
    t = coords_m / cell_m
    i0 = np.floor(t).astype(np.int64)
    f = (t - i0).astype(np.float32)
    f = f * f * (3.0 - 2.0 * f)
    return i0, f


def value_noise(x_m: np.ndarray, y_m: np.ndarray, cell_m: float, seed: int, salt: int = 0) -> np.ndarray:
    """Smooth value noise in [0, 1) on the grid of pixel centres ``y_m x x_m``.

    Lattice values come from a hash of the lattice index, and interpolation is separable
    (along x then along y), so the cost is O(rows x cols) whatever the cell size.

    Parameters
    ----------
    x_m, y_m : 1-D arrays of float64
        Scene coordinates (metres) of the columns and rows.
    cell_m : float
        Lattice spacing in metres (feature size of the noise).
    seed, salt : int
        Scene seed and a per-texture salt.

    Returns
    -------
    ndarray (len(y_m), len(x_m)), float32
    """
    ix, fx = _axis_weights(np.asarray(x_m, dtype=np.float64), cell_m)
    iy, fy = _axis_weights(np.asarray(y_m, dtype=np.float64), cell_m)
    jx = np.arange(ix.min(), ix.max() + 2)
    jy = np.arange(iy.min(), iy.max() + 2)
    lattice = hash_unit(jy[:, None], jx[None, :], seed, salt)
    cx = ix - jx[0]
    rows = lattice[:, cx] * (1 - fx) + lattice[:, cx + 1] * fx
    cy = iy - jy[0]
    return rows[cy] * (1 - fy)[:, None] + rows[cy + 1] * fy[:, None]


def fbm(x_m, y_m, cell_m: float, seed: int, salt: int = 0, octaves: int = 3, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of :func:`value_noise` octaves, rescaled to about [0, 1)."""
    total = None
    amp, norm, cell = 1.0, 0.0, cell_m
    for k in range(octaves):
        v = value_noise(x_m, y_m, cell, seed, salt * 16 + k)
        total = v * amp if total is None else total + v * amp
        norm += amp
        amp *= gain
        cell /= 2.0
    return total / np.float32(norm)


def pixel_noise(rows: np.ndarray, cols: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """Per-pixel white noise in [-0.5, 0.5) addressed by global pixel index (rows x cols)."""
    return hash_unit(np.asarray(rows)[:, None], np.asarray(cols)[None, :], seed, salt) - np.float32(0.5)


def sensor_noise(rows: np.ndarray, cols: np.ndarray, seed: int, bands: int) -> np.ndarray:
    """Camera noise (bands, rows, cols), float32 digital numbers: shared luminance + per band.

    One hash per pixel: its four bytes give a luminance value and up to three band values.
    """
    h = hash_u32(np.asarray(rows)[:, None], np.asarray(cols)[None, :], seed, 77)
    byte = [((h >> np.uint32(8 * k)) & np.uint32(0xFF)).astype(np.float32) * np.float32(1 / 255.0) - np.float32(0.5)
            for k in range(4)]
    lum = byte[0] * np.float32(5.0)
    return np.stack([lum + byte[1 + (b % 3)] * np.float32(2.4) for b in range(bands)])
