"""The review server under fuzzing and attack (issue 7).

* Property-based fuzzing of the JSON API from its own OpenAPI document (schemathesis
  generates valid and invalid requests for every operation): no answer is a server error
  (5xx), and without a session every generated request gets 401 and no data.
* Hostile strings (SQL injection) through every text parameter the document lists, and
  the login form and queue page: no effect, and no value ever reaches SQL text (every
  statement the review code runs is recorded; values must travel as parameters).
* Generated path traversal in every path parameter and the static route: nothing outside.
* Login rate limiting (also against guesses sent at once, and across a restart), session
  expiry and logout checked on the server side (the raw cookie replayed), and the real
  ``imagery-watch review serve`` bound to 127.0.0.1 unless told otherwise, saying so.

The CI budget is small (:data:`EXAMPLES` per operation); ``benchmarks/bench_robustness.py``
runs :func:`fuzz_api` with many more.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from fastapi.testclient import TestClient
from schemathesis import GenerationMode

from imagery_watch.review.app import create_app
from imagery_watch.review.users import FREE_FAILURES, MAX_BACKOFF_S, UserStore

from review_fixtures import FAST_HASHER, PASSWORDS
from test_api import login

#: generated requests per operation and mode in CI (the benchmark sends many more)
EXAMPLES = 6
#: operations whose requests are expensive (each renders evidence sheets): at most this many
EXAMPLES_CAP = {"GET /api/export/evidence.zip": 2}
#: strings that change a query when spliced into SQL text
HOSTILE = (
    "' OR '1'='1",
    "x' OR 1=1 --",
    "p0001' --",
    "'; DROP TABLE patches; --",
    "\"; DELETE FROM decision_log; --",
    "') OR ('a'='a",
    "%' OR rule LIKE '%",
    "x' UNION SELECT name, password_hash, role FROM users --",
    "1; UPDATE users SET role = 'admin' --",
    "\\' OR 1=1 /*",
)
#: what must never be served: job state, the SQLite files, source code, system files
SECRETS = (b"before_path", b"SQLite format 3", b"from __future__", b"root:x:0:0", b"password_hash")


@pytest.fixture()
def app(job_dir, users):
    return create_app(job_dir, hasher=FAST_HASHER)


def logged_in(app, name: str) -> TestClient:
    client, r = login(app, name)
    assert r.status_code == 303
    client.headers["X-CSRF-Token"] = client.get("/api/me").json()["csrf_token"]
    return client


@pytest.fixture()
def admin(app):
    return logged_in(app, "root")


# -- fuzzing from the OpenAPI document --------------------------------------------------------
def _can_be_invalid(param: dict) -> bool:
    """Whether a parameter has values its schema refuses (a bare path string has none)."""
    schema = param.get("schema", {})
    return not (param["in"] == "path" and schema.get("type") == "string" and len(schema) <= 2)


def fuzz_api(app, client: TestClient, *, examples: int, with_session: bool = True, seed_value: int = 0,
             cap: dict = EXAMPLES_CAP, patch_ids=("p0000", "p0001", "p0002")) -> dict:
    """Send generated requests to every operation of the app's OpenAPI document.

    Valid requests (schemathesis' positive mode) and, where a parameter or body can be
    invalid, invalid ones (negative mode); path parameters are sometimes real patch ids
    and user names, so that requests reach the data and not only 404s.

    Parameters
    ----------
    client : TestClient
        A logged-in client: the document is read with its session. With
        ``with_session=False`` the requests are sent without its cookie.

    Returns
    -------
    dict
        ``cases`` (requests sent), ``operations``, ``statuses`` (count per status code) and
        ``failures``: (operation, mode, message) for each operation and mode where a request
        got a 5xx or, without a session, anything but 401 with no data.
    """
    doc = client.get("/api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = app
    headers = {"X-CSRF-Token": client.headers["X-CSRF-Token"]} if with_session else {}
    cookies = {"iw_session": client.cookies.get("iw_session")} if with_session else {}
    out = {"cases": 0, "operations": 0, "statuses": {}, "failures": []}

    for result in schema.get_all_operations():
        op = result.ok()
        spec = doc["paths"][op.path][op.method.lower()]
        params = spec.get("parameters", [])
        modes = [GenerationMode.POSITIVE]
        if "requestBody" in spec or any(_can_be_invalid(p) for p in params):
            modes.append(GenerationMode.NEGATIVE)
        out["operations"] += 1
        for mode in modes:
            strategy = op.as_strategy(mode)
            if "{patch_id}" in op.path:
                strategy = st.one_of(strategy, st.sampled_from(patch_ids).flatmap(
                    lambda pid, op=op, mode=mode: op.as_strategy(mode, path_parameters={"patch_id": pid})))
            if "{name}" in op.path:
                strategy = st.one_of(strategy, st.sampled_from(("alice", "bob", "root")).flatmap(
                    lambda name, op=op, mode=mode: op.as_strategy(mode, path_parameters={"name": name})))

            @seed(seed_value)
            @settings(max_examples=cap.get(op.label, examples), deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), print_blob=False)
            @given(case=strategy)
            def send(case):
                response = case.call(headers=headers, cookies=cookies)
                out["cases"] += 1
                code = response.status_code
                out["statuses"][code] = out["statuses"].get(code, 0) + 1
                where = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r}"[:500]
                assert code < 500, f"{code} for {where}: {response.text[:300]}"
                if not with_session:
                    assert code == 401, f"{code} without a session for {where}"
                    assert response.json() == {"detail": "login required"}

            try:
                send()
            except AssertionError as exc:
                out["failures"].append((op.label, mode.value, str(exc).splitlines()[0]))
    return out


def test_fuzzed_api_never_answers_with_a_server_error(app, admin):
    report = fuzz_api(app, admin, examples=EXAMPLES)
    assert report["failures"] == []
    assert report["operations"] >= 17 and report["cases"] >= 100
    # the fuzzing reached the data, not only the validation
    assert {200, 404, 422} <= set(report["statuses"]), report["statuses"]


def test_fuzzed_api_without_a_session_gives_401_and_no_data(app, admin):
    report = fuzz_api(app, admin, examples=EXAMPLES, with_session=False)
    assert report["failures"] == []
    assert set(report["statuses"]) == {401} and report["cases"] >= 100


# -- SQL: hostile strings through every text parameter ----------------------------------------
class _RecordingConnection(sqlite3.Connection):
    """Records the SQL text of every statement run through it (values are not part of it)."""

    statements: list = []

    def execute(self, sql, *args):
        self.statements.append(sql)
        return super().execute(sql, *args)

    def executemany(self, sql, *args):
        self.statements.append(sql)
        return super().executemany(sql, *args)

    def executescript(self, sql):
        self.statements.append(sql)
        return super().executescript(sql)


@pytest.fixture()
def sql_statements(monkeypatch) -> list:
    """Every SQL text the review code runs from now on (through :func:`sqlite3.connect`)."""
    statements = []
    real = sqlite3.connect

    class Recording(_RecordingConnection):
        pass

    Recording.statements = statements

    def connect(*args, **kwargs):
        kwargs.setdefault("factory", Recording)
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    return statements


def _text_inputs(doc: dict) -> list:
    """(method, path, where, name) of every string parameter and string body field of the API."""
    out = []
    for path, methods in doc["paths"].items():
        for method, spec in methods.items():
            for p in spec.get("parameters", []):
                types = {p["schema"].get("type")} | {s.get("type") for s in p["schema"].get("anyOf", [])}
                if "string" in types:
                    out.append((method.upper(), path, p["in"], p["name"]))
            body = spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                model = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
                for name, prop in model["properties"].items():
                    types = {prop.get("type")} | {s.get("type") for s in prop.get("anyOf", [])}
                    if "string" in types and "enum" not in prop:
                        out.append((method.upper(), path, "body", name))
    return out


def _fill(path: str, values: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: quote(str(values[m.group(1)]), safe=""), path)


def test_hostile_strings_in_every_text_parameter_have_no_effect(app, admin, job_dir, sql_statements):
    store = app.state.store
    before = {p["patch_id"]: p for p in store.query(limit=1000).items}
    doc = admin.get("/api/openapi.json").json()
    inputs = _text_inputs(doc)
    # every text input of the API is here: filters, cursor, ids, names, notes, passwords
    assert {(w, n) for _m, _p, w, n in inputs} >= {("query", "county"), ("query", "rule"), ("query", "after"),
                                                  ("path", "patch_id"), ("path", "name"), ("body", "note"),
                                                  ("body", "name"), ("body", "password")}
    defaults = {"patch_id": "p0001", "epoch": "before", "z": 20, "x": 1, "y": 1, "name": "bob"}
    sent, notes = 0, []
    for method, path, where, name in inputs:
        for hostile in HOSTILE:
            params, values, body = {}, dict(defaults), None
            if where == "query":
                params[name] = hostile
            elif where == "path":
                values[name] = hostile
            if path.endswith("/decision"):
                version = store.get("p0001", geometry=False)["version"]
                body = {"status": "field_visit", "version": version, "note": "checked"}
            elif path == "/api/users":
                body = {"name": "carol", "role": "reviewer", "password": "carol-secret-1"}
            if where == "body":
                body[name] = hostile
            r = admin.request(method, _fill(path, values), params=params, json=body)
            sent += 1
            assert r.status_code < 500, (method, path, name, hostile, r.status_code, r.text[:300])
            if where == "path" and name == "patch_id":
                assert r.status_code == 404, (method, path, hostile)
            if where == "query" and name in ("county", "rule") and r.status_code == 200:
                # a filter that matches nothing, not a condition that matches everything
                if path in ("/api/patches", "/api/summary"):
                    data = r.json()
                    assert data.get("items", []) == [] and data.get("summary", data)["total"]["count"] == 0
                elif path == "/api/patches/{patch_id}":
                    assert r.json()["neighbours"] == {"next": [], "previous": []}
                elif path == "/api/export/decisions.csv":
                    assert len(r.content.decode("utf-8-sig").strip().splitlines()) == 1  # the header only
            if where == "query" and name == "after":
                assert r.status_code == 422
            if where == "body" and name == "note" and r.status_code == 200:
                notes.append(hostile)
                assert r.json()["patch"]["note"] == hostile.strip()  # stored as it was typed
    # the login form and the queue page too
    for hostile in HOSTILE:
        fresh = TestClient(app)
        fresh.get("/login")
        r = fresh.post("/login", data={"username": hostile[:64], "password": hostile + "-password",
                                       "login_token": fresh.cookies.get("iw_login")}, follow_redirects=False)
        assert r.status_code == 401, hostile
        r = admin.get("/queue", params={"county": hostile, "rule": hostile, "after": hostile})
        assert r.status_code == 200 and not any(f"/patches/{pid}" in r.text for pid in before), hostile
        sent += 2

    assert sent >= 100 and notes == list(HOSTILE)
    # no value was ever part of SQL text: values travel as parameters only
    assert sql_statements, "no SQL statement was recorded: the check would prove nothing"
    spliced = sorted({h for h in HOSTILE for sql in sql_statements if h in sql or h.strip("'\"") in sql})
    assert spliced == [], f"values spliced into SQL text: {spliced}"
    # and nothing changed but what the requests were meant to change
    after = {p["patch_id"]: p for p in store.query(limit=1000).items}
    assert set(after) == set(before)
    changed = {pid for pid in before if (before[pid]["status"], before[pid]["version"])
               != (after[pid]["status"], after[pid]["version"])}
    assert changed == {"p0001"} and after["p0001"]["version"] == len(notes)
    assert [h["note"] for h in store.history("p0001")] == notes
    assert len(store.history()) == len(notes)
    assert {u.name: (u.role, u.disabled) for u in app.state.users.list()} == {
        "alice": ("reviewer", False), "bob": ("reviewer", False), "carol": ("reviewer", False),
        "root": ("admin", False)}
    with sqlite3.connect(job_dir / "patches.gpkg") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- path traversal ----------------------------------------------------------------------------
_SEGMENTS = ("..", "%2e%2e", "%2E%2E", ".%2e", "..%2f", "..%2F", "..%5c", "%2e%2e%2f", "....//", "%252e%252e%252f",
             "..;", "%00", "job.json", "review.sqlite", "patches.gpkg", "etc", "passwd", "app.py", "p0000")


def raw_get(app, raw_path: str, cookies: dict) -> tuple:
    """GET ``raw_path`` as uvicorn hands it to the app: percent-decoded, dot segments kept.

    (An HTTP client would resolve ``..`` before sending; an attacker's does not.)

    Returns
    -------
    (status, headers, body)
    """
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote(raw_path), "raw_path": raw_path.encode("latin-1"), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"cookie", cookie)], "client": ("127.0.0.1", 50000),
             "server": ("testserver", 80)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.mark.parametrize("template", [
    "/tiles/{}/20/1/1.png", "/tiles/after/{}/1/1.png", "/tiles/after/20/1/{}.png",
    "/api/patches/{}", "/api/patches/{}/chips/before.jpg", "/api/patches/p0000/chips/{}.jpg",
    "/api/patches/{}/history", "/api/patches/{}/evidence.png", "/patches/{}", "/static/{}", "/static/leaflet/{}",
])
def test_generated_path_traversal_reaches_nothing_outside(app, admin, template):
    static = Path(create_app.__code__.co_filename).parent / "static"
    served = {p.read_bytes() for p in static.rglob("*") if p.is_file()}
    cookies = {"iw_session": admin.cookies.get("iw_session")}

    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(parts=st.lists(st.sampled_from(_SEGMENTS), min_size=2, max_size=7),
           sep=st.sampled_from(("/", "%2f", "%2F", "%5c", "%5C", "\\")))
    def probe(parts, sep):
        path = template.format(sep.join(parts))
        status, _headers, body = raw_get(app, path, cookies)
        assert not any(s in body for s in SECRETS), (path, status)
        assert status in (400, 403, 404, 405, 422) or (status == 200 and body in served), (path, status)

    probe()


# -- login rate limiting -----------------------------------------------------------------------
def _guess(app, name: str, password: str) -> int:
    client = TestClient(app)
    client.get("/login")
    return client.post("/login", data={"username": name, "password": password,
                                       "login_token": client.cookies.get("iw_login")},
                       follow_redirects=False).status_code


def test_guesses_sent_at_once_are_limited_like_guesses_in_turn(app):
    n = 12
    barrier, codes = threading.Barrier(n), []

    def guess(i):
        client = TestClient(app)
        client.get("/login")
        barrier.wait()
        codes.append(client.post("/login", data={"username": "bob", "password": f"guess-{i}-{i}",
                                                 "login_token": client.cookies.get("iw_login")},
                                 follow_redirects=False).status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [401] * FREE_FAILURES + [429] * (n - FREE_FAILURES), sorted(codes)


def test_backoff_grows_to_its_cap_survives_a_restart_and_covers_unknown_names(app, job_dir):
    users: UserStore = app.state.users
    for _ in range(FREE_FAILURES):
        assert _guess(app, "bob", "wrong-password") == 401
    assert _guess(app, "bob", PASSWORDS["bob"]) == 429
    # a restarted server keeps the count (it lives in review.sqlite, not in memory)
    again = create_app(job_dir, hasher=FAST_HASHER)
    assert _guess(again, "bob", PASSWORDS["bob"]) == 429
    # each further failure doubles the wait, up to the cap
    t0 = time.time()
    with users.connect() as con:
        for failures, wait in ((FREE_FAILURES, 1), (FREE_FAILURES + 1, 2), (FREE_FAILURES + 4, 16),
                               (FREE_FAILURES + 40, MAX_BACKOFF_S)):
            con.execute("UPDATE login_failures SET failures = ?, last_failure = ? WHERE user = 'bob'", (failures, t0))
            assert users.retry_after("bob", "testclient", now=t0) == pytest.approx(wait)
            assert users.retry_after("bob", "testclient", now=t0 + wait + 0.01) == 0
    # names that are no account are limited the same way (no way to tell them apart)
    for _ in range(FREE_FAILURES):
        assert _guess(app, "nobody", "whatever-123") == 401
    assert _guess(app, "nobody", "whatever-123") == 429


# -- sessions ----------------------------------------------------------------------------------
def _replay(app, token: str, csrf: str) -> dict:
    """Requests carrying a raw session cookie (no client-side cookie jar to expire it)."""
    client = TestClient(app)
    cookie = {"Cookie": f"iw_session={token}", "X-CSRF-Token": csrf}
    return {
        "api": client.get("/api/patches", headers=cookie).status_code,
        "openapi": client.get("/api/openapi.json", headers=cookie).status_code,
        "tile": client.get("/tiles/after/20/1/1.png", headers=cookie).status_code,
        "decision": client.post("/api/patches/p0000/decision", headers=cookie,
                                json={"status": "illegal", "version": 0}).status_code,
        "page": client.get("/queue", headers=cookie, follow_redirects=False).status_code,
    }


def test_expired_or_ended_sessions_are_refused_by_the_server(job_dir, users):
    app = create_app(job_dir, hasher=FAST_HASHER, session_ttl_s=1.0)
    client = logged_in(app, "alice")
    token, csrf = client.cookies.get("iw_session"), client.headers["X-CSRF-Token"]
    assert TestClient(app).get("/api/me", headers={"Cookie": f"iw_session={token}"}).status_code == 200
    time.sleep(1.1)
    assert _replay(app, token, csrf) == {"api": 401, "openapi": 401, "tile": 401, "decision": 401, "page": 303}
    assert app.state.store.get("p0000", geometry=False)["status"] == "pending"
    # logging out ends the session on the server too, not only in the browser
    app = create_app(job_dir, hasher=FAST_HASHER)
    client = logged_in(app, "bob")
    token, csrf = client.cookies.get("iw_session"), client.headers["X-CSRF-Token"]
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert _replay(app, token, csrf) == {"api": 401, "openapi": 401, "tile": 401, "decision": 401, "page": 303}


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(target=st.text(alphabet=st.sampled_from("/\\:.@%?#\t\n ab"), max_size=12))
def test_login_never_redirects_to_another_site(target):
    from imagery_watch.review.auth import safe_next

    location = urljoin("http://review.local/queue", safe_next(target))
    assert urlsplit(location).netloc == "review.local"


# -- the real server: where it listens ---------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reachable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def test_real_server_listens_on_127_0_0_1_only_and_says_so(job_dir, users):
    port = _free_port()
    exe = Path(sys.executable).with_name("imagery-watch")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "imagery_watch.cli"]
    proc = subprocess.Popen(cmd + ["review", "serve", str(job_dir), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        said = ""
        while "Serving" not in said and proc.poll() is None:
            said = proc.stdout.readline()
        deadline = time.monotonic() + 60
        while not _reachable("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, said + proc.stdout.read()
            time.sleep(0.05)
        assert f"http://127.0.0.1:{port}/" in said and "this computer only" in said
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/patches", timeout=10)
        assert answer.value.code == 401 and json.loads(answer.value.read()) == {"detail": "login required"}
        # another address of this computer (loopback 127.0.0.2) finds nothing listening
        assert not _reachable("127.0.0.2", port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
