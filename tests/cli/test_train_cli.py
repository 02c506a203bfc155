"""``imagery-watch train`` and ``detect-pairs --model`` through the console entry point (cli.main)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from imagery_watch import learn
from imagery_watch.cli import main
from imagery_watch.synthetic import generate_scene
from imagery_watch.synthetic.labelled_pairs import write_labelled_pairs


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    scene = generate_scene(root / "scene", seed=43, width_px=1024, height_px=1024, changes_per_km2=160)
    return write_labelled_pairs(scene, root / "pairs")


@pytest.fixture
def small_model(monkeypatch):
    """The CLI's wiring is under test here, not the model: a small estimator keeps it quick."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    monkeypatch.setattr(learn, "_new_estimator", lambda seed: HistGradientBoostingClassifier(
        max_iter=10, max_leaf_nodes=7, early_stopping=False, random_state=seed))


def _dirs(d):
    return [str(d["before"]), str(d["after"]), str(d["label"])]


def test_train_then_detect_pairs_with_the_model(pair_dirs, small_model, tmp_path, capsys):
    model = tmp_path / "change.iwm"
    rc = main(["train", *_dirs(pair_dirs), "--pixel-size", "0.2", "--out", str(model), "--include", "*_00000.png",
               "--exclude", "*_00512_00000.png", "--seed", "5", "--max-samples", "2000", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.startswith(f"model {model}: 1 pairs, threshold ") and "out-of-fold F1" in captured.out
    header = learn.read_model_header(model)
    assert header["summary"]["pairs"] == ["sheet_r00_c00_00000_00000"]
    assert header["summary"]["seed"] == 5 and header["summary"]["samples_change"] <= 1000
    assert header["pixel_size_m"] == 0.2 and header["format_version"] == learn.FORMAT_VERSION

    out = tmp_path / "masks"
    rc = main(["detect-pairs", str(pair_dirs["before"]), str(pair_dirs["after"]), "--out", str(out),
               "--pixel-size", "0.2", "--model", str(model)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"4 pairs, masks in {out}" in captured.out and f"model: {model} (threshold" in captured.out
    for name in pair_dirs["names"]:
        mask = np.asarray(Image.open(out / name))
        assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 255}


def test_a_missing_label_names_the_file_and_the_fix(pair_dirs, tmp_path, capsys):
    labels = tmp_path / "labels"
    shutil.copytree(pair_dirs["label"], labels)
    (labels / pair_dirs["names"][1]).unlink()
    rc = main(["train", str(pair_dirs["before"]), str(pair_dirs["after"]), str(labels), "--pixel-size", "0.2",
               "--out", str(tmp_path / "m.iwm")])
    err = capsys.readouterr().err
    assert rc == 3
    assert f"{labels / pair_dirs['names'][1]}: no label for {pair_dirs['names'][1]}" in err and "--exclude" in err
    assert "Traceback" not in err and not (tmp_path / "m.iwm").exists()


def test_a_label_of_another_size_is_refused(pair_dirs, tmp_path, capsys):
    labels = tmp_path / "labels"
    shutil.copytree(pair_dirs["label"], labels)
    name = pair_dirs["names"][0]
    Image.fromarray(np.zeros((500, 512), np.uint8)).save(labels / name)
    rc = main(["train", str(pair_dirs["before"]), str(pair_dirs["after"]), str(labels), "--pixel-size", "0.2",
               "--out", str(tmp_path / "m.iwm")])
    err = capsys.readouterr().err
    assert rc == 3 and f"{labels / name}: 512 x 500 px, but " in err and "pixel for pixel" in err


def test_detect_pairs_refuses_a_model_of_another_version(pair_dirs, tmp_path, capsys):
    model = tmp_path / "old.iwm"
    header = {"format_version": 0, "feature_names": [], "bands": 3}
    model.write_bytes(b"imagery-watch change model\n" + json.dumps(header).encode() + b"\n")
    args = ["detect-pairs", str(pair_dirs["before"]), str(pair_dirs["after"]), "--out", str(tmp_path / "o"),
            "--pixel-size", "0.2", "--model", str(model)]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert f"{model}: model file format version 0" in err and "imagery-watch train" in err
    assert main(args + ["--rules", "demolition"]) == 2
    assert "--model replaces the rules" in capsys.readouterr().err


def test_train_without_segment_features_writes_a_model_of_pixel_features_only(pair_dirs, small_model, tmp_path,
                                                                               capsys):
    from imagery_watch.pair_features import OBJECT_FEATURES, feature_names

    model = tmp_path / "pixels.iwm"
    rc = main(["train", *_dirs(pair_dirs), "--pixel-size", "0.2", "--out", str(model), "--include", "*_00000.png",
               "--max-samples", "2000", "--no-segment-features", "-q"])
    assert rc == 0, capsys.readouterr().err
    names = tuple(learn.read_model_header(model)["feature_names"])
    assert names == feature_names(3) and not set(OBJECT_FEATURES) & set(names)
