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


def _classify_reference(f, valid, p):
    """The rules of classify_features as plain numpy masks, later rules winning."""
    f32 = np.float32
    veg = (f.ndvi > f32(p.ndvi_veg)) if f.ndvi is not None else \
        (f.exg > f32(p.exg_veg)) & ((f.green - f.red) > f32(p.green_excess))
    built = ((f.saturation < f32(p.grey_saturation)) | ((f.red - f.green) > f32(p.red_excess))
             | ((f.blue - f.red) > f32(p.blue_excess)) | (f.brightness > f32(p.white_brightness))) & ~veg
    if p.built_min_texture > 0:
        built &= f.texture >= f32(p.built_min_texture)
    water = ((f.brightness < f32(p.water_brightness)) & (f.texture < f32(p.water_texture))
             & (f.red < f32(0.37)) & (f.exg < f32(0.2)))
    shadow = (f.brightness < f32(p.shadow_brightness)) & ~(veg & (f.brightness >= f32(0.5 * p.shadow_brightness)))
    out = np.full(valid.shape, C.BARE, np.uint8)
    for mask, code in ((built, C.BUILT), (veg, C.LOW_VEGETATION),
                       (veg & (f.texture >= f32(p.tree_texture)) & (f.darkest < f32(p.tree_darkest)), C.TREE),
                       (water, C.WATER), (shadow, C.SHADOW), (~valid, C.NODATA)):
        out[mask] = code
    return out


@pytest.mark.parametrize("nir", [False, True])
@pytest.mark.parametrize("min_texture", [0.0, 4.0])
def test_classify_features_matches_the_rules_on_thresholds_and_strided_features(nir, min_texture):
    """Random features, a third of them exactly on a threshold (strict vs non-strict tests)."""
    from imagery_watch.classify import classify_features
    from imagery_watch.features import Features

    p = ClassifierParams(built_min_texture=min_texture, green_excess=0.01)
    rng = np.random.default_rng(int(nir) + int(min_texture))
    shape = (37, 45)
    on = {"brightness": (p.shadow_brightness, 0.5 * p.shadow_brightness, p.water_brightness, p.white_brightness),
          "red": (0.37,), "exg": (p.exg_veg, 0.2), "saturation": (p.grey_saturation,),
          "texture": (p.tree_texture, p.water_texture, min_texture or 1.0), "darkest": (p.tree_darkest,),
          "ndvi": (p.ndvi_veg,)}
    scale = {"brightness": 255, "texture": 10, "darkest": 120}
    arrays = {}
    for name in ("brightness", "red", "green", "blue", "exg", "saturation", "texture", "darkest", "ndvi"):
        a = (rng.random(shape) * scale.get(name, 1)).astype(np.float32)
        hit = rng.random(shape) < 0.33
        a[hit] = rng.choice(np.float32(on.get(name, (0.3,))), hit.sum())
        arrays[name] = np.repeat(a, 2, axis=1)[:, ::2] if name == "red" else a  # one strided input
    arrays["green"][::4] = arrays["red"][::4] + np.float32(p.green_excess)
    if not nir:
        arrays["ndvi"] = None
    feat = Features(**arrays)
    valid = rng.random(shape) < 0.9
    got = classify_features(feat, valid, params=p)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _classify_reference(feat, valid, p))
    assert len(np.unique(got)) == 7


def _majority_reference(c, r):
    ny, nx = c.shape
    p = np.pad(c, r, mode="edge")
    out = c.copy()
    for y in range(ny):
        for x in range(nx):
            if c[y, x] == 0:
                continue
            counts = np.bincount(p[y:y + 2 * r + 1, x:x + 2 * r + 1].ravel(), minlength=8)[:7]
            counts[0] = 0
            own = counts[c[y, x]] if c[y, x] <= 6 else counts[1]
            for k in range(1, 7):  # the first class with a higher count than all before wins
                if counts[k] > own:
                    out[y, x], own = k, counts[k]
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (4, 5), (23, 29)])
@pytest.mark.parametrize("r", [1, 2])
def test_majority_filter_matches_a_plain_count(shape, r):
    """Edge rows and columns, ties (own class kept, else the lowest code), NODATA and codes
    above 6 not counted."""
    rng = np.random.default_rng(r + sum(shape))
    for classes in (rng.integers(0, 8, shape, dtype=np.uint8), rng.integers(1, 3, shape, dtype=np.uint8),
                    np.full(shape, C.TREE, np.uint8)):
        np.testing.assert_array_equal(majority_filter(classes, radius=r), _majority_reference(classes, r))
        strided = np.repeat(classes, 2, axis=1)[:, ::2]
        np.testing.assert_array_equal(majority_filter(strided, radius=r), _majority_reference(classes, r))
