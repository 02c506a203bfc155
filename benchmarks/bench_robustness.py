"""Robustness figures of issue 7: bad inputs, faults in a detection job, fuzzing of the review API.

The long versions of the CI tests ``tests/test_bad_inputs.py``, ``tests/test_faults.py`` and
``tests/review/test_fuzz.py``, with their own helpers (nothing is re-implemented here):

1. **Bad inputs**: ``tests/test_bad_inputs.py`` run through pytest; each test case is one bad
   input (or one way of giving it) and passes when it is answered clearly (exit code,
   message naming the file or key and the fix, no traceback).
2. **Faults**: on the test scene (``tests/conftest.py``: same generator, seed and size), a
   finished job at 1024-px chunks is the previous complete output, and an uninterrupted run
   at 512-px chunks (12 chunks) the expected result. Then

   * ``imagery-watch detect`` is killed with SIGKILL at every call of every named kill point
     (a chunk's window read, detection, vectorising, a half-written chunk file, the merge,
     the patch file written aside, its rename, the end of the job);
   * the plain ``imagery-watch`` console script is killed after random delays (drawn with a
     fixed seed, uniform over the duration of an uninterrupted run);
   * a ``dask.distributed`` worker process (LocalCluster, 2 workers) is killed mid-job;

   and each time the job is run again and must give the same patch table as the
   uninterrupted run, reuse every finished chunk, and never have left the previous patch
   file half-written (``tests/test_faults.py``).
3. **Fuzz**: schemathesis requests generated from the review app's OpenAPI document, with
   a session (no 5xx) and without (401 only, no data), many more than in CI.

Prints the table and appends a dated section with the command to ``benchmarks/RESULTS.md``
(append only).

    .venv/bin/python benchmarks/bench_robustness.py
    .venv/bin/python benchmarks/bench_robustness.py --quick --no-record     # a smoke run

Everything is built under ``benchmarks/_work/robustness/`` (git-ignored; remade each run).
Runs one job at a time with one worker thread: modest on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_WORK = ROOT / "benchmarks" / "_work" / "robustness"
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "review")]

#: calls per kill point on the test scene at 512-px chunks (12 chunks, 2 reads each)
CALLS = {"read": 24, "detect": 12, "vectorise": 12, "store-chunk": 12, "merge": 1, "store-patches": 1,
         "store-rename": 1, "finish": 2}


def _cli() -> list:
    exe = Path(sys.executable).with_name("imagery-watch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "imagery_watch.cli"]


# -- 1. bad inputs ---------------------------------------------------------------------------
def bad_inputs(work: Path) -> dict:
    """Run tests/test_bad_inputs.py through pytest and count its cases."""
    report = work / "bad_inputs.xml"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
                           "tests/test_bad_inputs.py", f"--junitxml={report}"], cwd=ROOT, capture_output=True,
                          text=True)
    cases = ET.parse(report).getroot().iter("testcase")
    tried, answered, broken = 0, 0, []
    for case in cases:
        tried += 1
        if any(child.tag in ("failure", "error", "skipped") for child in case):
            broken.append(case.get("name"))
        else:
            answered += 1
    print(f"bad inputs: {answered} of {tried} answered clearly ({time.perf_counter() - t0:.0f} s)"
          + (f"; not: {', '.join(broken)}" if broken else ""))
    if proc.returncode not in (0, 1):
        print(proc.stdout[-2000:], proc.stderr[-2000:])
    return {"tried": tried, "answered": answered, "broken": broken}


# -- 2. faults -------------------------------------------------------------------------------
def prepare_jobs(work: Path):
    """The scene, the previous complete job (1024 px) and the uninterrupted run (512 px)."""
    from conftest import DENSE, SCENE_HEIGHT_PX, SCENE_SEED, SCENE_WIDTH_PX, write_config
    from test_faults import CHUNK_PX

    from imagery_watch.config import load_config
    from imagery_watch.pipeline import run_detect
    from imagery_watch.synthetic import generate_scene

    scene = work / "scene"
    generate_scene(scene, seed=SCENE_SEED, width_px=SCENE_WIDTH_PX, height_px=SCENE_HEIGHT_PX, sheet_px=1024,
                   tile_px=256, changes_per_km2=DENSE)
    config_path = write_config(work / "job.toml", scene=scene, out=work / "unused-out")
    config = load_config(config_path)
    previous = run_detect(config.replace("job", out=work / "previous")).out_dir
    uninterrupted = shutil.copytree(previous, work / "uninterrupted")
    result = run_detect(config.replace("job", out=uninterrupted).replace("processing", chunk_px=CHUNK_PX, workers=1))
    return config, config_path, previous, result.patches_path


def named_kills(work: Path, config, config_path, previous, uninterrupted) -> list:
    """Every call of every kill point; returns one record per kill."""
    from test_faults import kill_and_resume

    out = []
    for point, calls in CALLS.items():
        for nth in range(1, calls + 1):
            dest = work / "kills" / f"{point}-{nth}"
            record = {"kind": "named", "point": point, "nth": nth}
            try:
                figures = kill_and_resume(point, nth, config=config, config_path=config_path, previous_job=previous,
                                          uninterrupted=uninterrupted, work=dest)
                record.update(injected=True, survived=True, finished=figures["finished_before_kill"])
            except AssertionError as exc:
                reached = not str(exc).startswith("the job was not killed")
                record.update(injected=reached, survived=False, error=str(exc).splitlines()[0][:300])
            out.append(record)
            shutil.rmtree(dest, ignore_errors=True)
            print(f"  kill at {point}:{nth}: " + ("survived" if record["survived"] else
                                                  f"NOT SURVIVED: {record['error']}" if record["injected"]
                                                  else "point not reached"), flush=True)
    return out


def uninterrupted_seconds(work: Path, config_path, previous) -> float:
    """Wall time of an uninterrupted ``imagery-watch detect`` in the conditions of the random kills."""
    from test_faults import CHUNK_PX

    job = shutil.copytree(previous, work / "timing")
    t0 = time.perf_counter()
    subprocess.run(_cli() + ["detect", str(config_path), "--out", str(job), "--chunk-px", str(CHUNK_PX),
                             "--workers", "1", "-q"], check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(job)
    return seconds


def random_kills(work: Path, config, config_path, previous, uninterrupted, *, count: int, seed: int) -> list:
    """SIGKILL the plain console script after delays drawn with ``seed``; resume and check."""
    from test_faults import (CHUNK_PX, CHUNKS_TOTAL, check_what_a_kill_left, chunk_files, resume_and_check,
                             same_table)

    span = uninterrupted_seconds(work, config_path, previous)
    rng = random.Random(seed)
    out = []
    for i in range(count):
        delay = rng.uniform(0.0, span)
        job = shutil.copytree(previous, work / "kills" / f"random-{i}")
        before = (job / "patches.gpkg").read_bytes()
        old_dirs = set((job / "chunks").iterdir())
        proc = subprocess.Popen(_cli() + ["detect", str(config_path), "--out", str(job), "--chunk-px", str(CHUNK_PX),
                                          "--workers", "1", "-q"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        injected = proc.poll() is None
        if injected:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        record = {"kind": "random", "delay_s": round(delay, 2), "injected": injected}
        try:
            if injected:
                done = len(chunk_files(job, old_dirs))
                replaced = (job / "patches.gpkg").read_bytes() != before
                check_what_a_kill_left(job, before, uninterrupted, renamed=None)
                resume_and_check(job, old_dirs, config=config, uninterrupted=uninterrupted)
                record.update(survived=True, finished=done, phase="after the rename" if replaced else
                              "startup and fits" if done == 0 else "chunks" if done < CHUNKS_TOTAL
                              else "merge and store")
            else:
                same_table(job / "patches.gpkg", uninterrupted)
                record.update(survived=True, phase="ended before the kill")
        except AssertionError as exc:
            record.update(survived=False, error=str(exc).splitlines()[0][:300])
        out.append(record)
        shutil.rmtree(job, ignore_errors=True)
        verdict = "survived" if record["survived"] else f"NOT SURVIVED: {record['error']}"
        print(f"  kill after {delay:.2f} s of {span:.2f} s: {verdict} ({record.get('phase', '?')})", flush=True)
    return out


def worker_kills(work: Path, config, previous, uninterrupted, *, count: int) -> list:
    """A dask.distributed worker process SIGKILLed mid-job, ``count`` times."""
    from distributed import Client, LocalCluster
    from test_faults import CHUNK_PX, CHUNKS_TOTAL, chunk_files, run_with_a_worker_killed, same_table

    out = []
    for i in range(count):
        job = shutil.copytree(previous, work / "kills" / f"worker-{i}")
        old_dirs = set((job / "chunks").iterdir())
        cfg = config.replace("job", out=job).replace("processing", chunk_px=CHUNK_PX)
        record = {"kind": "worker"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                    Client(cluster) as client:
                try:
                    result, killed = run_with_a_worker_killed(cfg, client, job, old_dirs)
                    record["injected"] = bool(killed) and killed["done"] < CHUNKS_TOTAL
                    same_table(result.patches_path, uninterrupted)
                    assert result.summary["chunks_computed"] == CHUNKS_TOTAL
                    assert len(chunk_files(job, old_dirs)) == CHUNKS_TOTAL
                    record.update(survived=True, finished=killed.get("done"))
                except AssertionError as exc:
                    record.update(survived=False, error=str(exc).splitlines()[0][:300])
                except Exception as exc:  # the job itself failed (e.g. KilledWorker): a fault not survived
                    record.update(injected=True, survived=False, error=f"{type(exc).__name__}: {exc}"[:300])
        out.append(record)
        shutil.rmtree(job, ignore_errors=True)
        print(f"  worker kill {i + 1}: {record}", flush=True)
    return out


# -- 3. fuzz ---------------------------------------------------------------------------------
def fuzz(work: Path, *, examples: int, seed: int) -> dict:
    """schemathesis requests from the OpenAPI document, with a session and without one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from review_fixtures import FAST_HASHER, PASSWORDS, make_patches, scene_files, write_job
        from test_fuzz import fuzz_api, logged_in

        from imagery_watch.review.app import create_app
        from imagery_watch.review.users import UserStore

    root = work / "review"
    mosaics, polys, counties = scene_files(root)
    job = write_job(root / "job", mosaics, make_patches(polys, counties))
    users = UserStore(job / "review.sqlite", hasher=FAST_HASHER)
    for name, role in (("alice", "reviewer"), ("bob", "reviewer"), ("root", "admin")):
        users.add(name, PASSWORDS[name], role=role)
    app = create_app(job, hasher=FAST_HASHER)
    admin = logged_in(app, "root")
    out = {}
    for label, with_session, n in (("with a session", True, examples), ("without a session", False, examples // 2)):
        t0 = time.perf_counter()
        report = fuzz_api(app, admin, examples=n, with_session=with_session, seed_value=seed,
                          cap={"GET /api/export/evidence.zip": max(2, n // 10)})
        report["seconds"] = time.perf_counter() - t0
        report["examples"] = n
        out[label] = report
        print(f"fuzz {label}: {report['cases']} requests to {report['operations']} operations, "
              f"{len(report['failures'])} failures, statuses {dict(sorted(report['statuses'].items()))} "
              f"({report['seconds']:.0f} s)", flush=True)
        for failure in report["failures"]:
            print("  FAILURE", failure)
    return out


# -- report ----------------------------------------------------------------------------------
def _count(records: list, **match) -> tuple:
    sel = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    injected = [r for r in sel if r.get("injected")]
    return len(injected), sum(1 for r in injected if r.get("survived"))


def table(bad: dict, kills: list, fuzzed: dict, args) -> str:
    named = _count(kills, kind="named")
    rand = _count(kills, kind="random")
    late = sum(1 for r in kills if r["kind"] == "random" and not r["injected"])
    workers = _count(kills, kind="worker")
    rows = [
        "| check | tried | answered / survived | failures |",
        "|---|---:|---:|---:|",
        f"| bad inputs: cases of tests/test_bad_inputs.py | {bad['tried']} | {bad['answered']} answered clearly | "
        f"{bad['tried'] - bad['answered']} |",
        f"| faults: SIGKILL at every call of {len(CALLS)} named kill points | {named[0]} | {named[1]} survived, "
        f"identical results | {named[0] - named[1]} |",
        f"| faults: SIGKILL after a random delay (seed {args.seed}) | {rand[0]} | {rand[1]} survived, identical "
        f"results | {rand[0] - rand[1]} |",
        f"| faults: dask.distributed worker SIGKILLed mid-job | {workers[0]} | {workers[1]} survived, identical "
        f"results | {workers[0] - workers[1]} |",
    ]
    for label, rep in fuzzed.items():
        rows.append(f"| fuzz: generated API requests {label} ({rep['examples']} per operation and mode) | "
                    f"{rep['cases']} | {rep['cases'] - len(rep['failures'])} | {len(rep['failures'])} |")
    lines = rows
    per_point = {}
    for r in kills:
        if r["kind"] == "named" and r["injected"]:
            n, ok = per_point.get(r["point"], (0, 0))
            per_point[r["point"]] = (n + 1, ok + bool(r["survived"]))
    lines += ["", "Kills per named point (injected / survived): " + ", ".join(
        f"{p} {n}/{ok}" for p, (n, ok) in per_point.items()) + "."]
    phases = {}
    for r in kills:
        if r["kind"] == "random" and r["injected"]:
            phases[r.get("phase", "?")] = phases.get(r.get("phase", "?"), 0) + 1
    lines.append(f"Random kills by phase reached: {', '.join(f'{k} {v}' for k, v in phases.items()) or 'none'}; "
                 f"{late} drawn delays fell after the job had ended (not counted as injected).")
    failures = [r for r in kills if r.get("injected") and not r.get("survived")]
    failures += [{"fuzz": f} for rep in fuzzed.values() for f in rep["failures"]]
    if bad["broken"]:
        failures.append({"bad inputs not answered": bad["broken"]})
    lines.append("Failures: " + ("none." if not failures else "; ".join(str(f) for f in failures)))
    return "\n".join(lines)


def append_results(text: str, args, seconds: float) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    load = os.getloadavg()[0]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/bench_robustness.py" + "".join(
        f" {a}" for a in sys.argv[1:])
    section = (f"\n## Robustness: bad inputs, faults, fuzzing (bench_robustness.py), {when}\n\n"
               f"Command: `{command}` (commit {commit}). Issue 7. Faults: the test scene of tests/conftest.py "
               "(1600 x 1472 px), previous complete output at 1024-px chunks, killed and resumed runs at 512-px "
               "chunks (12 chunks, one worker thread); a kill survived = the rerun reused every finished chunk "
               "unchanged and gave the same patch table (every attribute and geometry) as an uninterrupted run, the "
               "previous patches.gpkg was never left half-written and no temporary file stayed. Fuzz: schemathesis "
               "positive and negative modes over the review app's OpenAPI document; failure = a 5xx, or without a "
               "session anything but 401 with no data.\n"
               f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"{platform.system()}; load average {load:.1f} at the end (shared). Run time {seconds / 60:.1f} min.\n\n"
               f"{text}\n")
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write(section)
    print(f"appended to {RESULTS}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7, help="seed of the random kill delays and of the fuzzing")
    ap.add_argument("--random-kills", type=int, default=24, help="kills after a random delay")
    ap.add_argument("--worker-kills", type=int, default=3, help="dask worker kills")
    ap.add_argument("--examples", type=int, default=100, help="fuzz requests per operation and mode (with a session)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few kills and requests")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.random_kills, args.worker_kills, args.examples = 2, 1, 6
        for point in CALLS:
            CALLS[point] = min(CALLS[point], 2)
    t0 = time.perf_counter()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)

    bad = bad_inputs(args.work)
    print("faults: preparing the scene and the reference jobs", flush=True)
    config, config_path, previous, uninterrupted = prepare_jobs(args.work)
    kills = named_kills(args.work, config, config_path, previous, uninterrupted)
    kills += random_kills(args.work, config, config_path, previous, uninterrupted, count=args.random_kills,
                          seed=args.seed)
    kills += worker_kills(args.work, config, previous, uninterrupted, count=args.worker_kills)
    fuzzed = fuzz(args.work, examples=args.examples, seed=args.seed)

    text = table(bad, kills, fuzzed, args)
    seconds = time.perf_counter() - t0
    print("\n" + text + f"\n\n{seconds / 60:.1f} min")
    if not args.no_record:
        append_results(text, args, seconds)
    ok = (bad["answered"] == bad["tried"] and all(r.get("survived") for r in kills if r.get("injected"))
          and not any(rep["failures"] for rep in fuzzed.values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
