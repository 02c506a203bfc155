"""Review of change patches in a browser (DESIGN.md §1, users of kind 2).

Modules, in the order a request meets them:

- :mod:`.job` reads the job folder (``job.json``: mosaics, band order, grid CRS);
- :mod:`.users` keeps accounts, sessions and failed-login backoff in ``JOB_DIR/review.sqlite``;
- :mod:`.auth` turns them into FastAPI dependencies (session, role, CSRF);
- :mod:`.store` reads the queue from ``patches.gpkg`` and records decisions in place, with
  a ``decision_log`` table and a version check so that reviewers never overwrite each other
  (:mod:`.gpkg`: the GeoPackage geometry blobs and trigger functions it needs);
- :mod:`.chips` and :mod:`.tiles` render image chips and XYZ map tiles from the mosaics;
- :mod:`.export` writes decisions as CSV or GeoPackage, and evidence sheets;
- :mod:`.api` (JSON API) and :mod:`.app` (pages, :func:`create_app`) make the web app.

``templates/`` and ``static/`` (Leaflet included) are served by the app itself: no internet.
"""

__all__ = ["create_app"]


def __getattr__(name):
    # the web app needs the ``review`` extra (FastAPI...); the store and the sample table
    # do not, so importing this package must not pull the web stack in
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
