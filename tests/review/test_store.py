"""The review store: in-place decisions in the GeoPackage, the log, keyset paging at 100,000 patches."""

from __future__ import annotations

import itertools
import threading

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from imagery_watch.errors import (ImageryWatchError, InputFileError, JobError, PatchNotFoundError,
                                  SampleExistsError, StaleVersionError, UserError)
from imagery_watch.review.gpkg import geometry_from_gpkg, geometry_to_gpkg
from imagery_watch.review.store import PatchFilter, PatchStore, decode_cursor, encode_cursor


def test_decision_updates_patch_row_and_appends_log(job_dir):
    store = PatchStore(job_dir / "patches.gpkg")
    d = store.decide("p0001", "illegal", reviewer="alice", version=0, note="no permit")
    assert d.patch["version"] == 1 and d.from_status == "pending"
    d2 = store.decide("p0001", "field_visit", reviewer="bob", version=1)
    assert d2.patch["note"] is None
    # visible to any GeoPackage reader (QGIS uses GDAL like pyogrio)
    gdf = gpd.read_file(job_dir / "patches.gpkg", layer="patches").set_index("patch_id")
    row = gdf.loc["p0001"]
    assert (row["status"], row["reviewer"], int(row["version"])) == ("field_visit", "bob", 2)
    assert str(row["reviewed_at"]).startswith(d2.patch["reviewed_at"][:10])
    assert gdf.loc["p0000", "status"] == "pending"
    layers = dict(pyogrio.list_layers(job_dir / "patches.gpkg"))
    assert "decision_log" in layers
    log = pyogrio.read_dataframe(job_dir / "patches.gpkg", layer="decision_log")
    assert list(log["to_status"]) == ["illegal", "field_visit"]
    assert list(log["from_status"]) == ["pending", "illegal"]
    assert list(log["reviewer"]) == ["alice", "bob"]
    assert log["note"].iloc[0] == "no permit"
    assert [h["to_version"] for h in store.history("p0001")] == [1, 2]


def test_stale_version_is_refused_and_names_the_winner(job_dir):
    store = PatchStore(job_dir / "patches.gpkg")
    store.decide("p0002", "legal", reviewer="alice", version=0, note="permit 12")
    with pytest.raises(StaleVersionError, match="alice set it to legal") as err:
        store.decide("p0002", "illegal", reviewer="bob", version=0)
    assert err.value.current["reviewer"] == "alice" and err.value.current["version"] == 1
    assert len(store.history("p0002")) == 1


