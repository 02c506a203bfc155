"""Tests of imagery_watch.vectorise: per-chunk polygons, seam merging, chunk independence."""

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from imagery_watch.classes import M2_PER_MU, LandCover
from imagery_watch.vectorise import (PATCH_COLUMNS, _canonical, ellipsoidal_area_m2, merge_pieces,
                                     merge_pieces_in_batches, vectorise_block)

#: 0.2 m pixels in CGCS2000 / 3-degree GK CM 120E, near the central meridian
TRANSFORM = Affine(0.2, 0.0, 500_000.0, 0.0, -0.2, 3_400_000.0)
PIXEL_AREA = 0.04
CRS = "EPSG:4549"
RULES = ("construction_on_farmland", "afforestation", "demolition")
COUNTIES = ("Nanhu", "Xiuzhou", "Jiashan")
PROVENANCE = {"job_id": "job42", "epoch_before": "2023", "epoch_after": "2024"}


def make_scene(seed: int, shape=(96, 120), sigma=2.5, n_rules=3) -> dict:
    """Blobs of 1..n_rules from thresholded smoothed noise, plus the attribute planes."""
    rng = np.random.default_rng(seed)
    rule = np.zeros(shape, np.uint8)
    for k in range(1, n_rules + 1):
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        rule[(noise > np.quantile(noise, 0.8)) & (rule == 0)] = k
    county = np.zeros(shape, np.uint16)
    county[:, : shape[1] // 3] = 1
    county[:, shape[1] // 3: 2 * shape[1] // 3] = 2
    county[shape[0] // 2:, 2 * shape[1] // 3:] = 3
    return {
        "rule": rule,
        "score": rng.random(shape, dtype=np.float32),
        "before_class": rng.integers(1, 7, shape, dtype=np.uint8),
        "after_class": rng.integers(1, 7, shape, dtype=np.uint8),
        "farmland": ndimage.gaussian_filter(rng.standard_normal(shape), 4) > 0,
        "approved": ndimage.gaussian_filter(rng.standard_normal(shape), 4) > 0.05,
        "county": county,
    }


def vectorise_chunked(scene: dict, block: tuple, *, order_seed: int | None = 0) -> list:
    """Cut the scene into blocks of ``block`` (edge blocks smaller) and vectorise each."""
    h, w = scene["rule"].shape
    pieces = []
    for r0 in range(0, h, block[0]):
        for c0 in range(0, w, block[1]):
            win = np.s_[r0:r0 + block[0], c0:c0 + block[1]]
            pieces.append(vectorise_block(
                scene["rule"][win], score=scene["score"][win], before_class=scene["before_class"][win],
                after_class=scene["after_class"][win], farmland=scene["farmland"][win],
                approved=scene["approved"][win], county=scene["county"][win],
                row0=r0, col0=c0, transform=TRANSFORM))
    if order_seed is not None:  # the merge must not care about the order of the chunks
        np.random.default_rng(order_seed).shuffle(pieces)
    return pieces


def merge(pieces, min_area=(0.0, 0.0, 0.0), rules=RULES):
    return merge_pieces(pieces, rule_names=rules, min_area_m2=min_area, pixel_area_m2=PIXEL_AREA,
                        crs=CRS, county_names=COUNTIES, provenance=PROVENANCE)


def assert_same_table(a, b):
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    attrs = [c for c in a.columns if c != "geometry"]
    assert a[attrs].reset_index(drop=True).equals(b[attrs].reset_index(drop=True))
    ga, gb = np.asarray(a.geometry.values), np.asarray(b.geometry.values)
    assert shapely.equals(ga, gb).all()
    assert list(shapely.to_wkb(ga)) == list(shapely.to_wkb(gb))  # bit-for-bit the same polygons


@pytest.fixture(scope="module")
def scene():
    return make_scene(7)


@pytest.fixture(scope="module")
def whole(scene):
    return merge(vectorise_chunked(scene, scene["rule"].shape))


@pytest.mark.parametrize("block", [(7, 9), (64, 33), (1, 120), (96, 1), (50, 128), (13, 13)])
def test_chunking_gives_identical_tables(scene, whole, block):
    assert len(whole) > 20
    assert_same_table(merge(vectorise_chunked(scene, block)), whole)


def test_irregular_tiling_is_merged(scene, whole):
    """Chunks need not form a regular grid: bands of rows split at different columns."""
    h, w = scene["rule"].shape
    pieces = []
    for band, (r0, r1) in enumerate([(0, 10), (10, 41), (41, 96)]):
        cuts = [0] + [17, 40, 77, 111][band:band + 2 + band] + [w]
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            win = np.s_[r0:r1, c0:c1]
            pieces.append(vectorise_block(
                scene["rule"][win], score=scene["score"][win], before_class=scene["before_class"][win],
                after_class=scene["after_class"][win], farmland=scene["farmland"][win],
                approved=scene["approved"][win], county=scene["county"][win], row0=r0, col0=c0,
                transform=TRANSFORM))
    assert_same_table(merge(pieces), whole)


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_batches_put_together_are_the_whole_table(scene, whole, batch_size):
    """The streaming merge gives the same rows, in patch_id order, at most batch_size at a time."""
    import pandas as pd

    batches = list(merge_pieces_in_batches(
        vectorise_chunked(scene, (13, 29)), rule_names=RULES, min_area_m2=(0.0, 0.0, 0.0),
        pixel_area_m2=PIXEL_AREA, crs=CRS, county_names=COUNTIES, provenance=PROVENANCE, batch_size=batch_size))
    assert len(batches) == -(-len(whole) // batch_size)
    assert all(0 < len(b) <= batch_size for b in batches)
    assert all(b.crs == whole.crs for b in batches)
    assert_same_table(pd.concat(batches, ignore_index=True), whole)


def test_batches_of_no_patch_are_one_empty_table():
    shape = (20, 30)
    zeros = np.zeros(shape, np.uint8)
    pieces = [vectorise_block(zeros, score=np.zeros(shape, np.float32), before_class=zeros, after_class=zeros,
                              row0=0, col0=0, transform=TRANSFORM)]
    batches = list(merge_pieces_in_batches(pieces, rule_names=RULES, min_area_m2=(0.0, 0.0, 0.0),
                                           pixel_area_m2=PIXEL_AREA, crs=CRS, provenance=PROVENANCE))
    assert len(batches) == 1 and len(batches[0]) == 0
    assert list(batches[0].columns) == list(PATCH_COLUMNS) + ["geometry"]
    with pytest.raises(ValueError, match="batch_size"):
        next(merge_pieces_in_batches(pieces, rule_names=RULES, min_area_m2=(0.0, 0.0, 0.0),
                                     pixel_area_m2=PIXEL_AREA, crs=CRS, provenance=PROVENANCE, batch_size=0))


def test_table_columns_and_types(whole):
    assert list(whole.columns) == list(PATCH_COLUMNS) + ["geometry"]
    assert whole.crs.to_epsg() == 4549
    assert list(whole["patch_id"]) == sorted(whole["patch_id"])
    assert whole["patch_id"].is_unique
    assert set(whole["rule"]) == set(RULES)
    assert (whole["status"] == "pending").all() and (whole["version"] == 0).all()
    assert (whole["job_id"] == "job42").all() and (whole["epoch_after"] == "2024").all()
    assert set(whole.geom_type) == {"Polygon"}
    assert whole.geometry.is_valid.all()
    assert whole["score"].between(0, 1).all()
    np.testing.assert_allclose(whole["area_mu"], whole["area_m2"] / M2_PER_MU)


def test_areas_add_up_to_changed_pixels(scene, whole):
    rule = scene["rule"]
    assert whole["area_m2"].sum() == pytest.approx((rule > 0).sum() * PIXEL_AREA, rel=1e-12)
    for k, name in enumerate(RULES, start=1):
        sel = whole[whole["rule"] == name]
        assert sel["area_m2"].sum() == pytest.approx((rule == k).sum() * PIXEL_AREA, rel=1e-12)
    # the polygons cover exactly the pixels counted
    np.testing.assert_allclose(whole.geometry.area, whole["area_m2"], rtol=1e-9, atol=1e-8)
    # near the central meridian the GK scale factor is 1 - ~1e-9: ellipsoidal ~ planar
    np.testing.assert_allclose(whole["area_ellipsoidal_m2"], whole["area_m2"], rtol=1e-3)


def test_polygons_rasterise_back_to_the_rule_raster(scene, whole):
    rule = scene["rule"]
    for k, name in enumerate(RULES, start=1):
        sel = whole[whole["rule"] == name]
        burnt = rasterio.features.rasterize(((g, 1) for g in sel.geometry), out_shape=rule.shape,
                                            transform=TRANSFORM, dtype=np.uint8)
        np.testing.assert_array_equal(burnt == 1, rule == k)


def test_attributes_match_a_direct_computation(scene, whole):
    """Each patch's counts equal those of its 4-connected component in the whole raster."""
    rule = scene["rule"]
    four = ndimage.generate_binary_structure(2, 1)
    for row in whole.itertuples():
        k = RULES.index(row.rule) + 1
        _, r, c = row.patch_id.rsplit("-", 2)
        r, c = int(r), int(c)
        assert rule[r, c] == k
        labels, _ = ndimage.label(rule == k, structure=four)
        comp = labels == labels[r, c]
        first = np.argwhere(comp)[0]
        assert tuple(first) == (r, c)  # the anchor is the component's first pixel in raster order
        n = comp.sum()
        assert row.area_m2 == n * PIXEL_AREA
        assert row.farmland_m2 == pytest.approx(scene["farmland"][comp].sum() * PIXEL_AREA)
        assert row.approved_m2 == pytest.approx(scene["approved"][comp].sum() * PIXEL_AREA)
        assert row.score == pytest.approx(scene["score"][comp].astype(np.float64).mean(), abs=1e-6)
        counts = np.bincount(scene["county"][comp], minlength=4)
        assert row.county == (COUNTIES[int(np.argmax(counts[1:]))] if counts[1:].any() else "")
        before = np.bincount(scene["before_class"][comp], minlength=7)
        assert row.before_class == LandCover(int(np.argmax(before))).label


def test_minimum_mapping_unit_per_rule(scene, whole):
    min_area = (2.0, 0.0, 1e9)
    out = merge(vectorise_chunked(scene, (20, 30)), min_area=min_area)
    expect = whole[((whole["rule"] == RULES[0]) & (whole["area_m2"] >= 2.0)) | (whole["rule"] == RULES[1])]
    assert_same_table(out, expect.reset_index(drop=True))
    assert (out["rule"] != RULES[2]).all()


def test_empty_raster_gives_no_patches():
    z = np.zeros((40, 50), np.uint8)
    pieces = [vectorise_block(z[r:r + 16, c:c + 16], score=np.zeros((40, 50), np.float32)[r:r + 16, c:c + 16],
                              before_class=z[r:r + 16, c:c + 16], after_class=z[r:r + 16, c:c + 16],
                              row0=r, col0=c, transform=TRANSFORM)
              for r in range(0, 40, 16) for c in range(0, 50, 16)]
    assert all(len(p) == 0 for p in pieces)
    out = merge(pieces)
    assert len(out) == 0
    assert list(out.columns) == list(PATCH_COLUMNS) + ["geometry"]
    assert len(merge([])) == 0


def test_inputs_are_not_modified(scene):
    copies = {k: v.copy() for k, v in scene.items()}
    vectorise_chunked(scene, (17, 23))
    for k, v in scene.items():
        np.testing.assert_array_equal(v, copies[k])
        assert v.dtype == copies[k].dtype


def test_missing_optional_planes_give_zeros():
    rule = np.zeros((10, 10), np.uint8)
    rule[2:5, 2:6] = 1
    p = vectorise_block(rule, score=np.full(rule.shape, 0.5, np.float32), before_class=np.full(rule.shape, 3, np.uint8),
                        after_class=np.ones(rule.shape, np.uint8), row0=100, col0=200, transform=TRANSFORM)
    out = merge([p], rules=RULES)
    assert len(out) == 1
    row = out.iloc[0]
    assert row.patch_id == "construction_on_farmland-0000102-0000202"
    assert row.county == "" and row.farmland_m2 == 0 and row.approved_m2 == 0
    assert row.before_class == "low_vegetation" and row.after_class == "built"
    assert row.score == pytest.approx(0.5)
    assert row.geometry.equals(shapely.box(500_040.4, 3_399_979.0, 500_041.2, 3_399_979.6))


def test_bad_inputs_raise():
    rule = np.zeros((8, 8), np.uint8)
    ok = dict(score=np.zeros((8, 8), np.float32), before_class=rule, after_class=rule, row0=0, col0=0,
              transform=TRANSFORM)
    with pytest.raises(ValueError, match="score: expected shape"):
        vectorise_block(rule, **{**ok, "score": np.zeros((8, 9), np.float32)})
    with pytest.raises(ValueError, match="rule: expected an unsigned"):
        vectorise_block(rule.astype(np.float32), **ok)
    rule[1, 1] = 4
    p = vectorise_block(rule, **ok)
    with pytest.raises(ValueError, match="rule value 4 has no name"):
        merge([p])
    with pytest.raises(ValueError, match="min_area_m2: expected 3"):
        merge([p], min_area=(1.0,))
    with pytest.raises(ValueError, match="appears twice"):
        merge([p, p], rules=RULES + ("x",), min_area=(0,) * 4)
    bad = np.zeros((8, 8), np.uint8)
    bad[1, 1] = 9
    with pytest.raises(ValueError, match="before_class: code 9"):
        vectorise_block(rule, **{**ok, "before_class": bad})


def test_gdal_polygons_are_already_canonical():
    """The claim _polygonise relies on: normalize(GDAL polygon) == _canonical(GDAL polygon)."""
    rng = np.random.default_rng(3)
    geoms = []
    for _ in range(20):
        a = (rng.random((25, 25)) < rng.uniform(0.35, 0.65)).astype(np.uint8)
        geoms.append(vectorise_block(a, score=np.zeros(a.shape, np.float32), before_class=a, after_class=a,
                                     row0=0, col0=0, transform=TRANSFORM).geometry)
    geoms = np.concatenate(geoms)
    assert geoms.size > 500
    assert shapely.equals_exact(geoms, _canonical(geoms), tolerance=0).all()


def test_ellipsoidal_area_grows_away_from_the_central_meridian():
    # GK scale factor k > 1 away from the central meridian: true (ellipsoidal) area = planar / k^2
    near = shapely.box(500_000, 3_400_000, 500_100, 3_400_100)
    far = shapely.box(600_000, 3_400_000, 600_100, 3_400_100)
    a_near, a_far = ellipsoidal_area_m2(np.array([near, far]), CRS)
    assert a_near == pytest.approx(10_000, rel=1e-6)
    assert a_far == pytest.approx(10_000 / 1.000123**2, rel=2e-5)


def test_ellipsoidal_area_is_the_geodesic_area():
    # the areal scale factor at the centroid against pyproj's geodesic area ring by ring, on
    # polygons with holes and multipolygons, near and far from the central meridian, up to 5 km
    import pyproj
    import shapely.affinity

    from imagery_watch.vectorise import _geodesic_area_m2

    rng = np.random.default_rng(11)
    geoms = []
    for x0 in (500_000, 560_000, 640_000):
        for size in (20.0, 300.0, 5_000.0):
            centre = shapely.Point(x0 + rng.uniform(0, 1000), 3_400_000 + rng.uniform(0, 1000))
            outer = centre.buffer(size / 2, quad_segs=6)
            geoms.append(outer.difference(centre.buffer(size / 6)))  # a hole
            geoms.append(shapely.MultiPolygon([outer, shapely.affinity.translate(outer, size * 2)]))
    geoms = np.array(geoms, dtype=object)
    crs = pyproj.CRS.from_user_input(CRS)
    fast = ellipsoidal_area_m2(geoms, CRS)
    exact = _geodesic_area_m2(geoms, crs)
    np.testing.assert_allclose(fast, exact, rtol=1e-6)  # 0.01 cm2 on a 100 m2 patch
    assert not np.allclose(fast, shapely.area(geoms), rtol=1e-6)  # away from the meridian, plane != ellipsoid
    # a CRS in feet, and Web Mercator (whose scale factors are those of a sphere): still the
    # geodesic area, in m2; empty and missing geometries have none
    for other, box in (("EPSG:2229", shapely.box(6_500_000, 1_800_000, 6_501_000, 1_801_000)),
                       ("EPSG:3857", shapely.box(13_440_000, 3_600_000, 13_441_000, 3_601_000))):
        shapes = np.array([box, shapely.Polygon(), None, box.buffer(-100)], dtype=object)
        got = ellipsoidal_area_m2(shapes, other)
        want = _geodesic_area_m2(shapes[[0, 3]], pyproj.CRS(other))
        np.testing.assert_allclose(got[[0, 3]], want, rtol=1e-6)
        assert got[1] == got[2] == 0
        if other == "EPSG:2229":  # 1000 x 1000 US survey feet (1200/3937 m) inside the zone, in m2
            assert got[0] == pytest.approx(1000**2 * (1200 / 3937) ** 2, rel=1e-3)
    # a geographic CRS: geodesic areas directly (a 0.001 degree square near Jiaxing, about 10,000 m2)
    square = np.array([shapely.box(120.75, 30.75, 120.751, 30.751)], dtype=object)
    lonlat = ellipsoidal_area_m2(square, "EPSG:4490")
    assert lonlat[0] == pytest.approx(_geodesic_area_m2(square, pyproj.CRS("EPSG:4490"))[0], rel=1e-12)
    assert 9_000 < lonlat[0] < 11_000
    assert ellipsoidal_area_m2(np.array([], dtype=object), CRS).shape == (0,)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(1, 30), width=st.integers(1, 30),
       bh=st.integers(1, 31), bw=st.integers(1, 31), density=st.floats(0.2, 0.8),
       n_rules=st.integers(1, 3))
def test_property_chunking_never_matters(seed, height, width, bh, bw, density, n_rules):
    rng = np.random.default_rng(seed)
    rule = np.where(rng.random((height, width)) < density,
                    rng.integers(1, n_rules + 1, (height, width)), 0).astype(np.uint8)
    scene = {"rule": rule, "score": rng.random(rule.shape, dtype=np.float32),
             "before_class": rng.integers(0, 7, rule.shape, dtype=np.uint8),
             "after_class": rng.integers(0, 7, rule.shape, dtype=np.uint8),
             "farmland": rng.random(rule.shape) < 0.5, "approved": rng.random(rule.shape) < 0.3,
             "county": rng.integers(0, 4, rule.shape, dtype=np.uint16)}
    copy = rule.copy()
    whole = merge(vectorise_chunked(scene, rule.shape))
    assert_same_table(merge(vectorise_chunked(scene, (bh, bw), order_seed=seed)), whole)
    assert whole["area_m2"].sum() == pytest.approx((rule > 0).sum() * PIXEL_AREA, rel=1e-12)
    assert whole.geometry.is_valid.all()
    np.testing.assert_array_equal(rule, copy)


def test_small_interior_components_dropped_early_give_the_same_patches():
    """min_pixels only drops what the minimum mapping unit would drop after merging."""
    from imagery_watch.vectorise import merge_pieces, vectorise_block

    rng = np.random.default_rng(11)
    rule = np.zeros((64, 96), np.uint8)
    for _ in range(40):
        r, c = rng.integers(0, 60), rng.integers(0, 92)
        rule[r:r + rng.integers(1, 8), c:c + rng.integers(1, 8)] = rng.integers(1, 3)
    zeros = np.zeros(rule.shape, np.float32)
    cls = np.ones(rule.shape, np.uint8)
    tf = Affine(0.2, 0, 500000, 0, -0.2, 3400000)
    min_area = [1.0, 0.6]  # 25 and 15 pixels of 0.04 m2

    def run(min_pixels):
        pieces = [vectorise_block(rule[r:r + 32, c:c + 48], score=zeros[r:r + 32, c:c + 48],
                                  before_class=cls[r:r + 32, c:c + 48], after_class=cls[r:r + 32, c:c + 48],
                                  row0=r, col0=c, transform=tf, min_pixels=min_pixels)
                  for r in (0, 32) for c in (0, 48)]
        return pieces, merge_pieces(pieces, rule_names=["a", "b"], min_area_m2=min_area, pixel_area_m2=0.04,
                                    crs="EPSG:4549", county_names=(), provenance=PROVENANCE)

    early_pieces, early = run([25, 15])
    late_pieces, late = run(None)
    assert sum(len(p.rule) for p in early_pieces) < sum(len(p.rule) for p in late_pieces)
    assert len(late) > 0
    assert list(early["patch_id"]) == list(late["patch_id"])
    assert np.allclose(early["area_m2"], late["area_m2"])


# --------------------------------------------------------------------------------------
# tracing at the analysis resolution


def _analysis_scene(seed: int, shape: tuple, factor: int) -> dict:
    """An analysis-resolution result of blobs and input-resolution layers whose boundaries
    are off the analysis lattice (farmland, approved land, counties)."""
    from imagery_watch.features import block_all

    rng = np.random.default_rng(seed)
    cshape = (-(-shape[0] // factor), -(-shape[1] // factor))
    coarse = make_scene(seed, shape=cshape, sigma=1.5)
    valid = np.ones(shape, bool)
    valid[rng.integers(0, shape[0]):, : rng.integers(0, shape[1] // 4)] = False  # a nodata corner
    coarse["rule"][~block_all(valid, factor)[:cshape[0], :cshape[1]]] = 0  # as detection leaves it
    county = np.zeros(shape, np.uint16)
    county[:, 7: shape[1] // 2 + 1] = 1
    county[:, shape[1] // 2 + 1:] = 2
    county[shape[0] // 2 + 3:, 2 * shape[1] // 3 - 2:] = 3
    return {
        "coarse": coarse, "valid": valid, "county": county,
        "farmland": ndimage.gaussian_filter(rng.standard_normal(shape), 6) > 0,
        "approved": ndimage.gaussian_filter(rng.standard_normal(shape), 6) > 0.1,
    }


@pytest.mark.parametrize("seed, shape, block", [
    (1, (96, 120), (96, 120)),
    (2, (98, 121), (32, 40)),  # partial analysis pixels along the bottom and right edges
    (3, (100, 92), (24, 48)),
])
def test_tracing_at_the_analysis_resolution_gives_the_same_patches(seed, shape, block):
    """vectorise_analysis_block == vectorise_block of the expanded result, for any chunking,
    with rules cut to the farmland boundary, partial edge blocks and county boundaries."""
    from imagery_watch.config import Rule
    from imagery_watch.detect import DetectResult, expand_result, inexact_pixels
    from imagery_watch.vectorise import vectorise_analysis_block

    f = 4
    s = _analysis_scene(seed, shape, f)
    rules = [Rule(name=n, before=frozenset(), after=frozenset(), where=w, min_area_m2=a)
             for n, w, a in zip(RULES, ("farmland", "anywhere", "outside_farmland"), (1.0, 0.0, 0.5))]
    c = s["coarse"]
    coarse = DetectResult(c["rule"], c["score"], c["before_class"], c["after_class"])
    min_pixels = [int(r.min_area_m2 / PIXEL_AREA) for r in rules]
    full = expand_result(coarse, factor=f, valid=s["valid"], farmland=s["farmland"], rules=rules)

    def chunks():
        for r0 in range(0, shape[0], block[0]):
            for c0 in range(0, shape[1], block[1]):
                yield np.s_[r0:r0 + block[0], c0:c0 + block[1]], r0, c0

    reference, traced, expanded = [], [], []
    for win, r0, c0 in chunks():
        layers = {k: s[k][win] for k in ("farmland", "approved", "county")}
        fw = full_win = tuple(full_part[win] for full_part in full)
        reference.append(vectorise_block(fw[0], score=fw[1], before_class=fw[2], after_class=fw[3], **layers,
                                         row0=r0, col0=c0, transform=TRANSFORM, min_pixels=min_pixels))
        cwin = np.s_[r0 // f: -(-(r0 + block[0]) // f), c0 // f: -(-(c0 + block[1]) // f)]
        part = DetectResult(*(a[cwin] for a in coarse))
        core_shape = full_win[0].shape
        valid, farmland = s["valid"][win], s["farmland"][win]

        def expand(window, part=part, valid=valid, farmland=farmland):
            expanded.append(window)
            return expand_result(part, factor=f, valid=valid, farmland=farmland, rules=rules, window=window)

        inexact = inexact_pixels(part.rule, factor=f, shape=core_shape, farmland=farmland, rules=rules)
        traced.append(vectorise_analysis_block(
            part.rule, score=part.score, before_class=part.before_class, after_class=part.after_class,
            factor=f, shape=core_shape, inexact=inexact, expand=expand, **layers, row0=r0, col0=c0,
            transform=TRANSFORM, min_pixels=min_pixels))
    min_area = [r.min_area_m2 for r in rules]
    want = merge(reference, min_area=min_area)
    assert len(want) > 10
    assert expanded  # some components did need input pixels
    assert_same_table(merge(traced, min_area=min_area), want)
    # only the components with inexact analysis pixels were expanded, one window each
    assert len(expanded) < sum(len(p) for p in reference)


# --------------------------------------------------------------------------------------
# fast paths of the analysis-resolution tracing


@pytest.mark.parametrize("shape", [(64, 48), (66, 47)])  # whole blocks / blocks cut by the edges
def test_block_counts_and_uniform_blocks_at_changed_pixels(shape):
    """_block_counts_at and _uniform_blocks_at == block_count over the whole plane, taken at
    the asked blocks, also on a cropped (strided) plane."""
    from imagery_watch.features import block_count, upsample
    from imagery_watch.vectorise import _block_counts_at, _uniform_blocks_at

    f = 4
    rng = np.random.default_rng(5)
    big = ndimage.gaussian_filter(rng.standard_normal((shape[0] + 9, shape[1] + 7)), 2) > 0
    mask = big[4:4 + shape[0], 3:3 + shape[1]]  # a view, as the pipeline passes the core
    county = np.zeros((shape[0] + 9, shape[1] + 7), np.uint16)
    county[:, 21:] = 1
    county[30:, 40:] = 2
    county = county[4:4 + shape[0], 3:3 + shape[1]]
    cshape = (-(-shape[0] // f), -(-shape[1] // f))
    rows, cols = np.nonzero(rng.random(cshape) < 0.5)
    want = block_count(mask, f)[rows, cols]
    np.testing.assert_array_equal(_block_counts_at(mask, f, rows, cols), want)
    np.testing.assert_array_equal(_block_counts_at(mask.astype(np.uint8) * 3, f, rows, cols), want)
    uniform = block_count(county == upsample(county[::f, ::f], f, shape), f) == f * f
    got = _uniform_blocks_at(county, f, rows, cols)
    np.testing.assert_array_equal(got, uniform[rows, cols])
    assert got.any() and not got.all()


def _sparse_labels(seed: int, shape=(120, 150)) -> tuple:
    """Labels of scattered components of 1..3 rule values (pinches, holes, touching
    components of different values), on a mostly empty raster."""
    rng = np.random.default_rng(seed)
    rule = np.zeros(shape, np.uint8)
    for _ in range(25):
        h, w = rng.integers(2, 14, 2)
        r, c = rng.integers(0, shape[0] - h), rng.integers(0, shape[1] - w)
        blob = rng.random((h, w)) < rng.uniform(0.4, 0.9)
        rule[r:r + h, c:c + w][blob] = rng.integers(1, 4)
    return rule


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("scale", [1, 4])
def test_packed_components_trace_to_the_same_polygons(monkeypatch, seed, scale):
    """_polygonise packs scattered components side by side before tracing: the polygons
    are bit for bit the ones traced in place."""
    from imagery_watch import vectorise

    labels, n = vectorise._label(_sparse_labels(seed))
    packed = []
    pack = vectorise._pack
    monkeypatch.setattr(vectorise, "_pack", lambda *a: packed.append(pack(*a)) or packed[-1])
    got = vectorise._polygonise(labels, n, 100, 200, scale)
    assert packed[0] is not None and packed[0][0].size < labels.size / 2
    monkeypatch.setattr(vectorise, "PACK_FRACTION", 0.0)  # nothing is worth packing
    want = vectorise._polygonise(labels, n, 100, 200, scale)
    assert packed[1] is None
    assert n > 20
    assert list(shapely.to_wkb(got)) == list(shapely.to_wkb(want))
