"""Change detection: change evidence combined with class transitions through the rules.

For one block of a co-registered, radiometrically normalised pair:

0. both epochs are averaged over blocks of ``factor`` x ``factor`` pixels, the analysis
   resolution ``analysis_m`` (0.8 m by default): block means smooth sensor noise, JPEG
   artefacts and sub-pixel misregistration, and every later step touches 16 times fewer
   pixels at 0.2 m; results are repeated back to the input pixels at the end, and rules
   tied to farmland are cut to the farmland layer's exact boundary;
1. features and land-cover classes of both epochs (:mod:`~imagery_watch.features`,
   :mod:`~imagery_watch.classify`, thresholds fitted per epoch);
2. **change evidence**: for each of five features (red and green chromaticity, square
   root of brightness, local texture, and the fine texture inside each analysis pixel
   that block averaging removes), the difference between a pixel and the *closest*
   value in a small neighbourhood (``tolerance_m``) of the other epoch, taken both ways and
   the smaller kept (so a residual misregistration of about a pixel, and edges of roofs
   and roads, give no evidence); each difference minus its global offset, divided by its
   global robust spread; the Euclidean norm of the five;
3. a pixel fires rule *k* when the evidence exceeds the threshold, its (majority
   filtered) class transition matches the rule, the location constraint holds, neither
   epoch is shadow within ``shadow_buffer_m``, and no earlier rule fired there;
4. each rule's mask is cleaned (:mod:`~imagery_watch.clean`), re-restricted to valid,
   non-shadow pixels where the rule may fire, then grown (at most ``shadow_reach_m``) into
   the shadowed or newly darkened pixels it touches: the shadow that new buildings or trees
   cast, or that a demolished building cast before, belongs to the change (only parts of
   the change wider than ``shadow_seed_m`` grow, so slivers along moved shadows do not);
   the masks are combined in rule order.

Seasonal crop change (green crop -> ripe, harvested or tilled) is a transition between
``LOW_VEGETATION`` and ``BARE``, which the default rules do not contain, so strong colour
evidence on farmland alone never fires.

Location constraint when ``farmland is None`` (image-pair mode, no farmland layer):
``where="farmland"`` rules fire anywhere, ``where="outside_farmland"`` rules never fire
(otherwise seasonal bare -> crop would fire "reclamation" everywhere), ``"anywhere"``
rules fire anywhere.

All statistics (offsets, spreads, thresholds) are fitted once by :func:`fit_detector`
from samples across the whole mosaic, never per block.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from .classes import LandCover
from .classify import ClassifierParams, check_fields, classify_features, fit_classifier, majority_filter
from .clean import clean_halo_px, clean_mask, open_mask
from .features import (block_all, block_count, block_majority, block_stats, box_max, box_min, compute_features,
                       features_halo_px, map_bands, radius_px, upsample)

__all__ = ["DetectorParams", "DetectResult", "fit_detector", "detect_block", "detect_analysis_block",
           "AnalysisInputs", "analysis_inputs", "detect_inputs", "expand_result", "inexact_pixels", "detect_halo_px",
           "detect_lazy", "change_evidence", "CHANGE_FEATURES"]

#: names of the features compared between epochs, in the order of offsets/scales
CHANGE_FEATURES = ("red", "green", "sqrt_brightness", "texture", "fine_texture")
_SCALE_FLOOR = (0.01, 0.01, 0.35, 0.5, 0.5)
_STRIP_ROWS = 128


@dataclass(frozen=True)
class DetectorParams:
    """Everything :func:`detect_block` needs that is fitted once for the whole mosaic.

    Attributes
    ----------
    before, after : ClassifierParams
        Classifier thresholds of each epoch.
    offsets, scales : tuple of float
        Median and robust spread (1.4826 MAD) of ``after - before`` per change feature
        (:data:`CHANGE_FEATURES`).
    threshold : float
        Change-evidence threshold, already divided by ``sensitivity``.
    evidence_sigma : float
        Evidence threshold at sensitivity 1, in robust spreads of the no-change
        differences (the evidence is normalised by them).
    sensitivity : float
        Multiplier given at fit time (higher = more detections).
    tolerance_m : float
        Misregistration tolerance radius of the evidence.
    open_m, close_m, hole_m : float
        Cleaning: opening and closing radii, largest filled hole extent.
    shadow_buffer_m : float
        Pixels this close to shadow in either epoch never fire (moved shadows make strong
        edges that look like texture and colour change next to them).
    shadow_reach_m : float
        A change also takes the shadowed pixels it touches up to this far (the shadow of
        new buildings or trees, or of a demolished building, belongs to the change).
    shadow_seed_m : float
        Only the parts of a change that survive an opening of this radius take shadows.
    shade_ratio : float
        A pixel is newly shaded when its brightness fell below this share of the other
        epoch's (cast shadows are too bright on light ground to be the ``SHADOW`` class).
    analysis_m : float
        Analysis resolution: images finer than this are averaged over blocks of
        ``round(analysis_m / pixel_size_m)`` pixels before features, classes and evidence
        are computed (block means smooth noise and sub-pixel misregistration, and make the
        job several times faster); results are repeated back to the input pixels.
    """

    before: ClassifierParams = ClassifierParams()
    after: ClassifierParams = ClassifierParams()
    offsets: tuple = (0.0,) * len(CHANGE_FEATURES)
    scales: tuple = _SCALE_FLOOR
    threshold: float = 2.0
    evidence_sigma: float = 2.0
    sensitivity: float = 1.0
    tolerance_m: float = 0.2
    open_m: float = 0.4
    close_m: float = 0.4
    hole_m: float = 2.0
    shadow_buffer_m: float = 0.6
    shadow_reach_m: float = 8.0
    shade_ratio: float = 0.55
    shadow_seed_m: float = 1.6
    analysis_m: float = 0.8
    version: int = 2

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (nested dicts for the classifiers)."""
        d = dataclasses.asdict(self)
        d["offsets"] = [float(x) for x in self.offsets]
        d["scales"] = [float(x) for x in self.scales]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "DetectorParams":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        check_fields(cls, data, "detector parameter")
        d = dict(data)
        for key in ("before", "after"):
            if key in d and isinstance(d[key], dict):
                d[key] = ClassifierParams.from_dict(d[key])
        for key in ("offsets", "scales"):
            if key in d:
                d[key] = tuple(float(x) for x in d[key])
        return cls(**d)

    def factor(self, pixel_size_m: float) -> int:
        """Block size (pixels of the input per side) of one analysis pixel, 1..8."""
        if pixel_size_m <= 0:
            raise ValueError(f"pixel_size_m must be > 0, found {pixel_size_m}")
        return int(min(8, max(1, round(self.analysis_m / pixel_size_m))))

    def radii_px(self, pixel_size_m: float) -> dict:
        """Window radii in pixels of every step, for images of ``pixel_size_m`` pixels."""
        s, t, m = self.before.radii_px(pixel_size_m)
        s2, t2, m2 = self.after.radii_px(pixel_size_m)
        return {
            "smooth": max(s, s2), "texture": max(t, t2), "majority": max(m, m2),
            "tolerance": min(3, radius_px(self.tolerance_m, pixel_size_m)),
            "open": min(8, radius_px(self.open_m, pixel_size_m)),
            "close": min(8, radius_px(self.close_m, pixel_size_m)),
            "hole": int(min(64, round(self.hole_m / pixel_size_m))) if self.hole_m > 0 else 0,
            "shadow_buffer": min(8, radius_px(self.shadow_buffer_m, pixel_size_m)),
            "shadow_reach": min(32, radius_px(self.shadow_reach_m, pixel_size_m)),
            "shadow_seed": min(8, radius_px(self.shadow_seed_m, pixel_size_m)),
        }


