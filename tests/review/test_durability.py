"""A real ``imagery-watch review serve`` process killed with SIGKILL loses no acknowledged decision."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from shapely.geometry import box

from imagery_watch.review.store import PatchStore
from imagery_watch.review.users import UserStore

from review_fixtures import FAST_HASHER, ORIGIN, PASSWORDS, make_patches, write_job

BURST = 200
KILL_AFTER_ACKS = 100
CLIENTS = 4
ENTRY_POINT = Path(sys.executable).parent / "imagery-watch"


@pytest.fixture()
def burst_job(template_job, tmp_path):
    """A job folder with more patches than the burst (small squares on the template's mosaics)."""
    inputs = json.loads((template_job / "job.json").read_text())["inputs"]
    x0, y0 = ORIGIN
    polys = [box(x0 + 4 + 6 * (i % 20), y0 - 4 - 6 * (i // 20), x0 + 8 + 6 * (i % 20), y0 - 8 - 6 * (i // 20))
             for i in range(BURST + 20)]
    root = write_job(tmp_path / "job", {"before": inputs["before_path"], "after": inputs["after_path"]},
                     make_patches(polys, ["Nanhu", "Pinghu"]))
    UserStore(root / "review.sqlite", hasher=FAST_HASHER).add("alice", PASSWORDS["alice"], role="reviewer")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``imagery-watch review serve JOB_DIR --port PORT`` as a child process."""

    def __init__(self, job_dir: Path, log_path: Path):
        assert ENTRY_POINT.exists(), f"{ENTRY_POINT}: the console script is not installed; pip install -e .[test]"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen([str(ENTRY_POINT), "review", "serve", str(job_dir), "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"server exited: {log_path.read_text()}"
            try:
                if httpx.get(f"{self.base}/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server did not start: {log_path.read_text()}"
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        code = self.proc.wait(30)
        self._log.close()
        return code


def _login(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    client.get("/login")
    r = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"], "next": "/queue",
                                    "login_token": client.cookies.get("iw_login") or ""})
    assert r.status_code == 303 and r.headers["location"] == "/queue", r.status_code
    client.headers["X-CSRF-Token"] = client.get("/api/me").json()["csrf_token"]
    return client


def test_sigkill_during_a_burst_loses_no_acknowledged_decision(burst_job, tmp_path):
    server = Server(burst_job, tmp_path / "serve1.log")
    try:
        start_message = server.log_path.read_text()
        assert f"http://127.0.0.1:{server.port}/" in start_message and "this computer only" in start_message
        session = _login(server.base)
        cookies, csrf = dict(session.cookies), session.headers["X-CSRF-Token"]
        session.close()

        acked, failed, lock = {}, [], threading.Lock()
        killed = threading.Event()
        notes = {f"p{i:04d}": f"burst note {i}" for i in range(BURST)}
        todo = list(notes)

        def reviewer(ids):
            with httpx.Client(base_url=server.base, cookies=cookies, headers={"X-CSRF-Token": csrf},
                              timeout=30) as client:
                for pid in ids:
                    try:
                        r = client.post(f"/api/patches/{pid}/decision",
                                        json={"status": "illegal", "note": notes[pid], "version": 0})
                    except httpx.TransportError as exc:
                        with lock:
                            failed.append((pid, type(exc).__name__))
                        continue
                    with lock:
                        if 200 <= r.status_code < 300:
                            acked[pid] = r.json()["log_id"]
                            if len(acked) >= KILL_AFTER_ACKS and not killed.is_set():
                                killed.set()
                                os.kill(server.proc.pid, signal.SIGKILL)  # mid-burst, other requests in flight
                        else:
                            failed.append((pid, r.status_code))

        threads = [threading.Thread(target=reviewer, args=(todo[k::CLIENTS],)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert killed.is_set()
        assert server.stop() == -signal.SIGKILL
    finally:
        server.stop(signal.SIGKILL)

    # the kill happened during the burst: some decisions were acknowledged, the rest never were
    assert KILL_AFTER_ACKS <= len(acked) < BURST
    assert len(acked) + len(failed) == BURST
    assert all(not isinstance(why, int) for _pid, why in failed), failed  # no error answers, only a dead server

    # the file is intact, and each decision is all there or not at all (patch row and log entry together)
    with contextlib.closing(sqlite3.connect(burst_job / "patches.gpkg")) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = PatchStore(burst_job / "patches.gpkg")
    log = {h["patch_id"]: h for h in store.history()}
    decided = {p["patch_id"]: p for p in store.iter_patches(geometry=False) if p["version"] > 0}
    assert set(log) == set(decided)

    # restart: every acknowledged decision is served, with its log entry
    server = Server(burst_job, tmp_path / "serve2.log")
    try:
        client = _login(server.base)
        summary = client.get("/api/summary").json()
        assert summary["illegal"]["count"] == len(decided) >= len(acked)
        for pid, log_id in acked.items():
            patch = client.get(f"/api/patches/{pid}").json()
            assert (patch["status"], patch["reviewer"], patch["note"], patch["version"]) == (
                "illegal", "alice", notes[pid], 1), pid
            assert [(h["id"], h["to_status"]) for h in patch["history"]] == [(log_id, "illegal")]
        # a patch whose request never got an answer may have been saved or not, but never half
        for pid, _why in failed:
            patch = client.get(f"/api/patches/{pid}").json()
            assert (patch["status"], patch["version"], len(patch["history"])) in (
                ("pending", 0, 0), ("illegal", 1, 1))
        client.close()
    finally:
        # a clean stop: uvicorn shuts down, then re-raises the SIGTERM it caught
        assert server.stop() in (0, -signal.SIGTERM)
