"""The report page: self-contained, the figures of the hand-built set, and a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from imagery_watch.classes import M2_PER_MU
from imagery_watch.indicators import compute_indicators
from imagery_watch.report import job_facts, render_report
from imagery_watch.sampling import draw_sample, estimate_from_sample

from test_indicators import COUNTIES, hand_set

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "docs" / "images" / "report.png"
STATE = {"job": {"name": "hand", "epoch_before": "2023", "epoch_after": "2024"},
         "inputs": {"before": "/data/2023/sheets", "after": "/data/2024/sheets", "bands": ["red", "green", "blue"]},
         "grid": {"crs_wkt": "EPSG:4549", "transform": [0.2, 0, 0, 0, -0.2, 100], "width": 1500, "height": 500},
         "rules": ["construction_on_farmland", "afforestation"], "county_names": ["A", "B", "C"],
         "config": "configs/hand.toml", "chunk_key": "0123456789abcdef", "version": "0.1.0"}


def _svg(html: str, svg_id: str) -> str:
    m = re.search(rf'<svg[^>]*id="{svg_id}".*?</svg>', html, flags=re.S)
    assert m, svg_id
    return m.group(0)


def _card(html: str, key: str) -> str:
    m = re.search(rf'<div class="card ([a-z-]+)" data-indicator="{key}">(.*?)</div></div>', html, flags=re.S)
    assert m, key
    return m.group(1) + " " + re.sub(r"<[^>]+>", " ", m.group(2))


def test_report_shows_the_hand_worked_figures_and_needs_nothing_else():
    gdf = hand_set()
    ind = compute_indicators(gdf, counties=COUNTIES)
    html = render_report(ind, patches=gdf, counties=COUNTIES, facts=job_facts(STATE, job_dir="/jobs/hand"),
                         config_text="[job]\nname = 'hand'  # <not markup>\n", generated_at="2024-05-01 08:00 UTC")
    assert html.startswith("<!DOCTYPE html>")
    # nothing to fetch: no scripts, links, images, fonts or addresses (but the SVG namespace)
    assert not re.search(r"<script|<link|<img|<iframe|src=|url\(|@import", html)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}

    # headline: city-wide provisional 2500 / 3200, confirmed 1000 / 1400, afforestation 3000 m2 * 0.999
    assert _card(html, "violation_rate_provisional").split()[:3] == ["not-met", "Violation", "rate,"]
    assert f"{100 * 2500 / 3200:.2f} %" in _card(html, "violation_rate_provisional")
    assert "target ≤ 1 %" in _card(html, "violation_rate_provisional")
    assert "71.43 %" in _card(html, "violation_rate_confirmed")
    assert f"{3000 * 0.999 / M2_PER_MU:.2f} mu" in _card(html, "afforestation_provisional")
    assert "9,320 mu" in _card(html, "afforestation_provisional")
    assert "not met" in _card(html, "reclamation_confirmed")
    assert "7 / 13" in _card(html, "review_progress")   # decided: a1 a3 a4 c2 c3 c4 r1
    # construction chart: A illegal, unapproved, approved, legal; B unapproved, approved; C none; outside 1
    assert _svg(html, "chart-construction").count("<rect") == 7
    assert _svg(html, "chart-violation").count('class="seg-provisional"') == 4   # A, B, outside, city (C: n/a)
    # map: 13 patches coloured by status over 3 counties
    the_map = _svg(html, "patch-map")
    assert len(re.findall(r'class="patch st-', the_map)) == 13
    assert len(re.findall(r'class="patch st-illegal"', the_map)) == 2
    assert the_map.count('class="county"') == 3
    # method and inputs trace the figures
    for text in ("/data/2023/sheets", "2023 → 2024", "configs/hand.toml", "imagery_watch 0.1.0", "EPSG:4549",
                 "# &lt;not markup&gt;", "Olofsson"):
        assert text in html, text


def test_report_escapes_names_and_shows_sample_estimates():
    gdf = hand_set()
    gdf["county"] = gdf["county"].replace({"A": "<b>A&Co</b>"})
    gdf["status"] = gdf["status"].replace({"pending": "legal", "field_visit": "illegal"})
    ind = compute_indicators(gdf)
    sample = draw_sample(gdf, len(gdf), seed=1)
    est = estimate_from_sample(gdf, sample)
    html = render_report(ind, patches=gdf, estimates=est, sample_info={"seed": 1, "drawn_at": "2024-05-01"})
    assert "<b>A&Co</b>" not in html and "&lt;b&gt;A&amp;Co&lt;/b&gt;" in html
    row = re.search(r'<tr data-estimate="illegal_farmland_m2">(.*?)</tr>', html).group(1)
    # a census: a1 1000 + b1 500 illegal (b2 is legal now) = 1500 m2, interval of width 0
    assert f"{1500 / M2_PER_MU:.2f} mu" in row and row.count(f"{1500 / M2_PER_MU:.2f} mu") == 3
    assert "seed 1" in html and "13 reviewed" in html


def _sample_scene_patches():
    """The sample scene's true changes as patches, a third of them still pending."""
    layers = ROOT / "sample_tiles" / "layers.gpkg"
    truth = gpd.read_file(layers, layer="truth")
    counties = gpd.read_file(layers, layer="counties")[["name", "geometry"]]
    farmland = gpd.read_file(layers, layer="farmland").union_all()
    approved = gpd.read_file(layers, layer="approved").union_all()
    rng = np.random.default_rng(7)
    geoms = truth.geometry.to_numpy()
    overlap = np.array([[g.intersection(c).area for c in counties.geometry] for g in geoms])
    rules = truth["rule"].to_numpy()
    status = rng.choice(["pending", "illegal", "legal", "false_alarm", "field_visit"], len(truth),
                        p=[0.35, 0.15, 0.35, 0.1, 0.05])
    patches = gpd.GeoDataFrame({
        "patch_id": [f"{r}-{i:04d}" for i, r in enumerate(rules)], "rule": rules,
        "county": counties["name"].to_numpy()[overlap.argmax(axis=1)],
        "area_m2": [g.area for g in geoms], "farmland_m2": [g.intersection(farmland).area for g in geoms],
        "approved_m2": [g.intersection(approved).area for g in geoms], "score": rng.uniform(0.5, 0.9, len(truth)),
        "status": status}, geometry=geoms, crs=truth.crs)
    patches["area_mu"] = patches["area_m2"] / M2_PER_MU
    return patches, counties


