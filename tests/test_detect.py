"""Tests of imagery_watch.detect: rules, robustness, halo exactness, numpy vs Dask."""

import json

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from imagery_watch.classes import LandCover as C
from imagery_watch.config import default_rules
from imagery_watch.detect import (DetectorParams, detect_block, detect_halo_px, detect_lazy,
                                  fit_detector)

PX = 0.2
RULES = default_rules()
RULE_INDEX = {r.name: k + 1 for k, r in enumerate(RULES)}


def make_scene(ny=256, nx=256, seed=0):
    """Crop field with soil, trees, roofs (red, grey, blue), a road and a shadow."""
    rng = np.random.default_rng(seed)
    img = np.empty((3, ny, nx), np.float32)

    def fill(sl, rgb, noise=4.0):
        for b in range(3):
            img[b][sl] = rgb[b] + rng.normal(0, noise, img[b][sl].shape)

    fill((slice(None), slice(None)), (95, 125, 60))
    fill((slice(0, ny // 2), slice(nx // 2, nx)), (150, 115, 85))
    tex = ndi.gaussian_filter(rng.normal(0, 1, (70, 90)), 1.0)
    tex /= tex.std()
    for b, c in enumerate((55, 85, 45)):
        img[b][ny - 80:ny - 10, 10:100] = c + 20 * tex
    fill((slice(20, 60), slice(20, 80)), (180, 80, 65), 3)
    fill((slice(80, 110), slice(20, 70)), (150, 150, 150), 3)
    fill((slice(20, 50), slice(150, 210)), (90, 120, 170), 3)
    fill((slice(120, 126), slice(0, nx)), (120, 120, 118), 3)
    fill((slice(110, 116), slice(20, 70)), (25, 28, 35), 2)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def fit(before, after, valid=None, **kw):
    valid = np.ones(before.shape[1:], bool) if valid is None else valid
    return fit_detector([before], [after], [valid], pixel_size_m=PX, **kw)


def run(before, after, *, farmland=None, params=None, valid=None):
    valid = np.ones(before.shape[1:], bool) if valid is None else valid
    params = params or fit(before, after, valid)
    return detect_block(before, after, valid, farmland=farmland, rules=RULES, params=params, pixel_size_m=PX)


@pytest.fixture(scope="module")
def scene():
    return make_scene()


def with_new_roof(before, rgb=(160, 160, 158), sl=(slice(150, 190), slice(130, 190))):
    after = before.copy()
    for b in range(3):
        after[b][sl] = rgb[b]
    return after


def test_identical_epochs_give_no_change(scene):
    res = run(scene, scene.copy())
    assert not res.rule.any()
    assert res.score.max() == 0
    assert res.score.dtype == np.float32 and res.rule.dtype == np.uint8
    assert (res.before_class == res.after_class).all()


def test_grey_roof_on_crop_inside_farmland_fires_construction(scene):
    after = with_new_roof(scene)
    farmland = np.zeros(scene.shape[1:], bool)
    farmland[128:, :] = True
    res = run(scene, after, farmland=farmland)
    core = res.rule[155:185, 135:185]
    assert (core == RULE_INDEX["construction_on_farmland"]).mean() > 0.95
    assert not res.rule[:128].any()  # nothing elsewhere
    assert (res.score[155:185, 135:185] > 0.5).all()
    assert ((res.score >= 0) & (res.score <= 1)).all()


def test_outside_farmland_fires_construction_elsewhere(scene):
    after = with_new_roof(scene, rgb=(185, 85, 70))  # red tiles
    res = run(scene, after, farmland=np.zeros(scene.shape[1:], bool))
    assert (res.rule[155:185, 135:185] == RULE_INDEX["construction_elsewhere"]).mean() > 0.95


def test_without_farmland_layer_construction_fires_anywhere(scene):
    after = with_new_roof(scene, rgb=(95, 125, 175))  # blue steel
    res = run(scene, after, farmland=None)
    assert (res.rule[155:185, 135:185] == RULE_INDEX["construction_on_farmland"]).mean() > 0.95


def test_demolition_and_afforestation(scene):
    after = scene.copy()
    # demolish the grey roof: brown rubble / soil
    rng = np.random.default_rng(3)
    for b, c in enumerate((150, 115, 85)):
        after[b, 80:110, 20:70] = np.clip(c + rng.normal(0, 4, (30, 50)), 0, 255).astype(np.uint8)
    # plant trees on the crop field (copy the tree texture)
    after[:, 140:175, 140:200] = scene[:, 180:215, 20:80]
    res = run(scene, after)
    assert (res.rule[85:105, 25:65] == RULE_INDEX["demolition"]).mean() > 0.9
    assert (res.rule[145:170, 145:195] == RULE_INDEX["afforestation"]).mean() > 0.8


def test_shifted_copy_fires_nothing(scene):
    for shift in ((1, 0), (0, 1), (1, 1), (-1, 1)):
        after = np.roll(scene, shift, axis=(1, 2))
        res = run(scene, after)
        assert not res.rule[4:-4, 4:-4].any(), shift


def test_brightened_copy_fires_nothing(scene):
    after = np.clip(scene.astype(np.float32) * 1.15 + 12, 0, 255).astype(np.uint8)
    res = run(scene, after)
    assert not res.rule.any()


def test_seasonal_crop_change_is_not_change(scene):
    after = scene.copy()
    field = (slice(140, 250), slice(110, 250))
    rng = np.random.default_rng(5)
    for b, c in enumerate((190, 165, 95)):  # ripe / harvested yellow
        after[b][field] = np.clip(c + rng.normal(0, 5, after[b][field].shape), 0, 255).astype(np.uint8)
    farmland = np.ones(scene.shape[1:], bool)
    res = run(scene, after, farmland=farmland)
    assert not res.rule.any()


def test_moved_shadow_fires_nothing(scene):
    after = scene.copy()
    after[:, 110:116, 20:70] = scene[:, 112:118, 20:70]  # crop colour where the shadow was
    after[:, 140:150, 20:70] = np.array([25, 28, 35], np.uint8)[:, None, None]  # new shadow
    res = run(scene, after)
    assert not res.rule.any()


def test_invalid_pixels_never_fire(scene):
    after = with_new_roof(scene)
    valid = np.ones(scene.shape[1:], bool)
    valid[160:175, :] = False
    res = run(scene, after, valid=valid)
    assert not res.rule[160:175].any()
    assert (res.before_class[160:175] == C.NODATA).all()
    assert res.rule.any()


def test_inputs_not_modified(scene):
    after = with_new_roof(scene)
    valid = np.ones(scene.shape[1:], bool)
    farmland = np.ones(scene.shape[1:], bool)
    copies = [a.copy() for a in (scene, after, valid, farmland)]
    run(scene, after, farmland=farmland, valid=valid)
    for a, c in zip((scene, after, valid, farmland), copies):
        assert (a == c).all()


def test_params_json_roundtrip(scene):
    p = fit(scene, with_new_roof(scene), sensitivity=1.5)
    q = DetectorParams.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p
    with pytest.raises(ValueError, match="unknown detector parameter"):
        DetectorParams.from_dict({"bogus": 1})


def test_bad_inputs_raise(scene):
    p = DetectorParams()
    v = np.ones(scene.shape[1:], bool)
    with pytest.raises(ValueError, match="same shape"):
        detect_block(scene, scene[:, :10], v, farmland=None, rules=RULES, params=p, pixel_size_m=PX)
    with pytest.raises(ValueError, match="uint8"):
        detect_block(scene.astype(np.uint16), scene, v, farmland=None, rules=RULES, params=p, pixel_size_m=PX)
    with pytest.raises(ValueError, match="sensitivity"):
        fit(scene, scene, sensitivity=50)


def _tiled(before, after, valid, farmland, params, tile):
    """Run detect_block on overlapping tiles with the declared halo and crop the cores."""
    h = detect_halo_px(pixel_size_m=PX, params=params)
    ny, nx = valid.shape
    out = [np.zeros((ny, nx), np.uint8), np.zeros((ny, nx), np.float32),
           np.zeros((ny, nx), np.uint8), np.zeros((ny, nx), np.uint8)]
    for y0 in range(0, ny, tile[0]):
        for x0 in range(0, nx, tile[1]):
            y1, x1 = min(ny, y0 + tile[0]), min(nx, x0 + tile[1])
            ya, yb, xa, xb = max(0, y0 - h), min(ny, y1 + h), max(0, x0 - h), min(nx, x1 + h)
            res = detect_block(before[:, ya:yb, xa:xb], after[:, ya:yb, xa:xb], valid[ya:yb, xa:xb],
                               farmland=None if farmland is None else farmland[ya:yb, xa:xb],
                               rules=RULES, params=params, pixel_size_m=PX)
            for o, r in zip(out, res):
                o[y0:y1, x0:x1] = r[y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out


@pytest.fixture(scope="module")
def changed_pair(scene):
    after = with_new_roof(scene)
    after[:, 130:160, 200:250] = scene[:, 180:210, 20:70]  # trees
    after[:, 80:110, 20:70] = np.array([150, 115, 85], np.uint8)[:, None, None]  # demolition
    valid = np.ones(scene.shape[1:], bool)
    valid[:3, :40] = False
    farmland = np.zeros(scene.shape[1:], bool)
    farmland[140:, :170] = True
    return scene, after, valid, farmland


def test_halo_makes_tiles_exact(changed_pair):
    before, after, valid, farmland = changed_pair
    params = fit(before, after, valid)
    whole = detect_block(before, after, valid, farmland=farmland, rules=RULES, params=params, pixel_size_m=PX)
    assert len(np.unique(whole.rule)) >= 3
    for tile in ((60, 84), (128, 96), (36, 256)):  # multiples of the analysis factor (4)
        tiled = _tiled(before, after, valid, farmland, params, tile)
        for w, t in zip(whole, tiled):
            assert np.array_equal(w, t), tile


def test_halo_value():
    # analysis pixels of 0.8 m (factor 4): features 3 + majority/shadow buffer 2 + moved-shadow
    # veto 10 + cleaning 6 + shadow seed 4 + shadow reach 10 + 1 partial block = 36
    params = DetectorParams()
    assert params.factor(PX) == 4
    assert detect_halo_px(pixel_size_m=PX, params=params) == 36 * 4
    assert detect_halo_px(pixel_size_m=PX, params=params) % 4 == 0
    # at 0.5 m the factor is 2 (1 m analysis pixels): fewer analysis pixels of reach
    assert params.factor(0.5) == 2
    assert detect_halo_px(pixel_size_m=0.5, params=params) < 36 * 2


def test_lazy_rejects_chunks_off_the_analysis_lattice(changed_pair):
    before, after, valid, farmland = changed_pair
    params = fit(before, after, valid)
    with pytest.raises(ValueError, match="multiples of the analysis factor"):
        detect_lazy(da.from_array(before, chunks=(3, 50, 50)), da.from_array(after, chunks=(3, 50, 50)),
                    da.from_array(valid, chunks=(50, 50)), farmland=None, rules=RULES, params=params,
                    pixel_size_m=PX)


@pytest.mark.parametrize("chunks", [(8, 12), (52, 72), (128, 256)])
def test_dask_matches_numpy(changed_pair, chunks):
    before, after, valid, farmland = changed_pair
    params = fit(before, after, valid)
    whole = detect_block(before, after, valid, farmland=farmland, rules=RULES, params=params, pixel_size_m=PX)
    lazy = detect_lazy(da.from_array(before, chunks=(3,) + chunks), da.from_array(after, chunks=(3,) + chunks),
                       da.from_array(valid, chunks=chunks), farmland=da.from_array(farmland, chunks=chunks),
                       rules=RULES, params=params, pixel_size_m=PX)
    for w, z in zip(whole, lazy):
        assert np.array_equal(w, z.compute(scheduler="sync"))


def test_core_window_equals_the_crop_of_the_whole_result(changed_pair):
    before, after, valid, farmland = changed_pair
    params = fit(before, after, valid)
    whole = detect_block(before, after, valid, farmland=farmland, rules=RULES, params=params, pixel_size_m=PX)
    core = (slice(40, 200), slice(8, 251))
    part = detect_block(before, after, valid, farmland=farmland, rules=RULES, params=params, pixel_size_m=PX,
                        core=core)
    assert (whole.rule[core] > 0).any()
    for w, c in zip(whole, part):
        assert np.array_equal(w[core], c)
    with pytest.raises(ValueError, match="multiples of the analysis factor"):
        detect_block(before, after, valid, farmland=farmland, rules=RULES, params=params, pixel_size_m=PX,
                     core=(slice(3, 100), slice(0, 100)))