class DetectResult(NamedTuple):
    """Outputs of :func:`detect_block`, all (y, x).

    rule : uint8, 0 = no change, k = index of the rule in ``rules`` + 1.
    score : float32 in [0, 1], change certainty (0.5 at the threshold).
    before_class, after_class : uint8 LandCover codes (majority filtered).
    """

    rule: np.ndarray
    score: np.ndarray
    before_class: np.ndarray
    after_class: np.ndarray


def _pixel_halo(r: dict) -> int:
    return (features_halo_px(smooth_px=r["smooth"], texture_px=r["texture"])
            + max(r["majority"] + r["shadow_buffer"], r["tolerance"]))


def detect_halo_px(*, pixel_size_m: float, params: DetectorParams) -> int:
    """Pixels of context :func:`detect_block` needs on every side of a block.

    A block read with this halo and cropped afterwards gives exactly (bit for bit) the
    result of the whole image in its core: features, majority filter and evidence
    tolerance, then opening, closing and hole filling, add up (in analysis pixels, plus one
    for a partial edge block). The halo is a multiple of the analysis factor, so blocks
    whose origin is a multiple of the factor see the same analysis pixels.
    """
    f = params.factor(pixel_size_m)
    r = params.radii_px(pixel_size_m * f)
    coarse = (_pixel_halo(r) + r["shadow_reach"]  # moved-shadow veto
              + clean_halo_px(open_px=r["open"], close_px=r["close"], hole_px=r["hole"])
              + 2 * r["shadow_seed"] + r["shadow_reach"])  # growth into cast shadows
    return f * (coarse + (1 if f > 1 else 0))


