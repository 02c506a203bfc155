"""Tests of imagery_watch.classify: hand-built land covers, fitting, halos."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from imagery_watch.classes import LandCover as C
from imagery_watch.classify import (ClassifierParams, classify_block, classify_halo_px, fit_classifier,
                                    majority_filter, otsu_threshold)

PX = 0.2


def patch(rgb, n=40, noise=3.0, seed=0):
    rng = np.random.default_rng(seed)
    img = np.asarray(rgb, np.float32)[:, None, None] + rng.normal(0, noise, (3, n, n))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def canopy(n=40, seed=0):
    rng = np.random.default_rng(seed)
    tex = ndi.gaussian_filter(rng.normal(0, 1, (n, n)), 1.0)
    tex /= tex.std()
    return np.clip(np.stack([c + 20 * tex for c in (55, 85, 45)]), 0, 255).astype(np.uint8)


CASES = {
    "crop": (patch((95, 125, 60)), C.LOW_VEGETATION),
    "soil": (patch((150, 115, 85)), C.BARE),
    "straw": (patch((190, 165, 95)), C.BARE),
    "red_tiles": (patch((180, 80, 65)), C.BUILT),
    "concrete": (patch((150, 150, 148)), C.BUILT),
    "blue_steel": (patch((90, 120, 170)), C.BUILT),
    "white_roof": (patch((235, 235, 230)), C.BUILT),
    "shadow": (patch((25, 28, 35)), C.SHADOW),
    "trees": (canopy(), C.TREE),
    "water": (patch((45, 62, 58), noise=0.8), C.WATER),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_built_land_covers(name):
    img, expected = CASES[name]
    valid = np.ones(img.shape[1:], bool)
    cls = classify_block(img, valid, params=ClassifierParams(), pixel_size_m=PX)
    assert cls.dtype == np.uint8
    assert (cls[8:-8, 8:-8] == expected).mean() > 0.9, np.bincount(cls.ravel(), minlength=7)


def test_invalid_is_nodata_and_input_unchanged():
    img = CASES["crop"][0]
    keep = img.copy()
    valid = np.ones(img.shape[1:], bool)
    valid[:5] = False
    cls = classify_block(img, valid, params=ClassifierParams(), pixel_size_m=PX)
    assert (cls[:5] == C.NODATA).all() and (cls[5:] != C.NODATA).all()
    assert np.array_equal(img, keep)


def test_fit_classifier_gives_sane_thresholds_and_roundtrips():
    samples = [CASES[k][0] for k in sorted(CASES)]
    valid = [np.ones(s.shape[1:], bool) for s in samples]
    p = fit_classifier(samples, valid, pixel_size_m=PX)
    assert 0.03 <= p.exg_veg <= 0.10 and 2.5 <= p.tree_texture <= 8.0
    assert 20 <= p.shadow_brightness < p.water_brightness
    assert ClassifierParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_ndvi_is_used_with_nir():
    img = patch((120, 110, 100))  # greyish-brown in RGB...
    nir = np.full((1,) + img.shape[1:], 200, np.uint8)  # ...but bright in NIR: vegetation
    cls = classify_block(np.concatenate([img, nir]), np.ones(img.shape[1:], bool),
                         params=ClassifierParams(), pixel_size_m=PX)
    assert (cls == C.LOW_VEGETATION).mean() > 0.9


def test_majority_filter():
    c = np.full((9, 9), C.LOW_VEGETATION, np.uint8)
    c[4, 4] = C.BUILT
    c[0, 0] = 0
    out = majority_filter(c, radius=1)
    assert out[4, 4] == C.LOW_VEGETATION and out[0, 0] == 0


def test_halo_gives_exact_tiles():
    img = np.concatenate([np.concatenate([CASES[a][0], CASES[b][0]], axis=2)
                          for a, b in (("crop", "trees"), ("soil", "red_tiles"))], axis=1)
    valid = np.ones(img.shape[1:], bool)
    p = ClassifierParams(majority_m=0.2)
    whole = classify_block(img, valid, params=p, pixel_size_m=PX)
    h = classify_halo_px(params=p, pixel_size_m=PX)
    y0, y1, x0, x1 = 25, 60, 30, 55
    part = classify_block(img[:, y0 - h:y1 + h, x0 - h:x1 + h], valid[y0 - h:y1 + h, x0 - h:x1 + h],
                          params=p, pixel_size_m=PX)
    assert np.array_equal(part[h:-h, h:-h], whole[y0:y1, x0:x1])


def test_otsu_on_bimodal_histogram():
    hist = np.r_[np.full(50, 10.0), np.zeros(50), np.full(50, 10.0)]
    t = otsu_threshold(hist, np.linspace(0, 150, 151))
    assert 49 <= t <= 101


def test_smooth_grey_is_built_at_fine_pixels_but_bare_at_coarse_ones():
    """A smooth grey surface: a concrete slab at 0.8 m, a pale harvested field at 5 m."""
    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(150, 1.0, (3, 64, 64)), 0, 255).astype(np.uint8)
    valid = np.ones((64, 64), bool)
    for pixel_size, expected in ((0.8, C.BUILT), (5.0, C.BARE)):
        params = fit_classifier([img], [valid], pixel_size_m=pixel_size)
        classes = classify_block(img, valid, params=params, pixel_size_m=pixel_size)
        assert (classes[8:-8, 8:-8] == expected).mean() > 0.95, (pixel_size, np.unique(classes))
    # a textured grey mix (roofs, shadows, paving) stays built at 5 m
    mix = img.copy()
    mix[:, ::3, :] //= 2
    params = fit_classifier([mix], [valid], pixel_size_m=5.0)
    assert (classify_block(mix, valid, params=params, pixel_size_m=5.0)[8:-8, 8:-8] == C.BUILT).mean() > 0.5
