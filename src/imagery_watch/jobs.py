"""The job folder: what a detection job keeps so that it can resume and be traced.

Layout of ``OUT/``::

    job.json          inputs, grid, fitted parameters, fingerprint, state (written atomically)
    patches.gpkg      the change patches (layer ``patches``), the product of the job
    summary.json      figures of the last completed run
    work/             mosaic VRTs of sheet folders, the job's prepared vector layers
    chunks/<key>/     one file per finished chunk (``r000123_c000045.npz``)

A chunk file is written to a temporary name and renamed, so it is either complete or
absent: a job killed at any moment resumes by computing only the chunks whose file is
missing. Every other file of the folder is written the same way (the patch file, the job
state, the prepared layers and mosaics); a temporary file is named after the process that
writes it (``.tmp<pid>``), and those of processes that are gone are removed when the next
run prepares the folder (:meth:`JobFolder.remove_stale_temporaries`; names from
:func:`temporary_path`). ``<key>`` is a fingerprint of everything a chunk's result depends on (inputs,
their sizes and modification times, rules, fitted parameters, chunk size), so a re-run with
the same inputs and config recomputes nothing, and a changed config never reuses stale
chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputFileError, JobError, OutputError

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
PATCHES_FILE = "patches.gpkg"
SUMMARY_FILE = "summary.json"

#: a temporary file of a writer of the job folder: ``<name>.tmp<pid>[.suffix][-journal]``
#: (SQLite may leave a journal beside a GeoPackage being written)
_TEMPORARY = re.compile(r"^.+\.tmp(?P<pid>\d+)(\.[A-Za-z0-9]+)?(-journal|-wal|-shm)?$")


def fingerprint(obj) -> str:
    """A stable hex digest of a JSON-serialisable object."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_stamp(path: str | os.PathLike) -> dict:
    """Identity of an input file for fingerprints: path, size and modification time."""
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def temporary_path(path: str | os.PathLike) -> Path:
    """Where a writer puts ``path`` before renaming it into place: ``.<stem>.tmp<pid><suffix>``.

    Hidden, in the same folder (so the rename is atomic), and named after the writing
    process, so :meth:`JobFolder.prepare` can remove it once that process is gone.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{os.getpid()}", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (this process counts)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True


@dataclass(frozen=True)
class JobFolder:
    """Paths of a job folder (see module docstring)."""

    root: Path

    @property
    def job_file(self) -> Path:
        return self.root / JOB_FILE

    @property
    def patches(self) -> Path:
        return self.root / PATCHES_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def layers(self) -> Path:
        return self.work / "layers.gpkg"

    def chunk_dir(self, key: str) -> Path:
        return self.root / "chunks" / key[:16]

    @staticmethod
    def chunk_name(row: int, col: int) -> str:
        return f"r{row:06d}_c{col:06d}.npz"

    def prepare(self) -> None:
        """Create the folder tree, failing clearly when the location is not writable."""
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OutputError(
                f"{self.root}: output folder is not writable ({exc.strerror or exc}); choose another "
                "folder with --out or fix its permissions") from None
        removed = self.remove_stale_temporaries()
        if removed:
            log.info("removed %d temporary files left by an interrupted run: %s", len(removed),
                     ", ".join(p.name for p in removed))

    def remove_stale_temporaries(self) -> list:
        """Delete the temporary files that writers which no longer run left in the folder.

        A process killed while writing a file of the job folder (patch file, job state,
        review backup, prepared layers, mosaic VRTs) leaves it under its temporary name,
        ``.tmp<pid>``; the file it was replacing is intact. Temporaries of a process that
        still runs on this machine (an ``imagery-watch indicators`` writing its report,
        say) are kept. Partial chunk files are the job's to remove
        (:func:`imagery_watch.io.patches.remove_partial_pieces`).

        Returns
        -------
        list of Path
            The files removed.
        """
        removed = []
        candidates = [p for p in self.root.glob(".*") if p.is_file()]
        if self.work.is_dir():
            candidates += [p for p in self.work.iterdir() if p.is_file()]
        for path in candidates:
            m = _TEMPORARY.match(path.name)
            if m is None or _process_alive(int(m["pid"])):
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
        return removed

    def load_state(self) -> dict:
        """The saved job state, or ``{}`` when there is none."""
        if not self.job_file.exists():
            return {}
        try:
            return json.loads(self.job_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise JobError(
                f"{self.job_file}: job state is unreadable ({exc}); delete it to start the job afresh "
                "(finished chunks are recomputed)") from None

    def existing_state(self) -> dict:
        """The state of a job that has run here (for the commands that read a job folder).

        Raises
        ------
        InputFileError
            If the folder or its ``job.json`` does not exist.
        JobError
            If ``job.json`` cannot be parsed.
        """
        if not self.root.is_dir():
            raise InputFileError(f"{self.root}: job folder not found; pass the --out folder of `imagery-watch detect`")
        if not self.job_file.is_file():
            raise InputFileError(f"{self.job_file}: job.json not found; {self.root} is not a detection job folder")
        return self.load_state()

    def save_state(self, state: dict) -> None:
        write_json_atomic(self.job_file, state)
