"""Reading orthophoto epochs: single GeoTIFF/COG/VRT files or folders of map sheets.

An epoch given as a folder of sheets becomes one virtual mosaic (a GDAL VRT written
next to the job's outputs), so every later step sees one raster. Tasks receive
:class:`EpochReader` objects, which hold only paths and numbers (they pickle), and open
the file themselves: the same code runs on threads or on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import GridMismatchError, InputFileError
from ..jobs import temporary_path
from .integrity import (READ_ENV, decode_warnings, find_failing_sources, find_unreadable_files, open_each,
                        tiff_truncation, unreadable_sheet, unreadable_sheet_error, vrt_sources)

log = logging.getLogger(__name__)

#: file name patterns taken as sheets when an epoch is a folder
SHEET_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt")


@dataclass(frozen=True)
class RasterInfo:
    """What the job needs to know about one epoch raster (no open handles).

    Attributes
    ----------
    path : str
        The file GDAL opens (the VRT when the epoch is a folder of sheets).
    source : str
        What the user named (file or folder).
    crs_wkt : str
        Coordinate reference system as WKT.
    transform : tuple of 6 floats
        Affine geotransform coefficients (a, b, c, d, e, f).
    width, height, count : int
        Size in pixels and number of bands.
    dtype : str
        Data type of the bands.
    block_px : tuple of int
        Internal tile (or strip) size (rows, cols) of the first band.
    sheets : tuple of str
        The sheet files behind a folder mosaic (empty for a single file).
    unreadable : tuple of :class:`~imagery_watch.io.integrity.UnreadableSheet`
        Sheets of the folder left out of the mosaic because they cannot be read (only with
        ``describe_epoch(..., skip_unreadable=True)``): their areas are not processed.
    """

    path: str
    source: str
    crs_wkt: str
    transform: tuple
    width: int
    height: int
    count: int
    dtype: str
    block_px: tuple
    sheets: tuple = field(default=())
    unreadable: tuple = field(default=())

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def pixel_size(self) -> tuple:
        """(x size, y size) in CRS units, both positive."""
        return abs(self.transform[0]), abs(self.transform[4])

    @property
    def bounds(self) -> tuple:
        """(left, bottom, right, top) in CRS units."""
        a = self.affine
        left, top = a.c, a.f
        right = left + a.a * self.width
        bottom = top + a.e * self.height
        return min(left, right), min(top, bottom), max(left, right), max(top, bottom)


def _open(path: str | os.PathLike, what: str):
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputFileError(
            f"{path}: cannot open {what} ({exc}); check that the file exists, is a GeoTIFF/VRT "
            "GDAL can read, and is not truncated"
        ) from None


def _check_rotation(path, transform: Affine) -> None:
    if transform.b != 0 or transform.d != 0:
        raise GridMismatchError(
            f"{path}: rotated or sheared geotransform is not supported; warp it to a north-up "
            "grid first (gdalwarp)"
        )


def _sheet_files(folder: Path) -> list:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SHEET_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise InputFileError(
            f"{folder}: folder holds no raster sheets (*.tif, *.tiff, *.jp2, *.img, *.vrt); "
            "point the epoch at a folder of GeoTIFF sheets, a VRT or a single GeoTIFF"
        )
    return files


def _scan_sheets(files: list) -> tuple:
    """Open every sheet: (facts of the readable ones, :class:`UnreadableSheet` of the others).

    Raises
    ------
    GridMismatchError
        A readable sheet without CRS or with a rotated grid.
    """
    metas, unreadable = [], []
    for f, ds, bad in open_each(files):  # masks in side-car files are found without listing the folder
        if bad:
            unreadable.append(bad)
            continue
        if ds.crs is None:
            raise GridMismatchError(
                f"{f}: sheet has no CRS; assign one (gdal_edit.py -a_srs EPSG:4549 {f.name})")
        _check_rotation(f, ds.transform)
        problem = tiff_truncation(ds, f)
        if problem:
            unreadable.append(unreadable_sheet(f, problem, ds))
            continue
        flags = ds.mask_flag_enums[0] if ds.count else ()
        # the CRS as WKT: a rasterio CRS takes about 7 ms to unpickle, a cluster's
        # batches send back one per sheet (see _scan_all_sheets)
        metas.append(dict(path=f, crs=ds.crs.to_wkt(), transform=ds.transform, width=ds.width,
                          height=ds.height, count=ds.count, dtypes=ds.dtypes, nodata=ds.nodata,
                          per_dataset=any(getattr(fl, "name", "") == "per_dataset" for fl in flags),
                          block=ds.block_shapes[0]))
    return metas, unreadable


def _in_batches(func, items: list, mapper) -> list:
    """``func`` on batches of ``items`` (each call gets a list): its results, in order.

    ``mapper(func, items)`` runs the batches (for example as tasks of a cluster: see
    ``pipeline.run_detect``); without one, ``func`` gets every item in one call.
    """
    return mapper(func, items) if mapper is not None and len(items) > 1 else [func(items)]


def _seen_from_here(unreadable: list, check) -> None:
    """Check again, in this process, the files that the batches of a ``mapper`` found
    unreadable (``check(paths)`` gives the unreadable among ``paths``): one that opens here
    was not seen by a worker of the cluster, which is a set-up fault, not a bad sheet to
    leave out of the mosaic.

    Raises
    ------
    InputFileError
        Naming the first such file and the fix.
    """
    if not unreadable:
        return
    still = {u.path for u in check([u.path for u in unreadable])}
    unseen = [u for u in unreadable if u.path not in still]
    if unseen:
        more = f" ({len(unseen) - 1} more like it)" if len(unseen) > 1 else ""
        raise InputFileError(
            f"{unseen[0].path}: opens in the job's process but not on a worker of the cluster "
            f"({unseen[0].reason}){more}; check that every worker sees the mosaic files at the same "
            "paths (the same share mounted at the same place on every machine) and can open them, "
            "then run the job again")


def _scan_all_sheets(files: list, mapper=None) -> tuple:
    """:func:`_scan_sheets` on ``files``, in batches through ``mapper`` (:func:`_in_batches`)."""
    metas, unreadable = [], []
    for m, u in _in_batches(_scan_sheets, files, mapper):
        metas += m
        unreadable += u
    if mapper is not None:
        _seen_from_here(unreadable, lambda paths: _scan_sheets([Path(p) for p in paths])[1])
    for m in metas:
        m["crs"] = CRS.from_wkt(m["crs"])  # cached: one parse per distinct WKT
    return metas, unreadable


def find_unreadable_sheets(folder: str | os.PathLike) -> list:
    """The sheets of a folder that cannot be read, each with the area it covers.

    Every sheet is opened and its tile index checked against its file size (see
    :func:`tiff_truncation`); no pixel is read.

    Returns
    -------
    list of :class:`~imagery_watch.io.integrity.UnreadableSheet`
        Empty when every sheet is readable.
    """
    return _scan_sheets(_sheet_files(Path(folder)))[1]


def build_mosaic_vrt(folder: str | os.PathLike, vrt_path: str | os.PathLike, *,
                     skip_unreadable: bool = False) -> tuple:
    """Write a VRT that mosaics every sheet in ``folder`` and return the sheet paths.

    All sheets must share CRS, pixel size, band count and data type and lie on one pixel
    grid; a sheet that differs is named in the error. Per-dataset masks (internal masks of
    JPEG sheets) are carried into the VRT's mask band.

    Parameters
    ----------
    skip_unreadable : bool
        Leave unreadable sheets (see :func:`find_unreadable_sheets`) out of the mosaic, so
        their areas read as nodata, instead of refusing the folder. Only for a caller that
        records those areas as not processed.

    Raises
    ------
    InputFileError
        If the folder is empty or a sheet cannot be read (the first is named with its area).
    GridMismatchError
        If sheets disagree on CRS, pixel size, bands or grid.
    """
    return _write_mosaic_vrt(folder, vrt_path, skip_unreadable=skip_unreadable)[0]


def _write_mosaic_vrt(folder, vrt_path, *, skip_unreadable: bool, mapper=None) -> tuple:
    """:func:`build_mosaic_vrt`, also returning the sheets left out: (paths, unreadable).
    ``mapper``: where the sheets are opened (:func:`_in_batches`)."""
    folder = Path(folder)
    metas, unreadable = _scan_all_sheets(_sheet_files(folder), mapper)
    unknown = [u for u in unreadable if u.bounds is None]
    if unreadable and (not skip_unreadable or unknown or not metas):
        raise unreadable_sheet_error(unknown + [u for u in unreadable if u.bounds is not None])
    for u in unreadable:
        log.warning("%s: sheet left out of the mosaic, its area %s is not processed: %s", u.path,
                    u.area_text(), u.reason)
    ref = metas[0]
    res = (ref["transform"].a, ref["transform"].e)
    for m in metas[1:]:
        if m["crs"] != ref["crs"]:
            raise GridMismatchError(
                f"{m['path']}: CRS {m['crs'].to_string()} differs from {ref['path'].name} "
                f"({ref['crs'].to_string()}); reproject the sheet so all share one CRS")
        if not np.allclose((m["transform"].a, m["transform"].e), res, rtol=1e-9, atol=0):
            raise GridMismatchError(
                f"{m['path']}: pixel size {m['transform'].a, m['transform'].e} differs from "
                f"{ref['path'].name} {res}; resample the sheet to the common pixel size")
        if m["count"] != ref["count"] or m["dtypes"] != ref["dtypes"]:
            raise GridMismatchError(
                f"{m['path']}: {m['count']} bands of {m['dtypes'][0]}, but {ref['path'].name} has "
                f"{ref['count']} bands of {ref['dtypes'][0]}; every sheet of an epoch needs the same bands")
    left = min(m["transform"].c for m in metas)
    top = max(m["transform"].f for m in metas)
    right = max(m["transform"].c + m["transform"].a * m["width"] for m in metas)
    bottom = min(m["transform"].f + m["transform"].e * m["height"] for m in metas)
    xres, yres = res
    width = int(round((right - left) / xres))
    height = int(round((bottom - top) / yres))
    offsets = []
    for m in metas:
        col = (m["transform"].c - left) / xres
        row = (m["transform"].f - top) / yres
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise GridMismatchError(
                f"{m['path']}: sheet origin is not on the pixel grid of {ref['path'].name} "
                f"(offset {col:.3f}, {row:.3f} px); resample it onto the common grid")
        offsets.append((int(round(row)), int(round(col))))

    vrt_path = Path(vrt_path)
    vrt_dir = vrt_path.parent.resolve()
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS").text = ref["crs"].to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (left, xres, 0.0, top, 0.0, yres))
    dtype_name = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32",
                  "int32": "Int32", "uint32": "UInt32", "float64": "Float64"}[ref["dtypes"][0]]
    use_mask = all(m["per_dataset"] for m in metas)

    def add_source(parent, m, off, band):
        src = ET.SubElement(parent, "SimpleSource")
        fn = ET.SubElement(src, "SourceFilename", relativeToVRT="0")
        fn.text = str(Path(m["path"]).resolve())
        ET.SubElement(src, "SourceBand").text = band
        ET.SubElement(src, "SourceProperties", RasterXSize=str(m["width"]), RasterYSize=str(m["height"]),
                      DataType=dtype_name if band != "mask,1" else "Byte",
                      BlockXSize=str(m["block"][1]), BlockYSize=str(m["block"][0]))
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(m["width"]), ySize=str(m["height"]))
        ET.SubElement(src, "DstRect", xOff=str(off[1]), yOff=str(off[0]), xSize=str(m["width"]),
                      ySize=str(m["height"]))

    for b in range(1, ref["count"] + 1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=dtype_name, band=str(b))
        if ref["nodata"] is not None and not use_mask:
            ET.SubElement(band, "NoDataValue").text = repr(float(ref["nodata"]))
        for m, off in zip(metas, offsets):
            add_source(band, m, off, str(b))
    if use_mask:
        mask = ET.SubElement(root, "MaskBand")
        mband = ET.SubElement(mask, "VRTRasterBand", dataType="Byte")
        for m, off in zip(metas, offsets):
            add_source(mband, m, off, "mask,1")
    vrt_dir.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(vrt_path)
    ET.ElementTree(root).write(tmp, encoding="utf-8")
    os.replace(tmp, vrt_path)
    log.info("mosaic of %d sheets from %s written to %s", len(metas), folder, vrt_path)
    return tuple(str(m["path"]) for m in metas), tuple(unreadable)


def describe_epoch(path: str | os.PathLike, *, work_dir: str | os.PathLike, label: str,
                   skip_unreadable: bool = False, mapper=None) -> RasterInfo:
    """Open an epoch (file, VRT or folder of sheets), check it and describe it.

    Every file is opened and a GeoTIFF's tile index is checked against its size, so a
    truncated file or sheet is refused here, before any pixel is read.

    Parameters
    ----------
    path : path
        A GeoTIFF/COG/VRT file or a folder of sheets.
    work_dir : path
        Folder where a folder's mosaic VRT is written (``{label}.vrt``).
    label : str
        ``"before"`` or ``"after"``; names the VRT and appears in messages.
    skip_unreadable : bool
        For a folder: leave unreadable sheets out of the mosaic and list them in
        ``RasterInfo.unreadable`` instead of refusing the folder. A caller that passes True
        must record their areas as not processed (they read as nodata, never as "no change").
    mapper : callable, optional
        ``mapper(func, paths)`` runs ``func`` on batches of the sheet paths (each call gets a
        list) and returns the results in order: how a cluster's workers open and check the
        sheets of a large mosaic together. Default: one call in this process.

    Raises
    ------
    InputFileError
        Missing, unreadable, truncated file or sheet (named with the area it covers), or a
        band type other than 8-bit.
    GridMismatchError
        No CRS or a rotated grid.
    """
    src = Path(path)
    if not src.exists():
        raise InputFileError(
            f"{src}: {label} epoch not found; set inputs.{label} in the config or pass --{label} "
            "with an existing GeoTIFF, VRT or folder of sheets")
    sheets: tuple = ()
    unreadable: tuple = ()
    open_path = src
    if src.is_dir():
        open_path = Path(work_dir) / f"{label}.vrt"
        sheets, unreadable = _write_mosaic_vrt(src, open_path, skip_unreadable=skip_unreadable, mapper=mapper)
    with _open(open_path, f"{label} epoch") as ds:
        problem = tiff_truncation(ds, open_path)
        if problem:
            raise unreadable_sheet_error([unreadable_sheet(src, problem, ds)], what=f"{label} epoch")
        if ds.driver == "VRT" and not src.is_dir():
            bad = [u for part in _in_batches(find_unreadable_files, vrt_sources(src), mapper) for u in part]
            if mapper is not None:
                _seen_from_here(bad, find_unreadable_files)
            if bad:
                raise unreadable_sheet_error(bad, what=f"a source of {src.name}")
        if ds.crs is None:
            raise GridMismatchError(
                f"{src}: {label} epoch has no CRS; assign one, e.g. gdal_edit.py -a_srs EPSG:4549 {src.name}")
        _check_rotation(src, ds.transform)
        if ds.count < 3:
            raise GridMismatchError(
                f"{src}: {label} epoch has {ds.count} band(s); expected at least 3 (R, G, B, optional NIR)")
        if ds.dtypes[0] != "uint8":
            raise InputFileError(
                f"{src}: {label} epoch is {ds.dtypes[0]}; expected 8-bit (uint8) bands. Convert it, e.g. "
                "gdal_translate -ot Byte -scale <min> <max> 1 255 in.tif out.tif (<min> <max>: the data's "
                "range, from gdalinfo -stats), for every file or sheet of the epoch")
        info = RasterInfo(
            path=str(open_path), source=str(src), crs_wkt=ds.crs.to_wkt(), transform=tuple(ds.transform)[:6],
            width=ds.width, height=ds.height, count=ds.count, dtype=ds.dtypes[0],
            block_px=tuple(ds.block_shapes[0]), sheets=sheets, unreadable=unreadable,
        )
    return info


@dataclass(frozen=True)
class Grid:
    """The processing grid shared by both epochs.

    Attributes
    ----------
    crs_wkt : str
    transform : tuple of 6 floats
    width, height : int
    """

    crs_wkt: str
    transform: tuple
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def pixel_area_m2(self) -> float:
        return abs(self.transform[0] * self.transform[4])

    @property
    def pixel_size_m(self) -> float:
        return abs(self.transform[0])

    @property
    def bounds(self) -> tuple:
        a = self.affine
        return a.c, a.f + a.e * self.height, a.c + a.a * self.width, a.f

    def window_transform(self, row0: int, col0: int) -> Affine:
        return self.affine @ Affine.translation(col0, row0)


_THREAD = threading.local()

#: a VRT mosaic of more sources than this (sheets x bands, mask band included: 256 is 64 RGB
#: sheets with masks) is opened, for a read, as a smaller VRT of the sheets around the
#: window (:func:`_open_for_thread`): GDAL holds about 15 KB per sheet of every open VRT,
#: and each worker thread keeps its mosaics open
PART_MIN_SOURCES = 256
#: the part opened for a window covers it grown by this many pixels on every side, so that
#: the next windows of a block of chunks (the strips below) are read from it too
PART_GROW_PX = 4096
#: parts kept open per mosaic and thread (the last ones used)
PARTS_KEPT = 2


class _MosaicIndex:
    """A plain VRT mosaic taken apart: its XML without sources, and each source's element
    and destination rectangle, so that a VRT of any subset of the sources can be written."""

    def __init__(self, path: str, root):
        folder = os.path.dirname(os.path.abspath(path))
        pieces, sources, rects = [], [], []
        parents = [p for p in root.iter() if any(c.tag.endswith("Source") for c in p)]
        for k, parent in enumerate(parents):
            for child in [c for c in parent if c.tag.endswith("Source")]:
                parent.remove(child)
                name = child.find("SourceFilename")
                if name is not None and name.get("relativeToVRT") == "1":  # the part is not a file
                    name.text = os.path.join(folder, name.text or "")
                    name.set("relativeToVRT", "0")
                dst = child.find("DstRect")
                rect = ((float(dst.get("yOff")), float(dst.get("xOff")),
                         float(dst.get("yOff")) + float(dst.get("ySize")),
                         float(dst.get("xOff")) + float(dst.get("xSize"))) if dst is not None
                        else (-np.inf, -np.inf, np.inf, np.inf))
                sources.append((k, ET.tostring(child, encoding="unicode")))
                rects.append(rect)
            ET.SubElement(parent, "IWSources", k=str(k))
        text = ET.tostring(root, encoding="unicode")
        for k in range(len(parents)):
            head, text = text.split(f'<IWSources k="{k}" />', 1)
            pieces.append(head)
        pieces.append(text)
        self.pieces = pieces  # the XML around the sources of parent k: pieces[k] | sources | pieces[k + 1]
        self.parent = np.array([k for k, _ in sources], np.int32)
        self.xml = [x for _, x in sources]
        self.rects = np.array(rects, np.float64).reshape(-1, 4)

    def part(self, rows: tuple, cols: tuple) -> str:
        """The mosaic's XML with only the sources that reach rows ``rows[0]..rows[1]`` and
        columns ``cols[0]..cols[1]`` (the same pixels there)."""
        r = self.rects
        hit = (r[:, 0] < rows[1]) & (r[:, 2] > rows[0]) & (r[:, 1] < cols[1]) & (r[:, 3] > cols[0])
        chosen = [[] for _ in range(len(self.pieces) - 1)]
        for i in np.flatnonzero(hit):
            chosen[self.parent[i]].append(self.xml[i])
        out = [self.pieces[0]]
        for k, xml in enumerate(chosen):
            out += xml
            out.append(self.pieces[k + 1])
        return "".join(out)


_INDEX_LOCK = threading.Lock()


def _mosaic_index(path: str, stamp: tuple) -> _MosaicIndex | None:
    """The index of a plain VRT mosaic of many sheets (``stamp``: the file's identity, so a
    changed file is read again); None for any other file (opened whole).

    Built once per process: the worker threads' first reads, which come together, wait for
    it instead of each parsing the mosaic (a city's VRT is tens of MB of XML).
    """
    with _INDEX_LOCK:
        return _build_mosaic_index(path, stamp)


@functools.lru_cache(maxsize=2)
def _build_mosaic_index(path: str, stamp: tuple) -> _MosaicIndex | None:
    if not path.lower().endswith(".vrt"):
        return None
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    if root.tag != "VRTDataset" or root.get("subClass") or root.find(".//VRTRasterBand[@subClass]") is not None:
        return None  # warped or derived VRTs: GDAL's own business
    if sum(1 for el in root.iter() if el.tag.endswith("Source")) <= PART_MIN_SOURCES:
        return None
    try:
        return _MosaicIndex(path, root)
    except (ValueError, TypeError) as exc:  # a layout the index does not know: read the mosaic whole
        log.debug("%s: read whole, not by parts (%s)", path, exc)
        return None


def _short(exc: Exception, limit: int = 300) -> str:
    """GDAL's message, without the XML of a mosaic part that GDAL names as the dataset."""
    text = str(exc)
    start, end = text.find("<VRTDataset"), text.rfind("</VRTDataset>")
    if start >= 0:
        text = text[:start] + "<mosaic part>" + (text[end + len("</VRTDataset>"):] if end > start else "")
    return text if len(text) <= limit else text[:limit] + "..."


def _file_stamp(path: str):
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:  # not a local file (a GDAL /vsi path)
        return None


def _open_for_thread(path: str, window: tuple | None = None):
    """The dataset at ``path``, opened once per thread and kept open while the file is unchanged.

    Opening a mosaic VRT parses every sheet it lists, which grows with the city (tens of
    milliseconds at a few gigapixels, about half a second at 25,000 sheets); chunks read
    the same mosaics over and over. Datasets are not shared between threads (GDAL handles
    are not thread-safe); a changed file (inode, size or modification time) is opened again.

    With ``window`` (row0, col0, height, width in the file's pixels), a VRT mosaic of many
    sheets is opened as a part: a VRT of only the sheets around the window
    (:data:`PART_GROW_PX`), which reads the same pixels there. The last
    :data:`PARTS_KEPT` parts are kept per mosaic and thread: memory no longer grows with
    the number of sheets of the city.
    """
    cache = getattr(_THREAD, "datasets", None)
    if cache is None:
        cache = _THREAD.datasets = {}
    stamp = _file_stamp(path)
    index = _mosaic_index(path, stamp) if (window is not None and stamp is not None) else None
    held = [h for h in cache.get(path, ()) if h[0] == stamp and not h[2].closed]
    for h in cache.get(path, ()):
        if h not in held:
            h[2].close()
    if index is None:
        whole = next((h for h in held if h[1] is None), None)
        if whole is None:
            whole = (stamp, None, rasterio.open(path))
            held.insert(0, whole)
        cache[path] = held
        return whole[2]
    r0, c0, hh, ww = window
    part = next((h for h in held if h[1] is not None and h[1][0] <= r0 and h[1][1] <= c0
                 and r0 + hh <= h[1][2] and c0 + ww <= h[1][3]), None)
    if part is None:
        g = PART_GROW_PX
        bounds = (r0 - g, c0 - g, r0 + hh + g, c0 + ww + g)
        part = (stamp, bounds, rasterio.open(index.part((bounds[0], bounds[2]), (bounds[1], bounds[3]))))
    else:
        held.remove(part)
    for h in held[PARTS_KEPT - 1:]:
        h[2].close()
    cache[path] = [part] + held[:PARTS_KEPT - 1]
    return part[2]


def _forget_for_thread(path: str) -> None:
    for held in getattr(_THREAD, "datasets", {}).pop(path, ()):
        held[2].close()


@dataclass(frozen=True)
class EpochReader:
    """Reads windows of one epoch on the processing grid (picklable: paths and numbers).

    Attributes
    ----------
    path : str
        Raster to open.
    band_indexes : tuple of int
        1-based band indexes in canonical order R, G, B[, NIR].
    grid : Grid
        The processing grid windows refer to.
    offset_rc : tuple of int or None
        When the file is on the processing grid up to an integer offset: (row, col) of the
        grid's origin in the file. ``None`` means the file is warped (see ``src_transform``).
    src_transform : tuple or None
        For warped reads: the file's geotransform, possibly corrected for a measured shift.
    """

    path: str
    band_indexes: tuple
    grid: Grid
    offset_rc: tuple | None = (0, 0)
    src_transform: tuple | None = None
    subpixel_rc: tuple = (0.0, 0.0)

    def read(self, row0: int, col0: int, height: int, width: int) -> tuple:
        """Read a window of the processing grid; outside the raster is invalid.

        Returns
        -------
        data : ndarray (band, height, width), uint8
        valid : ndarray (height, width), bool
            True where every band holds data.
        """
        nb = len(self.band_indexes)
        data = np.empty((nb, height, width), dtype=np.uint8)  # every reader fills or zeroes all of it
        valid = np.empty((height, width), dtype=bool)
        try:
            with rasterio.Env(**READ_ENV), decode_warnings() as warned:
                window = None
                if self.offset_rc is not None:  # the file's pixels the read touches (a shifted read: one more)
                    window = (row0 + self.offset_rc[0] + math.floor(self.subpixel_rc[0]),
                              col0 + self.offset_rc[1] + math.floor(self.subpixel_rc[1]), height + 1, width + 1)
                ds = _open_for_thread(self.path, window)
                if self.offset_rc is not None and self.subpixel_rc != (0.0, 0.0):
                    self._read_shifted(ds, row0, col0, data, valid)
                elif self.offset_rc is not None:
                    self._read_direct(ds, row0, col0, data, valid)
                else:
                    self._read_warped(ds, row0, col0, data, valid)
            if warned:
                raise RasterioIOError(f"damaged compressed data: {warned[0]}")
        except RasterioError as exc:
            _forget_for_thread(self.path)
            raise self._read_error(row0, col0, height, width, exc) from None
        return data, valid

    def _read_error(self, row0: int, col0: int, height: int, width: int, exc: Exception) -> InputFileError:
        """The error for a failed read: names the sheet that failed, the window and its area."""
        where = f" when reading rows {row0}..{row0 + height}, cols {col0}..{col0 + width} of the processing grid"
        a = self.grid.window_transform(row0, col0)
        (x0, y0), (x1, y1) = a @ (0, 0), a @ (width, height)
        failing = find_failing_sources(self.path, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                                       self.grid.crs)
        if failing:
            return unreadable_sheet_error(failing, context=where)
        return InputFileError(
            f"{self.path}: read failed ({_short(exc)}){where}; the file or one of its sheets is corrupt or truncated: "
            "replace it with an intact copy and run the job again")

    def _read_direct(self, ds, row0, col0, data, valid):
        height, width = valid.shape
        r0 = row0 + self.offset_rc[0]
        c0 = col0 + self.offset_rc[1]
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + height, ds.height), min(c0 + width, ds.width)
        if (rr0, cc0, rr1, cc1) != (r0, c0, r0 + height, c0 + width):  # partly outside the raster
            data[...] = 0
            valid[...] = False
        if rr1 <= rr0 or cc1 <= cc0:
            return
        win = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        dst = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        ds.read(list(self.band_indexes), window=win, out=data[(slice(None),) + dst])  # no copy of the pixels
        np.greater(ds.dataset_mask(window=win), 0, out=valid[dst])

    def _read_shifted(self, ds, row0, col0, data, valid):
        """Bilinear sub-pixel translation with constant weights: the same value for a
        pixel whatever the window (unlike the GDAL warper's approximate transformer)."""
        height, width = valid.shape
        dy, dx = self.subpixel_rc
        fy, fx = math.floor(dy), math.floor(dx)
        wy, wx = dy - fy, dx - fx
        big = np.zeros((data.shape[0], height + 1, width + 1), np.uint8)
        bv = np.zeros((height + 1, width + 1), bool)
        EpochReader._read_direct(self, ds, row0 + fy, col0 + fx, big, bv)
        b = big.astype(np.float32)
        w = [((1 - wy) * (1 - wx), 0, 0), ((1 - wy) * wx, 0, 1), (wy * (1 - wx), 1, 0), (wy * wx, 1, 1)]
        acc = np.zeros(data.shape, np.float32)
        ok = np.ones(valid.shape, bool)
        for wt, i, j in w:
            if wt > 0:
                acc += np.float32(wt) * b[:, i:i + height, j:j + width]
                ok &= bv[i:i + height, j:j + width]
        data[...] = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
        valid[...] = ok

    def _read_warped(self, ds, row0, col0, data, valid):
        height, width = valid.shape
        dst_transform = self.grid.affine @ Affine.translation(col0, row0)
        src_transform = Affine(*self.src_transform) if self.src_transform else ds.transform
        with WarpedVRT(ds, src_transform=src_transform, crs=self.grid.crs, transform=dst_transform,
                       width=width, height=height, resampling=Resampling.bilinear, add_alpha=True) as vrt:
            out = vrt.read(list(self.band_indexes) + [vrt.count])
        data[...] = out[:-1]
        valid[...] = out[-1] > 0
