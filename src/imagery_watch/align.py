"""Put both epochs on one processing grid and measure their residual misregistration.

The grid takes the before-epoch's CRS, pixel size and pixel origin unless the config
names others; its extent is the overlap of the two epochs (and of the area of interest).
An epoch already on that grid (same CRS and pixel size, origin on a whole pixel) is read
directly; any other is warped on read (bilinear). The residual shift of the after-epoch
is measured by phase correlation on blocks sampled across the overlap, and the median
shift is folded into the after-epoch's reader.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from .errors import GridMismatchError
from .io.rasters import EpochReader, Grid, RasterInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridPlan:
    """The processing grid and how each epoch is read onto it."""

    grid: Grid
    before_warped: bool
    after_warped: bool
    notes: tuple


def plan_grid(before: RasterInfo, after: RasterInfo, *, crs: str = "", pixel_size_m: float = 0.0,
              aoi_bounds: tuple | None = None) -> GridPlan:
    """Choose the processing grid for two epochs.

    Parameters
    ----------
    before, after : RasterInfo
    crs : str, optional
        Processing CRS (e.g. ``"EPSG:4549"``); default the before-epoch's.
    pixel_size_m : float, optional
        Processing pixel size in CRS units; default the before-epoch's.
    aoi_bounds : tuple, optional
        (left, bottom, right, top) of the area of interest in the processing CRS.

    Raises
    ------
    GridMismatchError
        If the epochs (and the area of interest) do not overlap, or the CRS is unusable.
    """
    notes = []
    try:
        grid_crs = CRS.from_user_input(crs) if crs else before.crs
    except Exception:
        raise GridMismatchError(f"processing.crs: cannot understand CRS {crs!r}; use e.g. EPSG:4549") from None
    if grid_crs.is_geographic:
        raise GridMismatchError(
            f"processing CRS {grid_crs.to_string()} is geographic (degrees); set processing.crs to a "
            "projected CRS in metres, e.g. EPSG:4549")
    b_bounds = _bounds_in(before, grid_crs, "before")
    a_bounds = _bounds_in(after, grid_crs, "after")
    same_crs_b = before.crs == grid_crs
    res = pixel_size_m or (before.pixel_size[0] if same_crs_b else None)
    if res is None:
        # before is in another CRS: keep about its pixel count across its extent
        res = (b_bounds[2] - b_bounds[0]) / before.width
        res = float(f"{res:.3g}")
    if same_crs_b and math.isclose(before.pixel_size[0], res, rel_tol=1e-9):
        origin_x, origin_y = before.transform[2], before.transform[5]
    else:
        origin_x, origin_y = b_bounds[0], b_bounds[3]
        notes.append(f"before epoch reprojected from {before.crs.to_string()} at {before.pixel_size[0]:g} "
                     f"to {grid_crs.to_string()} at {res:g}")
    left, bottom, right, top = (max(b_bounds[0], a_bounds[0]), max(b_bounds[1], a_bounds[1]),
                                min(b_bounds[2], a_bounds[2]), min(b_bounds[3], a_bounds[3]))
    if right <= left or top <= bottom:
        raise GridMismatchError(
            f"{before.source} and {after.source} do not overlap (before {_fmt(b_bounds)}, after "
            f"{_fmt(a_bounds)} in {grid_crs.to_string()}); check that both epochs cover the same area and "
            "carry the right CRS")
    shared = _area((left, bottom, right, top))
    if aoi_bounds is not None:
        left, bottom = max(left, aoi_bounds[0]), max(bottom, aoi_bounds[1])
        right, top = min(right, aoi_bounds[2]), min(top, aoi_bounds[3])
        if right <= left or top <= bottom:
            raise GridMismatchError(
                f"the area of interest {_fmt(aoi_bounds)} does not overlap the epochs' common extent; "
                "check inputs.area_of_interest")
    # snap the extent to the grid origin
    c0 = math.floor((left - origin_x) / res + 1e-6)
    c1 = math.ceil((right - origin_x) / res - 1e-6)
    r0 = math.floor((origin_y - top) / res + 1e-6)
    r1 = math.ceil((origin_y - bottom) / res - 1e-6)
    transform = Affine(res, 0.0, origin_x + c0 * res, 0.0, -res, origin_y - r0 * res)
    grid = Grid(crs_wkt=grid_crs.to_wkt(), transform=tuple(transform)[:6], width=c1 - c0, height=r1 - r0)
    if grid.width < 1 or grid.height < 1:
        raise GridMismatchError("the epochs' overlap is smaller than one pixel; check the inputs")
    area_b, area_a = _area(b_bounds), _area(a_bounds)
    if shared < 0.995 * max(area_b, area_a):
        notes.append(f"partial overlap: processing {grid.width * grid.height * res * res / 1e6:.3f} km2, extent "
                     f"{_fmt(grid.bounds)} in {grid_crs.to_string()}; the epochs share {100 * shared / area_b:.0f} % "
                     f"of the before epoch ({area_b / 1e6:.3f} km2) and {100 * shared / area_a:.0f} % of the after "
                     f"epoch ({area_a / 1e6:.3f} km2): the rest of each is not processed")
    after_warped = not _on_grid(after, grid)
    if after_warped:
        notes.append(f"after epoch ({after.crs.to_string()}, pixel {after.pixel_size[0]:g}) is warped onto the "
                     f"processing grid ({grid_crs.to_string()}, pixel {res:g}) with bilinear resampling")
    return GridPlan(grid=grid, before_warped=not _on_grid(before, grid), after_warped=after_warped,
                    notes=tuple(notes))


def _fmt(b) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in b) + ")"


def _area(b) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def _bounds_in(info: RasterInfo, crs: CRS, label: str) -> tuple:
    if info.crs == crs:
        return info.bounds
    try:
        return transform_bounds(info.crs, crs, *info.bounds, densify_pts=21)
    except Exception:  # rasterio raises its private CPLE_* errors when PROJ has no operation
        raise GridMismatchError(
            f"{info.source}: the {label} epoch's CRS ({_crs_name(info.crs)}) cannot be transformed to the "
            f"processing CRS {_crs_name(crs)}; if the file's CRS is wrong, assign the right one "
            f"(gdal_edit.py -a_srs EPSG:4549 {Path(info.source).name}), else reproject it "
            "(gdalwarp -t_srs EPSG:4549 in.tif out.tif)") from None


def _crs_name(crs: CRS) -> str:
    """``EPSG:4549``, or the CRS's name when it has no EPSG code."""
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    from pyproj import CRS as ProjCRS

    return repr(ProjCRS.from_wkt(crs.to_wkt()).name)


