"""The review store: the job's GeoPackage, read and updated in place with :mod:`sqlite3`.

The patch table (layer ``patches``, DESIGN.md §3) is the one the detection job wrote. The
review updates its ``status``, ``reviewer``, ``reviewed_at``, ``note`` and ``version``
columns in place, so a QGIS user who opens the same file sees the latest decisions, and
appends every decision to a ``decision_log`` attribute table registered in
``gpkg_contents`` (QGIS lists it next to the layer).

Writes are transactions in WAL mode with ``synchronous=FULL``: a server killed at any
moment loses no committed decision (DESIGN.md §6). Every decision is a compare-and-set
on the patch's ``version``; a decision based on a stale version is refused with
:class:`StaleVersionError`, so two reviewers never silently overwrite each other.

Only parameterised SQL is used; the few identifiers that cannot be parameters (the
geometry and id columns named by the file, the sort column) come from a whitelist or from
the GeoPackage metadata and are checked against ``[A-Za-z_][A-Za-z0-9_]*``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from ..classes import M2_PER_MU
from ..errors import InputFileError, JobError, PatchNotFoundError, StaleVersionError
from .gpkg import geometry_from_gpkg, register_gpkg_functions

log = logging.getLogger(__name__)

#: every status a patch can have, in display order
STATUSES = ("pending", "illegal", "legal", "false_alarm", "field_visit")
#: the statuses a reviewer can decide
DECISIONS = STATUSES[1:]
#: sort keys of the queue -> (column, direction)
SORTS = {
    "score_desc": ("score", "DESC"),
    "score_asc": ("score", "ASC"),
    "area_desc": ("area_m2", "DESC"),
    "area_asc": ("area_m2", "ASC"),
}
#: attribute columns returned with a patch (geometry and id aside)
PATCH_COLUMNS = ("patch_id", "rule", "county", "area_m2", "area_mu", "farmland_m2", "approved_m2",
                 "before_class", "after_class", "score", "status", "reviewer", "reviewed_at", "note",
                 "version", "job_id", "epoch_before", "epoch_after")
#: review columns added when an older patch file lacks them: name -> SQL declaration
_REVIEW_COLUMNS = {"status": "TEXT DEFAULT 'pending'", "reviewer": "TEXT", "reviewed_at": "DATETIME",
                   "note": "TEXT", "version": "INTEGER DEFAULT 0"}
_REQUIRED = ("patch_id", "rule", "area_m2", "score")
_INDEXES = {
    "iw_patches_patch_id": "(patch_id)",
    "iw_patches_score": "(score)",
    "iw_patches_area": "(area_m2)",
    "iw_patches_status_score": "(status, score)",
    "iw_patches_status_area": "(status, area_m2)",
    "iw_patches_county_score": "(county, score)",
    "iw_patches_rule_score": "(rule, score)",
    # covering indexes of the per-status summary
    "iw_patches_county_status_area": "(county, status, area_m2)",
    "iw_patches_rule_status_area": "(rule, status, area_m2)",
    "iw_patches_score_status_area": "(score, status, area_m2)",
}
#: a range filter holding at least this many rows is not read through its index when the
#: queue is sorted by another column: SQLite would read the whole range and sort it, while
#: walking the sort column's index finds a page of such a common range after a few rows
WIDE_RANGE_ROWS = 2000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOG_TABLE = "decision_log"


def _ident(name: str) -> str:
    if not _IDENT.match(name or ""):
        raise JobError(f"unexpected column or table name {name!r} in the patch GeoPackage; "
                       "rewrite the file with the detection job")
    return f'"{name}"'


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with milliseconds and ``Z`` (GeoPackage DATETIME format)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class PatchFilter:
    """Which patches the queue shows. ``None`` means no condition.

    Attributes
    ----------
    county, rule, status : str or None
    score_min, score_max : float or None
        Inclusive score range.
    area_min_m2, area_max_m2 : float or None
        Inclusive area range in square metres.
    """

    county: str | None = None
    rule: str | None = None
    status: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    area_min_m2: float | None = None
    area_max_m2: float | None = None

    def where(self, *, with_status: bool = True, unindexed: tuple = ()) -> tuple:
        """SQL conditions (a list of strings joined by AND) and their parameters.

        Ranges on the columns named in ``unindexed`` are written ``+column``, which keeps
        SQLite from reading them through their index (see :meth:`PatchStore.query`).
        """
        sql, params = [], []
        for col, value in (("county", self.county), ("rule", self.rule),
                           ("status", self.status if with_status else None)):
            if value is not None:
                sql.append(f"{col} = ?")
                params.append(value)
        for col, op, value in (("score", ">=", self.score_min), ("score", "<=", self.score_max),
                               ("area_m2", ">=", self.area_min_m2), ("area_m2", "<=", self.area_max_m2)):
            if value is not None:
                sql.append(f"{'+' if col in unindexed else ''}{col} {op} ?")
                params.append(float(value))
        return sql, params

    def ranges(self) -> dict:
        """``{column: (low, high)}`` of the range filters that are set (``None`` = open end)."""
        out = {}
        for col, low, high in (("score", self.score_min, self.score_max),
                               ("area_m2", self.area_min_m2, self.area_max_m2)):
            if low is not None or high is not None:
                out[col] = (low, high)
        return out

    def as_query(self) -> dict:
        """The non-empty fields, as URL query parameters."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Page:
    """One page of the queue.

    Attributes
    ----------
    items : list of dict
        Patch attributes (no geometry), in queue order.
    next_cursor : str or None
        Pass as ``after`` to get the next page; ``None`` on the last page.
    """

    items: list
    next_cursor: str | None = None