def _change_arrays(feat, fine) -> list:
    if fine is None:
        fine = np.zeros(feat.red.shape, np.float32)
    return [feat.red, feat.green, np.sqrt(feat.brightness), feat.texture, fine]


_QUANT = 16.0  # evidence quantum: 1/16 of a feature's robust spread


def change_evidence(fb: list, fa: list, *, offsets, scales, tolerance_px: int) -> np.ndarray:
    """Normalised multi-feature difference, tolerant to misregistration (float32, (y, x)).

    For each feature pair, ``d = min(dist(a, range_b), dist(b, range_a))`` where
    ``range_x`` is the min..max of ``x`` over the (2t+1)^2 window and ``a`` is shifted by
    its global offset; then ``sqrt(sum((d / scale)**2))``. Features are quantised to
    1/16 of their spread (int16) first, which is exact and fast. Halo = ``tolerance_px``.
    """
    total = None
    f32 = np.float32
    for b, a, off, sc, floor in zip(fb, fa, offsets, scales, _SCALE_FLOOR):
        # features are bounded (chromaticity <= 1, sqrt brightness <= 16, texture <= 128),
        # so with the floored spread the quantised values fit int16 without clipping
        k = f32(_QUANT / max(sc, floor))
        off = float(np.clip(off, -4 * floor * 100, 4 * floor * 100))
        bq = (b * k).astype(np.int16)
        aq = ((a - f32(off)) * k).astype(np.int16)
        d_ab = np.maximum(aq - box_max(bq, radius=tolerance_px), box_min(bq, radius=tolerance_px) - aq)
        d_ba = np.maximum(bq - box_max(aq, radius=tolerance_px), box_min(aq, radius=tolerance_px) - bq)
        np.minimum(d_ab, d_ba, out=d_ab)
        np.maximum(d_ab, 0, out=d_ab)
        d = d_ab.astype(np.int32)
        d *= d
        if total is None:
            total = d
        else:
            total += d
    out = total.astype(np.float32)
    np.sqrt(out, out=out)
    out *= f32(1.0 / _QUANT)
    return out


def _pixel_stage(before, after, valid, params: DetectorParams, r: dict, fine_b=None, fine_a=None):
    """Classes of both epochs and change evidence on one strip (halo = _pixel_halo)."""
    fb = compute_features(before, smooth_px=r["smooth"], texture_px=r["texture"])
    fa = compute_features(after, smooth_px=r["smooth"], texture_px=r["texture"])
    cb = majority_filter(classify_features(fb, valid, params=params.before), radius=r["majority"])
    ca = majority_filter(classify_features(fa, valid, params=params.after), radius=r["majority"])
    ev = change_evidence(_change_arrays(fb, fine_b), _change_arrays(fa, fine_a), offsets=params.offsets,
                         scales=params.scales, tolerance_px=r["tolerance"])
    k = np.float32(params.shade_ratio)
    shaded_after = fa.brightness < fb.brightness * k
    shaded_before = fb.brightness < fa.brightness * k
    return cb, ca, ev, shaded_before, shaded_after


def _check_inputs(before, after, valid, farmland):
    for name, img in (("before", before), ("after", after)):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[0] not in (3, 4):
            raise ValueError(f"{name} must be a numpy (band, y, x) array with 3 or 4 bands, "
                             f"found {getattr(img, 'shape', type(img))}")
        if img.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8, found {img.dtype}; scale it to 0..255 first")
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} must have the same shape and bands")
    if valid.shape != before.shape[1:]:
        raise ValueError(f"valid {valid.shape} must be (y, x) = {before.shape[1:]}")
    if farmland is not None and farmland.shape != before.shape[1:]:
        raise ValueError(f"farmland {farmland.shape} must be (y, x) = {before.shape[1:]}")


