"""``imagery-watch indicators`` and ``imagery-watch review sample`` through the real entry point.

The job folder is built by hand (job.json, patches.gpkg, work/layers.gpkg) so that the
expected figures can be worked out below; decisions go through the review store.
"""

from __future__ import annotations

import csv
import json
import math
from html import unescape

import geopandas as gpd
import pytest
from shapely.geometry import box

from imagery_watch.classes import M2_PER_MU
from imagery_watch.cli import main
from imagery_watch.io.patches import write_patches
from imagery_watch.io.writers import write_layers
from imagery_watch.review.sample_table import read_sample
from imagery_watch.review.store import PatchStore

CFL = "construction_on_farmland"


@pytest.fixture()
def job_dir(tmp_path):
    """Counties North, South and East (no patches); six pending patches.

    ===  ======================  =====  ====  ========  ========
    id   rule                    county area  farmland  approved
    ===  ======================  =====  ====  ========  ========
    p1   construction_on_farm.   North  1000      1000         0
    p2   construction_on_farm.   North   500       500       500
    p3   construction_on_farm.   South   800       800       200
    p4   afforestation           South  3000         0         0
    p5   reclamation             North   600         0         0
    p6   construction_elsewhere  South   400         0         0
    ===  ======================  =====  ====  ========  ========
    """
    root = tmp_path / "job"
    (root / "work").mkdir(parents=True)
    rows = [("p1", CFL, "North", 1000, 1000, 0), ("p2", CFL, "North", 500, 500, 500),
            ("p3", CFL, "South", 800, 800, 200), ("p4", "afforestation", "South", 3000, 0, 0),
            ("p5", "reclamation", "North", 600, 0, 0), ("p6", "construction_elsewhere", "South", 400, 0, 0)]
    gdf = gpd.GeoDataFrame(
        {"patch_id": [r[0] for r in rows], "rule": [r[1] for r in rows], "county": [r[2] for r in rows],
         "area_m2": [float(r[3]) for r in rows], "area_mu": [r[3] / M2_PER_MU for r in rows],
         "area_ellipsoidal_m2": [float(r[3]) for r in rows], "farmland_m2": [float(r[4]) for r in rows],
         "approved_m2": [float(r[5]) for r in rows], "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
         "status": ["pending"] * 6, "version": [0] * 6},
        geometry=[box(10 + 20 * i, 10, 20 + 20 * i, 20) for i in range(6)], crs="EPSG:4549")
    write_patches(gdf, root / "patches.gpkg")
    counties = gpd.GeoDataFrame({"county_index": [1, 2, 3]},
                                geometry=[box(0, 0, 130, 50), box(0, -50, 130, 0), box(130, -50, 200, 50)],
                                crs="EPSG:4549")
    write_layers(root / "work" / "layers.gpkg", {"counties": counties})
    config = tmp_path / "test.toml"
    config.write_text('[job]\nname = "cli-test"\n', encoding="utf-8")
    state = {"job": {"name": "cli-test", "epoch_before": "2023", "epoch_after": "2024"},
             "inputs": {"before": "/data/before", "after": "/data/after", "bands": ["red", "green", "blue"]},
             "grid": {"crs_wkt": gdf.crs.to_wkt(), "transform": [0.2, 0, 0, 0, -0.2, 50], "width": 1000,
                      "height": 500},
             "county_names": ["North", "South", "East"], "rules": [CFL, "construction_elsewhere", "afforestation",
                                                                   "demolition", "reclamation"],
             "config": str(config), "version": "0.1.0", "completed": True}
    (root / "job.json").write_text(json.dumps(state), encoding="utf-8")
    return root


def _figures(path):
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return {(r["section"], r["county"], r["rule"], r["quantity"]): r for r in csv.DictReader(fh)}


