"""Tests of the synthetic scene generator (small scenes, fixed seeds)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio import features as rfeatures
from shapely.geometry import box

from imagery_watch.classes import CLASS_LABELS, RULE_NAMES
from imagery_watch.errors import ConfigError, OutputError
from imagery_watch.synthetic import DistractorOptions, build_scene, generate_scene

DENSE = 160.0  # changes per rule and km2: small scenes still get several of each


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scene_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("a")
    return generate_scene(out, seed=11, width_px=768, height_px=640, sheet_px=512, tile_px=256,
                          changes_per_km2=DENSE)


def test_same_seed_same_bytes_other_seed_differs(scene_a, tmp_path):
    again = generate_scene(tmp_path / "b", seed=11, width_px=768, height_px=640, sheet_px=512, tile_px=256,
                           changes_per_km2=DENSE)
    assert _digest(scene_a.out_dir) == _digest(again.out_dir)
    other = generate_scene(tmp_path / "c", seed=12, width_px=768, height_px=640, sheet_px=512, tile_px=256,
                           changes_per_km2=DENSE)
    a, c = _digest(scene_a.out_dir), _digest(other.out_dir)
    assert a.keys() == c.keys()
    assert a["before/sheet_r00_c00.tif"] != c["before/sheet_r00_c00.tif"]


def test_sheets_tile_the_scene(scene_a):
    grid = scene_a.grid
    assert scene_a.sheets == ("sheet_r00_c00.tif", "sheet_r00_c01.tif", "sheet_r01_c00.tif", "sheet_r01_c01.tif")
    total = 0
    for epoch_dir in (scene_a.before_dir, scene_a.after_dir):
        for name in scene_a.sheets:
            with rasterio.open(epoch_dir / name) as ds:
                assert ds.crs.to_epsg() == 4549
                assert ds.count == 3 and ds.dtypes == ("uint8",) * 3
                assert ds.res == pytest.approx((0.2, 0.2))
                assert ds.block_shapes[0] == (256, 256)
                r, c = int(name[7:9]), int(name[11:13])
                assert ds.transform.c == pytest.approx(grid.x0 + c * 512 * 0.2)
                assert ds.transform.f == pytest.approx(grid.y0 - r * 512 * 0.2)
                assert ds.width == (512 if c == 0 else 256) and ds.height == (512 if r == 0 else 128)
                assert ds.profile["photometric"].lower() == "ycbcr"
                total += ds.width * ds.height
    assert total == 2 * 768 * 640
    assert 630_000 <= grid.x0 <= 680_000 and 3_400_000 <= grid.y0 <= 3_420_000


def test_internal_masks_match_the_rendered_valid_area(tmp_path):
    files = generate_scene(tmp_path, seed=3, width_px=512, height_px=512, sheet_px=256, tile_px=256)
    scene = build_scene(seed=3, width_px=512, height_px=512)
    for epoch, d in (("before", files.before_dir), ("after", files.after_dir)):
        _, valid = scene.render(epoch)
        assert not valid.all() or epoch == "after"  # seed 3 has margins
        for name in files.sheets:
            r, c = int(name[7:9]) * 256, int(name[11:13]) * 256
            with rasterio.open(d / name) as ds:
                masks = ds.read_masks()
                assert (masks[0] > 0).tolist() == valid[r:r + 256, c:c + 256].tolist()
                assert ds.mask_flag_enums[0][0].name == "per_dataset"


def test_deflate_nodata_and_nir(tmp_path):
    files = generate_scene(tmp_path, seed=3, width_px=320, height_px=256, sheet_px=256, compress="deflate",
                           nir=True, tile_px=256)
    with rasterio.open(files.before_dir / files.sheets[0]) as ds:
        assert ds.count == 4 and ds.nodata == 0
        data = ds.read()
        valid = ds.read_masks(1) > 0
    assert (data[:, valid] >= 1).all() and (data[:, ~valid] == 0).all()
    meta = json.loads(files.scene_json.read_text())
    assert meta["bands"] == ["red", "green", "blue", "nir"]


def test_layers_and_truth_fields(scene_a):
    names = {n for n, _ in pyogrio.list_layers(scene_a.layers_path)}
    assert names == {"farmland", "approved", "counties", "landuse", "truth"}
    truth = pyogrio.read_dataframe(scene_a.layers_path, layer="truth")
    assert len(truth) == sum(scene_a.counts.values()) > 0
    assert set(truth["rule"]) <= set(RULE_NAMES)
    assert set(truth["before_class"]) | set(truth["after_class"]) <= set(CLASS_LABELS)
    assert truth["approved"].dtype == bool
    assert np.allclose(truth["area_m2"], truth.geometry.area)
    assert truth.crs.to_epsg() == 4549
    landuse = pyogrio.read_dataframe(scene_a.layers_path, layer="landuse")
    assert set(landuse["class"]) <= set(CLASS_LABELS)
    counties = pyogrio.read_dataframe(scene_a.layers_path, layer="counties")
    assert len(counties) >= 3 and counties["name"].is_unique
    farmland = pyogrio.read_dataframe(scene_a.layers_path, layer="farmland")
    assert set(farmland["kind"]) <= {"permanent_basic", "cultivated"}
    meta = json.loads(scene_a.scene_json.read_text())
    assert meta["changes_per_rule"] == scene_a.counts
    assert meta["grid"]["crs"] == "EPSG:4549"
    assert set(meta["distractors_applied"]) >= {"shift_px", "radiometric", "strip", "sun"}


def _truth_raster(scene, shape, buffer_m=0.0):
    geoms = [t["geometry"].buffer(buffer_m) for t in scene.truth]
    if not geoms:
        return np.zeros(shape, bool)
    return rfeatures.rasterize([(g, 1) for g in geoms], out_shape=shape, transform=scene.grid.transform,
                               fill=0, dtype="uint8").astype(bool)


def test_changes_confined_to_truth_without_distractors():
    scene = build_scene(seed=26, width_px=1024, height_px=1024, distractors=False, changes_per_km2=DENSE)
    assert all(v > 0 for v in scene.counts().values())
    before, valid_b = scene.render("before")
    after, valid_a = scene.render("after")
    assert (valid_a == valid_b).all()
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=0)
    near = _truth_raster(scene, diff.shape, buffer_m=0.6)  # blur reaches one pixel past the polygon
    assert (diff[~near] == 0).all()
    for t in scene.truth:
        inside = _truth_raster(type("S", (), {"truth": [t], "grid": scene.grid})(), diff.shape, -0.6) & valid_a
        if inside.sum() < 50:
            continue
        changed = (diff[inside] > 12).mean()
        floor = 0.3 if t["kind"] == "young_trees" else 0.5
        assert changed > floor, (t["rule"], t["kind"], changed)


def test_identical_epochs(tmp_path):
    files = generate_scene(tmp_path, seed=4, width_px=400, height_px=300, sheet_px=256, changes=False,
                           distractors=False, compress="deflate")
    for name in files.sheets:
        assert (files.before_dir / name).read_bytes() == (files.after_dir / name).read_bytes()
    assert len(pyogrio.read_dataframe(files.layers_path, layer="truth")) == 0
    scene = build_scene(seed=4, width_px=300, height_px=200, changes=False, distractors=False)
    assert np.array_equal(scene.render("before")[0], scene.render("after")[0])


def test_distractors_only_has_empty_truth_but_differs():
    scene = build_scene(seed=4, width_px=384, height_px=384, changes=False)
    assert scene.truth == [] and len(scene.truth_frame()) == 0
    before, vb = scene.render("before")
    after, va = scene.render("after")
    both = vb & va
    assert np.abs(before.astype(int) - after.astype(int))[:, both].mean() > 3


def test_each_distractor_switch_alone_changes_pixels():
    ref = build_scene(seed=8, width_px=256, height_px=256, changes=False, distractors=False)
    base = ref.render("after")[0]
    for name in ("radiometric", "regional", "misregistration", "jpeg"):
        opts = DistractorOptions(**{k: k == name for k in DistractorOptions().as_dict()})
        scene = build_scene(seed=8, width_px=256, height_px=256, changes=False, distractors=opts)
        assert not np.array_equal(scene.render("after")[0], base), name
        assert np.array_equal(scene.render("before")[0], ref.render("before")[0]), name


def test_windows_join_without_seams():
    scene = build_scene(seed=9, width_px=300, height_px=260, changes_per_km2=DENSE)
    whole, _ = scene.render("after")
    parts = np.concatenate([np.concatenate([scene.render("after", r, c, 130, 150)[0] for c in (0, 150)], axis=2)
                            for r in (0, 130)], axis=1)
    # JPEG artefacts depend on the window's 8x8 blocks: compare without them
    opts = DistractorOptions(jpeg=False)
    s2 = build_scene(seed=9, width_px=300, height_px=260, changes_per_km2=DENSE, distractors=opts)
    whole2 = s2.render("after")[0]
    parts2 = np.concatenate([np.concatenate([s2.render("after", r, c, 130, 150)[0] for c in (0, 150)], axis=2)
                             for r in (0, 130)], axis=1)
    assert np.array_equal(whole2, parts2)
    assert whole.shape == parts.shape


@pytest.mark.parametrize("kwargs, match", [
    ({"width_px": -5}, "width_px"),
    ({"height_px": 0}, "height_px"),
    ({"pixel_size_m": 0}, "pixel_size_m"),
    ({"sheet_px": 100}, "sheet_px"),
    ({"compress": "lzw"}, "compress"),
])
def test_bad_options(tmp_path, kwargs, match):
    args = {"seed": 1, "width_px": 64, "height_px": 64, **kwargs}
    with pytest.raises(ConfigError, match=match):
        generate_scene(tmp_path, **args)


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder"):
        generate_scene(blocker / "scene", seed=1, width_px=64, height_px=64)
