"""The JSON API behind the review pages (described by the app's OpenAPI document)."""

from __future__ import annotations

import logging
import tempfile
from enum import Enum
from typing import Literal

import numpy as np
import shapely
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ..errors import PatchNotFoundError, StaleVersionError, UserError
from .auth import require_admin, require_admin_csrf, require_csrf, require_session
from .chips import jpeg_bytes, render_chip
from .export import decision_log_csv, decisions_csv, decisions_gpkg_bytes, evidence_png, write_evidence_zip
from .store import SORTS, STATUSES, PatchFilter
from .tiles import valid_tile
from .users import Session

log = logging.getLogger(__name__)

router = APIRouter()

Epoch = Literal["before", "after"]
StatusName = Enum("StatusName", {s: s for s in STATUSES}, type=str)
SortName = Enum("SortName", {s: s for s in SORTS}, type=str)

#: cache headers of rendered images (they never change for a patch id)
IMAGE_CACHE = {"Cache-Control": "private, max-age=3600"}


class DecisionIn(BaseModel):
    """A reviewer's decision on one patch."""

    status: Literal["illegal", "legal", "false_alarm", "field_visit"]
    note: str | None = Field(default=None, max_length=2000)
    version: int = Field(description="the patch version the decision is based on")


class UserIn(BaseModel):
    """A new account."""

    name: str = Field(min_length=1, max_length=64)
    role: Literal["reviewer", "admin"] = "reviewer"
    password: str = Field(min_length=8, max_length=1024)


def patch_filter(county: str | None = Query(None, max_length=200), rule: str | None = Query(None, max_length=200),
                 status: StatusName | None = None, score_min: float | None = None, score_max: float | None = None,
                 area_min: float | None = Query(None, description="minimum area, m2"),
                 area_max: float | None = Query(None, description="maximum area, m2")) -> PatchFilter:
    """Queue filters from query parameters (empty strings mean no filter)."""
    return PatchFilter(county=county or None, rule=rule or None, status=status.value if status else None,
                       score_min=score_min, score_max=score_max, area_min_m2=area_min, area_max_m2=area_max)


def to_wgs84(job, geometry):
    tr = job.to_wgs84

    def fn(coords):
        x, y = tr.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geometry, fn)


def patch_json(request: Request, patch: dict) -> dict:
    """A patch as the API returns it: attributes, outline in WGS84, centre in both CRSs."""
    job = request.app.state.job
    geom = patch.pop("geometry", None)
    out = dict(patch)
    if geom is not None:
        c = geom.representative_point() if not geom.centroid.within(geom) else geom.centroid
        lon, lat = job.to_wgs84.transform(c.x, c.y)
        out["centre"] = {"x": c.x, "y": c.y, "lon": lon, "lat": lat}
        out["bounds"] = list(geom.bounds)
        out["outline_wgs84"] = shapely.geometry.mapping(to_wgs84(job, geom))
    return out


def _get_patch(request: Request, patch_id: str, *, geometry: bool = True) -> dict:
    try:
        return request.app.state.store.get(patch_id, geometry=geometry)
    except PatchNotFoundError:
        raise HTTPException(status_code=404, detail="no such patch") from None


@router.get("/api/me", tags=["session"])
def me(session: Session = Depends(require_session)) -> dict:
    """The logged-in user and the CSRF token to send with state-changing requests."""
    return {"name": session.user.name, "role": session.user.role, "csrf_token": session.csrf,
            "expires_at": session.expires_at}


@router.get("/api/patches", tags=["patches"])
def list_patches(request: Request, flt: PatchFilter = Depends(patch_filter), sort: SortName = SortName.score_desc,
                 after: str | None = Query(None, max_length=100, description="next_cursor of the previous page"),
                 limit: int = Query(50, ge=1, le=500), _s: Session = Depends(require_session)) -> dict:
    """A page of the review queue (keyset paging) with counts and areas per status."""
    store = request.app.state.store
    try:
        page = store.query(flt, sort=sort.value, after=after, limit=limit)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return {"items": page.items, "next_cursor": page.next_cursor, "summary": store.summary(flt)}


@router.get("/api/summary", tags=["patches"])
def summary(request: Request, flt: PatchFilter = Depends(patch_filter), _s: Session = Depends(require_session)) -> dict:
    """Patches and areas (m2, mu) per status for the filters (status filter ignored)."""
    return request.app.state.store.summary(flt)


@router.get("/api/facets", tags=["patches"])
def facets(request: Request, _s: Session = Depends(require_session)) -> dict:
    """Counties, rules, statuses and sorts for the filter menus."""
    return request.app.state.store.facets()


@router.get("/api/patches/{patch_id}", tags=["patches"])
def get_patch(request: Request, patch_id: str, flt: PatchFilter = Depends(patch_filter),
              sort: SortName = SortName.score_desc, _s: Session = Depends(require_session)) -> dict:
    """One patch, its neighbours in the queue (same filters and sort) and its decision history."""
    store = request.app.state.store
    patch = _get_patch(request, patch_id)
    out = patch_json(request, patch)
    out["neighbours"] = store.neighbours(patch, flt, sort=sort.value)
    out["history"] = store.history(patch_id)
    return out


@router.post("/api/patches/{patch_id}/decision", tags=["patches"],
             responses={409: {"description": "the patch changed since `version`; `current` holds it"}})
