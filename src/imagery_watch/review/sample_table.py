"""The review sample, kept in the job's GeoPackage next to the patches.

``imagery-watch review sample`` marks a stratified random sample of patches
(:func:`imagery_watch.sampling.draw_sample`) in the attribute table ``review_sample`` of
``patches.gpkg``, registered in ``gpkg_contents`` so QGIS lists it and can join it to the
patch layer by ``patch_id``. One row per sampled patch: its stratum, the stratum's size
at the draw (``stratum_patches``, needed by the estimators) and its sample size, the seed
and the time of the draw. The patch rows themselves are not changed.

Written in one transaction with a busy timeout, so it can run while the review server
is serving the same file (WAL mode).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..errors import InputFileError, SampleExistsError

#: the table's name
SAMPLE_TABLE = "review_sample"

_CREATE = f"""CREATE TABLE {SAMPLE_TABLE} (
    patch_id TEXT PRIMARY KEY NOT NULL,
    stratum TEXT NOT NULL,
    rule TEXT NOT NULL,
    score_band INTEGER NOT NULL,
    band_low REAL,
    band_high REAL,
    stratum_patches INTEGER NOT NULL,
    stratum_sample INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    drawn_at DATETIME NOT NULL)"""
_COLUMNS = ("patch_id", "stratum", "rule", "score_band", "band_low", "band_high", "stratum_patches",
            "stratum_sample")


@contextlib.contextmanager
def _connect(path: Path):
    if not path.is_file():
        raise InputFileError(f"{path}: patch file not found; run `imagery-watch detect` first, or pass the job "
                             "folder that holds patches.gpkg")
    con = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        con.execute("PRAGMA busy_timeout=10000")
        yield con
    except sqlite3.DatabaseError as exc:
        raise InputFileError(f"{path}: not a readable GeoPackage ({exc}); check the file or rerun the detection "
                             "job") from None
    finally:
        con.close()


def _has_table(con) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (SAMPLE_TABLE,)).fetchone() is not None


def write_sample(path: str | os.PathLike, sample: pd.DataFrame, *, seed: int, replace: bool = False) -> str:
    """Mark ``sample`` in the patch file, in one transaction.

    Parameters
    ----------
    path : path
        ``patches.gpkg`` of a job folder.
    sample : DataFrame
        As returned by :func:`imagery_watch.sampling.draw_sample`.
    seed : int
        The seed it was drawn with (recorded).
    replace : bool
        Replace a sample already marked; without it an existing sample is an error.

    Returns
    -------
    str
        The time of the draw (UTC, ISO 8601), as recorded.

    Raises
    ------
    SampleExistsError
        If a sample is marked already and ``replace`` is False.
    InputFileError
        If the file is missing or not a GeoPackage.
    """
    path = Path(path)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    rows = [(str(r.patch_id), str(r.stratum), str(r.rule), int(r.score_band), float(r.band_low), float(r.band_high),
             int(r.stratum_patches), int(r.stratum_sample), int(seed), now)
            for r in sample.itertuples(index=False)]
    with _connect(path) as con:
        con.execute("BEGIN IMMEDIATE")
        try:
            if _has_table(con):
                if not replace:
                    n = con.execute(f"SELECT COUNT(*) FROM {SAMPLE_TABLE}").fetchone()[0]
                    raise SampleExistsError(f"{path}: a sample of {n} patches is marked already; pass --replace "
                                            "to draw a new one (reviews of the old sample stay in the patches)")
                con.execute(f"DROP TABLE {SAMPLE_TABLE}")
            con.execute(_CREATE)
            con.executemany(f"INSERT INTO {SAMPLE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            con.execute("INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, description, "
                        "last_change) VALUES (?, 'attributes', ?, ?, ?)",
                        (SAMPLE_TABLE, SAMPLE_TABLE, "stratified random sample of patches for area estimation "
                         "(imagery-watch review sample)", now))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return now


def read_sample(path: str | os.PathLike) -> tuple:
    """The sample marked in the patch file.

    Returns
    -------
    (DataFrame or None, dict)
        The sample (columns of :data:`imagery_watch.sampling.SAMPLE_COLUMNS`), or ``None``
        when none is marked, and ``{"seed", "drawn_at", "size"}`` of the draw (empty when
        none).

    Raises
    ------
    InputFileError
        If the file is missing or not a GeoPackage.
    """
    path = Path(path)
    with _connect(path) as con:
        if not _has_table(con):
            return None, {}
        rows = con.execute(f"SELECT {', '.join(_COLUMNS)}, seed, drawn_at FROM {SAMPLE_TABLE} "
                           "ORDER BY stratum, patch_id").fetchall()
    frame = pd.DataFrame(rows, columns=[*_COLUMNS, "seed", "drawn_at"])
    info = {"seed": int(frame["seed"].iloc[0]), "drawn_at": str(frame["drawn_at"].iloc[0]),
            "size": len(frame)} if len(frame) else {}
    return frame[list(_COLUMNS)], info


__all__ = ["write_sample", "read_sample", "SampleExistsError", "SAMPLE_TABLE"]
