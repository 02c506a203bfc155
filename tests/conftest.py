"""Shared fixtures: one small generated scene with changes, and a finished job on it.

The scene is generated once per test session, also under ``pytest -n``: the xdist workers
share the session's base temporary folder and a lock file, so only the first one to ask
generates it. Tests must not modify what these fixtures return; copy a job folder before
running on it.
"""

from __future__ import annotations

import fcntl
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

#: scene size: not a multiple of the chunk sizes tested, so edge chunks are partial
SCENE_WIDTH_PX = 1600
SCENE_HEIGHT_PX = 1472
SCENE_SEED = 31
#: changes per rule and km2; small scenes need this density to hold several of each
DENSE = 160.0

CONFIG_TEMPLATE = """\
[job]
name = "test"
out = "{out}"
epoch_before = "2023"
epoch_after = "2024"

[inputs]
before = "{before}"
after = "{after}"
bands = ["red", "green", "blue"]

[layers]
farmland = {{ path = "{scene}/layers.gpkg", layer = "farmland" }}
approved = {{ path = "{scene}/layers.gpkg", layer = "approved" }}
counties = {{ path = "{scene}/layers.gpkg", layer = "counties", name_field = "name" }}

[processing]
chunk_px = 1024
workers = 1

[[rules]]
name = "construction_on_farmland"
before = ["low_vegetation", "bare"]
after = ["built"]
where = "farmland"
min_area_m2 = 200

[[rules]]
name = "construction_elsewhere"
before = ["low_vegetation", "bare", "tree"]
after = ["built"]
where = "outside_farmland"
min_area_m2 = 200

[[rules]]
name = "afforestation"
before = ["low_vegetation", "bare", "built"]
after = ["tree"]
where = "anywhere"
min_area_m2 = 400

[[rules]]
name = "demolition"
before = ["built"]
after = ["bare"]
where = "anywhere"
min_area_m2 = 200

[[rules]]
name = "reclamation"
before = ["built", "bare"]
after = ["low_vegetation"]
where = "outside_farmland"
min_area_m2 = 400
"""


@contextmanager
def _shared_dir(tmp_path_factory, worker_id: str, name: str):
    """A folder shared by the xdist workers of this session, held under a lock."""
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent  # the session's folder, parent of the per-worker ones
    folder = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def change_scene(tmp_path_factory, worker_id) -> Path:
    """A generated two-epoch scene with true changes and distractors (read only)."""
    from imagery_watch.synthetic import generate_scene

    with _shared_dir(tmp_path_factory, worker_id, "change_scene") as folder:
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)
            generate_scene(folder, seed=SCENE_SEED, width_px=SCENE_WIDTH_PX, height_px=SCENE_HEIGHT_PX,
                           sheet_px=1024, tile_px=256, changes_per_km2=DENSE)
            (folder / ".complete").write_text("")
    return folder


def write_config(path: Path, *, scene: Path, out: Path, before: str | None = None, after: str | None = None) -> Path:
    """Write a job config for ``scene`` (inputs ``before``/``after`` if given) into ``path``."""
    scene = Path(scene).as_posix()
    path.write_text(CONFIG_TEMPLATE.format(scene=scene, out=Path(out).as_posix(), before=before or f"{scene}/before",
                                           after=after or f"{scene}/after"), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_config_file(change_scene):
    """``make_config_file(path, out=..., before=..., after=...)``: a config file for the scene."""
    def make(path: Path, *, out: Path, before: str | None = None, after: str | None = None) -> Path:
        return write_config(path, scene=change_scene, out=out, before=before, after=after)
    return make


@pytest.fixture(scope="session")
def scene_config_path(change_scene, tmp_path_factory) -> Path:
    """Config file of a job on :func:`change_scene` (job folder: set ``--out`` or replace it)."""
    root = tmp_path_factory.mktemp("config")
    return write_config(root / "job.toml", scene=change_scene, out=root / "unused-out")


@pytest.fixture(scope="session")
def scene_config(scene_config_path):
    from imagery_watch.config import load_config

    return load_config(scene_config_path)


@pytest.fixture(scope="session")
def reference_job(scene_config, tmp_path_factory):
    """An uninterrupted job on the scene with the default chunk size (read only)."""
    from imagery_watch.pipeline import run_detect

    out = tmp_path_factory.mktemp("reference") / "job"
    result = run_detect(scene_config.replace("job", out=out))
    assert result.summary["chunks_computed"] == result.summary["chunks_total"]
    return result