def test_concurrent_decisions_one_wins(job_dir):
    path = job_dir / "patches.gpkg"
    PatchStore(path)
    results = []

    def worker(name):
        try:
            PatchStore(path).decide("p0003", "illegal", reviewer=name, version=0)
            results.append(name)
        except StaleVersionError:
            results.append("conflict")

    threads = [threading.Thread(target=worker, args=(f"user{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("conflict") == 3
    assert len(PatchStore(path).history("p0003")) == 1


def test_bad_input_errors(job_dir, tmp_path):
    store = PatchStore(job_dir / "patches.gpkg")
    with pytest.raises(PatchNotFoundError):
        store.decide("nope", "illegal", reviewer="a", version=0)
    with pytest.raises(ValueError, match="unknown decision"):
        store.decide("p0001", "pending", reviewer="a", version=0)
    with pytest.raises(InputFileError, match="patch file not found"):
        PatchStore(tmp_path / "missing.gpkg")
    with pytest.raises(InputFileError, match="no layer 'other'"):
        PatchStore(job_dir / "patches.gpkg", layer="other")
    gdf = gpd.GeoDataFrame({"x": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4549")
    gdf.to_file(tmp_path / "bad.gpkg", layer="patches", engine="pyogrio")
    with pytest.raises(JobError, match="lacks column"):
        PatchStore(tmp_path / "bad.gpkg")


def test_review_errors_belong_to_the_one_hierarchy(job_dir, tmp_path):
    classes = ((StaleVersionError, RuntimeError), (PatchNotFoundError, KeyError), (UserError, ValueError),
               (SampleExistsError, FileExistsError))
    for cls, builtin in classes:
        assert issubclass(cls, ImageryWatchError) and issubclass(cls, builtin)
    review_codes = [cls.exit_code for cls, _ in classes]
    other_codes = {c.exit_code for c in ImageryWatchError.__subclasses__() if c not in dict(classes)}
    assert len(set(review_codes)) == len(review_codes) and not set(review_codes) & other_codes  # codes tell them apart
    store = PatchStore(job_dir / "patches.gpkg")
    with pytest.raises(ImageryWatchError) as err:
        store.get("nope")
    assert str(err.value) == "no patch 'nope' in patches.gpkg"  # not quoted like a KeyError


def test_geometry_blob_round_trip():
    g = shapely.Polygon([(0, 0), (3, 0), (3, 2), (0, 0)])
    assert geometry_from_gpkg(geometry_to_gpkg(g, 4549)).equals(g)
    assert decode_cursor(encode_cursor(0.1 + 0.2, 7)) == (0.1 + 0.2, 7)


def _big_gpkg(path, n=100_000, seed=1):
    rng = np.random.default_rng(seed)
    x = 652000 + rng.uniform(0, 20000, n)
    y = 3400000 + rng.uniform(0, 20000, n)
    side = rng.uniform(5, 60, n)
    df = pd.DataFrame({
        "patch_id": [f"b{i:06d}" for i in range(n)],
        "rule": rng.choice(["construction_on_farmland", "afforestation", "demolition"], n),
        "county": rng.choice(["Nanhu", "Xiuzhou", "Jiashan", "Haiyan", "Haining", "Pinghu", "Tongxiang"], n),
        "area_m2": side * side, "area_mu": side * side / 666.67, "score": np.round(rng.uniform(0, 1, n), 3),
        "status": rng.choice(["pending", "illegal", "legal"], n, p=[0.8, 0.1, 0.1]), "version": 0,
    })
    gdf = gpd.GeoDataFrame(df, geometry=shapely.box(x, y, x + side, y + side), crs="EPSG:4549")
    gdf.to_file(path, layer="patches", driver="GPKG", engine="pyogrio", SPATIAL_INDEX="NO")
    df["fid"] = np.arange(1, n + 1)
    return df


def test_queue_at_100k_patches_pages_right_through_the_indexes(tmp_path):
    """Pages, counts and query plans at 100,000 patches (their timings: benchmarks/bench_review_load.py)."""
    path = tmp_path / "big.gpkg"
    df = _big_gpkg(path)
    store = PatchStore(path)
    flt = PatchFilter(county="Haining", status="pending", score_min=0.2, area_max_m2=2000)
    sel = df[(df.county == "Haining") & (df.status == "pending") & (df.score >= 0.2) & (df.area_m2 <= 2000)]
    expected = sel.sort_values(["score", "fid"], ascending=False)
    # first page, then a page deep in the queue (keyset)
    page = store.query(flt, sort="score_desc", limit=50)
    assert [p["patch_id"] for p in page.items] == list(expected["patch_id"][:50])
    deep = expected.iloc[5000]
    page = store.query(flt, sort="score_desc", after=encode_cursor(deep.score, deep.fid), limit=50)
    assert [p["patch_id"] for p in page.items] == list(expected["patch_id"][5001:5051])
    # area sort without filters, deep
    by_area = df.sort_values(["area_m2", "fid"], ascending=True)
    row = by_area.iloc[90_000]
    page = store.query(PatchFilter(), sort="area_asc", after=encode_cursor(row.area_m2, row.fid), limit=50)
    assert [p["patch_id"] for p in page.items] == list(by_area["patch_id"][90_001:90_051])
    summary = store.summary(PatchFilter(rule="afforestation"))
    aff = df[df.rule == "afforestation"]
    assert summary["pending"]["count"] == int((aff.status == "pending").sum())
    assert summary["total"]["area_m2"] == pytest.approx(aff.area_m2.sum())
    ranged = df[(df.score >= 0.2) & (df.score <= 0.6)]
    summary = store.summary(PatchFilter(score_min=0.2, score_max=0.6))
    for status in ("pending", "illegal", "legal"):
        assert summary[status]["count"] == int((ranged.status == status).sum())
        assert summary[status]["area_m2"] == pytest.approx(ranged.area_m2[ranged.status == status].sum())
    patch = store.get(expected["patch_id"].iloc[100])
    nb = store.neighbours(patch, flt, sort="score_desc")
    assert nb == {"next": [expected["patch_id"].iloc[101]], "previous": [expected["patch_id"].iloc[99]]}
    # a range on the other column than the sort: wide (walk the sort index) or narrow (read the range, sort it)
    for flt, sort, ascending in ((PatchFilter(score_min=0.3, score_max=0.7), "area_desc", False),
                                 (PatchFilter(score_min=0.999), "area_asc", True),
                                 (PatchFilter(area_min_m2=3500), "score_desc", False),
                                 (PatchFilter(area_min_m2=100, area_max_m2=900, status="pending"), "score_asc", True)):
        col = "score" if sort.startswith("score") else "area_m2"
        sel = df[(df.score >= (flt.score_min or 0)) & (df.score <= (flt.score_max or 1))
                 & (df.area_m2 >= (flt.area_min_m2 or 0)) & (df.area_m2 <= (flt.area_max_m2 or 1e9))
                 & ((df.status == flt.status) if flt.status else True)]
        want = list(sel.sort_values([col, "fid"], ascending=ascending)["patch_id"])
        page = store.query(flt, sort=sort, limit=50)
        assert [p["patch_id"] for p in page.items] == want[:50], (flt, sort)
        got = [p["patch_id"] for p in itertools.islice(store.iter_patches(flt, sort=sort, geometry=False, batch=400),
                                                        1200)]
        assert got == want[:1200], (flt, sort)  # three pages on, by cursor
    with store.connect() as con:
        def plan(flt, sort):
            sql, params = store.page_sql(con, flt, sort=sort)
            return " ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql, params + [51]))

        by_status = plan(PatchFilter(status="pending"), "score_desc")
        assert by_status == "SEARCH patches USING INDEX iw_patches_status_score (status=?)"
        wide = plan(PatchFilter(score_min=0.3, score_max=0.7), "area_desc")
        assert "INDEX iw_patches_area" in wide and "TEMP B-TREE" not in wide
        narrow = plan(PatchFilter(score_min=0.999), "area_asc")
        assert "iw_patches_score" in narrow and "(score>?)" in narrow  # the few rows of the range, then sorted
