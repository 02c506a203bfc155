"""Tests of imagery_watch.io.vectors.rasterise_window against a plain full rasterisation."""

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio import features

from imagery_watch.io import vectors
from imagery_watch.io.vectors import rasterise_window

TRANSFORM = Affine(0.2, 0.0, 500_000.0, 0.0, -0.2, 3_400_000.0)
SHAPE = (600, 800)  # the whole test grid


def _layer(tmp_path, n: int, seed: int, name: str = "layer"):
    """n random polygons (ragged, overlapping, some with holes) with a value field."""
    rng = np.random.default_rng(seed)
    polys = []
    for _ in range(n):
        cx, cy = 500_000 + rng.uniform(0, 160), 3_400_000 - rng.uniform(0, 120)
        r = rng.uniform(3, 60)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
        radii = r * rng.uniform(0.6, 1.0, angles.size)
        p = shapely.Polygon(np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]).buffer(0)
        if rng.random() < 0.3:
            p = p.difference(shapely.Point(cx, cy).buffer(r / 4))
        polys.append(p)
    path = tmp_path / f"{name}.gpkg"
    gpd.GeoDataFrame({"value": np.arange(1, n + 1, dtype=np.int32)}, geometry=polys, crs="EPSG:4549") \
        .to_file(path, layer=name, driver="GPKG")
    return path, polys


def _reference(polys, values, window_transform, shape, dtype):
    out = np.zeros(shape, dtype)
    features.rasterize(zip(polys, values), out=out, transform=window_transform, dtype=dtype)
    return out


@pytest.mark.parametrize("n", [5, vectors.SMALL_LAYER_FEATURES + 30])  # kept in memory / queried
def test_windows_equal_the_plain_rasterisation(tmp_path, n):
    path, polys = _layer(tmp_path, n, seed=n)
    rng = np.random.default_rng(1)
    windows = [(int(rng.integers(-100, SHAPE[0])), int(rng.integers(-100, SHAPE[1])),
                int(rng.integers(1, 300)), int(rng.integers(1, 300))) for _ in range(25)]
    windows.append((-50, -50, SHAPE[0] + 100, SHAPE[1] + 100))  # more than the whole grid
    mixed = 0
    for r0, c0, h, w in windows:
        t = TRANSFORM @ Affine.translation(c0, r0)
        got = rasterise_window(path, "layer", transform=t, shape=(h, w), values="value", dtype=np.uint16)
        want = _reference(polys, range(1, n + 1), t, (h, w), np.uint16)
        np.testing.assert_array_equal(got, want)
        mask = rasterise_window(path, "layer", transform=t, shape=(h, w))
        np.testing.assert_array_equal(mask, _reference(polys, [1] * n, t, (h, w), np.uint8))
        mixed += int(0 < (want > 0).mean() < 1)
    assert mixed >= 5  # windows across polygon boundaries, not only inside or outside


def test_window_inside_one_polygon_and_outside_all(tmp_path):
    path, _ = _layer(tmp_path, 1, seed=3)
    square = shapely.box(500_010, 3_399_950, 500_050, 3_399_990)
    gpd.GeoDataFrame({"value": [7]}, geometry=[square], crs="EPSG:4549").to_file(path, layer="sq", driver="GPKG")
    inside = TRANSFORM @ Affine.translation(60, 60)  # 500012, 3399988: 20 x 20 px inside the square
    got = rasterise_window(path, "sq", transform=inside, shape=(20, 20), values="value", dtype=np.uint16)
    assert (got == 7).all()
    edge = TRANSFORM @ Affine.translation(45, 45)  # straddles the square's corner
    got = rasterise_window(path, "sq", transform=edge, shape=(20, 20))
    assert got[:5].sum() == 0 and got[:, :5].sum() == 0 and got[5:, 5:].all()
    far = TRANSFORM @ Affine.translation(5000, 5000)
    assert not rasterise_window(path, "sq", transform=far, shape=(10, 10)).any()


def test_a_rewritten_small_layer_is_read_again(tmp_path):
    path = tmp_path / "c.gpkg"
    t = TRANSFORM @ Affine.translation(10, 10)
    for value in (3, 5):
        gpd.GeoDataFrame({"value": [value]}, geometry=[shapely.box(500_000, 3_399_900, 500_100, 3_400_000)],
                         crs="EPSG:4549").to_file(path, layer="c", driver="GPKG")
        got = rasterise_window(path, "c", transform=t, shape=(4, 4), values="value", dtype=np.uint16)
        assert (got == value).all()


