"""Accuracy of ``detect-pairs`` on real, labelled imagery nobody here made (issue 8).

Runs the training-free detector on every dataset found under ``../shared/data/real_dev/``
(see its README: formats, label encodings, licences) and scores it the field's way, next to
a plain baseline, so one table shows where we stand:

=========  =======================================================================
levir      LEVIR-CD building-change crops, 0.5 m RGB PNG: the ``detect-pairs`` path
           (:func:`imagery_watch.pairs.run_pairs`) on ``A/`` and ``B/``, rules
           construction + demolition. Scored on all crops and on the ``test_*`` crops.
airchange  SZTAKI AirChange, 1.5 m RGB BMP: ``run_pairs`` on temporary before/after
           folders of same-named links. Crop 2 has no labelled change: its flagged
           share is a false-alarm check (target <= 2 %).
naip       NAIP RGBN, 5 m, 10 dates, unlabelled: each consecutive pair is put on the
           earlier date's grid (rasterio reproject) and run through
           :func:`imagery_watch.pairs.detect_pair` with NIR (``run_pairs`` reads a
           4-band TIFF as RGBA and drops NIR). The share flagged as construction or
           afforestation is all false alarm (target <= 0.5 % per pair).
oscd       Onera OSCD Sentinel-2, 10 m: B04, B03, B02 + B08 as NIR, the after date
           reprojected onto the before grid (= label grid) where they differ, one
           percentile stretch per pair to uint8, ``detect_pair`` with NIR. F1 only.
=========  =======================================================================

Supervised section (unless ``--no-supervised``): a change model is trained as by
``imagery-watch train`` on the LEVIR ``train_*`` and ``val_*`` crops only
(:func:`imagery_watch.learn.fit_change_model`, seed 0), then applied by the
``detect-pairs --model`` path (``run_pairs(model_path=...)``) to the ``test_*`` crops, next
to the training-free detector on the same crops; and, as information on transfer to another
sensor and pixel size, to the AirChange crops.

Scores (per dataset, pooled: TP, FP, FN summed over its pairs, then computed): pixel
precision, recall, F1 and IoU of the change class; object recall = share of labelled
change components (8-connected, >= 20 px) covered >= 50 % by the prediction. Baseline:
z-scored RGB change-vector magnitude thresholded by Otsu per pair.

The data are research-licensed: they are read where they lie, never copied into the repo;
temporary folders live in the system temp dir. Nothing in ``tests/`` depends on them.

Usage::

    .venv/bin/python benchmarks/accuracy.py                 # all datasets, appends to RESULTS.md
    .venv/bin/python benchmarks/accuracy.py --datasets levir,airchange --no-append --json /tmp/acc.json
    .venv/bin/python benchmarks/accuracy.py --datasets levir --no-supervised   # training-free only
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/real_dev"
RESULTS_MD = REPO / "benchmarks/RESULTS.md"
DATASETS = ("levir", "airchange", "naip", "oscd")

#: rules marked per dataset (names of imagery_watch.config.default_rules). In pair mode there
#: is no farmland layer, so ``construction_on_farmland`` fires anywhere (see detect.py notes)
#: and ``construction_elsewhere`` never fires. The building datasets use what ``detect-pairs``
#: marks by default (the construction rules); demolition found as new buildings backwards in
#: time adds more false alarms than changes on LEVIR (F1 0.62 -> 0.56, no object gained).
BUILDING_RULES = ("construction_on_farmland",)
NAIP_RULES = ("construction_on_farmland", "afforestation")
#: ``detect-pairs --min-area`` for the building datasets: LEVIR and AirChange label single
#: houses (from about 30 m2); the rules' default 200 m2 is a farmland-enforcement unit
HOUSE_MIN_AREA_M2 = 30.0

#: published training-free F1 on the full LEVIR-CD test set (issue 8), for the comparison line
PUBLISHED_LEVIR = {"PCA-kmeans": 0.39, "DCVA": 0.53, "SCM": 0.63}

MIN_OBJECT_PX = 20
OBJECT_COVER = 0.5

#: targets of issue 8 (None: reported, no target)
TARGETS = {
    "levir": "F1 >= 0.45, object recall >= 0.70",
    "airchange_no_change": "<= 2 % flagged",
    "naip": "<= 0.5 % flagged each pair",
    "supervised": "F1 >= 0.60 and above training-free",
}
#: the LEVIR crops the supervised model may see (the field's split: never the test_* crops)
TRAIN_GLOBS = ("train_*", "val_*")


# --------------------------------------------------------------------------- scoring

@dataclass
class Score:
    """Pixel and object counts of one pair or a pool of pairs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    pixels: int = 0
    objects: int = 0
    objects_found: int = 0

    def __add__(self, other: "Score") -> "Score":
        return Score(*(getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__))

    def to_dict(self) -> dict:
        def ratio(num, den):
            return round(num / den, 4) if den else None

        p, r = ratio(self.tp, self.tp + self.fp), ratio(self.tp, self.tp + self.fn)
        return {
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "pixels": self.pixels,
            "precision": p, "recall": r,
            "f1": ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn),
            "iou": ratio(self.tp, self.tp + self.fp + self.fn),
            "objects": self.objects, "objects_found": self.objects_found,
            "object_recall": ratio(self.objects_found, self.objects),
            "flagged_pct": round(100 * (self.tp + self.fp) / self.pixels, 3) if self.pixels else None,
        }


