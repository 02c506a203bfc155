"""City-scale throughput and memory of the detection job (issue 6).

Builds, for each size, a virtual city mosaic of both epochs (``city_mosaic.py``: one small
generated scene of JPEG-YCbCr sheets placed many times side by side by a GDAL VRT, so the
mosaic costs little disk but every chunk is really read and decoded; farmland, approved land
and county layers to match), then runs the real ``imagery-watch detect`` in a fresh job folder
(subprocess) and reports, in one run:

- ground megapixels per second end to end (grid width x height; both epochs processed);
- the decode floor: reading both epochs (data + mask, the same chunk windows, the same number
  of threads, lock-free, GDAL_CACHEMAX bounded) and nothing else; the ratio of the two;
- seconds per stage (from the job's ``summary.json``);
- peak resident memory of the whole process tree (psutil, every 0.2 s);
- the projected time for a 105-gigapixel epoch pair on this machine and per added core;
- OTB's MultivariateAlterationDetector speed on an 8192 x 8192 pair, when installed;
- with ``--workers-scaling``: the same job on a ``dask.distributed`` LocalCluster of 1 and of 2
  single-threaded workers (``--scheduler ADDRESS``), and the speed-up;
- with ``--profile`` (``city_profile.py``): one in-process run (1 worker thread) timed per
  step of a chunk, with a cProfile table of the hottest functions.

It prints a table and appends a dated section to ``benchmarks/RESULTS.md`` (``--no-append``
for trial runs)::

    .venv/bin/python benchmarks/bench_city.py                       # default sizes
    .venv/bin/python benchmarks/bench_city.py --sizes 1,4,16 --workers-scaling
    .venv/bin/python benchmarks/bench_city.py --sizes 1 --profile --no-append

Generated files live in ``benchmarks/.cache/`` (git-ignored); delete it to regenerate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from city_mosaic import ROOT, City, build_city, ensure_tile, write_config
from city_profile import format_profile, profile_run

CACHE = ROOT / "benchmarks" / ".cache"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
FULL_CITY_GPX = 105.0
TARGETS = {"mpx_s": 25.0, "floor_ratio": 1 / 3, "mem_ratio": 1.2, "mem_per_worker_gib": 2.0,
           "scaling": 1.7, "city_min": 75.0, "otb_ratio": 5.0}
OTB_APP = "otbcli_MultivariateAlterationDetector"
OTB_PX = 8192


# --------------------------------------------------------------------------- measuring


def _rss(procs, cpu: dict | None = None) -> tuple:
    """(sum, largest single) RSS in bytes of ``procs`` and all their descendants.

    ``cpu`` (pid -> [first, last] user+system CPU seconds) is updated for every process seen.
    """
    seen, total, largest = set(), 0, 0
    for root in procs:
        try:
            tree = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                rss = p.memory_info().rss
                if cpu is not None:
                    t = p.cpu_times()
                    cpu.setdefault(p.pid, [t.user + t.system, 0.0])[1] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            largest = max(largest, rss)
    return total, largest


def run_measured(cmd: list, *, also: tuple = (), interval_s: float = 0.2) -> dict:
    """Run ``cmd`` and sample the RSS of its process tree (and of the trees in ``also``).

    Also returns the CPU seconds (user + system) the trees used while ``cmd`` ran: on a
    shared machine wall time depends on the neighbours, CPU time much less.
    """
    import resource

    cpu: dict = {}
    _rss(tuple(also), cpu)  # baseline of the long-lived processes (cluster workers)
    for v in cpu.values():
        v[1] = v[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    peak = largest = 0
    while proc.poll() is None:
        total, big = _rss((proc,) + tuple(also), cpu)
        peak, largest = max(peak, total), max(largest, big)
        time.sleep(interval_s)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    _rss(tuple(also), cpu)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    reader.join(timeout=5)
    # the job process itself, exactly, from the kernel once reaped; the others as last sampled
    own = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    others = sum(last - first for pid, (first, last) in cpu.items() if pid != proc.pid)
    return {"rc": rc, "wall_s": wall, "peak_rss": peak, "largest_rss": largest, "cpu_s": own + others,
            "cpu_job_process_s": own, "cpu_other_s": sorted((last - first for pid, (first, last) in cpu.items()
                                                             if pid != proc.pid), reverse=True),
            "output": "".join(lines)}


def _chunk_windows(width: int, height: int, chunk_px: int) -> list:
    return [(r0, c0, min(chunk_px, height - r0), min(chunk_px, width - c0))
            for r0 in range(0, height, chunk_px) for c0 in range(0, width, chunk_px)]


def vrt_open_ms(path: Path, repeat: int = 5) -> float:
    """Median time to open the mosaic VRT (what every chunk read pays when it opens the file)."""
    import rasterio

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with rasterio.open(path) as ds:
            ds.block_shapes  # noqa: B018 - touch the dataset
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def decode_floor(city: City, *, chunk_px: int, workers: int, max_chunks: int, cachemax_mb: int,
                 halo_px: int = 0) -> dict:
    """Read both epochs (R, G, B and mask) over the job's chunk windows and nothing else.

    Dask's threaded scheduler with ``workers`` threads; each thread opens each VRT once
    (no lock, GDAL_CACHEMAX bounded). At most ``max_chunks`` windows, evenly spread.
    With ``halo_px`` the windows grow by the job's halo (clipped to the mosaic), as the job
    reads them; speeds are still per ground pixel of the chunk cores.
    """
    import dask
    import rasterio

    windows = _chunk_windows(city.width, city.height, chunk_px)
    if len(windows) > max_chunks:
        windows = [windows[i] for i in np.unique(np.linspace(0, len(windows) - 1, max_chunks).round().astype(int))]
    px = sum(h * w for _, _, h, w in windows)
    windows = [(max(r0 - halo_px, 0), max(c0 - halo_px, 0), min(r0 + h + halo_px, city.height) - max(r0 - halo_px, 0),
                min(c0 + w + halo_px, city.width) - max(c0 - halo_px, 0)) for r0, c0, h, w in windows]
    local, opened, guard = threading.local(), [], threading.Lock()
    env = dict(GDAL_CACHEMAX=cachemax_mb * 1024 * 1024, GDAL_DISABLE_READDIR_ON_OPEN="TRUE")  # as the job

    def read(win) -> int:
        r0, c0, h, w = win
        with rasterio.Env(**env):
            if not hasattr(local, "ds"):
                local.ds = [rasterio.open(city.before), rasterio.open(city.after)]
                with guard:
                    opened.extend(local.ds)
            n = 0
            for ds in local.ds:
                window = ((r0, r0 + h), (c0, c0 + w))
                n += ds.read([1, 2, 3], window=window).size + ds.dataset_mask(window=window).size
        return n

    import resource

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    dask.compute(*[dask.delayed(read)(w) for w in windows], scheduler="threads", num_workers=workers)
    secs = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    for ds in opened:
        ds.close()
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {"mpx_s": px / 1e6 / secs, "chunks": len(windows), "seconds": secs, "cpu_s": cpu,
            "mpx_cpu_s": px / 1e6 / cpu}


def run_job(city: City, work: Path, *, chunk_px: int, workers: int, scheduler: str = "",
            also: tuple = (), tag: str = "threads") -> dict:
    """``imagery-watch detect`` from an empty job folder; figures from summary.json."""
    exe = Path(sys.executable).with_name("imagery-watch")
    job = work / f"job-{city.copies[0]}x{city.copies[1]}-{tag}"
    shutil.rmtree(job, ignore_errors=True)
    config = write_config(city, job)
    cmd = [str(exe), "detect", str(config), "--out", str(job), "--chunk-px", str(chunk_px), "--workers", str(workers),
           "-q"]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    load0 = os.getloadavg()[0]
    res = run_measured(cmd, also=also)
    res["load"] = (load0, os.getloadavg()[0])
    if res["rc"] != 0:
        raise SystemExit(f"detect failed (exit {res['rc']}): {shlex.join(cmd)}\n{res['output'][-4000:]}")
    res["summary"] = json.loads((job / "summary.json").read_text())
    res["halo_px"] = json.loads((job / "job.json").read_text()).get("halo_px", 0)
    res["cmd"] = shlex.join(cmd)
    return res


class LocalCluster:
    """A dask.distributed LocalCluster of ``n`` single-threaded worker processes, in a subprocess."""

    SCRIPT = ("import sys\nfrom distributed import LocalCluster\n"
              "c = LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True, "
              "dashboard_address=None, memory_limit=None)\n"
              "c.wait_for_workers(int(sys.argv[1]))\nprint(c.scheduler_address, flush=True)\n"
              "sys.stdin.read()\nc.close()\n")

    def __init__(self, n: int):
        self.proc = psutil.Popen([sys.executable, "-c", self.SCRIPT, str(n)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        self.address = self.proc.stdout.readline().strip()
        if not self.address.startswith("tcp://"):
            self.close()
            raise SystemExit(f"LocalCluster of {n} workers did not start (got {self.address!r})")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


def run_otb(city: City, work: Path, ours_mpx_s: float) -> str:
    """OTB MAD on an 8192 x 8192 window of the mosaics, if OTB is installed."""
    if shutil.which(OTB_APP) is None:
        return (f"{OTB_APP} is not on PATH (Debian package otb-bin); OTB speed not measured, "
                "so the >= 5x OTB target is not checked in this run")
    import rasterio
    from rasterio.windows import Window

    paths = []
    for epoch in ("before", "after"):  # an 8192 x 8192 window of each mosaic as a plain GeoTIFF
        dest = work / f"otb-{epoch}.tif"
        with rasterio.open(getattr(city, epoch)) as ds:
            n = min(OTB_PX, ds.width, ds.height)
            win = Window(0, 0, n, n)
            profile = dict(driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs=ds.crs,
                           transform=ds.window_transform(win), tiled=True, compress="deflate")
            with rasterio.open(dest, "w", **profile) as dst:
                dst.write(ds.read([1, 2, 3], window=win))
        paths.append(dest)
    out = work / "otb-mad.tif"
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="2", OTB_MAX_RAM_HINT="256")
    t0 = time.perf_counter()
    proc = subprocess.run([OTB_APP, "-in1", str(paths[0]), "-in2", str(paths[1]), "-out", str(out)],
                          env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        return f"{OTB_APP} failed (exit {proc.returncode}): {proc.stderr[-500:]}"
    otb = n * n / 1e6 / secs
    return (f"OTB MAD on {n} x {n}: {secs:.1f} s, {otb:.1f} ground Mpx/s; ours / OTB = "
            f"{ours_mpx_s / otb:.1f}x (target >= {TARGETS['otb_ratio']:.0f}x: "
            f"{'met' if ours_mpx_s / otb >= TARGETS['otb_ratio'] else 'NOT met'})")


# --------------------------------------------------------------------------- report


def _gib(n: float) -> float:
    return n / 2 ** 30


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def size_row(city: City, run: dict, floor: dict, open_ms: float, workers: int) -> dict:
    s = run["summary"]
    secs = s.get("seconds", {})
    stage = s.get("stage_seconds", {})
    total = secs.get("total", run["wall_s"])
    mpx_s = city.width * city.height / 1e6 / run["wall_s"]
    return {
        "gpx": city.gpx, "grid": f"{city.width} x {city.height}", "chunks": s.get("chunks_total"),
        "wall_s": run["wall_s"], "job_s": total, "mpx_s": mpx_s, "floor": floor["mpx_s"],
        "floor_chunks": floor["chunks"], "ratio": mpx_s / floor["mpx_s"], "fit_s": secs.get("fit", float("nan")),
        "chunks_s": secs.get("chunks", float("nan")), "merge_s": secs.get("merge_store", float("nan")),
        "read_s": stage.get("read_s", float("nan")), "detect_s": stage.get("detect_s", float("nan")),
        "vec_s": stage.get("vectorise_s", float("nan")), "peak": run["peak_rss"],
        "per_worker": run["peak_rss"] / workers, "patches": s.get("patches"), "open_ms": open_ms,
        "load": run["load"], "cpu_s": run["cpu_s"], "mpx_cpu_s": city.width * city.height / 1e6 / run["cpu_s"],
        "floor_cpu": floor["mpx_cpu_s"],
    }


def format_sizes(rows: list) -> str:
    head = ("| mosaic Gpx/epoch | grid px | chunks | wall s | ground Mpx/s | decode floor Mpx/s (chunks read) "
            "| ratio | floor read with the job's halo: Mpx/s, Mpx per CPU-s (halo px) | CPU s "
            "| ground Mpx per CPU-s: job / floor | ratio by CPU | fit / chunk tasks / merge+store s "
            "| read / detect / vectorise, thread-s | peak RSS GiB (per worker) | patches | VRT open ms "
            "| load avg before/after |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['gpx']:.2f} | {r['grid']} | {r['chunks']} | {r['wall_s']:.0f} | {r['mpx_s']:.1f} | "
            f"{r['floor']:.1f} ({r['floor_chunks']}) | {r['ratio']:.2f} | "
            f"{r['halo_floor']:.1f}, {r['halo_floor_cpu']:.1f} ({r['halo_px']}) | {r['cpu_s']:.0f} | "
            f"{r['mpx_cpu_s']:.2f} / {r['floor_cpu']:.1f} | {r['mpx_cpu_s'] / r['floor_cpu']:.2f} | "
            f"{r['fit_s']:.1f} / {r['chunks_s']:.0f} / {r['merge_s']:.1f} | "
            f"{r['read_s']:.0f} / {r['detect_s']:.0f} / {r['vec_s']:.0f} | "
            f"{_gib(r['peak']):.2f} ({_gib(r['per_worker']):.2f}) | {r['patches']} | {r['open_ms']:.0f} | "
            f"{r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    return "\n".join(lines)


def projections(rows: list, *, workers: int, scaling: dict | None) -> tuple:
    """Projected minutes for 105 Gpx from the largest size's speed, and per core count.

    Each doubling of the cores multiplies the speed by the measured 2-vs-1 worker speed-up
    (``--workers-scaling``), or by 2 when it was not measured.
    """
    rate = rows[-1]["mpx_s"]
    gain = scaling["cpu_speedup"] if scaling else 2.0
    minutes = {n: FULL_CITY_GPX * 1e3 / (rate * gain ** math.log2(n / workers)) / 60 for n in range(1, 17)}
    lines = [f"Projected full city ({FULL_CITY_GPX:.0f} Gpx per epoch) from the {rows[-1]['gpx']:.2f} Gpx run: "
             f"{minutes[workers]:.0f} min on this machine ({workers} workers, {rate:.1f} ground Mpx/s)."]
    basis = (f"each doubling of cores x{gain:.2f}, the 2-vs-1 worker speed-up on CPU basis" if scaling
             else "linear scaling assumed; --workers-scaling measures it")
    lines.append(f"Per core count ({basis}): " + ", ".join(f"{n} cores {minutes[n]:.0f} min" for n in (1, 2, 4, 8, 16))
                 + f"; one core more than {workers} saves {minutes[workers] - minutes[workers + 1]:.0f} min.")
    cpu_rate = rows[-1]["mpx_cpu_s"] * workers
    lines.append(f"On {workers} cores of our own (CPU-time basis: {rows[-1]['mpx_cpu_s']:.2f} ground Mpx per "
                 f"CPU-second x {workers}, if the workers were never starved): {cpu_rate:.1f} Mpx/s, "
                 f"{FULL_CITY_GPX * 1e3 / cpu_rate / 60:.0f} min for the full city.")
    return minutes[workers], "\n".join(lines)


def targets(rows: list, *, workers: int, city_min: float, scaling: dict | None) -> list:
    first, last = rows[0], rows[-1]
    out = [
        (f">= {TARGETS['mpx_s']:.0f} ground Mpx/s end to end on {workers} cores (largest size)",
         f"{last['mpx_s']:.1f} (CPU basis: {last['mpx_cpu_s'] * workers:.1f})", last["mpx_s"] >= TARGETS["mpx_s"]),
        (">= 1/3 of the decode floor (largest size)",
         f"{last['ratio']:.2f} (by CPU: {last['mpx_cpu_s'] / last['floor_cpu']:.2f})",
         last["ratio"] >= TARGETS["floor_ratio"]),
    ]
    if len(rows) > 1 and last["gpx"] >= 4 * first["gpx"]:
        ratio = last["peak"] / first["peak"]
        out.append((f"peak memory at {last['gpx']:.1f} Gpx <= {TARGETS['mem_ratio']}x the peak at "
                    f"{first['gpx']:.1f} Gpx", f"{ratio:.2f}x", ratio <= TARGETS["mem_ratio"]))
    else:
        out.append(("peak memory flat with size (needs two sizes, the largest >= 4x the smallest)", "-", None))
    worst = max(r["per_worker"] for r in rows)
    out.append((f"< {TARGETS['mem_per_worker_gib']:.0f} GiB per worker (process-tree peak / workers)",
                f"{_gib(worst):.2f} GiB", _gib(worst) < TARGETS["mem_per_worker_gib"]))
    if scaling:
        out.append((f"2 workers >= {TARGETS['scaling']}x 1 worker (LocalCluster, median of "
                    f"{len(scaling['runs'])})", f"{scaling['speedup']:.2f}x (CPU basis: {scaling['cpu_speedup']:.2f}x)",
                    scaling["speedup"] >= TARGETS["scaling"]))
    else:
        out.append(("2 workers >= 1.7x 1 worker (run --workers-scaling)", "-", None))
    out.append((f"projected full city < {TARGETS['city_min']:.0f} min", f"{city_min:.0f} min",
                city_min < TARGETS["city_min"]))
    return out


def format_targets(items: list) -> str:
    lines = ["| target | measured | |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {_met(ok)} |" for name, value, ok in items]
    return "\n".join(lines)


def _scaling_run(city: City, work: Path, n: int, *, chunk_px: int) -> dict:
    """The job once on a fresh LocalCluster of ``n`` single-threaded workers (``--scheduler``)."""
    cluster = LocalCluster(n)
    try:
        run = run_job(city, work, chunk_px=chunk_px, workers=n, scheduler=cluster.address,
                      also=(cluster.proc,), tag=f"cluster{n}")
    finally:
        cluster.close()
    workers_cpu = run["cpu_other_s"][:n]  # the busiest processes of the cluster are its workers
    out = {"wall_s": run["wall_s"], "mpx_s": city.width * city.height / 1e6 / run["wall_s"],
           "chunks_s": run["summary"].get("seconds", {}).get("chunks", float("nan")),
           "largest_rss": run["largest_rss"], "peak": run["peak_rss"], "load": run["load"],
           "cpu_s": run["cpu_s"], "client_cpu_s": run["cpu_job_process_s"], "workers_cpu_s": workers_cpu,
           # wall time if every process had a core of its own: client's serial part, then the busiest worker
           "cpu_basis_s": run["cpu_job_process_s"] + max(workers_cpu)}
    print(f"  LocalCluster {n} worker(s): {run['wall_s']:.0f} s, {out['mpx_s']:.1f} Mpx/s, "
          f"worker CPU s {', '.join(f'{c:.0f}' for c in workers_cpu)}, "
          f"largest process {_gib(run['largest_rss']):.2f} GiB", flush=True)
    return out


def workers_scaling(city: City, work: Path, *, chunk_px: int, repeats: int = 3) -> dict:
    """The job on a LocalCluster of 1 and of 2 single-threaded workers, ``repeats`` times.

    The runs alternate 1, 2 | 2, 1 | 1, 2 ... so that a slow spell of the shared machine
    falls on both worker counts; each repeat gives one speed-up (the pair of runs next to
    each other), and the figures quoted are their medians.
    """
    runs = []
    for rep in range(repeats):
        pair = {}
        for n in ((1, 2) if rep % 2 == 0 else (2, 1)):
            pair[n] = _scaling_run(city, work, n, chunk_px=chunk_px)
        pair["speedup"] = pair[2]["mpx_s"] / pair[1]["mpx_s"]
        pair["chunk_speedup"] = pair[1]["chunks_s"] / pair[2]["chunks_s"]
        pair["cpu_speedup"] = pair[1]["cpu_basis_s"] / pair[2]["cpu_basis_s"]
        print(f"  repeat {rep + 1} of {repeats}: 2 vs 1 worker {pair['speedup']:.2f}x end to end", flush=True)
        runs.append(pair)
    out = {"runs": runs}
    for key in ("speedup", "chunk_speedup", "cpu_speedup"):
        out[key] = float(np.median([p[key] for p in runs]))
    return out


def format_scaling(sc: dict, city: City) -> str:
    runs = sc["runs"]
    lines = [f"dask.distributed LocalCluster (1 thread per worker process, `--scheduler ADDRESS`), "
             f"{city.gpx:.2f} Gpx, {len(runs)} repeats (worker counts alternate 1, 2 | 2, 1 | ...; a fresh "
             "cluster each run):", "",
             "| repeat | workers | end to end s | ground Mpx/s | chunk tasks s | CPU s: all processes / job process / "
             "each worker | largest process GiB | load avg before/after | speed-up 2 vs 1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, pair in enumerate(runs, 1):
        for n in (1, 2):
            r = pair[n]
            lines.append(f"| {i} | {n} | {r['wall_s']:.0f} | {r['mpx_s']:.1f} | {r['chunks_s']:.0f} | "
                         f"{r['cpu_s']:.0f} / {r['client_cpu_s']:.0f} / "
                         f"{', '.join(f'{c:.0f}' for c in r['workers_cpu_s'])} | {_gib(r['largest_rss']):.2f} | "
                         f"{r['load'][0]:.1f} / {r['load'][1]:.1f} | "
                         + (f"{pair['speedup']:.2f}x |" if n == 2 else "|"))
    each = ", ".join(f"{p['speedup']:.2f}x" for p in runs)
    lines.append(f"\nSpeed-up 2 vs 1 worker, median of {len(runs)}: {sc['speedup']:.2f}x end to end ({each}); "
                 f"{sc['chunk_speedup']:.2f}x on the chunk tasks alone; on CPU basis (job process's CPU + busiest "
                 f"worker's CPU, as if each had a core of its own) {sc['cpu_speedup']:.2f}x.")
    return "\n".join(lines)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def append_results(text: str) -> None:
    """Append a section (never rewrite: other benchmarks append to the same file)."""
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write("\n" + text.rstrip() + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.25,1", help="mosaic sizes in gigapixels per epoch, comma-separated "
                    "(default 0.25,1: the largest 4x the smallest for the memory check, about 10 minutes here)")
    ap.add_argument("--workers", type=int, default=2, help="local worker threads (default 2)")
    ap.add_argument("--chunk-px", type=int, default=2048, help="chunk side in pixels (default 2048)")
    ap.add_argument("--seed", type=int, default=6, help="generator seed of the repeated scene")
    ap.add_argument("--tile-px", type=int, default=4096, help="side of the repeated scene (multiple of 2048)")
    ap.add_argument("--floor-chunks", type=int, default=256, help="chunk windows read for the decode floor, "
                    "evenly spread (default 256: 1 Gpx at 2048 px)")
    ap.add_argument("--gdal-cachemax-mb", type=int, default=256, help="GDAL block cache for the decode floor")
    ap.add_argument("--workers-scaling", action="store_true", help="also run on a dask.distributed LocalCluster "
                    "of 1 and 2 single-threaded workers (on the smallest size) and report the speed-up")
    ap.add_argument("--scaling-gpx", type=float, help="with --workers-scaling: mosaic size (default: the smallest "
                    "of --sizes)")
    ap.add_argument("--scaling-repeats", type=int, default=3, help="with --workers-scaling: runs of each worker "
                    "count, alternating; the speed-up quoted is the median (default 3)")
    ap.add_argument("--profile", action="store_true", help="also run the job in-process with 1 worker thread "
                    "and time every step of a chunk")
    ap.add_argument("--profile-gpx", type=float, default=1.0, help="with --profile: mosaic size to profile on "
                    "(default 1 Gpx)")
    ap.add_argument("--profile-every", type=int, default=4, help="with --profile: every Nth task (a block of "
                    "neighbouring chunks) runs under cProfile for the function table (0: none)")
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"generated files (default {CACHE})")
    ap.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return ap.parse_args(argv)


def measure_size(city: City, work: Path, args) -> dict:
    """Decode floor, the job end to end, and the floor read with the job's halo, on one mosaic."""
    open_ms = vrt_open_ms(city.before)
    print(f"[{city.gpx:.2f} Gpx] decode floor ...", flush=True)
    floor_args = dict(chunk_px=args.chunk_px, workers=args.workers, max_chunks=args.floor_chunks,
                      cachemax_mb=args.gdal_cachemax_mb)
    floor = decode_floor(city, **floor_args)
    print(f"  {floor['mpx_s']:.1f} ground Mpx/s over {floor['chunks']} chunks; VRT open {open_ms:.0f} ms", flush=True)
    print(f"[{city.gpx:.2f} Gpx] imagery-watch detect --workers {args.workers} ...", flush=True)
    run = run_job(city, work, chunk_px=args.chunk_px, workers=args.workers)
    halo_floor = decode_floor(city, **floor_args, halo_px=run["halo_px"])
    row = size_row(city, run, floor, open_ms, args.workers)
    row.update(halo_floor=halo_floor["mpx_s"], halo_floor_cpu=halo_floor["mpx_cpu_s"], halo_px=run["halo_px"])
    print(f"  {row['wall_s']:.0f} s, {row['mpx_s']:.1f} ground Mpx/s ({row['ratio']:.2f} of the floor), "
          f"peak {_gib(row['peak']):.2f} GiB", flush=True)
    return row


