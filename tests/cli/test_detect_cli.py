"""``imagery-watch detect`` and ``detect-pairs`` through the console entry point (cli.main)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from imagery_watch.cli import main
from imagery_watch.io.patches import read_patches

RULES = ("construction_on_farmland", "construction_elsewhere", "afforestation", "demolition", "reclamation")


def test_detect_flags_override_the_config_and_a_summary_is_printed(make_config_file, change_scene, tmp_path,
                                                                     capsys):
    config = make_config_file(tmp_path / "job.toml", out=tmp_path / "configured-out", before="nowhere/before",
                              after="nowhere/after")
    out = tmp_path / "job"
    rc = main(["detect", str(config), "--before", str(change_scene / "before"),
               "--after", str(change_scene / "after"), "--out", str(out), "--chunk-px", "512",
               "--workers", "2", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    state = json.loads((out / "job.json").read_text())
    assert state["completed"] is True
    assert state["chunk_px"] == 512 and state["chunks_total"] == 12
    assert Path(state["inputs"]["before"]).resolve() == (change_scene / "before").resolve()
    assert Path(state["inputs"]["after"]).resolve() == (change_scene / "after").resolve()
    assert not (tmp_path / "configured-out").exists()
    summary = json.loads((out / "summary.json").read_text())
    n = len(read_patches(out / "patches.gpkg"))
    assert summary["patches"] == n
    # the one-screen summary on stdout; nothing else on stderr with -q
    lines = captured.out.splitlines()
    assert f"Patches: {out / 'patches.gpkg'}  ({n} patches)" in lines
    for name in RULES:
        row = next(line for line in lines if line.startswith(name))
        assert int(row.split()[1]) == summary["per_rule"][name]["patches"]
    assert any("12 chunks (0 reused, 12 computed)" in line for line in lines)
    assert any(line.startswith("Time ") and "Mpx/s" in line for line in lines)
    assert "Error" not in captured.err and "chunks:" not in captured.err


@pytest.mark.parametrize("flag, expected", [(None, 1), ("3", 3), ("0", os.cpu_count())])
def test_workers_flag_reaches_the_job(scene_config_path, tmp_path, monkeypatch, flag, expected):
    import imagery_watch.pipeline as pipeline

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_detect(config, *, client=None, workers=None, progress=None, on_event=None):
        seen.update(config=config, client=client, workers=workers)
        raise Stop  # before any work

    monkeypatch.setattr(pipeline, "run_detect", fake_run_detect)
    args = ["detect", str(scene_config_path), "--out", str(tmp_path / "o")] + (["--workers", flag] if flag else [])
    with pytest.raises(Stop):
        main(args)
    assert seen["workers"] == expected  # the config says workers = 1
    assert seen["client"] is None
    assert seen["config"].processing.workers == (1 if flag is None else int(flag))
    assert Path(seen["config"].job.out) == tmp_path / "o"


@pytest.mark.parametrize("content", [None, "[job\nname = 1"])
def test_bad_config_gives_a_one_line_error_naming_the_file(tmp_path, capsys, content):
    path = tmp_path / "job.toml"
    if content is not None:
        path.write_text(content)
    rc = main(["detect", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("Error: ") and str(path) in err
    assert not (tmp_path / "o").exists()


# -- detect-pairs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_folders(change_scene, tmp_path_factory):
    """PNG pairs cropped from the scene's first sheet, plus one pair of identical images."""
    root = tmp_path_factory.mktemp("pairs")
    folders = {e: root / e for e in ("before", "after")}
    windows = {"north_west.png": Window(0, 0, 320, 288), "centre.png": Window(400, 500, 384, 320)}
    for epoch, folder in folders.items():
        folder.mkdir()
        with rasterio.open(change_scene / epoch / "sheet_r00_c00.tif") as ds:
            for name, win in windows.items():
                rgb = np.moveaxis(ds.read((1, 2, 3), window=win), 0, -1)
                Image.fromarray(rgb).save(folder / name)
    Image.open(folders["before"] / "centre.png").save(folders["before"] / "same.png")
    Image.open(folders["before"] / "centre.png").save(folders["after"] / "same.png")
    return folders


def test_detect_pairs_writes_one_binary_mask_per_pair(pair_folders, tmp_path, capsys):
    out = tmp_path / "masks"
    rc = main(["detect-pairs", str(pair_folders["before"]), str(pair_folders["after"]), "--out", str(out),
               "--pixel-size", "0.2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    names = sorted(p.name for p in pair_folders["before"].iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        with Image.open(out / name) as mask, Image.open(pair_folders["before"] / name) as image:
            assert mask.mode == "L" and mask.size == image.size
            values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= {0, 255}, (name, values)
    assert not np.asarray(Image.open(out / "same.png")).any(), "identical images gave flagged pixels"
    assert captured.out.startswith(f"{len(names)} pairs, masks in {out}")


def test_detect_pairs_missing_after_image_is_a_clear_error(pair_folders, tmp_path, capsys):
    after = tmp_path / "after"
    after.mkdir()
    for p in pair_folders["after"].iterdir():
        if p.name != "north_west.png":
            (after / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "masks"
    rc = main(["detect-pairs", str(pair_folders["before"]), str(after), "--out", str(out), "--pixel-size", "0.2"])
    err = capsys.readouterr().err
    assert rc != 0
    assert len(err.strip().splitlines()) == 1, err
    assert str(after / "north_west.png") in err and "same file names" in err
    assert not out.exists() or not any(out.iterdir()), "masks written despite the error"


@pytest.mark.parametrize("evidence", ["segments", "pixels"])
def test_detect_pairs_evidence_option(pair_folders, tmp_path, capsys, evidence):
    out = tmp_path / "masks"
    rc = main(["detect-pairs", str(pair_folders["before"]), str(pair_folders["after"]), "--out", str(out),
               "--pixel-size", "0.2", "--evidence", evidence, "--min-area", "30", "--no-shadow-check"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"rules: construction_on_farmland ({evidence} evidence)" in captured.out
    assert not np.asarray(Image.open(out / "same.png")).any()


@pytest.mark.parametrize("extra", [["--min-area", "30"], ["--evidence", "pixels"], ["--no-shadow-check"]])
def test_detect_pairs_refuses_options_of_the_rules_with_a_model(pair_folders, tmp_path, capsys, extra):
    model = tmp_path / "model.iwm"
    model.write_bytes(b"not read")
    rc = main(["detect-pairs", str(pair_folders["before"]), str(pair_folders["after"]), "--out", str(tmp_path / "m"),
               "--pixel-size", "0.2", "--model", str(model), *extra])
    err = capsys.readouterr().err
    assert rc != 0 and extra[0] in err and "--model" in err
