"""Sessions, roles and CSRF protection of the review web app (FastAPI dependencies).

- The session cookie holds a random token (the server keeps its SHA-256 in
  ``review.sqlite``); it is ``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` when the
  server is told it sits behind HTTPS.
- Every state-changing request carries the session's CSRF token: JSON requests in the
  ``X-CSRF-Token`` header, HTML forms in a ``csrf_token`` field. The login form uses a
  double-submit token (a pre-login cookie echoed in the form).
- Without a session, API and tile routes answer 401 and pages redirect to the login page.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request

from .users import Session

SESSION_COOKIE = "iw_session"
LOGIN_COOKIE = "iw_login"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """Raised by :func:`require_session`; the app answers 401 (API) or redirects (pages)."""


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require_session(request: Request) -> Session:
    """The request's live session, or :class:`LoginRequired`.

    API and tile requests were checked already, before their body was read (the app's
    ``session_first`` middleware); their session is reused.
    """
    session = getattr(request.state, "session", None) or \
        request.app.state.users.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired()
    request.state.session = session
    return session


def require_admin(session: Session = Depends(require_session)) -> Session:
    """The session of an admin, or 403."""
    if not session.user.is_admin:
        raise HTTPException(status_code=403, detail="this needs the admin role")
    return session


def tokens_match(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of two tokens (``False`` when either is missing)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def require_csrf(request: Request, session: Session = Depends(require_session)) -> Session:
    """The session, if the request carries its CSRF token in the ``X-CSRF-Token`` header; else 403."""
    if not tokens_match(session.csrf, request.headers.get(CSRF_HEADER)):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the page")
    return session


def require_admin_csrf(session: Session = Depends(require_csrf)) -> Session:
    if not session.user.is_admin:
        raise HTTPException(status_code=403, detail="this needs the admin role")
    return session


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/queue"
    return target


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?next={quote(target, safe='')}"
