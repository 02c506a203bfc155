"""The detection job, stage after stage, as in DESIGN.md §2.

    read -> align -> normalise -> features/classify -> detect -> clean -> vectorise -> store

:func:`run_detect` is the only place the stages are chained. Whole-image steps (grid,
misregistration, radiometric normalisation, detector thresholds) are fitted once from
blocks sampled across the overlap; the per-chunk steps run in one fused task per chunk
(:func:`process_chunk`), scheduled by Dask: local threads by default, or a
``dask.distributed`` cluster when the caller passes a client. Each task receives paths and
numbers only, reads its window with a halo, and writes its result file into the job folder.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import rasterio

from . import __version__
from .align import make_reader, measure_shift, plan_grid, unprocessed_areas
from .config import Config
from .detect import (AnalysisInputs, DetectorParams, analysis_inputs, detect_halo_px, detect_inputs, expand_result,
                     fit_detector, inexact_pixels)
from .errors import ConfigError, GridMismatchError, InputFileError
from .io.patches import (count_table_rows, read_patches, remove_partial_pieces, snapshot_geopackage,
                         write_patches)
from .io.integrity import OPEN_ENV
from .io.rasters import EpochReader, Grid, describe_epoch
from .io.vectors import rasterise_window, read_layer, write_job_layers
from .jobs import JobFolder, file_stamp, fingerprint
from .normalise import Normalisation, apply_normalisation, fit_normalisation
from .vectorise import (load_pieces, merge_pieces_in_batches, save_pieces, vectorise_analysis_block,
                        vectorise_block)

log = logging.getLogger(__name__)

#: side of the sample blocks used for the whole-image fits, in pixels
SAMPLE_BLOCK_PX = 512
#: number of sample blocks (at most) drawn across the overlap
SAMPLE_BLOCKS = 48
#: attribute tables of a patch file that survive a re-run: the decision history written
#: by the review store (``imagery_watch.review.store.LOG_TABLE``)
REVIEW_TABLES = ("decision_log",)


@dataclass(frozen=True)
class ChunkTask:
    """Everything one chunk task needs: paths and numbers only (it pickles).

    ``row0``, ``col0``, ``height``, ``width`` give the chunk's core window on the
    processing grid; ``halo_px`` pixels are read around it and cropped after detection.
    """

    row: int
    col: int
    row0: int
    col0: int
    height: int
    width: int
    halo_px: int
    before: EpochReader
    after: EpochReader
    normalisation: Normalisation
    params: dict
    rules: tuple
    layers_path: str
    has_farmland: bool
    has_approved: bool
    has_counties: bool
    has_aoi: bool
    pixel_size_m: float
    out_path: str
    gdal_cachemax_mb: int = 256


#: rows read and block-averaged at a time (rounded to a multiple of the analysis factor):
#: bounds the decoded pixels held at once, whatever the size of a group of chunks
STRIP_PX = 512
_ANALYSIS_FIELDS = ("before", "after", "fine_before", "fine_after", "valid", "farmland")


@dataclass
class _GroupInputs:
    """Detection inputs of a window of the processing grid: its analysis pixels, and the
    input-resolution masks the chunks need after detection.

    ``row0``, ``col0``: the window's origin on the grid; ``valid`` and ``farmland``: (y, x)
    bool arrays of the whole window (``farmland`` None without a farmland layer).
    """

    row0: int
    col0: int
    analysis: AnalysisInputs
    valid: np.ndarray
    farmland: np.ndarray | None

    def rows(self, y0: int, y1: int) -> "_GroupInputs":
        """Rows ``y0..y1`` of the window (grid rows; multiples of the factor from ``row0``)."""
        f = self.analysis.factor
        an = _analysis_window(self.analysis, slice((y0 - self.row0) // f, -(-(y1 - self.row0) // f)), slice(None))
        r = slice(y0 - self.row0, y1 - self.row0)
        return _GroupInputs(y0, self.col0, an, self.valid[r], None if self.farmland is None else self.farmland[r])


def _analysis_window(an: AnalysisInputs, ys: slice, xs: slice) -> AnalysisInputs:
    """Analysis pixels ``ys``, ``xs`` of every array of ``an`` (views)."""
    return an._replace(**{k: getattr(an, k)[..., ys, xs] for k in _ANALYSIS_FIELDS if getattr(an, k) is not None})


def _concat_rows(parts: list) -> _GroupInputs:
    """Windows of the same columns, each below the one before, as one window."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    an = first.analysis._replace(**{k: np.concatenate([getattr(p.analysis, k) for p in parts], axis=-2)
                                    for k in _ANALYSIS_FIELDS if getattr(first.analysis, k) is not None})
    return _GroupInputs(first.row0, first.col0, an, np.concatenate([p.valid for p in parts]),
                        None if first.farmland is None else np.concatenate([p.farmland for p in parts]))


