"""A change model learnt from reviewed patches, used as a filter on the rules' patches (issue 8).

The bureau's loop: the rule-based detector flags patches, surveyors review them, and the
model is retrained on the reviewed patches. Here:

- :func:`fit_patch_model` trains a :class:`~imagery_watch.learn.ChangeModel` on
  georeferenced mosaics (read through :class:`~imagery_watch.io.rasters.EpochReader`
  windows, never whole): the pixels of patches reviewed as real change (``illegal``,
  ``legal``) are change, those of patches reviewed as ``false_alarm`` are no change, and a
  sample of pixels outside every patch (unflagged) is no change too. Pending and
  field-visit patches are left out. The model's threshold is the patch-level one: the
  mean change probability over a patch that best separates accepted from rejected
  patches out of fold (folds = patches).
- :func:`filter_patches` keeps a patch when the model's mean change probability over its
  pixels reaches that threshold.

Features are those of :mod:`~imagery_watch.pair_features`, with their statistics fitted
once per mosaic pair from sample windows (:func:`fit_mosaic_stats`), never per window.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from .errors import InputFileError
from .learn import ChangeModel, _f1, _fit_bags, _openmp_threads, _Sample
from .pair_features import (ANALYSIS_M, FeatureStats, _strips, _to_analysis, analysis_factor, feature_halo_px,
                            feature_names, fit_feature_stats)

log = logging.getLogger(__name__)

__all__ = ["ACCEPTED", "REJECTED", "fit_mosaic_stats", "patch_probabilities", "fit_patch_model", "filter_patches"]

#: review statuses that confirm a real change (approved or not), and the one that rejects it
ACCEPTED = ("illegal", "legal")
REJECTED = ("false_alarm",)

_STATS_WINDOWS = 16  # sample windows the feature statistics are fitted from
_STATS_WINDOW_PX = 512
_PIXELS_PER_PATCH = 100  # analysis pixels sampled inside each reviewed patch (at most)
_UNFLAGGED_WINDOWS = 24  # windows the unflagged no-change pixels are drawn from
_MARGIN_PX = 2  # analysis pixels around a patch's bounding box


def _sample_origins(grid, n: int, size_px: int, rng) -> list:
    """Up to ``n`` window origins (row, col) spread over the grid at random."""
    rows = max(1, grid.height - size_px + 1)
    cols = max(1, grid.width - size_px + 1)
    return [(int(rng.integers(rows)), int(rng.integers(cols))) for _ in range(n)]


def fit_mosaic_stats(before, after, *, seed: int = 0, windows: int = _STATS_WINDOWS,
                     window_px: int = _STATS_WINDOW_PX, analysis_m: float = ANALYSIS_M) -> FeatureStats:
    """Feature statistics of a mosaic pair, fitted once from sample windows.

    Parameters
    ----------
    before, after : EpochReader
        Readers of both epochs on the same processing grid (``before.grid``).
    seed : int
        Seed of the window positions.
    windows, window_px : int
        Number and size of the sample windows.
    analysis_m : float
        Analysis resolution in metres.

    Returns
    -------
    FeatureStats

    Raises
    ------
    InputFileError
        No valid pixel in any sample window.
    """
    grid = before.grid
    f = analysis_factor(grid.pixel_size_m, analysis_m)
    size = max(f, min(window_px, grid.height, grid.width) // f * f)
    rng = np.random.default_rng(seed)
    bs, as_, vs = [], [], []
    for r0, c0 in _sample_origins(grid, windows, size, rng):
        r0, c0 = r0 // f * f, c0 // f * f
        b, vb = before.read(r0, c0, size, size)
        a, va = after.read(r0, c0, size, size)
        if (vb & va).any():
            bs.append(b)
            as_.append(a)
            vs.append(vb & va)
    if not bs:
        raise InputFileError(f"{before.path} / {after.path}: no valid pixel of both epochs in {windows} sample "
                             "windows; check that the epochs overlap and hold data")
    return fit_feature_stats(bs, as_, vs, pixel_size_m=grid.pixel_size_m, analysis_m=analysis_m)


def _window_features(before, after, stats: FeatureStats, r0: int, c0: int, h: int, w: int, *,
                     analysis_m: float) -> tuple:
    """Features (n, y, x) and valid (y, x) at the analysis pixels of a grid window.

    ``r0``, ``c0``, ``h``, ``w`` are in analysis pixels; the window is read with the
    feature halo, so a pixel's features do not depend on the window it was read in.
    """
    grid = before.grid
    f = analysis_factor(grid.pixel_size_m, analysis_m)
    ap_m = grid.pixel_size_m * f
    halo = feature_halo_px(ap_m)
    rows, cols = (r0 - halo) * f, (c0 - halo) * f
    hh, ww = (h + 2 * halo) * f, (w + 2 * halo) * f
    b, vb = before.read(rows, cols, hh, ww)
    a, va = after.read(rows, cols, hh, ww)
    mb, ma, gb, ga, valid = _to_analysis(b, a, vb & va, norm=stats.norm, factor=f)
    x = np.concatenate([x for _, _, x in _strips(mb, ma, gb, ga, stats=stats, analysis_pixel_m=ap_m)], axis=1)
    return x[:, halo:halo + h, halo:halo + w], valid[halo:halo + h, halo:halo + w]


def _patch_window(geom, grid, f: int) -> tuple:
    """Analysis-pixel window (r0, c0, h, w) around a geometry, and its transform."""
    from rasterio.transform import rowcol

    left, bottom, right, top = geom.bounds
    aff = grid.affine
    r_top, c_left = rowcol(aff, left, top, op=np.floor)
    r_bot, c_right = rowcol(aff, right, bottom, op=np.ceil)
    r0 = int(min(r_top, r_bot)) // f - _MARGIN_PX
    c0 = int(min(c_left, c_right)) // f - _MARGIN_PX
    r1 = -(-int(max(r_top, r_bot)) // f) + _MARGIN_PX
    c1 = -(-int(max(c_left, c_right)) // f) + _MARGIN_PX
    from rasterio.transform import Affine

    return (r0, c0, r1 - r0, c1 - c0), grid.window_transform(r0 * f, c0 * f) @ Affine.scale(f)


def _inside(geom, shape: tuple, transform) -> np.ndarray:
    from rasterio.features import rasterize

    return rasterize([(geom, 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8",
                     all_touched=False).astype(bool)


def _check_patches(patches, grid) -> None:
    if "geometry" not in getattr(patches, "columns", ()):
        raise InputFileError("patches: expected a GeoDataFrame of patch polygons (imagery-watch detect's "
                             "patches.gpkg, layer 'patches')")
    if patches.crs is not None and len(patches) and not patches.crs.equals(grid.crs):
        raise InputFileError(f"patches are in {patches.crs.to_string()}, the mosaics in "
                             f"{grid.crs.to_string()}; reproject the patches (or give the job's own patches.gpkg)")


def _patch_rows(before, after, patches, stats, model_like, *, analysis_m: float, rng=None, cap: int | None = None):
    """Yield (position, features (n, k)) of the analysis pixels inside each patch
    (at most ``cap`` of them, drawn with ``rng``)."""
    grid = before.grid
    f = analysis_factor(grid.pixel_size_m, analysis_m)
    for pos, geom in enumerate(patches.geometry):
        if geom is None or geom.is_empty:
            yield pos, None
            continue
        (r0, c0, h, w), transform = _patch_window(geom, grid, f)
        x, valid = _window_features(before, after, stats, r0, c0, h, w, analysis_m=analysis_m)
        inside = _inside(geom, (h, w), transform) & valid
        if not inside.any():  # a sliver smaller than an analysis pixel: its touched pixels
            from rasterio.features import rasterize

            inside = rasterize([(geom, 1)], out_shape=(h, w), transform=transform, fill=0, dtype="uint8",
                               all_touched=True).astype(bool) & valid
        idx = np.flatnonzero(inside.ravel())
        if cap is not None and idx.size > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        yield pos, x.reshape(x.shape[0], -1)[:, idx].T if idx.size else None


def patch_probabilities(patches, before, after, model: ChangeModel, *, stats: FeatureStats | None = None,
                        seed: int = 0) -> np.ndarray:
    """Mean change probability of the model over each patch's analysis pixels.

    Parameters
    ----------
    patches : GeoDataFrame
        Patch polygons in the processing grid's CRS.
    before, after : EpochReader
        Both epochs on one processing grid.
    model : ChangeModel
    stats : FeatureStats, optional
        Feature statistics of this mosaic pair (default: :func:`fit_mosaic_stats`).
    seed : int
        Seed of the statistics' sample windows.

    Returns
    -------
    ndarray (len(patches),), float
        NaN for a patch without a valid pixel.
    """
    _check_patches(patches, before.grid)
    out = np.full(len(patches), np.nan)
    if not len(patches):
        return out
    if stats is None:
        stats = fit_mosaic_stats(before, after, seed=seed, analysis_m=model.analysis_m)
    for pos, x in _patch_rows(before, after, patches, stats, model, analysis_m=model.analysis_m):
        if x is not None:
            with _openmp_threads(1):
                out[pos] = float(model.estimator.predict_proba(x)[:, 1].mean())
    return out


def filter_patches(patches, before, after, model: ChangeModel, *, threshold: float | None = None,
                   stats: FeatureStats | None = None, column: str | None = "model_probability"):
    """Keep the patches whose mean change probability reaches the model's threshold.

    Parameters
    ----------
    patches : GeoDataFrame
        Patches of the rules (``imagery-watch detect``), in the processing grid's CRS.
    before, after : EpochReader
        Both epochs on the processing grid the patches were found on.
    model : ChangeModel
        From :func:`fit_patch_model` (or ``imagery-watch train --patches``).
    threshold : float, optional
        Default ``model.threshold``.
    stats : FeatureStats, optional
        Feature statistics of this mosaic pair (default: fitted from sample windows).
    column : str or None
        Name of a column that receives the probability in the result (None: none added).

    Returns
    -------
    GeoDataFrame
        A copy of the kept rows, in their order (``patches`` is not modified).

    Raises
    ------
    InputFileError
        Patches in another CRS than the mosaics, or mosaics without valid pixels.
    """
    prob = patch_probabilities(patches, before, after, model, stats=stats)
    keep = np.nan_to_num(prob, nan=0.0) >= (model.threshold if threshold is None else threshold)
    out = patches.copy()
    if column:
        out[column] = prob
    return out[keep].copy()


def _choose_patch_threshold(prob: np.ndarray, accepted: np.ndarray) -> tuple:
    """Threshold on the mean probability maximising F1 of the kept accepted patches.

    Candidates lie half-way between consecutive distinct out-of-fold probabilities (mean
    probabilities over a patch can be small: a patch holds pixels that did not change).
    """
    values = np.unique(prob)
    cands = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2]) if values.size else np.array([0.5])
    best = (-1.0, 0.5, 0.0, 0.0)
    for t in cands:
        kept = prob >= t
        tp = int((kept & accepted).sum())
        fp, fn = int((kept & ~accepted).sum()), int((~kept & accepted).sum())
        f1 = _f1(tp, fp, fn)
        if f1 > best[0] + 1e-9:
            best = (f1, float(round(t, 6)), tp / max(tp + fp, 1), tp / max(tp + fn, 1))
    return best


def fit_patch_model(patches, before, after, *, seed: int = 0, folds: int = 5, bags: int = 1,
                    analysis_m: float = ANALYSIS_M, threads: int = 1,
                    on_event: Callable[[str], None] | None = None) -> ChangeModel:
    """Train a change model on reviewed patches of a mosaic pair.

    Parameters
    ----------
    patches : GeoDataFrame, or list of them
        The patch table (``patches.gpkg``, layer ``patches``) with ``status``; rows
        ``illegal`` / ``legal`` are change, ``false_alarm`` no change, others are left out
        (but their pixels are never drawn as unflagged no-change pixels). A list: one
        table per mosaic pair.
    before, after : EpochReader, or lists of them
        Both epochs on the processing grid of the patches (one per table).
    seed : int
        Seed of the pixel samples, the windows and the estimator.
    folds : int
        Patch folds for the out-of-fold threshold.
    bags : int
        Classifiers averaged (see :func:`imagery_watch.learn.fit_change_model`).
    analysis_m : float
        Analysis resolution in metres.
    threads : int
        OpenMP threads of the fits.
    on_event : callable, optional
        Receives one-line progress messages.

    Returns
    -------
    ChangeModel
        ``threshold`` is the patch-level one (mean probability over a patch), chosen out of fold.

    Raises
    ------
    ValueError
        Not one patch table, before and after reader per mosaic pair.
    InputFileError
        Fewer than 2 accepted or fewer than 1 rejected patch, patches in another CRS than
        the mosaics, or no ``status`` column.
    """
    say = on_event or (lambda msg: log.info(msg))
    t0 = time.perf_counter()
    many = isinstance(patches, (list, tuple))
    tables, befores, afters = (patches, before, after) if many else ([patches], [before], [after])
    if not (len(tables) == len(befores) == len(afters)) or not tables:
        raise ValueError("fit_patch_model: give one patch table, before and after reader per mosaic pair")
    reviewed_tables, is_change_parts = [], []
    for table, b_reader in zip(tables, befores):
        _check_patches(table, b_reader.grid)
        if "status" not in table.columns:
            raise InputFileError("patches: no 'status' column; give the reviewed patches.gpkg of a job")
        status = table["status"].astype(str).to_numpy()
        acc, rej = np.isin(status, ACCEPTED), np.isin(status, REJECTED)
        reviewed_tables.append(table[acc | rej])
        is_change_parts.append(acc[acc | rej])
    is_change = np.concatenate(is_change_parts)
    n_acc, n_rej = int(is_change.sum()), int((~is_change).sum())
    if n_acc < 2 or n_rej < 1:
        raise InputFileError(f"the patches hold {n_acc} accepted ({'/'.join(ACCEPTED)}) and {n_rej} rejected "
                             f"({'/'.join(REJECTED)}) reviews; training needs at least 2 accepted and 1 rejected "
                             "patch: review more patches (imagery-watch review) and train again")
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(is_change.size) % folds
    xs, ys, gs, owner = [], [], [], []
    offset = 0
    grid = befores[0].grid
    for table, reviewed, b_reader, a_reader in zip(tables, reviewed_tables, befores, afters):
        grid = b_reader.grid
        stats = fit_mosaic_stats(b_reader, a_reader, seed=seed, analysis_m=analysis_m)
        f = analysis_factor(grid.pixel_size_m, analysis_m)
        n_change = 0
        for pos, x in _patch_rows(b_reader, a_reader, reviewed, stats, None, analysis_m=analysis_m, rng=rng,
                                  cap=_PIXELS_PER_PATCH):
            if x is None:
                continue
            xs.append(x)
            ys.append(np.full(len(x), bool(is_change[offset + pos])))
            gs.append(np.full(len(x), fold_of[offset + pos], np.int16))
            owner.append(np.full(len(x), offset + pos))
            n_change += len(x) if is_change[offset + pos] else 0
        offset += len(reviewed)
        # unflagged pixels (outside every patch) as no change: as many as the accepted pixels
        want = max(n_change, 200)
        size = max(16, min(_STATS_WINDOW_PX // f, grid.height // f, grid.width // f))
        per_window = -(-want // _UNFLAGGED_WINDOWS)
        all_geoms = [g for g in table.geometry if g is not None and not g.is_empty]
        from rasterio.features import rasterize
        from rasterio.transform import Affine

        for k, (r0, c0) in enumerate(_sample_origins(grid, _UNFLAGGED_WINDOWS, size * f, rng)):
            r0, c0 = r0 // f, c0 // f
            x, valid = _window_features(b_reader, a_reader, stats, r0, c0, size, size, analysis_m=analysis_m)
            transform = grid.window_transform(r0 * f, c0 * f) @ Affine.scale(f)
            flagged = (rasterize([(g, 1) for g in all_geoms], out_shape=(size, size), transform=transform, fill=0,
                                 dtype="uint8", all_touched=True).astype(bool) if all_geoms
                       else np.zeros((size, size), bool))
            idx = np.flatnonzero((valid & ~flagged).ravel())
            if idx.size > per_window:
                idx = np.sort(rng.choice(idx, per_window, replace=False))
            xs.append(x.reshape(x.shape[0], -1)[:, idx].T)
            ys.append(np.zeros(idx.size, bool))
            gs.append(np.full(idx.size, k % folds, np.int16))
            owner.append(np.full(idx.size, -1))
    sample = _Sample(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs),
                     np.full(sum(len(y) for y in ys), -1, np.int16))
    if bags > 1:  # each bag: every change row and its share of the no-change rows
        neg = np.flatnonzero(~sample.y)
        sample.bag[neg] = rng.permutation(neg.size) % bags
    owner = np.concatenate(owner)
    n_change = int(sample.y.sum())
    say(f"{n_acc} accepted and {n_rej} rejected patches: {n_change:,} change and "
        f"{int((~sample.y).sum()):,} no-change pixels ({int((owner == -1).sum()):,} unflagged), "
        f"{sample.x.shape[1]} features")
    # out of fold: mean probability per reviewed patch
    oof = np.full(is_change.size, np.nan)
    for fold in range(folds):
        est = _fit_bags(sample, sample.group != fold, seed=seed, threads=threads)
        held = (sample.group == fold) & (owner >= 0)
        if est is None or not held.any():
            continue
        with _openmp_threads(threads):
            p = est.predict_proba(sample.x[held])[:, 1]
        own = owner[held]
        sums = np.bincount(own, p, minlength=is_change.size)
        counts = np.bincount(own, minlength=is_change.size)
        hit = counts > 0
        oof[hit] = sums[hit] / counts[hit]
    scored = ~np.isnan(oof)
    f1, threshold, precision, recall = _choose_patch_threshold(oof[scored], is_change[scored])
    estimator = _fit_bags(sample, np.ones(sample.y.size, bool), seed=seed, threads=threads)
    summary = {
        "trained_on": "reviewed patches", "mosaic_pairs": len(tables), "accepted_patches": n_acc,
        "rejected_patches": n_rej, "samples_change": n_change,
        "samples_no_change": int((~sample.y).sum()), "unflagged_samples": int((owner == -1).sum()),
        "pixel_size_m": grid.pixel_size_m, "seed": int(seed), "bags": int(bags), "folds": int(folds),
        "folds_by": "patches",
        "out_of_fold": {"threshold": threshold, "level": "patch", "f1": round(f1, 4),
                        "precision": round(precision, 4), "recall": round(recall, 4),
                        "rules_precision": round(float(is_change[scored].mean()), 4)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    say(f"patch threshold {threshold:.2f}: out-of-fold patch precision {precision:.3f} (rules alone "
        f"{summary['out_of_fold']['rules_precision']:.3f}), recall {recall:.3f}, {summary['seconds']} s")
    bands = len(befores[0].band_indexes)
    return ChangeModel(estimator=estimator, feature_names=feature_names(bands), bands=bands,
                       pixel_size_m=float(grid.pixel_size_m), analysis_m=float(analysis_m), threshold=threshold,
                       summary=summary)


def open_mosaic_pair(before_path, after_path, *, work_dir, bands: tuple = (1, 2, 3)) -> tuple:
    """Readers of two epochs (file, VRT or folder of sheets) on the before epoch's grid.

    Parameters
    ----------
    before_path, after_path : path
    work_dir : path
        Folder for the mosaics' VRTs.
    bands : tuple of int
        1-based band indexes R, G, B[, NIR] in both epochs.

    Returns
    -------
    (EpochReader, EpochReader)

    Raises
    ------
    InputFileError, GridMismatchError
        Unreadable epochs, or epochs that do not overlap.
    """
    from pathlib import Path

    from .align import make_reader, plan_grid
    from .io.rasters import describe_epoch

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    b = describe_epoch(before_path, work_dir=work_dir, label="before")
    a = describe_epoch(after_path, work_dir=work_dir, label="after")
    for info in (b, a):
        if info.count < len(bands) or max(bands) > info.count:
            raise InputFileError(f"{info.source}: {info.count} bands, but bands {list(bands)} are needed")
    grid = plan_grid(b, a).grid
    return make_reader(b, grid, tuple(bands)), make_reader(a, grid, tuple(bands))
