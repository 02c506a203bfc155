"""Where the time of a detection job goes, step by step (``bench_city.py --profile``).

Runs ``run_detect`` in this process with one worker thread, after wrapping the functions
``pipeline.py`` calls (reading, rasterising, normalising, detecting, vectorising, saving,
merging, writing) with timers; every Nth chunk task also runs under cProfile for a table of
the hottest functions with their file and line (the unit is a task: a block of chunks that
share their reads; figures are per chunk). Nothing under ``src/`` is changed: the
wrappers are set on the imported modules and removed afterwards.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from city_mosaic import City, write_config


class _StepTimer:
    """Wall time per step of the job, by wrapping the functions ``pipeline.py`` calls.

    Inside a chunk task the steps are named ``chunk: ...``; elsewhere ``job: ...``. Chunks
    run under cProfile (every ``profile_every``-th) are left out of the step times.
    """

    def __init__(self):
        self.seconds, self.calls, self.lock, self.local = {}, {}, threading.Lock(), threading.local()

    def add(self, name: str, secs: float) -> None:
        if getattr(self.local, "profiled", False):
            return
        scope = "chunk" if getattr(self.local, "in_chunk", False) else "job"
        key = f"{scope}: {name}"
        with self.lock:
            self.seconds[key] = self.seconds.get(key, 0.0) + secs
            self.calls[key] = self.calls.get(key, 0) + 1

    def wrap(self, fn, name):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                label = name(*args, **kwargs) if callable(name) else name
                self.add(label, time.perf_counter() - t0)
        return timed


def profile_run(city: City, work: Path, *, chunk_px: int, profile_every: int) -> dict:
    """Run ``run_detect`` in this process with one worker thread and time every step."""
    import cProfile
    import pstats

    import pyogrio
    import rasterio
    import rasterio.features

    from imagery_watch import pipeline
    from imagery_watch.config import load_config
    from imagery_watch.io import rasters

    job = work / f"job-{city.copies[0]}x{city.copies[1]}-profile"
    shutil.rmtree(job, ignore_errors=True)
    config = load_config(write_config(city, job)).replace("processing", chunk_px=chunk_px, workers=1)
    timer = _StepTimer()
    stats_box: dict = {"stats": None, "chunks": 0, "profiled": 0}
    saved = []

    def patch(obj, attr, name):
        if not hasattr(obj, attr):
            print(f"  (profile: {getattr(obj, '__name__', obj)}.{attr} not found; not timed)")
            return
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, timer.wrap(getattr(obj, attr), name))

    def read_name(reader, *a, **k):  # the two readers differ by path; how each reads is rasters.py's business
        kind = "direct" if getattr(reader, "offset_rc", None) is not None else "warped"
        return f"read+decode {Path(reader.path).stem} ({kind})"

    patch(rasters.EpochReader, "read", read_name)
    patch(rasterio, "open", "  of which rasterio.open (VRT parse)")
    patch(pipeline, "rasterise_window", lambda path, layer, **k: f"rasterise {layer}")
    patch(pyogrio, "read_dataframe", "  of which pyogrio.read_dataframe (bbox query)")
    patch(rasterio.features, "rasterize", "  of which rasterio.features.rasterize")
    for attr, name in (("apply_normalisation", "normalise"),
                       ("analysis_inputs", "block averages (analysis pixels)"),
                       ("detect_inputs", "detect (analysis pixels)"),
                       ("inexact_pixels", "find inexact analysis pixels"),
                       ("vectorise_analysis_block", "vectorise (analysis pixels)"),
                       ("expand_result", "  of which expand to input pixels"),
                       ("vectorise_block", "vectorise (input pixels)"), ("save_pieces", "save_pieces"),
                       ("describe_epoch", "describe epoch (VRT)"), ("_prepare_layers", "prepare layers"),
                       ("_read_samples", "read sample blocks"), ("measure_shift", "measure shift"),
                       ("fit_normalisation", "fit normalisation"), ("fit_detector", "fit detector"),
                       ("load_pieces", "load pieces"), ("merge_pieces_in_batches", "merge pieces"),
                       ("_carry_over_reviews", "carry over reviews"), ("write_patches", "write GeoPackage")):
        patch(pipeline, attr, name)
    inner = pipeline.process_chunk_group

    def group(tasks):
        # the unit of work is a block of chunks (they share its reads); figures per chunk
        stats_box["chunks"] += len(tasks)
        stats_box["groups"] = stats_box.get("groups", 0) + 1
        prof = None
        if profile_every and stats_box["groups"] % profile_every == 1 % profile_every:
            prof, timer.local.profiled = cProfile.Profile(), True
        timer.local.in_chunk = True
        t0 = time.perf_counter()
        try:
            if prof is None:
                return inner(tasks)
            return prof.runcall(inner, tasks)
        finally:
            if prof is None:
                timer.add("chunk total", time.perf_counter() - t0)
            timer.local.in_chunk = False
            if prof is not None:
                timer.local.profiled = False
                with timer.lock:
                    stats_box["profiled"] += len(tasks)
                    if stats_box["stats"] is None:
                        stats_box["stats"] = pstats.Stats(prof)
                    else:
                        stats_box["stats"].add(prof)

    saved.append((pipeline, "process_chunk_group", inner))
    pipeline.process_chunk_group = group
    t0 = time.perf_counter()
    try:
        result = pipeline.run_detect(config, workers=1)
    finally:
        for obj, attr, fn in reversed(saved):
            setattr(obj, attr, fn)
    wall = time.perf_counter() - t0
    top = []
    if stats_box["stats"] is not None:
        st = stats_box["stats"]
        st.dump_stats(work / "profile-chunks.pstats")
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
        for (file, line, func), (cc, nc, tt, ct, _callers) in rows:
            short = file.split("site-packages/")[-1].split("/src/")[-1]
            top.append((f"{short}:{line}({func})", nc, tt / stats_box["profiled"], ct / stats_box["profiled"]))
    return {"wall_s": wall, "summary": result.summary, "seconds": timer.seconds, "calls": timer.calls,
            "chunks": stats_box["chunks"], "profiled": stats_box["profiled"], "top": top}


def format_profile(prof: dict, city: City) -> str:
    timed = prof["chunks"] - prof["profiled"]
    total = prof["wall_s"]
    lines = [f"Profile: run_detect in-process, 1 worker thread, {city.gpx:.2f} Gpx grid, {prof['chunks']} chunks "
             f"({prof['profiled']} under cProfile, left out of the step times), {total:.1f} s wall, "
             f"{city.width * city.height / 1e6 / total:.1f} ground Mpx/s", "",
             "| step | calls | seconds | per timed chunk (s) | share of wall |", "|---|---|---|---|---|"]
    items = sorted(prof["seconds"].items(), key=lambda kv: (kv[0].startswith("chunk"), -kv[1]))
    for key, secs in items:
        in_chunk = key.startswith("chunk") and timed
        per = f"{secs / timed:.3f}" if in_chunk else "-"
        share = secs / total * (prof["chunks"] / timed if in_chunk else 1.0)
        lines.append(f"| {key} | {prof['calls'][key]} | {secs:.1f} | {per} | {100 * share:.1f} % |")
    if prof["top"]:
        lines += ["", f"cProfile of {prof['profiled']} chunk tasks, top 25 by own time, per chunk:", "",
                  "| function | calls | own s / chunk | cumulative s / chunk |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {nc} | {tt:.3f} | {ct:.3f} |" for name, nc, tt, ct in prof["top"]]
    return "\n".join(lines)