def unprocessed_areas(before: RasterInfo, after: RasterInfo, grid: Grid):
    """The parts of the processing grid that unreadable sheets leave unprocessed.

    Sheets left out of a mosaic (``describe_epoch(..., skip_unreadable=True)``, listed in
    ``RasterInfo.unreadable``) read as nodata: no patch can appear there, which must never
    pass for "no change". This gives their footprints on the grid, for the job to record.

    Returns
    -------
    GeoDataFrame
        One row per sheet that touches the grid: ``epoch`` ("before"/"after"), ``sheet``
        (path), ``reason``, ``area_m2`` (inside the grid) and the footprint clipped to the
        grid, in the grid's CRS. Empty when every sheet was read.
    """
    import geopandas as gpd
    import shapely

    frame = shapely.box(*grid.bounds)
    rows = []
    for label, info in (("before", before), ("after", after)):
        for sheet in info.unreadable:
            crs = CRS.from_wkt(sheet.crs_wkt)
            footprint = gpd.GeoSeries([shapely.box(*sheet.bounds)], crs=crs)
            if crs != grid.crs:
                footprint = footprint.segmentize(max(_area(sheet.bounds) ** 0.5 / 20, 1e-9)).to_crs(grid.crs)
            inside = footprint.iloc[0].intersection(frame)
            if inside.area > 0:  # a sheet that only touches the grid's edge leaves nothing out
                rows.append({"epoch": label, "sheet": sheet.path, "reason": sheet.reason,
                             "area_m2": float(inside.area), "geometry": inside})
    return gpd.GeoDataFrame(rows, columns=["epoch", "sheet", "reason", "area_m2", "geometry"], geometry="geometry",
                            crs=grid.crs)


def _grid_offset(info: RasterInfo, grid: Grid) -> tuple | None:
    """(row, col) of the grid origin in the file when the file is on the grid, else None."""
    if info.crs != grid.crs:
        return None
    a, g = info.affine, grid.affine
    if not (math.isclose(a.a, g.a, rel_tol=1e-9) and math.isclose(a.e, g.e, rel_tol=1e-9)):
        return None
    col = (g.c - a.c) / a.a
    row = (g.f - a.f) / a.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def _on_grid(info: RasterInfo, grid: Grid) -> bool:
    return _grid_offset(info, grid) is not None