def format_section(args, *, command: str, started, rows: list, scaling, proj_text: str, otb_text: str,
                   target_items: list, prof_text: str | None) -> str:
    """The dated RESULTS.md section: command, commit, set-up, tables."""
    dirty = _git("status", "--porcelain", "--", "src")
    commit = _git("rev-parse", "--short", "HEAD")
    setup = (f"Mosaics: copies of one generated {args.tile_px} x {args.tile_px} px scene (seed {args.seed}; 2048 px "
             f"JPEG-YCbCr sheets, 512 px tiles, 3 bands, 0.2 m; all distractors but nodata margins) placed by one "
             f"flat VRT per epoch, as the job builds for a folder of sheets, each copy through its own symlink so "
             f"that GDAL decodes every copy (compressed bytes come from the page cache); layers: farmland and "
             f"approved land copied per scene copy, 7 county strips. Chunk {args.chunk_px} px, {args.workers} local "
             f"worker threads, decode floor with GDAL_CACHEMAX {args.gdal_cachemax_mb} MB. Ground Mpx = grid "
             f"width x height; both epochs are read. CPU s = user + system seconds of the job's processes: the "
             f"machine is shared, so wall-time figures depend on the neighbours' load (last column); "
             f"per-CPU-second figures much less.")
    parts = [
        f"## City-scale throughput and memory (issue 6), {started:%Y-%m-%d %H:%M} UTC", "",
        f"Command: `{command}`  ",
        f"Commit: {commit}" + (f" with {len(dirty.splitlines())} uncommitted change(s) under src/ at run time "
                               "(other engineers' work in progress)" if dirty else "") + "  ",
        f"Machine: {os.cpu_count()} cores (shared: see the load averages), "
        f"{_gib(psutil.virtual_memory().total):.0f} GiB RAM, Python {sys.version.split()[0]}.  ",
        setup, "", format_sizes(rows), "",
        "Stage seconds: fit = everything before the chunk tasks (describe, layers, sampled fits); "
        "read / detect / vectorise are summed over chunk tasks (thread-seconds, from summary.json).", "",
        proj_text, "",
    ]
    if scaling:
        parts += [format_scaling(scaling, scaling["city"]), ""]
    parts += [otb_text, "", format_targets(target_items), ""]
    if prof_text:
        parts += [prof_text, ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    command = shlex.join([python, os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    sizes = sorted(float(s) for s in args.sizes.split(",") if s.strip())
    if args.tile_px % 2048:
        raise SystemExit("--tile-px must be a multiple of 2048 (the sheets are 2048 px)")
    if args.scaling_repeats < 1:
        raise SystemExit("--scaling-repeats must be at least 1")
    cache = args.cache.resolve()
    work = cache / "runs"
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    scene = ensure_tile(cache, seed=args.seed, tile_px=args.tile_px)
    cities = []
    for gpx in sizes:
        t0 = time.perf_counter()
        city = build_city(cache, scene, gpx, tile_px=args.tile_px)
        cities.append(city)
        print(f"mosaic {city.copies[0]} x {city.copies[1]} copies of the scene: {city.width} x {city.height} px "
              f"= {city.gpx:.2f} Gpx per epoch ({time.perf_counter() - t0:.1f} s to build or find)", flush=True)
    rows = [measure_size(city, work, args) for city in cities]

    scaling = None
    if args.workers_scaling:
        scity = build_city(cache, scene, args.scaling_gpx, tile_px=args.tile_px) if args.scaling_gpx else cities[0]
        print(f"[{scity.gpx:.2f} Gpx] LocalCluster 1 and 2 workers ...", flush=True)
        scaling = workers_scaling(scity, work, chunk_px=args.chunk_px, repeats=args.scaling_repeats)
        scaling["city"] = scity
    city_min, proj_text = projections(rows, workers=args.workers, scaling=scaling)
    otb_text = run_otb(cities[0], work, rows[-1]["mpx_s"])
    prof_text = None
    if args.profile:
        pcity = build_city(cache, scene, args.profile_gpx, tile_px=args.tile_px)
        print(f"[{pcity.gpx:.2f} Gpx] profile (in-process, 1 worker thread) ...", flush=True)
        prof = profile_run(pcity, work, chunk_px=args.chunk_px, profile_every=args.profile_every)
        prof_text = format_profile(prof, pcity)

    text = format_section(args, command=command, started=started, rows=rows, scaling=scaling, proj_text=proj_text,
                          otb_text=otb_text, prof_text=prof_text,
                          target_items=targets(rows, workers=args.workers, city_min=city_min, scaling=scaling))
    print("\n" + text)
    if args.no_append:
        print("(--no-append: benchmarks/RESULTS.md left as it is)")
    else:
        append_results(text)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
