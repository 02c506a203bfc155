"""The review app through its HTTP API: sessions, roles, CSRF, decisions, images, exports."""

from __future__ import annotations

import csv
import io
import re
import threading
import time
import warnings
import zipfile

import geopandas as gpd
import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
from fastapi.routing import APIRoute

from imagery_watch.review import api
from imagery_watch.review.app import create_app
from imagery_watch.review.tiles import EMPTY_TILE, tile_bounds

from review_fixtures import FAST_HASHER, PASSWORDS


@pytest.fixture()
def app(job_dir, users):
    return create_app(job_dir, hasher=FAST_HASHER)


def login(app, name, password=None, *, client=None):
    client = client or TestClient(app)
    client.get("/login")
    r = client.post("/login", data={"username": name, "password": password or PASSWORDS[name],
                                    "login_token": client.cookies.get("iw_login") or "", "next": "/queue"},
                    follow_redirects=False)
    return client, r


@pytest.fixture()
def alice(app):
    client, r = login(app, "alice")
    assert r.status_code == 303
    client.headers["X-CSRF-Token"] = client.get("/api/me").json()["csrf_token"]
    return client


@pytest.fixture()
def root(app):
    client, r = login(app, "root")
    assert r.status_code == 303
    client.headers["X-CSRF-Token"] = client.get("/api/me").json()["csrf_token"]
    return client


def _concrete(path: str) -> str:
    return (path.replace("{patch_id}", "p0000").replace("{epoch}", "before").replace("{z}", "20")
            .replace("{x}", "1").replace("{y}", "1").replace("{name}", "alice"))


def test_every_route_without_session_gets_401_or_login_redirect(app):
    client = TestClient(app)
    checked = 0
    for route in list(app.routes) + list(api.router.routes):
        if not isinstance(route, APIRoute) or route.path == "/login":
            continue
        for method in route.methods:
            r = client.request(method, _concrete(route.path), follow_redirects=False)
            checked += 1
            if r.status_code == 303:
                assert r.headers["location"].startswith("/login?next="), route.path
            else:
                assert r.status_code == 401, (method, route.path, r.status_code)
                assert r.json() == {"detail": "login required"}
            assert b"p0000" not in r.content and not r.content.startswith((b"\x89PNG", b"\xff\xd8"))  # no image
    assert checked >= 20
    # a forged or expired cookie is no session either
    client.cookies.set("iw_session", "forged")
    assert client.get("/api/patches").status_code == 401


def test_login_cookie_flags_and_wrong_password(app):
    client, r = login(app, "alice")
    cookie = r.headers["set-cookie"]
    assert "iw_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert r.headers["location"] == "/queue"
    _, bad = login(app, "alice", "wrong-password")
    assert bad.status_code == 401 and "iw_session" not in bad.headers.get("set-cookie", "")
    _, unknown = login(app, "nobody", "whatever-123")
    assert unknown.status_code == 401
    # login form without its double-submit token
    fresh = TestClient(app)
    r = fresh.post("/login", data={"username": "alice", "password": PASSWORDS["alice"], "login_token": "x"},
                   follow_redirects=False)
    assert r.status_code == 403
    # never redirect to another site after login
    client, r = login(app, "bob")
    client.get("/login")
    r = client.post("/login", data={"username": "bob", "password": PASSWORDS["bob"], "next": "//evil.example/",
                                    "login_token": client.cookies.get("iw_login")}, follow_redirects=False)
    assert r.headers["location"] == "/queue"


def test_repeated_failures_are_slowed_down_per_user_and_address(app):
    for _ in range(3):
        _, r = login(app, "bob", "wrong-password")
        assert r.status_code == 401
    _, r = login(app, "bob")  # right password, but locked for now
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "Too many failed attempts" in r.text
    _, r = login(app, "alice")  # another user from the same address is not affected
    assert r.status_code == 303
    assert app.state.users.retry_after("bob", "testclient", now=time.time() + 2) == 0


def test_session_expires(job_dir, users):
    app = create_app(job_dir, hasher=FAST_HASHER, session_ttl_s=1.0)
    client, r = login(app, "alice")
    assert client.get("/api/me").status_code == 200
    time.sleep(1.05)
    assert client.get("/api/me").status_code == 401
    assert client.get("/queue", follow_redirects=False).status_code == 303


