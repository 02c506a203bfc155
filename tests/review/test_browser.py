"""The review UI in a real browser: Playwright driving Debian's chromium (no download)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from imagery_watch.review.app import create_app
from imagery_watch.review.store import PatchStore

from review_fixtures import FAST_HASHER, PASSWORDS

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "images" / "review_patch.png"
#: where each run leaves its screenshot (git-ignored; CI can keep it as an artefact)
ARTEFACTS = REPO / "build" / "test-artefacts"



@pytest.fixture()
def server(job_dir, users):
    app = create_app(job_dir, hasher=FAST_HASHER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(10)


@pytest.fixture()
def page():
    # a missing browser fails the test: the browser check is part of what the review promises
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium (make browser)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        yield pg
        context.close()
        browser.close()


def _counts(page) -> dict:
    """Patches per status in the queue page's summary."""
    return {s: int(page.inner_text(f".stat.status-{s} .count").replace(",", ""))
            for s in ("pending", "illegal", "legal", "false_alarm", "field_visit")}


def test_filter_open_decide_with_keyboard_see_count_and_conflict(server, page):
    base, app = server
    store: PatchStore = app.state.store
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    external = []
    page.on("request", lambda req: None if req.url.startswith(base) or req.url.startswith("data:")
            else external.append(req.url))

    # not logged in: the queue sends us to the login form, and back after it
    page.goto(f"{base}/queue")
    assert "/login" in page.url
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORDS["alice"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/queue")

    # filter the queue by rule
    rule = store.get("p0000", geometry=False)["rule"]
    expected = [p["patch_id"] for p in store.iter_patches(geometry=False) if p["rule"] == rule]
    assert expected[:2] == ["p0000", "p0005"] and len(expected) < len(list(store.iter_patches(geometry=False)))
    page.select_option("select[name=rule]", rule)
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"/queue\?.*rule=" + rule))
    rows = page.locator("#queue tbody tr")
    assert [rows.nth(k).locator("td").nth(0).inner_text() for k in range(rows.count())] == expected
    assert {rows.nth(k).locator("td").nth(1).inner_text() for k in range(rows.count())} == {rule}
    before = _counts(page)
    assert before["pending"] == len(expected) and before["illegal"] == 0

    # open the first patch of the filtered queue: both chips and the map load
    page.click("#queue a:text('p0000')")
    page.wait_for_url(re.compile(r"/patches/p0000\?rule="))
    page.wait_for_function("['img-before', 'img-after'].every(id => document.getElementById(id).complete && "
                           "document.getElementById(id).naturalWidth === 512)")
    page.wait_for_selector("#map .leaflet-tile-loaded")

    # comparison modes by keyboard
    page.keyboard.press("b")
    page.wait_for_selector("#compare.stacked.blink")
    page.keyboard.press("w")
    page.wait_for_selector("#compare.stacked.swipe")
    page.keyboard.press("s")
    page.wait_for_selector("#compare.side")

    # type a note, leave the field with Escape, decide "illegal" with one key: saved, the next
    # patch of the filtered queue opens
    page.keyboard.press("n")
    page.keyboard.type("new shed on crop land")
    page.keyboard.press("Escape")
    page.keyboard.press("i")
    page.wait_for_url(re.compile(r"/patches/p0005\?rule="))
    p0 = store.get("p0000", geometry=False)
    assert (p0["status"], p0["reviewer"], p0["note"], p0["version"]) == ("illegal", "alice", "new shed on crop land", 1)
    assert [h["to_status"] for h in store.history("p0000")] == ["illegal"]

    # previous / next keys
    page.keyboard.press("k")
    page.wait_for_url(re.compile(r"/patches/p0000\?"))
    assert "Illegal" in page.inner_text("#status-badge")
    page.keyboard.press("j")
    page.wait_for_url(re.compile(r"/patches/p0005\?"))

    # bob decides p0005 while alice looks at it: her decision is refused and she sees his
    store.decide("p0005", "legal", reviewer="bob", version=0, note="permit 2024-031")
    page.keyboard.press("f")
    page.wait_for_selector("#conflict:not([hidden])")
    text = page.inner_text("#conflict")
    assert "bob" in text and "Legal" in text and "permit 2024-031" in text
    assert "/patches/p0005?" in page.url  # she stays on the patch
    assert store.get("p0005", geometry=False)["status"] == "legal"

    # back to the (still filtered) queue: the counts changed
    page.keyboard.press("q")
    page.wait_for_url(re.compile(r"/queue\?.*rule=" + rule))
    after = _counts(page)
    assert after == dict(before, pending=before["pending"] - 2, illegal=1, legal=before["legal"] + 1)
    assert errors == [] and external == []


def test_screenshot_of_patch_page(server, page):
    """A screenshot of the patch page, left in build/test-artefacts/ by every run.

    The README's copy (docs/images/review_patch.png) is rewritten when missing or with
    IMAGERY_WATCH_SCREENSHOTS=1.
    """
    base, app = server
    store: PatchStore = app.state.store
    store.decide("p0000", "field_visit", reviewer="bob", version=0, note="roof visible, check permit on site")
    page.goto(f"{base}/login?next=/queue")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORDS["alice"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/queue")
    assert "p0000" in page.inner_text("#queue")
    page.goto(f"{base}/patches/p0000")
    page.wait_for_function("['img-before', 'img-after'].every(id => document.getElementById(id).complete && "
                           "document.getElementById(id).naturalWidth > 0)")
    page.wait_for_selector("#map .leaflet-tile-loaded")
    page.wait_for_timeout(300)
    target = ARTEFACTS / SCREENSHOT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 50_000
    shot = np.asarray(Image.open(target).convert("RGB"))
    assert shot.shape == (900, 1440, 3) and shot.std() > 20  # a rendered page, not a blank one
    if os.environ.get("IMAGERY_WATCH_SCREENSHOTS") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOT)
