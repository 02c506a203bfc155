"""The review web app: :func:`create_app` builds it for one job folder.

Pages (server-rendered with Jinja2, keyboard-driven with a little vendored JavaScript):
``/login``, ``/queue``, ``/patches/{patch_id}``, ``/admin/users``. The JSON API behind
them is in :mod:`.api`; its OpenAPI document is served at ``/api/openapi.json`` (to
logged-in users; the interactive docs are off because they load assets from a CDN).
Every asset is served from the package's ``static/`` folder: the app works with no internet.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..classes import M2_PER_MU
from ..errors import PatchNotFoundError
from . import api
from .auth import (LOGIN_COOKIE, SESSION_COOKIE, LoginRequired, client_address, login_url,
                   new_login_token, require_admin, require_session, safe_next, tokens_match)
from .job import open_job
from .store import SORTS, STATUSES, PatchFilter, PatchStore
from .tiles import TileSource
from .users import Session, UserStore

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: default session lifetime: a working day
SESSION_TTL_S = 8 * 3600
#: decision -> (key, label) on the patch page
DECISION_KEYS = {"illegal": ("i", "Illegal"), "legal": ("l", "Legal"),
                 "false_alarm": ("f", "False alarm"), "field_visit": ("v", "Field visit")}
STATUS_LABELS = {"pending": "Pending", "illegal": "Illegal", "legal": "Legal", "false_alarm": "False alarm",
                 "field_visit": "Field visit"}
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class LRUCache:
    """A small thread-safe LRU cache of rendered images."""

    def __init__(self, maxsize: int = 256):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


def _asset_version() -> str:
    """Short digest of the static assets, appended to their URLs so browsers may cache them."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _when(iso: str | None) -> str:
    """``2024-05-01T08:30:12.345Z`` -> ``2024-05-01 08:30 UTC`` (as stored, shortened)."""
    if not iso:
        return ""
    text = str(iso)
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 and text[10] == "T" else text


def _filter_from_query(request: Request) -> tuple:
    """Queue filters and sort from a page's query string (bad values are ignored)."""
    q = request.query_params

    def num(name):
        try:
            return float(q[name]) if q.get(name) not in (None, "") else None
        except ValueError:
            return None

    status = q.get("status") if q.get("status") in STATUSES else None
    flt = PatchFilter(county=q.get("county") or None, rule=q.get("rule") or None, status=status,
                      score_min=num("score_min"), score_max=num("score_max"), area_min_m2=num("area_min"),
                      area_max_m2=num("area_max"))
    sort = q.get("sort") if q.get("sort") in SORTS else "score_desc"
    return flt, sort


def _context_query(flt: PatchFilter, sort: str) -> str:
    names = {"area_min_m2": "area_min", "area_max_m2": "area_max"}
    params = {names.get(k, k): v for k, v in flt.as_query().items()}
    if sort != "score_desc":
        params["sort"] = sort
    return urlencode(params)