def test_logout_needs_csrf_and_ends_session(alice):
    assert alice.post("/logout", data={}, follow_redirects=False).status_code == 403
    r = alice.post("/logout", data={"csrf_token": alice.headers["X-CSRF-Token"]}, follow_redirects=False)
    assert r.status_code == 303
    assert alice.get("/api/me").status_code == 401


def test_roles(alice, root):
    for path in ("/api/users", "/api/export/decisions.csv", "/api/export/decisions.gpkg", "/api/export/evidence.zip",
                 "/api/export/decision_log.csv", "/api/patches/p0000/evidence.png", "/admin/users"):
        assert alice.get(path).status_code == 403, path
    assert alice.post("/api/users", json={"name": "eve", "password": "eve-secret-1"}).status_code == 403
    assert alice.post("/api/users/bob/disable").status_code == 403
    assert root.get("/api/users").status_code == 200
    assert root.get("/admin/users").status_code == 200
    r = root.post("/api/users", json={"name": "carol", "role": "reviewer", "password": "carol-secret"})
    assert r.status_code == 201
    assert login(alice.app, "carol", "carol-secret")[1].status_code == 303


def test_disabling_a_user_ends_their_sessions(alice, root):
    assert alice.get("/api/me").status_code == 200
    assert root.post("/api/users/alice/disable").status_code == 200
    assert alice.get("/api/me").status_code == 401
    assert login(alice.app, "alice")[1].status_code == 401
    assert root.post("/api/users/root/disable").status_code == 422


def test_csrf_is_enforced(alice, root):
    body = {"status": "illegal", "version": 0}
    token = alice.headers.pop("X-CSRF-Token")
    assert alice.post("/api/patches/p0000/decision", json=body).status_code == 403
    assert alice.post("/api/patches/p0000/decision", json=body, headers={"X-CSRF-Token": "bad"}).status_code == 403
    # the token of another session does not do either
    other = root.headers["X-CSRF-Token"]
    assert alice.post("/api/patches/p0000/decision", json=body, headers={"X-CSRF-Token": other}).status_code == 403
    assert alice.get("/api/patches/p0000").json()["status"] == "pending"
    assert alice.post("/api/patches/p0000/decision", json=body, headers={"X-CSRF-Token": token}).status_code == 200
    root.headers.pop("X-CSRF-Token")
    assert root.post("/api/users", json={"name": "eve", "password": "eve-secret-1"}).status_code == 403


def test_decision_recorded_with_log_and_stale_version_gets_409(alice, root, job_dir):
    r = alice.post("/api/patches/p0001/decision", json={"status": "illegal", "note": "new shed", "version": 0})
    assert r.status_code == 200
    assert r.json()["patch"]["status"] == "illegal" and r.json()["patch"]["version"] == 1
    # root decides on the stale version 0
    r = root.post("/api/patches/p0001/decision", json={"status": "legal", "version": 0})
    assert r.status_code == 409
    assert r.json()["current"]["reviewer"] == "alice" and r.json()["current"]["status"] == "illegal"
    r = root.post("/api/patches/p0001/decision", json={"status": "legal", "note": "permit 2024-17", "version": 1})
    assert r.status_code == 200
    history = alice.get("/api/patches/p0001/history").json()
    assert [(h["reviewer"], h["from_status"], h["to_status"], h["note"]) for h in history] == [
        ("alice", "pending", "illegal", "new shed"), ("root", "illegal", "legal", "permit 2024-17")]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", h["decided_at"]) for h in history)
    row = gpd.read_file(job_dir / "patches.gpkg", layer="patches").set_index("patch_id").loc["p0001"]
    assert (row["status"], row["reviewer"], row["note"], int(row["version"])) == ("legal", "root", "permit 2024-17", 2)
    # bad bodies
    assert alice.post("/api/patches/p0001/decision", json={"status": "pending", "version": 2}).status_code == 422
    assert alice.post("/api/patches/nope/decision", json={"status": "legal", "version": 0}).status_code == 404
    assert alice.post("/api/patches/p0001/decision",
                      json={"status": "legal", "version": 2, "note": "x" * 2001}).status_code == 422


