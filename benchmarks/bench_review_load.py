"""Load check of the review server (issue 4), on loopback only.

Builds, once, a review job of 100,000 patches over the sample scene: the sheets of
``sample_tiles/`` (JPEG, 3 x 3 sheets of 2048 px) mosaicked as VRTs the way the detection
job does, the scene's after-epoch shift recorded in ``job.json`` as the job records its
measured one, and a patch store with the job's schema (random rectangles of 5-60 m over the
scene; seeded). Every run reviews a fresh copy of it with 20 reviewer accounts.

Then ``imagery-watch review serve`` runs as a real process on 127.0.0.1 and:

1. load: 20 concurrent clients (threads with keep-alive connections, each logged in as its own
   reviewer) send 50 requests each, mixed: queue (the JSON queue API and the HTML queue page,
   random filters and sorts, paging on with the cursor), chip (a random patch's before or
   after chip: nearly always rendered, not cached) and decision (on patches of its own, so
   none conflicts). Any exception or non-2xx answer is an error;
2. chips for a patch: with the server otherwise idle, both chips of 40 random patches,
   fetched one after the other (what opening a patch costs; target: median < 300 ms);
3. the store at 100,000 patches, in this process: first queue pages, a page 50,000 rows
   deep by keyset (what the app does) and by OFFSET (what it avoids), per-status summaries.

Prints a table and appends a dated section with the command to ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/bench_review_load.py
    .venv/bin/python benchmarks/bench_review_load.py --clients 4 --requests 10 --no-record

The job is cached under ``benchmarks/_work/review_load/`` (git-ignored); delete it to
rebuild.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import unquote, urlencode

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "_work" / "review_load"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SAMPLE = ROOT / "sample_tiles"
ENTRY_POINT = Path(sys.executable).parent / "imagery-watch"
RULES = ("construction_on_farmland", "construction_elsewhere", "afforestation", "demolition", "reclamation")
COUNTIES = ("Nanhu", "Xiuzhou", "Jiashan", "Haiyan", "Haining", "Pinghu", "Tongxiang")
PASSWORD = "bench-password-1"
CHIP_TARGET_MS = 300.0
#: share of each kind of request in the mix
MIX = {"queue": 0.4, "chip": 0.4, "decision": 0.2}


# -- the job ---------------------------------------------------------------------------------
def build_template(folder: Path, n_patches: int, seed: int) -> Path:
    """The job folder every run copies (built once; a ``.complete`` stamp marks it)."""
    import geopandas as gpd
    import rasterio
    import shapely

    from imagery_watch.classes import M2_PER_MU
    from imagery_watch.io.rasters import build_mosaic_vrt
    from imagery_watch.review.store import PatchStore

    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "work").mkdir(parents=True)
    vrts = {}
    for epoch in ("before", "after"):
        vrts[epoch] = folder / "work" / f"{epoch}.vrt"
        build_mosaic_vrt(SAMPLE / epoch, vrts[epoch])
    scene = json.loads((SAMPLE / "scene.json").read_text())
    with rasterio.open(vrts["before"]) as ds:
        left, bottom, right, top = ds.bounds
        grid = {"crs_wkt": ds.crs.to_wkt(), "transform": list(ds.transform)[:6], "width": ds.width,
                "height": ds.height}
    rng = np.random.default_rng(seed)
    side = rng.uniform(5, 60, n_patches)
    x = rng.uniform(left + 40, right - 100, n_patches)
    y = rng.uniform(bottom + 100, top - 40, n_patches)
    area = side * side * rng.uniform(0.6, 1.0, n_patches)
    gdf = gpd.GeoDataFrame({
        "patch_id": [f"b{i:06d}" for i in range(n_patches)],
        "rule": rng.choice(RULES, n_patches), "county": rng.choice(COUNTIES, n_patches),
        "area_m2": area, "area_mu": area / M2_PER_MU, "farmland_m2": area * rng.uniform(0, 1, n_patches),
        "approved_m2": np.where(rng.uniform(0, 1, n_patches) < 0.2, area, 0.0),
        "before_class": "low_vegetation", "after_class": "built", "score": np.round(rng.uniform(0, 1, n_patches), 4),
        "status": "pending", "reviewer": None, "reviewed_at": None, "note": None, "version": 0,
        "job_id": "bench", "epoch_before": "2023", "epoch_after": "2024",
    }, geometry=shapely.box(x, y - side, x + side * rng.uniform(0.6, 1.0, n_patches), y), crs="EPSG:4549")
    for col in ("reviewer", "reviewed_at", "note"):
        gdf[col] = gdf[col].astype(object)
    gdf.to_file(folder / "patches.gpkg", layer="patches", driver="GPKG", engine="pyogrio")
    shift = scene["distractors_applied"]["shift_px"]
    state = {"job": {"name": "review-load", "epoch_before": "2023", "epoch_after": "2024"},
             "inputs": {"before": str(SAMPLE / "before"), "after": str(SAMPLE / "after"),
                        "before_path": "work/before.vrt", "after_path": "work/after.vrt",
                        "bands": ["red", "green", "blue"]},
             "grid": grid, "fit": {"shift": {"dy": shift["dy"], "dx": shift["dx"], "blocks_used": 0,
                                             "spread_px": 0.0}},
             "completed": True}
    (folder / "job.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    PatchStore(folder / "patches.gpkg")  # queue indexes, once
    (folder / ".complete").write_text("")
    return folder


def fresh_run(template: Path, run: Path, clients: int) -> Path:
    """A copy of the template with no decisions and one reviewer account per client."""
    from imagery_watch.review.users import UserStore

    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(template, run, ignore=shutil.ignore_patterns(".complete"))
    users = UserStore(run / "review.sqlite")  # the server's own (default, strong) Argon2 parameters
    for k in range(clients):
        users.add(f"rev{k:02d}", PASSWORD, role="reviewer")
    return run


# -- the server ------------------------------------------------------------------------------
class Server:
    """``imagery-watch review serve RUN --port PORT`` (binds 127.0.0.1 by default)."""

    def __init__(self, job_dir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = open(job_dir / "serve.log", "wb")
        self.proc = subprocess.Popen([str(ENTRY_POINT), "review", "serve", str(job_dir), "--port", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {(job_dir / 'serve.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start within 60 s") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()


class Client:
    """One reviewer on one keep-alive connection."""

    def __init__(self, port: int, name: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookies: dict = {}
        status, _ = self.request("GET", "/login")
        body = urlencode({"username": name, "password": PASSWORD, "next": "/queue",
                          "login_token": self.cookies.get("iw_login", "")})
        status, _ = self.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 303 or "iw_session" not in self.cookies:
            raise RuntimeError(f"login of {name} failed ({status})")
        self.csrf = json.loads(self.request("GET", "/api/me")[1])["csrf_token"]

    def request(self, method: str, path: str, body=None, headers=None) -> tuple:
        h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        h.update(headers or {})
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        for header in resp.headers.get_all("set-cookie") or []:
            for k, morsel in SimpleCookie(header).items():
                self.cookies[k] = morsel.value
        return resp.status, data

    def close(self) -> None:
        self.conn.close()


# -- the load --------------------------------------------------------------------------------
def plan_requests(k: int, n: int, n_patches: int, seed: int) -> list:
    """The kinds of client ``k``'s requests, with the chip and decision targets drawn up front."""
    rng = np.random.default_rng(seed + 1000 + k)
    kinds = rng.choice(list(MIX), n, p=list(MIX.values()))
    plan, own = [], iter(range(k * 1000, (k + 1) * 1000))
    for kind in kinds:
        if kind == "chip":
            plan.append(("chip", f"b{rng.integers(n_patches):06d}", str(rng.choice(["before", "after"]))))
        elif kind == "decision":
            plan.append(("decision", f"b{next(own):06d}",
                         str(rng.choice(["illegal", "legal", "false_alarm", "field_visit"]))))
        else:
            plan.append(("queue", None, None))
    return plan