def _read_rows(t: ChunkTask, y0: int, y1: int, c0: int, c1: int, f: int) -> list:
    """Read and block-average grid rows ``y0..y1``, columns ``c0..c1``: a list of
    :class:`_GroupInputs`, one per strip of at most :data:`STRIP_PX` rows.

    Every strip starts at a multiple of the analysis factor from the grid's origin (as
    ``y0`` does), so its analysis pixels are the ones any window starting there gives
    (:func:`~imagery_watch.detect.analysis_inputs` has no halo).
    """
    hh, ww = y1 - y0, c1 - c0
    transform = t.before.grid.window_transform(y0, c0)

    def burn(layer):
        return rasterise_window(t.layers_path, layer, transform=transform, shape=(hh, ww)).astype(bool)

    aoi = burn("aoi") if t.has_aoi else None
    farmland = burn("farmland") if t.has_farmland else None
    valid = np.empty((hh, ww), bool)
    lut = t.normalisation.as_array()
    step = f * max(1, round(STRIP_PX / f))
    env = rasterio.Env(GDAL_CACHEMAX=t.gdal_cachemax_mb * 1024 * 1024, **OPEN_ENV)
    # strips end on multiples of ``step`` grid rows: on tile boundaries when the sheets'
    # tiles divide it and lie on the grid's tile lattice, so that no tile is decoded twice
    edges = [0, *range(step - y0 % step, hh, step), hh]
    if _warped(t):  # GDAL's warper gives values that depend on the window: the rows at once
        edges = [0, hh]
    strips = []
    for s0, s1 in zip(edges[:-1], edges[1:]):
        with env:
            before, valid_b = t.before.read(y0 + s0, c0, s1 - s0, ww)
            after, valid_a = t.after.read(y0 + s0, c0, s1 - s0, ww)
        v = valid[s0:s1]
        np.logical_and(valid_b, valid_a, out=v)
        if aoi is not None:
            v &= aoi[s0:s1]
        farm = None if farmland is None else farmland[s0:s1]
        an = analysis_inputs(before, after, v, farmland=farm, factor=f, after_lut=lut)
        strips.append(_GroupInputs(y0 + s0, c0, an, v, farm))
    return strips


def _warped(t: ChunkTask) -> bool:
    """Whether an epoch is resampled onto the grid by GDAL's warper (see ``EpochReader``)."""
    return t.before.offset_rc is None or t.after.offset_rc is None


def _group_windows(tasks: list):
    """Yield ``(row_tasks, inputs)`` for each row of chunks of ``tasks``, top to bottom.

    ``inputs`` covers the row's chunks and their halos. The rows of a group share their
    halos: every image row is read and block-averaged once (strips of :data:`STRIP_PX`
    rows, held only while a row of chunks needs them), not once per chunk that reaches it.
    """
    t = tasks[0]
    h = t.halo_px
    f = DetectorParams.from_dict(t.params).factor(t.pixel_size_m)
    c0, c1 = min(x.col0 for x in tasks) - h, max(x.col0 + x.width for x in tasks) + h
    held = None  # the rows read for the previous row of chunks
    for row in sorted({x.row0 for x in tasks}):
        row_tasks = sorted((x for x in tasks if x.row0 == row), key=lambda x: x.col0)
        y0, y1 = row - h, row + max(x.height for x in row_tasks) + h
        parts = []
        if held is not None and held.row0 <= y0 < held.row0 + held.valid.shape[0]:
            parts.append(held.rows(y0, held.row0 + held.valid.shape[0]))
            y_read = held.row0 + held.valid.shape[0]
        else:
            y_read = y0
        if y_read < y1:
            parts += _read_rows(t, y_read, y1, c0, c1, f)
        held = _concat_rows(parts)
        yield row_tasks, held


