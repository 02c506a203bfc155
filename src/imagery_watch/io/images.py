"""Plain (non-georeferenced) images: the before/after pairs of ``detect-pairs``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputFileError, OutputError

#: suffixes taken as images in a pair folder
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")


def list_images(folder: str | os.PathLike) -> list:
    """Image files of a folder, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB(A/NIR) image as (band, y, x) uint8.

    Greyscale images are refused; 16-bit images are refused with the fix.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I", "F"):
                raise InputFileError(f"{path}: {im.mode} image; expected 8-bit RGB. Convert it to 8 bits per band")
            if im.mode not in ("RGB", "RGBA", "CMYK"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        if isinstance(exc, InputFileError):
            raise
        raise InputFileError(f"{path}: cannot read image ({exc}); check the file is a PNG/BMP/TIFF/JPEG") from None
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise InputFileError(f"{path}: expected a colour image with 3 or 4 bands, found shape {arr.shape}")
    if arr.shape[2] == 4 and Image.open(path).mode == "RGBA":
        arr = arr[:, :, :3]
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0))


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a boolean (y, x) mask as a 0/255 greyscale PNG, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write mask ({exc}); check the output folder") from None
