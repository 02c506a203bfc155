"""Supervised change detection: a classifier trained on labelled pairs (issue 8).

A bureau has years of reviewed patches; this module learns change from them instead of
from rules. For one before/after pair:

1. per-pixel features at the analysis resolution (:mod:`~imagery_watch.pair_features`:
   colour, brightness, texture, edges, their differences, change evidence and context,
   as z-scores against the pair's own statistics);
2. a scikit-learn :class:`~sklearn.ensemble.HistGradientBoostingClassifier` gives the
   probability of change, averaged over 3 x 3 analysis pixels;
3. pixels above the model's threshold are cleaned (:func:`~imagery_watch.clean.clean_mask`)
   and repeated back to the input pixels (:func:`~imagery_watch.features.upsample`).

Training (:func:`fit_change_model`) samples a balanced set of pixels of the labelled pairs
(every change pixel up to half of ``max_samples`` and as many no-change pixels, fixed
seed), predicts every pair out of fold (the pairs, or with fewer than three pairs their
quarters, are the folds), picks the threshold that maximises F1 of the cleaned out-of-fold
masks, and fits the final model on the whole sample. :func:`save_model` writes everything
to one file.

Model files hold a pickled estimator: load only files you trust (like any pickle).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .clean import clean_mask
from .detect import DetectorParams
from .errors import InputFileError, OutputError
from .features import block_majority, upsample
from .pair_features import ANALYSIS_M, OBJECT_FEATURES, PreparedPair, exact_box_mean, feature_names

log = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "LabelledPair", "ChangeModel", "fit_change_model", "change_probability",
           "predict_change", "save_model", "read_model_header", "load_model", "read_labelled_pairs"]

#: version of the model file layout and of the feature list; files of another version are refused
FORMAT_VERSION = 1
_MAGIC = b"imagery-watch change model\n"
_PROB_QUANT = 4096.0  # probabilities are smoothed on a 1/4096 lattice
_NO_CHANGE_PER_CHANGE = 1  # no-change pixels sampled per change pixel


@dataclass(frozen=True)
class LabelledPair:
    """One training pair: images (band, y, x) uint8 on one grid and the change label (y, x) bool."""

    name: str
    before: np.ndarray
    after: np.ndarray
    label: np.ndarray
    valid: np.ndarray | None = None



def _probability(p: PreparedPair, estimator) -> np.ndarray:
    """Probability of change per analysis pixel of a prepared pair, averaged over 3 x 3
    analysis pixels (exact sums), 0 where invalid."""
    prob = np.zeros(p.valid.shape, np.float32)
    for y0, y1, x in p.strips():
        n, sy, sx = x.shape
        with _openmp_threads(1):
            prob[y0:y1] = estimator.predict_proba(x.reshape(n, -1).T)[:, 1].reshape(sy, sx)
    prob = exact_box_mean(prob, 1, quantum=_PROB_QUANT)
    prob[~p.valid] = 0
    return prob


@dataclass(frozen=True)
class ChangeModel:
    """A trained change classifier and everything needed to apply it.

    Attributes
    ----------
    estimator : sklearn classifier with ``predict_proba``
    feature_names : tuple of str
    bands : int
        Bands it was trained on (3 = RGB, 4 = RGB + NIR).
    pixel_size_m : float
        Pixel size of the training pairs (windows are in metres, so other sizes work).
    analysis_m : float
        Analysis resolution in metres.
    threshold : float
        Probability above which an analysis pixel is change (maximises out-of-fold F1).
    open_m, close_m, hole_m : float
        Cleaning of the thresholded mask (as :class:`~imagery_watch.detect.DetectorParams`).
    summary : dict
        Training figures: pairs, samples, out-of-fold precision / recall / F1, seconds...
    """

    estimator: object
    feature_names: tuple
    bands: int
    pixel_size_m: float
    analysis_m: float = ANALYSIS_M
    threshold: float = 0.5
    open_m: float = DetectorParams().open_m
    close_m: float = DetectorParams().close_m
    hole_m: float = DetectorParams().hole_m
    summary: dict = field(default_factory=dict)

    def header(self) -> dict:
        """The JSON-ready description written in front of the estimator in a model file."""
        import sklearn

        return {"format_version": FORMAT_VERSION, "feature_names": list(self.feature_names), "bands": self.bands,
                "pixel_size_m": self.pixel_size_m, "analysis_m": self.analysis_m, "threshold": self.threshold,
                "open_m": self.open_m, "close_m": self.close_m, "hole_m": self.hole_m,
                "estimator": getattr(self.estimator, "describe", lambda: type(self.estimator).__name__)(), "sklearn_version": sklearn.__version__,
                "summary": self.summary}


def _clean(mask: np.ndarray, model: ChangeModel, analysis_pixel_m: float) -> np.ndarray:
    p = DetectorParams(open_m=model.open_m, close_m=model.close_m, hole_m=model.hole_m)
    r = p.radii_px(analysis_pixel_m)
    return clean_mask(mask, open_px=r["open"], close_px=r["close"], hole_px=r["hole"])


def _use_bands(model: ChangeModel, before, after, where: str):
    bands = min(before.shape[0], after.shape[0])
    if bands < model.bands:
        raise InputFileError(f"{where}: the model was trained on {model.bands} bands (R, G, B, NIR) but the images "
                             f"have {bands}; use a model trained on RGB images (imagery-watch train)")
    return before[:model.bands], after[:model.bands]


def change_probability(model: ChangeModel, before: np.ndarray, after: np.ndarray, valid: np.ndarray | None = None,
                       *, pixel_size_m: float, name: str = "pair") -> np.ndarray:
    """Probability of change per analysis pixel, (y / factor, x / factor) float32, 0 where invalid.

    Extra bands beyond the model's (NIR for an RGB model) are ignored.
    """
    before, after = _use_bands(model, before, after, name)
    p = PreparedPair(before, after, valid, pixel_size_m=pixel_size_m, analysis_m=model.analysis_m, name=name,
                     objects=_has_objects(model))
    return _probability(p, model.estimator)


def predict_change(model: ChangeModel, before: np.ndarray, after: np.ndarray, valid: np.ndarray | None = None, *,
                   pixel_size_m: float, name: str = "pair") -> np.ndarray:
    """Change mask of one pair at its input pixels, (y, x) bool.

    Probability per analysis pixel above ``model.threshold``, cleaned
    (:func:`~imagery_watch.clean.clean_mask`), repeated back to the input pixels and cut to
    ``valid``. A model with object features (the default of :func:`fit_change_model`) adds
    to the new buildings that :func:`~imagery_watch.buildings.find_new_buildings` finds:
    its threshold was chosen for that union. Inputs are not modified.

    Raises
    ------
    InputFileError
        Images of different sizes, or fewer bands than the model was trained on.
    """
    before, after = _use_bands(model, before, after, name)
    p = PreparedPair(before, after, valid, pixel_size_m=pixel_size_m, analysis_m=model.analysis_m, name=name,
                     objects=_has_objects(model))
    mask = _clean(_probability(p, model.estimator) > model.threshold, model, p.analysis_pixel_m) & p.valid
    out = upsample(mask, p.factor, p.shape)
    if p.found is not None:  # what the model adds to the segments' new buildings
        out |= p.found
    if valid is not None:
        out &= np.asarray(valid, bool)
    return out


def _has_objects(model: ChangeModel) -> bool:
    """Whether the model reads the roof-like segment features (files before them do not)."""
    return OBJECT_FEATURES[0] in model.feature_names


def _openmp_threads(n: int):
    """Limit scikit-learn's OpenMP threads inside a ``with`` block.

    Busy-waiting OpenMP threads slow the gradient-boosting fit 10-30 times when the cores
    are shared (parallel test workers, Dask workers, other jobs): one thread is the
    predictable default.
    """
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="openmp")


def _new_estimator(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    # no class weights: the sample is balanced instead (sample weights make the fit ~6x slower)
    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=200,
                                          l2_regularization=1.0, early_stopping=False, random_state=seed)


class BaggedClassifier:
    """Mean probability of classifiers each fitted on all change pixels and its own share
    of the no-change pixels: uses more of the no-change pixels than one balanced sample,
    and steadier than any one member (few labelled scenes make single fits noisy)."""

    def __init__(self, members: list):
        self.members = list(members)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = self.members[0].predict_proba(x)
        for m in self.members[1:]:
            out += m.predict_proba(x)
        out /= len(self.members)
        return out

    def describe(self) -> str:
        return f"{len(self.members)} x {type(self.members[0]).__name__}"


@dataclass(frozen=True)
class _Sample:
    """Training rows: features (n, features), label, fold and bag (-1 = every bag) per row."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    bag: np.ndarray