def test_report_in_a_real_browser_offline(tmp_path):
    patches, counties = _sample_scene_patches()
    ind = compute_indicators(patches, counties=counties)
    sample = draw_sample(patches, 40, seed=3)
    html = render_report(ind, patches=patches, counties=counties, estimates=estimate_from_sample(patches, sample),
                         sample_info={"seed": 3, "drawn_at": "2024-05-01T08:00:00Z"},
                         facts=job_facts({**STATE, "job": {"name": "sample", "epoch_before": "2023",
                                                           "epoch_after": "2024"}}),
                         title="Change indicators: sample", generated_at="2024-05-01 08:00 UTC")
    report = tmp_path / "report.html"
    report.write_text(html, encoding="utf-8")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1, offline=True)
        page = context.new_page()
        requests, errors = [], []
        page.on("request", lambda req: requests.append(req.url))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")

        cards = page.locator("#headline .card")
        assert cards.count() == 7
        provisional = page.locator('[data-indicator="violation_rate_provisional"]')
        rate = ind.value("violation_rate_provisional", column="rate")
        assert f"{100 * rate:.2f} %" in provisional.inner_text()
        assert ("not met" if rate > 0.01 else "met") in provisional.locator(".badge").inner_text()
        # the badge is coloured (a real style applied, not the default)
        colour = provisional.locator(".badge").evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour in ("rgb(207, 34, 46)", "rgb(26, 127, 55)")

        for chart in ("#chart-violation", "#chart-construction", "#chart-gains", "#patch-map"):
            box = page.locator(chart).bounding_box()
            assert box and box["width"] > 300 and box["height"] > 80, chart
        bars = page.locator("#chart-construction rect")
        assert bars.count() >= len(counties)
        widths = [bars.nth(i).bounding_box()["width"] for i in range(bars.count())]
        assert max(widths) > 100
        shown = page.locator("#patch-map .patch")
        assert shown.count() == len(patches)
        assert page.locator("#patch-map .st-illegal").first.bounding_box()["width"] > 0
        assert page.locator('#sample tr[data-estimate="afforestation_m2"]').count() == 1

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        context.close()
        browser.close()

    assert requests == [report.as_uri()]   # the page itself, nothing else
    assert errors == []
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