def decide(request: Request, patch_id: str, body: DecisionIn, session: Session = Depends(require_csrf)):
    """Record a decision; refused with 409 when based on a stale version."""
    store = request.app.state.store
    try:
        result = store.decide(patch_id, body.status, reviewer=session.user.name, version=body.version, note=body.note)
    except PatchNotFoundError:
        raise HTTPException(status_code=404, detail="no such patch") from None
    except StaleVersionError as exc:
        return JSONResponse(status_code=409, content={"detail": str(exc), "current": exc.current})
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return {"patch": result.patch, "log_id": result.log_id}


@router.get("/api/patches/{patch_id}/history", tags=["patches"])
def history(request: Request, patch_id: str, _s: Session = Depends(require_session)) -> list:
    """Every decision on one patch, oldest first."""
    _get_patch(request, patch_id, geometry=False)
    return request.app.state.store.history(patch_id)


@router.get("/api/patches/{patch_id}/chips/{epoch}.jpg", tags=["images"], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def chip(request: Request, patch_id: str, epoch: Epoch, size: int = Query(512, ge=128, le=1024),
         _s: Session = Depends(require_session)):
    """The before or after image chip of a patch with its outline (JPEG)."""
    patch = _get_patch(request, patch_id)
    key = (patch_id, epoch, size)
    cache = request.app.state.chip_cache
    data = cache.get(key)
    if data is None:
        job = request.app.state.job
        data = jpeg_bytes(render_chip(job.mosaic(epoch), patch["geometry"], crs=job.crs, size_px=size))
        cache.put(key, data)
    return Response(data, media_type="image/jpeg", headers=IMAGE_CACHE)


@router.get("/tiles/{epoch}/{z}/{x}/{y}.png", tags=["images"], response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def tile(request: Request, epoch: Epoch, z: int, x: int, y: int, _s: Session = Depends(require_session)):
    """An XYZ web-mercator tile of a mosaic (transparent outside its footprint)."""
    if not valid_tile(z, x, y):
        raise HTTPException(status_code=404, detail="no such tile")
    data = request.app.state.tiles[epoch].render(z, x, y)
    return Response(data, media_type="image/png", headers=IMAGE_CACHE)


# -- admin -------------------------------------------------------------------------------
@router.get("/api/users", tags=["users"])
def list_users(request: Request, _s: Session = Depends(require_admin)) -> list:
    """Every account (admin)."""
    return [{"name": u.name, "role": u.role, "disabled": u.disabled, "created_at": u.created_at}
            for u in request.app.state.users.list()]


@router.post("/api/users", tags=["users"], status_code=201)
def add_user(request: Request, body: UserIn, _s: Session = Depends(require_admin_csrf)) -> dict:
    """Create an account (admin)."""
    try:
        user = request.app.state.users.add(body.name, body.password, role=body.role)
    except UserError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return {"name": user.name, "role": user.role, "disabled": False}


@router.post("/api/users/{name}/disable", tags=["users"])
def disable_user(request: Request, name: str, session: Session = Depends(require_admin_csrf)) -> dict:
    """Disable an account and end its sessions (admin; not yourself)."""
    if name == session.user.name:
        raise HTTPException(status_code=422, detail="you cannot disable your own account")
    try:
        request.app.state.users.disable(name)
    except UserError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return {"name": name, "disabled": True}


def _attachment(data, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@router.get("/api/export/decisions.csv", tags=["export"], response_class=Response)
def export_csv(request: Request, flt: PatchFilter = Depends(patch_filter), _s: Session = Depends(require_admin)):
    """Patches matching the filters with their decisions, as CSV (admin)."""
    text = decisions_csv(request.app.state.store, request.app.state.job, flt)
    return _attachment(text.encode("utf-8-sig"), "text/csv; charset=utf-8", "decisions.csv")


@router.get("/api/export/decision_log.csv", tags=["export"], response_class=Response)
def export_log(request: Request, _s: Session = Depends(require_admin)):
    """The whole decision log, as CSV (admin)."""
    return _attachment(decision_log_csv(request.app.state.store).encode("utf-8-sig"), "text/csv; charset=utf-8",
                       "decision_log.csv")


@router.get("/api/export/decisions.gpkg", tags=["export"], response_class=Response)
def export_gpkg(request: Request, flt: PatchFilter = Depends(patch_filter), _s: Session = Depends(require_admin)):
    """Patches matching the filters with their decisions as a GeoPackage layer ``decisions`` (admin)."""
    data = decisions_gpkg_bytes(request.app.state.store, request.app.state.job, flt)
    return _attachment(data, "application/geopackage+sqlite3", "decisions.gpkg")


@router.get("/api/patches/{patch_id}/evidence.png", tags=["export"], response_class=Response)
def evidence(request: Request, patch_id: str, _s: Session = Depends(require_admin)):
    """The evidence sheet of one patch (PNG, admin)."""
    try:
        data = evidence_png(request.app.state.store, request.app.state.job, patch_id)
    except PatchNotFoundError:
        raise HTTPException(status_code=404, detail="no such patch") from None
    return _attachment(data, "image/png", f"evidence_{patch_id}.png")


@router.get("/api/export/evidence.zip", tags=["export"], response_class=Response)
def evidence_zip(request: Request, flt: PatchFilter = Depends(patch_filter), limit: int = Query(200, ge=1, le=2000),
                 _s: Session = Depends(require_admin)):
    """A zip of evidence sheets of the patches matching the filters, at most ``limit`` (admin)."""
    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as fh:
        write_evidence_zip(request.app.state.store, request.app.state.job, fh, flt, limit=limit)
        fh.seek(0)
        data = fh.read()
    return _attachment(data, "application/zip", "evidence.zip")


__all__ = ["router", "patch_json"]