@dataclass(frozen=True)
class Decision:
    """A recorded decision: the patch after it and its log entry id."""

    patch: dict
    log_id: int
    from_status: str


def encode_cursor(value: float, fid: int) -> str:
    """Opaque keyset cursor for the row with sort value ``value`` and id ``fid``."""
    return f"{float(value)!r}_{int(fid)}"


def decode_cursor(cursor: str) -> tuple:
    """Inverse of :func:`encode_cursor`; raises ``ValueError`` on a malformed cursor."""
    value, _, fid = cursor.rpartition("_")
    return float(value), int(fid)


class PatchStore:
    """The patch table of a job's GeoPackage, for reviewing.

    Parameters
    ----------
    path : path
        ``patches.gpkg`` of a job folder.
    layer : str
        The patch layer (default ``"patches"``).

    Raises
    ------
    InputFileError
        If the file is missing or not a GeoPackage with that layer.
    JobError
        If the layer lacks a required column.
    """

    def __init__(self, path: str | os.PathLike, *, layer: str = "patches"):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputFileError(f"{self.path}: patch file not found; run `imagery-watch detect` to make the "
                                 "job's patches, or pass the job folder that holds patches.gpkg")
        self.table = layer
        self._t = _ident(layer)
        try:
            with contextlib.closing(sqlite3.connect(self.path)) as con:
                register_gpkg_functions(con)
                con.execute("PRAGMA journal_mode=WAL")
                self._read_metadata(con)
                self._prepare(con)
        except sqlite3.DatabaseError as exc:
            raise InputFileError(f"{self.path}: not a readable GeoPackage ({exc}); check the file or rerun the "
                                 "detection job") from None

    # -- setup ---------------------------------------------------------------------------
    def _read_metadata(self, con) -> None:
        row = con.execute("SELECT column_name, srs_id FROM gpkg_geometry_columns WHERE table_name = ?",
                          (self.table,)).fetchone()
        if row is None:
            raise InputFileError(f"{self.path}: no layer {self.table!r} in the GeoPackage; expected the "
                                 "patch layer written by `imagery-watch detect`")
        self.geom_col, self.srs_id = row[0], int(row[1])
        self._g = _ident(self.geom_col)
        info = con.execute(f"PRAGMA table_info({self._t})").fetchall()
        self.columns = {r[1]: (r[2] or "").upper() for r in info}
        pk = [r[1] for r in info if r[5]]
        self.fid_col = pk[0] if pk else "rowid"
        self._f = _ident(self.fid_col) if pk else "rowid"
        missing = [c for c in _REQUIRED if c not in self.columns]
        if missing:
            raise JobError(f"{self.path}: layer {self.table!r} lacks column(s) {', '.join(missing)}; "
                           "rerun the detection job to write a complete patch file")

    def _prepare(self, con) -> None:
        with con:
            for name, decl in _REVIEW_COLUMNS.items():
                if name not in self.columns:
                    con.execute(f"ALTER TABLE {self._t} ADD COLUMN {name} {decl}")
                    self.columns[name] = decl.split()[0]
                    log.info("added review column %s to %s", name, self.path)
            con.execute(f"UPDATE {self._t} SET version = 0 WHERE version IS NULL")
            con.execute(f"UPDATE {self._t} SET status = 'pending' WHERE status IS NULL")
            existing = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            created = False
            for name, cols in _INDEXES.items():
                if name not in existing:
                    con.execute(f"CREATE INDEX {name} ON {self._t} {cols}")
                    created = True
            con.execute(f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                patch_id TEXT NOT NULL,
                reviewer TEXT NOT NULL,
                decided_at DATETIME NOT NULL,
                from_status TEXT,
                to_status TEXT NOT NULL,
                note TEXT,
                from_version INTEGER,
                to_version INTEGER)""")
            con.execute(f"CREATE INDEX IF NOT EXISTS iw_log_patch ON {LOG_TABLE} (patch_id, id)")
            con.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
                        "last_change) VALUES (?, 'attributes', ?, ?, ?)",
                        (LOG_TABLE, LOG_TABLE, "review decisions: who, when, from, to, note", utc_now_iso()))
        if created:
            con.execute("ANALYZE")
            log.info("created queue indexes on %s", self.path)

    @contextlib.contextmanager
    def connect(self):
        """A short-lived connection (one per request or thread), WAL, durable commits."""
        con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            register_gpkg_functions(con)
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=10000")
            yield con
        finally:
            con.close()

    # -- reading -------------------------------------------------------------------------
    def _select(self, *, geometry: bool = False) -> str:
        cols = [c for c in PATCH_COLUMNS if c in self.columns]
        sel = [f"{self._f} AS fid"] + cols
        if geometry:
            sel.append(f"{self._g} AS geom")
        return ", ".join(sel)

    @staticmethod
    def _row(row, *, geometry: bool = False) -> dict:
        out = {k: row[k] for k in row.keys() if k != "geom"}
        if geometry:
            out["geometry"] = geometry_from_gpkg(row["geom"])
        return out

    def query(self, flt: PatchFilter = PatchFilter(), *, sort: str = "score_desc", after: str | None = None,
              limit: int = 50) -> Page:
        """A page of the queue, by keyset paging (fast at any depth with the indexes).

        A page is read through the index of the sort column, with the equality filters'
        composite indexes, so a page costs about the same at row 50 and at row 90,000. A
        range filter on the other column (score range when sorting by area, or the reverse)
        is read through its own index only when it holds few rows (counted first, up to
        :data:`WIDE_RANGE_ROWS`); a wide one is checked row by row while walking the sort
        index, which finds a page after a few hundred rows instead of sorting the range.

        Parameters
        ----------
        flt : PatchFilter
        sort : {"score_desc", "score_asc", "area_desc", "area_asc"}
        after : str, optional
            ``next_cursor`` of the previous page.
        limit : int
            Rows per page (1..1000).

        Raises
        ------
        ValueError
            On an unknown sort or a malformed cursor.
        """
        items, more = self._keyset(flt, sort=sort, after=after, limit=limit)
        nxt = None
        if more and items:
            col = SORTS[sort][0]
            nxt = encode_cursor(items[-1][col], items[-1]["fid"])
        return Page(items=items, next_cursor=nxt)

    def _keyset(self, flt, *, sort, after, limit, reverse=False, geometry=False):
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
        limit = max(1, min(int(limit), 1000))
        with self.connect() as con:
            sql, params = self.page_sql(con, flt, sort=sort, after=after, reverse=reverse, geometry=geometry)
            rows = con.execute(sql, params + [limit + 1]).fetchall()
        items = [self._row(r, geometry=geometry) for r in rows[:limit]]
        return items, len(rows) > limit

    def page_sql(self, con, flt: PatchFilter, *, sort: str, after=None, reverse: bool = False,
                 geometry: bool = False) -> tuple:
        """The SQL of a queue page (its last parameter, the row limit, left to add) and its parameters.

        Chooses how SQLite reads the page (see :meth:`query`); public so that tests and
        benchmarks can ``EXPLAIN QUERY PLAN`` it.
        """
        col, direction = SORTS[sort]
        if reverse:
            direction = "ASC" if direction == "DESC" else "DESC"
        rows_in = {c: self._range_rows(con, c, low, high) for c, (low, high) in flt.ranges().items() if c != col}
        wide = tuple(c for c, n in rows_in.items() if n >= WIDE_RANGE_ROWS)
        # a narrow range: read it through its index and sort it (`+col` keeps the sort index out)
        order = f"+{col}" if len(wide) < len(rows_in) else col
        where, params = flt.where(unindexed=wide)
        if after is not None:
            value, fid = decode_cursor(after) if isinstance(after, str) else after
            where.append(f"({col}, {self._f}) {'<' if direction == 'DESC' else '>'} (?, ?)")
            params += [value, fid]
        sql = (f"SELECT {self._select(geometry=geometry)} FROM {self._t}"
               + (f" WHERE {' AND '.join(where)}" if where else "")
               + f" ORDER BY {order} {direction}, {self._f} {direction} LIMIT ?")
        return sql, params

    def _range_rows(self, con, col: str, low, high) -> int:
        """Rows in a range of an indexed column, counted up to :data:`WIDE_RANGE_ROWS` (cheap)."""
        cond = " AND ".join(c for c, v in ((f"{col} >= ?", low), (f"{col} <= ?", high)) if v is not None)
        params = [float(v) for v in (low, high) if v is not None]
        return con.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {self._t} WHERE {cond} LIMIT ?)",
                           params + [WIDE_RANGE_ROWS]).fetchone()[0]

    def iter_patches(self, flt: PatchFilter = PatchFilter(), *, sort: str = "score_desc", geometry: bool = True,
                     batch: int = 500):
        """Every patch matching ``flt`` in queue order, fetched in keyset batches."""
        after = None
        while True:
            items, more = self._keyset(flt, sort=sort, after=after, limit=batch, geometry=geometry)
            yield from items
            if not more or not items:
                return
            after = (items[-1][SORTS[sort][0]], items[-1]["fid"])

    def summary(self, flt: PatchFilter = PatchFilter()) -> dict:
        """Patches and areas per status (the status filter itself is ignored).

        Returns
        -------
        dict
            ``{status: {"count": int, "area_m2": float, "area_mu": float}}`` for every status,
            plus ``"total"``.
        """
        where, params = flt.where(with_status=False)
        # a score range alone is read from the covering index; left to itself SQLite skip-scans
        # (status, score) and reads every row of the range from the table, 5-10x slower
        hint = (" INDEXED BY iw_patches_score_status_area"
                if (flt.score_min is not None or flt.score_max is not None) and flt.county is None
                and flt.rule is None else "")
        sql = (f"SELECT status, COUNT(*) AS n, TOTAL(area_m2) AS a FROM {self._t}{hint}"
               + (f" WHERE {' AND '.join(where)}" if where else "") + " GROUP BY status")
        out = {s: {"count": 0, "area_m2": 0.0, "area_mu": 0.0} for s in STATUSES}
        with self.connect() as con:
            for row in con.execute(sql, params):
                out.setdefault(row["status"], {"count": 0, "area_m2": 0.0, "area_mu": 0.0})
                out[row["status"]] = {"count": row["n"], "area_m2": row["a"], "area_mu": row["a"] / M2_PER_MU}
        out["total"] = {k: sum(v[k] for v in out.values()) for k in ("count", "area_m2", "area_mu")}
        return out

    def facets(self) -> dict:
        """Distinct counties and rules (for the filter menus), read through the indexes."""
        with self.connect() as con:
            counties = [r[0] for r in con.execute(f"SELECT DISTINCT county FROM {self._t} WHERE county IS NOT NULL "
                                                  "ORDER BY county")] if "county" in self.columns else []
            rules = [r[0] for r in con.execute(f"SELECT DISTINCT rule FROM {self._t} ORDER BY rule")]
        return {"counties": counties, "rules": rules, "statuses": list(STATUSES), "sorts": list(SORTS)}

    def get(self, patch_id: str, *, geometry: bool = True) -> dict:
        """One patch with its geometry (shapely, in the grid CRS).

        Raises
        ------
        PatchNotFoundError
        """
        with self.connect() as con:
            row = con.execute(f"SELECT {self._select(geometry=geometry)} FROM {self._t} WHERE patch_id = ?",
                              (str(patch_id),)).fetchone()
        if row is None:
            raise PatchNotFoundError(f"no patch {patch_id!r} in {self.path.name}")
        return self._row(row, geometry=geometry)

    def neighbours(self, patch: dict, flt: PatchFilter = PatchFilter(), *, sort: str = "score_desc",
                   count: int = 1) -> dict:
        """Patch ids before and after ``patch`` in the queue order of ``flt`` and ``sort``.

        ``patch`` need not match ``flt`` (it may just have been decided out of it).
        """
        key = (patch[SORTS[sort][0]], patch["fid"])
        nxt, _ = self._keyset(flt, sort=sort, after=key, limit=count)
        prv, _ = self._keyset(flt, sort=sort, after=key, limit=count, reverse=True)
        return {"next": [p["patch_id"] for p in nxt], "previous": [p["patch_id"] for p in prv]}

    def history(self, patch_id: str | None = None, *, limit: int | None = None) -> list:
        """Decision log entries, oldest first (one patch, or all)."""
        sql = f"SELECT * FROM {LOG_TABLE}"
        params: list = []
        if patch_id is not None:
            sql += " WHERE patch_id = ?"
            params.append(str(patch_id))
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self.connect() as con:
            return [dict(r) for r in con.execute(sql, params)]

    # -- writing -------------------------------------------------------------------------
    def decide(self, patch_id: str, status: str, *, reviewer: str, version: int, note: str | None = None) -> Decision:
        """Record a decision if the patch is still at ``version``.

        Parameters
        ----------
        patch_id : str
        status : {"illegal", "legal", "false_alarm", "field_visit"}
        reviewer : str
            User name recorded in the patch row and the log.
        version : int
            The version the reviewer saw; the patch's version becomes ``version + 1``.
        note : str, optional
            Free text (at most 2,000 characters).

        Returns
        -------
        Decision

        Raises
        ------
        ValueError
            On an unknown status or an over-long note.
        PatchNotFoundError
        StaleVersionError
            If another decision was recorded since ``version``; ``current`` holds it.
        """
        if status not in DECISIONS:
            raise ValueError(f"unknown decision {status!r}; expected one of {', '.join(DECISIONS)}")
        note = (note or "").strip() or None
        if note is not None and len(note) > 2000:
            raise ValueError("note is longer than 2,000 characters; shorten it")
        now = utc_now_iso()
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute(f"SELECT {self._select()} FROM {self._t} WHERE patch_id = ?",
                                  (str(patch_id),)).fetchone()
                if row is None:
                    raise PatchNotFoundError(f"no patch {patch_id!r} in {self.path.name}")
                current = self._row(row)
                if int(current["version"]) != int(version):
                    raise StaleVersionError(
                        f"patch {patch_id} changed since version {version}: {current['reviewer']} set it to "
                        f"{current['status']} at {current['reviewed_at']} (now version {current['version']}); "
                        "reload the patch and decide again", current)
                con.execute(f"UPDATE {self._t} SET status = ?, reviewer = ?, reviewed_at = ?, note = ?, "
                            f"version = version + 1 WHERE {self._f} = ? AND version = ?",
                            (status, reviewer, now, note, current["fid"], int(version)))
                cur = con.execute(f"INSERT INTO {LOG_TABLE} (patch_id, reviewer, decided_at, from_status, to_status, "
                                  "note, from_version, to_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (str(patch_id), reviewer, now, current["status"], status, note, int(version),
                                   int(version) + 1))
                log_id = cur.lastrowid
                con.execute("UPDATE gpkg_contents SET last_change = ? WHERE table_name IN (?, ?)",
                            (now, self.table, LOG_TABLE))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        after = dict(current, status=status, reviewer=reviewer, reviewed_at=now, note=note,
                     version=int(version) + 1)
        log.info("patch %s: %s -> %s by %s", patch_id, current["status"], status, reviewer)
        return Decision(patch=after, log_id=log_id, from_status=current["status"])