def test_neighbouring_windows_share_one_query(tmp_path, monkeypatch):
    """Windows in raster order, as the chunks of a job: the features are read for a region
    around the first window and the next ones take theirs from it; same pixels as a plain
    rasterisation of the whole layer."""
    n = vectors.SMALL_LAYER_FEATURES + 30
    path, polys = _layer(tmp_path, n, seed=4)
    reads = []
    read = vectors.pyogrio.raw.read
    monkeypatch.setattr(vectors.pyogrio.raw, "read", lambda *a, **k: reads.append(k.get("bbox")) or read(*a, **k))
    windows = [(r0, c0) for r0 in range(0, 480, 120) for c0 in range(0, 640, 160)]
    for r0, c0 in windows:
        t = TRANSFORM @ Affine.translation(c0, r0)
        got = rasterise_window(path, "layer", transform=t, shape=(120, 160), values="value", dtype=np.uint16)
        np.testing.assert_array_equal(got, _reference(polys, range(1, n + 1), t, (120, 160), np.uint16))
    assert 1 < len(reads) <= len(windows) // 2


def test_a_rewritten_large_layer_is_read_again(tmp_path):
    n = vectors.SMALL_LAYER_FEATURES + 10
    path = tmp_path / "big.gpkg"
    t = TRANSFORM @ Affine.translation(10, 10)
    boxes = [shapely.box(500_000 - i / 100, 3_399_900, 500_100 - i / 100, 3_400_000) for i in range(n)]
    for offset in (0, 100):
        gpd.GeoDataFrame({"value": np.arange(n) + offset}, geometry=boxes, crs="EPSG:4549") \
            .to_file(path, layer="big", driver="GPKG")
        got = rasterise_window(path, "big", transform=t, shape=(4, 4), values="value", dtype=np.uint16)
        assert (got == n - 1 + offset).all()  # the last feature covers the window


@pytest.mark.parametrize("n", [4, vectors.SMALL_LAYER_FEATURES + 4])
def test_polygons_over_the_whole_window_hide_the_earlier_ones(tmp_path, n):
    """A window inside several polygons: the last polygon over every pixel is filled in
    directly and only the later ones that cross the window are burnt; same pixels."""
    big = shapely.box(499_990, 3_399_900, 500_100, 3_400_010)  # over the whole window
    part = shapely.box(500_010, 3_399_950, 500_050, 3_399_990)  # across it
    far = shapely.box(500_500, 3_399_000, 500_510, 3_399_010)
    polys = [part, big, big.difference(part.buffer(3)), part.buffer(-5), far] + [far] * (n - 4)
    path = tmp_path / "nested.gpkg"
    gpd.GeoDataFrame({"value": np.arange(1, len(polys) + 1)}, geometry=polys, crs="EPSG:4549") \
        .to_file(path, layer="nested", driver="GPKG")
    kinds = []
    for c0, r0, h, w in ((30, 30, 150, 200), (0, 0, 50, 50), (45, 45, 20, 20)):
        t = TRANSFORM @ Affine.translation(c0, r0)
        got = rasterise_window(path, "nested", transform=t, shape=(h, w), values="value", dtype=np.uint16)
        want = _reference(polys, range(1, len(polys) + 1), t, (h, w), np.uint16)
        np.testing.assert_array_equal(got, want)
        kinds.append(len(np.unique(want)))
    assert kinds == [3, 2, 1]  # later polygons across the window, or none


def test_geojson_mappings_are_the_geo_interface():
    """The mappings handed to rasterio hold the coordinates of __geo_interface__, in order."""
    from imagery_watch.io.vectors import _geojson

    square = shapely.box(0, 0, 10, 10).difference(shapely.box(2, 2, 4, 4))
    multi = shapely.MultiPolygon([shapely.box(20, 0, 30, 5), square])
    tri = shapely.Polygon([(0, 0), (5, 1.5), (1, 7.25)])
    pairs = _geojson(np.array([square, multi, tri], dtype=object), np.array([3, 4, 5]))
    for (mapping, value), geom, want in zip(pairs, (square, multi, tri), (3, 4, 5)):
        gi = geom.__geo_interface__
        assert mapping["type"] == gi["type"] and value == want

        def tuples(c):
            return [tuple(x) for x in c] if isinstance(c[0][0], float) else [tuples(x) for x in c]

        assert tuples(mapping["coordinates"]) == tuples(gi["coordinates"])
