"""Learning curve of the reviewed-patch model on generated scenes (issue 8).

The bureau's loop, simulated: the rule-based detector (``imagery-watch detect``) flags
patches on generated scenes; surveyors review them (simulated with the generator's truth:
a patch is accepted when at least half of its area lies on true change, else it is a
false alarm); the model is retrained on the first N reviewed patches
(:func:`imagery_watch.patch_model.fit_patch_model`) and used as a filter on the rules'
patches (:func:`imagery_watch.patch_model.filter_patches`) of *other* scenes, never used
for training. Reported per N (0 = rules only, then 50, 200, 500): precision of the kept
patches, their recall against the rules' accepted patches, and the share of false alarms
removed.

Scenes: ``--train-seeds`` and ``--test-seeds`` (fixed seeds, ``--size`` px square at 0.2 m,
dense changes and every distractor), cached under ``benchmarks/.cache/learning_curve``.
The rules of ``configs/sample.toml`` run at ``--sensitivity`` (default 2: the rules tuned for recall, as a bureau
that filters their patches would run them; at 1 they are already precise on these scenes).

Usage::

    .venv/bin/python benchmarks/learning_curve.py                  # appends to RESULTS.md
    .venv/bin/python benchmarks/learning_curve.py --no-record --sizes 50,200
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from accuracy import RESULTS_MD, _code_label, _command, append_results  # noqa: E402

CACHE = REPO / "benchmarks/.cache/learning_curve"
ACCEPT_SHARE = 0.5

CONFIG = """\
[job]
name = "learning-curve"
out = "{out}"
epoch_before = "2023"
epoch_after = "2024"

[inputs]
before = "{scene}/before"
after = "{scene}/after"
bands = ["red", "green", "blue"]

[layers]
farmland = {{ path = "{scene}/layers.gpkg", layer = "farmland" }}
counties = {{ path = "{scene}/layers.gpkg", layer = "counties", name_field = "name" }}

[processing]
chunk_px = 1024
workers = 1

