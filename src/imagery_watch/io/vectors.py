"""Reading the vector layers a job uses (farmland, approved land, counties, area of interest).

Layers are read once, checked, repaired, reprojected to the processing grid's CRS and
saved into the job folder (``layers.gpkg``); tasks then read only the features that
touch their window (``bbox`` filter through the GeoPackage's spatial index) and rasterise
them on the chunk's pixel grid.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from affine import Affine
from rasterio import features

from ..errors import InputFileError, OutputError, VectorLayerError
from ..jobs import temporary_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerReport:
    """What reading a layer found: feature counts and repairs."""

    name: str
    source: str
    features: int
    repaired: int
    dropped_empty: int
    reprojected_from: str | None


def read_layer(path: str | os.PathLike, *, layer: str | None, name: str, crs, bounds=None,
               keep_fields: tuple = ()) -> tuple:
    """Read a polygon layer, repair invalid geometries and reproject it to ``crs``.

    Parameters
    ----------
    path : path
        Vector file (GeoPackage, Shapefile, GeoJSON...).
    layer : str or None
        Layer name inside the file (None: the first layer).
    name : str
        Role of the layer in the job (``farmland``...), used in messages.
    crs : CRS-like
        Target CRS (the processing grid's).
    bounds : tuple, optional
        (left, bottom, right, top) in ``crs``: only features intersecting it are kept.
    keep_fields : tuple of str
        Attribute fields to keep (must exist).

    Returns
    -------
    gdf : GeoDataFrame
        Polygons in ``crs``, valid, non-empty.
    report : LayerReport

    Raises
    ------
    InputFileError
        The file does not exist or cannot be read.
    VectorLayerError
        Unknown layer, no CRS, missing field, or no polygon in the layer.
    """
    path = Path(path)
    key = _config_key(name)
    if not path.exists():
        raise InputFileError(f"{path}: {name} layer file not found; fix {key}.path in the config")
    try:
        if layer is not None:
            available = [row[0] for row in pyogrio.list_layers(path)]
            if layer not in available:
                raise VectorLayerError(
                    f"{path}: no layer {layer!r} (layers: {', '.join(available)}); fix {key}.layer")
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except VectorLayerError:
        raise
    except Exception as exc:  # pyogrio raises several DataSource/DataLayer errors
        raise InputFileError(f"{path}: cannot read the {name} layer of {key} ({exc}); check the file, or "
                             "export the layer again (ogr2ogr -f GPKG out.gpkg in)") from None
    if gdf.crs is None:
        raise VectorLayerError(
            f"{path}: {name} layer ({key}) has no CRS; assign one (ogr2ogr -a_srs EPSG:4549 out.gpkg {path.name})")
    for f in keep_fields:
        if f not in gdf.columns:
            raise VectorLayerError(
                f"{path}: {name} layer has no field {f!r} (fields: {', '.join(map(str, gdf.columns[:-1]))}); "
                f"set {key}.name_field to the field holding names")
    if len(gdf) == 0:
        raise VectorLayerError(f"{path}: {name} layer ({key}) is empty; point {key} at a layer with at least "
                               "one polygon, or remove it from the config")
    gdf = gdf[list(keep_fields) + ["geometry"]]
    reprojected = None
    if not gdf.crs.equals(crs):
        reprojected = gdf.crs.to_string()
        gdf = gdf.to_crs(crs)
    geoms = gdf.geometry.values
    invalid = ~shapely.is_valid(geoms) & ~shapely.is_missing(geoms)
    repaired = int(invalid.sum())
    if repaired:
        fixed = shapely.make_valid(geoms[invalid])
        gdf.loc[invalid, "geometry"] = fixed
        log.warning("%s: repaired %d invalid geometries in the %s layer", path, repaired, name)
    # keep polygonal parts only
    gdf["geometry"] = [_polygonal(g) for g in gdf.geometry.values]
    empty = gdf.geometry.is_empty | gdf.geometry.isna()
    dropped = int(empty.sum())
    gdf = gdf[~empty]
    if len(gdf) == 0:
        raise VectorLayerError(f"{path}: {name} layer ({key}) holds no polygon ({dropped} empty or non-polygon "
                               "geometries); point it at a polygon layer")
    if bounds is not None:
        gdf = gdf[gdf.intersects(shapely.box(*bounds))]
    gdf = gdf.reset_index(drop=True)
    report = LayerReport(name=name, source=str(path) + (f":{layer}" if layer else ""), features=len(gdf),
                         repaired=repaired, dropped_empty=dropped, reprojected_from=reprojected)
    return gdf, report


def _config_key(name: str) -> str:
    """The config key that names a layer of role ``name`` (for messages)."""
    return "inputs.area_of_interest" if name == "area_of_interest" else f"layers.{name}"


def _polygonal(geom):
    if geom is None or geom.is_empty:
        return shapely.Polygon()
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        return shapely.union_all(parts) if parts else shapely.Polygon()
    return shapely.Polygon()


def write_job_layers(path: str | os.PathLike, layers: dict) -> None:
    """Write prepared layers (name -> GeoDataFrame) to one GeoPackage, atomically."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        if tmp.exists():
            tmp.unlink()
        for name, gdf in layers.items():
            gdf.to_file(tmp, layer=name, driver="GPKG", engine="pyogrio")
        if not layers:
            gpd.GeoDataFrame({"geometry": []}, crs=None).to_file(tmp, layer="empty", driver="GPKG")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the job's layers ({exc}); check the output folder") from None


#: layers with at most this many features are read once per process by rasterise_window
SMALL_LAYER_FEATURES = 64


@functools.lru_cache(maxsize=16)
def _small_layer(path: str, layer: str, values: str | None, stamp: tuple):
    """The geometries and burn values of a layer of few features, or None for a larger one
    (``stamp``: the file's inode, size and modification time, so a changed file is read again)."""
    if pyogrio.read_info(path, layer=layer)["features"] > SMALL_LAYER_FEATURES:
        return None
    _, _, wkb, fields = pyogrio.raw.read(path, layer=layer, columns=[values] if values else [])
    if wkb is None or len(wkb) == 0:
        return np.empty(0, object), np.zeros(0, np.int64)
    geoms = shapely.from_wkb(wkb)
    shapely.prepare(geoms)
    return geoms, (np.asarray(fields[0]) if values else np.ones(len(wkb), np.int64))


#: a query of a large layer reads the features of its window grown by this many window
#: sizes on every side, kept for the windows that follow (neighbouring chunks): a query
#: costs about the same for 1 or 25 windows' worth of features (the file is opened each
#: time). A little over 1, so that the next chunk's window is inside despite rounding
REGION_GROW = 1.1
#: regions kept per layer and thread (the last ones read): memory is bounded by the
#: features of a few windows, whatever the size of the layer
REGIONS_KEPT = 2


@dataclass
class _Region:
    """The features of a layer that touch ``bounds`` (left, bottom, right, top), in fid order."""

    stamp: tuple
    bounds: tuple
    geoms: np.ndarray
    envelopes: np.ndarray
    values: np.ndarray | None


_regions = threading.local()


def _query(path: str, layer: str, values: str | None, stamp: tuple, bbox: tuple) -> tuple:
    """The geometries (fid order) and ``values`` field (None without) of the features that
    may touch ``bbox``: those of a region read for an earlier window when it holds ``bbox``
    (this thread's last :data:`REGIONS_KEPT` of the layer; ``stamp`` as :func:`_small_layer`'s,
    so a changed file is read again), else read around ``bbox``."""
    cache = getattr(_regions, "by_layer", None)
    if cache is None:
        cache = _regions.by_layer = {}
    key = (path, layer, values)
    kept = [r for r in cache.get(key, ()) if r.stamp == stamp]
    region = next((r for r in kept if r.bounds[0] <= bbox[0] and r.bounds[1] <= bbox[1]
                   and r.bounds[2] >= bbox[2] and r.bounds[3] >= bbox[3]), None)
    if region is None:
        gx, gy = REGION_GROW * (bbox[2] - bbox[0]), REGION_GROW * (bbox[3] - bbox[1])
        bounds = (bbox[0] - gx, bbox[1] - gy, bbox[2] + gx, bbox[3] + gy)
        _, fids, wkb, fields = pyogrio.raw.read(path, layer=layer, bbox=bounds, columns=[values] if values else [],
                                                return_fids=True)
        if wkb is None or len(wkb) == 0:
            geoms, field = np.empty(0, object), (np.zeros(0, np.int64) if values else None)
        else:
            order = np.argsort(fids, kind="stable")  # where features overlap, the last one wins
            geoms = shapely.from_wkb(wkb[order])
            field = np.asarray(fields[0])[order] if values else None
        region = _Region(stamp=stamp, bounds=bounds, geoms=geoms, envelopes=shapely.bounds(geoms).reshape(-1, 4),
                         values=field)
    else:
        kept.remove(region)
    cache[key] = [region] + kept[:REGIONS_KEPT - 1]
    env = region.envelopes
    hit = (env[:, 0] <= bbox[2]) & (env[:, 2] >= bbox[0]) & (env[:, 1] <= bbox[3]) & (env[:, 3] >= bbox[1])
    return region.geoms[hit], (None if region.values is None else region.values[hit])


def _geojson(geoms: np.ndarray, burn: np.ndarray) -> list:
    """``(geometry, value)`` pairs for :func:`rasterio.features.rasterize`: for 2-D polygons,
    the mappings their ``__geo_interface__`` gives (same coordinates, same order), built
    from one ragged array instead of point by point."""
    types = shapely.get_type_id(geoms)
    if not np.isin(types, (3, 6)).all() or shapely.has_z(geoms).any():
        return list(zip(geoms, burn))
    parts, owner = shapely.get_parts(geoms, return_index=True)
    _, coords, (ring_offsets, part_offsets) = shapely.to_ragged_array(parts)
    xy = coords.tolist()
    ring_offsets, part_offsets = ring_offsets.tolist(), part_offsets.tolist()
    polys = [[xy[ring_offsets[r]:ring_offsets[r + 1]] for r in range(part_offsets[k], part_offsets[k + 1])]
             for k in range(len(parts))]
    first = np.searchsorted(owner, np.arange(len(geoms) + 1)).tolist()
    out = []
    for i, (kind, value) in enumerate(zip(types.tolist(), burn)):
        if kind == 3:
            out.append(({"type": "Polygon", "coordinates": polys[first[i]]}, value))
        else:
            out.append(({"type": "MultiPolygon", "coordinates": polys[first[i]:first[i + 1]]}, value))
    return out


def _fill_value(value, dtype):
    """``value`` as the ``dtype`` that GDAL would burn, or None when that is not plainly the
    same number (not an integer in range)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui" or not float(value).is_integer():
        return None
    info = np.iinfo(dtype)
    return dtype.type(value) if info.min <= value <= info.max else None


def rasterise_window(path: str | os.PathLike, layer: str, *, transform: Affine, shape: tuple,
                     values: str | None = None, dtype=np.uint8) -> np.ndarray:
    """Burn one layer of the job's GeoPackage onto a window's pixel grid.

    Pixels whose centre lies in a polygon get 1 (or the feature's ``values`` field; where
    features overlap, the one written last). Layers of at most :data:`SMALL_LAYER_FEATURES`
    features (counties) are read once per process; larger ones are queried by region
    (:data:`REGION_GROW`), and a region serves the neighbouring windows that follow.

    Returns
    -------
    ndarray (y, x) of ``dtype``; zeros where no polygon.
    """
    height, width = shape
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * width, top + transform.e * height
    bbox = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    out = np.zeros(shape, dtype=dtype)
    pad = 2 * max(abs(transform.a), abs(transform.e))
    rect = shapely.box(bbox[0] - pad, bbox[1] - pad, bbox[2] + pad, bbox[3] + pad)
    st = os.stat(path)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)  # a rewritten file (os.replace: new inode) is read again
    small = _small_layer(str(path), layer, values, stamp)
    if small is not None:  # a few large polygons (counties): kept in memory, no query
        geoms, burn = small
        hit = shapely.intersects(geoms, rect)
        geoms, burn = geoms[hit], burn[hit]
    else:  # plain arrays, no GeoDataFrame: this runs for every chunk
        geoms, field = _query(str(path), layer, values, stamp, bbox)
        if len(geoms) == 0:
            return out
        burn = field if values else np.ones(len(geoms), dtype)
    # only the part inside the window (plus a pixel) matters: large polygons would
    # otherwise cost all their vertices in every window
    geoms = shapely.clip_by_rect(geoms, *rect.bounds)
    keep = ~shapely.is_empty(geoms)
    geoms, burn = geoms[keep], burn[keep]
    if len(geoms) and transform.b == 0 and transform.d == 0:
        # polygons over every pixel centre of the window (by a quarter pixel: far above any
        # rounding) hide the ones burnt before them; polygons off every centre burn nothing
        qx, qy = abs(transform.a) / 4, abs(transform.e) / 4
        centres = shapely.box(bbox[0] + qx, bbox[1] + qy, bbox[2] - qx, bbox[3] - qy)
        over = np.flatnonzero(shapely.contains_properly(geoms, centres))
        cut = shapely.intersects(geoms, centres)
        first = 0
        if over.size and (fill := _fill_value(burn[over[-1]], dtype)) is not None:
            out[...] = fill
            first = over[-1] + 1
        cut[:first] = False
        geoms, burn = geoms[cut], burn[cut]
    if len(geoms):
        features.rasterize(_geojson(geoms, burn), out=out, transform=transform, dtype=dtype)
    return out