def create_app(job_dir: str | os.PathLike, *, session_ttl_s: float = SESSION_TTL_S, hasher=None,
               secure_cookies: bool = False) -> FastAPI:
    """The review app of one job folder.

    Parameters
    ----------
    job_dir : path
        A detection job folder (``job.json``, ``patches.gpkg``); accounts and sessions
        are kept in ``review.sqlite`` next to them.
    session_ttl_s : float
        Lifetime of a session in seconds (default 8 hours).
    hasher : argon2.PasswordHasher, optional
        Password hashing parameters (tests pass cheap ones).
    secure_cookies : bool
        Mark cookies ``Secure`` (set when served behind HTTPS).

    Raises
    ------
    InputFileError, JobError
        If the job folder is incomplete (see :func:`~imagery_watch.review.job.open_job`).
    """
    job = open_job(job_dir)
    app = FastAPI(title="imagery_watch review", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Review of change patches (图斑): queue, images, decisions, exports.")
    app.state.job = job
    app.state.store = PatchStore(job.patches_path)
    app.state.users = UserStore(job.users_path, hasher=hasher)
    app.state.tiles = {e: TileSource(job.mosaic(e)) for e in ("before", "after")}
    app.state.chip_cache = LRUCache(256)
    app.state.session_ttl_s = float(session_ttl_s)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    templates.env.globals.update(STATUS_LABELS=STATUS_LABELS, M2_PER_MU=M2_PER_MU, version=__version__,
                                 asset_version=_asset_version())
    cookie_opts = {"httponly": True, "samesite": "strict", "secure": secure_cookies, "path": "/"}

    # (added first, so it runs inside security_headers: its answers get the headers too)
    @app.middleware("http")
    async def session_first(request: Request, call_next):
        # API and tile requests are refused without a live session before anything else
        # looks at them: FastAPI would otherwise parse and validate a request body first
        # and answer 422 to someone who is not logged in
        if request.url.path.startswith(("/api/", "/tiles/")):
            session = await run_in_threadpool(app.state.users.session, request.cookies.get(SESSION_COOKIE))
            if session is None:
                return JSONResponse({"detail": "login required"}, status_code=401)
            request.state.session = session
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        # vendored assets are referenced with ?v=<version>: cache them; everything else is private data
        static = request.url.path.startswith("/static/") and response.status_code == 200
        response.headers.setdefault("Cache-Control", "private, max-age=86400" if static else "no-store")
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        path = request.url.path
        if path.startswith("/api/") or path.startswith("/tiles/") or request.method != "GET":
            return JSONResponse({"detail": "login required"}, status_code=401)
        return RedirectResponse(login_url(request), status_code=303)

    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, name: str, session: Session | None, **ctx):
        ctx.update(user=session.user if session else None, csrf_token=session.csrf if session else "")
        return templates.TemplateResponse(request, name, ctx)

    # -- login -----------------------------------------------------------------------------
    def login_page(request: Request, *, error: str = "", status_code: int = 200, username: str = ""):
        token = new_login_token()
        response = templates.TemplateResponse(
            request, "login.html", {"login_token": token, "next": safe_next(request.query_params.get("next")),
                                    "error": error, "username": username, "user": None, "csrf_token": ""},
            status_code=status_code)
        response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **cookie_opts)
        return response

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request):
        return login_page(request)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(..., max_length=64), password: str = Form(..., max_length=1024),
              login_token: str = Form(""), next: str = Form("/queue")):
        if not tokens_match(request.cookies.get(LOGIN_COOKIE), login_token):
            return login_page(request, error="The login form expired; please try again.", status_code=403)
        users: UserStore = app.state.users
        address = client_address(request)
        attempt = users.login(username, password, address=address)
        if attempt.retry_after_s > 0:
            wait = int(attempt.retry_after_s) + 1
            response = login_page(request, status_code=429, username=username,
                                  error=f"Too many failed attempts. Try again in {wait} s.")
            response.headers["Retry-After"] = str(wait)
            return response
        user = attempt.user
        if user is None:
            return login_page(request, error="Wrong user name or password, or the account is disabled.",
                              status_code=401, username=username)
        token, _session = users.start_session(user, ttl_s=app.state.session_ttl_s, address=address)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=max(1, math.ceil(app.state.session_ttl_s)), **cookie_opts)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        log.info("user %s logged in from %s", user.name, address)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, csrf_token: str = Form(""), session: Session = Depends(require_session)):
        if not tokens_match(session.csrf, csrf_token):
            return JSONResponse({"detail": "missing or wrong CSRF token; reload the page"}, status_code=403)
        app.state.users.end_session(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- pages -----------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def home(_s: Session = Depends(require_session)):
        return RedirectResponse("/queue", status_code=303)

    @app.get("/queue", response_class=HTMLResponse, include_in_schema=False)
    def queue(request: Request, session: Session = Depends(require_session)):
        store: PatchStore = app.state.store
        flt, sort = _filter_from_query(request)
        after = request.query_params.get("after") or None
        try:
            result = store.query(flt, sort=sort, after=after, limit=50)
        except ValueError:
            result = store.query(flt, sort=sort, limit=50)
            after = None
        context = _context_query(flt, sort)
        return page(request, "queue.html", session, page=result, summary=store.summary(flt),
                    facets=store.facets(), flt=flt, sort=sort, context=context, after=after,
                    statuses=STATUSES, sorts=SORTS)

    @app.get("/patches/{patch_id}", response_class=HTMLResponse, include_in_schema=False)
    def patch_page(request: Request, patch_id: str, session: Session = Depends(require_session)):
        store: PatchStore = app.state.store
        try:
            patch = store.get(patch_id)
        except PatchNotFoundError:
            response = page(request, "message.html", session, title="Not found",
                            message=f"There is no patch {patch_id!r}.")
            response.status_code = 404
            return response
        flt, sort = _filter_from_query(request)
        neighbours = store.neighbours(patch, flt, sort=sort, count=1)
        data = api.patch_json(request, dict(patch))
        context = _context_query(flt, sort)
        tiles = app.state.tiles["after"]
        config = {"patch_id": patch_id, "version": data["version"], "status": data["status"],
                  "outline": data.get("outline_wgs84"), "centre": data.get("centre"),
                  "next": neighbours["next"][0] if neighbours["next"] else None,
                  "previous": neighbours["previous"][0] if neighbours["previous"] else None,
                  "context": context, "min_zoom": tiles.min_zoom, "max_zoom": tiles.native_zoom + 2,
                  "native_zoom": tiles.native_zoom, "decisions": {k: v[0] for k, v in DECISION_KEYS.items()},
                  "labels": STATUS_LABELS}
        return page(request, "patch.html", session, patch=data, config=config, context=context,
                    history=store.history(patch_id), decisions=DECISION_KEYS, job=app.state.job)

    @app.get("/admin/users", response_class=HTMLResponse, include_in_schema=False)
    def users_page(request: Request, session: Session = Depends(require_admin)):
        return page(request, "users.html", session, users=app.state.users.list())

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(_s: Session = Depends(require_session)):
        return JSONResponse(app.openapi())

    return app


__all__ = ["create_app"]
