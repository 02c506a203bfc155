"""Reviewer accounts, sessions and failed-login backoff, in ``JOB_DIR/review.sqlite``.

Why a separate file and not a table of ``patches.gpkg``: the GeoPackage is the job's
deliverable, opened in QGIS and handed to other offices, and must not carry password
hashes; a re-run of the detection job rewrites it (decisions are carried over, a backup
is kept) while accounts must survive re-runs; and sessions are frequent small writes that
have no business in the deliverable. ``review.sqlite`` is created readable by its owner
only (mode 0600).

Passwords are hashed with Argon2id (``argon2-cffi``). Session tokens are random (32
bytes) and only their SHA-256 is stored, so a copy of the file does not let anyone log
in. Each session carries its own CSRF token.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import ConfigError, UserError

log = logging.getLogger(__name__)

ROLES = ("reviewer", "admin")
USERS_FILE = "review.sqlite"
MIN_PASSWORD_LEN = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
#: failed logins (per user and address) allowed before the backoff starts
FREE_FAILURES = 3
#: longest wait imposed after repeated failures, seconds
MAX_BACKOFF_S = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('reviewer', 'admin')),
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    disabled_at REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name),
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    address TEXT
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS login_failures (
    user TEXT NOT NULL,
    address TEXT NOT NULL,
    failures INTEGER NOT NULL,
    last_failure REAL NOT NULL,
    PRIMARY KEY (user, address)
);
"""


