"""The detection job end to end (issue 3): invariances and resumability of run_detect.

All tests run on one small generated scene (``change_scene`` in conftest.py). They check
invariances, not patch counts: chunking and the scheduler do not change the patches,
identical epochs give none, a re-run recomputes nothing, a killed job resumes from its
finished chunks, and review work survives a re-run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imagery_watch.io.patches import read_patches
from imagery_watch.pipeline import REVIEW_TABLES, run_detect


def assert_same_patches(got, expected):
    """Same patch ids and rules, areas within 0.1 %, polygons covering the same ground."""
    assert len(expected) > 0, "the reference job found no patch: the comparison would prove nothing"
    got = got.set_index("patch_id").sort_index()
    expected = expected.set_index("patch_id").sort_index()
    assert list(got.index) == list(expected.index)
    assert list(got["rule"]) == list(expected["rule"])
    np.testing.assert_allclose(got["area_m2"], expected["area_m2"], rtol=1e-3)
    overlap = got.geometry.intersection(expected.geometry, align=True).area
    union = got.geometry.union(expected.geometry, align=True).area
    assert (overlap / union).min() > 0.999


def chunk_files(job: Path, key: str | None = None) -> dict:
    """Finished chunk files of a job folder: path -> (inode, mtime_ns)."""
    pattern = f"chunks/{key[:16]}/r*.npz" if key else "chunks/*/r*.npz"
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(job.glob(pattern))}


def test_reference_job_writes_its_outputs(reference_job):
    s = reference_job.summary
    out = reference_job.out_dir
    assert (out / "patches.gpkg").is_file() and (out / "summary.json").is_file() and (out / "job.json").is_file()
    assert s["chunks_reused"] == 0 and s["chunks_computed"] == s["chunks_total"] == 4
    assert len(chunk_files(out)) == 4
    assert s["patches"] == len(reference_job.patches) == len(read_patches(out / "patches.gpkg"))
    assert (reference_job.patches["status"] == "pending").all()


@pytest.mark.parametrize("chunk_px", [512, 2048])
def test_chunk_size_does_not_change_the_patches(scene_config, reference_job, chunk_px, tmp_path):
    assert reference_job.summary["chunks_total"] == 4  # the reference ran with chunk_px = 1024
    result = run_detect(scene_config.replace("job", out=tmp_path / "job")
                        .replace("processing", chunk_px=chunk_px, workers=2))
    assert result.summary["chunks_total"] == {512: 12, 2048: 1}[chunk_px]
    assert_same_patches(result.patches, reference_job.patches)
    assert_same_patches(read_patches(result.patches_path), reference_job.patches)


def test_distributed_cluster_gives_the_same_patches(scene_config, reference_job, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster, get_task_stream

    import imagery_watch.pipeline

    monkeypatch.setattr(imagery_watch.pipeline, "SCAN_BATCH_MIN", 1)  # a batch per sheet: 4 per epoch
    config = scene_config.replace("job", out=tmp_path / "job").replace("processing", chunk_px=512)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with get_task_stream(client) as stream:
            result = run_detect(config, client=client)
    assert result.summary["chunks_computed"] == result.summary["chunks_total"] == 12
    group_tasks = [t for t in stream.data if "process_chunk_group" in t["key"]]
    assert len(group_tasks) >= 2  # blocks of neighbouring chunks, one task each
    assert len({t["worker"] for t in group_tasks}) == 2, "the chunk tasks did not run on both workers"
    # the workers opened and checked the sheets of both epochs (folders of 4 sheets), in batches
    assert len([t for t in stream.data if str(t["key"]).startswith("_scan_sheets-")]) == 8
    # each worker imported the code and loaded the kernels before its first chunk task
    warm = {t["worker"]: t["startstops"][0]["start"] for t in stream.data if str(t["key"]).startswith("_warm_up-")}
    assert set(warm) == {t["worker"] for t in group_tasks}
    for t in group_tasks:
        assert t["startstops"][0]["start"] >= warm[t["worker"]]
    assert_same_patches(result.patches, reference_job.patches)


def test_rerun_with_unchanged_inputs_recomputes_nothing(scene_config, reference_job, tmp_path):
    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    files = chunk_files(job)
    result = run_detect(scene_config.replace("job", out=job))
    s = result.summary
    assert s["chunks_reused"] == s["chunks_total"] == 4 and s["chunks_computed"] == 0
    assert chunk_files(job) == files, "a finished chunk file was rewritten"
    assert_same_patches(result.patches, reference_job.patches)


@pytest.mark.parametrize("change", ["sensitivity", "approved layer"])
def test_changed_config_does_not_reuse_stale_chunks(scene_config, reference_job, tmp_path, change):
    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    config = scene_config.replace("job", out=job)
    if change == "sensitivity":
        config = config.replace("detection", sensitivity=0.8)
    else:  # another layer of the same file
        config = config.replace("layers", approved=dataclasses.replace(config.layers.approved, layer="truth"))
    result = run_detect(config)
    assert result.summary["chunks_reused"] == 0
    assert result.summary["chunks_computed"] == result.summary["chunks_total"]


def test_identical_epochs_give_no_patches(scene_config, change_scene, tmp_path):
    config = scene_config.replace("job", out=tmp_path / "job").replace("inputs", after=change_scene / "before")
    result = run_detect(config)
    assert result.summary["shift_px"] == [0.0, 0.0]
    assert result.summary["patches"] == 0 and len(result.patches) == 0
    assert len(read_patches(result.patches_path)) == 0


def _cli() -> list:
    exe = Path(sys.executable).with_name("imagery-watch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "imagery_watch.cli"]


def test_job_killed_mid_run_resumes_from_its_finished_chunks(scene_config_path, reference_job, tmp_path):
    # a previous complete run in the folder: its patch file must stay whole whatever happens
    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    previous = (job / "patches.gpkg").read_bytes()
    old_dirs = set((job / "chunks").iterdir())
    cmd = _cli() + ["detect", str(scene_config_path), "--out", str(job), "--chunk-px", "128", "--workers", "1",
                    "-q"]
    log = open(tmp_path / "killed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            new_dirs = set((job / "chunks").iterdir()) - old_dirs
            if sum(1 for d in new_dirs for _ in d.glob("r*.npz")) >= 5:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before it could be killed: " + \
            (tmp_path / "killed.log").read_text(errors="replace")
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert (job / "patches.gpkg").read_bytes() == previous, "the previous patch file was touched"
    assert not list(job.glob(".*tmp*")), "a temporary patch file was left beside patches.gpkg"
    finished = {p: v for p, v in chunk_files(job).items() if p.parent not in old_dirs}
    total = 13 * 12  # 1600 x 1472 px in 128-px chunks: many small chunks, so the kill lands mid-job
    assert 5 <= len(finished) < total

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    rerun = subprocess.run(cmd[:-1], capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(finished)} of {total} chunks already done" in rerun.stderr
    assert f"({len(finished)} reused, {total - len(finished)} computed)" in rerun.stdout
    after = chunk_files(job)
    assert all(after[p] == v for p, v in finished.items()), "a finished chunk was recomputed"
    assert len([p for p in after if p.parent not in old_dirs]) == total
    assert not list(job.glob("chunks/*/.*tmp*")), "partial chunk files were left behind"
    assert_same_patches(read_patches(job / "patches.gpkg"), reference_job.patches)


def test_review_decisions_and_their_history_survive_a_rerun(scene_config, reference_job, tmp_path):
    from imagery_watch.review.store import LOG_TABLE, PatchStore

    assert REVIEW_TABLES == (LOG_TABLE,)
    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    ids = list(reference_job.patches["patch_id"])
    assert len(ids) >= 2
    store = PatchStore(job / "patches.gpkg")
    store.decide(ids[0], "illegal", reviewer="alice", version=0, note="no permit")
    store.decide(ids[0], "legal", reviewer="bob", version=1, note="permit found")
    store.decide(ids[1], "field_visit", reviewer="alice", version=0)
    # the history of a patch that an earlier run had and this one has not
    with store.connect() as con:
        con.execute(f"INSERT INTO {LOG_TABLE} (patch_id, reviewer, decided_at, from_status, to_status, note, "
                    "from_version, to_version) VALUES ('gone-0000001-0000001', 'carol', '2024-01-01T00:00:00.000Z', "
                    "'pending', 'false_alarm', NULL, 0, 1)")
    history = store.history()
    assert len(history) == 4

    config = scene_config.replace("job", out=job)
    for run in (1, 2):  # twice: the log is carried, never duplicated
        result = run_detect(config)
        assert result.summary["chunks_computed"] == 0
        assert result.summary["reviews_kept"] == 2
        again = PatchStore(job / "patches.gpkg")
        assert again.history() == history, f"decision history changed by re-run {run}"
        assert again.get(ids[0])["status"] == "legal" and again.get(ids[0])["version"] == 2
        assert again.get(ids[0])["reviewer"] == "bob" and again.get(ids[0])["note"] == "permit found"
        assert again.get(ids[1])["status"] == "field_visit"
    backups = sorted(job.glob("patches.reviewed-*.gpkg"))
    assert len(backups) == 2, "each re-run keeps its own copy of the reviewed file"
    for b in backups:
        with sqlite3.connect(b) as con:
            assert con.execute(f"SELECT count(*) FROM {LOG_TABLE}").fetchone()[0] == 4
    # the store goes on from the carried version; ids keep increasing
    decision = again.decide(ids[0], "illegal", reviewer="carol", version=2, note="permit revoked")
    assert decision.log_id == max(h["id"] for h in history) + 1
    assert [h["to_status"] for h in again.history(ids[0])] == ["illegal", "legal", "illegal"]


def test_patches_stored_in_small_batches_are_the_same(scene_config, reference_job, tmp_path, monkeypatch):
    """The merge streams its rows to the GeoPackage in batches: same file content, summary and
    carried-over reviews whatever the batch size."""
    from functools import partial

    from imagery_watch import pipeline, vectorise
    from imagery_watch.review.store import PatchStore

    monkeypatch.setattr(pipeline, "merge_pieces_in_batches",
                        partial(vectorise.merge_pieces_in_batches, batch_size=2))
    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    ids = list(reference_job.patches["patch_id"])
    assert len(ids) > 4, "too few patches for several batches"
    PatchStore(job / "patches.gpkg").decide(ids[-1], "illegal", reviewer="alice", version=0, note="no permit")
    result = run_detect(scene_config.replace("job", out=job))
    assert result.summary["chunks_computed"] == 0 and result.summary["reviews_kept"] == 1
    assert result.summary["per_rule"] == reference_job.summary["per_rule"]
    got, expected = read_patches(result.patches_path), reference_job.patches.copy()
    expected.loc[expected["patch_id"] == ids[-1], ["status", "reviewer", "note", "version"]] = \
        ["illegal", "alice", "no permit", 1]
    reviewed_at = got.loc[got["patch_id"] == ids[-1], "reviewed_at"]
    expected.loc[expected["patch_id"] == ids[-1], "reviewed_at"] = reviewed_at.values
    for c in expected.columns.drop("geometry"):
        assert list(got[c]) == list(expected[c]), c
    assert list(got.geometry.to_wkb()) == list(expected.geometry.to_wkb())


def test_chunk_memory_is_given_back_before_the_merge():
    """The malloc thresholds of the chunk tasks are set back, and set again by the next job."""
    from imagery_watch import pipeline

    pipeline._tune_malloc.cache_clear()
    pipeline.process_chunk_group([])  # what a chunk task does first
    assert pipeline._tune_malloc.cache_info().currsize == 1
    pipeline._give_back_memory()
    assert pipeline._tune_malloc.cache_info().currsize == 0
    pipeline._give_back_memory()  # harmless when nothing was tuned


def test_unreadable_previous_patch_file_is_kept_aside(scene_config, reference_job, tmp_path):
    job = shutil.copytree(reference_job.out_dir, tmp_path / "job")
    (job / "patches.gpkg").write_bytes(b"not a geopackage")
    result = run_detect(scene_config.replace("job", out=job))
    assert_same_patches(read_patches(result.patches_path), reference_job.patches)
    aside = list(job.glob("patches.unreadable-*.gpkg"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"not a geopackage"


def test_chunk_size_off_the_analysis_lattice_is_refused_before_work(scene_config, tmp_path):
    from imagery_watch.errors import ConfigError

    config = scene_config.replace("job", out=tmp_path / "job").replace("processing", chunk_px=1001)
    with pytest.raises(ConfigError, match=r"chunk_px = 1001: must be a multiple of 4.*use 1000"):
        run_detect(config)
    assert not list((tmp_path / "job").glob("chunks/*/*.npz"))


def test_chunk_tasks_are_grouped_in_blocks_of_neighbours():
    """Blocks of (columns, rows) chunks, raster order inside, every task once."""
    from types import SimpleNamespace

    from imagery_watch.pipeline import _chunk_groups

    tasks = [SimpleNamespace(row=i, col=j) for i in range(5) for j in range(7)]
    groups = _chunk_groups(tasks, (4, 2))
    assert sorted((t.row, t.col) for g in groups for t in g) == [(t.row, t.col) for t in tasks]
    assert [len(g) for g in groups] == [8, 6, 8, 6, 4, 3]
    for g in groups:
        assert [(t.row, t.col) for t in g] == sorted((t.row, t.col) for t in g)
        assert len({t.row // 2 for t in g}) == 1 and len({t.col // 4 for t in g}) == 1
    # resuming: finished chunks are left out, the rest keep their blocks
    assert [len(g) for g in _chunk_groups(tasks[9:], (4, 2))] == [2, 3, 8, 6, 4, 3]


def test_block_shape_follows_the_chunk_size_and_the_workers():
    """Blocks span GROUP_PX; they get fewer rows when the workers would otherwise go short."""
    from types import SimpleNamespace

    from imagery_watch.pipeline import GROUP_PX, GROUPS_PER_WORKER, _group_shape

    def tasks(rows, cols, px):
        return [SimpleNamespace(row=i, col=j, height=px, width=px) for i in range(rows) for j in range(cols)]

    cols, rows = GROUP_PX[0] // 2048, GROUP_PX[1] // 2048
    assert _group_shape(tasks(64, 64, 2048), 2) == (cols, rows)  # a city: full blocks
    assert _group_shape(tasks(64, 64, 4 * GROUP_PX[1]), 2) == (1, 1)  # chunks larger than a block
    # coarser pixels (analysis factor 1 or 2): full-resolution analysis arrays, narrower blocks
    assert _group_shape(tasks(64, 64, 2048), 2, factor=1) == (max(1, cols // 4), rows)
    assert _group_shape(tasks(64, 64, 2048), 2, factor=2) == (max(1, cols // 2), rows)
    small = tasks(8, 8, 2048)
    shape = _group_shape(small, 2)
    blocks = -(-8 // shape[0]) * -(-8 // shape[1])
    assert blocks >= GROUPS_PER_WORKER * 2 and shape[1] < rows
    assert _group_shape(small, 64)[1] == 1  # never fewer than one row


def _stream_config(scene_config, out, monkeypatch):
    """chunk_px 512 on one worker thread in blocks of several rows of chunks."""
    from imagery_watch import pipeline

    monkeypatch.setattr(pipeline, "GROUPS_PER_WORKER", 1)
    monkeypatch.setattr(pipeline, "STRIP_PX", 256)  # several strips per row of chunks
    return scene_config.replace("job", out=out).replace("processing", chunk_px=512, workers=1)


def test_blocks_of_several_rows_of_chunks_give_the_same_patches(scene_config, reference_job, tmp_path,
                                                                 monkeypatch):
    """Rows of chunks that take their halos from the rows read for the row above."""
    from imagery_watch import pipeline

    sizes = []
    real = pipeline.process_chunk_group
    monkeypatch.setattr(pipeline, "process_chunk_group", lambda tasks: sizes.append(
        len({t.row for t in tasks})) or real(tasks))
    result = run_detect(_stream_config(scene_config, tmp_path / "job", monkeypatch))
    assert max(sizes) >= 2  # the streamed rows were used
    assert_same_patches(result.patches, reference_job.patches)


def test_each_image_row_of_a_block_is_read_once(scene_config, tmp_path, monkeypatch):
    """Rows of chunks in a block share their halos: no grid row is read twice per epoch."""
    from imagery_watch.io.rasters import EpochReader

    reads = []
    real = EpochReader.read

    def read(self, row0, col0, height, width):
        reads.append((self.path, row0, height, col0, width))
        return real(self, row0, col0, height, width)

    monkeypatch.setattr(EpochReader, "read", read)
    config = _stream_config(scene_config, tmp_path / "job", monkeypatch)
    from imagery_watch import pipeline

    blocks = []
    real_group = pipeline.process_chunk_group

    def group(tasks):
        start = len(reads)
        out = real_group(tasks)
        blocks.append((tasks, reads[start:]))
        return out

    monkeypatch.setattr(pipeline, "process_chunk_group", group)
    run_detect(config)
    assert any(len({t.row for t in tasks}) >= 2 for tasks, _ in blocks)
    for tasks, block_reads in blocks:
        h = tasks[0].halo_px
        for path in {r[0] for r in block_reads}:
            rows = sorted((r0, r0 + hh) for p, r0, hh, _c, _w in block_reads if p == path)
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:])), rows  # contiguous, no row twice
            assert rows[0][0] == min(t.row0 for t in tasks) - h
            assert rows[-1][1] == max(t.row0 + t.height for t in tasks) + h
            assert max(r1 - r0 for r0, r1 in rows) <= 256
