"""Tests of imagery_watch.evaluate and the ``imagery-watch evaluate`` command.

The expected figures are worked out by hand from the boxes below (areas in m2).
"""

import json

import geopandas as gpd
import pytest
import shapely

from imagery_watch.cli import main
from imagery_watch.errors import VectorLayerError
from imagery_watch.evaluate import evaluate_patches, format_table
from imagery_watch.io.patches import write_patches

X0, Y0 = 500_000.0, 3_400_000.0
A, B, C, D = "construction_on_farmland", "afforestation", "demolition", "reclamation"


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def frame(rows, crs="EPSG:4549"):
    return gpd.GeoDataFrame({"rule": [r for r, _ in rows]}, geometry=[g for _, g in rows], crs=crs)


TRUTH = frame([
    (A, box(0, 0, 10, 10)),      # T1 100: P1 covers 60 + P5 4 -> found
    (A, box(20, 0, 30, 10)),     # T2 100: P2 covers 40 -> missed
    (A, box(40, 0, 50, 10)),     # T3 100: P3a 50 + P3b 20 -> found (two patches)
    (B, box(0, 100, 10, 110)),   # U1 100: covered only by an A patch -> missed
    (B, box(100, 100, 110, 110)),  # U2 100: R identical -> found
    (B, box(200, 0, 210, 10)),   # U3 100: S covers exactly 50 % -> found
    (D, box(400, 0, 401, 1)),    # V 1: no patch
])
PATCHES = frame([
    (A, box(0, 0, 10, 6)),       # P1 60, inside T1 -> correct
    (A, box(20, 0, 24, 10)),     # P2 40, inside T2 -> correct
    (A, box(40, 0, 45, 10)),     # P3a 50 -> correct
    (A, box(45, 0, 50, 4)),      # P3b 20 -> correct
    (A, box(60, 0, 70, 10)),     # P4 100, no truth -> wrong
    (A, box(8, 8, 12, 12)),      # P5 16, 4 in T1 = 25 % -> wrong
    (A, box(0, 100, 10, 110)),   # Q 100, on a B truth polygon only -> wrong
    (B, box(100, 100, 110, 110)),  # R 100 -> correct
    (B, box(200, 0, 205, 10)),   # S 50 -> correct
    (C, box(300, 0, 301, 1)),    # W 1, no truth of C -> wrong
])


def test_metrics_worked_out_by_hand():
    rep = evaluate_patches(PATCHES, TRUTH)
    a, b, c, d = (rep["rules"][r] for r in (A, B, C, D))
    assert list(rep["rules"]) == sorted([A, B, C, D])

    assert (a["truth_polygons"], a["found"], a["patches"], a["correct"]) == (3, 2, 7, 4)
    assert a["recall"] == pytest.approx(2 / 3) and a["precision"] == pytest.approx(4 / 7)
    assert a["truth_area_m2"] == pytest.approx(300) and a["flagged_area_m2"] == pytest.approx(386)
    assert a["overlap_area_m2"] == pytest.approx(60 + 40 + 50 + 20 + 4)
    assert a["area_error"] == pytest.approx(386 / 300 - 1)

    assert (b["truth_polygons"], b["found"], b["patches"], b["correct"]) == (3, 2, 2, 2)
    assert b["recall"] == pytest.approx(2 / 3) and b["precision"] == 1.0
    assert b["area_error"] == pytest.approx(-0.5)
    assert b["area_recall"] == pytest.approx(0.5) and b["area_precision"] == pytest.approx(1.0)

    assert (c["truth_polygons"], c["patches"], c["correct"]) == (0, 1, 0)
    assert c["recall"] is None and c["precision"] == 0.0 and c["area_error"] is None

    assert (d["truth_polygons"], d["found"], d["patches"]) == (1, 0, 0)
    assert d["recall"] == 0.0 and d["precision"] is None and d["area_error"] == pytest.approx(-1.0)

    o = rep["overall"]
    assert (o["truth_polygons"], o["found"], o["patches"], o["correct"]) == (7, 4, 10, 6)
    assert o["recall"] == pytest.approx(4 / 7) and o["precision"] == pytest.approx(6 / 10)
    assert o["truth_area_m2"] == pytest.approx(601) and o["flagged_area_m2"] == pytest.approx(537)
    assert o["area_error"] == pytest.approx(537 / 601 - 1)
    assert rep["min_overlap"] == 0.5


def test_stricter_overlap_threshold():
    rep = evaluate_patches(PATCHES, TRUTH, min_overlap=0.65)
    assert rep["rules"][A]["found"] == 1  # T3 (70 %) only; T1 is covered 64 %
    assert rep["rules"][B]["found"] == 1  # U3's 50 % no longer counts


def test_truth_in_another_crs_is_reprojected():
    rep = evaluate_patches(PATCHES, TRUTH.to_crs("EPSG:4490"))
    assert rep["overall"]["found"] == 4 and rep["overall"]["correct"] == 6


def test_empty_inputs():
    rep = evaluate_patches(PATCHES.iloc[:0], TRUTH.iloc[:0])
    assert rep["rules"] == {}
    assert rep["overall"]["recall"] is None and rep["overall"]["patches"] == 0
    assert "overall" in format_table(rep)


def test_missing_rule_column():
    with pytest.raises(VectorLayerError, match="truth: no 'rule' column"):
        evaluate_patches(PATCHES, TRUTH.rename(columns={"rule": "kind"}))


def test_inputs_not_modified():
    p, t = PATCHES.copy(), TRUTH.copy()
    evaluate_patches(PATCHES, TRUTH.to_crs("EPSG:4490"))
    assert PATCHES.equals(p) and TRUTH.equals(t)


def test_cli(tmp_path, capsys):
    patches_path, truth_path = tmp_path / "patches.gpkg", tmp_path / "scene.gpkg"
    write_patches(PATCHES, patches_path)
    write_patches(TRUTH, truth_path, layer="truth")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(patches_path), str(truth_path), "--json", str(out)]) == 0
    screen = capsys.readouterr().out
    assert A in screen and "overall" in screen and "57.1%" in screen  # overall recall 4/7
    rep = json.loads(out.read_text())
    assert rep["overall"]["found"] == 4 and rep["rules"][A]["correct"] == 4
    assert rep["rules"][C]["recall"] is None


def test_cli_errors(tmp_path, capsys):
    patches_path = tmp_path / "patches.gpkg"
    write_patches(PATCHES, patches_path)
    assert main(["evaluate", str(patches_path), str(tmp_path / "missing.gpkg")]) == 3
    assert "missing.gpkg: file not found" in capsys.readouterr().err
    assert main(["evaluate", str(patches_path), str(patches_path)]) == 3  # no layer 'truth'
    assert "no layer 'truth'" in capsys.readouterr().err
    assert main(["evaluate", str(patches_path), str(patches_path), "--truth-layer", "patches"]) == 0
