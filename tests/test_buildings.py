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
SHADOW = (22, 28, 18, 40)


def _house(image, rows, cols, colour=ROOF, shadow_px=6):
    """A roof with its cast shadow (``shadow_px`` wide) on its lower and right sides."""
    out = _paint(image, slice(rows.start + shadow_px, rows.stop + shadow_px),
                 slice(cols.start + shadow_px, cols.stop + shadow_px), SHADOW) if shadow_px else image
    return _paint(out, rows, cols, colour)


def test_a_grey_roof_on_a_field_is_found_whole():
    before = _field()
    after = _house(_field(1), slice(80, 110), slice(60, 100))  # 15 m x 20 m, 3 m shadow
    found = find_new_buildings(before, after, pixel_size_m=PX)
    house = np.zeros(found.shape, bool)
    house[80:110, 60:100] = True
    assert (found & house).sum() >= 0.9 * house.sum()
    assert not (found & ~house).any()
    # the same change read backwards is a demolition, and nothing is new
    assert not find_new_buildings(after, before, pixel_size_m=PX).any()
    assert (find_demolished_buildings(after, before, pixel_size_m=PX) == found).all()


def test_a_roof_without_a_new_shadow_is_left_out_unless_the_check_is_off():
    before = _field()
    dim_roof = (110, 110, 104)  # not twice as bright as the field: its surroundings are no shadow
    after = _house(_field(1), slice(80, 110), slice(60, 100), colour=dim_roof, shadow_px=0)
    assert not find_new_buildings(before, after, pixel_size_m=PX).any()
    flat = find_new_buildings(before, after, pixel_size_m=PX, params=BuildingParams(shadow_check=False))
    assert flat[80:110, 60:100].mean() > 0.9
    # the same roof with its shadow is a building
    with_shadow = _house(_field(1), slice(80, 110), slice(60, 100), colour=dim_roof)
    assert find_new_buildings(before, with_shadow, pixel_size_m=PX)[80:110, 60:100].mean() > 0.9


def test_a_house_on_grey_ground_is_found_by_its_new_shadow():
    ground = _paint(_field(), slice(0, 200), slice(0, 200), (128, 126, 120))
    ground = np.clip(ground.astype(np.int16) + np.random.default_rng(3).integers(-4, 5, ground.shape), 0, 255)
    ground = ground.astype(np.uint8)
    after = _house(ground, slice(80, 110), slice(60, 100), colour=(150, 150, 146))  # no colour change at all
    found = find_new_buildings(ground, after, pixel_size_m=PX)
    assert found[80:110, 60:100].mean() > 0.8
    assert not found[:70].any() and not found[:, 120:].any()


def test_identical_epochs_give_nothing_and_inputs_are_not_modified():
    image = _house(_field(), slice(80, 110), slice(60, 100))
    copy = image.copy()
    assert not find_new_buildings(image, image, pixel_size_m=PX).any()
    assert (image == copy).all()


@pytest.mark.parametrize("rows, cols, why", [
    (slice(95, 103), slice(10, 190), "a road: 90 m long, 4 m wide"),
    (slice(100, 104), slice(100, 104), "a 2 m x 2 m object: under min_area_m2"),
])
def test_shapes_that_are_not_buildings_are_left_out(rows, cols, why):
    after = _house(_field(1), rows, cols, shadow_px=2)
    assert not find_new_buildings(_field(), after, pixel_size_m=PX).any(), why


def test_a_large_building_is_kept_under_max_area_and_dropped_over_it():
    after = _house(_field(1), slice(40, 160), slice(40, 160), shadow_px=8)  # 60 m x 60 m = 3600 m2
    assert find_new_buildings(_field(), after, pixel_size_m=PX).sum() > 0.9 * 120 * 120
    small = BuildingParams(max_area_m2=2000.0)
    assert not find_new_buildings(_field(), after, pixel_size_m=PX, params=small).any()


def test_dark_and_vegetated_segments_are_not_roofs():
    before = _field(nir=True)
    shadow = _paint(_field(1, nir=True), slice(80, 110), slice(60, 100), SHADOW)
    assert not find_new_buildings(before, shadow, pixel_size_m=PX).any()
    grey_but_green = _house(_field(1, nir=True), slice(80, 110), slice(60, 100), (150, 150, 145, 240))  # NDVI 0.23
    assert not find_new_buildings(before, grey_but_green, pixel_size_m=PX).any()
    water = _house(_field(1, nir=True), slice(80, 110), slice(60, 100), (150, 150, 145, 100))  # NDVI < 0
    assert not find_new_buildings(before, water, pixel_size_m=PX).any()
    roof = _house(_field(1, nir=True), slice(80, 110), slice(60, 100), (160, 158, 150, 180))  # NDVI 0.06: concrete
    assert find_new_buildings(before, roof, pixel_size_m=PX).any()


