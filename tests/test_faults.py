"""Faults in a detection job (issue 7): killed at any moment, the job resumes to the same result.

A real ``imagery-watch detect`` process (``cli.main``) is killed with SIGKILL at a named
point of each phase (read, detect, vectorise, store of a chunk, merge across seams, store
of the patch file, the end of the job). The kill comes from inside the process, from a
small wrapper that the test installs around the function of that phase before the CLI
runs (:data:`KILL_BOOTSTRAP`), so the product carries no test hook and the kill lands in
the phase it names every time. Then the job is run again and must:

* finish with the same patches as an uninterrupted run (every attribute, every geometry);
* reuse every chunk the killed run had finished, without rewriting it;
* have left the previous complete ``patches.gpkg`` untouched until the new one was complete
  (it is renamed into place, never written in place), and no temporary file behind.

A ``dask.distributed`` worker killed while chunk tasks run costs nothing either: the
scheduler gives its tasks to the other worker and the job ends with the same patches.

``benchmarks/bench_robustness.py`` runs the same checks at many more kill points and at
random moments (seeded delays).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from imagery_watch.io.patches import read_patches
from imagery_watch.pipeline import run_detect

#: the chunk size of the killed runs: 12 chunks on the test scene, so kills land mid-job;
#: the reference job (the "previous complete output") ran with 1024 px, so nothing is reused
CHUNK_PX = 512
CHUNKS_TOTAL = 12

#: Runs ``cli.main(argv)`` after wrapping the function of one phase so that its N-th call
#: kills the process with SIGKILL. ``python -c KILL_BOOTSTRAP POINT N ARGV...``
KILL_BOOTSTRAP = r'''
import io, os, signal, sys, threading

point, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
lock, calls = threading.Lock(), [0]


def reached():
    with lock:
        calls[0] += 1
        return calls[0] == nth


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_entry(owner, name):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if reached():
            die()
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


import numpy as np
from imagery_watch import jobs, pipeline
from imagery_watch.io import patches, rasters

if point == "read":             # a window read of a chunk (before or after epoch)
    kill_at_entry(rasters.EpochReader, "read")
elif point == "detect":         # detection of a chunk, its windows read
    kill_at_entry(pipeline, "detect_inputs")
elif point == "vectorise":      # polygons of a chunk, detection done
    kill_at_entry(pipeline, "vectorise_analysis_block")
elif point == "store-chunk":    # half of a chunk's result file written
    real_savez = np.savez_compressed

    def half_written(file, *args, **kwargs):
        if not reached():
            return real_savez(file, *args, **kwargs)
        buf = io.BytesIO()
        real_savez(buf, *args, **kwargs)
        data = buf.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        die()

    np.savez_compressed = half_written
elif point == "merge":          # every chunk done, polygons being merged across seams
    kill_at_entry(pipeline, "merge_pieces_in_batches")
elif point == "store-patches":  # the new patch file written beside the old one, not yet complete
    kill_at_entry(patches, "_add_style")
elif point == "store-rename":   # the new patch file complete, about to replace the old one
    kill_at_entry(patches, "_settle_wal")
elif point == "finish":         # the new patch file in place, the job state not yet marked complete
    kill_at_entry(jobs.JobFolder, "save_state")
else:
    sys.exit(f"unknown kill point {point!r}")

from imagery_watch.cli import main

sys.exit(main(argv))
'''

#: kill points, each with the call that is killed in CI (mid-job where the phase repeats per
#: chunk); the benchmark tries every call
KILL_POINTS = {"read": 9, "detect": 5, "vectorise": 7, "store-chunk": 6, "merge": 1, "store-patches": 1,
               "store-rename": 1, "finish": 2}
#: points reached before the new patch file replaces the old one
BEFORE_RENAME = ("read", "detect", "vectorise", "store-chunk", "merge", "store-patches", "store-rename")


def same_table(got_path: Path, expected_path: Path) -> None:
    """The two patch files hold the same patches: every attribute equal, every geometry identical."""
    got = read_patches(got_path).sort_values("patch_id").reset_index(drop=True)
    expected = read_patches(expected_path).sort_values("patch_id").reset_index(drop=True)
    assert len(expected) > 0, "the uninterrupted run found no patch: the comparison would prove nothing"
    pd.testing.assert_frame_equal(pd.DataFrame(got.drop(columns="geometry")),
                                  pd.DataFrame(expected.drop(columns="geometry")), check_exact=True)
    assert list(got.geometry.to_wkb()) == list(expected.geometry.to_wkb())


def gpkg_is_whole(path: Path) -> bool:
    """SQLite's own check of the file, and the patch layer reads."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return ok and len(read_patches(path)) >= 0


