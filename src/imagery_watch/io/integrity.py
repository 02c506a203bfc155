"""Is a raster file readable? Checks that find corrupt or truncated sheets and name them.

A sheet cut short by an interrupted copy is the common corrupt delivery; GDAL opens it and
fails only when the missing tiles are read, and GDAL 3.10 can even lose that failure (see
:data:`READ_ENV`). :func:`tiff_truncation` finds it from the tile index alone, before the
job starts; :func:`find_failing_sources` names the sheet behind a read that failed. An
:class:`UnreadableSheet` carries the area the sheet covers, so that a job can say which
area was not processed.
"""

from __future__ import annotations

import logging
import os
import threading
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import UnreadableSheetError

#: GDAL settings for every pixel read (``rasterio.Env(**READ_ENV)``; thread-local). GDAL 3.10
#: reads a VRT window of more than a million pixels over several sources with several
#: threads, and loses the error of a failing source: the window comes back as zeros flagged
#: valid (seen with rasterio 1.4.4 / GDAL 3.10.3; GDAL pull request 11915 propagates those
#: errors in later releases). Parallelism here is Dask's, so one GDAL thread per read costs
#: nothing and keeps read errors errors.
READ_ENV = {"VRT_NUM_THREADS": 1}
#: GDAL settings for opening sheets: no listing of the sheet's folder at each open (half
#: the time of an open in a folder of thousands of sheets). GDAL then looks for each
#: possible side-car file by name (``.msk``, ``.aux.xml``, ``.ovr``, ...): on local disk
#: as fast as not looking (0.85 against 0.82-1.0 ms an open, 800 sheets), on a network
#: share a few round trips more. Not ``EMPTY_DIR``: that skips side-car files, and a
#: sheet's ``.msk`` mask would read as all valid.
OPEN_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "TRUE"}

#: words of GDAL's decoder messages that mean pixels were not decoded as stored: libjpeg
#: reports damaged JPEG data as warnings and goes on with grey or garbled blocks
_DECODE_FAILURE_WORDS = ("JPEGLib", "TIFFRead", "IReadBlock", "ZIPDecode", "LZWDecode", "Deflate",
                         "LERC", "ZSTD", "WEBP")
_DECODE = threading.local()


class _DecodeWarningCollector(logging.Handler):
    """Collects the decoder warnings GDAL reports (through rasterio's logger) per thread."""

    def emit(self, record: logging.LogRecord) -> None:
        bucket = getattr(_DECODE, "messages", None)
        if bucket is None:
            return
        msg = record.getMessage()
        if any(word in msg for word in _DECODE_FAILURE_WORDS):
            bucket.append(msg)


_GDAL_LOG = logging.getLogger("rasterio._err")
_GDAL_LOG.addHandler(_DecodeWarningCollector(level=logging.WARNING))
if _GDAL_LOG.level == logging.NOTSET or _GDAL_LOG.level > logging.WARNING:
    _GDAL_LOG.setLevel(logging.WARNING)  # decoder warnings must reach the collector


@contextmanager
def decode_warnings():
    """Collect, in a list, GDAL's decoder warnings raised by reads in this block (this thread).

    A damaged JPEG tile is decoded by libjpeg with warnings ("Corrupt JPEG data") and no
    error: its pixels come back grey or garbled and would pass for imagery. Callers treat
    any collected message as a failed read.
    """
    previous = getattr(_DECODE, "messages", None)
    _DECODE.messages = messages = []
    try:
        yield messages
    finally:
        _DECODE.messages = previous


def _fmt_bounds(b) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in b) + ")"


@dataclass(frozen=True)
class UnreadableSheet:
    """A raster file (a sheet of a mosaic) whose pixels cannot be read, and where it lies.

    Attributes
    ----------
    path : str
    reason : str
        What is wrong: GDAL's message, or which tile lies beyond the end of the file.
    bounds : tuple of 4 floats or None
        (left, bottom, right, top) of the sheet in its CRS; None when even its header
        cannot be read (then the area it should cover is unknown).
    crs_wkt : str or None
    """

    path: str
    reason: str
    bounds: tuple | None = None
    crs_wkt: str | None = None

    def area_text(self) -> str:
        """``(left, bottom, right, top) in EPSG:4549``, or says that the area is unknown."""
        if self.bounds is None:
            return "an unknown area (its header cannot be read)"
        crs = CRS.from_wkt(self.crs_wkt).to_string() if self.crs_wkt else "an unknown CRS"
        return f"{_fmt_bounds(self.bounds)} in {crs}"


