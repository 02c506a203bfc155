"""Change labels of plain image pairs: 0/255 (or 0/1) masks, one per pair (``imagery-watch train``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputFileError

__all__ = ["LABEL_SUFFIXES", "find_label", "read_label"]

#: suffixes accepted for label masks
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


def find_label(label_dir: str | os.PathLike, image_name: str) -> Path:
    """The label file of the image named ``image_name``: the same name, or the same stem
    with any of :data:`LABEL_SUFFIXES`.

    Raises
    ------
    InputFileError
        When there is none (the message names the files looked for and the fix).
    """
    label_dir = Path(label_dir)
    same = label_dir / image_name
    if same.is_file():
        return same
    stem = Path(image_name).stem
    for suffix in LABEL_SUFFIXES:
        for s in (suffix, suffix.upper()):
            cand = label_dir / (stem + s)
            if cand.is_file():
                return cand
    raise InputFileError(f"{label_dir / (stem + '.png')}: no label for {image_name}; every image needs a 0/255 "
                         f"mask of the same name (PNG, BMP or TIF) in {label_dir}, or leave the pair out with "
                         "--exclude")


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a change label as a (y, x) bool mask: True = change.

    Accepts single-band or colour masks (the first band is read) holding 0/255 or 0/1:
    with a maximum of 1 the ones are change, otherwise values above 127 are.

    Raises
    ------
    InputFileError
        Unreadable file.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import warnings

            import rasterio
            from rasterio.errors import NotGeoreferencedWarning, RasterioError

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    with rasterio.open(path) as ds:
                        band = ds.read(1)
            except RasterioError as exc:
                raise OSError(str(exc)) from None
        else:
            with Image.open(path) as im:
                band = np.asarray(im if im.mode in ("L", "1", "P", "I", "I;16") else im.convert("RGB"))
                if band.ndim == 3:
                    band = band[..., 0]
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputFileError(f"{path}: cannot read the label ({exc}); labels are 0/255 or 0/1 PNG, BMP or TIF "
                             "masks") from None
    band = np.asarray(band)
    if band.dtype == bool:
        return band.copy()
    return band == 1 if band.max(initial=0) == 1 else band > 127