def temporaries(job: Path) -> list:
    """Temporary files a writer of the job folder leaves while it works (none once it is done)."""
    return sorted(p.relative_to(job).as_posix() for p in job.rglob("*")
                  if p.is_file() and (".tmp" in p.name or p.name.endswith(("-journal", "-wal", "-shm"))))


def chunk_files(job: Path, exclude: set = frozenset()) -> dict:
    """Finished chunk files: path -> (inode, mtime_ns), leaving out the chunk folders in ``exclude``."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(job.glob("chunks/*/r*.npz"))
            if p.parent not in exclude}


def kill_command(point: str, nth: int, config_path: Path, job: Path, *, chunk_px: int = CHUNK_PX) -> list:
    return [sys.executable, "-c", KILL_BOOTSTRAP, point, str(nth), "detect", str(config_path), "--out", str(job),
            "--chunk-px", str(chunk_px), "--workers", "1", "-q"]


def check_what_a_kill_left(job: Path, previous: bytes, uninterrupted: Path, *, renamed: bool | None) -> list:
    """The previous patch file untouched, or (``renamed``) the new one complete; the job state readable.

    ``renamed=None``: either (a kill at an unknown moment). Returns the temporary files left.
    """
    assert gpkg_is_whole(job / "patches.gpkg")
    untouched = (job / "patches.gpkg").read_bytes() == previous
    if renamed is False:
        assert untouched, "the previous patch file was touched"
    if renamed or (renamed is None and not untouched):
        same_table(job / "patches.gpkg", uninterrupted)
    json.loads((job / "job.json").read_text(encoding="utf-8"))
    return temporaries(job)


def resume_and_check(job: Path, old_dirs: set, *, config, uninterrupted: Path) -> int:
    """Run the job again over what a kill left and check the result; returns the chunks it reused."""
    finished = chunk_files(job, old_dirs)
    result = run_detect(config.replace("job", out=job).replace("processing", chunk_px=CHUNK_PX, workers=1))
    s = result.summary
    assert s["chunks_total"] == CHUNKS_TOTAL
    assert s["chunks_reused"] == len(finished), "a chunk finished before the kill was not reused"
    assert s["chunks_computed"] == CHUNKS_TOTAL - len(finished)
    after = chunk_files(job, old_dirs)
    assert all(after[p] == v for p, v in finished.items()), "a chunk finished before the kill was rewritten"
    assert len(after) == CHUNKS_TOTAL
    assert temporaries(job) == [], "temporary files were left behind"
    same_table(job / "patches.gpkg", uninterrupted)
    assert s["per_rule"] == json.loads((uninterrupted.parent / "summary.json").read_text())["per_rule"]
    return len(finished)


def kill_and_resume(point: str, nth: int, *, config, config_path: Path, previous_job: Path, uninterrupted: Path,
                    work: Path) -> dict:
    """Kill a job at ``point`` (its ``nth`` call), run it again, and check every promise.

    ``previous_job`` is a finished job folder (another chunk size), copied to ``work``; its
    patch file is the previous complete output. Returns figures of the run (for the benchmark).
    Raises AssertionError on any broken promise.
    """
    job = shutil.copytree(previous_job, work)
    previous = (job / "patches.gpkg").read_bytes()
    old_dirs = set((job / "chunks").iterdir())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed = subprocess.run(kill_command(point, nth, config_path, job), capture_output=True, text=True, env=env,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, \
        f"the job was not killed at {point}:{nth} (exit {killed.returncode}): {killed.stderr[-2000:]}"
    # "finish": the first save of the job state comes before the chunks, the second after the rename
    renamed = False if point in BEFORE_RENAME else True if nth >= 2 else None
    left = check_what_a_kill_left(job, previous, uninterrupted, renamed=renamed)
    reused = resume_and_check(job, old_dirs, config=config, uninterrupted=uninterrupted)
    return {"point": point, "nth": nth, "finished_before_kill": reused, "left_by_kill": left}


def run_with_a_worker_killed(config, client, job: Path, old_dirs: set):
    """Run the job on ``client``'s cluster and SIGKILL one of its worker processes mid-job.

    The killed worker is one that holds chunk tasks, once a chunk is done. Returns the
    job's :class:`~imagery_watch.pipeline.DetectResult` and what was killed (``pid``,
    ``done``: chunks finished then, ``tasks``: chunk tasks it held); empty when the job
    ended before a kill could land.
    """
    pids = client.run(os.getpid)
    killed, stop = {}, threading.Event()

    def kill_a_busy_worker():
        while not stop.is_set():
            done = len(chunk_files(job, old_dirs))
            if done >= 1:
                busy = {w: len(keys) for w, keys in client.processing().items()
                        if any("process_chunk_group" in str(k) for k in keys)}
                if busy:
                    worker = max(busy, key=busy.get)
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.update(worker=worker, pid=pids[worker], done=done, tasks=busy[worker])
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    try:
        result = run_detect(config, client=client)
    finally:
        stop.set()
        killer.join(10)
    return result, killed


@pytest.fixture(scope="module")
def uninterrupted(scene_config, reference_job, tmp_path_factory) -> Path:
    """Patch file of an uninterrupted run at :data:`CHUNK_PX` over a copy of the reference job."""
    job = shutil.copytree(reference_job.out_dir, tmp_path_factory.mktemp("uninterrupted") / "job")
    result = run_detect(scene_config.replace("job", out=job).replace("processing", chunk_px=CHUNK_PX, workers=1))
    assert result.summary["chunks_computed"] == CHUNKS_TOTAL
    return result.patches_path


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_job_killed_in_each_phase_resumes_to_the_same_patches(point, scene_config, scene_config_path,
                                                             reference_job, uninterrupted, tmp_path):
    figures = kill_and_resume(point, KILL_POINTS[point], config=scene_config, config_path=scene_config_path,
                              previous_job=reference_job.out_dir, uninterrupted=uninterrupted,
                              work=tmp_path / "job")
    done = figures["finished_before_kill"]
    if point in ("read", "detect", "vectorise", "store-chunk"):
        assert 0 < done < CHUNKS_TOTAL, f"the kill at {point} did not land mid-job ({done} chunks done)"
    else:
        assert done == CHUNKS_TOTAL
    if point == "store-chunk":  # the half-written chunk file was there, under its temporary name only
        assert len(figures["left_by_kill"]) == 1 and figures["left_by_kill"][0].endswith(".npz")
    if point in ("store-patches", "store-rename"):  # the new patch file was there, beside the old one
        assert [p for p in figures["left_by_kill"] if p.startswith(".patches.tmp")]


def test_distributed_worker_killed_mid_job_gives_the_same_patches(scene_config, reference_job, uninterrupted,
                                                                  tmp_path):
    from distributed import Client, LocalCluster

    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    old_dirs = set((job / "chunks").iterdir())
    config = scene_config.replace("job", out=job).replace("processing", chunk_px=CHUNK_PX)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        result, killed = run_with_a_worker_killed(config, client, job, old_dirs)
        assert killed, "no worker was killed: the job ended first"
        assert killed["done"] < CHUNKS_TOTAL and killed["tasks"] >= 1
        client.wait_for_workers(2, timeout=60)
        assert killed["pid"] not in client.run(os.getpid).values(), "the killed worker is still there"
    assert result.summary["chunks_computed"] == CHUNKS_TOTAL
    same_table(result.patches_path, uninterrupted)
    same_table(job / "patches.gpkg", uninterrupted)
    assert len(chunk_files(job, old_dirs)) == CHUNKS_TOTAL
    assert not [p for p in temporaries(job) if not p.startswith("chunks/")], "temporary files were left behind"


def test_a_rerun_clears_what_a_killed_run_left(scene_config, reference_job, tmp_path):
    """Temporary files of dead writers go at the next run; those of a running process stay."""
    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    left = [job / f".patches.tmp{gone}.gpkg", job / f".patches.tmp{gone}.gpkg-journal",
            job / f".patches.reviewed-20240101T000000.tmp{gone}.gpkg", job / f".job.json.x1y2z3.tmp{gone}",
            job / "work" / f"layers.gpkg.tmp{gone}.gpkg", job / "work" / f"before.vrt.tmp{gone}"]
    running = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        alive = [job / f".patches.tmp{running.pid}.gpkg", job / f".report.tmp{running.pid}.html"]
        for p in left + alive:
            p.write_bytes(b"partial")
        run_detect(scene_config.replace("job", out=job))
        assert [p.name for p in left if p.exists()] == []
        assert all(p.exists() for p in alive), "a temporary file of a running process was removed"
    finally:
        running.communicate(b"")
    assert gpkg_is_whole(job / "patches.gpkg")
