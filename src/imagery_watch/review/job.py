"""What the review server needs from a job folder: the patch file, both mosaics, the grid.

``JOB_DIR/job.json`` (written by the detection job) names the mosaics the job read
(``inputs.before_path`` and ``inputs.after_path``, GDAL-readable rasters or VRTs), their
band order (``inputs.bands``) and the processing grid (``grid.crs_wkt``, the CRS of the
patch geometries).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pyproj import Transformer
from rasterio.crs import CRS

from ..errors import InputFileError, JobError
from ..jobs import JobFolder
from .users import USERS_FILE


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
    if not root.is_dir():
        raise InputFileError(f"{root}: job folder not found; pass the --out folder of `imagery-watch detect`")
    if not folder.job_file.is_file():
        raise InputFileError(f"{folder.job_file}: job.json not found; {root} is not a detection job folder")
    state = folder.load_state()
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
    paths = {}
    for label, p in (("before", before), ("after", after)):
        path = Path(p)
        if not path.is_absolute():
            path = root / path
        if not path.exists():
            raise InputFileError(f"{path}: {label} mosaic named in job.json is missing; restore it or rerun the job")
        paths[label] = str(path)
    job = state.get("job") or {}
    return ReviewJob(root=root, before=Mosaic("before", paths["before"], idx), after=Mosaic("after", paths["after"], idx),
                     crs_wkt=crs_wkt, epoch_before=job.get("epoch_before"), epoch_after=job.get("epoch_after"))