def _bag_ids(rng, n: int, per_bag: int, bags: int) -> np.ndarray:
    """Bag of each of ``n`` candidates (-1 = not drawn): ``per_bag`` distinct ones per bag,
    disjoint between bags while there are enough candidates."""
    out = np.full(n, -1, np.int16)
    order = rng.permutation(n)
    if per_bag * bags <= n:
        for b in range(bags):
            out[order[b * per_bag:(b + 1) * per_bag]] = b
        return out
    # too few to keep the bags apart: each bag draws its own, the last draw of a row wins
    for b in range(bags):
        out[rng.choice(n, per_bag, replace=False)] = b
    return out


def _fit_bags(sample: _Sample, rows: np.ndarray, *, seed: int, threads: int):
    """A :class:`BaggedClassifier` fitted on ``rows`` of the sample (None: a class is missing)."""
    members = []
    for b in range(max(1, int(sample.bag.max()) + 1)):
        take = rows & ((sample.bag == -1) | (sample.bag == b))
        if len(np.unique(sample.y[take])) < 2:
            continue
        with _openmp_threads(threads):
            members.append(_new_estimator(seed + b).fit(sample.x[take], sample.y[take]))
    if not members:
        return None
    return members[0] if len(members) == 1 else BaggedClassifier(members)


