"""The reviewed-patch model (imagery_watch.patch_model) on the generated scene of conftest."""

from __future__ import annotations

import dataclasses

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from imagery_watch import learn
from imagery_watch.errors import InputFileError
from imagery_watch.io.patches import write_patches
from imagery_watch.patch_model import filter_patches, fit_patch_model, open_mosaic_pair, patch_probabilities


@pytest.fixture(scope="module")
def scene(tmp_path_factory, scene_config):
    """A generated scene with dense changes and the rules' patches on it."""
    from imagery_watch.pipeline import run_detect
    from imagery_watch.synthetic import generate_scene

    root = tmp_path_factory.mktemp("patch_model")
    folder = generate_scene(root / "scene", seed=77, width_px=2048, height_px=2048, sheet_px=1024, tile_px=256,
                            changes_per_km2=200).out_dir
    layers = {k: dataclasses.replace(getattr(scene_config.layers, k), path=folder / "layers.gpkg")
              for k in ("farmland", "counties")}
    config = scene_config.replace("job", out=root / "job").replace(
        "inputs", before=folder / "before", after=folder / "after").replace("layers", approved=None, **layers)
    result = run_detect(config)
    return folder, result.patches, config


@pytest.fixture(scope="module")
def reviewed(scene, tmp_path_factory):
    """The job's patches reviewed from the truth, plus decoy patches on unchanged land
    reviewed as false alarms; split into a west (training) and an east (scoring) half."""
    change_scene, patches, _config = scene
    patches = patches.copy()
    truth = gpd.read_file(change_scene / "layers.gpkg", layer="truth").to_crs(patches.crs).union_all()
    share = np.array([g.intersection(truth).area / g.area for g in patches.geometry])
    patches["status"] = np.where(share >= 0.5, "illegal", "false_alarm")
    rng = np.random.default_rng(5)
    left, bottom, right, top = patches.total_bounds
    taken = truth.buffer(6).union(patches.union_all().buffer(6))
    decoys = []
    for _ in range(2000):
        if len(decoys) == 40:
            break
        x, y = rng.uniform(left, right - 16), rng.uniform(bottom, top - 16)
        g = box(x, y, x + 16, y + 16)
        if not g.intersects(taken):
            decoys.append(g)
            taken = taken.union(g.buffer(6))
    fake = patches.iloc[:0].reindex(range(len(decoys)))
    fake = gpd.GeoDataFrame(fake.drop(columns="geometry"), geometry=decoys, crs=patches.crs)
    fake["patch_id"] = [f"decoy{i}" for i in range(len(decoys))]
    fake["rule"] = "construction_elsewhere"
    fake["status"] = "false_alarm"
    table = gpd.GeoDataFrame(pd_concat([patches, fake]), crs=patches.crs)
    west = table.geometry.centroid.x < (left + right) / 2
    before, after = open_mosaic_pair(change_scene / "before", change_scene / "after",
                                     work_dir=tmp_path_factory.mktemp("pm"))
    return {"train": table[west].copy(), "test": table[~west].copy(), "before": before, "after": after}


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def model(reviewed):
    return fit_patch_model(reviewed["train"], reviewed["before"], reviewed["after"], seed=1)


