"""Plain (non-georeferenced) images: the before/after pairs of ``detect-pairs``.

Bands: TIFFs are read with rasterio (GDAL), so a 4-band TIFF keeps its fourth band as
near-infrared (R, G, B, NIR). The fourth band is taken as alpha only when the file flags
it so *and* it holds nothing but 0 and 255: GDAL flags the fourth band of every 4-band
8-bit TIFF it writes as alpha unless told otherwise, so the flag alone would drop real NIR.
Other formats are read with Pillow; their fourth channel (RGBA PNG) is always transparency,
never NIR. Alpha is dropped from the bands and, with ``with_valid=True``, gives the valid
mask (alpha == 0 is invalid). Greyscale and 16-bit images are refused with the fix.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputFileError, OutputError

#: suffixes taken as images in a pair folder
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")

_TO_8_BIT = ("convert it to 8 bits per band, e.g. gdal_translate -ot Byte -scale <min> <max> 1 255 in.tif out.tif "
             "(<min> <max>: the data's range, from gdalinfo -stats)")


def list_images(folder: str | os.PathLike) -> list:
    """Image files of a folder, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike, *, with_valid: bool = False):
    """Read a colour image as (band, y, x) uint8: R, G, B and, from a 4-band TIFF, NIR.

    Parameters
    ----------
    path : path
        PNG, BMP, TIFF or JPEG.
    with_valid : bool
        Also return the valid mask.

    Returns
    -------
    data : ndarray (band, y, x), uint8
        3 bands (R, G, B) or 4 (R, G, B, NIR). An alpha channel is never returned as a band.
    valid : ndarray (y, x), bool
        Only with ``with_valid``: False where the alpha channel is 0, True elsewhere.

    Raises
    ------
    InputFileError
        Unreadable file, greyscale image, a band count other than 3 or 4 (plus alpha), or
        bands that are not 8-bit (the message gives the conversion).
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        data, alpha = _read_tiff(path)
    else:
        data, alpha = _read_pillow(path)
    valid = np.ones(data.shape[1:], dtype=bool) if alpha is None else alpha > 0
    data = np.ascontiguousarray(data)
    return (data, valid) if with_valid else data


def _read_tiff(path: Path) -> tuple:
    """(bands, alpha or None) of a TIFF, through GDAL: every band kept, alpha by its colour interpretation."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                dtype, interp = ds.dtypes[0], ds.colorinterp
                if dtype != "uint8":
                    raise InputFileError(f"{path}: {dtype} image; expected 8-bit bands: {_TO_8_BIT}")
                arr = ds.read()
    except RasterioError as exc:
        raise InputFileError(f"{path}: cannot read image ({exc}); check the file is a complete TIFF") from None
    alpha = None
    if arr.shape[0] in (2, 4, 5) and interp[-1] == ColorInterp.alpha and _is_binary(arr[-1]):
        arr, alpha = arr[:-1], arr[-1]
    return _check_bands(path, arr), alpha


def _is_binary(band: np.ndarray) -> bool:
    """True when a band holds only 0 and 255 (a transparency mask, not a measured band)."""
    return not np.any((band != 0) & (band != 255))


def _read_pillow(path: Path) -> tuple:
    """(bands, alpha or None) of a PNG/BMP/JPEG, through Pillow."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise InputFileError(f"{path}: {mode} image (more than 8 bits); expected 8-bit colour: {_TO_8_BIT}")
            if mode in ("1", "L", "LA", "La"):
                raise InputFileError(f"{path}: greyscale image ({mode}); expected a colour (RGB) image")
            if mode not in ("RGB", "RGBA"):  # palette, CMYK, YCbCr...: colour as RGB (keeps transparency)
                im = im.convert("RGBA" if mode in ("P", "PA", "RGBa") else "RGB")
            arr = np.moveaxis(np.asarray(im), -1, 0)
    except InputFileError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputFileError(f"{path}: cannot read image ({exc}); check the file is a PNG/BMP/TIFF/JPEG") from None
    alpha = None
    if arr.shape[0] == 4:  # Pillow's fourth channel is alpha (RGBA), never NIR
        arr, alpha = arr[:3], arr[3]
    return _check_bands(path, arr), alpha


def _check_bands(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.shape[0] in (1, 2):
        raise InputFileError(f"{path}: greyscale image ({arr.shape[0]} band(s)); expected a colour (RGB) image")
    if arr.shape[0] not in (3, 4):
        raise InputFileError(f"{path}: {arr.shape[0]} bands; expected 3 (R, G, B) or 4 (R, G, B, NIR). Keep those, "
                             "e.g. gdal_translate -b 1 -b 2 -b 3 -b 4 in.tif out.tif")
    return arr


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a boolean (y, x) mask as a 0/255 greyscale PNG, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write mask ({exc}); check the output folder") from None