def _groups(prepared: list) -> tuple:
    """Fold id per analysis pixel of each pair: the pair (3 pairs or more) or its quarter."""
    if len(prepared) >= 3:
        k = min(5, len(prepared))
        return [np.full(p.valid.shape, i % k, np.int16) for i, p in enumerate(prepared)], k, "pairs"
    out = []
    for p in prepared:
        ny, nx = p.valid.shape
        g = np.zeros((ny, nx), np.int16)
        g[ny // 2:, :] += 2
        g[:, nx // 2:] += 1
        out.append(g)
    return out, 4, "quarters of pairs"


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / max(2 * tp + fp + fn, 1)


def _choose_threshold(model: ChangeModel, prepared: list, labels: list, probs: list) -> tuple:
    """Threshold maximising pooled F1 of the cleaned masks (joined with the segments' new
    buildings for a model with object features, as :func:`predict_change` does); the counts at it."""
    best = (-1.0, 0.5, (0, 0, 0))
    for t in np.round(np.arange(0.02, 0.981, 0.02), 3):
        tp = fp = fn = 0
        for p, y, pr in zip(prepared, labels, probs):
            m = _clean(pr > t, model, p.analysis_pixel_m) & p.valid
            if p.objects is not None:
                m |= p.objects[OBJECT_FEATURES.index("obj_found")] >= 0.5
            a = int((m & y).sum())
            tp, fp, fn = tp + a, fp + int(m.sum()) - a, fn + int(y.sum()) - a
        f1 = _f1(tp, fp, fn)
        if f1 > best[0] + 1e-9:
            best = (f1, float(t), (tp, fp, fn))
    return best


def fit_change_model(pairs: Sequence[LabelledPair], *, pixel_size_m: float, seed: int = 0,
                     max_samples: int = 200_000, bags: int = 1, analysis_m: float = ANALYSIS_M, threads: int = 1,
                     objects: bool = True, on_event: Callable[[str], None] | None = None) -> ChangeModel:
    """Train a change model on labelled pairs.

    Parameters
    ----------
    pairs : sequence of LabelledPair
        Images (band, y, x) uint8, all with the same band count, and labels (y, x) bool of
        the same size. At least one change and one no-change pixel in all.
    pixel_size_m : float
        Pixel size of the pairs in metres.
    seed : int
        Seed of the pixel sample and of the estimator: same inputs and seed, same model.
    max_samples : int
        Analysis pixels sampled per bag (change pixels up to half of them).
    bags : int
        Classifiers averaged; each sees every sampled change pixel and as many no-change
        pixels of its own.
    analysis_m : float
        Analysis resolution in metres.
    threads : int
        OpenMP threads of the estimator's fit (1: predictable on shared cores).
    objects : bool
        Also learn from the roof-like segment features
        (:data:`~imagery_watch.pair_features.OBJECT_FEATURES`, the evidence of
        ``detect-pairs --evidence segments``).
    on_event : callable, optional
        Receives one-line progress messages.

    Returns
    -------
    ChangeModel

    Raises
    ------
    InputFileError
        A pair whose images or label differ in size, or mixed band counts.
    ValueError
        No pairs, or labels without change or without no-change pixels.
    """
    say = on_event or (lambda msg: log.info(msg))
    t0 = time.perf_counter()
    if not pairs:
        raise ValueError("fit_change_model needs at least one labelled pair")
    if max_samples < 100:
        raise ValueError(f"max_samples must be >= 100, found {max_samples}")
    if bags < 1:
        raise ValueError(f"bags must be >= 1, found {bags}")
    bands = {p.before.shape[0] for p in pairs if isinstance(p.before, np.ndarray) and p.before.ndim == 3}
    if len(bands) > 1:
        raise InputFileError(f"the pairs mix {' and '.join(map(str, sorted(bands)))} bands; train on pairs with the "
                             "same bands (all RGB, or all RGB + NIR)")
    prepared, labels = [], []
    for lp in pairs:
        if lp.label.shape != lp.before.shape[1:]:
            raise InputFileError(f"{lp.name}: label {lp.label.shape[::-1]} and images {lp.before.shape[1:][::-1]} "
                                 "(x, y) differ in size; the label must cover the image pixel for pixel")
        p = PreparedPair(lp.before, lp.after, lp.valid, pixel_size_m=pixel_size_m, analysis_m=analysis_m, name=lp.name,
                         objects=objects)
        prepared.append(p)
        labels.append(block_majority(np.asarray(lp.label, bool), p.factor) & p.valid)
    n_pos = sum(int(y.sum()) for y in labels)
    n_neg = sum(int((p.valid & ~y).sum()) for p, y in zip(prepared, labels))
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"the labels hold {n_pos} change and {n_neg} no-change analysis pixels; training needs "
                         "both (labels are 0/255 or 0/1 masks, change = 255 or 1)")
    groups, k, grouping = _groups(prepared)
    # every change pixel (up to half of max_samples) in every bag; per bag as many no-change pixels
    rng = np.random.default_rng(seed)
    take_pos = min(n_pos, max_samples // 2)
    take_neg = min(n_neg, max_samples - take_pos, max(_NO_CHANGE_PER_CHANGE * take_pos, 50))
    neg_bag = _bag_ids(rng, n_neg, take_neg, bags)
    pos_pick = np.sort(rng.choice(n_pos, take_pos, replace=False))
    neg_pick = np.flatnonzero(neg_bag >= 0)
    flat = [(np.flatnonzero(y.ravel()), np.flatnonzero((p.valid & ~y).ravel())) for p, y in zip(prepared, labels)]
    xs, ys, gs, bs = [], [], [], []
    pos_off = neg_off = 0
    for p, y, g, (pos, neg) in zip(prepared, labels, groups, flat):
        pi = pos_pick[(pos_pick >= pos_off) & (pos_pick < pos_off + pos.size)] - pos_off
        ni = neg_pick[(neg_pick >= neg_off) & (neg_pick < neg_off + neg.size)]
        idx = np.concatenate([pos[pi], neg[ni - neg_off]])
        bs.append(np.concatenate([np.full(pi.size, -1, np.int16), neg_bag[ni]]))
        pos_off, neg_off = pos_off + pos.size, neg_off + neg.size
        feats = np.concatenate([x for _, _, x in p.strips()], axis=1).reshape(-1, y.size)
        xs.append(feats[:, idx].T)
        ys.append(y.ravel()[idx])
        gs.append(g.ravel()[idx])
    sample = _Sample(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), np.concatenate(bs))
    say(f"{len(pairs)} pairs, {take_pos:,} change and {bags} x {take_neg:,} no-change pixels sampled "
        f"(of {n_pos:,} and {n_neg:,}), {sample.x.shape[1]} features")
    names = feature_names(next(iter(bands)), objects=objects)
    model = ChangeModel(estimator=None, feature_names=names, bands=next(iter(bands)),
                        pixel_size_m=float(pixel_size_m), analysis_m=float(analysis_m))
    # out-of-fold probabilities, for the threshold
    probs = [np.zeros(y.shape, np.float32) for y in labels]
    for fold in range(k):
        est = _fit_bags(sample, sample.group != fold, seed=seed, threads=threads)
        if est is None:
            continue
        for p, g, pr in zip(prepared, groups, probs):
            held = g == fold
            if held.any():
                pr[held] = _probability(p, est)[held]
        say(f"fold {fold + 1}/{k} ({grouping}) done")
    f1, threshold, (tp, fp, fn) = _choose_threshold(model, prepared, labels, probs)
    estimator = _fit_bags(sample, np.ones(sample.y.size, bool), seed=seed, threads=threads)
    summary = {
        "pairs": [p.name for p in prepared], "pixel_size_m": float(pixel_size_m), "seed": int(seed),
        "max_samples": int(max_samples), "samples_change": int(take_pos), "samples_no_change": int(take_neg),
        "bags": int(bags), "change_pixels": n_pos, "no_change_pixels": n_neg, "folds": k, "folds_by": grouping,
        "out_of_fold": {"threshold": threshold, "f1": round(f1, 4),
                        "precision": round(tp / max(tp + fp, 1), 4), "recall": round(tp / max(tp + fn, 1), 4)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    say(f"threshold {threshold:.3f}: out-of-fold F1 {f1:.3f} (precision {summary['out_of_fold']['precision']:.3f}, "
        f"recall {summary['out_of_fold']['recall']:.3f}), {summary['seconds']} s")
    return ChangeModel(estimator=estimator, feature_names=names, bands=model.bands, pixel_size_m=float(pixel_size_m),
                       analysis_m=float(analysis_m), threshold=threshold, summary=summary)


# --------------------------------------------------------------------------- the model file

def save_model(model: ChangeModel, path: str | os.PathLike) -> Path:
    """Write the model to one file: a magic line, a JSON header line, then the pickled estimator.

    The header (format version, features, pixel sizes, threshold, training summary) can be
    read without unpickling anything (``head -2 MODEL``).

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    import joblib

    path = Path(path)
    buf = io.BytesIO()
    joblib.dump(model.estimator, buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            f.write(json.dumps(model.header(), sort_keys=True).encode() + b"\n")
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the model ({exc}); choose a writable --out") from None
    return path


def read_model_header(path: str | os.PathLike) -> dict:
    """The JSON header of a model file, without loading the estimator.

    Raises
    ------
    InputFileError
        Missing file, not a model file, or a model file of another format version.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.readline()
            line = f.readline() if magic == _MAGIC else b""
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the model ({exc.strerror or exc}); give the file written by "
                             "imagery-watch train --out") from None
    if magic != _MAGIC:
        raise InputFileError(f"{path}: not an imagery-watch change model; give the file written by "
                             "imagery-watch train --out")
    try:
        header = json.loads(line)
    except ValueError:
        raise InputFileError(f"{path}: the model header is damaged; train the model again (imagery-watch train)") \
            from None
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise InputFileError(f"{path}: model file format version {version}, but this imagery-watch reads version "
                             f"{FORMAT_VERSION}; train the model again with this version (imagery-watch train) or "
                             "use the imagery-watch release that wrote it")
    return header


def load_model(path: str | os.PathLike) -> ChangeModel:
    """Read a model written by :func:`save_model`. Unpickles the estimator: load only files you trust.

    Raises
    ------
    InputFileError
        Missing or damaged file, another format version, or a feature list that differs
        from this version's.
    """
    import joblib

    path = Path(path)
    header = read_model_header(path)
    names = tuple(header.get("feature_names", ()))
    bands = int(header.get("bands", 3))
    if names not in (feature_names(bands), feature_names(bands, objects=True)):
        raise InputFileError(f"{path}: the model was trained on other features than this imagery-watch computes; "
                             "train it again (imagery-watch train)")
    try:
        with open(path, "rb") as f:
            f.readline()
            f.readline()
            estimator = joblib.load(f)
    except Exception as exc:  # unpickling raises anything: name the file and the fix
        raise InputFileError(f"{path}: cannot load the model's estimator ({type(exc).__name__}: {exc}); train the "
                             "model again with this installation (imagery-watch train)") from None
    keys = ("bands", "pixel_size_m", "analysis_m", "threshold", "open_m", "close_m", "hole_m", "summary")
    return ChangeModel(estimator=estimator, feature_names=names, **{k: header[k] for k in keys})


def read_labelled_pairs(before_dir: str | os.PathLike, after_dir: str | os.PathLike, label_dir: str | os.PathLike, *,
                        include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list:
    """Read the labelled pairs of three folders (same file names; labels of any image suffix).

    Parameters
    ----------
    before_dir, after_dir, label_dir : path
        Before and after images (PNG, BMP, TIFF, JPEG) and their 0/255 or 0/1 labels.
    include, exclude : sequence of str
        Glob patterns on the file names: keep names matching any ``include`` (all when
        empty), then drop names matching any ``exclude``.

    Returns
    -------
    list of LabelledPair

    Raises
    ------
    InputFileError
        No images left, an after image or a label missing, or sizes that differ.
    """
    from fnmatch import fnmatch

    from .io.images import list_images, read_image
    from .io.labels import find_label, read_label

    before_dir, after_dir, label_dir = Path(before_dir), Path(after_dir), Path(label_dir)
    files = [f for f in list_images(before_dir)
             if (not include or any(fnmatch(f.name, g) for g in include))
             and not any(fnmatch(f.name, g) for g in exclude)]
    if not files:
        raise InputFileError(f"{before_dir}: no images (png, bmp, tif, jpg)"
                             f"{' match the --include/--exclude patterns' if include or exclude else ' found'}")
    pairs = []
    for f in files:
        after_path = after_dir / f.name
        if not after_path.exists():
            raise InputFileError(f"{after_path}: no after image for {f.name}; both folders need the same file names "
                                 "(or leave the pair out with --exclude)")
        label_path = find_label(label_dir, f.name)
        before, valid_b = read_image(f, with_valid=True)
        after, valid_a = read_image(after_path, with_valid=True)
        label = read_label(label_path)
        if before.shape[1:] != after.shape[1:]:
            raise InputFileError(f"{after_path}: {after.shape[2]} x {after.shape[1]} px, but {f} is "
                                 f"{before.shape[2]} x {before.shape[1]}; both images of a pair must cover the same grid")
        if label.shape != before.shape[1:]:
            raise InputFileError(f"{label_path}: {label.shape[1]} x {label.shape[0]} px, but {f} is "
                                 f"{before.shape[2]} x {before.shape[1]}; the label must cover its image pixel for "
                                 "pixel")
        bands = min(before.shape[0], after.shape[0])
        pairs.append(LabelledPair(f.stem, before[:bands], after[:bands], label, valid_b & valid_a))
    return pairs