@dataclass(frozen=True)
class User:
    """An account. ``disabled`` users cannot log in and their sessions end."""

    name: str
    role: str
    disabled: bool = False
    created_at: float = 0.0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    """A logged-in session (the token itself is only in the browser's cookie)."""

    user: User
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class LoginAttempt:
    """What :meth:`UserStore.login` found.

    Attributes
    ----------
    user : User or None
        The user, when the password was right and the account is enabled.
    retry_after_s : float
        > 0 when the try was refused without checking the password (backoff).
    """

    user: User | None
    retry_after_s: float = 0.0


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class UserStore:
    """Accounts and sessions of one job folder's review server.

    Parameters
    ----------
    path : path
        The SQLite file (``JOB_DIR/review.sqlite``); created when missing.
    hasher : argon2.PasswordHasher, optional
        Argon2id parameters (the library defaults: 64 MiB, 3 passes).
    """

    def __init__(self, path: str | os.PathLike, *, hasher: PasswordHasher | None = None):
        self.path = Path(path)
        self.hasher = hasher or PasswordHasher()
        new = not self.path.exists()
        if new:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        with self.connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        # a hash to verify against when the user does not exist (same time either way)
        self._dummy = self.hasher.hash(secrets.token_hex(8))

    @contextlib.contextmanager
    def connect(self):
        con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            yield con
        finally:
            con.close()

    # -- accounts ------------------------------------------------------------------------
    def add(self, name: str, password: str, *, role: str = "reviewer") -> User:
        """Create an account.

        Raises
        ------
        UserError
            Bad name, role or password, or the name is taken.
        """
        if not _NAME.match(name or ""):
            raise UserError(f"user name {name!r} is not allowed; use 1-64 letters, digits, '_', '.', '@' or '-', "
                            "starting with a letter or digit")
        if role not in ROLES:
            raise UserError(f"role {role!r} is unknown; expected one of {', '.join(ROLES)}")
        if len(password or "") < MIN_PASSWORD_LEN:
            raise UserError(f"password of {name} is shorter than {MIN_PASSWORD_LEN} characters; choose a longer one")
        now = time.time()
        try:
            with self.connect() as con:
                con.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
                            (name, role, self.hasher.hash(password), now))
        except sqlite3.IntegrityError:
            raise UserError(f"user {name} exists already; pick another name or disable the old account") from None
        log.info("user %s added (%s)", name, role)
        return User(name=name, role=role, created_at=now)

    def list(self) -> list:
        """Every account, by name."""
        with self.connect() as con:
            return [User(name=r["name"], role=r["role"], disabled=bool(r["disabled"]), created_at=r["created_at"])
                    for r in con.execute("SELECT * FROM users ORDER BY name")]

    def get(self, name: str) -> User | None:
        with self.connect() as con:
            r = con.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return None if r is None else User(name=r["name"], role=r["role"], disabled=bool(r["disabled"]),
                                           created_at=r["created_at"])

    def disable(self, name: str) -> None:
        """Disable an account and end its sessions.

        Raises
        ------
        UserError
            If there is no such user.
        """
        with self.connect() as con:
            cur = con.execute("UPDATE users SET disabled = 1, disabled_at = ? WHERE name = ?", (time.time(), name))
            if cur.rowcount == 0:
                raise UserError(f"no user named {name}; see `imagery-watch review users list`")
            con.execute("DELETE FROM sessions WHERE user = ?", (name,))
        log.info("user %s disabled", name)

    # -- logging in ----------------------------------------------------------------------
    @staticmethod
    def _backoff(row, now: float) -> float:
        """Seconds still to wait after the failures recorded in a ``login_failures`` row."""
        if row is None or row["failures"] < FREE_FAILURES:
            return 0.0
        wait = min(2.0 ** (row["failures"] - FREE_FAILURES), MAX_BACKOFF_S)
        return max(0.0, row["last_failure"] + wait - now)

    def retry_after(self, name: str, address: str, *, now: float | None = None) -> float:
        """Seconds until ``name`` may try again from ``address`` (0 when allowed)."""
        now = time.time() if now is None else now
        with self.connect() as con:
            r = con.execute("SELECT failures, last_failure FROM login_failures WHERE user = ? AND address = ?",
                            (name[:64], address)).fetchone()
        return self._backoff(r, now)

    def login(self, name: str, password: str, *, address: str) -> LoginAttempt:
        """Check a password under the failed-login backoff, as one step.

        Failures are counted per user name and client address: after
        :data:`FREE_FAILURES` of them each further try waits longer (1, 2, 4 s ... up to
        :data:`MAX_BACKOFF_S`). The try is counted as a failure *before* the password is
        checked, in the same transaction as the backoff check, and the count is cleared
        when the password is right; so guesses sent at once cannot all pass the check
        before the first of them is counted (across threads and server processes).

        Returns
        -------
        LoginAttempt
            ``user`` when the password is right and the account enabled; ``retry_after_s``
            > 0 when the try was refused without checking the password.
        """
        key = name[:64]
        now = time.time()
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                r = con.execute("SELECT failures, last_failure FROM login_failures WHERE user = ? AND address = ?",
                                (key, address)).fetchone()
                wait = self._backoff(r, now)
                if wait == 0.0:
                    con.execute("INSERT INTO login_failures (user, address, failures, last_failure) "
                                "VALUES (?, ?, 1, ?) ON CONFLICT (user, address) DO UPDATE SET "
                                "failures = failures + 1, last_failure = excluded.last_failure", (key, address, now))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        if wait > 0:
            log.warning("login for %r from %s refused: %.0f s to wait after repeated failures", key, address, wait)
            return LoginAttempt(user=None, retry_after_s=wait)
        with self.connect() as con:
            r = con.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        try:
            ok = self.hasher.verify(r["password_hash"] if r else self._dummy, password or "")
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not (ok and r is not None and not r["disabled"]):
            log.warning("failed login for %r from %s", key, address)
            return LoginAttempt(user=None)
        with self.connect() as con:
            con.execute("DELETE FROM login_failures WHERE user = ? AND address = ?", (key, address))
            if self.hasher.check_needs_rehash(r["password_hash"]):
                con.execute("UPDATE users SET password_hash = ? WHERE name = ?", (self.hasher.hash(password), name))
        return LoginAttempt(user=User(name=r["name"], role=r["role"], created_at=r["created_at"]))

    def authenticate(self, name: str, password: str, *, address: str) -> User | None:
        """The user if ``password`` is right and the account enabled, else ``None`` (see :meth:`login`)."""
        return self.login(name, password, address=address).user

    # -- sessions ------------------------------------------------------------------------
    def start_session(self, user: User, *, ttl_s: float, address: str = "") -> tuple:
        """Create a session; returns ``(token, Session)``. The token goes into the cookie."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        with self.connect() as con:
            con.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            con.execute("INSERT INTO sessions (token_sha256, user, csrf, created_at, expires_at, address) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (_sha(token), user.name, csrf, now, now + ttl_s, address))
        return token, Session(user=user, csrf=csrf, expires_at=now + ttl_s)

    def session(self, token: str | None) -> Session | None:
        """The live session of ``token``, or ``None`` (unknown, expired, or user disabled)."""
        if not token or len(token) > 200:
            return None
        with self.connect() as con:
            r = con.execute("SELECT s.csrf, s.expires_at, u.name, u.role, u.disabled, u.created_at FROM sessions s "
                            "JOIN users u ON u.name = s.user WHERE s.token_sha256 = ?", (_sha(token),)).fetchone()
        if r is None or r["disabled"] or r["expires_at"] < time.time():
            return None
        return Session(user=User(name=r["name"], role=r["role"], created_at=r["created_at"]), csrf=r["csrf"],
                       expires_at=r["expires_at"])

    def end_session(self, token: str | None) -> None:
        if token:
            with self.connect() as con:
                con.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_sha(token),))


def read_password_file(path: str | os.PathLike) -> str:
    """The first line of a password file (trailing newline removed).

    Raises
    ------
    ConfigError
        If the file cannot be read or the first line is empty.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the password file ({exc.strerror or exc})") from None
    line = text.splitlines()[0] if text else ""
    if not line:
        raise ConfigError(f"{path}: the password file is empty; put the password on its first line")
    return line