def test_invalid_pixels_are_never_flagged_and_do_not_count():
    before = _field()
    after = _house(_field(1), slice(80, 110), slice(60, 100))
    valid = np.ones(before.shape[1:], bool)
    valid[:, 150:] = False
    after[:, :, 150:] = 0
    found = find_new_buildings(before, after, pixel_size_m=PX, valid=valid)
    assert found[80:110, 60:100].mean() > 0.9
    assert not found[:, 150:].any()


@pytest.mark.parametrize("bad, match", [
    (dict(after=np.zeros((3, 10, 12), np.uint8)), "differ"),
    (dict(valid=[[True] * 10] * 9), "valid"),
    (dict(before=np.zeros((2, 10, 10)), after=np.zeros((2, 10, 10))), "red, green, blue"),
    (dict(pixel_size_m=0.0), "pixel_size_m"),
    (dict(valid=np.ones((5, 5), bool)), "valid"),
])
def test_bad_arguments_are_refused(bad, match):
    args = dict(before=np.zeros((3, 10, 10), np.uint8), after=np.zeros((3, 10, 10), np.uint8), pixel_size_m=PX)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        find_new_buildings(args.pop("before"), args.pop("after"), **args)


@pytest.fixture(scope="module")
def generated():
    """Generated scene at 0.5 m, dense changes and distractors: images, valid, truth rasters."""
    scene = build_scene(seed=31, width_px=800, height_px=800, pixel_size_m=PX, changes_per_km2=160.0)
    before, valid_b = scene.render("before")
    after, valid_a = scene.render("after")
    truth = scene.truth_frame()

    def burn(geoms):
        return rasterize(list(geoms), out_shape=valid_b.shape, transform=scene.grid.transform, default_value=1,
                         dtype="uint8") > 0

    built = truth[truth.after_class == "built"].geometry
    assert len(built) >= 10
    return before, after, valid_b & valid_a, burn(built), burn(truth.geometry)


@pytest.mark.parametrize("shadow_check, min_recall, min_on_change", [(True, 0.35, 0.4), (False, 0.6, 0.5)])
def test_generated_scene_new_construction_is_found(generated, shadow_check, min_recall, min_on_change):
    """Most construction is found; the generator's flat hardstanding casts no shadow, so the
    shadow check (made for real imagery, where it removes most false alarms) finds less of it."""
    before, after, valid, construction, changed = generated
    found = find_new_buildings(before, after, pixel_size_m=PX, valid=valid,
                               params=BuildingParams(shadow_check=shadow_check))
    recall = (found & construction).sum() / construction.sum()
    on_change = (found & changed).sum() / found.sum()
    assert recall > min_recall
    assert on_change > min_on_change  # the rest: village ground, moved shadows, re-coloured roofs
    assert not found[~valid].any()


def test_a_warehouse_is_kept_and_a_non_finite_pixel_is_only_left_out():
    before = _field(shape=(240, 240))
    after = _house(_field(1, shape=(240, 240)), slice(40, 200), slice(40, 200), shadow_px=8)  # 80 m x 80 m at 0.5 m
    found = find_new_buildings(before, after, pixel_size_m=PX)
    assert found[40:200, 40:200].mean() > 0.9  # 6400 m2: a farm shed or warehouse
    with_nan = after.astype(np.float32)
    with_nan[:, 5, 5] = np.nan
    assert (find_new_buildings(before, with_nan, pixel_size_m=PX) == found).all()


def test_fine_imagery_is_worked_on_at_about_half_a_metre():
    before = _field(shape=(200, 200))
    after = _house(_field(1, shape=(200, 200)), slice(80, 110), slice(60, 100))
    coarse_b = before.reshape(3, 100, 2, 100, 2).mean(axis=(2, 4))
    coarse_a = after.reshape(3, 100, 2, 100, 2).mean(axis=(2, 4))
    expected = find_new_buildings(coarse_b, coarse_a, pixel_size_m=0.5).repeat(2, axis=0).repeat(2, axis=1)
    fine = find_new_buildings(before, after, pixel_size_m=0.25)  # the same images taken as 0.25 m
    assert expected.any() and (fine == expected).all()
    same = find_new_buildings(before, after, pixel_size_m=0.25, params=BuildingParams(working_m=0.25))
    assert same.any() and not (same == fine).all()
