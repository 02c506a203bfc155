"""New and demolished buildings on image segments (buildings.py)."""

import numpy as np
import pytest
from rasterio.features import rasterize

from imagery_watch.buildings import BuildingParams, find_demolished_buildings, find_new_buildings
from imagery_watch.synthetic.scene import build_scene

PX = 0.5


def _field(seed=0, shape=(200, 200), nir=False):
    """A green crop field with sensor noise, (band, y, x) float."""
    rng = np.random.default_rng(seed)
    colour = [70, 110, 50, 190] if nir else [70, 110, 50]
    image = np.array(colour, np.float32)[:, None, None] + rng.normal(0, 3, (len(colour),) + shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _paint(image, rows, cols, colour):
    out = image.copy()
    out[:, rows, cols] = np.array(colour, np.uint8)[:, None, None][: out.shape[0]]
    return out


ROOF = (160, 158, 150, 150)


def test_a_grey_roof_on_a_field_is_found_whole():
    before = _field()
    after = _paint(_field(1), slice(80, 110), slice(60, 100), ROOF)  # 15 m x 20 m
    found = find_new_buildings(before, after, pixel_size_m=PX)
    house = np.zeros(found.shape, bool)
    house[80:110, 60:100] = True
    assert (found & house).sum() >= 0.9 * house.sum()
    assert not (found & ~house).any()
    # the same change read backwards is a demolition, and nothing is new
    assert not find_new_buildings(after, before, pixel_size_m=PX).any()
    assert (find_demolished_buildings(after, before, pixel_size_m=PX) == found).all()


def test_identical_epochs_give_nothing_and_inputs_are_not_modified():
    image = _paint(_field(), slice(80, 110), slice(60, 100), ROOF)
    copy = image.copy()
    assert not find_new_buildings(image, image, pixel_size_m=PX).any()
    assert (image == copy).all()


@pytest.mark.parametrize("rows, cols, why", [
    (slice(95, 103), slice(10, 190), "a road: 90 m long, 4 m wide"),
    (slice(100, 104), slice(100, 104), "a 2 m x 2 m object: under min_area_m2"),
])
def test_shapes_that_are_not_buildings_are_left_out(rows, cols, why):
    after = _paint(_field(1), rows, cols, ROOF)
    assert not find_new_buildings(_field(), after, pixel_size_m=PX).any(), why


def test_a_large_building_is_kept_under_max_area_and_dropped_over_it():
    after = _paint(_field(1), slice(40, 160), slice(40, 160), ROOF)  # 60 m x 60 m = 3600 m2
    assert find_new_buildings(_field(), after, pixel_size_m=PX).sum() > 0.9 * 120 * 120
    small = BuildingParams(max_area_m2=2000.0)
    assert not find_new_buildings(_field(), after, pixel_size_m=PX, params=small).any()


def test_dark_and_vegetated_segments_are_not_roofs():
    before = _field(nir=True)
    shadow = _paint(_field(1, nir=True), slice(80, 110), slice(60, 100), (20, 20, 22, 20))
    assert not find_new_buildings(before, shadow, pixel_size_m=PX).any()
    grey_but_green = _paint(_field(1, nir=True), slice(80, 110), slice(60, 100), (150, 150, 145, 240))  # NDVI 0.23
    assert not find_new_buildings(before, grey_but_green, pixel_size_m=PX).any()
    roof = _paint(_field(1, nir=True), slice(80, 110), slice(60, 100), ROOF)  # NDVI ~ -0.03 .. 0
    roof[3, 80:110, 60:100] = 180  # NDVI 0.06: concrete
    assert find_new_buildings(before, roof, pixel_size_m=PX).any()


def test_invalid_pixels_are_never_flagged_and_do_not_count():
    before = _field()
    after = _paint(_field(1), slice(80, 110), slice(60, 100), ROOF)
    valid = np.ones(before.shape[1:], bool)
    valid[:, 150:] = False
    after[:, :, 150:] = 0
    found = find_new_buildings(before, after, pixel_size_m=PX, valid=valid)
    assert found[80:110, 60:100].mean() > 0.9
    assert not found[:, 150:].any()


@pytest.mark.parametrize("bad, match", [
    (dict(after=np.zeros((3, 10, 12), np.uint8)), "differ"),
    (dict(before=np.zeros((2, 10, 10)), after=np.zeros((2, 10, 10))), "red, green, blue"),
    (dict(pixel_size_m=0.0), "pixel_size_m"),
    (dict(valid=np.ones((5, 5), bool)), "valid"),
])
def test_bad_arguments_are_refused(bad, match):
    args = dict(before=np.zeros((3, 10, 10), np.uint8), after=np.zeros((3, 10, 10), np.uint8), pixel_size_m=PX)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        find_new_buildings(args.pop("before"), args.pop("after"), **args)


def test_generated_scene_new_construction_is_found():
    """Generated scene at 0.5 m, dense changes and distractors: most construction is found."""
    scene = build_scene(seed=31, width_px=800, height_px=800, pixel_size_m=PX, changes_per_km2=160.0)
    before, valid_b = scene.render("before")
    after, valid_a = scene.render("after")
    valid = valid_b & valid_a
    found = find_new_buildings(before, after, pixel_size_m=PX, valid=valid)
    truth = scene.truth_frame()
    built = truth[truth.after_class == "built"].geometry
    assert len(built) >= 10
    construction = rasterize(list(built), out_shape=found.shape, transform=scene.grid.transform,
                             default_value=1, dtype="uint8") > 0
    changed = rasterize(list(truth.geometry), out_shape=found.shape, transform=scene.grid.transform,
                        default_value=1, dtype="uint8") > 0
    recall = (found & construction).sum() / construction.sum()
    on_change = (found & changed).sum() / found.sum()
    assert recall > 0.6
    assert on_change > 0.55  # the rest: crop, shadow and colour distractors taken for roofs
    assert not found[~valid].any()