def queue_filter(rng) -> dict:
    choice = rng.integers(6)
    flt = [{}, {"status": "pending"}, {"county": str(rng.choice(COUNTIES))},
           {"rule": str(rng.choice(RULES)), "status": "pending"},
           {"score_min": 0.5, "score_max": 0.8}, {"area_min": 200, "area_max": 2000}][choice]
    return dict(flt, sort=str(rng.choice(["score_desc", "area_desc", "score_asc", "area_asc"])))


def run_client(client: Client, plan: list, seed: int, start: threading.Barrier, out: list) -> None:
    rng = np.random.default_rng(seed)
    flt, cursor = queue_filter(rng), None
    start.wait()
    for kind, patch_id, arg in plan:
        t0 = time.perf_counter()
        try:
            if kind == "queue":
                if cursor is None or rng.uniform() < 0.3:  # a new filter, or the next page of this one
                    flt, cursor = queue_filter(rng), None
                params = dict(flt, **({"after": cursor} if cursor else {}))
                if rng.uniform() < 0.5:
                    status, data = client.request("GET", "/api/patches?" + urlencode(dict(params, limit=50)))
                    cursor = json.loads(data)["next_cursor"] if status == 200 else None
                else:
                    status, data = client.request("GET", "/queue?" + urlencode(params))
                    m = re.search(rb'id="next-page" href="[^"]*after=([^"&]+)', data)
                    cursor = unquote(m.group(1).decode()) if m else None
            elif kind == "chip":
                status, data = client.request("GET", f"/api/patches/{patch_id}/chips/{arg}.jpg")
            else:
                body = json.dumps({"status": arg, "note": "load check", "version": 0})
                status, data = client.request("POST", f"/api/patches/{patch_id}/decision", body,
                                              {"Content-Type": "application/json", "X-CSRF-Token": client.csrf})
            error = None if 200 <= status < 300 else f"HTTP {status}: {data[:120]!r}"
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported, none is hidden
            error = f"{type(exc).__name__}: {exc}"
            client.conn.close()
        out.append((kind, time.perf_counter() - t0, error))


