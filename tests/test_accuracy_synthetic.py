"""Accuracy of the whole detection job on the generator's scenes (issue: detection pipeline).

The figures asserted here are the acceptance figures of the product on synthetic scenes:
the bundled sample tiles (true changes of every rule among all the distractors) and a
scene whose after epoch holds only distractors (season, sun angle, radiometric shifts,
misregistration, JPEG). They run the real job end to end, so they are the slowest tests
of the suite (about half a minute each on one core).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import geopandas as gpd
import pytest

from imagery_watch.config import load_config
from imagery_watch.evaluate import evaluate_patches
from imagery_watch.pipeline import run_detect

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_tiles"
TARGETS = ("construction_on_farmland", "afforestation")


@pytest.fixture(scope="module")
def sample_job(tmp_path_factory):
    """The demo's job (configs/sample.toml) on the bundled sample tiles."""
    config = load_config(ROOT / "configs" / "sample.toml")
    config = config.replace("job", out=tmp_path_factory.mktemp("sample_job"))
    result = run_detect(config, workers=1)
    truth = gpd.read_file(SAMPLE / "layers.gpkg", layer="truth")
    return result, truth, evaluate_patches(result.patches, truth)


@pytest.mark.parametrize("rule", TARGETS)
def test_sample_tiles_object_recall_and_precision(sample_job, rule):
    _, _, report = sample_job
    m = report["rules"][rule]
    assert m["truth_polygons"] >= 30, "the sample scene should hold dozens of changes of this rule"
    assert m["recall"] >= 0.90, m
    assert m["precision"] >= 0.85, m


@pytest.mark.parametrize("rule", TARGETS)
def test_sample_tiles_flagged_area_within_ten_percent(sample_job, rule):
    _, _, report = sample_job
    assert abs(report["rules"][rule]["area_error"]) <= 0.10, report["rules"][rule]


def test_approved_changes_are_flagged_with_their_approved_area(sample_job):
    result, truth, _ = sample_job
    patches = result.patches[result.patches["rule"] == "construction_on_farmland"]
    approved = truth[(truth["rule"] == "construction_on_farmland") & truth["approved"].astype(bool)]
    assert len(approved) >= 3, "the sample scene should hold approved construction on farmland"
    found = 0
    for geom in approved.geometry:
        hits = patches[patches.intersects(geom)]
        covered = hits.intersection(geom).area.sum() / geom.area
        if covered >= 0.5:
            found += 1
            assert (hits["approved_m2"] > 0).all(), hits[["patch_id", "approved_m2"]]
    assert found >= 0.9 * len(approved)


def test_distractors_alone_give_at_most_one_false_patch_per_km2(tmp_path_factory):
    """Season, sun angle, two flight strips, up to 2 px misregistration and JPEG: no change."""
    from imagery_watch.synthetic import generate_scene

    scene = tmp_path_factory.mktemp("distractors")
    generate_scene(scene, seed=7, width_px=4096, height_px=4096, changes=False, distractors=True)
    config = load_config(ROOT / "configs" / "sample.toml")
    config = config.replace("inputs", before=scene / "before", after=scene / "after")
    config = config.replace("job", out=tmp_path_factory.mktemp("distractor_job"))
    gpkg = scene / "layers.gpkg"
    config = config.replace("layers", **{name: dataclasses.replace(getattr(config.layers, name), path=gpkg)
                                         for name in ("farmland", "approved", "counties")})
    result = run_detect(config, workers=1)
    area_km2 = result.summary["area_km2"]
    assert area_km2 > 0.6
    assert len(result.patches) <= 1.0 * area_km2, result.patches[["rule", "area_m2"]]
