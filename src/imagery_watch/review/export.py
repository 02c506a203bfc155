"""Exports of the review: decisions as CSV and as a GeoPackage layer, evidence sheets.

An evidence sheet is one PNG per patch for the case file: before and after chips with the
outline, the patch's coordinates in the grid CRS and in WGS84, its area in m2 and mu,
county, rule, decision and reviewer.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from PIL import Image, ImageDraw, ImageFont

from ..classes import M2_PER_MU
from .chips import chip_frame, draw_outline, read_frame
from .job import ReviewJob
from .store import LOG_TABLE, PATCH_COLUMNS, PatchFilter, PatchStore

log = logging.getLogger(__name__)

#: columns of the decisions CSV
CSV_COLUMNS = PATCH_COLUMNS + ("x", "y", "lon", "lat")
#: name of the layer written by :func:`write_decisions_gpkg`
DECISIONS_LAYER = "decisions"

_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
)
_BOLD_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
)


def _font(size: int, *, bold: bool = False):
    for path in (_BOLD_FILES if bold else ()) + _FONT_FILES:
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _centroid(job: ReviewJob, geometry) -> tuple:
    p = geometry.representative_point() if not geometry.centroid.within(geometry) else geometry.centroid
    lon, lat = job.to_wgs84.transform(p.x, p.y)
    return p.x, p.y, lon, lat


def decision_rows(store: PatchStore, job: ReviewJob, flt: PatchFilter = PatchFilter(), *, sort: str = "score_desc"):
    """Patches with their decision and centre coordinates (dicts with :data:`CSV_COLUMNS`)."""
    for p in store.iter_patches(flt, sort=sort, geometry=True):
        geom = p.pop("geometry")
        x, y, lon, lat = _centroid(job, geom) if geom is not None else (None,) * 4
        yield dict(p, x=x, y=y, lon=lon, lat=lat), geom


def decisions_csv(store: PatchStore, job: ReviewJob, flt: PatchFilter = PatchFilter()) -> str:
    """The decisions of every patch matching ``flt`` as CSV text (UTF-8, header row)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row, _geom in decision_rows(store, job, flt):
        writer.writerow(row)
    return buf.getvalue()


def decision_log_csv(store: PatchStore) -> str:
    """The whole decision log as CSV text."""
    rows = store.history()
    buf = io.StringIO()
    cols = ("id", "patch_id", "reviewer", "decided_at", "from_status", "to_status", "note", "from_version",
            "to_version")
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_decisions_gpkg(store: PatchStore, job: ReviewJob, path: str | os.PathLike,
                         flt: PatchFilter = PatchFilter()) -> int:
    """Write the patches matching ``flt`` with their decisions to a GeoPackage.

    The file gets a layer ``decisions`` (polygons in the grid CRS) and a table
    ``decision_log``. Returns the number of patches written.
    """
    rows, geoms = [], []
    for row, geom in decision_rows(store, job, flt):
        row.pop("fid", None)
        rows.append(row)
        geoms.append(geom)
    gdf = gpd.GeoDataFrame(rows, columns=list(CSV_COLUMNS), geometry=geoms, crs=job.crs_wkt)
    path = Path(path)
    if path.exists():
        path.unlink()
    gdf.to_file(path, layer=DECISIONS_LAYER, driver="GPKG", engine="pyogrio")
    logs = store.history()
    if logs:
        pyogrio.write_dataframe(pd.DataFrame(logs), path, layer=LOG_TABLE, driver="GPKG")
    log.info("wrote %d decisions to %s", len(rows), path)
    return len(rows)


def decisions_gpkg_bytes(store: PatchStore, job: ReviewJob, flt: PatchFilter = PatchFilter()) -> bytes:
    """:func:`write_decisions_gpkg` into a temporary file, returned as bytes."""
    with tempfile.TemporaryDirectory(prefix="iw-export-") as tmp:
        path = Path(tmp) / "decisions.gpkg"
        write_decisions_gpkg(store, job, path, flt)
        return path.read_bytes()


# -- evidence sheets ---------------------------------------------------------------------
_LABELS = {"pending": "pending", "illegal": "illegal", "legal": "legal (approved)", "false_alarm": "false alarm",
           "field_visit": "needs field visit"}
_STATUS_RGB = {"pending": (120, 120, 120), "illegal": (200, 40, 40), "legal": (30, 140, 60),
               "false_alarm": (90, 90, 160), "field_visit": (210, 140, 0)}


def _fmt(value, spec: str = "") -> str:
    if value is None or value == "":
        return "-"
    return format(value, spec) if spec else str(value)