def test_two_reviewers_deciding_at_once_one_wins_the_other_gets_409(app, alice):
    bob, r = login(app, "bob")
    assert r.status_code == 303
    bob.headers["X-CSRF-Token"] = bob.get("/api/me").json()["csrf_token"]
    clients = {"alice": alice, "bob": bob}
    for pid in ("p0000", "p0001", "p0002", "p0003"):
        barrier, answers = threading.Barrier(2), {}

        def decide(name, status):
            barrier.wait()
            answers[name] = clients[name].post(f"/api/patches/{pid}/decision",
                                               json={"status": status, "note": f"{name} says {status}", "version": 0})

        threads = [threading.Thread(target=decide, args=("alice", "illegal")),
                   threading.Thread(target=decide, args=("bob", "legal"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = {name: r.status_code for name, r in answers.items()}
        assert sorted(codes.values()) == [200, 409], codes
        winner = next(n for n, c in codes.items() if c == 200)
        loser = "bob" if winner == "alice" else "alice"
        current = answers[loser].json()["current"]
        assert (current["reviewer"], current["version"]) == (winner, 1)
        assert current["note"] == f"{winner} says {'illegal' if winner == 'alice' else 'legal'}"
        history = alice.get(f"/api/patches/{pid}/history").json()
        assert [h["reviewer"] for h in history] == [winner]
        # nothing is lost: having seen the winner's decision, the loser may still record theirs on top
        r = clients[loser].post(f"/api/patches/{pid}/decision", json={"status": "field_visit", "version": 1})
        assert r.status_code == 200
        assert [h["reviewer"] for h in alice.get(f"/api/patches/{pid}/history").json()] == [winner, loser]


def test_queue_api_filters_sort_and_keyset_paging(alice):
    seen, cursor = [], None
    while True:
        r = alice.get("/api/patches", params={"limit": 2, **({"after": cursor} if cursor else {})}).json()
        seen += r["items"]
        cursor = r["next_cursor"]
        if not cursor:
            break
    scores = [p["score"] for p in seen]
    assert scores == sorted(scores, reverse=True) and len({p["patch_id"] for p in seen}) == len(seen)
    assert r["summary"]["pending"]["count"] == len(seen)
    assert r["summary"]["pending"]["area_mu"] == pytest.approx(sum(p["area_mu"] for p in seen))
    rule = seen[0]["rule"]
    r = alice.get("/api/patches", params={"rule": rule, "sort": "area_asc"}).json()
    assert {p["rule"] for p in r["items"]} == {rule}
    areas = [p["area_m2"] for p in r["items"]]
    assert areas == sorted(areas)
    r = alice.get("/api/patches", params={"area_min": 200, "score_max": 0.9}).json()
    assert all(p["area_m2"] >= 200 and p["score"] <= 0.9 for p in r["items"])
    assert alice.get("/api/patches", params={"status": "bogus"}).status_code == 422
    assert alice.get("/api/patches", params={"after": "garbage"}).status_code == 422
    facets = alice.get("/api/facets").json()
    assert rule in facets["rules"] and facets["statuses"][0] == "pending"
    page = alice.get("/queue", params={"rule": rule})
    assert page.status_code == 200 and seen[0]["patch_id"] in page.text
    detail = alice.get(f"/api/patches/{seen[1]['patch_id']}").json()
    assert detail["neighbours"] == {"next": [seen[2]["patch_id"]], "previous": [seen[0]["patch_id"]]}
    assert detail["outline_wgs84"]["type"] in ("Polygon", "MultiPolygon")
    assert 120 < detail["centre"]["lon"] < 123 and 30 < detail["centre"]["lat"] < 31.5


def test_patch_page_and_chips(alice):
    page = alice.get("/patches/p0000")
    assert page.status_code == 200
    assert "/static/leaflet/leaflet.js" in page.text and "patch-config" in page.text
    assert "https://" not in page.text  # nothing from the internet
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for epoch in ("before", "after"):
        r = alice.get(f"/api/patches/p0000/chips/{epoch}.jpg", params={"size": 256})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        img = np.asarray(Image.open(io.BytesIO(r.content))).astype(int)
        assert img.shape == (256, 256, 3)
        assert (np.abs(img - (255, 214, 0)).max(axis=-1) <= 30).sum() > 100  # the outline is drawn
        assert img.std() > 5  # real imagery, not a blank
    assert alice.get("/patches/nope").status_code == 404
    assert alice.get("/api/patches/p0000/chips/during.jpg").status_code == 422


def test_tiles(alice, app):
    src = app.state.tiles["after"]
    z = src.native_zoom
    # the tile holding the middle of the mosaic
    lon0, lat0, lon1, lat1 = src.bounds_wgs84
    lon, lat = (lon0 + lon1) / 2, (lat0 + lat1) / 2
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - np.log(np.tan(np.radians(lat)) + 1 / np.cos(np.radians(lat))) / np.pi) / 2 * n)
    left, bottom, right, top = tile_bounds(z, x, y)
    assert right > left and top > bottom
    r = alice.get(f"/tiles/after/{z}/{x}/{y}.png")
    assert r.status_code == 200 and r.content != EMPTY_TILE
    rgba = np.asarray(Image.open(io.BytesIO(r.content)))
    assert rgba.shape == (256, 256, 4) and (rgba[..., 3] == 255).any()
    assert alice.get(f"/tiles/before/{z}/0/0.png").content == EMPTY_TILE  # far away: not read
    assert alice.get(f"/tiles/before/{src.min_zoom - 1}/{x >> 4}/{y >> 4}.png").content == EMPTY_TILE
    assert alice.get(f"/tiles/after/{z}/{n}/{y}.png").status_code == 404
    assert alice.get("/tiles/after/30/1/1.png").status_code == 404


@pytest.mark.parametrize("path", [
    "/tiles/..%2F..%2Fjob.json/1/1/1.png",
    "/tiles/../../job.json",
    "/tiles/after/..%2F..%2F..%2Fetc%2Fpasswd/1/1.png",
    "/tiles/after/1/1/..%2F..%2Fjob.json.png",
    "/tiles/%2e%2e/%2e%2e/job.json/1/1.png",
    "/api/patches/..%2F..%2Fjob.json/chips/before.jpg",
    "/api/patches/..%2Fjob.json/chips/before.jpg",
    "/api/patches/p0000/chips/..%2F..%2Fjob.json.jpg",
    "/api/patches/p0000/chips/%2e%2e%2fpatches.gpkg",
    "/api/patches/%2e%2e/chips/before.jpg",
    "/static/..%2F..%2Freview%2Fapp.py",
    "/static/../app.py",
])
def test_path_traversal_in_tile_and_chip_routes_is_refused(alice, path):
    r = alice.get(path, follow_redirects=False)
    assert r.status_code in (400, 404, 422), r.status_code
    assert b"before_path" not in r.content and b"SQLite" not in r.content and b"import" not in r.content


def test_exports(root, alice):
    assert alice.post("/api/patches/p0000/decision", json={"status": "illegal", "note": "shed", "version": 0}).status_code == 200
    r = root.get("/api/export/decisions.csv")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    byid = {row["patch_id"]: row for row in rows}
    assert byid["p0000"]["status"] == "illegal" and byid["p0000"]["reviewer"] == "alice"
    assert 120 < float(byid["p0000"]["lon"]) < 123
    r = root.get("/api/export/decisions.csv", params={"status": "illegal"})
    assert [row["patch_id"] for row in csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")))] == ["p0000"]
    r = root.get("/api/export/decisions.gpkg")
    path = root.app.state.job.root / "exported.gpkg"
    path.write_bytes(r.content)
    gdf = gpd.read_file(path, layer="decisions")
    assert len(gdf) == len(rows) and gdf.crs.to_epsg() == 4549
    assert gdf.set_index("patch_id").loc["p0000", "status"] == "illegal"
    assert list(gpd.read_file(path, layer="decision_log")["to_status"]) == ["illegal"]
    r = root.get("/api/export/decision_log.csv")
    assert "alice" in r.content.decode("utf-8-sig")
    r = root.get("/api/patches/p0000/evidence.png")
    sheet = Image.open(io.BytesIO(r.content))
    assert sheet.size[0] > 1000 and sheet.size[1] > 800
    r = root.get("/api/export/evidence.zip", params={"status": "illegal"})
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert names == ["p0000.png"]


def test_openapi_document_describes_the_api(alice):
    doc = alice.get("/api/openapi.json").json()
    assert "/api/patches/{patch_id}/decision" in doc["paths"]
    assert "409" in doc["paths"]["/api/patches/{patch_id}/decision"]["post"]["responses"]
    assert "/tiles/{epoch}/{z}/{x}/{y}.png" in doc["paths"]
    assert alice.get("/docs").status_code == 404  # the CDN-backed docs page is off