def tiff_truncation(ds, path: str | os.PathLike) -> str | None:
    """Say which tile of a GeoTIFF lies beyond the end of its file, if any.

    Reads only the tile index (no pixels), so it is cheap enough to run on every sheet of a
    city before the job starts: a sheet cut short by an interrupted copy is the common kind
    of corrupt delivery. The internal mask's tiles are not in GDAL's index; a cut mask is
    caught when it is read.

    Parameters
    ----------
    ds : rasterio dataset
        The open file (other drivers than GTiff are not checked).
    path : path
        Its path on disk.

    Returns
    -------
    str or None
        What is wrong, or None when every tile lies inside the file.
    """
    if ds.driver != "GTiff" or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    bh, bw = ds.block_shapes[0]
    ny, nx = -(-ds.height // bh), -(-ds.width // bw)
    interleave = (ds.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") or "PIXEL").upper()
    for band in (range(1, ds.count + 1) if interleave == "BAND" else (1,)):
        for y in range(ny):
            for x in range(nx):
                offset = ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
                if offset is None:  # a sparse tile: never written, reads as nodata
                    continue
                end = int(offset) + int(ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band) or 0)
                if end > size:
                    return (f"truncated: tile {x},{y} of band {band} ends at byte {end:,} but the file "
                            f"has {size:,} bytes")
    return None


def unreadable_sheet(path, reason: str, ds=None) -> UnreadableSheet:
    """An :class:`UnreadableSheet` for ``path``, with the area of ``ds`` when it could be opened."""
    if ds is None:
        return UnreadableSheet(path=str(path), reason=reason)
    return UnreadableSheet(path=str(path), reason=reason, bounds=tuple(ds.bounds),
                           crs_wkt=ds.crs.to_wkt() if ds.crs else None)


def unreadable_sheet_error(sheets, *, what: str = "sheet", context: str = "") -> UnreadableSheetError:
    """The error for unreadable sheets: the first named with its area and the fix, the rest counted.

    ``context`` (e.g. " when reading rows 0..1024 ...") follows the reason.
    """
    first = sheets[0]
    more = ""
    if len(sheets) > 1:
        names = ", ".join(Path(u.path).name for u in sheets[1:6])
        more = f" ({len(sheets) - 1} more unreadable: {names}{', ...' if len(sheets) > 6 else ''})"
    return UnreadableSheetError(
        f"{first.path}: {what} cannot be read ({first.reason}){context}; it covers {first.area_text()}, which "
        f"would not be processed. Replace it with an intact copy (copy it again from the delivery or "
        f"re-export it) and run the job again{more}", sheets)


def open_or_report(path):
    """``(dataset, None)`` when ``path`` opens, else ``(None, UnreadableSheet)``."""
    try:
        return rasterio.open(path), None
    except RasterioIOError as exc:
        return None, unreadable_sheet(path, f"cannot open: {exc}")


def open_each(paths):
    """Open each of ``paths`` the way the job opens sheets (:data:`OPEN_ENV`).

    Yields ``(path, dataset, None)``, the dataset open until the next item is asked for,
    or ``(path, None, UnreadableSheet)`` for a file that does not open.
    """
    with rasterio.Env(**OPEN_ENV):
        for path in paths:
            ds, bad = open_or_report(path)
            if bad:
                yield path, None, bad
                continue
            with ds:
                yield path, ds, None


def vrt_sources(vrt_path: str | os.PathLike) -> list:
    """The files a VRT reads from, in order, without repeats."""
    vrt_path = Path(vrt_path)
    out = {}  # insertion-ordered set: a mosaic lists each sheet once per band and mask
    for el in ET.parse(vrt_path).getroot().iter("SourceFilename"):
        name = Path(el.text or "")
        if el.get("relativeToVRT") == "1":
            name = vrt_path.parent / name
        out.setdefault(str(name), None)
    return list(out)


def find_unreadable_files(paths) -> list:
    """The files among ``paths`` that cannot be opened or are truncated (no pixel is read).

    Returns
    -------
    list of UnreadableSheet
    """
    out = []
    for path, ds, bad in open_each(paths):  # opened as the pixel reads of the job open them
        problem = None if bad else tiff_truncation(ds, path)
        if bad or problem:
            out.append(bad or unreadable_sheet(path, problem, ds))
    return out


def find_failing_sources(path: str | os.PathLike, bounds: tuple, crs: CRS) -> list:
    """The files behind ``path`` whose pixels inside ``bounds`` cannot be read.

    For a VRT mosaic, every sheet that ``bounds`` touches is checked (tile index, then a
    read of the part inside ``bounds`` with its mask); for another file, the file itself.
    Used after a failed read, to name the sheet that failed.

    Parameters
    ----------
    path : path
        The raster that failed to read (a file or a VRT of sheets).
    bounds : tuple
        (left, bottom, right, top) of the failed window, in ``crs``.
    crs : CRS

    Returns
    -------
    list of UnreadableSheet
    """
    try:
        sources = vrt_sources(path) if str(path).lower().endswith(".vrt") else [str(path)]
    except (OSError, ET.ParseError):
        sources = [str(path)]
    failing = []
    with rasterio.Env(**READ_ENV):
        for src, ds, bad in open_each(sources):
            if bad:
                failing.append(bad)
                continue
            b = bounds
            if ds.crs is not None and ds.crs != crs:
                b = transform_bounds(crs, ds.crs, *bounds, densify_pts=21)
            inv = ~ds.transform
            cols, rows = zip(*(inv @ (x, y) for x in (b[0], b[2]) for y in (b[1], b[3])))
            c0, r0 = max(int(np.floor(min(cols))), 0), max(int(np.floor(min(rows))), 0)
            c1, r1 = min(int(np.ceil(max(cols))), ds.width), min(int(np.ceil(max(rows))), ds.height)
            if c1 <= c0 or r1 <= r0:
                continue
            problem = tiff_truncation(ds, src)
            if problem:
                failing.append(unreadable_sheet(src, problem, ds))
                continue
            win = Window(c0, r0, c1 - c0, r1 - r0)
            try:
                with decode_warnings() as warned:
                    ds.read(window=win)
                    ds.dataset_mask(window=win)
                if warned:
                    failing.append(unreadable_sheet(src, f"damaged compressed data: {warned[0]}", ds))
            except RasterioError as exc:
                failing.append(unreadable_sheet(src, f"pixel read failed: {exc}", ds))
    return failing
