"""Relative radiometric normalisation of the after-epoch to the before-epoch.

Fitted once, from blocks sampled across the whole overlap (never per chunk: per-chunk
fits make seams). The fit is a per-band monotone look-up table from quantile matching of
pixels that did not change: start from all valid pixels, then keep iterating on the pixels
whose normalised colour difference is smallest (the likely no-change set, in the spirit
of iterated no-change selection as in IR-MAD). A look-up table also absorbs gamma and
non-linear differences of camera and processing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import map_bands

#: quantiles matched between epochs
_QUANTILES = np.linspace(0.005, 0.995, 100)


@dataclass(frozen=True)
class Normalisation:
    """Per-band look-up tables mapping after-epoch values onto the before-epoch's scale.

    Attributes
    ----------
    lut : tuple of tuple of int
        ``lut[band][value]`` for bands in canonical order; 256 entries each.
    no_change_fraction : float
        Share of sampled pixels used in the final fit.
    """

    lut: tuple
    no_change_fraction: float = 1.0

    def to_dict(self) -> dict:
        return {"lut": [list(b) for b in self.lut], "no_change_fraction": self.no_change_fraction}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        return cls(lut=tuple(tuple(int(v) for v in b) for b in d["lut"]),
                   no_change_fraction=float(d.get("no_change_fraction", 1.0)))

    @classmethod
    def identity(cls, bands: int) -> "Normalisation":
        return cls(lut=tuple(tuple(range(256)) for _ in range(bands)))

    def as_array(self) -> np.ndarray:
        return np.asarray(self.lut, dtype=np.uint8)


def _lut_from_quantiles(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    qs = np.quantile(src, _QUANTILES)
    qr = np.quantile(ref, _QUANTILES)
    # strictly increasing x for interpolation
    qs, idx = np.unique(qs, return_index=True)
    qr = np.maximum.accumulate(qr[idx])
    if len(qs) < 2:
        return np.arange(256, dtype=np.float64)
    x = np.arange(256, dtype=np.float64)
    lut = np.interp(x, qs, qr)
    # extrapolate linearly beyond the matched range using the end slopes
    lo_slope = (qr[1] - qr[0]) / max(qs[1] - qs[0], 1e-6)
    hi_slope = (qr[-1] - qr[-2]) / max(qs[-1] - qs[-2], 1e-6)
    lo, hi = x < qs[0], x > qs[-1]
    lut[lo] = qr[0] + (x[lo] - qs[0]) * np.clip(lo_slope, 0.2, 5)
    lut[hi] = qr[-1] + (x[hi] - qs[-1]) * np.clip(hi_slope, 0.2, 5)
    return lut


def fit_normalisation(before_samples, after_samples, valid_samples, *, iterations: int = 3,
                      keep_fraction: float = 0.6) -> Normalisation:
    """Fit look-up tables that map the after-epoch onto the before-epoch.

    Parameters
    ----------
    before_samples, after_samples : list of ndarray (band, y, x), uint8
        The same windows of both epochs, sampled across the whole overlap.
    valid_samples : list of ndarray (y, x), bool
    iterations : int
        Rounds of no-change selection after the first all-pixel fit.
    keep_fraction : float
        Share of pixels (smallest normalised difference) kept as no-change each round.

    Returns
    -------
    Normalisation
        Identity when there are no valid samples.
    """
    if not before_samples:
        raise ValueError("fit_normalisation needs at least one sample block")
    bands = before_samples[0].shape[0]
    # every step-th valid pixel of the samples in turn (deterministic, for speed)
    where = [np.flatnonzero(v) for v in valid_samples]
    total = sum(w.size for w in where)
    if total < 1000:
        return Normalisation.identity(bands)
    step = max(1, total // 400_000)
    picks, start = [], 0
    for w in where:
        first = -start % step  # the first index of this block on the global step lattice
        picks.append(w[first::step])
        start += w.size
    b = np.concatenate([s.reshape(bands, -1)[:, k] for s, k in zip(before_samples, picks)], axis=1).astype(np.float32)
    a = np.concatenate([s.reshape(bands, -1)[:, k] for s, k in zip(after_samples, picks)], axis=1).astype(np.float32)
    keep = np.ones(b.shape[1], dtype=bool)
    luts = np.stack([np.arange(256, dtype=np.float64)] * bands)
    for it in range(iterations + 1):
        luts = np.stack([_lut_from_quantiles(a[k, keep], b[k, keep]) for k in range(bands)])
        if it == iterations:
            break
        mapped = np.stack([np.interp(a[k], np.arange(256), luts[k]) for k in range(bands)])
        diff = np.abs(mapped - b)
        scale = np.median(diff, axis=1, keepdims=True) + 1.0
        score = (diff / scale).sum(axis=0)
        keep = score <= np.quantile(score, keep_fraction)
    lut = np.clip(np.rint(luts), 0, 255).astype(np.uint8)
    return Normalisation(lut=tuple(tuple(int(v) for v in row) for row in lut),
                         no_change_fraction=float(keep.mean()))


def apply_normalisation(after: np.ndarray, norm: Normalisation) -> np.ndarray:
    """Map an after-epoch block through the fitted look-up tables.

    Parameters
    ----------
    after : ndarray (band, y, x), uint8
    norm : Normalisation

    Returns
    -------
    ndarray (band, y, x), uint8 (a new array; the input is not modified)

    Notes
    -----
    Pixel-wise: needs no halo and gives the same result for any chunking.
    """
    return map_bands(after, norm.as_array())