[detection]
sensitivity = {sensitivity}
"""


def scene_patches(seed: int, *, size_px: int, sensitivity: float):
    """Generate (cached) scene ``seed``, run the rules on it; patches with simulated reviews and readers."""
    import geopandas as gpd

    from imagery_watch.config import load_config
    from imagery_watch.io.patches import read_patches
    from imagery_watch.patch_model import open_mosaic_pair
    from imagery_watch.pipeline import run_detect
    from imagery_watch.synthetic import generate_scene

    scene = CACHE / f"scene_{seed}_{size_px}"
    if not (scene / ".complete").exists():
        generate_scene(scene, seed=seed, width_px=size_px, height_px=size_px, sheet_px=1024, tile_px=256,
                       changes_per_km2=160)
        (scene / ".complete").write_text("")
    job = CACHE / f"job_{seed}_{size_px}_s{sensitivity:g}"
    cfg_path = CACHE / f"job_{seed}_{size_px}_s{sensitivity:g}.toml"
    rules = "[[rules]]" + (REPO / "configs/sample.toml").read_text(encoding="utf-8").split("[[rules]]", 1)[1]
    cfg_path.write_text(CONFIG.format(out=job.as_posix(), scene=scene.as_posix(), sensitivity=sensitivity)
                        + "\n" + rules)
    run_detect(load_config(cfg_path))  # a finished job is reused
    patches = read_patches(job / "patches.gpkg")
    truth = gpd.read_file(scene / "layers.gpkg", layer="truth").to_crs(patches.crs).union_all()
    share = np.array([g.intersection(truth).area / g.area if g.area else 0.0 for g in patches.geometry])
    patches["status"] = np.where(share >= ACCEPT_SHARE, "illegal", "false_alarm")
    before, after = open_mosaic_pair(scene / "before", scene / "after", work_dir=job / "model_work")
    return patches, before, after


def score(kept: np.ndarray, accepted: np.ndarray) -> dict:
    tp = int((kept & accepted).sum())
    return {"flagged": int(kept.sum()), "accepted": tp, "precision": tp / max(int(kept.sum()), 1),
            "recall": tp / max(int(accepted.sum()), 1),
            "false_alarms_removed": 1 - int((kept & ~accepted).sum()) / max(int((~accepted).sum()), 1)}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-seeds", default="601,602,603,604,605,606,607,608", help="scenes whose patches are reviewed")
    ap.add_argument("--test-seeds", default="701,702,703", help="scenes scored (never used for training)")
    ap.add_argument("--size", type=int, default=3072, help="scene side in pixels (0.2 m)")
    ap.add_argument("--sensitivity", type=float, default=2.0, help="detection.sensitivity of the rules")
    ap.add_argument("--sizes", default="50,200,500", help="reviewed patches the model is retrained on")
    ap.add_argument("--seed", type=int, default=0, help="seed of the review order and of the model")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from imagery_watch.patch_model import fit_mosaic_stats, fit_patch_model, patch_probabilities

    args = parse_args(argv)
    t0 = time.perf_counter()
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    test_seeds = [int(s) for s in args.test_seeds.split(",")]
    if set(train_seeds) & set(test_seeds):
        raise SystemExit("--train-seeds and --test-seeds must differ: the curve is scored on unseen scenes")
    train = [scene_patches(s, size_px=args.size, sensitivity=args.sensitivity) for s in train_seeds]
    test = [scene_patches(s, size_px=args.size, sensitivity=args.sensitivity) for s in test_seeds]
    print(f"scenes ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    # reviews arrive in a random order over the training scenes
    rng = np.random.default_rng(args.seed)
    order = [(i, j) for i, (p, _, _) in enumerate(train) for j in range(len(p))]
    order = [order[k] for k in rng.permutation(len(order))]
    test_accepted = np.concatenate([(p["status"] == "illegal").to_numpy() for p, _, _ in test])
    test_stats = [fit_mosaic_stats(b, a, seed=args.seed) for _, b, a in test]
    rows = [{"reviewed": 0, "reviewed_accepted": 0, "threshold": None, "seconds": 0.0,
             **score(np.ones(test_accepted.size, bool), test_accepted)}]
    for n in [int(s) for s in args.sizes.split(",")]:
        t1 = time.perf_counter()
        take = order[:n]
        tables, befores, afters = [], [], []
        for i, (p, b, a) in enumerate(train):
            rows_i = sorted(j for k, j in take if k == i)
            if rows_i:
                tables.append(p.iloc[rows_i])
                befores.append(b)
                afters.append(a)
        model = fit_patch_model(tables, befores, afters, seed=args.seed,
                                on_event=lambda m: print(f"  N={n}: {m}", file=sys.stderr))
        prob = np.concatenate([patch_probabilities(p, b, a, model, stats=st)
                               for (p, b, a), st in zip(test, test_stats)])
        kept = np.nan_to_num(prob, nan=0.0) >= model.threshold
        rows.append({"reviewed": len(take), "reviewed_accepted": int(sum(len(t[t.status == "illegal"])
                                                                         for t in tables)),
                     "threshold": model.threshold, "seconds": round(time.perf_counter() - t1, 1),
                     **score(kept, test_accepted)})
        print(rows[-1], file=sys.stderr)
    total = sum(len(p) for p, _, _ in train)
    lines = [f"## Learning curve of the reviewed-patch model (generated scenes), "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"Command: `{_command()}`  ", f"Commit: {_code_label()}  ",
             f"Rules at sensitivity {args.sensitivity:g} on {len(train_seeds)} training scenes (seeds "
             f"{args.train_seeds}; {total} patches to review) and {len(test_seeds)} scoring scenes never used for "
             f"training (seeds {args.test_seeds}; {test_accepted.size} patches, {int(test_accepted.sum())} on true "
             f"change), {args.size} x {args.size} px at 0.2 m each. Reviews simulated from the generator's truth "
             f"(accepted when >= {ACCEPT_SHARE:.0%} of the patch lies on true change). The model filters the rules' "
             "patches: kept when its mean change probability reaches the patch threshold chosen out of fold. "
             f"Run time {time.perf_counter() - t0:.0f} s.", "",
             "| reviewed patches (accepted) | patch threshold | patches kept | precision | recall (of the rules' "
             "true patches) | false alarms removed | fit + filter s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        label = "0 (rules only)" if not r["reviewed"] else f"{r['reviewed']} ({r['reviewed_accepted']})"
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.2f}"
        lines.append(f"| {label} | {thr} | {r['flagged']} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['false_alarms_removed']:.1%} | {r['seconds']} |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_record:
        append_results(section, RESULTS_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
