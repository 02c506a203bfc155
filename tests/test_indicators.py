"""Indicators of small hand-built patch sets, every figure worked out by hand below."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from imagery_watch.classes import M2_PER_MU
from imagery_watch.errors import JobError
from imagery_watch.indicators import CITY, OUTSIDE, compute_indicators, patch_measures

CFL = "construction_on_farmland"
ELL = 0.999  # ellipsoidal / planar area of every patch of the hand-built set

#: three counties side by side, 100 m wide each: A (x 0-100), B (100-200), C (200-300)
COUNTIES = gpd.GeoDataFrame({"name": ["A", "B", "C"]},
                            geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100), box(200, 0, 300, 100)],
                            crs="EPSG:4549")


def hand_set() -> gpd.GeoDataFrame:
    """The patch set the expectations below are worked out for.

    ====  ==============================  =======  ====  ========  ========  ===========
    id    rule                            county   area  farmland  approved  status
    ====  ==============================  =======  ====  ========  ========  ===========
    a1    construction_on_farmland        A        1000      1000         0  illegal
    a2    construction_on_farmland        A         600       600       200  pending
    a3    construction_on_farmland        A         400       400       400  legal
    a4    construction_on_farmland        A         300       300         0  false_alarm
    b1    construction_on_farmland        B         500       500         0  field_visit  (straddles A|B)
    b2    construction_on_farmland        B         800       500       400  pending
    c1    afforestation                   C        2000         0         0  pending
    c2    afforestation                   C        1000         0         0  legal
    c3    afforestation                   C         700         0         0  false_alarm
    c4    construction_elsewhere          C         300         0         0  illegal
    r1    reclamation                     A         900         0       900  legal
    r2    reclamation                     B         500         0         0  pending
    o1    construction_on_farmland        (none)    200       200         0  pending
    ====  ==============================  =======  ====  ========  ========  ===========

    b1 lies 25 % in A and 75 % in B: its ``county`` is B (largest overlap). b2 has 300 m2
    outside farmland, so at least 400 - 300 = 100 m2 of its approved part is on farmland.
    C has no new construction on farmland at all.
    """
    rows = [
        ("a1", CFL, "A", 1000, 1000, 0, "illegal", box(10, 10, 20, 20)),
        ("a2", CFL, "A", 600, 600, 200, "pending", box(30, 10, 40, 20)),
        ("a3", CFL, "A", 400, 400, 400, "legal", box(50, 10, 60, 20)),
        ("a4", CFL, "A", 300, 300, 0, "false_alarm", box(70, 10, 80, 20)),
        ("b1", CFL, "B", 500, 500, 0, "field_visit", box(95, 40, 115, 60)),
        ("b2", CFL, "B", 800, 500, 400, "pending", box(150, 10, 160, 20)),
        ("c1", "afforestation", "C", 2000, 0, 0, "pending", box(210, 10, 220, 20)),
        ("c2", "afforestation", "C", 1000, 0, 0, "legal", box(230, 10, 240, 20)),
        ("c3", "afforestation", "C", 700, 0, 0, "false_alarm", box(250, 10, 260, 20)),
        ("c4", "construction_elsewhere", "C", 300, 0, 0, "illegal", box(270, 10, 280, 20)),
        ("r1", "reclamation", "A", 900, 0, 900, "legal", box(10, 70, 20, 80)),
        ("r2", "reclamation", "B", 500, 0, 0, "pending", box(170, 70, 180, 80)),
        ("o1", CFL, "", 200, 200, 0, "pending", box(310, 10, 320, 20)),
    ]
    frame = pd.DataFrame([r[:7] for r in rows], columns=["patch_id", "rule", "county", "area_m2", "farmland_m2",
                                                         "approved_m2", "status"])
    for c in ("area_m2", "farmland_m2", "approved_m2"):
        frame[c] = frame[c].astype(float)
    frame["area_ellipsoidal_m2"] = frame["area_m2"] * ELL
    frame["area_mu"] = frame["area_m2"] / M2_PER_MU
    frame["score"] = np.linspace(0.9, 0.5, len(frame))
    return gpd.GeoDataFrame(frame, geometry=[r[7] for r in rows], crs="EPSG:4549")


def planar(ind, quantity, county=CITY, rule=""):
    return ind.value(quantity, county=county, rule=rule, column="m2")


def test_farmland_construction_and_violation_rate_per_county():
    ind = compute_indicators(hand_set(), counties=COUNTIES)
    assert ind.counties == ["A", "B", "C", OUTSIDE, CITY]

    # A: a1 illegal 1000, a2 pending 600 of which 200 approved, a3 legal 400, a4 false alarm left out
    assert planar(ind, "farmland_construction", "A") == 2000
    assert planar(ind, "farmland_construction_illegal", "A") == 1000
    assert planar(ind, "farmland_construction_legal", "A") == 400
    assert planar(ind, "farmland_construction_pending", "A") == 600
    assert planar(ind, "farmland_construction_pending_approved", "A") == 200
    assert planar(ind, "farmland_construction_pending_unapproved", "A") == 400
    assert planar(ind, "farmland_construction_approved", "A") == 200 + 400   # a2's and a3's approved parts
    assert ind.value("violation_rate_provisional", county="A", column="rate") == pytest.approx((1000 + 400) / 2000)
    assert ind.value("violation_rate_confirmed", county="A", column="rate") == pytest.approx(1000 / 1400)
    assert ind.row("violation_rate_provisional", county="A")["target_met"] is False

    # B: b1 (field visit, undecided) 500 unapproved; b2 pending 500 on farmland of which >= 100 approved
    assert planar(ind, "farmland_construction", "B") == 1000
    assert planar(ind, "farmland_construction_pending_approved", "B") == 100
    assert planar(ind, "farmland_construction_pending_unapproved", "B") == 900
    assert ind.value("violation_rate_provisional", county="B", column="rate") == pytest.approx(0.9)
    confirmed_b = ind.row("violation_rate_confirmed", county="B")
    assert math.isnan(confirmed_b["rate"]) and confirmed_b["target_met"] is None   # nothing reviewed yet

    # C: no new construction on farmland (c4 is construction elsewhere): no rate, target met
    assert planar(ind, "farmland_construction", "C") == 0
    for basis in ("provisional", "confirmed"):
        row = ind.row(f"violation_rate_{basis}", county="C")
        assert math.isnan(row["rate"]) and row["target_met"] is True

    # outside every county: counted city-wide only
    assert planar(ind, "farmland_construction_pending_unapproved", OUTSIDE) == 200

    # city-wide: all = 2000 + 1000 + 200; illegal or undecided-unapproved = 1000 + 400 + 900 + 200
    assert planar(ind, "farmland_construction") == 3200
    assert ind.value("violation_rate_provisional", column="rate") == pytest.approx(2500 / 3200)
    assert ind.value("violation_rate_confirmed", column="rate") == pytest.approx(1000 / 1400)


def test_a_patch_straddling_two_counties_counts_once_in_its_county_column():
    gdf = hand_set()
    b1 = gdf.loc[gdf["patch_id"] == "b1"].geometry.iloc[0]
    in_a = b1.intersection(COUNTIES.geometry.iloc[0]).area / b1.area
    assert in_a == pytest.approx(0.25)   # it really straddles, mostly in B
    ind = compute_indicators(gdf, counties=COUNTIES)
    # none of b1's 500 m2 in A, all of it in B, once city-wide
    assert planar(ind, "farmland_construction_pending", "A") == 600
    assert planar(ind, "farmland_construction_pending", "B") == 500 + 500
    assert planar(ind, "farmland_construction_pending") == 600 + 1000 + 200
    # and every area figure of the counties adds up to the city-wide one
    t = ind.table
    area_rows = t[t["quantity"].str.startswith(("farmland_construction", "afforestation", "reclamation"))
                  | (t["section"] == "areas")]
    per_county = area_rows[area_rows["county"] != CITY].groupby(["section", "rule", "quantity"])["m2"].sum()
    city = area_rows[area_rows["county"] == CITY].set_index(["section", "rule", "quantity"])["m2"]
    pd.testing.assert_series_equal(per_county.sort_index(), city.sort_index(), check_names=False)


def test_afforestation_and_reclamation_against_targets():
    ind = compute_indicators(hand_set(), counties=COUNTIES)
    # afforestation: c1 pending 2000 + c2 legal 1000 (c3 false alarm left out); confirmed: c2 only
    assert planar(ind, "afforestation_provisional", "C") == 3000
    assert planar(ind, "afforestation_confirmed", "C") == 1000
    assert ind.value("afforestation_provisional", column="mu") == pytest.approx(3000 / M2_PER_MU)
    assert ind.value("afforestation_provisional") == pytest.approx(3000 * ELL)   # ellipsoidal m2
    assert ind.row("afforestation_provisional")["target"] == 9320
    assert ind.row("afforestation_provisional")["target_met"] is False
    assert ind.row("afforestation_provisional", county="C")["target_met"] is None   # a city target only
    # reclamation: r1 legal 900 + r2 pending 500
    assert planar(ind, "reclamation_provisional") == 1400
    assert planar(ind, "reclamation_confirmed") == 900
    assert planar(ind, "reclamation_provisional", "A") == 900

    # a set that reaches the target: 9,400 mu of new trees, 9,000 confirmed
    big = hand_set()
    big.loc[big["patch_id"] == "c1", "area_m2"] = 9_400 * M2_PER_MU - 1000
    big["area_ellipsoidal_m2"] = big["area_m2"]
    ind = compute_indicators(big, counties=COUNTIES)
    assert ind.value("afforestation_provisional", column="ellipsoidal_mu") == pytest.approx(9_400)
    assert ind.row("afforestation_provisional")["target_met"] is True
    assert ind.row("afforestation_confirmed")["target_met"] is False


def test_fully_reviewed_set_provisional_equals_confirmed():
    gdf = hand_set()
    decided = {"a2": "illegal", "b1": "legal", "b2": "illegal", "c1": "legal", "r2": "false_alarm", "o1": "legal"}
    gdf["status"] = [decided.get(p, s) for p, s in zip(gdf["patch_id"], gdf["status"])]
    ind = compute_indicators(gdf, counties=COUNTIES)
    for county in ind.counties:
        for q in ("violation_rate", "afforestation", "reclamation"):
            prov, conf = ind.row(f"{q}_provisional", county=county), ind.row(f"{q}_confirmed", county=county)
            for col in ("rate", "m2", "ellipsoidal_m2"):
                assert prov[col] == pytest.approx(conf[col], nan_ok=True), (county, q, col)
            assert prov["target_met"] == conf["target_met"]
    # A: illegal a1 1000 + a2 600, legal a3 400; B: illegal b2 500, legal b1 500
    assert ind.value("violation_rate_confirmed", county="A", column="rate") == pytest.approx(1600 / 2000)
    assert ind.value("violation_rate_confirmed", county="B", column="rate") == pytest.approx(0.5)
    assert ind.value("violation_rate_confirmed", column="rate") == pytest.approx(2100 / 3200)
    assert ind.progress["decided"] == len(gdf) and ind.progress["by_status"]["pending"]["patches"] == 0


def test_no_violation_meets_the_target():
    gdf = hand_set()
    gdf = gdf[gdf["rule"] == CFL].copy()
    gdf["status"] = "legal"
    ind = compute_indicators(gdf, counties=COUNTIES)
    for basis in ("provisional", "confirmed"):
        row = ind.row(f"violation_rate_{basis}")
        assert row["rate"] == 0 and row["target_met"] is True


def test_status_areas_per_county_and_rule():
    ind = compute_indicators(hand_set(), counties=COUNTIES, rules=[CFL, "afforestation"])
    assert ind.rules[:2] == [CFL, "afforestation"] and set(ind.rules) == {CFL, "afforestation", "reclamation",
                                                                          "construction_elsewhere"}
    assert planar(ind, "flagged", "A", CFL) == 2300
    assert planar(ind, "approved", "A", CFL) == 600
    assert planar(ind, "false_alarm", "A", CFL) == 300
    assert planar(ind, "field_visit", "B", CFL) == 500
    assert ind.row("flagged", county="A", rule=CFL)["patches"] == 4
    # a county without patches of a rule has zero rows, not missing ones
    assert planar(ind, "flagged", "C", CFL) == 0
    assert ind.value("flagged", county="B", rule=CFL, column="ellipsoidal_m2") == pytest.approx(1300 * ELL)


def test_ellipsoidal_figures_scale_each_patch_by_its_own_factor():
    gdf = hand_set()
    gdf["area_ellipsoidal_m2"] = gdf["area_m2"]
    gdf.loc[gdf["patch_id"] == "a1", "area_ellipsoidal_m2"] = 990.0   # factor 0.99 for a1 only
    ind = compute_indicators(gdf, counties=COUNTIES)
    assert ind.value("farmland_construction_illegal", county="A") == pytest.approx(990)
    assert ind.value("farmland_construction", county="A") == pytest.approx(990 + 600 + 400)
    assert ind.value("violation_rate_provisional", county="A", column="rate") == pytest.approx(1390 / 1990)


def test_input_is_not_modified_and_missing_columns_have_defaults():
    gdf = hand_set()
    before = gdf.copy()
    compute_indicators(gdf, counties=COUNTIES)
    pd.testing.assert_frame_equal(gdf, before)
    bare = pd.DataFrame({"rule": [CFL], "area_m2": [100.0]})
    m = patch_measures(bare)
    assert m.iloc[0]["status"] == "pending" and m.iloc[0]["county"] == OUTSIDE and m.iloc[0]["farmland_m2"] == 0


def test_bad_tables_are_refused():
    with pytest.raises(JobError, match="lacks column"):
        compute_indicators(pd.DataFrame({"rule": [CFL]}))
    gdf = hand_set()
    gdf.loc[0, "status"] = "approved"
    with pytest.raises(JobError, match="unknown patch status.*'approved'"):
        compute_indicators(gdf)