def run_load(port: int, clients: int, requests: int, n_patches: int, seed: int) -> tuple:
    sessions = [Client(port, f"rev{k:02d}") for k in range(clients)]
    for c in sessions:  # logins take a while (Argon2): start on fresh connections, not ones the server timed out
        c.conn.close()
    start = threading.Barrier(clients + 1)
    results = [[] for _ in range(clients)]
    threads = [threading.Thread(target=run_client, args=(c, plan_requests(k, requests, n_patches, seed), seed + k,
                                                         start, results[k]))
               for k, c in enumerate(sessions)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in sessions:
        c.close()
    return [r for rs in results for r in rs], wall


def chips_per_patch(port: int, n: int, n_patches: int, seed: int) -> list:
    """Seconds to fetch both chips of ``n`` random patches, one after the other, idle server."""
    client = Client(port, "rev00")
    rng = np.random.default_rng(seed + 7)
    out = []
    for i in rng.choice(n_patches, n, replace=False):
        t0 = time.perf_counter()
        for epoch in ("before", "after"):
            status, data = client.request("GET", f"/api/patches/b{i:06d}/chips/{epoch}.jpg")
            if status != 200 or not data.startswith(b"\xff\xd8"):
                raise RuntimeError(f"chip of b{i:06d} failed: {status}")
        out.append(time.perf_counter() - t0)
    client.close()
    return out


def store_timings(path: Path, repeat: int = 5) -> list:
    """(label, median seconds) of queue queries on the 100,000-patch store, in this process."""
    from imagery_watch.review.store import PatchFilter, PatchStore, encode_cursor

    store = PatchStore(path)

    def med(fn):
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    with contextlib.closing(sqlite3.connect(path)) as con:
        score, fid = con.execute("SELECT score, fid FROM patches ORDER BY score DESC, fid DESC "
                                 "LIMIT 1 OFFSET 49999").fetchone()
        n = con.execute("SELECT COUNT(*) FROM patches").fetchone()[0]
    cursor = encode_cursor(score, fid)
    cols = "fid, patch_id, rule, county, area_m2, area_mu, score, status, reviewer, version"
    offset_sql = f"SELECT {cols} FROM patches ORDER BY score DESC, fid DESC LIMIT 50 OFFSET 50000"

    def by_offset():
        with contextlib.closing(sqlite3.connect(path)) as con:
            con.execute(offset_sql).fetchall()

    pending_haining = PatchFilter(county="Haining", status="pending")
    return [
        (f"first page, no filter ({n:,} patches)", med(lambda: store.query(limit=50))),
        ("first page, county + status, by score", med(lambda: store.query(pending_haining, limit=50))),
        ("first page, score 0.5-0.8, by area", med(lambda: store.query(PatchFilter(score_min=0.5, score_max=0.8),
                                                                        sort="area_desc", limit=50))),
        ("page 50,000 rows deep, keyset (the app)", med(lambda: store.query(after=cursor, limit=50))),
        ("page 50,000 rows deep, OFFSET (avoided)", med(by_offset)),
        ("counts and mu per status, no filter", med(lambda: store.summary())),
        ("counts and mu per status, county + rule", med(lambda: store.summary(PatchFilter(county="Haining",
                                                                                          rule="demolition")))),
    ]


# -- report ----------------------------------------------------------------------------------
def _ms(values) -> tuple:
    if not values:
        return (0, float("nan"), float("nan"), float("nan"))
    a = np.asarray(values) * 1000
    return (len(a), float(np.median(a)), float(np.percentile(a, 95)), float(a.max()))


def make_table(load: list, wall: float, chips: list, store: list, clients: int, requests: int) -> tuple:
    rows = ["| measure | n | errors | median ms | p95 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for kind in (*MIX, "all"):
        sel = [r for r in load if kind in ("all", r[0])]
        n, med, p95, mx = _ms([r[1] for r in sel])
        errors = sum(1 for r in sel if r[2])
        label = f"load, {kind}" if kind != "all" else (
            f"load, all ({clients} clients x {requests}, {n / wall:.1f} req/s)")
        rows.append(f"| {label} | {n} | {errors} | {med:.0f} | {p95:.0f} | {mx:.0f} |")
    n, med, p95, mx = _ms(chips)
    rows.append(f"| chips for a patch (before + after, idle server) | {n} patches | 0 | {med:.0f} | {p95:.0f} "
                f"| {mx:.0f} |")
    for label, seconds in store:
        rows.append(f"| store: {label} (median of 5) | 5 | 0 | {seconds * 1000:.1f} | | |")
    errors = [r for r in load if r[2]]
    chip_median = float(np.median(chips) * 1000) if chips else float("nan")
    verdict = (f"Errors under load: {len(errors)} ({'pass' if not errors else 'FAIL'}); chips for a patch: median "
               f"{chip_median:.0f} ms against the {CHIP_TARGET_MS:.0f} ms target "
               f"({'pass' if chip_median < CHIP_TARGET_MS else 'FAIL'}).")
    return rows, verdict, errors


def command_line() -> str:
    """This run's command, relative to the repository (how to rerun it)."""
    return shlex.join([os.path.relpath(p, ROOT) for p in (sys.executable, sys.argv[0])] + sys.argv[1:])


def append_results(rows: list, verdict: str, args, setup_s: float) -> None:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip() or "?"
    except OSError:
        commit = "?"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "", f"## Review server under load (bench_review_load.py), {now}", "",
        f"Command: `{command_line()}` (commit {commit}). `imagery-watch review serve` on 127.0.0.1, one "
        f"process; {args.patches:,} patches over the sample scene (VRTs of its JPEG sheets, after-epoch shift "
        f"applied); {args.clients} clients x {args.requests} requests, mix {MIX}; chips 512 px JPEG. "
        f"Job build and copy {setup_s:.0f} s (not measured).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()}; load average {args.load_before:.1f} just before the run (other work shares the "
        "cores: latencies include waiting for them).",
        "", *rows, "", verdict, "",
    ]
    with open(RESULTS, "a", encoding="utf-8") as fh:
        if fh.tell() == 0:
            fh.write("# Benchmark results (each run appends a dated section)\n")
        fh.write("\n".join(lines))
    print(f"appended to {RESULTS}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=50, help="requests per client")
    ap.add_argument("--patches", type=int, default=100_000, help="patches in the store")
    ap.add_argument("--chip-patches", type=int, default=40, help="patches whose chips are timed on an idle server")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if not ENTRY_POINT.exists():
        ap.error(f"{ENTRY_POINT} is missing: install the package (make install-test)")

    args.load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    template = build_template(CACHE / f"template-{args.patches}-seed{args.seed}", args.patches, args.seed)
    run = fresh_run(template, CACHE / "run", args.clients)
    setup_s = time.perf_counter() - t0
    server = Server(run)
    try:
        load, wall = run_load(server.port, args.clients, args.requests, args.patches, args.seed)
        chips = chips_per_patch(server.port, args.chip_patches, args.patches, args.seed)
    finally:
        server.stop()
    store = store_timings(run / "patches.gpkg")
    rows, verdict, errors = make_table(load, wall, chips, store, args.clients, args.requests)
    print("\n".join(rows))
    print(verdict)
    for kind, _s, error in errors[:10]:
        print(f"  {kind}: {error}")
    if not args.no_record:
        append_results(rows, verdict, args, setup_s)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
