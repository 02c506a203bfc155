"""Peak memory of a detection job against mosaic size (issue 3: 4x area within 1.2x memory).

Generates, once, synthetic scenes of 1x the sample area (6144 x 6144 px at 0.2 m, like
``sample_tiles/``) and of 4x that area (12288 x 12288 px) into a cache folder, then runs
``imagery-watch detect`` on each in a subprocess, from an empty job folder, and samples the
resident memory (RSS) of the whole process tree with psutil. Prints a table and appends a
dated section to ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/bench_memory.py            # or: make bench
    .venv/bin/python benchmarks/bench_memory.py --scales 1 --no-record

The job is ``configs/sample.toml`` with its inputs and layers pointed at the generated
scene (same rules, chunk size and workers as the demo, unless overridden by the options).
Scenes are cached under ``benchmarks/_work/`` (git-ignored), keyed by size, seed and
package version; delete the folder to regenerate them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "benchmarks" / "_work" / "memory"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SAMPLE_CONFIG = ROOT / "configs" / "sample.toml"
SAMPLE_PX = 6144  # side of sample_tiles/ (see the Makefile's sample-tiles target)
TARGET_RATIO = 1.2

RESULTS_HEADER = """# Benchmark results

Figures measured by the scripts in `benchmarks/`, newest last. Each section is appended by a
script run (`make bench` runs `benchmarks/bench_memory.py`) and names the command, the
machine and the date, so figures can be compared across commits. Edit only to add notes.
"""


def _scene_dir(cache: Path, side_px: int, seed: int) -> Path:
    from imagery_watch import __version__

    return cache / f"scene-{side_px}px-seed{seed}-v{__version__}"


def ensure_scene(cache: Path, side_px: int, seed: int) -> Path:
    """Generate the scene once; a ``.complete`` stamp marks a finished scene."""
    from imagery_watch.synthetic import generate_scene

    out = _scene_dir(cache, side_px, seed)
    if (out / ".complete").exists():
        print(f"reusing scene {out}", flush=True)
        return out
    shutil.rmtree(out, ignore_errors=True)
    print(f"generating a {side_px} x {side_px} px scene in {out} (once) ...", flush=True)
    t0 = time.perf_counter()
    generate_scene(out, seed=seed, width_px=side_px, height_px=side_px)
    (out / ".complete").write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return out


def write_config(scene: Path, job_dir: Path, dest: Path) -> Path:
    """``configs/sample.toml`` with inputs, layers and job folder pointed at ``scene``."""
    text = SAMPLE_CONFIG.read_text(encoding="utf-8")
    scene_s = scene.resolve().as_posix()
    if "../sample_tiles/" not in text or "../out/sample" not in text:
        raise SystemExit(f"{SAMPLE_CONFIG}: expected paths ../sample_tiles/ and ../out/sample to rewrite")
    text = text.replace("../sample_tiles/", scene_s + "/").replace("../out/sample", job_dir.resolve().as_posix())
    dest.write_text(text, encoding="utf-8")
    return dest


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_measured(cmd: list, *, interval_s: float) -> dict:
    """Run ``cmd``, sampling the RSS of its process tree; return peak, time and exit code."""
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    samples = 0
    # read output in a thread so a full pipe never blocks the job
    import threading

    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, _tree_rss(proc))
            samples += 1
        except psutil.NoSuchProcess:
            break
        time.sleep(interval_s)
    rc = proc.wait()
    reader.join(timeout=5)
    return {"rc": rc, "peak_rss": peak, "samples": samples, "wall_s": time.perf_counter() - t0,
            "output": "".join(lines)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1,4", help="area multiples of the sample scene (default 1,4)")
    ap.add_argument("--seed", type=int, default=2024, help="generator seed (default 2024, as sample_tiles)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"scene cache (default {DEFAULT_CACHE})")
    ap.add_argument("--chunk-px", type=int, help="override processing.chunk_px of configs/sample.toml")
    ap.add_argument("--workers", type=int, help="override processing.workers (0 = one per core)")
    ap.add_argument("--interval", type=float, default=0.05, help="RSS sampling interval in seconds")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    args.cache.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("imagery-watch")
    if not exe.exists():
        raise SystemExit(f"{exe}: imagery-watch not installed in this environment; run `make install-test`")
    from imagery_watch.config import load_config

    sample = load_config(SAMPLE_CONFIG).processing
    chunk_px = args.chunk_px or sample.chunk_px
    workers = sample.workers if args.workers is None else args.workers
    settings = f"chunk_px {chunk_px}, workers {workers}" + (" = one thread per core" if workers == 0 else "")
    rows = []
    for scale in scales:
        side = int(round(SAMPLE_PX * math.sqrt(scale) / 512)) * 512
        scene = ensure_scene(args.cache, side, args.seed)
        job = args.cache / f"job-{side}px"
        shutil.rmtree(job, ignore_errors=True)  # from scratch: nothing reused
        config = write_config(scene, job, args.cache / f"job-{side}px.toml")
        cmd = [str(exe), "detect", str(config), "-q"]
        if args.chunk_px:
            cmd += ["--chunk-px", str(args.chunk_px)]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        print(f"running {' '.join(cmd)}", flush=True)
        res = run_measured(cmd, interval_s=args.interval)
        if res["rc"] != 0:
            print(res["output"], file=sys.stderr)
            raise SystemExit(f"detect failed on the {scale:g}x scene (exit {res['rc']})")
        summary = json.loads((job / "summary.json").read_text())
        if summary["chunks_reused"]:
            raise SystemExit(f"{job}: {summary['chunks_reused']} chunks were reused; the figure would be wrong")
        rows.append({"scale": scale, "side": side, "km2": summary["area_km2"], "chunks": summary["chunks_total"],
                     "patches": summary["patches"], "wall_s": res["wall_s"], "peak_mb": res["peak_rss"] / 2**20,
                     "samples": res["samples"]})
    base = rows[0]["peak_mb"]
    table = ["| scale | grid px | km2 | chunks | patches | wall s | peak RSS MiB | vs first |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['scale']:g}x | {r['side']} x {r['side']} | {r['km2']:.2f} | {r['chunks']} | "
                     f"{r['patches']} | {r['wall_s']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] / base:.2f} |")
    verdict = ""
    if len(rows) > 1:
        ratio = rows[-1]["peak_mb"] / base
        verdict = (f"Peak at {rows[-1]['scale']:g}x is {ratio:.2f}x the peak at {rows[0]['scale']:g}x "
                   f"(target <= {TARGET_RATIO}): {'met' if ratio <= TARGET_RATIO else 'MISSED'}.")
    print("\n".join(table))
    if verdict:
        print(verdict)
    if not args.no_record:
        record(table, verdict, argv, settings)
    return 0


def record(table: list, verdict: str, argv, settings: str) -> None:
    vm = psutil.virtual_memory()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=False).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"], cwd=ROOT,
                               capture_output=True, text=True, check=False).stdout.strip()
        if dirty:
            commit += " with uncommitted changes in src/"
    except OSError:
        commit = "unknown"
    command = "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "",
        f"## {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}: peak memory against mosaic size (bench_memory.py)",
        "",
        f"Command: `{command.strip()}` (commit {commit}). Each run: `imagery-watch detect` on "
        "configs/sample.toml pointed at a generated scene, from an empty job folder "
        f"({settings}); peak RSS of the process tree sampled with psutil.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {vm.total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()}; load average "
        f"{os.getloadavg()[0]:.1f} at the end.",
        "",
        *table,
        "",
    ]
    if verdict:
        lines += [verdict, ""]
    new = not RESULTS.exists()
    with open(RESULTS, "a", encoding="utf-8") as fh:
        if new:
            fh.write(RESULTS_HEADER)
        fh.write("\n".join(lines))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
