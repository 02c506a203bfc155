"""Fixtures of the review tests: a small job folder to review and three accounts."""

from __future__ import annotations

import shutil

import pytest
from shapely.geometry import box

from review_fixtures import FAST_HASHER, ORIGIN, PASSWORDS, scene_files, make_patches, write_job

__all__ = ["FAST_HASHER", "PASSWORDS"]


@pytest.fixture(scope="session")
def template_job(tmp_path_factory):
    """A job folder made once per session (do not modify: use ``job_dir``)."""
    root = tmp_path_factory.mktemp("review_template")
    mosaics, polys, counties = scene_files(root)
    # a couple more patches so that the queue has several pages and every rule
    x0, y0 = ORIGIN
    for k in range(4):
        polys.append(box(x0 + 10 + 25 * k, y0 - 100, x0 + 20 + 25 * k, y0 - 88))
    gdf = make_patches(polys, counties)
    return write_job(root / "job", mosaics, gdf)


@pytest.fixture()
def job_dir(template_job, tmp_path):
    """A fresh copy of the job folder (patch file and job.json; mosaics shared)."""
    dst = tmp_path / "job"
    shutil.copytree(template_job, dst)
    return dst


@pytest.fixture()
def users(job_dir):
    from imagery_watch.review.users import UserStore

    store = UserStore(job_dir / "review.sqlite", hasher=FAST_HASHER)
    store.add("alice", PASSWORDS["alice"], role="reviewer")
    store.add("bob", PASSWORDS["bob"], role="reviewer")
    store.add("root", PASSWORDS["root"], role="admin")
    return store
