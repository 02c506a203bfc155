"""Reading what a finished job folder holds for its indicators, and writing text outputs.

:func:`read_job_outputs` gathers, from ``JOB_DIR`` (see :mod:`imagery_watch.jobs`): the
job state ``job.json``, the patch table ``patches.gpkg`` (with its review status), the
county polygons the job prepared (``work/layers.gpkg``, layer ``counties``, named through
``county_names`` of ``job.json``), the review sample marked in the patch file, and the text
of the job's config file when it can still be found.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputFileError, OutputError
from ..jobs import JobFolder, temporary_path

log = logging.getLogger(__name__)


@dataclass
class JobOutputs:
    """What :func:`read_job_outputs` found.

    Attributes
    ----------
    root : Path
    state : dict
        ``job.json``.
    patches : GeoDataFrame
        Layer ``patches`` of ``patches.gpkg``.
    counties : GeoDataFrame or None
        Columns ``name`` and ``geometry`` (the grid CRS), in the job's county order.
    sample : DataFrame or None
        The review sample (:mod:`imagery_watch.review.sample_table`).
    sample_info : dict
        ``seed``, ``drawn_at``, ``size`` of the sample.
    config_path : Path or None
    config_text : str or None
        The config file's text, when the file is still there.
    """

    root: Path
    state: dict
    patches: object
    counties: object = None
    sample: object = None
    sample_info: dict = field(default_factory=dict)
    config_path: Path | None = None
    config_text: str | None = None


def _read_counties(folder: JobFolder, names: list):
    import pyogrio

    if not folder.layers.is_file():
        return None
    try:
        layers = [row[0] for row in pyogrio.list_layers(folder.layers)]
        if "counties" not in layers:
            return None
        gdf = pyogrio.read_dataframe(folder.layers, layer="counties")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputFileError(f"{folder.layers}: cannot read the job's county layer ({exc}); rerun "
                             "`imagery-watch detect` into this folder") from None
    if "name" not in gdf.columns:
        index = gdf["county_index"].astype(int) if "county_index" in gdf.columns else range(1, len(gdf) + 1)
        gdf["name"] = [names[i - 1] if 0 < i <= len(names) else f"county {i}" for i in index]
    return gdf[["name", "geometry"]]


def _find_config(root: Path, recorded) -> Path | None:
    if not recorded:
        return None
    p = Path(recorded)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, root / p, root.parent / p]
    return next((c for c in candidates if c.is_file()), None)


def read_job_outputs(job_dir: str | os.PathLike) -> JobOutputs:
    """Read a finished job folder for its indicators (see the module docstring).

    Raises
    ------
    InputFileError
        If the folder, ``job.json`` or ``patches.gpkg`` is missing or unreadable.
    JobError
        If ``job.json`` cannot be parsed.
    """
    from ..review.sample_table import read_sample
    from .patches import read_patches

    root = Path(job_dir)
    folder = JobFolder(root)
    state = folder.existing_state()
    if not folder.patches.is_file():
        raise InputFileError(f"{folder.patches}: patch file not found; the job has not finished. Rerun "
                             "`imagery-watch detect` into this folder")
    patches = read_patches(folder.patches)
    counties = _read_counties(folder, [str(n) for n in state.get("county_names") or []])
    sample, sample_info = read_sample(folder.patches)
    config_path = _find_config(root, state.get("config"))
    config_text = None
    if config_path is not None:
        try:
            config_text = config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the job's config %s: %s", config_path, exc)
    return JobOutputs(root=root, state=state, patches=patches, counties=counties, sample=sample,
                      sample_info=sample_info, config_path=config_path, config_text=config_text)


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to a temporary name next to ``path``, then rename it over ``path``.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(text, encoding=encoding, newline="")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); check free space and that the folder "
                          "is writable") from None


__all__ = ["read_job_outputs", "write_text", "JobOutputs"]
