"""What the review server needs from a job folder: the patch file, both mosaics, the grid.

``JOB_DIR/job.json`` (written by the detection job) names the mosaics the job read
(``inputs.before_path`` and ``inputs.after_path``, GDAL-readable rasters or VRTs), their
band order (``inputs.bands``), the processing grid (``grid.crs_wkt``, the CRS of the
patch geometries, and ``grid.transform``) and the after-epoch's measured misregistration
(``fit.shift``: ``dy``, ``dx`` in grid pixels, > 0 when the after content sits lower /
further right than the before). The review applies that shift when it cuts after-chips,
as the detection applied it when it read the after epoch.

The job stores mosaic paths as the detection run saw them: a relative path may be relative
to the job folder or to the folder the job was run from (``--out out/sample`` records
``out/sample/work/after.vrt``); both are tried, and the job's own ``work/`` folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pyproj import Transformer
from rasterio.crs import CRS

from ..errors import InputFileError, JobError
from ..jobs import JobFolder
from .users import USERS_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mosaic:
    """One epoch as the review reads it (paths and numbers only).

    Attributes
    ----------
    label : {"before", "after"}
    path : str
        Raster or VRT GDAL opens.
    band_indexes : tuple of int
        1-based indexes of red, green and blue.
    """

    label: str
    path: str
    band_indexes: tuple = (1, 2, 3)
    #: (x, y) displacement of this epoch's content relative to the grid, in grid CRS units;
    #: readers look ``shift_m`` away to undo it
    shift_m: tuple = (0.0, 0.0)

    @property
    def shifted(self) -> bool:
        return self.shift_m[0] != 0.0 or self.shift_m[1] != 0.0


def _rgb_indexes(bands) -> tuple:
    if not bands:
        return (1, 2, 3)
    bands = [str(b).lower() for b in bands]
    try:
        return tuple(bands.index(name) + 1 for name in ("red", "green", "blue"))
    except ValueError:
        raise JobError(f"inputs.bands {bands} in job.json lacks red, green or blue; fix the job's band order") from None


@dataclass(frozen=True)
class ReviewJob:
    """A job folder opened for review.

    Attributes
    ----------
    root : Path
    before, after : Mosaic
    crs_wkt : str
        CRS of the grid and of the patch geometries.
    job_id, epoch_before, epoch_after : str or None
    """

    root: Path
    before: Mosaic
    after: Mosaic
    crs_wkt: str
    epoch_before: str | None = None
    epoch_after: str | None = None

    @property
    def patches_path(self) -> Path:
        return JobFolder(self.root).patches

    @property
    def users_path(self) -> Path:
        return self.root / USERS_FILE

    @cached_property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @cached_property
    def to_wgs84(self) -> Transformer:
        """Grid CRS -> WGS84 longitude/latitude (x = lon)."""
        return Transformer.from_crs(self.crs_wkt, "EPSG:4326", always_xy=True)

    def mosaic(self, epoch: str) -> Mosaic:
        if epoch == "before":
            return self.before
        if epoch == "after":
            return self.after
        raise ValueError(f"epoch must be 'before' or 'after', not {epoch!r}")


def shift_m_from_state(state: dict) -> tuple:
    """The after-epoch shift recorded in a job state, as (x, y) in grid CRS units.

    ``fit.shift`` holds ``dy``, ``dx`` in grid pixels; ``grid.transform`` the pixel size.
    ``(0.0, 0.0)`` when the job recorded no shift.

    Raises
    ------
    JobError
        If a recorded shift or the grid transform is malformed.
    """
    shift = (state.get("fit") or {}).get("shift")
    if not shift:
        return (0.0, 0.0)
    try:
        dy, dx = float(shift["dy"]), float(shift["dx"])
        a, _b, _c, _d, e, _f = (float(v) for v in state["grid"]["transform"][:6])
    except (KeyError, TypeError, ValueError) as exc:
        raise JobError(f"job.json: fit.shift or grid.transform is malformed ({exc!r}); rerun `imagery-watch detect` "
                       "into this folder") from None
    return (dx * a, dy * e)


def _resolve(root: Path, recorded: str, label: str) -> Path:
    """The existing file a recorded mosaic path names (see the module docstring)."""
    path = Path(recorded)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [root / path, Path.cwd() / path]
        if path.parent.name == "work":
            candidates.append(JobFolder(root).work / path.name)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise InputFileError(f"{recorded}: {label} mosaic named in job.json is missing (tried {tried}); restore it or "
                         "rerun the job")


def open_job(job_dir: str | os.PathLike) -> ReviewJob:
    """Read ``job.json`` of a job folder and check the files the review needs.

    Raises
    ------
    InputFileError
        If the folder, ``job.json``, ``patches.gpkg`` or a mosaic is missing.
    JobError
        If ``job.json`` lacks a key the review needs.
    """
    root = Path(job_dir)
    folder = JobFolder(root)
    state = folder.existing_state()
    try:
        inputs, grid = state["inputs"], state["grid"]
        before, after, crs_wkt = inputs["before_path"], inputs["after_path"], grid["crs_wkt"]
    except (KeyError, TypeError) as exc:
        raise JobError(f"{folder.job_file}: key {exc} is missing; the job never got past planning the grid. "
                       "Rerun `imagery-watch detect` into this folder") from None
    if not folder.patches.is_file():
        raise InputFileError(f"{folder.patches}: patch file not found; the job has not finished. Rerun "
                             "`imagery-watch detect` into this folder")
    idx = _rgb_indexes(inputs.get("bands"))
    paths = {label: str(_resolve(root, p, label)) for label, p in (("before", before), ("after", after))}
    shift_m = shift_m_from_state(state)
    if shift_m != (0.0, 0.0):
        log.info("after-chips are corrected by the measured shift (%+.2f, %+.2f) m", *shift_m)
    job = state.get("job") or {}
    return ReviewJob(root=root, before=Mosaic("before", paths["before"], idx),
                     after=Mosaic("after", paths["after"], idx, shift_m=shift_m),
                     crs_wkt=crs_wkt, epoch_before=job.get("epoch_before"), epoch_after=job.get("epoch_after"))