def evidence_sheet(store: PatchStore, job: ReviewJob, patch_id: str, *, chip_px: int = 600) -> Image.Image:
    """The evidence sheet of one patch (RGB image about 1,260 x 1,000 px).

    Raises
    ------
    PatchNotFoundError
    InputFileError
        If a mosaic cannot be read.
    """
    p = store.get(patch_id)
    geom = p["geometry"]
    frame = chip_frame(geom, size_px=chip_px)
    gutter, head, label_h, table_h = 20, 72, 34, 250
    width = 3 * gutter + 2 * chip_px
    height = head + label_h + chip_px + table_h
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    title, big, small, bold = _font(26, bold=True), _font(20), _font(17), _font(17, bold=True)
    draw.rectangle((0, 0, width, head - 12), fill=(28, 43, 58))
    draw.text((gutter, 16), f"Patch {p['patch_id']}  |  {p['rule']}", font=title, fill=(255, 255, 255))
    status = p.get("status") or "pending"
    badge = _LABELS.get(status, status)
    bw = draw.textlength(badge, font=big) + 24
    draw.rounded_rectangle((width - gutter - bw, 14, width - gutter, 46), radius=6,
                           fill=_STATUS_RGB.get(status, (120, 120, 120)))
    draw.text((width - gutter - bw + 12, 17), badge, font=big, fill=(255, 255, 255))
    for i, (mosaic, epoch) in enumerate(((job.before, p.get("epoch_before") or job.epoch_before),
                                         (job.after, p.get("epoch_after") or job.epoch_after))):
        x0 = gutter + i * (chip_px + gutter)
        rgb, valid = read_frame(mosaic, frame, crs=job.crs)
        pixels = np.moveaxis(rgb, 0, -1).copy()
        pixels[~valid] = (96, 96, 96)
        chip = Image.fromarray(pixels, "RGB")
        draw_outline(chip, geom, frame.transform, width=3)
        sheet.paste(chip, (x0, head + label_h))
        draw.text((x0, head + 4), f"{mosaic.label.title()}" + (f"  ({epoch})" if epoch else ""), font=big,
                  fill=(20, 20, 20))
        # scale bar: a round length near a fifth of the chip
        side_m = frame.pixel_m * chip_px
        bar_m = next(v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if v >= side_m / 6)
        bar_px = bar_m / frame.pixel_m
        by = head + label_h + chip_px - 22
        draw.rectangle((x0 + 12, by - 4, x0 + 20 + bar_px + 60, by + 14), fill=(255, 255, 255))
        draw.line((x0 + 16, by + 5, x0 + 16 + bar_px, by + 5), fill=(0, 0, 0), width=4)
        draw.text((x0 + 22 + bar_px, by - 3), f"{bar_m} m", font=small, fill=(0, 0, 0))
    x, y, lon, lat = _centroid(job, geom)
    epsg = job.crs.to_epsg()
    crs_name = f"EPSG:{epsg}" if epsg else "grid CRS"
    area = p.get("area_m2") or geom.area
    left = [(f"Centre, {crs_name}", f"E {x:,.2f} m  N {y:,.2f} m"),
            ("Centre, WGS84", f"{lon:.6f} E  {lat:.6f} N"),
            ("Area", f"{area:,.1f} m2  =  {area / M2_PER_MU:,.3f} mu"),
            ("County", _fmt(p.get("county"))),
            ("Rule", _fmt(p.get("rule"))),
            ("Classes", f"{_fmt(p.get('before_class'))} -> {_fmt(p.get('after_class'))}")]
    right = [("Decision", badge),
             ("Reviewer", _fmt(p.get("reviewer"))),
             ("Reviewed at", _fmt(p.get("reviewed_at"))),
             ("Score", _fmt(p.get("score"), ".3f")),
             ("Farmland/approved", f"{_fmt(p.get('farmland_m2'), ',.1f')} / {_fmt(p.get('approved_m2'), ',.1f')} m2"),
             ("Job", f"{_fmt(p.get('job_id'))}  v{_fmt(p.get('version'))}")]
    ty = head + label_h + chip_px + 16
    for col, items in enumerate((left, right)):
        cx = gutter + col * (chip_px + gutter)
        for j, (k, v) in enumerate(items):
            draw.text((cx, ty + j * 27), k, font=bold, fill=(70, 70, 70))
            draw.text((cx + 215, ty + j * 27), v, font=small, fill=(10, 10, 10))
    note = (p.get("note") or "").replace("\n", " ")
    if note:
        note = note if len(note) <= 140 else note[:137] + "..."
        draw.text((gutter, ty + 6 * 27 + 4), f"Note: {note}", font=small, fill=(10, 10, 10))
    return sheet


def evidence_png(store: PatchStore, job: ReviewJob, patch_id: str) -> bytes:
    """The evidence sheet of one patch as PNG bytes."""
    buf = io.BytesIO()
    evidence_sheet(store, job, patch_id).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_evidence_zip(store: PatchStore, job: ReviewJob, fileobj, flt: PatchFilter = PatchFilter(), *,
                       limit: int | None = None) -> int:
    """Write a zip of evidence sheets (``<patch_id>.png``) of the patches matching ``flt``.

    Returns the number of sheets written.
    """
    n = 0
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in store.iter_patches(flt, geometry=False):
            if limit is not None and n >= limit:
                break
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(p["patch_id"]))
            zf.writestr(f"{name}.png", evidence_png(store, job, p["patch_id"]))
            n += 1
    log.info("wrote %d evidence sheets", n)
    return n
