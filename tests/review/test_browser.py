"""The review UI in a real browser: Playwright driving Debian's chromium (no download)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from imagery_watch.review.app import create_app
from imagery_watch.review.store import PatchStore

from review_fixtures import FAST_HASHER, PASSWORDS

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "review_patch.png"

playwright_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (make browser)")


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
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        yield pg
        context.close()
        browser.close()


def test_login_decide_with_keyboard_and_see_conflict(server, page):
    base, app = server
    store: PatchStore = app.state.store
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    external = []
    page.on("request", lambda req: None if req.url.startswith(base) or req.url.startswith("data:")
            else external.append(req.url))

    # not logged in: the patch page sends us to the login form, and back after it
    page.goto(f"{base}/patches/p0000")
    assert "/login" in page.url
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORDS["alice"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/patches/p0000")
    page.wait_for_function("document.getElementById('img-after').complete && "
                           "document.getElementById('img-after').naturalWidth > 0")
    page.wait_for_selector("#map .leaflet-tile-loaded")

    # comparison modes by keyboard
    page.keyboard.press("b")
    page.wait_for_selector("#compare.stacked.blink")
    page.keyboard.press("w")
    page.wait_for_selector("#compare.stacked.swipe")
    page.keyboard.press("s")
    page.wait_for_selector("#compare.side")

    # type a note, leave the field with Escape, decide "illegal" with one key: saved, next patch opens
    page.keyboard.press("n")
    page.keyboard.type("new shed on crop land")
    page.keyboard.press("Escape")
    page.keyboard.press("i")
    page.wait_for_url(f"{base}/patches/p0001")
    p0 = store.get("p0000", geometry=False)
    assert (p0["status"], p0["reviewer"], p0["note"], p0["version"]) == ("illegal", "alice", "new shed on crop land", 1)
    assert [h["to_status"] for h in store.history("p0000")] == ["illegal"]

    # previous / next keys
    page.keyboard.press("k")
    page.wait_for_url(f"{base}/patches/p0000")
    assert "Illegal" in page.inner_text("#status-badge")
    page.keyboard.press("j")
    page.wait_for_url(f"{base}/patches/p0001")

    # bob decides p0001 while alice looks at it: her decision is refused and she sees his
    store.decide("p0001", "legal", reviewer="bob", version=0, note="permit 2024-031")
    page.keyboard.press("f")
    page.wait_for_selector("#conflict:not([hidden])")
    text = page.inner_text("#conflict")
    assert "bob" in text and "Legal" in text and "permit 2024-031" in text
    assert page.url == f"{base}/patches/p0001"  # she stays on the patch
    assert store.get("p0001", geometry=False)["status"] == "legal"
    assert errors == [] and external == []


def test_screenshot_of_patch_page(server, page, tmp_path):
    """The README's screenshot: rewritten when missing or with IMAGERY_WATCH_SCREENSHOTS=1."""
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
    update = os.environ.get("IMAGERY_WATCH_SCREENSHOTS") == "1" or not SCREENSHOT.exists()
    target = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 50_000
