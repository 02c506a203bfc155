"""Writing generated data: GeoTIFF map sheets, GeoPackage layers, JSON and PNG files.

Every writer writes to a temporary name in the target folder and then renames it over the
target (``os.replace``), so a reader never sees a half-written file. Outputs are
byte-for-byte reproducible: the same input arrays give the same file bytes (GeoPackage
timestamps are pinned).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError

from ..errors import InputFileError, OutputError
from ..jobs import temporary_path as _tmp

log = logging.getLogger(__name__)

#: compressions :func:`write_sheet` knows
COMPRESSIONS = ("jpeg", "deflate")

#: fixed timestamp written into GeoPackages so that files are reproducible
GPKG_DATE = "2000-01-01T00:00:00.000Z"


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check it is a writable folder.

    Raises
    ------
    OutputError
        If the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create output folder ({exc.strerror or exc}); "
                          "choose a folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output folder is not writable; choose a folder you can write to")
    return path


def write_sheet(path: str | os.PathLike, image: np.ndarray, *, transform, crs, compress: str = "jpeg",
                valid: np.ndarray | None = None, tile_px: int = 512, jpeg_quality: int = 88) -> None:
    """Write one tiled GeoTIFF map sheet.

    Parameters
    ----------
    path : path
        Target file (``.tif``).
    image : ndarray (band, y, x), uint8
        Pixels; with ``compress="deflate"`` valid pixels must be >= 1 (0 is nodata).
    transform : Affine
        Geotransform of the sheet.
    crs : str or CRS
        Coordinate reference system (e.g. ``"EPSG:4549"``).
    compress : {"jpeg", "deflate"}
        ``jpeg``: JPEG, YCbCr for 3 bands (plain JPEG otherwise), with an internal
        per-dataset mask holding ``valid``. ``deflate``: lossless with nodata = 0.
    valid : ndarray (y, x) of bool, optional
        True where pixels are usable; default all True.
    tile_px : int
        Internal tile size (multiple of 16).
    jpeg_quality : int
        JPEG quality, 1-100.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    path = Path(path)
    if compress not in COMPRESSIONS:
        raise ValueError(f"compress must be one of {COMPRESSIONS}, found {compress!r}")
    bands, height, width = image.shape
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype="uint8", crs=crs,
                   transform=transform, tiled=True, blockxsize=tile_px, blockysize=tile_px,
                   interleave="pixel")
    if bands == 4:  # RGB + NIR: the 4th band is not alpha
        profile.update(photometric="RGB", alpha="UNSPECIFIED")
    if compress == "jpeg":
        profile.update(compress="JPEG", jpeg_quality=int(jpeg_quality))
        if bands == 3:
            profile["photometric"] = "YCBCR"
    else:
        profile.update(compress="DEFLATE", predictor=2, nodata=0)
    tmp = _tmp(path)
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(image)
                if bands == 4:  # RGB + NIR: the 4th band is not alpha
                    dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)
                if compress == "jpeg":
                    mask = np.full((height, width), 255, np.uint8) if valid is None else np.where(valid, 255, 0)
                    dst.write_mask(mask.astype(np.uint8))
        os.replace(tmp, path)
    except (RasterioError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write sheet: {exc}") from None


def write_layers(path: str | os.PathLike, layers: dict, *, geometry_type: str = "MultiPolygon") -> None:
    """Write GeoDataFrames as the layers of one GeoPackage (replacing the file).

    Parameters
    ----------
    path : path
        Target ``.gpkg``.
    layers : dict of str to GeoDataFrame
        Layer name -> frame (empty frames are written as empty layers with their columns).
    geometry_type : str
        Declared geometry type of every layer.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    import pyogrio

    path = Path(path)
    tmp = _tmp(path)
    tmp.unlink(missing_ok=True)
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_DATE})
    try:
        for name, frame in layers.items():
            pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG", geometry_type=geometry_type,
                                    promote_to_multi=True)
        os.replace(tmp, path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write GeoPackage: {exc}") from None
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON with sorted keys (reproducible bytes)."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write JSON: {exc}") from None


def write_png(path: str | os.PathLike, rgb: np.ndarray, *, palette: bool = False) -> None:
    """Write an RGB image (y, x, 3) uint8 as an optimised PNG (``palette``: 256 colours, smaller)."""
    from PIL import Image

    path = Path(path)
    tmp = _tmp(path)
    try:
        img = Image.fromarray(np.ascontiguousarray(rgb))
        if palette:
            img = img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
        img.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write PNG: {exc}") from None


def read_sheet_overview(path: str | os.PathLike, *, out_height: int, out_width: int) -> tuple:
    """Read a decimated RGB copy of a sheet and its valid mask (for previews of written data).

    Returns
    -------
    rgb : ndarray (3, out_height, out_width), uint8
    valid : ndarray (out_height, out_width), bool
    bounds : rasterio BoundingBox of the sheet
    """
    try:
        with rasterio.open(path) as ds:
            rgb = ds.read([1, 2, 3], out_shape=(3, out_height, out_width), resampling=Resampling.average)
            valid = ds.read_masks(1, out_shape=(out_height, out_width), resampling=Resampling.nearest) > 0
            return rgb, valid, ds.bounds
    except RasterioError as exc:
        raise InputFileError(f"{path}: cannot read sheet: {exc}") from None


def read_layer_frame(path: str | os.PathLike, layer: str):
    """Read back one layer of a GeoPackage written by :func:`write_layers` (GeoDataFrame)."""
    import pyogrio

    try:
        return pyogrio.read_dataframe(path, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputFileError(f"{path}: cannot read layer {layer!r}: {exc}") from None