def make_reader(info: RasterInfo, grid: Grid, band_indexes: tuple, *, shift_rc: tuple = (0.0, 0.0)) -> EpochReader:
    """A reader that delivers ``info`` on ``grid``, corrected by ``shift_rc`` pixels.

    ``shift_rc`` is the (row, col) displacement of the epoch's content relative to the
    grid (as measured by :func:`measure_shift`); it is undone on read. A whole-pixel
    shift of an on-grid file stays a direct read; a fractional shift warps.
    """
    dy, dx = float(shift_rc[0]), float(shift_rc[1])
    offset = _grid_offset(info, grid)
    if offset is not None and dy == round(dy) and dx == round(dx):
        return EpochReader(path=info.path, band_indexes=tuple(band_indexes), grid=grid,
                           offset_rc=(offset[0] + int(dy), offset[1] + int(dx)))
    if offset is not None:
        return EpochReader(path=info.path, band_indexes=tuple(band_indexes), grid=grid,
                           offset_rc=(offset[0], offset[1]), subpixel_rc=(dy, dx))
    a = info.affine
    # content displaced by (dy, dx) grid pixels: move the file's georeference back
    gx, gy = grid.affine.a, grid.affine.e
    corrected = Affine(a.a, a.b, a.c - dx * gx, a.d, a.e, a.f - dy * gy)
    return EpochReader(path=info.path, band_indexes=tuple(band_indexes), grid=grid, offset_rc=None,
                       src_transform=tuple(corrected)[:6])


@dataclass(frozen=True)
class ShiftEstimate:
    """Median residual shift of the after-epoch, in processing-grid pixels.

    ``dy``, ``dx`` > 0 mean the after content sits lower / further right than the before.
    """

    dy: float
    dx: float
    blocks_used: int
    spread_px: float

    def to_dict(self) -> dict:
        return {"dy": self.dy, "dx": self.dx, "blocks_used": self.blocks_used, "spread_px": self.spread_px}


def _luminance(img: np.ndarray) -> np.ndarray:
    return (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).astype(np.float32)


def measure_shift(before_samples, after_samples, valid_samples, *, max_shift_px: float = 4.0,
                  upsample: int = 10, workers: int = 1) -> ShiftEstimate:
    """Estimate the after-epoch's residual shift by phase correlation on sample blocks.

    Parameters
    ----------
    before_samples, after_samples : list of ndarray (band, y, x), uint8
        The same windows of both epochs (after read without shift correction).
    valid_samples : list of ndarray (y, x), bool
    max_shift_px : float
        Shifts larger than this in a block are treated as failed matches.
    upsample : int
        Sub-pixel precision is 1 / upsample pixel.
    workers : int
        Threads measuring blocks at once (same result for any number).

    Returns
    -------
    ShiftEstimate
        Median over blocks with enough texture; (0, 0) when no block qualifies.
    """
    from skimage.registration import phase_cross_correlation

    def block_shift(b, a, v):
        if v.mean() < 0.98:
            return None
        lb, la = _luminance(b), _luminance(a)
        if lb.std() < 4 or la.std() < 4:
            return None
        try:
            shift, error, _ = phase_cross_correlation(lb, la, upsample_factor=upsample, normalization=None)
        except ValueError:
            return None
        # shift registers `la` onto `lb`: content of after sits at -shift relative to before
        dy, dx = -float(shift[0]), -float(shift[1])
        if abs(dy) <= max_shift_px and abs(dx) <= max_shift_px:
            return dy, dx
        return None

    # FFTs and matrix products release the GIL: blocks run in parallel, results in order
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        found = list(pool.map(block_shift, before_samples, after_samples, valid_samples))
    shifts = [s for s in found if s is not None]
    if not shifts:
        log.warning("no sample block had enough texture to measure misregistration; assuming none")
        return ShiftEstimate(0.0, 0.0, 0, 0.0)
    arr = np.asarray(shifts)
    med = np.median(arr, axis=0)
    spread = float(np.median(np.abs(arr - med).max(axis=1)))
    dy, dx = (round(float(v) * upsample) / upsample for v in med)
    return ShiftEstimate(dy=dy, dx=dx, blocks_used=len(shifts), spread_px=spread)