def score_pair(pred: np.ndarray, truth: np.ndarray | None) -> Score:
    """Counts of one predicted mask against its truth (None: everything is a false alarm)."""
    from scipy import ndimage

    pred = np.asarray(pred, dtype=bool)
    if truth is None:
        return Score(fp=int(pred.sum()), pixels=pred.size)
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != pred.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    tp = int((pred & truth).sum())
    labels, n = ndimage.label(truth, structure=np.ones((3, 3), bool))
    size = np.bincount(labels.ravel(), minlength=n + 1)
    covered = np.bincount(labels[pred].ravel(), minlength=n + 1)
    big = size >= MIN_OBJECT_PX
    big[0] = False
    found = big & (covered >= OBJECT_COVER * size)
    return Score(tp=tp, fp=int(pred.sum()) - tp, fn=int(truth.sum()) - tp, pixels=pred.size,
                 objects=int(big.sum()), objects_found=int(found.sum()))


def baseline_cva_otsu(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Plain change-vector analysis: each RGB band z-scored per image, magnitude, Otsu."""
    from skimage.filters import threshold_otsu

    mag = np.zeros(before.shape[1:], np.float32)
    for b, a in zip(before[:3].astype(np.float32), after[:3].astype(np.float32)):
        d = (a - a.mean()) / max(float(a.std()), 1e-6) - (b - b.mean()) / max(float(b.std()), 1e-6)
        mag += d * d
    np.sqrt(mag, out=mag)
    return mag > threshold_otsu(mag)


# --------------------------------------------------------------------------- datasets

@dataclass
class Pair:
    """One before/after pair on one grid: (band, y, x) uint8 images, truth (y, x) bool or None."""

    name: str
    before: np.ndarray
    after: np.ndarray
    truth: np.ndarray | None
    pred: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def _read_rgb(path: Path) -> np.ndarray:
    from imagery_watch.io.images import read_image

    return read_image(path)[:3]


def _read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def load_levir(root: Path, tmp: Path) -> tuple[list, dict]:
    """LEVIR-CD crops: A/ and B/ already hold same-named files, so detect-pairs reads them as they are."""
    d = root / "levir_cd_crops"
    pairs = [Pair(f.stem, _read_rgb(f), _read_rgb(d / "B" / f.name), _read_gray(d / "label" / f.name) > 127)
             for f in sorted((d / "A").glob("*.png"))]
    return pairs, {"pixel_size_m": 0.5, "rules": list(BUILDING_RULES), "min_area_m2": HOUSE_MIN_AREA_M2,
                   "pair_dirs": (d / "A", d / "B")}


def load_airchange(root: Path, tmp: Path) -> tuple[list, dict]:
    """SZTAKI AirChange crops: im1_k / im2_k linked as before/k.bmp and after/k.bmp."""
    d = root / "sztaki_airchange_crops"
    before_dir, after_dir = tmp / "airchange_before", tmp / "airchange_after"
    before_dir.mkdir()
    after_dir.mkdir()
    ks = sorted(p.stem.split("_", 1)[1] for p in d.glob("im1_*.bmp"))
    for k in ks:
        (before_dir / f"crop_{k}.bmp").symlink_to(d / f"im1_{k}.bmp")
        (after_dir / f"crop_{k}.bmp").symlink_to(d / f"im2_{k}.bmp")
    pairs = [Pair(f"crop_{k}", _read_rgb(d / f"im1_{k}.bmp"), _read_rgb(d / f"im2_{k}.bmp"),
                  _read_gray(d / f"gt_{k}.bmp") > 127) for k in ks]
    return pairs, {"pixel_size_m": 1.5, "rules": list(BUILDING_RULES), "min_area_m2": HOUSE_MIN_AREA_M2,
                   "pair_dirs": (before_dir, after_dir),
                   "no_change_pair": "crop_2"}


def _crop_to_valid(*valids: np.ndarray) -> tuple:
    """Row and column slices of a box whose edges are fully valid in every mask.

    Peels the edge row or column with the most invalid pixels until none is left (the
    collar a reprojection leaves where the grids do not quite overlap).
    """
    v = np.logical_and.reduce(valids)
    y0, y1, x0, x1 = 0, v.shape[0], 0, v.shape[1]
    while y1 - y0 > 1 and x1 - x0 > 1:
        sub = v[y0:y1, x0:x1]
        bad = [(~sub[0]).sum(), (~sub[-1]).sum(), (~sub[:, 0]).sum(), (~sub[:, -1]).sum()]
        k = int(np.argmax(bad))
        if bad[k] == 0:
            break
        y0, y1, x0, x1 = y0 + (k == 0), y1 - (k == 1), x0 + (k == 2), x1 - (k == 3)
    if y1 - y0 < 64 or x1 - x0 < 64:
        raise ValueError(f"the two dates overlap in less than 64 x 64 valid pixels ({y1 - y0} x {x1 - x0})")
    return slice(y0, y1), slice(x0, x1)


def _measure_shift(before: np.ndarray, after: np.ndarray) -> list:
    """Residual misregistration (dy, dx) in pixels after putting both on one grid."""
    from imagery_watch.align import measure_shift

    est = measure_shift([before], [after], [np.ones(before.shape[1:], bool)])
    return [est.dy, est.dx] if est.blocks_used else None


def load_naip(root: Path, tmp: Path) -> tuple[list, dict]:
    """NAIP dates in order; each later date reprojected onto the earlier date's grid."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    files = sorted((root / "naip_multidate_rgbn").glob("*.tif"))
    if len(files) < 2:
        raise FileNotFoundError(f"{root / 'naip_multidate_rgbn'}: fewer than two dated GeoTIFFs")
    pairs = []
    for fb, fa in zip(files[:-1], files[1:]):
        with rasterio.open(fb) as sb, rasterio.open(fa) as sa:
            before = sb.read()
            after = np.zeros_like(before)
            reproject(sa.read(), after, src_transform=sa.transform, src_crs=sa.crs, src_nodata=sa.nodata,
                      dst_transform=sb.transform, dst_crs=sb.crs, dst_nodata=0,
                      resampling=Resampling.bilinear, num_threads=1)
        ys, xs = _crop_to_valid((before != 0).any(axis=0), (after != 0).any(axis=0))
        before, after = np.ascontiguousarray(before[:, ys, xs]), np.ascontiguousarray(after[:, ys, xs])
        date_b, date_a = fb.stem.rsplit("_", 1)[1], fa.stem.rsplit("_", 1)[1]
        pairs.append(Pair(f"{date_b}-{date_a}", before, after, None,
                          info={"grid_px": list(before.shape[1:]),
                                "residual_shift_px": _measure_shift(before, after)}))
    return pairs, {"pixel_size_m": 5.0, "rules": list(NAIP_RULES)}


OSCD_BANDS = ("B04", "B03", "B02", "B08")  # red, green, blue, NIR


def _read_bands_on(folder: Path, ref) -> tuple:
    """The four OSCD bands of one date as (4, y, x) uint16 on the reference grid.

    Returns the array and whether any band had to be reprojected onto that grid.
    """
    import rasterio
    from rasterio.warp import Resampling, reproject

    out = np.zeros((len(OSCD_BANDS),) + ref.shape, np.uint16)
    warped = False
    for i, band in enumerate(OSCD_BANDS):
        found = sorted(folder.glob(f"*_{band}.tif"))
        if len(found) != 1:
            raise FileNotFoundError(f"{folder}: expected one *_{band}.tif, found {len(found)}")
        with rasterio.open(found[0]) as ds:
            if ds.shape == ref.shape and ds.transform == ref.transform and ds.crs == ref.crs:
                out[i] = ds.read(1)
            else:
                warped = True
                reproject(rasterio.band(ds, 1), out[i], dst_transform=ref.transform, dst_crs=ref.crs,
                          dst_nodata=0, resampling=Resampling.bilinear, num_threads=1)
    return out, warped


def _stretch_pair(before: np.ndarray, after: np.ndarray) -> tuple:
    """One linear percentile stretch (1..99 %, all bands and both dates) to uint8.

    One gain for every band keeps the band ratios (chromaticity, NDVI sign) that the
    classifier reads; one stretch for both dates keeps their difference.
    """
    both = np.concatenate([before.ravel(), after.ravel()])
    both = both[both > 0][:: max(1, both.size // 2_000_000)]
    lo, hi = np.percentile(both, [1, 99])
    scale = 255.0 / max(hi - lo, 1.0)
    return tuple(np.clip((x.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8) for x in (before, after))


def load_oscd(root: Path, tmp: Path) -> tuple[list, dict]:
    """OSCD cities: labels 1 = no change, 2 = change, on the imgs_1 band grid."""
    import rasterio

    pairs = []
    for city in sorted(p for p in (root / "oscd_s2").iterdir() if (p / "cm").is_dir()):
        with rasterio.open(next((city / "imgs_1").glob(f"*_{OSCD_BANDS[0]}.tif"))) as ref:
            before, _ = _read_bands_on(city / "imgs_1", ref)
            after, warped = _read_bands_on(city / "imgs_2", ref)
        label = _read_gray_tif(city / "cm" / f"{city.name}-cm.tif")
        if label.shape != before.shape[1:]:
            raise ValueError(f"{city}: label {label.shape} is not on the band grid {before.shape[1:]}")
        b8, a8 = _stretch_pair(before, after)
        pairs.append(Pair(city.name, b8, a8, label == 2,
                          info={"grid_px": list(label.shape), "after_reprojected": warped,
                                "residual_shift_px": _measure_shift(b8, a8)}))
    return pairs, {"pixel_size_m": 10.0, "rules": list(BUILDING_RULES), "bands": list(OSCD_BANDS)}


def _read_gray_tif(path: Path) -> np.ndarray:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(1)


LOADERS = {"levir": load_levir, "airchange": load_airchange, "naip": load_naip, "oscd": load_oscd}
FOLDERS = {"levir": "levir_cd_crops", "airchange": "sztaki_airchange_crops",
           "naip": "naip_multidate_rgbn", "oscd": "oscd_s2"}


# --------------------------------------------------------------------------- the run

def predict(pairs: list, meta: dict, tmp: Path, model_path: Path | None = None, evidence: str = "segments") -> dict:
    """Fill ``pair.pred`` by the ``detect-pairs`` path; returns the JSON-ready meta.

    With ``meta["pair_dirs"]`` (before and after folders of same-named files):
    :func:`imagery_watch.pairs.run_pairs`, the function behind the CLI, and its PNG masks
    read back; with ``model_path`` the masks come from that change model (``--model``).
    Otherwise :func:`imagery_watch.pairs.detect_pair` on the arrays, the
    kernel ``run_pairs`` calls per pair (the route that keeps NIR as a 4th band).
    """
    from imagery_watch.config import default_rules
    from imagery_watch.pairs import detect_pair, run_pairs, select_rules

    meta = {**meta, "evidence": evidence}
    dirs = meta.pop("pair_dirs", None)
    if dirs is not None:
        out = Path(tempfile.mkdtemp(prefix="masks_", dir=tmp))
        if model_path is not None:
            run_pairs(dirs[0], dirs[1], out, pixel_size_m=meta["pixel_size_m"], model_path=model_path)
        else:
            run_pairs(dirs[0], dirs[1], out, pixel_size_m=meta["pixel_size_m"], rule_names=tuple(meta["rules"]),
                      evidence=meta["evidence"], min_area_m2=meta.get("min_area_m2"))
        for p in pairs:
            p.pred = _read_gray(out / f"{p.name}.png") > 127
        meta["path"] = "run_pairs (detect-pairs" + (" --model)" if model_path is not None else ")")
    elif model_path is not None:
        raise ValueError("a change model is applied through run_pairs only: give the dataset pair folders")
    else:
        chosen = select_rules(default_rules(), tuple(meta["rules"]))
        for p in pairs:
            p.pred = detect_pair(p.before, p.after, rules=chosen, pixel_size_m=meta["pixel_size_m"],
                                 evidence=meta["evidence"], min_area_m2=meta.get("min_area_m2"))
        meta["path"] = f"detect_pair ({p.before.shape[0]} bands)"
    return meta



def evaluate_dataset(name: str, pairs: list, meta: dict) -> dict:
    """Pooled and per-pair figures of ours and of the baseline."""
    per_pair, ours, base = [], Score(), Score()
    for p in pairs:
        p.info["baseline"] = baseline_cva_otsu(p.before, p.after)
        so, sb = score_pair(p.pred, p.truth), score_pair(p.info["baseline"], p.truth)
        ours, base = ours + so, base + sb
        extra = {k: v for k, v in p.info.items() if k != "baseline"}
        per_pair.append({"name": p.name, "ours": so.to_dict(), "baseline": sb.to_dict(), **extra})
    out = {**meta, "pairs": len(pairs), "ours": ours.to_dict(), "baseline": base.to_dict(), "per_pair": per_pair}
    if name == "levir":
        test = [q for q, p in zip(per_pair, pairs) if p.name.startswith("test_")]
        if test:
            out["test_split"] = {
                "pairs": len(test),
                "ours": sum((Score(**_counts(q["ours"])) for q in test), Score()).to_dict(),
                "baseline": sum((Score(**_counts(q["baseline"])) for q in test), Score()).to_dict(),
            }
    return out


def _pooled(pairs: list) -> Score:
    return sum((score_pair(p.pred, p.truth) for p in pairs), Score())


def run_supervised(root: Path, tmp: Path) -> dict:
    """Train on the LEVIR train/val crops, score on its test crops and on AirChange (transfer).

    Returns the JSON-ready figures: the training summary, and per scored set the model's
    pooled scores next to the training-free detector's on the same pairs.
    """
    from imagery_watch.learn import fit_change_model, read_labelled_pairs, save_model

    d = root / FOLDERS["levir"]
    if not d.is_dir():
        return {"skipped": f"{d} not found"}
    t0 = time.perf_counter()
    train = read_labelled_pairs(d / "A", d / "B", d / "label", include=TRAIN_GLOBS)
    model = fit_change_model(train, pixel_size_m=0.5, seed=0)
    model_path = save_model(model, tmp / "levir_change.iwm")
    header = {k: v for k, v in model.header().items() if k != "feature_names"}
    out = {"trained_on": [p.name for p in train], "features": len(model.feature_names), "model": header,
           "train_seconds": round(time.perf_counter() - t0, 1), "scored": {}}
    for name, keep in (("levir", lambda p: p.name.startswith("test_")), ("airchange", lambda p: True)):
        if not (root / FOLDERS[name]).is_dir():
            out["scored"][name] = {"skipped": f"{root / FOLDERS[name]} not found"}
            continue
        t1 = time.perf_counter()
        pairs, meta = LOADERS[name](root, Path(tempfile.mkdtemp(prefix=f"sup_{name}_", dir=tmp)))
        seen = {p.name for p in train} & {p.name for p in pairs if keep(p)}
        if name == "levir" and seen:
            raise RuntimeError(f"supervised: scored crops {sorted(seen)} were used for training")
        free_meta = predict(pairs, meta, tmp)
        free = _pooled([p for p in pairs if keep(p)])
        per_free = {p.name: score_pair(p.pred, p.truth).to_dict() for p in pairs if keep(p)}
        predict(pairs, meta, tmp, model_path=model_path)
        scored = [p for p in pairs if keep(p)]
        out["scored"][name] = {
            "pairs": len(scored), "pixel_size_m": meta["pixel_size_m"], "ours": _pooled(scored).to_dict(),
            "training_free": free.to_dict(), "training_free_rules": free_meta["rules"],
            "per_pair": [{"name": p.name, "ours": score_pair(p.pred, p.truth).to_dict(),
                          "training_free": per_free[p.name]} for p in scored],
            "no_change_pair": meta.get("no_change_pair"), "seconds": round(time.perf_counter() - t1, 1)}
    return out


def format_supervised(sup: dict) -> str:
    """Markdown table of the supervised section."""
    if "skipped" in sup:
        return f"Supervised: skipped ({sup['skipped']})."
    oof = sup["model"]["summary"]["out_of_fold"]
    rows = [f"Supervised: trained on {len(sup['trained_on'])} LEVIR crops ({', '.join(sup['trained_on'])}) "
            f"in {sup['train_seconds']} s; {sup['features']} features, threshold {oof['threshold']:.2f}, "
            f"out-of-fold F1 {oof['f1']:.3f} (folds: {sup['model']['summary']['folds_by']}).",
            "",
            "| supervised, scored on | pairs | precision | recall | F1 | IoU | object recall (found/all) | flagged % | "
            "training-free F1 (same pairs) | training-free flagged % | target |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in sup["scored"].items():
        if "skipped" in r:
            rows.append(f"| {name} | skipped: {r['skipped']} | | | | | | | | | |")
            continue
        o, f = r["ours"], r["training_free"]
        label = {"levir": "levir test_* (never seen)", "airchange": "airchange (other sensor, 1.5 m)"}[name]
        target = TARGETS["supervised"] if name == "levir" else "- (transfer, information)"
        rows.append(f"| {label} | {r['pairs']} | {_fmt(o['precision'])} | {_fmt(o['recall'])} | {_fmt(o['f1'])} | "
                    f"{_fmt(o['iou'])} | {_fmt(o['object_recall'])} ({o['objects_found']}/{o['objects']}) | "
                    f"{_fmt(o['flagged_pct'], True)} | {_fmt(f['f1'])} | {_fmt(f['flagged_pct'], True)} | {target} |")
        if r.get("no_change_pair"):
            q = next(q for q in r["per_pair"] if q["name"] == r["no_change_pair"])
            rows.append(f"| {name} {q['name']} (no labelled change) | 1 | | | | | | "
                        f"{_fmt(q['ours']['flagged_pct'], True)} | | {_fmt(q['training_free']['flagged_pct'], True)} "
                        f"| - |")
    return "\n".join(rows)


def _counts(d: dict) -> dict:
    return {k: d[k] for k in Score.__dataclass_fields__}


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if pct else f"{v:.3f}"


def format_tables(results: dict) -> str:
    """Markdown tables: labelled datasets, then the false-alarm checks."""
    rows = ["| dataset | pairs | precision | recall | F1 | IoU | object recall (found/all) | "
            "flagged % | baseline F1 | baseline flagged % | target |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    checks = ["| false-alarm check | ours flagged % | baseline flagged % | target |", "|---|---|---|---|"]

    def row(label, n, o, b, target):
        rows.append(f"| {label} | {n} | {_fmt(o['precision'])} | {_fmt(o['recall'])} | {_fmt(o['f1'])} | "
                    f"{_fmt(o['iou'])} | {_fmt(o['object_recall'])} ({o['objects_found']}/{o['objects']}) | "
                    f"{_fmt(o['flagged_pct'], True)} | {_fmt(b['f1'])} | {_fmt(b['flagged_pct'], True)} | {target} |")

    for name, r in results.items():
        if "error" in r or "skipped" in r:
            rows.append(f"| {name} | {'error: ' + r['error'] if 'error' in r else 'skipped: ' + r['skipped']} "
                        "| | | | | | | | | |")
            continue
        if name == "naip":
            for q in r["per_pair"]:
                checks.append(f"| naip {q['name'].replace('-', ' → ')} | {_fmt(q['ours']['flagged_pct'], True)} | "
                              f"{_fmt(q['baseline']['flagged_pct'], True)} | {TARGETS['naip']} |")
            continue
        row(name, r["pairs"], r["ours"], r["baseline"], TARGETS.get(name, "-"))
        if "test_split" in r:
            t = r["test_split"]
            row(f"{name} test_*", t["pairs"], t["ours"], t["baseline"], "-")
        if r.get("no_change_pair"):
            q = next(q for q in r["per_pair"] if q["name"] == r["no_change_pair"])
            checks.append(f"| {name} {q['name']} (no labelled change) | {_fmt(q['ours']['flagged_pct'], True)} | "
                          f"{_fmt(q['baseline']['flagged_pct'], True)} | {TARGETS['airchange_no_change']} |")
    out = "\n".join(rows)
    levir = results.get("levir", {})
    if "ours" in levir:
        f1 = levir["ours"]["f1"]
        out += ("\n\nLEVIR-CD, ours (training-free, these crops) against published training-free F1 on the full "
                "test set (other crops: indicative): " + ", ".join(f"{k} {v:.2f} ({f1 - v:+.2f})"
                                                               for k, v in PUBLISHED_LEVIR.items()) + ".")
    if len(checks) > 2:
        out += "\n\n" + "\n".join(checks)
    how = [f"{name}: {', '.join(r['rules'])} ({r.get('evidence', 'pixels')} evidence"
           f"{', min area ' + format(r['min_area_m2'], 'g') + ' m2' if r.get('min_area_m2') else ''}) "
           f"at {r['pixel_size_m']} m via {r['path']} ({r['seconds']} s)"
           for name, r in results.items() if "rules" in r]
    if how:
        out += "\n\nRules and path: " + "; ".join(how) + "."
    return out


def _git(*args, stdin: str | None = None) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, input=stdin, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _code_label() -> str:
    """The code measured: HEAD's short hash, and the modules of the imported package that differ from it.

    Compares the blob hash of every ``.py`` file of the imported ``imagery_watch`` with
    HEAD's ``src/imagery_watch`` (so uncommitted edits in this shared checkout, or a
    package imported from elsewhere, are named instead of hidden behind the hash).
    """
    import imagery_watch

    pkg = Path(imagery_watch.__file__).resolve().parent
    head = _git("rev-parse", "--short", "HEAD") or "unknown"
    prefix = "src/imagery_watch/"
    committed = {}
    for line in _git("ls-tree", "-r", "HEAD", "--", prefix).splitlines():
        info, path = line.split("\t", 1)
        if path.endswith(".py"):
            committed[path[len(prefix):]] = info.split()[2]
    files = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py"))
    here = dict(zip(files, _git("hash-object", "--stdin-paths", stdin="\n".join(str(pkg / f) for f in files)).split()))
    changed = sorted(f for f in set(committed) | set(here) if committed.get(f) != here.get(f))
    where = "" if REPO / "src" in pkg.parents else f", imagery_watch imported from {pkg}"
    if not changed:
        return f"{head}{where}{' (same .py files as that commit)' if where else ''}"
    digest = hashlib.sha1("".join(f"{f}:{here.get(f)}" for f in changed).encode()).hexdigest()[:8]
    names = ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else "")
    return f"{head} + uncommitted changes to {len(changed)} module(s): {names} (digest {digest}){where}"


def _command() -> str:
    exe = Path(sys.executable)
    try:
        exe_s = str(exe.relative_to(REPO))
    except ValueError:
        exe_s = "python"
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO)
    env = [f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    return shlex.join([*env, exe_s, script, *sys.argv[1:]])


def append_results(section: str, path: Path = RESULTS_MD) -> None:
    """Append one section; create the file with a one-line header if it is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write("# Benchmark results (each run appends a dated section)\n")
    except FileExistsError:
        pass
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + section)


def _save_masks(out: Path, name: str, pairs: list) -> None:
    from PIL import Image

    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    for p in pairs:
        for suffix, m in (("", p.pred), (".baseline", p.info["baseline"])):
            Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(d / f"{p.name}{suffix}.png")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help=f"folder holding the real_dev datasets (default: {DEFAULT_DATA})")
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help=f"comma-separated subset of {','.join(DATASETS)} (default: all)")
    ap.add_argument("--evidence", choices=("segments", "pixels"), default="segments",
                    help="detect-pairs --evidence of the training-free detector (default: segments)")
    ap.add_argument("--json", type=Path, help="write the per-dataset figures (and per pair) as JSON here")
    ap.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md (tuning runs)")
    ap.add_argument("--no-supervised", action="store_true",
                    help="skip the supervised section (train on LEVIR train_*/val_*, score test_* and AirChange)")
    ap.add_argument("--save-masks", type=Path, metavar="DIR",
                    help="write predicted masks (and .baseline.png) per dataset/pair as 0/255 PNGs here")
    args = ap.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        ap.error(f"--datasets: unknown {unknown[0]!r}; choose among {', '.join(DATASETS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results, failed = {}, False
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iw_accuracy_") as tmp:
        for name in args.datasets:
            folder = args.data / FOLDERS[name]
            if not folder.is_dir():
                msg = f"{folder} not found"
                print(f"{name}: skipped ({msg}; pass --data DIR pointing at real_dev/)", file=sys.stderr)
                results[name] = {"skipped": msg}
                continue
            t0 = time.perf_counter()
            try:
                pairs, meta = LOADERS[name](args.data, Path(tmp))
                meta = predict(pairs, meta, Path(tmp), evidence=args.evidence)
                results[name] = evaluate_dataset(name, pairs, meta)
            except Exception as exc:  # one broken dataset must not hide the others' figures
                failed = True
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
                continue
            results[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {len(pairs)} pairs in {results[name]['seconds']} s", file=sys.stderr)
            if args.save_masks:
                _save_masks(args.save_masks, name, pairs)
        supervised = None
        if not args.no_supervised:
            try:
                supervised = run_supervised(args.data, Path(tmp))
            except Exception as exc:  # the training-free figures must still be reported
                failed = True
                traceback.print_exc()
                supervised = {"skipped": f"error: {type(exc).__name__}: {exc}".splitlines()[0][:200]}
    seconds = round(time.perf_counter() - t_all, 1)
    table = format_tables(results)
    if supervised is not None:
        table += "\n\n" + format_supervised(supervised)
    stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    header = {"date": stamp, "command": _command(), "commit": _code_label(), "seconds": seconds}
    print(table)
    print(f"\n{seconds} s in all; commit {header['commit']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**header, "data": str(args.data), "datasets": results,
                                         "supervised": supervised}, indent=1) + "\n")
    if not any("pairs" in r for r in results.values()):
        print("no dataset measured: nothing appended", file=sys.stderr)
    elif not args.no_append:
        append_results(f"## Accuracy on real imagery, {stamp}\n\n"
                       f"Command: `{header['command']}`  \nCommit: {header['commit']}  \n"
                       f"Baseline: z-scored RGB change-vector magnitude, Otsu per pair. "
                       f"Run time {seconds} s.\n\n{table}\n")
        print(f"appended to {RESULTS_MD.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