def test_indicators_writes_csv_json_and_report(job_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["indicators", str(job_dir), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "0 of 6 patches decided" in said and "NOT met" in said

    fig = _figures(out / "indicators.csv")
    city = ("indicators", "City-wide", "")
    # all = 1000 + 500 + 800; approved 500 + 200; provisional = (1000 + 600) / 2300
    assert float(fig[(*city[:3], "farmland_construction")]["m2"]) == 2300
    assert float(fig[(*city[:3], "farmland_construction_pending_approved")]["m2"]) == 700
    assert float(fig[(*city[:3], "violation_rate_provisional")]["rate"]) == pytest.approx(1600 / 2300)
    assert fig[(*city[:3], "violation_rate_provisional")]["target_met"] == "false"
    assert fig[(*city[:3], "violation_rate_confirmed")]["rate"] == ""          # nothing reviewed
    # East has no patches: zero rows, rate met
    assert float(fig[("indicators", "East", "", "farmland_construction")]["m2"]) == 0
    assert fig[("indicators", "East", "", "violation_rate_provisional")]["target_met"] == "true"
    assert float(fig[("areas", "North", CFL, "flagged")]["mu"]) == pytest.approx(1500 / M2_PER_MU)
    assert fig[("areas", "North", CFL, "flagged")]["patches"] == "2"

    data = json.loads((out / "indicators.json").read_text(encoding="utf-8"))
    assert data["counties"] == ["North", "South", "East", "City-wide"]
    assert data["headline"]["afforestation_provisional"]["m2"] == 3000
    assert data["targets"]["afforestation_min_mu"] == 9320
    assert data["sample"] is None and data["job"]["Epochs"] == "2023 → 2024"

    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Change indicators: cli-test" in html and 'name = "cli-test"' in unescape(html)   # the config
    assert html.count('class="county"') == 3 and html.count('class="patch st-pending"') == 6


def test_decisions_move_the_figures_and_a_full_review_makes_them_agree(job_dir, capsys):
    store = PatchStore(job_dir / "patches.gpkg")
    for pid, status in (("p1", "illegal"), ("p2", "legal"), ("p3", "false_alarm"), ("p4", "legal")):
        store.decide(pid, status, reviewer="zhang", version=0)
    assert main(["indicators", str(job_dir), "-q"]) == 0   # default --out: the job folder
    assert capsys.readouterr().out == ""
    fig = _figures(job_dir / "indicators.csv")
    # construction on farmland: p1 illegal 1000, p2 legal 500, p3 a false alarm
    for basis in ("provisional", "confirmed"):
        assert float(fig[("indicators", "City-wide", "", f"violation_rate_{basis}")]["rate"]) == pytest.approx(2 / 3)
    assert float(fig[("indicators", "South", "", "farmland_construction")]["m2"]) == 0
    assert float(fig[("indicators", "City-wide", "", "afforestation_confirmed")]["mu"]) == pytest.approx(4.5)
    assert float(fig[("areas", "South", CFL, "false_alarm")]["m2"]) == 800
    assert "4 / 6" in (job_dir / "report.html").read_text(encoding="utf-8")


def test_review_sample_marks_the_store_and_feeds_the_estimates(job_dir, tmp_path, capsys):
    # six strata of one patch each (construction_on_farmland in 3 score bands, 3 other rules)
    assert main(["review", "sample", str(job_dir), "--n", "4", "--seed", "3"]) == 2
    assert "at least 6" in capsys.readouterr().err
    ids_csv = tmp_path / "sample.csv"
    assert main(["review", "sample", str(job_dir), "--n", "6", "--seed", "3", "--csv", str(ids_csv)]) == 0
    assert "marked 6 of 6 patches (seed 3)" in capsys.readouterr().out
    sample, info = read_sample(job_dir / "patches.gpkg")
    assert sorted(sample["patch_id"]) == ["p1", "p2", "p3", "p4", "p5", "p6"] and info["seed"] == 3
    assert set(sample["stratum"]) >= {f"{CFL}/b1", f"{CFL}/b2", f"{CFL}/b3", "afforestation/b1"}
    assert ids_csv.read_text(encoding="utf-8-sig").startswith("patch_id,stratum,rule,score_band")
    # a second draw needs --replace
    assert main(["review", "sample", str(job_dir), "--n", "6", "--seed", "4"]) == 11
    assert "--replace" in capsys.readouterr().err
    assert main(["review", "sample", str(job_dir), "--n", "6", "--seed", "4", "--replace"]) == 0
    assert read_sample(job_dir / "patches.gpkg")[1]["seed"] == 4
    # the review store still opens the file and sees its patches
    store = PatchStore(job_dir / "patches.gpkg")
    for pid, status in (("p1", "illegal"), ("p2", "legal"), ("p3", "illegal"), ("p4", "false_alarm"),
                        ("p6", "legal")):
        store.decide(pid, status, reviewer="li", version=0)

    assert main(["indicators", str(job_dir), "--out", str(tmp_path / "o")]) == 0
    said = capsys.readouterr().out
    assert "from the sample (5 of 6 reviewed)" in said
    data = json.loads((tmp_path / "o" / "indicators.json").read_text(encoding="utf-8"))
    est = data["sample"]["estimates"]
    # a census: illegal on farmland p1 1000 + p3 800, exact; rate 1800 / 2300
    assert est["illegal_farmland_m2"]["value"] == pytest.approx(1800) and est["illegal_farmland_m2"]["se"] == 0
    assert est["violation_rate"]["value"] == pytest.approx(1800 / 2300)
    assert est["afforestation_m2"]["value"] == 0
    # p5 (reclamation, the only patch of its stratum) is not reviewed yet
    assert est["reclamation_m2"]["value"] is None and "no reviewed sample patch" in est["reclamation_m2"]["note"]
    fig = _figures(tmp_path / "o" / "indicators.csv")
    row = fig[("estimates", "City-wide", "", "illegal_farmland")]
    assert float(row["m2"]) == pytest.approx(1800) and float(row["ci95_low"]) == pytest.approx(1800)
    assert math.isclose(float(fig[("estimates", "City-wide", "", "violation_rate")]["rate"]), 1800 / 2300)


def test_bad_job_folders_fail_with_a_clear_message(tmp_path, capsys):
    assert main(["indicators", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "job.json").write_text("{}", encoding="utf-8")
    assert main(["indicators", str(tmp_path / "half")]) == 3
    assert "patch file not found" in capsys.readouterr().err
