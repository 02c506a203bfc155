"""Stratified sampling and estimation: worked examples computed independently, and coverage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from imagery_watch.indicators import compute_indicators
from imagery_watch.sampling import (Z95, allocate, assign_strata, check_sample, draw_sample, estimate_from_sample,
                                    stratified_ratio, stratified_total)

CFL = "construction_on_farmland"


def test_olofsson_2014_worked_example():
    """Olofsson et al. (2014), Section 5 example: area of deforestation 21,158 ha +- 6,158 ha (95 %).

    Map strata (pixels of 30 m = 0.09 ha): deforestation 200,000, forest gain 150,000, stable
    forest 3,200,000, stable non-forest 6,450,000. Sample counts per stratum (n_h) and of them
    referenced as deforestation: 66 of 75, 0 of 75, 1 of 165, 2 of 325.
    """
    big_n = {"deforestation": 200_000, "gain": 150_000, "forest": 3_200_000, "nonforest": 6_450_000}
    n = {"deforestation": 75, "gain": 75, "forest": 165, "nonforest": 325}
    hits = {"deforestation": 66, "gain": 0, "forest": 1, "nonforest": 2}
    pixel_ha = 0.09
    y, strata = [], []
    for h in big_n:
        y += [pixel_ha] * hits[h] + [0.0] * (n[h] - hits[h])
        strata += [h] * n[h]
    est = stratified_total(y, strata, big_n)

    # independently, with the paper's proportion form (Eq. 9 and 10), here with the finite
    # population correction (1 - n_h / N_h) that the paper leaves out for millions of pixels
    total_px = sum(big_n.values())
    w = {h: big_n[h] / total_px for h in big_n}
    p = sum(w[h] * hits[h] / n[h] for h in big_n)
    se_p = math.sqrt(sum(w[h] ** 2 * (1 - n[h] / big_n[h]) * (hits[h] / n[h]) * (1 - hits[h] / n[h]) / (n[h] - 1)
                         for h in big_n))
    assert est.value == pytest.approx(p * total_px * pixel_ha, rel=1e-12)
    assert est.se == pytest.approx(se_p * total_px * pixel_ha, rel=1e-12)
    # the published figures (the paper: 1.96 x SE without the correction, 6,157.6 ha)
    assert round(est.value) == 21_158
    assert Z95 * est.se == pytest.approx(6_158, abs=1)
    assert est.n == 640 and est.population == total_px and est.note == ""


def test_small_example_by_hand_with_finite_population_correction():
    # stratum a: N=10, sample y = 100, 300 -> mean 200, s2 = 20000
    # stratum b: N=5,  sample y = 0, 50, 100 -> mean 50, s2 = 2500
    # stratum c: N=2,  census y = 40, 60 -> 100, no variance
    y = [100, 300, 0, 50, 100, 40, 60]
    strata = ["a", "a", "b", "b", "b", "c", "c"]
    est = stratified_total(y, strata, {"a": 10, "b": 5, "c": 2})
    assert est.value == pytest.approx(10 * 200 + 5 * 50 + 100)
    var = 10 ** 2 * (1 - 2 / 10) * 20_000 / 2 + 5 ** 2 * (1 - 3 / 5) * 2_500 / 3
    assert est.se == pytest.approx(math.sqrt(var))
    assert est.ci95_low == pytest.approx(2350 - 1.959964 * math.sqrt(var), rel=1e-6)

    # ratio: x = 200 everywhere in a and b, 100 in c
    x = [200, 200, 200, 200, 200, 100, 100]
    r = stratified_ratio(y, x, strata, {"a": 10, "b": 5, "c": 2})
    x_total = 10 * 200 + 5 * 200 + 2 * 100
    assert r.value == pytest.approx(2350 / x_total)
    d = np.array(y, float) - r.value * np.array(x, float)
    var_d = 10 ** 2 * 0.8 * np.var(d[:2], ddof=1) / 2 + 25 * 0.4 * np.var(d[2:5], ddof=1) / 3
    assert r.se == pytest.approx(math.sqrt(var_d) / x_total)


def test_missing_observations_are_said():
    est = stratified_total([1.0, 2.0], ["a", "a"], {"a": 5, "b": 3})
    assert math.isnan(est.value) and "no reviewed sample patch" in est.note
    est = stratified_total([1.0, 2.0, 7.0], ["a", "a", "b"], {"a": 5, "b": 3})
    assert est.value == pytest.approx(5 * 1.5 + 3 * 7) and math.isnan(est.se) and "single" in est.note
    est = stratified_total([7.0], ["b"], {"b": 1})   # a census of one: exact
    assert est.value == 7 and est.se == 0


def test_allocate():
    assert allocate({"a": 100, "b": 10, "c": 1}, 20) == {"a": 16, "b": 3, "c": 1}
    alloc = allocate({"a": 500, "b": 300, "c": 200, "d": 3}, 57)
    assert sum(alloc.values()) == 57 and alloc["d"] == 2 and alloc["a"] > alloc["b"] > alloc["c"]
    assert allocate({"a": 4, "b": 3}, 50) == {"a": 4, "b": 3}   # a census
    # a small stratum that fills up passes its share on
    assert allocate({"a": 1000, "b": 5}, 600) == {"a": 595, "b": 5}
    with pytest.raises(ValueError, match="at least 6"):
        allocate({"a": 10, "b": 10, "c": 10}, 5)


def _population(n=600, seed=2024):
    rng = np.random.default_rng(seed)
    rule = rng.choice([CFL, "afforestation", "demolition"], n, p=[0.5, 0.3, 0.2])
    score = rng.uniform(0.4, 0.95, n)
    area = rng.gamma(2.0, 300.0, n)
    p_real = 0.1 + 0.8 * (score - 0.4) / 0.55
    real = rng.random(n) < p_real
    truth = np.where(rule == CFL, np.where(real, "illegal", "legal"), np.where(real, "legal", "false_alarm"))
    return pd.DataFrame({"patch_id": [f"p{i:04d}" for i in range(n)], "rule": rule, "score": score,
                         "area_m2": area, "farmland_m2": np.where(rule == CFL, area, 0.0), "approved_m2": 0.0,
                         "county": "A", "status": "pending", "truth": truth})


def test_strata_are_equal_count_score_bands_independent_of_row_order():
    pop = _population(90)
    strata = assign_strata(pop, n_bands=3)
    sizes = strata.groupby(["rule", "score_band"]).size()
    for rule, n_rule in pop.groupby("rule").size().items():
        assert sizes[rule].max() - sizes[rule].min() <= 1 and sizes[rule].sum() == n_rule
    # bands follow the score: every score of band 1 is below every score of band 2
    s = strata.join(pop["score"])
    for _, g in s.groupby("rule"):
        assert g[g.score_band == 1].score.max() <= g[g.score_band == 2].score.min()
    shuffled = assign_strata(pop.sample(frac=1, random_state=3), n_bands=3)
    pd.testing.assert_frame_equal(shuffled.loc[strata.index], strata)


def test_draw_sample_is_seeded_and_respects_the_allocation():
    pop = _population(300)
    a = draw_sample(pop, 40, seed=5)
    assert len(a) == 40 and a["patch_id"].is_unique and set(a["patch_id"]) <= set(pop["patch_id"])
    pd.testing.assert_frame_equal(a, draw_sample(pop.iloc[::-1], 40, seed=5))
    assert set(draw_sample(pop, 40, seed=6)["patch_id"]) != set(a["patch_id"])
    per = a.groupby("stratum").agg(n=("patch_id", "size"), n_h=("stratum_sample", "first"),
                                   big_n=("stratum_patches", "first"))
    assert (per["n"] == per["n_h"]).all() and (per["n"] >= 2).all() and per["big_n"].sum() == 300
    with pytest.raises(ValueError, match="cannot hold 2 patches"):
        draw_sample(pop, 5, seed=1)


def test_a_reviewed_census_gives_the_census_figures_exactly():
    pop = _population(120)
    sample = draw_sample(pop, len(pop), seed=1)   # every patch
    reviewed = pop.assign(status=pop["truth"])
    est = estimate_from_sample(reviewed, sample)
    ind = compute_indicators(reviewed)
    assert est.reviewed == 120 and not est.problems
    e = est.estimates["illegal_farmland_m2"]
    assert e.value == pytest.approx(ind.value("farmland_construction_illegal", column="m2")) and e.se == 0
    r = est.estimates["violation_rate"]
    assert r.value == pytest.approx(ind.value("violation_rate_confirmed", column="rate")) and r.se == 0
    a = est.estimates["afforestation_m2"]
    assert a.value == pytest.approx(ind.value("afforestation_confirmed", column="m2"))


def test_a_sample_of_other_patches_is_refused():
    pop = _population(120)
    sample = draw_sample(pop, 30, seed=1)
    assert check_sample(pop, sample) == []
    fewer = pop.drop(index=pop.index[pop["patch_id"].isin(sample["patch_id"])][:1])
    problems = estimate_from_sample(fewer, sample).problems
    assert any("no longer exist" in p for p in problems) and any("stratum sizes differ" in p for p in problems)


def test_intervals_cover_the_true_area_about_95_percent_of_the_time():
    pop = _population(600)
    rule, truth = pop["rule"].to_numpy(), pop["truth"].to_numpy()
    farm, area = pop["farmland_m2"].to_numpy(), pop["area_m2"].to_numpy()
    true_illegal = farm[(rule == CFL) & (truth == "illegal")].sum()
    true_aff = area[(rule == "afforestation") & (truth == "legal")].sum()
    true_rate = true_illegal / farm[(rule == CFL) & (truth != "false_alarm")].sum()
    position = pd.Index(pop["patch_id"])
    cover = {"illegal": 0, "afforestation": 0, "rate": 0}
    sims = 300
    for seed in range(sims):
        s = draw_sample(pop, 150, seed=seed)
        i = position.get_indexer(s["patch_id"])
        st = s["stratum"].to_numpy(object)
        population = s.groupby("stratum")["stratum_patches"].first().to_dict()
        pop_cfl = {h: v for h, v in population.items() if h.startswith(CFL)}
        pop_aff = {h: v for h, v in population.items() if h.startswith("afforestation")}
        cfl, status = rule[i] == CFL, truth[i]
        y = np.where(cfl & (status == "illegal"), farm[i], 0.0)
        x = np.where(cfl & (status != "false_alarm"), farm[i], 0.0)
        ya = np.where((rule[i] == "afforestation") & (status == "legal"), area[i], 0.0)
        for key, est, true in (("illegal", stratified_total(y, st, pop_cfl), true_illegal),
                               ("afforestation", stratified_total(ya, st, pop_aff), true_aff),
                               ("rate", stratified_ratio(y, x, st, pop_cfl), true_rate)):
            cover[key] += est.ci95_low <= true <= est.ci95_high
    for key, hits in cover.items():
        assert 0.90 <= hits / sims <= 0.99, (key, hits / sims)