def detect_block(before: np.ndarray, after: np.ndarray, valid: np.ndarray, *, farmland: np.ndarray | None,
                 rules: Sequence, params: DetectorParams, pixel_size_m: float,
                 core: tuple | None = None) -> DetectResult:
    """Detect rule-matching changes in one block of a co-registered pair.

    Parameters
    ----------
    before, after : ndarray (band, y, x), uint8
        R, G, B (+ NIR) of both epochs on the same grid, ``after`` normalised to ``before``.
    valid : ndarray (y, x), bool
        True where both epochs are usable.
    farmland : ndarray (y, x), bool, or None
        True inside farmland; None when there is no farmland layer (see module notes).
    rules : sequence of Rule
        Transition rules in priority order (first match wins); at most 255.
    params : DetectorParams
        Fitted once for the whole mosaic by :func:`fit_detector`.
    pixel_size_m : float
        Ground size of one pixel in metres.
    core : (slice, slice), optional
        Return the results of this window only (the block's core, without its halo);
        it must start at multiples of ``params.factor(pixel_size_m)``. Default: all.

    Returns
    -------
    DetectResult
        ``rule`` (uint8), ``score`` (float32), ``before_class``, ``after_class`` (uint8).

    Notes
    -----
    Halo: :func:`detect_halo_px`. A block read with that halo gives, after cropping the
    halo, exactly the whole-image result in its core, provided the block's origin (halo
    included) is a multiple of ``params.factor(pixel_size_m)`` pixels from the image's. The
    minimum mapping unit is not applied (the vectoriser applies it on merged patches).
    Inputs are not modified.
    """
    coarse, f = detect_analysis_block(before, after, valid, farmland=farmland, rules=rules, params=params,
                                      pixel_size_m=pixel_size_m, core=core)
    if f == 1:
        return coarse
    ys, xs = core if core is not None else (slice(0, valid.shape[0]), slice(0, valid.shape[1]))
    return expand_result(coarse, factor=f, valid=np.asarray(valid, dtype=bool)[ys, xs],
                         farmland=None if farmland is None else np.asarray(farmland, dtype=bool)[ys, xs],
                         rules=rules)


