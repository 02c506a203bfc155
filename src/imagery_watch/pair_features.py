"""Per-pixel features of a before/after pair at the analysis resolution (for :mod:`~imagery_watch.learn`).

For one pair on one grid: the after epoch is normalised to the before epoch
(:mod:`~imagery_watch.normalise`) and both are averaged over blocks of ``factor`` x
``factor`` pixels, the analysis resolution of :mod:`~imagery_watch.detect`
(``round(0.8 m / pixel size)``), keeping the luminance spread inside each block as the fine
texture. Then, per analysis pixel and epoch: brightness, chromaticity, saturation, NDVI
(with NIR), texture at two scales and roughness, fine texture, the darkest value nearby,
local contrast, edge strength and shadow; the difference after - before of each; the
misregistration-tolerant change evidence of :func:`~imagery_watch.detect.change_evidence`;
and context: the box mean of every one of these over windows of radius 2, 6, 15 and 30 m.

Built to transfer across sensors and pixel sizes: brightness-like features are divided by
the pair's luminance spread, colours are ratios, windows are sized in metres, and every
pixel feature is finally a robust z-score against its own median and spread over the pair
(:class:`FeatureStats`, fitted once from the whole pair or from samples of a mosaic, never
per block). Window sums are exact integer sums, so features computed block by block with
:func:`feature_halo_px` of context are bit-identical to whole-image ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .detect import DetectorParams, change_evidence
from .errors import InputFileError
from .features import (block_average, block_majority, block_stats, box_max, box_min, box_sum, compute_features,
                       local_std, luminance, radius_px)
from .normalise import Normalisation, apply_normalisation, fit_normalisation

__all__ = ["ANALYSIS_M", "OBJECT_FEATURES", "FeatureStats", "PreparedPair", "feature_names", "analysis_factor",
           "feature_halo_px", "fit_feature_stats", "pair_features", "exact_box_mean"]

#: analysis resolution, the same as the rule-based detector's
ANALYSIS_M = DetectorParams().analysis_m

_TEXTURE_M = (1.0, 3.0)  # local standard deviation of luminance
_ROUGH_M = 2.0  # local roughness (mean absolute high-pass)
_CONTRAST_M = 4.0  # brightness against the mean of its surroundings
_CONTEXT_M = (2.0, 6.0, 15.0, 30.0)  # box means of every pixel feature (z-scores) over these radii
_TOLERANCE_M = 0.2  # misregistration tolerance of the change evidence (1 px at least)
_STRIP_ROWS = 256  # analysis rows per strip when predicting (bounded memory)
_QUANT = 64.0  # context box means are exact sums on a 1/64 lattice
_QCLIP = 400.0
_STATS_SAMPLES = 200_000  # analysis pixels the per-feature medians and spreads are taken from

_EPOCH = ("bright", "red", "green", "blue", "sat", "tex_fine", "tex1", "tex2", "rough", "dark", "contrast",
          "edge", "shadow")
_SHADOW_Z = -1.0  # analysis pixels this many luminance spreads below the median count as shadow


#: features of the roof-like segments (:func:`~imagery_watch.buildings.building_evidence`),
#: averaged over each analysis pixel, appended with ``objects=True``; the last one is the
#: new-building mask's share within ``_OBJECT_CONTEXT_M``
OBJECT_FEATURES = ("obj_grey", "obj_drop", "obj_new_shadow", "obj_lit", "obj_found", "obj_found_ctx")
_OBJECT_CONTEXT_M = 6.0


def feature_names(bands: int, *, objects: bool = False) -> tuple:
    """Names of the features, in the order of :func:`pair_features`, for 3 or 4 bands."""
    per = _EPOCH + (("ndvi",) if bands == 4 else ())
    names = [f"b_{n}" for n in per] + [f"a_{n}" for n in per] + [f"d_{n}" for n in per] + ["evidence"]
    names += [f"ctx{int(m)}_{n}" for m in _CONTEXT_M for n in names]
    return tuple(names) + (OBJECT_FEATURES if objects else ())


def analysis_factor(pixel_size_m: float, analysis_m: float = ANALYSIS_M) -> int:
    """Input pixels per side of one analysis pixel (as :meth:`DetectorParams.factor`)."""
    return DetectorParams(analysis_m=analysis_m).factor(pixel_size_m)


def _radii(analysis_pixel_m: float) -> dict:
    r = {f"tex{k + 1}": min(7, radius_px(m, analysis_pixel_m)) for k, m in enumerate(_TEXTURE_M)}
    r["rough"] = min(7, radius_px(_ROUGH_M, analysis_pixel_m))
    r["contrast"] = min(16, radius_px(_CONTRAST_M, analysis_pixel_m))
    r["tolerance"] = min(3, radius_px(_TOLERANCE_M, analysis_pixel_m))
    r["context"] = tuple(min(64, radius_px(m, analysis_pixel_m)) for m in _CONTEXT_M)
    return r


def feature_halo_px(analysis_pixel_m: float) -> int:
    """Analysis pixels of context :func:`pair_features` needs on every side of a block."""
    r = _radii(analysis_pixel_m)
    local = max(r["tex1"], r["tex2"], r["rough"] + 1, r["contrast"], 1)
    return local + r["tolerance"] + max(r["context"])


@dataclass(frozen=True)
class FeatureStats:
    """Whole-pair statistics the features are normalised by (fitted once, never per block).

    Attributes
    ----------
    norm : Normalisation
        After-to-before radiometric look-up tables.
    lum_median, lum_scale : float
        Median and robust spread (1.4826 MAD, at least 2) of the analysis-pixel luminance of
        both epochs: brightness, texture, contrast and edges are divided by the spread.
    evidence_offsets, evidence_scales : tuple of float
        Median and robust spread of after - before of the five change-evidence features.
    feature_medians, feature_scales : tuple of float, or None
        Median and robust spread (1.4826 MAD, or the standard deviation where the MAD is 0)
        of every feature over the pair: each feature is given as a robust z-score, which
        takes out much of what differs between images (sensor, season, scene make-up).
        None: raw features (the first of the two fitting passes).
    """

    norm: Normalisation
    lum_median: float
    lum_scale: float
    evidence_offsets: tuple
    evidence_scales: tuple
    feature_medians: tuple | None = None
    feature_scales: tuple | None = None


def _to_analysis(before, after, valid, *, norm: Normalisation, factor: int):
    """Block means, fine texture and valid of both epochs at the analysis resolution."""
    if factor == 1:
        zeros = np.zeros(before.shape[1:], np.float32)
        return before, apply_normalisation(after, norm), zeros, zeros.copy(), valid.copy()
    mean_b, fine_b = block_stats(before, factor)
    mean_a, fine_a = block_stats(after, factor, norm.as_array())  # normalised in the same pass
    return mean_b, mean_a, fine_b, fine_a, block_majority(valid, factor)


def _evidence_arrays(feat, fine) -> list:
    return [feat.red, feat.green, np.sqrt(feat.brightness), feat.texture, fine]


def _robust(values: np.ndarray) -> tuple:
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med)))


def fit_feature_stats(befores: Sequence, afters: Sequence, valids: Sequence, *, pixel_size_m: float,
                      analysis_m: float = ANALYSIS_M) -> FeatureStats:
    """Fit the statistics of :class:`FeatureStats` from sample blocks of a pair or mosaic.

    Parameters
    ----------
    befores, afters : list of ndarray (band, y, x), uint8
        The same windows of both epochs (a whole pair is one window).
    valids : list of ndarray (y, x), bool
    pixel_size_m : float
        Input pixel size in metres.
    analysis_m : float
        Analysis resolution in metres.

    Returns
    -------
    FeatureStats
    """
    norm = fit_normalisation(list(befores), list(afters), list(valids))
    f = analysis_factor(pixel_size_m, analysis_m)
    r_m = pixel_size_m * f
    r = _radii(r_m)
    lums, diffs, arrays = [], [[] for _ in range(5)], []
    for b, a, v in zip(befores, afters, valids):
        mb, ma, gb, ga, va = _to_analysis(b, a, np.asarray(v, bool), norm=norm, factor=f)
        arrays.append((mb, ma, gb, ga, va))
        fb = _evidence_arrays(compute_features(mb, smooth_px=0, texture_px=r["rough"]), gb)
        fa = _evidence_arrays(compute_features(ma, smooth_px=0, texture_px=r["rough"]), ga)
        lums += [luminance(mb)[va], luminance(ma)[va]]
        for k in range(5):
            diffs[k].append((fa[k] - fb[k])[va])
    arrays_valid = [a[-1] for a in arrays]
    lum = np.concatenate(lums).astype(np.float32)
    if lum.size == 0:
        raise ValueError("fit_feature_stats: no valid pixel in the samples")
    med, mad = _robust(lum)
    ev = [_robust(np.concatenate(d)) for d in diffs]
    raw = FeatureStats(norm=norm, lum_median=med, lum_scale=max(mad, 2.0),
                       evidence_offsets=tuple(o for o, _ in ev), evidence_scales=tuple(s for _, s in ev))
    # second pass: robust z-score of every feature, from an even subsample of valid pixels
    total = sum(int(v.sum()) for v in arrays_valid)
    step = max(1, total // _STATS_SAMPLES)
    values = []
    for (mb, ma, gb, ga, va) in arrays:
        for y0, y1, x in _strips(mb, ma, gb, ga, stats=raw, analysis_pixel_m=r_m):
            values.append(x[:, va[y0:y1]][:, ::step])
    values = np.concatenate(values, axis=1)
    medians = np.median(values, axis=1)
    mads = 1.4826 * np.median(np.abs(values - medians[:, None]), axis=1)
    scales = np.where(mads > 0, mads, values.std(axis=1))
    return replace(raw, feature_medians=tuple(float(m) for m in medians),
                   feature_scales=tuple(float(max(sc, 1e-6)) for sc in scales))


def exact_box_mean(x: np.ndarray, radius: int, quantum: float = _QUANT) -> np.ndarray:
    """Mean over the (2r+1)^2 window of a float feature, as an exact integer sum on a
    ``1 / quantum`` lattice (so blocks computed with a halo of ``radius`` give the same bits)."""
    q = np.rint(np.clip(x, -_QCLIP, _QCLIP) * np.float32(quantum)).astype(np.int32)
    s = box_sum(q, radius=radius, dtype=np.int32).astype(np.float32)
    s *= np.float32(1.0 / (quantum * (2 * radius + 1) ** 2))
    return s


def _epoch_features(img: np.ndarray, fine: np.ndarray, stats: FeatureStats, r: dict) -> tuple:
    """The per-epoch features (order of ``_EPOCH`` + ndvi) and the evidence inputs."""
    feat = compute_features(img, smooth_px=0, texture_px=r["rough"])
    lum = luminance(img)
    med, inv = np.float32(stats.lum_median), np.float32(1.0 / stats.lum_scale)
    n = (2 * r["contrast"] + 1) ** 2
    around = box_sum(lum, radius=r["contrast"], dtype=np.uint32).astype(np.float32) * np.float32(1.0 / n)
    edge = (box_max(lum, radius=1) - box_min(lum, radius=1)).astype(np.float32)
    out = [(feat.brightness - med) * inv, feat.red, feat.green, feat.blue, feat.saturation, fine * inv,
           local_std(lum, radius=r["tex1"]) * inv, local_std(lum, radius=r["tex2"]) * inv, feat.texture * inv,
           (feat.darkest - med) * inv, (lum.astype(np.float32) - around) * inv, edge * inv]
    out.append((out[0] < np.float32(_SHADOW_Z)).astype(np.float32))
    if feat.ndvi is not None:
        out.append(feat.ndvi)
    return out, _evidence_arrays(feat, fine)


def _features_block(mb, ma, gb, ga, *, stats: FeatureStats, analysis_pixel_m: float) -> np.ndarray:
    """Features (n, y, x) float32 of analysis-resolution blocks. Halo = :func:`feature_halo_px`."""
    r = _radii(analysis_pixel_m)
    fb, eb = _epoch_features(mb, gb, stats, r)
    fa, ea = _epoch_features(ma, ga, stats, r)
    diff = [a - b for a, b in zip(fa, fb)]
    ev = change_evidence(eb, ea, offsets=stats.evidence_offsets, scales=stats.evidence_scales,
                         tolerance_px=r["tolerance"])
    pixel = np.stack(fb + fa + diff + [ev]).astype(np.float32, copy=False)
    if stats.feature_medians is None:  # first fitting pass: the raw pixel features
        return pixel
    pixel -= np.asarray(stats.feature_medians, np.float32)[:, None, None]
    pixel /= np.asarray(stats.feature_scales, np.float32)[:, None, None]
    ctx = [exact_box_mean(z, rad) for rad in r["context"] for z in pixel]
    return np.concatenate([pixel, np.stack(ctx)])


def _strips(mb, ma, gb, ga, *, stats: FeatureStats, analysis_pixel_m: float, rows: int = _STRIP_ROWS):
    """(y0, y1, features (n, y1 - y0, x)) over strips of analysis rows, each computed with the halo."""
    ny = mb.shape[1]
    h = feature_halo_px(analysis_pixel_m)
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        lo, hi = max(0, y0 - h), min(ny, y1 + h)
        x = _features_block(mb[:, lo:hi], ma[:, lo:hi], gb[lo:hi], ga[lo:hi], stats=stats,
                            analysis_pixel_m=analysis_pixel_m)
        yield y0, y1, x[:, y0 - lo:y1 - lo]


def _check_pair(before, after, valid, where: str = "pair"):
    for name, img in (("before", before), ("after", after)):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[0] not in (3, 4) or img.dtype != np.uint8:
            raise InputFileError(f"{where}: the {name} image must be (band, y, x) uint8 with 3 or 4 bands, found "
                                 f"{getattr(img, 'shape', type(img))} {getattr(img, 'dtype', '')}")
    if before.shape != after.shape:
        raise InputFileError(f"{where}: before {before.shape[::-1]} and after {after.shape[::-1]} differ in size "
                             "or bands (x, y, band); both images of a pair must cover the same grid")
    if valid is not None and valid.shape != before.shape[1:]:
        raise InputFileError(f"{where}: valid {valid.shape} is not (y, x) = {before.shape[1:]}")


class PreparedPair:
    """One pair at the analysis resolution, with its own feature statistics.

    With ``objects`` the :data:`OBJECT_FEATURES` follow the pixel features: the segments
    look at the whole pair, so they are computed once here.
    """

    def __init__(self, before, after, valid, *, pixel_size_m: float, analysis_m: float, name: str = "pair",
                 objects: bool = False):
        _check_pair(before, after, valid, name)
        valid = np.ones(before.shape[1:], bool) if valid is None else np.asarray(valid, bool)
        self.name, self.shape = name, before.shape[1:]
        self.factor = analysis_factor(pixel_size_m, analysis_m)
        self.analysis_pixel_m = pixel_size_m * self.factor
        self.stats = fit_feature_stats([before], [after], [valid], pixel_size_m=pixel_size_m, analysis_m=analysis_m)
        self.mb, self.ma, self.gb, self.ga, self.valid = _to_analysis(before, after, valid, norm=self.stats.norm,
                                                                      factor=self.factor)
        self.objects = self.found = None  # found: the new-building mask (y, x) at the input pixels
        if objects:
            self.objects, self.found = _object_features(before, after, valid, pixel_size_m=pixel_size_m,
                                                        factor=self.factor, analysis_pixel_m=self.analysis_pixel_m)

    def strips(self, rows: int = _STRIP_ROWS):
        """(y0, y1, features (n, y1 - y0, x)) over strips of analysis rows, each read with the halo."""
        for y0, y1, x in _strips(self.mb, self.ma, self.gb, self.ga, stats=self.stats,
                                 analysis_pixel_m=self.analysis_pixel_m, rows=rows):
            if self.objects is not None:
                x = np.concatenate([x, self.objects[:, y0:y1]])
            yield y0, y1, x


def _object_features(before, after, valid, *, pixel_size_m: float, factor: int, analysis_pixel_m: float) -> tuple:
    """:data:`OBJECT_FEATURES` (n, ny, nx) float32 at the analysis resolution, and the
    new-building mask (y, x) bool at the input pixels."""
    from .buildings import building_evidence

    ev = building_evidence(before, after, pixel_size_m=pixel_size_m, valid=valid)
    planes = [ev.grey, ev.drop, ev.new_shadow, ev.lit, ev.found.astype(np.float32)]
    out = [block_average(p, factor) for p in planes]
    out.append(exact_box_mean(out[-1], radius_px(_OBJECT_CONTEXT_M, analysis_pixel_m)))
    return np.stack(out).astype(np.float32, copy=False), ev.found


def pair_features(before: np.ndarray, after: np.ndarray, valid: np.ndarray | None = None, *,
                  pixel_size_m: float, analysis_m: float = ANALYSIS_M) -> np.ndarray:
    """Features of one pair at the analysis resolution, statistics fitted on the pair.

    Parameters
    ----------
    before, after : ndarray (band, y, x), uint8
        R, G, B (+ NIR) of both epochs on one grid.
    valid : ndarray (y, x), bool, optional
        True where both are usable (default: everywhere).
    pixel_size_m : float
        Input pixel size in metres.
    analysis_m : float
        Analysis resolution in metres.

    Returns
    -------
    ndarray (n_features, y / factor, x / factor), float32
        In the order of :func:`feature_names`.

    Notes
    -----
    Computed in strips of analysis rows read with :func:`feature_halo_px` of context: the
    window sums are exact, so the result does not depend on the strips.
    """
    p = PreparedPair(before, after, valid, pixel_size_m=pixel_size_m, analysis_m=analysis_m)
    return np.concatenate([x for _, _, x in p.strips()], axis=1)