def process_chunk(task: ChunkTask, group: _GroupInputs | None = None) -> dict:
    """Run read -> normalise -> detect -> clean -> vectorise on one chunk and save the pieces.

    ``group``: the inputs of a window that holds the chunk and its halo, with its origin at a
    multiple of the analysis factor from the chunk's (shared by neighbouring chunks,
    :func:`_group_windows`); default: the chunk's own window, read here.
    Returns a small dict of figures (pixels, changed pixels, pieces, seconds per stage).
    """
    t0 = time.perf_counter()
    if group is None:
        group = next(_group_windows([task]))[1]
    t_read = time.perf_counter()
    grid = task.before.grid
    f = group.analysis.factor
    h = task.halo_px
    # the chunk's core in the group window, in input and in analysis pixels
    y0, x0 = task.row0 - group.row0, task.col0 - group.col0
    if (y0 - h) % f or (x0 - h) % f or y0 < h or x0 < h:
        raise ValueError(f"chunk ({task.row}, {task.col}): the group window at ({group.row0}, {group.col0}) "
                         f"does not hold its halo on the analysis lattice (factor {f})")
    core = (slice(y0, y0 + task.height), slice(x0, x0 + task.width))
    valid_core = group.valid[core]
    stats = {"row": task.row, "col": task.col, "pixels": task.height * task.width,
             "valid_pixels": int(valid_core.sum()), "changed_pixels": 0, "pieces": 0}
    if not stats["valid_pixels"]:
        rule = np.zeros((task.height, task.width), np.uint8)
        pieces = vectorise_block(rule, score=np.zeros(rule.shape, np.float32), before_class=rule,
                                 after_class=rule, row0=task.row0, col0=task.col0, transform=grid.affine)
        save_pieces(pieces, task.out_path)
        stats.update(read_s=t_read - t0, detect_s=0.0, vectorise_s=0.0)
        return stats
    # the chunk's window (core and halo) in analysis pixels, and its core inside that window
    wy0, wx0 = (y0 - h) // f, (x0 - h) // f
    wy1, wx1 = -(-(y0 + task.height + h) // f), -(-(x0 + task.width + h) // f)
    window = _analysis_window(group.analysis, slice(wy0, wy1), slice(wx0, wx1))
    params = DetectorParams.from_dict(task.params)
    acore = (slice(h // f, h // f + -(-task.height // f)), slice(h // f, h // f + -(-task.width // f)))
    coarse = detect_inputs(window, rules=task.rules, params=params, pixel_size_m=task.pixel_size_m, core=acore)
    t_detect = time.perf_counter()
    changed = bool(coarse.rule.any())  # approved land and counties matter on changed pixels only
    transform = grid.window_transform(task.row0, task.col0)
    shape = (task.height, task.width)

    def burn(layer, values=None, dtype=np.uint8):
        return rasterise_window(task.layers_path, layer, transform=transform, shape=shape, values=values,
                                dtype=dtype)

    approved = burn("approved").astype(bool) if task.has_approved and changed else None
    county = burn("counties", values="county_index", dtype=np.uint16) if task.has_counties and changed else None
    farm_core = None if group.farmland is None else group.farmland[core]
    min_pixels = [int(math.floor(r.min_area_m2 / grid.pixel_area_m2)) for r in task.rules]  # conservative

    if f == 1:
        pieces = vectorise_block(
            coarse.rule, score=coarse.score, before_class=coarse.before_class, after_class=coarse.after_class,
            farmland=farm_core, approved=approved, county=county, row0=task.row0, col0=task.col0,
            transform=grid.affine, min_pixels=min_pixels)
    else:
        # traced at the analysis resolution; only components cut by the farmland boundary
        # (or over a county boundary) are expanded to input pixels: same pieces, less work
        def expand(window):
            return expand_result(coarse, factor=f, valid=valid_core, farmland=farm_core, rules=task.rules,
                                 window=window)

        inexact = inexact_pixels(coarse.rule, factor=f, shape=shape, farmland=farm_core, rules=task.rules)
        pieces = vectorise_analysis_block(
            coarse.rule, score=coarse.score, before_class=coarse.before_class, after_class=coarse.after_class,
            factor=f, shape=shape, inexact=inexact, expand=expand, farmland=farm_core, approved=approved,
            county=county, row0=task.row0, col0=task.col0, transform=grid.affine, min_pixels=min_pixels)
    save_pieces(pieces, task.out_path)
    t_vec = time.perf_counter()
    stats.update(changed_pixels=int(pieces.pixel_count.sum()), read_s=t_read - t0,
                 detect_s=t_detect - t_read, vectorise_s=t_vec - t_detect)
    return stats


@dataclass
class DetectResult:
    """What :func:`run_detect` returns: where the outputs are and the job's figures.

    ``patches`` (GeoDataFrame) is read from ``patches_path`` when first asked for: the job
    writes its patches batch by batch and never holds the whole table.
    """

    out_dir: Path
    patches_path: Path
    summary: dict = field(default_factory=dict)
    _patches: object = field(default=None, repr=False)

    @property
    def patches(self):
        """The job's patch table (layer ``patches`` of ``patches_path``)."""
        if self._patches is None:
            self._patches = read_patches(self.patches_path)
        return self._patches


def _band_indexes(bands: tuple, count: int, source: str, label: str) -> tuple:
    if len(bands) > count:
        raise GridMismatchError(
            f"{source}: {label} epoch has {count} bands but inputs.bands lists {len(bands)} "
            f"({', '.join(bands)}); fix inputs.bands to the files' band order")
    order = ["red", "green", "blue"] + (["nir"] if "nir" in bands else [])
    return tuple(bands.index(name) + 1 for name in order)


def _read_shift(dy: float, dx: float, factor: int) -> tuple:
    """The shift applied when reading the after epoch.

    When detection averages blocks of ``factor >= 2`` pixels, the measured shift is rounded
    to whole pixels: the residual (at most half a pixel, a fraction of one analysis pixel,
    which the evidence tolerates anyway) is not worth resampling every chunk, and whole-pixel
    reads are exact and cheap. The measured shift is still recorded and reported.
    """
    if factor >= 2:
        return (float(round(dy)), float(round(dx)))
    return (dy, dx)


def _sample_windows(grid: Grid, *, n: int, block_px: int) -> list:
    """Deterministic sample windows on a regular lattice over the grid (independent of chunking)."""
    bh, bw = min(block_px, grid.height), min(block_px, grid.width)
    ny = max(1, min(int(math.sqrt(n * grid.height / grid.width)) or 1, grid.height // bh))
    nx = max(1, min(n // ny, grid.width // bw))
    rows = np.linspace(0, grid.height - bh, ny + 2)[1:-1] if ny > 1 else [(grid.height - bh) / 2]
    cols = np.linspace(0, grid.width - bw, nx + 2)[1:-1] if nx > 1 else [(grid.width - bw) / 2]
    return [(int(r), int(c), bh, bw) for r in rows for c in cols]


def _read_samples(reader: EpochReader, windows: list, workers: int) -> tuple:
    """Read the sample windows, ``workers`` at a time (decoding releases the GIL)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        read = list(pool.map(lambda win: reader.read(*win), windows))
    return [d for d, _ in read], [v for _, v in read]


def _prepare_layers(config: Config, grid: Grid, folder: JobFolder) -> tuple:
    """Read, repair and reproject the vector layers into the job's GeoPackage."""
    layers, reports, county_names = {}, [], ()
    bounds = grid.bounds
    L = config.layers
    for name, ref in (("farmland", L.farmland), ("approved", L.approved)):
        if ref is not None:
            gdf, rep = read_layer(ref.path, layer=ref.layer, name=name, crs=grid.crs, bounds=bounds)
            layers[name] = gdf
            reports.append(rep)
    if L.counties is not None:
        field_name = L.counties.name_field or "name"
        gdf, rep = read_layer(L.counties.path, layer=L.counties.layer, name="counties", crs=grid.crs,
                              bounds=bounds, keep_fields=(field_name,))
        county_names = tuple(str(v) for v in gdf[field_name])
        gdf = gdf.assign(county_index=np.arange(1, len(gdf) + 1, dtype=np.int32))[["county_index", "geometry"]]
        layers["counties"] = gdf
        reports.append(rep)
    aoi = config.inputs.area_of_interest
    if aoi is not None:
        gdf, rep = read_layer(aoi.path, layer=aoi.layer, name="area_of_interest", crs=grid.crs)
        layers["aoi"] = gdf
        reports.append(rep)
    write_job_layers(folder.layers, layers)
    return layers, reports, county_names


def _layer_stamps(config: Config) -> dict:
    """Identity of every vector layer a chunk's result depends on: file, layer, field.

    The layer name and the name field count too: another layer of the same file gives
    other patches, so chunks computed with the old one must not be reused.
    """
    refs = {"farmland": config.layers.farmland, "approved": config.layers.approved,
            "counties": config.layers.counties, "area_of_interest": config.inputs.area_of_interest}
    return {name: dict(file_stamp(ref.path), layer=ref.layer, name_field=ref.name_field)
            for name, ref in refs.items() if ref is not None}


#: the job folder's record of the areas left unprocessed by unreadable sheets
UNPROCESSED_FILE = "unprocessed.gpkg"


def _fmt_bounds(b) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in b) + ")"


def _record_unprocessed(unprocessed, path: Path) -> None:
    """Write the unprocessed areas (layer ``unprocessed``); remove a stale record when there are none."""
    if len(unprocessed):
        write_job_layers(path, {"unprocessed": unprocessed})
    elif path.exists():
        path.unlink()


def _aside(path: Path, tag: str) -> Path:
    """``patches.<tag>-<time>.gpkg`` next to ``path``, never an existing file."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate = path.with_name(f"{path.stem}.{tag}-{stamp}{path.suffix}")
    k = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.{tag}-{stamp}-{k}{path.suffix}")
        k += 1
    return candidate


#: review fields of a patch that a re-run carries over (same ``patch_id``)
REVIEW_FIELDS = ("status", "reviewer", "reviewed_at", "note", "version")


@dataclass
class _Reviews:
    """Review work recorded in the patch file that a job is about to replace."""

    decisions: object  # DataFrame of REVIEW_FIELDS indexed by patch_id: the reviewed patches
    history: dict  # decision log rows per table
    tables_from: Path  # the old file, to copy the review tables from
    backup: Path  # where the old file was saved
    kept: int = 0  # decisions given to patches of the new run so far

    def apply(self, new):
        """Copy the decisions of patches that still exist (same ``patch_id``) into ``new``."""
        mask = new["patch_id"].isin(self.decisions.index)
        if not mask.any():  # (pandas refuses to set an empty float selection into an int column)
            return new
        for c in self.decisions.columns:
            new.loc[mask, c] = new.loc[mask, "patch_id"].map(self.decisions[c]).values
        self.kept += int(mask.sum())
        return new

    def report(self) -> None:
        lost = len(self.decisions) - self.kept
        log.warning("kept %d review decisions and %d decision log entries%s; the previous patch file is saved "
                    "as %s", self.kept, sum(self.history.values()),
                    f" ({lost} reviewed patches are gone from this run; their history stays in the log)" if lost
                    else "", self.backup)


def _carry_over_reviews(old_path: Path) -> _Reviews | None:
    """Read the review work recorded in the patch file that the new one replaces.

    Decisions (status, reviewer, time, note, version) go to patches that still exist (same
    ``patch_id``) through :meth:`_Reviews.apply`; the decision history
    (:data:`REVIEW_TABLES`) is copied whole by :func:`write_patches` from
    ``tables_from``. A reviewed old file is kept as ``patches.reviewed-<time>.gpkg``
    (saved here, before anything is written); an unreadable one is moved aside, never
    overwritten. Only the attributes are read, not the polygons.

    Returns
    -------
    _Reviews or None
        None when there is no old file, or no review work in it.
    """
    if not old_path.exists():
        return None
    try:
        old = read_patches(old_path, read_geometry=False)
        history = count_table_rows(old_path, REVIEW_TABLES)
    except InputFileError as exc:
        aside = _aside(old_path, "unreadable")
        os.replace(old_path, aside)
        log.warning("the previous patch file is unreadable (%s); it is kept as %s", exc, aside)
        return None
    reviewed = old[old["status"] != "pending"] if "status" in old.columns else old.iloc[:0]
    if len(reviewed) == 0 and not any(history.values()):
        return None
    cols = [c for c in REVIEW_FIELDS if c in reviewed.columns]
    decisions = reviewed.set_index("patch_id")[cols]
    backup = _aside(old_path, "reviewed")
    snapshot_geopackage(old_path, backup)
    return _Reviews(decisions=decisions, history=history, tables_from=old_path, backup=backup)


def plan_chunks(grid: Grid, chunk_px: int) -> list:
    """Chunk windows (row, col, row0, col0, height, width) covering the grid."""
    out = []
    for i, r0 in enumerate(range(0, grid.height, chunk_px)):
        for j, c0 in enumerate(range(0, grid.width, chunk_px)):
            out.append((i, j, r0, c0, min(chunk_px, grid.height - r0), min(chunk_px, grid.width - c0)))
    return out


def run_detect(config: Config, *, client=None, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None,
               on_event: Callable[[str], None] | None = None) -> DetectResult:
    """Run a detection job described by ``config``.

    Parameters
    ----------
    config : Config
        Validated job configuration (CLI flags already applied).
    client : distributed.Client, optional
        Run the chunk tasks on this cluster; default: Dask's local threaded scheduler.
    workers : int, optional
        Threads for the local scheduler (default ``config.processing.workers``, 0 = cores).
    progress : callable(done, total), optional
        Called as chunks finish (finished chunks reused from an earlier run count as done).
    on_event : callable(str), optional
        Receives one-line messages about the job's steps (for the CLI).

    Returns
    -------
    DetectResult

    Raises
    ------
    ImageryWatchError
        Any bad input is reported before the chunk tasks start.
    """
    say = on_event or (lambda msg: log.info("%s", msg))
    t_start = time.perf_counter()
    folder = JobFolder(Path(config.job.out))
    folder.prepare()
    model = None
    if config.detection.model is not None:  # a bad model file is reported before any work
        from .learn import load_model

        model = load_model(config.detection.model)

    # read + align: describe and check everything before heavy work
    # unreadable sheets are left out of the mosaics and recorded as not processed (below)
    mapper = _cluster_mapper(client)  # a cluster's workers open the sheets together
    before_info = describe_epoch(config.inputs.before, work_dir=folder.work, label="before", skip_unreadable=True,
                                 mapper=mapper)
    after_info = describe_epoch(config.inputs.after, work_dir=folder.work, label="after", skip_unreadable=True,
                                mapper=mapper)
    warming = _warm_up_workers(client)  # kept until the chunk tasks are queued behind them
    bands = config.inputs.bands
    b_idx = _band_indexes(bands, before_info.count, before_info.source, "before")
    a_idx = _band_indexes(bands, after_info.count, after_info.source, "after")
    aoi_bounds = None
    if config.inputs.area_of_interest is not None:
        ref = config.inputs.area_of_interest
        aoi_gdf, _ = read_layer(ref.path, layer=ref.layer, name="area_of_interest", crs=before_info.crs)
        aoi_bounds = tuple(aoi_gdf.total_bounds)
    plan = plan_grid(before_info, after_info, crs=config.processing.crs,
                     pixel_size_m=config.processing.pixel_size_m, aoi_bounds=aoi_bounds)
    grid = plan.grid
    factor = DetectorParams().factor(grid.pixel_size_m)
    if config.processing.chunk_px % factor:
        good = max(factor, round(config.processing.chunk_px / factor) * factor)
        raise ConfigError(
            f"processing.chunk_px = {config.processing.chunk_px}: must be a multiple of {factor}, the side of "
            f"one analysis pixel at {grid.pixel_size_m:g} m (so results do not depend on chunking); "
            f"use {good} (or --chunk-px {good})")
    for note in plan.notes:
        say(note)
    unprocessed = unprocessed_areas(before_info, after_info, grid)
    for row in unprocessed.itertuples():
        say(f"NOT PROCESSED: {row.sheet} ({row.epoch} epoch) cannot be read ({row.reason}); its area, "
            f"{row.area_m2 / 1e6:.3f} km2 {_fmt_bounds(row.geometry.bounds)}, is recorded as not processed in "
            f"{folder.root / UNPROCESSED_FILE} and summary.json: replace the sheet and run the job again")
    say(f"processing grid {grid.width} x {grid.height} px at {grid.pixel_size_m:g} m "
        f"({grid.width * grid.height * grid.pixel_area_m2 / 1e6:.2f} km2)")
    layers, layer_reports, county_names = _prepare_layers(config, grid, folder)
    for rep in layer_reports:
        if rep.repaired or rep.reprojected_from:
            say(f"layer {rep.name}: {rep.features} features, {rep.repaired} invalid geometries repaired"
                + (f", reprojected from {rep.reprojected_from}" if rep.reprojected_from else ""))

    inputs_id = {
        "before": [file_stamp(p) for p in (before_info.sheets or (before_info.path,))],
        "after": [file_stamp(p) for p in (after_info.sheets or (after_info.path,))],
        "layers": _layer_stamps(config),
        "unreadable": [u.path for u in before_info.unreadable + after_info.unreadable],
        "bands": list(bands), "grid": [grid.crs_wkt, list(grid.transform), grid.width, grid.height],
        "max_shift_px": config.processing.max_shift_px, "sensitivity": config.detection.sensitivity,
        "version": __version__,
    }
    fit_key = fingerprint(inputs_id)
    state = folder.load_state()

    # whole-image fits, once (reused on resume)
    if state.get("fit_key") == fit_key and "fit" in state:
        fit = state["fit"]
        say("reusing the fitted shift, normalisation and thresholds of the previous run")
    else:
        say("fitting misregistration, radiometric normalisation and thresholds on sampled blocks")
        windows = _sample_windows(grid, n=SAMPLE_BLOCKS, block_px=SAMPLE_BLOCK_PX)
        before_reader0 = make_reader(before_info, grid, b_idx)
        after_reader0 = make_reader(after_info, grid, a_idx)
        threads = workers or config.processing.workers or os.cpu_count() or 1
        sb, vb = _read_samples(before_reader0, windows, threads)
        sa, va = _read_samples(after_reader0, windows, threads)
        if not any(v.any() for v in vb):
            raise InputFileError(f"{before_info.source}: the before epoch holds no valid pixel in the overlap "
                                 "(all nodata); check the file and its nodata/mask")
        if not any(v.any() for v in va):
            raise InputFileError(f"{after_info.source}: the after epoch holds no valid pixel in the overlap "
                                 "(all nodata); check the file and its nodata/mask")
        shift = measure_shift(sb, sa, [x & y for x, y in zip(vb, va)], max_shift_px=config.processing.max_shift_px,
                              workers=threads)
        after_reader1 = make_reader(after_info, grid, a_idx, shift_rc=_read_shift(shift.dy, shift.dx, factor))
        if after_reader1 != after_reader0:  # the shift moves the reads
            sa, va = _read_samples(after_reader1, windows, threads)
        valid_s = [x & y for x, y in zip(vb, va)]
        norm = fit_normalisation(sb, sa, valid_s)
        sa_n = [apply_normalisation(a, norm) for a in sa]
        params = fit_detector(sb, sa_n, valid_s, pixel_size_m=grid.pixel_size_m,
                              sensitivity=config.detection.sensitivity)
        fit = {"shift": shift.to_dict(), "normalisation": norm.to_dict(), "params": params.to_dict(),
               "sample_blocks": len(windows)}
        state = {"fit_key": fit_key, "fit": fit}
    shift = fit["shift"]
    say(f"after epoch misregistration: dy {shift['dy']:+.1f} px, dx {shift['dx']:+.1f} px "
        f"(median of {shift['blocks_used']} blocks)")
    norm = Normalisation.from_dict(fit["normalisation"])
    params = DetectorParams.from_dict(fit["params"])
    before_reader = make_reader(before_info, grid, b_idx)
    after_reader = make_reader(after_info, grid, a_idx, shift_rc=_read_shift(shift["dy"], shift["dx"], factor))

    chunk_px = config.processing.chunk_px
    rules = tuple(config.rules)
    chunk_key = fingerprint({"fit_key": fit_key, "fit": fit, "rules": [repr(r) for r in rules],
                             "chunk_px": chunk_px, "aoi": config.inputs.area_of_interest is not None})
    chunk_dir = folder.chunk_dir(chunk_key)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    if remove_partial_pieces(chunk_dir):
        log.info("removed partial chunk files left by an interrupted run in %s", chunk_dir)
    halo = detect_halo_px(pixel_size_m=grid.pixel_size_m, params=params)
    chunks = plan_chunks(grid, chunk_px)
    state.update({
        "version": __version__, "config": str(config.source) if config.source else None,
        "job": {"name": config.job.name, "epoch_before": config.job.epoch_before,
                "epoch_after": config.job.epoch_after},
        "inputs": {"before": before_info.source, "after": after_info.source,
                   "before_path": before_info.path, "after_path": after_info.path,
                   "bands": list(bands)},
        "grid": {"crs_wkt": grid.crs_wkt, "transform": list(grid.transform), "width": grid.width,
                 "height": grid.height},
        "chunk_key": chunk_key, "chunk_px": chunk_px, "chunks_total": len(chunks), "halo_px": halo,
        "county_names": list(county_names), "rules": [r.name for r in rules], "completed": False,
    })
    folder.save_state(state)

    tasks, reused = [], 0
    for (i, j, r0, c0, h, w) in chunks:
        out_path = chunk_dir / folder.chunk_name(i, j)
        if out_path.exists():
            reused += 1
            continue
        tasks.append(ChunkTask(
            row=i, col=j, row0=r0, col0=c0, height=h, width=w, halo_px=halo, before=before_reader,
            after=after_reader, normalisation=norm, params=fit["params"], rules=rules,
            layers_path=str(folder.layers), has_farmland="farmland" in layers,
            has_approved="approved" in layers, has_counties="counties" in layers,
            has_aoi="aoi" in layers, pixel_size_m=grid.pixel_size_m, out_path=str(out_path),
            gdal_cachemax_mb=config.processing.gdal_cachemax_mb))
    if reused:
        say(f"resuming: {reused} of {len(chunks)} chunks already done, {len(tasks)} to compute")
    _give_back_memory()  # what the whole-image fits freed: 0.29 GiB at 16 Gpx, the chunk tasks' baseline
    t_chunks = time.perf_counter()
    chunk_stats = _run_tasks(tasks, client=client, workers=workers or config.processing.workers or None,
                             progress=progress, done0=reused, total=len(chunks))
    del warming
    t_merge = time.perf_counter()

    # vectorise (merge across seams) -> store, a batch of patches at a time
    _give_back_memory()
    pieces = (load_pieces(chunk_dir / folder.chunk_name(i, j)) for (i, j, *_rest) in chunks)
    provenance = {"job_id": chunk_key[:12], "epoch_before": config.job.epoch_before,
                  "epoch_after": config.job.epoch_after}
    batches = merge_pieces_in_batches(
        pieces, rule_names=[r.name for r in rules], min_area_m2=[r.min_area_m2 for r in rules],
        pixel_area_m2=grid.pixel_area_m2, crs=grid.crs, county_names=county_names, provenance=provenance)
    reviews = _carry_over_reviews(folder.patches)
    written = []  # the few columns the summary needs, of every patch written
    model_figures = {"path": str(config.detection.model), "threshold": model.threshold,
                     "patches_flagged_by_rules": 0, "patches_kept": 0} if model is not None else None
    model_stats = []
    building_figures = ({"mode": config.detection.building_check, "construction_patches": 0, "kept": 0}
                        if config.detection.building_check != "off" else None)

    def stored(batches):
        for batch in batches:
            if model is not None:  # the model learnt from reviews keeps the patches it confirms
                batch = _filter_by_model(batch, before_reader, after_reader, model, model_figures, model_stats)
            if building_figures is not None:  # construction patches the segments confirm
                batch = _filter_by_buildings(batch, before_reader, after_reader, rules, building_figures,
                                             analysis_m=fit["params"]["analysis_m"])
            if reviews is not None:
                batch = reviews.apply(batch)
            written.append(batch[["rule", "area_m2", "area_mu"]])
            yield batch

    write_patches(stored(batches), folder.patches, rule_names=[r.name for r in rules],
                  tables_from=reviews.tables_from if reviews is not None else None, tables=REVIEW_TABLES)
    if reviews is not None:
        reviews.report()
    if model is not None:
        say(f"change model {config.detection.model}: {model_figures['patches_kept']} of "
            f"{model_figures['patches_flagged_by_rules']} patches kept")
    if building_figures is not None:
        say(f"building check ({building_figures['mode']}): {building_figures['kept']} of "
            f"{building_figures['construction_patches']} construction patches kept")
    patches = pd.concat(written, ignore_index=True)
    kept = reviews.kept if reviews is not None else 0
    _record_unprocessed(unprocessed, folder.root / UNPROCESSED_FILE)
    t_end = time.perf_counter()

    per_rule = {}
    for r in rules:
        sel = patches[patches["rule"] == r.name]
        per_rule[r.name] = {"patches": int(len(sel)), "area_m2": float(sel["area_m2"].sum()),
                            "area_mu": float(sel["area_mu"].sum())}
    ground_px = grid.width * grid.height
    summary = {
        "out_dir": str(folder.root), "patches_path": str(folder.patches), "patches": int(len(patches)),
        "per_rule": per_rule, "chunks_total": len(chunks), "chunks_reused": reused,
        "chunks_computed": len(tasks), "grid_px": [grid.height, grid.width],
        "area_km2": ground_px * grid.pixel_area_m2 / 1e6, "shift_px": [shift["dy"], shift["dx"]],
        "reviews_kept": kept, "notes": list(plan.notes), "model": model_figures,
        "building_check": building_figures,
        "unprocessed": [{"epoch": r.epoch, "sheet": r.sheet, "reason": r.reason, "area_m2": r.area_m2,
                         "bounds": list(r.geometry.bounds)} for r in unprocessed.itertuples()],
        "unprocessed_km2": float(unprocessed["area_m2"].sum()) / 1e6,
        "seconds": {"total": t_end - t_start, "fit": t_chunks - t_start, "chunks": t_merge - t_chunks,
                    "merge_store": t_end - t_merge},
        "stage_seconds": {k: float(sum(s.get(k, 0.0) for s in chunk_stats))
                          for k in ("read_s", "detect_s", "vectorise_s")},
        "ground_mpx_per_s": ground_px / 1e6 / max(t_end - t_start, 1e-9),
    }
    from .jobs import write_json_atomic

    write_json_atomic(folder.summary, summary)
    state["completed"] = True
    state["summary"] = {k: summary[k] for k in ("patches", "per_rule", "chunks_total")}
    folder.save_state(state)
    return DetectResult(out_dir=folder.root, patches_path=folder.patches, summary=summary)


#: neighbouring chunks run in one task, a row of chunks after the other, in blocks of up to
#: this many grid pixels (width, height): the image rows the chunks' halos share are then
#: read and block-averaged once (:func:`_group_windows`). What is still read twice is the
#: halo columns along a block's left and right edges (2 x 144 px per 8192 columns at 0.2 m)
#: and the halo rows along its top and bottom (once per block height). Memory follows a
#: row of chunks of the block (its width), not the block's height. The width is for 4 x 4
#: analysis blocks; with coarser pixels (fewer input pixels per analysis pixel) blocks are
#: narrower, so that the analysis arrays of a row of chunks stay as small.
GROUP_PX = (8192, 16384)
#: blocks get fewer rows of chunks when there would be fewer than this many blocks per
#: worker thread (the workers then share the job out evenly)
GROUPS_PER_WORKER = 4


def _group_shape(tasks: list, workers: int, factor: int = 4) -> tuple:
    """``(columns, rows)`` of chunks per block (see :data:`GROUP_PX`; ``factor``: the
    analysis factor)."""
    chunk = max(max(t.height, t.width) for t in tasks)
    cols = max(1, GROUP_PX[0] * min(max(1, factor), 4) // 4 // chunk)
    rows = max(1, GROUP_PX[1] // chunk)
    n_rows = len({t.row for t in tasks})
    col_blocks = -(-len({t.col for t in tasks}) // cols)
    return cols, max(1, min(rows, n_rows * col_blocks // (GROUPS_PER_WORKER * max(1, workers))))


def _chunk_groups(tasks: list, shape: tuple) -> list:
    """Group tasks into blocks of at most ``shape = (columns, rows)`` neighbouring chunks
    (each block in raster order; blocks in the order of their first task)."""
    cols, rows = shape
    groups: dict = {}
    for t in tasks:
        groups.setdefault((t.row // rows, t.col // cols), []).append(t)
    return [sorted(g, key=lambda t: (t.row, t.col)) for g in groups.values()]


#: glibc malloc settings for the chunk tasks: arrays up to 32 MiB come from the heap and up
#: to 256 MiB of freed heap is kept for the next chunk. Without them, and with the
#: ``MALLOC_TRIM_THRESHOLD_=65536`` that dask's nanny gives its workers (which also turns
#: off glibc's adaptive mmap threshold), every large array is a fresh mmap whose pages fault
#: in: a chunk then costs nearly twice the CPU (measured: 0.46 against 0.23 CPU-s).
_MALLOC_OPTIONS = ((-3, 32 * 1024 * 1024), (-1, 256 * 1024 * 1024))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
#: glibc's own starting values of the same two settings (128 KiB each), set back for the
#: merge after chunk tasks ran in the job's process
_MALLOC_DEFAULTS = ((-3, 128 * 1024), (-1, 128 * 1024))


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _tune_malloc() -> bool:
    """Apply :data:`_MALLOC_OPTIONS` once per process (glibc only; elsewhere nothing)."""
    libc = _libc()
    try:
        return libc is not None and all(libc.mallopt(option, value) == 1 for option, value in _MALLOC_OPTIONS)
    except AttributeError:
        return False


def _give_back_memory() -> None:
    """Return to the system the memory this process keeps but no longer uses.

    Called before the chunk tasks, for what the whole-image fits (mosaic descriptions,
    layers, samples) freed: measured at the start of the chunk tasks, 0.84 GiB resident at
    16 Gpx and 0.57 GiB at 1 Gpx, 0.55 and 0.45 GiB after this. Called again after them:
    with local threads the chunk tasks run in the job's process and leave behind GDAL's
    block cache (up to ``processing.gdal_cachemax_mb``) and the free heap that
    :data:`_MALLOC_OPTIONS` keeps (up to 256 MiB per malloc arena); the merge that follows
    does not need either. The block cache is emptied, glibc's default thresholds are set
    back (the next job tunes them again) and the free heap is trimmed. Measured at
    1 Gpx: 1.10 GiB resident after the chunk tasks, 0.57 GiB after this.
    """
    with rasterio.Env(GDAL_CACHEMAX=0):  # setting the cache size flushes the blocks over it
        pass
    libc = _libc()
    if libc is None:
        return
    try:
        if _tune_malloc.cache_info().currsize:  # chunk tasks tuned malloc in this process
            _tune_malloc.cache_clear()
            for option, value in _MALLOC_DEFAULTS:
                libc.mallopt(option, value)
        libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass


def _filter_by_model(batch, before: EpochReader, after: EpochReader, model, figures: dict, stats: list):
    """The patches of ``batch`` that ``model`` confirms; counts them in ``figures``.

    The mosaic statistics the model needs are fitted once, at the first non-empty batch,
    and kept in ``stats``, so that batches give the rows the whole table would.
    """
    from .patch_model import filter_patches, fit_mosaic_stats

    figures["patches_flagged_by_rules"] += len(batch)
    if len(batch) and not stats:
        stats.append(fit_mosaic_stats(before, after, analysis_m=model.analysis_m))
    kept = filter_patches(batch, before, after, model, column=None, stats=stats[0] if stats else None)
    figures["patches_kept"] += len(kept)
    return kept


def _filter_by_buildings(batch, before: EpochReader, after: EpochReader, rules, figures: dict, *,
                         analysis_m: float):
    """The patches of ``batch``, less the construction patches that the segment method does
    not confirm (:mod:`~imagery_watch.building_check`); counts them in ``figures``."""
    from .building_check import MIN_SHARE, building_shares
    from .buildings import BuildingParams, turns_into

    names = [r.name for r in rules if turns_into(r, built=True)]
    construction = batch["rule"].isin(names).to_numpy()
    if not construction.any():
        return batch
    params = BuildingParams(shadow_check=figures["mode"] == "buildings")
    shares = building_shares(list(batch.geometry[construction]), before, after, analysis_m=analysis_m,
                             params=params)
    keep = np.ones(len(batch), bool)
    keep[construction] = np.nan_to_num(shares, nan=0.0) >= MIN_SHARE
    figures["construction_patches"] += int(construction.sum())
    figures["kept"] += int(keep[construction].sum())
    return batch[keep].copy()


def _warm_up() -> None:
    """Import the chunk code and load its compiled kernels (in a worker process)."""
    from . import classify, clean, features

    for module in (features, classify, clean):
        module._kernels()


def _warm_up_workers(client) -> list:
    """Start :func:`_warm_up` on every worker of ``client`` (none without a client).

    A fresh worker process otherwise spends its first task importing this package and
    loading the numba kernels from their cache (about 1.3 s): this runs while the job's
    process fits the shift, normalisation and thresholds, before any chunk task is sent.
    Failures are left to the chunk tasks, which report them; hold the returned futures
    until those are sent (a released future is cancelled).
    """
    if client is None:
        return []
    try:
        return [client.submit(_warm_up, workers=[address], allow_other_workers=False, pure=False)
                for address in client.nthreads()]  # (scheduler_info() lists 5 workers in some versions)
    except Exception as exc:  # noqa: BLE001 - only a head start: the chunk tasks report real trouble
        log.debug("warming up the workers failed: %s", exc)
        return []


#: a cluster opens the sheets of a mosaic in this many batches per worker thread, of at
#: least :data:`SCAN_BATCH_MIN` sheets (opening one takes about 1 ms)
SCAN_BATCHES_PER_THREAD = 4
SCAN_BATCH_MIN = 64


def _cluster_mapper(client):
    """``mapper(func, items)`` that runs ``func`` on batches of ``items`` as tasks of
    ``client`` (results in order; an exception of a batch is raised here), or None without
    a client. See :func:`~imagery_watch.io.rasters.describe_epoch`."""
    if client is None:
        return None

    threads = max(1, sum(client.nthreads().values()))

    def mapper(func, items: list) -> list:
        size = max(SCAN_BATCH_MIN, -(-len(items) // (SCAN_BATCHES_PER_THREAD * threads)))
        batches = [items[i:i + size] for i in range(0, len(items), size)]
        return client.gather(client.map(func, batches, pure=False))

    return mapper


def process_chunk_group(tasks: list) -> list:
    """:func:`process_chunk` on neighbouring chunks, a row of chunks at a time, each image
    row read once for all of them (:func:`_group_windows`); one figures dict per chunk."""
    _tune_malloc()  # here, so that it reaches every worker process of a cluster too
    if tasks and _warped(tasks[0]):
        # the warper's values depend on the window read: each chunk reads its own window,
        # as it always did, so that results depend on the chunk size only, not on the blocks
        return [figures for t in tasks for figures in _process_rows([t])]
    return _process_rows(tasks)


def _process_rows(tasks: list) -> list:
    """:func:`process_chunk` on each row of chunks of :func:`_group_windows`."""
    out = []
    windows = _group_windows(tasks) if tasks else iter(())
    while True:
        t0 = time.perf_counter()
        try:
            row_tasks, group = next(windows)
        except StopIteration:
            break
        read_s = (time.perf_counter() - t0) / len(row_tasks)  # shared: each chunk counts its part
        for t in row_tasks:
            figures = process_chunk(t, group)
            figures["read_s"] += read_s
            out.append(figures)
    return out


def _run_tasks(tasks: list, *, client, workers, progress, done0: int, total: int) -> list:
    """Run chunk tasks with Dask (local threads, or a distributed client), in blocks of
    neighbouring chunks (:data:`GROUP_PX`)."""
    if progress:
        progress(done0, total)
    if not tasks:
        return []
    threads = sum(client.nthreads().values()) if client is not None else (workers or os.cpu_count() or 1)
    factor = DetectorParams.from_dict(tasks[0].params).factor(tasks[0].pixel_size_m)
    groups = _chunk_groups(tasks, _group_shape(tasks, threads, factor))
    if client is not None:
        from distributed import as_completed

        futures = client.map(process_chunk_group, groups, pure=False)
        out, done = [], done0
        for fut in as_completed(futures):
            figures = fut.result()
            out.extend(figures)
            done += len(figures)
            if progress:
                progress(done, total)
        return out

    import dask
    from dask.callbacks import Callback

    counter = {"done": done0}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(key, str) and key.startswith("chunks-"):
                counter["done"] += len(result)
                if progress:
                    progress(counter["done"], total)

    delayed = [dask.delayed(process_chunk_group, pure=True)(g, dask_key_name=f"chunks-{g[0].row}-{g[0].col}-{len(g)}")
               for g in groups]
    with _Progress():
        results = dask.compute(*delayed, scheduler="threads", num_workers=workers or os.cpu_count())
    return [figures for group in results for figures in group]