def detect_analysis_block(before: np.ndarray, after: np.ndarray, valid: np.ndarray, *,
                          farmland: np.ndarray | None, rules: Sequence, params: DetectorParams,
                          pixel_size_m: float, core: tuple | None = None,
                          after_lut: np.ndarray | None = None) -> tuple:
    """:func:`detect_block` up to the analysis resolution: the first half of it.

    Same parameters as :func:`detect_block`, and ``after_lut``: look-up tables (band, 256)
    that ``after`` goes through first (the radiometric normalisation), applied while the
    blocks are averaged (one pass over the pixels). Returns ``(coarse, factor)``: the
    :class:`DetectResult` of the core's analysis pixels (``ceil(core / factor)`` on each
    side; the last row and column may cover fewer input pixels) before the results are
    repeated back to the input pixels, and the analysis factor. :func:`expand_result` turns
    any window of it into the input-resolution result of :func:`detect_block`.

    Changed analysis pixels are always wholly valid, so only rules tied to farmland (cut to
    the farmland layer's boundary) make the input-resolution result differ from the coarse
    result repeated: see :func:`inexact_pixels`.
    """
    _check_inputs(before, after, valid, farmland)
    valid = np.asarray(valid, dtype=bool)
    if farmland is not None:
        farmland = np.asarray(farmland, dtype=bool)
    f = params.factor(pixel_size_m)
    ys, xs = core if core is not None else (slice(0, valid.shape[0]), slice(0, valid.shape[1]))
    y0, y1, _ = ys.indices(valid.shape[0])
    x0, x1, _ = xs.indices(valid.shape[1])
    if y0 % f or x0 % f:
        raise ValueError(f"core must start at multiples of the analysis factor {f}, found ({y0}, {x0})")
    inputs = analysis_inputs(before, after, valid, farmland=farmland, factor=f, after_lut=after_lut)
    cy, cx = slice(y0 // f, -(-y1 // f)), slice(x0 // f, -(-x1 // f))
    return detect_inputs(inputs, rules=rules, params=params, pixel_size_m=pixel_size_m, core=(cy, cx)), f


class AnalysisInputs(NamedTuple):
    """What detection starts from: both epochs at the analysis resolution, all (y, x).

    before, after : (band, y, x) uint8 block means (``after`` normalised).
    fine_before, fine_after : float32 standard deviation of the luminance inside each block
        (:func:`~imagery_watch.features.block_std`), or None when the factor is 1.
    valid : bool, every input pixel of the block valid.
    farmland : bool, at least half of the block's input pixels in farmland; None without a
        farmland layer.
    factor : int, the analysis factor (input pixels per analysis pixel along each axis).
    """

    before: np.ndarray
    after: np.ndarray
    fine_before: np.ndarray | None
    fine_after: np.ndarray | None
    valid: np.ndarray
    farmland: np.ndarray | None
    factor: int


def analysis_inputs(before: np.ndarray, after: np.ndarray, valid: np.ndarray, *, farmland: np.ndarray | None,
                    factor: int, after_lut: np.ndarray | None = None) -> AnalysisInputs:
    """Block statistics of a window of input pixels: the first step of :func:`detect_analysis_block`.

    Parameters as :func:`detect_analysis_block` (``valid`` and ``farmland`` bool), and the
    analysis ``factor`` (``params.factor(pixel_size_m)``). No halo: an analysis pixel depends
    on its own block only, so windows whose origins are multiples of ``factor`` can be
    computed apart (strips of a larger window, say) and put side by side; a partial block
    at the bottom or right edge repeats the edge pixels (``valid``: padded with False).
    """
    f = int(factor)
    if f == 1:
        return AnalysisInputs(before, after if after_lut is None else map_bands(after, after_lut), None, None,
                              valid, farmland, 1)
    mean_b, fine_b = block_stats(before, f)
    mean_a, fine_a = block_stats(after, f, after_lut)
    return AnalysisInputs(mean_b, mean_a, fine_b, fine_a, block_all(valid, f),
                          None if farmland is None else block_majority(farmland, f), f)


def detect_inputs(inputs: AnalysisInputs, *, rules: Sequence, params: DetectorParams, pixel_size_m: float,
                  core: tuple | None = None) -> DetectResult:
    """Detection on :class:`AnalysisInputs`: the second step of :func:`detect_analysis_block`.

    ``pixel_size_m`` is the input pixels' size; ``core`` (analysis pixels, default all) the
    window to return. The inputs must hold the :func:`detect_halo_px` context (divided by
    the factor) around the core for the core to be exact.
    """
    if len(rules) > 255:
        raise ValueError(f"at most 255 rules, found {len(rules)}")
    fine = None if inputs.fine_before is None else (inputs.fine_before, inputs.fine_after)
    res = _detect_analysis(inputs.before, inputs.after, inputs.valid, inputs.farmland, fine=fine, rules=rules,
                           params=params, pixel_size_m=pixel_size_m * inputs.factor)
    if core is None:
        return res
    return DetectResult(*(np.ascontiguousarray(a[core]) for a in res))


def _cut_codes(rules: Sequence) -> np.ndarray:
    """Per rule value: 1 = cut to inside farmland, 2 = cut to outside farmland, 0 = not cut."""
    cut = np.zeros(256, np.uint8)
    for k, rl in enumerate(rules, start=1):
        cut[k] = {"farmland": 1, "outside_farmland": 2}.get(rl.where, 0)
    return cut


def expand_result(coarse: DetectResult, *, factor: int, valid: np.ndarray, farmland: np.ndarray | None,
                  rules: Sequence, window: tuple | None = None) -> DetectResult:
    """The second half of :func:`detect_block`: analysis pixels back to input pixels.

    Parameters
    ----------
    coarse : DetectResult
        From :func:`detect_analysis_block` (its core).
    factor : int
        The analysis factor it returned.
    valid, farmland : ndarray (y, x), bool
        Input-resolution masks of the core (``farmland`` None without a farmland layer).
    rules : sequence of Rule
        The rules of the detection.
    window : (slice, slice), optional
        Expand only this window of the core (input pixels; starts at multiples of
        ``factor``). Default: the whole core.

    Returns
    -------
    DetectResult
        Input-resolution arrays of the window: the coarse values repeated, NODATA outside
        ``valid``, and changes of rules tied to farmland cut to the farmland boundary.
    """
    f = int(factor)
    ys, xs = window if window is not None else (slice(0, valid.shape[0]), slice(0, valid.shape[1]))
    y0, y1, _ = ys.indices(valid.shape[0])
    x0, x1, _ = xs.indices(valid.shape[1])
    if y0 % f or x0 % f:
        raise ValueError(f"window must start at multiples of the analysis factor {f}, found ({y0}, {x0})")
    shape = (y1 - y0, x1 - x0)
    cy, cx = slice(y0 // f, -(-y1 // f)), slice(x0 // f, -(-x1 // f))
    rule, score, cb, ca = (upsample(a[cy, cx], f, shape) for a in coarse)
    invalid = ~valid[y0:y1, x0:x1]
    rule[invalid] = 0
    score[invalid] = 0
    cb[invalid] = LandCover.NODATA
    ca[invalid] = LandCover.NODATA
    if farmland is not None:
        # patches follow the farmland boundary of the vector layer, not the analysis blocks
        cut = _cut_codes(rules)
        if cut.any():
            c = cut[rule]
            farm = farmland[y0:y1, x0:x1]
            rule[((c == 1) & ~farm) | ((c == 2) & farm)] = 0
    return DetectResult(rule, score, cb, ca)


def inexact_pixels(coarse_rule: np.ndarray, *, factor: int, shape: tuple, farmland: np.ndarray | None,
                   rules: Sequence) -> np.ndarray:
    """Changed analysis pixels whose input pixels :func:`expand_result` does not all give
    the coarse value: rules tied to farmland on blocks with input pixels on the wrong side
    of the farmland boundary, and partial blocks along the bottom and right edges of a core
    of ``shape`` input pixels.

    Every other changed analysis pixel stands for ``factor**2`` input pixels of its values.
    """
    f = int(factor)
    out = np.zeros(coarse_rule.shape, bool)
    if shape[0] % f:
        out[-1] = True
    if shape[1] % f:
        out[:, -1] = True
    if farmland is not None and f > 1:
        cut = _cut_codes(rules)
        if cut.any():
            count = block_count(farmland, f)
            c = cut[coarse_rule]
            out |= ((c == 1) & (count < f * f)) | ((c == 2) & (count > 0))  # some input pixels cut
    out &= coarse_rule > 0
    return out


def _detect_analysis(before, after, valid, farmland, *, rules, params: DetectorParams,
                     pixel_size_m: float, fine=None) -> DetectResult:
    """:func:`detect_block` at the analysis resolution (inputs already block-averaged)."""
    valid = np.asarray(valid, dtype=bool)
    if farmland is not None:
        farmland = np.asarray(farmland, dtype=bool)
    r = params.radii_px(pixel_size_m)
    ny, nx = valid.shape
    lut = _rule_lut(rules, has_farmland=farmland is not None)
    thr = np.float32(params.threshold)
    cb = np.empty((ny, nx), np.uint8)
    ca = np.empty((ny, nx), np.uint8)
    score = np.empty((ny, nx), np.float32)
    raw = np.empty((ny, nx), np.uint8)
    blocked = np.empty((ny, nx), bool)
    darker_before = np.empty((ny, nx), bool)
    darker_after = np.empty((ny, nx), bool)
    h = _pixel_halo(r)
    for y0 in range(0, ny, _STRIP_ROWS):
        y1 = min(ny, y0 + _STRIP_ROWS)
        lo, hi = max(0, y0 - h), min(ny, y1 + h)
        fb, fa = (None, None) if fine is None else (fine[0][lo:hi], fine[1][lo:hi])
        sb, sa, ev, dark_b, dark_a = _pixel_stage(before[:, lo:hi], after[:, lo:hi], valid[lo:hi], params, r,
                                                  fb, fa)
        shadow = (sb == LandCover.SHADOW) | (sa == LandCover.SHADOW)
        shadow = box_max(shadow.view(np.uint8), radius=r["shadow_buffer"]).view(bool)
        core = slice(y0 - lo, y1 - lo)
        sb, sa, ev = sb[core], sa[core], ev[core]
        blocked[y0:y1] = shadow[core]
        darker_before[y0:y1] = dark_b[core]
        darker_after[y0:y1] = dark_a[core]
        cb[y0:y1] = sb
        ca[y0:y1] = sa
        # transition code: before * 8 + after (0..63) + 64 * location (0 in, 1 out of farmland)
        code = sb << 3
        code |= sa
        if farmland is not None:
            code |= farmland[y0:y1].view(np.uint8) << 6 ^ np.uint8(64)
        rr = lut[code]
        rr[ev <= thr] = 0
        rr[blocked[y0:y1]] = 0
        raw[y0:y1] = rr
        sc = ev + thr
        np.divide(ev, sc, out=sc)
        score[y0:y1] = sc
    score[~valid] = 0
    rule_map = np.zeros((ny, nx), np.uint8)
    present = np.flatnonzero(np.bincount(raw.ravel(), minlength=len(rules) + 1)[1:]) + 1
    if present.size == 0:
        return DetectResult(rule_map, score, cb, ca)
    usable = valid & ~blocked
    tall = {LandCover.BUILT, LandCover.TREE}
    near_kept = None  # near trees and buildings present in both epochs (computed when needed)
    for k in present[::-1]:  # reverse order so earlier rules overwrite later ones
        rule = rules[k - 1]
        # newly darkened pixels of the epoch that holds the rule's tall objects (new roofs or
        # canopy after, demolished buildings before): their cast shadows
        darkened = np.zeros_like(valid)
        if tall & {LandCover(c) for c in rule.after}:
            darkened |= darker_after
        if tall & {LandCover(c) for c in rule.before}:
            darkened |= darker_before
        fired = raw == k
        if darkened.any():
            if near_kept is None:
                kept = (cb == ca) & ((cb == LandCover.BUILT) | (cb == LandCover.TREE))
                near_kept = box_max(kept.view(np.uint8), radius=r["shadow_reach"]).view(bool)
            # a sun-angle change moves the shadows of the trees and buildings that were there
            # all along: newly darkened ground near them is not new canopy or a new roof
            fired &= ~(near_kept & darkened)
        m = clean_mask(fired, open_px=r["open"], close_px=r["close"], hole_px=r["hole"])
        m &= _where_mask(rule.where, farmland, usable)
        # the shadow cast by what appeared (or, before, by what went) belongs to the change;
        # grown only from the parts of the change at least a few metres wide, so slivers
        # along edges (misregistration, moved shadows) never spread into moved shadows
        seed = open_mask(m, radius=r["shadow_seed"])
        _grow_into(seed, _where_mask(rule.where, farmland, (blocked | darkened) & valid), steps=r["shadow_reach"])
        m |= seed
        rule_map[m] = k
    return DetectResult(rule_map, score, cb, ca)


def _grow_into(mask: np.ndarray, region: np.ndarray, *, steps: int) -> None:
    """Grow ``mask`` in place into the connected parts of ``region`` it touches, at most
    ``steps`` pixels far (8-connected geodesic dilation; halo = ``steps``).

    Used with the shadowed pixels as ``region``: the shadow a new building or new trees
    cast (or a demolished building cast before) belongs to that change.
    """
    if steps <= 0 or not mask.any() or not region.any():
        return
    region_u8 = region.view(np.uint8)
    for _ in range(steps):
        grown = box_max(mask.view(np.uint8), radius=1)
        grown &= region_u8
        grown |= mask.view(np.uint8)
        if np.array_equal(grown, mask.view(np.uint8)):
            return
        mask[...] = grown.view(bool)


def _rule_lut(rules: Sequence, *, has_farmland: bool) -> np.ndarray:
    """First matching rule per code ``64 * outside_farmland + 8 * before + after``.

    Shadow and NODATA never match any rule.
    """
    lut = np.zeros(256, np.uint8)
    never = {LandCover.SHADOW, LandCover.NODATA}
    for k in range(len(rules), 0, -1):
        rule = rules[k - 1]
        if rule.where not in ("farmland", "outside_farmland", "anywhere"):
            raise ValueError(f"rule {rule.name!r}: where must be farmland, outside_farmland or anywhere, "
                             f"found {rule.where!r}")
        if rule.where == "anywhere" or (rule.where == "farmland" and not has_farmland):
            locs = (0, 1)
        elif rule.where == "farmland":
            locs = (0,)
        elif has_farmland:
            locs = (1,)
        else:
            locs = ()
        for loc in locs:
            for b in rule.before:
                for a in rule.after:
                    if LandCover(b) in never or LandCover(a) in never:
                        continue
                    lut[64 * loc + 8 * int(b) + int(a)] = k
    return lut


def _where_mask(where: str, farmland, usable):
    if where == "anywhere":
        return usable
    if where == "farmland":
        return usable if farmland is None else usable & farmland
    if where == "outside_farmland":
        return None if farmland is None else usable & ~farmland
    raise ValueError(f"rule location must be farmland, outside_farmland or anywhere, found {where!r}")


def _robust(values: np.ndarray):
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826
    return med, mad


def fit_detector(before_samples, after_samples, valid_samples, *, pixel_size_m: float,
                 sensitivity: float = 1.0, base: DetectorParams | None = None) -> DetectorParams:
    """Fit every global statistic of the detector once, from samples across the mosaic.

    Parameters
    ----------
    before_samples, after_samples : list of ndarray (band, y, x), uint8
        Pairs of sample blocks drawn across the whole mosaic (same shapes pairwise).
    valid_samples : list of ndarray (y, x), bool
        Usable pixels of each pair.
    pixel_size_m : float
        Ground size of one pixel in metres.
    sensitivity : float
        Higher finds more (the evidence threshold is divided by it); 0.1..10.
    base : DetectorParams, optional
        Window sizes and defaults to start from.

    Returns
    -------
    DetectorParams
        Classifier thresholds per epoch (:func:`~imagery_watch.classify.fit_classifier`);
        offset and spread of each change feature (median and MAD of ``after - before``
        over all sampled valid pixels, spreads floored); the evidence threshold
        ``evidence_sigma / sensitivity``. The evidence is in units of those robust spreads,
        so one threshold serves every scene: the class transition does most of the work,
        the evidence only vetoes pixels whose class flipped without a real difference.

    Raises
    ------
    ValueError
        If the lists differ in length, a pair differs in shape, or there are no samples.
    """
    if not 0.1 <= sensitivity <= 10:
        raise ValueError(f"sensitivity must be within 0.1..10 (1 = default), found {sensitivity}")
    if not (len(before_samples) == len(after_samples) == len(valid_samples)) or not before_samples:
        raise ValueError("fit_detector needs equally long, non-empty lists of before, after and valid samples; "
                         f"found {len(before_samples)}, {len(after_samples)}, {len(valid_samples)}")
    base = base or DetectorParams()
    f = base.factor(pixel_size_m)
    fine_b = fine_a = [None] * len(before_samples)
    if f > 1:
        before_samples, fine_b = zip(*(block_stats(b, f) for b in before_samples))
        after_samples, fine_a = zip(*(block_stats(a, f) for a in after_samples))
        valid_samples = [block_all(np.asarray(v, dtype=bool), f) for v in valid_samples]
        pixel_size_m = pixel_size_m * f
    pb = fit_classifier(before_samples, valid_samples, pixel_size_m=pixel_size_m, base=base.before)
    pa = fit_classifier(after_samples, valid_samples, pixel_size_m=pixel_size_m, base=base.after)
    p = dataclasses.replace(base, before=pb, after=pa, sensitivity=float(sensitivity))
    r = p.radii_px(pixel_size_m)
    diffs = [[] for _ in CHANGE_FEATURES]
    rng = np.random.default_rng(0)
    for b, a, v, gb, ga in zip(before_samples, after_samples, valid_samples, fine_b, fine_a):
        _check_inputs(b, a, np.asarray(v), None)
        v = np.asarray(v, dtype=bool)
        fb = _change_arrays(compute_features(b, smooth_px=r["smooth"], texture_px=r["texture"]), gb)
        fa = _change_arrays(compute_features(a, smooth_px=r["smooth"], texture_px=r["texture"]), ga)
        idx = np.flatnonzero(v.ravel())
        if idx.size > 50_000:
            idx = rng.choice(idx, 50_000, replace=False)
        for k in range(len(CHANGE_FEATURES)):
            diffs[k].append((fa[k].ravel()[idx] - fb[k].ravel()[idx]).astype(np.float32))
    offsets, scales = [], []
    for k, floor in enumerate(_SCALE_FLOOR):
        vals = np.concatenate(diffs[k]) if diffs[k] else np.zeros(1, np.float32)
        med, mad = _robust(vals) if vals.size else (0.0, 0.0)
        offsets.append(med)
        scales.append(max(mad, floor))
    return dataclasses.replace(p, offsets=tuple(offsets), scales=tuple(scales),
                               threshold=base.evidence_sigma / sensitivity)


def _detect_stacked(before, after, valid, farmland=None, *, rules, params, pixel_size_m, has_farmland):
    res = detect_block(before, after, valid, farmland=farmland if has_farmland else None, rules=rules,
                       params=params, pixel_size_m=pixel_size_m)
    out = np.empty((4,) + res.rule.shape, np.float32)
    out[0] = res.rule
    out[1] = res.score
    out[2] = res.before_class
    out[3] = res.after_class
    return out


def detect_lazy(before, after, valid, *, farmland, rules: Sequence, params: DetectorParams,
                pixel_size_m: float) -> DetectResult:
    """:func:`detect_block` over a whole (lazy) mosaic, chunk by chunk with the right halo.

    Parameters are those of :func:`detect_block`, as numpy, Dask or xarray arrays.
    Returns a :class:`DetectResult` of Dask arrays (numpy when every input is numpy),
    identical to :func:`detect_block` on the whole image for any chunking.
    """
    from .blocks import map_blocks_with_halo

    f = params.factor(pixel_size_m)
    for axis_chunks in getattr(valid, "chunks", ((),))[-2:]:
        if any(c % f for c in axis_chunks[:-1]):
            raise ValueError(f"chunks {axis_chunks} must be multiples of the analysis factor {f} "
                             f"(analysis_m {params.analysis_m} m at {pixel_size_m} m pixels), except the last")
    arrays = [before, after, valid] + ([farmland] if farmland is not None else [])
    stacked = map_blocks_with_halo(
        _detect_stacked, *arrays, halo_px=detect_halo_px(pixel_size_m=pixel_size_m, params=params),
        dtype=np.float32, out_bands=4, rules=tuple(rules), params=params, pixel_size_m=pixel_size_m,
        has_farmland=farmland is not None)
    return DetectResult(stacked[0].astype(np.uint8), stacked[1], stacked[2].astype(np.uint8),
                        stacked[3].astype(np.uint8))