def test_the_model_keeps_true_patches_and_drops_false_alarms_it_never_saw(reviewed, model):
    test = reviewed["test"]
    before_copy = test.copy()
    kept = filter_patches(test, reviewed["before"], reviewed["after"], model)
    assert test.equals(before_copy)  # input untouched
    true = test["status"] == "illegal"
    assert true.sum() >= 10 and (~true).sum() >= 15
    kept_true = kept["patch_id"].isin(test.loc[true, "patch_id"]).sum()
    kept_false = kept["patch_id"].isin(test.loc[~true, "patch_id"]).sum()
    # trained on 22 + 22 reviews of the other half: it ranks true patches above false alarms
    # and drops most false alarms, at the cost of some true patches
    prob = patch_probabilities(test, reviewed["before"], reviewed["after"], model).round(6)
    auc = (prob[true.to_numpy()][:, None] > prob[~true.to_numpy()][None, :]).mean()
    assert auc > 0.85, auc
    assert kept_true >= 0.5 * true.sum(), (kept_true, int(true.sum()))
    assert kept_false <= 0.2 * (~true).sum(), (kept_false, int((~true).sum()))
    assert (kept["model_probability"] >= model.threshold).all()
    s = model.summary
    assert s["trained_on"] == "reviewed patches" and s["accepted_patches"] >= 10 and s["unflagged_samples"] > 0
    assert 0 < model.threshold < 1 and s["out_of_fold"]["precision"] > s["out_of_fold"]["rules_precision"]


def test_filter_without_a_column_and_saved_models_agree(reviewed, model, tmp_path):
    test = reviewed["test"].iloc[:8]
    loaded = learn.load_model(learn.save_model(model, tmp_path / "patches.iwm"))
    a = patch_probabilities(test, reviewed["before"], reviewed["after"], model)
    b = patch_probabilities(test, reviewed["before"], reviewed["after"], loaded)
    assert np.array_equal(a, b) and np.isfinite(a).all()
    kept = filter_patches(test, reviewed["before"], reviewed["after"], model, threshold=0.0, column=None)
    assert list(kept.columns) == list(test.columns) and len(kept) == len(test)


def test_too_few_reviews_and_other_crs_are_refused(reviewed):
    few = reviewed["train"].copy()
    few["status"] = "pending"
    with pytest.raises(InputFileError, match="0 accepted .* at least 2 accepted"):
        fit_patch_model(few, reviewed["before"], reviewed["after"])
    with pytest.raises(InputFileError, match="reproject the patches"):
        fit_patch_model(reviewed["train"].to_crs(4326), reviewed["before"], reviewed["after"])


def test_train_cli_takes_mosaics_and_reviewed_patches(scene, reviewed, tmp_path, capsys):
    from imagery_watch.cli import main

    change_scene = scene[0]
    path = tmp_path / "reviewed.gpkg"
    train = reviewed["train"]
    few = pd_concat([train[train.status == "illegal"].iloc[:5], train[train.status == "false_alarm"].iloc[:4]])
    write_patches(gpd.GeoDataFrame(few, crs=train.crs), path)
    out = tmp_path / "m.iwm"
    rc = main(["train", str(change_scene / "before"), str(change_scene / "after"), "--patches", str(path),
               "--out", str(out), "-q"])
    assert rc == 0
    assert "patch threshold" in capsys.readouterr().out
    header = learn.read_model_header(out)
    assert header["summary"]["trained_on"] == "reviewed patches"
    rc = main(["train", str(change_scene / "before"), str(change_scene / "after"), "--out", str(out)])
    assert rc == 2


def test_detect_with_the_model_in_the_config_keeps_the_patches_it_confirms(scene, reviewed, model, tmp_path):
    """``detection.model``: the job's patches go through the model (chunks reused, same rules)."""
    from imagery_watch.pipeline import run_detect

    _folder, patches, config = scene
    path = learn.save_model(model, tmp_path / "reviews.iwm")
    result = run_detect(config.replace("detection", model=path))
    figures = result.summary["model"]
    assert result.summary["chunks_computed"] == 0  # the model works on the merged patches only
    assert figures["patches_flagged_by_rules"] == len(patches)
    assert figures["patches_kept"] == len(result.patches) < len(patches)
    assert set(result.patches["patch_id"]) <= set(patches["patch_id"])
    expected = filter_patches(patches, reviewed["before"], reviewed["after"], model, column=None)
    assert list(result.patches["patch_id"]) == list(expected["patch_id"])
    with pytest.raises(InputFileError):
        run_detect(config.replace("detection", model=tmp_path / "missing.iwm"))
