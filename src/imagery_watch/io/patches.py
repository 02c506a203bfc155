"""Patch files: the GeoPackage of change patches, and the per-chunk pieces of a job.

* :func:`write_patches` / :func:`read_patches`: the patch table (DESIGN.md §3) as a
  GeoPackage layer, written atomically, with a default QGIS style (categorised by
  ``rule``) in the ``layer_styles`` table, so QGIS opens it styled.
* :func:`save_pieces` / :func:`load_pieces`: one compressed ``.npz`` per chunk holding
  :class:`~imagery_watch.vectorise.BlockPieces` as plain arrays (no pickle), packed into
  one payload.
* :func:`snapshot_geopackage`: a consistent copy of a GeoPackage that may be open in WAL
  mode (the review store), written atomically; used to keep reviewed patch files.
"""

from __future__ import annotations

import colorsys
import contextlib
import json
import logging
import os
import sqlite3
import zipfile
from pathlib import Path
from typing import Sequence
from xml.etree import ElementTree as ET

import numpy as np

from ..errors import InputFileError, OutputError
from ..jobs import temporary_path as _tmp

log = logging.getLogger(__name__)

#: fixed timestamp written into GeoPackages so that files are reproducible
GPKG_DATE = "2000-01-01T00:00:00.000Z"

#: fill colours of the first rules (ColorBrewer Set1, then Dark2); more are generated
_PALETTE = (
    (228, 26, 28), (255, 127, 0), (77, 175, 74), (152, 78, 163), (166, 86, 40),
    (55, 126, 184), (247, 129, 191), (27, 158, 119), (117, 112, 179), (230, 171, 2),
)

_STYLE_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT CURRENT_TIMESTAMP
)
"""


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(fd)


def _settle_wal(path: Path) -> None:
    """Fold a ``-wal`` file left beside ``path`` into it before ``path`` is replaced.

    SQLite applies a ``-wal`` file found beside a database to whatever file has the
    database's name, so a WAL left by a review server that was killed would corrupt the
    new file. Checkpointing (and truncating) it first keeps its decisions in the old file
    (already read by then) and leaves nothing for the new one.
    """
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or not path.exists():
        return
    con = sqlite3.connect(path, timeout=10.0)
    try:
        busy = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        con.close()
    if busy or (wal.exists() and wal.stat().st_size):
        raise OutputError(f"{path}: the file is being written by another program (a review server?); stop it "
                          "and run again, so that no review decision is lost")


def _check_writable_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist; create it or choose another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {folder} is not writable; choose a folder you can write to")


# --------------------------------------------------------------------------------------
# per-chunk pieces


#: byte alignment of each array in a pieces file's payload (each starts on a whole element)
_PIECES_ALIGN = 8


def _pack(arrays: dict) -> dict:
    """``arrays`` as two npz entries: ``layout`` (JSON: name, dtype, shape, byte offset of
    each array) and ``payload`` (their bytes, one after the other)."""
    layout, parts, offset = [], [], 0
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise ValueError(f"pieces array {name!r} holds Python objects")
        layout.append([name, value.dtype.str, list(value.shape), offset])
        raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)  # (0-d arrays keep their shape above)
        pad = -raw.size % _PIECES_ALIGN
        parts += [raw, np.zeros(pad, np.uint8)]
        offset += raw.size + pad
    payload = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return {"layout": np.array(json.dumps(layout)), "payload": payload}


def _unpack(layout: str, payload: np.ndarray) -> dict:
    """The arrays :func:`_pack` packed, each a copy that owns its memory: the merge keeps a
    few numbers per piece of every chunk of a city, and a view would keep the chunk's
    whole payload (dense seam edges and polygons, about 30 times as much) alive."""
    out = {}
    for name, dtype, shape, offset in json.loads(layout):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape).copy()
    return out


def save_pieces(pieces, path: str | os.PathLike) -> None:
    """Write the pieces of one chunk to ``path`` (compressed npz, atomically).

    The arrays of :meth:`~imagery_watch.vectorise.BlockPieces.to_arrays` are stored as one
    byte payload and a JSON layout, two npz entries instead of one per array: the merge
    reads every chunk's file in the job's process, and numpy's cost per npz entry
    (about 0.1 ms) would otherwise be most of it.

    Parameters
    ----------
    pieces : imagery_watch.vectorise.BlockPieces
    path : path
        Target file; written exactly there (no suffix is added).

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    path = Path(path)
    packed = _pack(pieces.to_arrays())
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **packed)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write chunk pieces ({exc.strerror or exc}); "
                          "check free space and permissions of the job folder") from None


def remove_partial_pieces(folder: str | os.PathLike) -> int:
    """Delete the temporary pieces files a killed job left in ``folder``; return how many.

    :func:`save_pieces` writes beside the target and renames, so a leftover temporary
    file is never a finished chunk. Call only while no job writes into ``folder``.
    """
    n = 0
    for stale in Path(folder).glob(".*.tmp*.npz"):
        stale.unlink(missing_ok=True)
        n += 1
    return n


def load_pieces(path: str | os.PathLike):
    """Read the pieces of one chunk written by :func:`save_pieces`.

    Returns
    -------
    imagery_watch.vectorise.BlockPieces

    Raises
    ------
    InputFileError
        If the file is missing or is not a pieces file.
    """
    from ..vectorise import BlockPieces

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "payload" in data.files:
                arrays = _unpack(str(data["layout"]), data["payload"])
            else:  # one entry per array, as written before the packed layout
                arrays = {k: data[k] for k in data.files}
        return BlockPieces.from_arrays(arrays)
    except FileNotFoundError:
        raise InputFileError(f"{path}: chunk pieces not found; re-run the job to recompute the chunk") from None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise InputFileError(f"{path}: not a valid chunk pieces file ({exc}); delete it and re-run the job "
                             "to recompute the chunk") from None


# --------------------------------------------------------------------------------------
# patch GeoPackage


def rule_colours(rule_names: Sequence[str]) -> dict:
    """A distinct RGB colour per rule name, stable for a given rule order."""
    out = {}
    for i, name in enumerate(rule_names):
        if i < len(_PALETTE):
            out[name] = _PALETTE[i]
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.9)
            out[name] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def _fill_layer(parent: ET.Element, rgb: tuple) -> None:
    """A QGIS SimpleFill symbol layer: translucent fill, opaque outline of the same colour."""
    layer = ET.SubElement(parent, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
    props = {
        "color": "{},{},{},90".format(*rgb),
        "outline_color": "{},{},{},255".format(*rgb),
        "outline_style": "solid",
        "outline_width": "0.6",
        "outline_width_unit": "MM",
        "style": "solid",
        "joinstyle": "miter",
        "offset": "0,0",
        "offset_unit": "MM",
    }
    option = ET.SubElement(layer, "Option", {"type": "Map"})
    for k, v in props.items():
        ET.SubElement(option, "Option", {"type": "QString", "name": k, "value": v})
    for k, v in props.items():  # QGIS < 3.26 reads these
        ET.SubElement(layer, "prop", {"k": k, "v": v})


def _symbol(parent: ET.Element, tag: str, name: str, rgb: tuple) -> None:
    sym = ET.SubElement(parent, tag, {"type": "fill", "name": name, "alpha": "1",
                                      "clip_to_extent": "1", "force_rhr": "0"})
    _fill_layer(sym, rgb)


def style_qml(rule_names: Sequence[str], *, field: str = "rule") -> str:
    """QGIS style (QML) of a categorised renderer by ``field``, one colour per rule."""
    colours = rule_colours(rule_names)
    root = ET.Element("qgis", {"version": "3.28.0", "styleCategories": "Symbology"})
    renderer = ET.SubElement(root, "renderer-v2", {"type": "categorizedSymbol", "attr": field,
                                                   "forceraster": "0", "symbollevels": "0",
                                                   "enableorderby": "0", "referencescale": "-1"})
    cats = ET.SubElement(renderer, "categories")
    for i, name in enumerate(rule_names):
        ET.SubElement(cats, "category", {"symbol": str(i), "value": name, "label": name,
                                         "render": "true", "type": "string"})
    symbols = ET.SubElement(renderer, "symbols")
    for i, name in enumerate(rule_names):
        wrap = ET.Element("symbols")
        _symbol(wrap, "symbol", str(i), colours[name])
        symbols.append(wrap[0])
    source = ET.SubElement(renderer, "source-symbol")
    _symbol(source, "symbol", "0", (128, 128, 128))
    ET.SubElement(root, "layerGeometryType").text = "2"
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body


def style_sld(rule_names: Sequence[str], *, layer: str, field: str = "rule") -> str:
    """The same style as OGC SLD 1.1 (used by QGIS when QML is not understood)."""
    ns = {"": "http://www.opengis.net/sld", "ogc": "http://www.opengis.net/ogc",
          "se": "http://www.opengis.net/se", "xlink": "http://www.w3.org/1999/xlink"}
    se, ogc, sld = "{%s}" % ns["se"], "{%s}" % ns["ogc"], "{%s}" % ns[""]
    for prefix, uri in ns.items():
        ET.register_namespace(prefix, uri)
    root = ET.Element(sld + "StyledLayerDescriptor", {"version": "1.1.0"})
    named = ET.SubElement(root, sld + "NamedLayer")
    ET.SubElement(named, se + "Name").text = layer
    style = ET.SubElement(ET.SubElement(named, sld + "UserStyle"), se + "FeatureTypeStyle")
    for name, rgb in rule_colours(rule_names).items():
        rule = ET.SubElement(style, se + "Rule")
        ET.SubElement(rule, se + "Name").text = name
        flt = ET.SubElement(ET.SubElement(rule, ogc + "Filter"), ogc + "PropertyIsEqualTo")
        ET.SubElement(flt, ogc + "PropertyName").text = field
        ET.SubElement(flt, ogc + "Literal").text = name
        poly = ET.SubElement(rule, se + "PolygonSymbolizer")
        hexcol = "#{:02x}{:02x}{:02x}".format(*rgb)
        fill = ET.SubElement(poly, se + "Fill")
        ET.SubElement(fill, se + "SvgParameter", {"name": "fill"}).text = hexcol
        ET.SubElement(fill, se + "SvgParameter", {"name": "fill-opacity"}).text = "0.35"
        stroke = ET.SubElement(poly, se + "Stroke")
        ET.SubElement(stroke, se + "SvgParameter", {"name": "stroke"}).text = hexcol
        ET.SubElement(stroke, se + "SvgParameter", {"name": "stroke-width"}).text = "2"
    return ET.tostring(root, encoding="unicode")


def _add_style(path: Path, *, layer: str, geometry_column: str, rule_names: Sequence[str]) -> None:
    """Store the default style of ``layer`` in the GeoPackage's ``layer_styles`` table."""
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute(_STYLE_TABLE_SQL)
            con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', '', ?)",
                (layer, geometry_column, layer, style_qml(rule_names), style_sld(rule_names, layer=layer),
                 "imagery_watch default style: patches coloured by rule", GPKG_DATE))
            con.execute(
                "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, description, "
                "last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', '', ?)", (GPKG_DATE,))
    finally:
        con.close()


def write_patches(gdf, path: str | os.PathLike, *, layer: str = "patches",
                  rule_names: Sequence[str] | None = None, tables_from: str | os.PathLike | None = None,
                  tables: Sequence[str] = ()) -> dict:
    """Write the patch table to a GeoPackage, atomically, with a default QGIS style.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame or iterable of them
        Patch table (see :func:`imagery_watch.vectorise.merge_pieces`), or its consecutive
        row batches with the same columns (see
        :func:`imagery_watch.vectorise.merge_pieces_in_batches`), written one after the
        other so that the whole table is never in memory; at least one batch (it may be
        empty).
    path : path
        Target ``.gpkg``; replaced whole (other layers of an existing file are not kept).
    layer : str
        Layer name.
    rule_names : sequence of str, optional
        Rules to give a colour in the style (config order); default: the rules in ``gdf``.
    tables_from : path, optional
        A GeoPackage (typically the file being replaced) whose attribute ``tables`` are
        copied into the new file before it replaces ``path``, so they survive the rewrite.
    tables : sequence of str
        Names of non-spatial tables to copy from ``tables_from`` (schema, indexes, rows
        and ``gpkg_contents`` entry); tables it lacks are skipped.

    Returns
    -------
    dict
        Rows copied per table name.

    Raises
    ------
    OutputError
        If the folder does not exist or is not writable, or writing fails. An existing
        file at ``path`` is left as it was (the new file is written aside, synced to disk,
        then renamed over it).
    InputFileError
        If ``tables_from`` cannot be read.

    Notes
    -----
    The layer's geometry type is that of a whole frame: ``Polygon`` when every geometry
    is a Polygon, else ``MultiPolygon`` (Polygons promoted). For batches it is decided by
    the first batch; a later batch of other types is written as it is (GDAL allows it,
    with a warning).
    """
    import pandas as pd
    import pyogrio

    path = Path(path)
    _check_writable_folder(path)
    batches = iter([gdf] if isinstance(gdf, pd.DataFrame) else gdf)
    seen_rules: dict = {}
    tmp = _tmp(path)
    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_DATE})
    try:
        tmp.unlink(missing_ok=True)
        geometry_type, geometry_column, rows = None, None, 0
        for frame in batches:
            if "rule" in frame.columns:
                seen_rules.update(dict.fromkeys(frame["rule"]))
            types = set(frame.geom_type.dropna()) if len(frame) else set()
            kind = "Polygon" if types <= {"Polygon"} else "MultiPolygon" if types <= {"Polygon", "MultiPolygon"} \
                else "Unknown"
            if geometry_type is None:
                geometry_type, geometry_column = kind, frame.geometry.name
            elif kind not in ("Polygon", geometry_type):
                log.warning("%s: a batch of patches holds %s geometries in a %s layer", path, kind, geometry_type)
            pyogrio.write_dataframe(frame, tmp, layer=layer, driver="GPKG", geometry_type=geometry_type,
                                    promote_to_multi=geometry_type == "MultiPolygon", append=rows > 0)
            rows += len(frame)
        if geometry_type is None:
            raise ValueError("write_patches: no patch table given (an empty iterable of batches); pass at "
                             "least one, possibly empty, GeoDataFrame")
        if rule_names is None:
            rule_names = list(seen_rules)
        _add_style(tmp, layer=layer, geometry_column=geometry_column, rule_names=list(rule_names))
        copied = copy_attribute_tables(tables_from, tmp, tables) if tables_from is not None and tables else {}
        _fsync_file(tmp)
        _settle_wal(path)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except InputFileError:
        tmp.unlink(missing_ok=True)
        raise
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, sqlite3.Error) as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write patches GeoPackage ({exc}); check free space and "
                          "that the folder is writable") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})
    log.info("wrote %d patches to %s (layer %s)", rows, path, layer)
    return copied


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def copy_attribute_tables(src: str | os.PathLike, dst: str | os.PathLike, tables: Sequence[str]) -> dict:
    """Copy non-spatial tables of one GeoPackage into another (which must lack them).

    Each table keeps its schema (``AUTOINCREMENT`` counters included), its indexes, its
    rows (ids unchanged) and its ``gpkg_contents`` entry, so QGIS still lists it.

    Parameters
    ----------
    src, dst : path
        Source and destination GeoPackages; ``src`` may be open elsewhere in WAL mode.
    tables : sequence of str
        Table names; those missing from ``src`` are skipped.

    Returns
    -------
    dict
        Rows copied per table found in ``src``.

    Raises
    ------
    InputFileError
        If ``src`` is not a readable SQLite file.
    sqlite3.Error
        If ``dst`` cannot be written (e.g. it already holds one of the tables).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputFileError(f"{src}: file not found; cannot copy tables {', '.join(tables)} from it")
    try:
        with contextlib.closing(sqlite3.connect(src)) as con:
            found = {}
            for name in tables:
                row = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (name,)).fetchone()
                if row is None:
                    continue
                indexes = [r[0] for r in con.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                    (name,))]
                cur = con.execute(f"SELECT * FROM {_quote(name)}")
                columns = [d[0] for d in cur.description]
                found[name] = (row[0], indexes, columns, cur.fetchall(), con.execute(
                    "SELECT data_type, identifier, description, last_change FROM gpkg_contents "
                    "WHERE table_name = ?", (name,)).fetchone())
    except sqlite3.DatabaseError as exc:
        raise InputFileError(f"{src}: cannot read tables {', '.join(tables)} ({exc}); the file is not a "
                             "readable GeoPackage") from None
    copied = {}
    with contextlib.closing(sqlite3.connect(dst)) as con:
        with con:
            for name, (create, indexes, columns, rows, contents) in found.items():
                con.execute(create)
                for sql in indexes:
                    con.execute(sql)
                marks = ", ".join("?" for _ in columns)
                con.executemany(f"INSERT INTO {_quote(name)} ({', '.join(_quote(c) for c in columns)}) "
                                f"VALUES ({marks})", rows)
                if contents is not None:
                    con.execute("INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, "
                                "description, last_change) VALUES (?, ?, ?, ?, ?)", (name,) + tuple(contents))
                copied[name] = len(rows)
    return copied


def count_table_rows(path: str | os.PathLike, tables: Sequence[str]) -> dict:
    """Rows of each named table of a GeoPackage (0 for tables it lacks).

    Raises
    ------
    InputFileError
        If ``path`` is missing or not a readable SQLite file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found; pass the path of a GeoPackage (.gpkg)")
    try:
        with contextlib.closing(sqlite3.connect(path)) as con:
            present = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return {name: con.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0] if name in present
                    else 0 for name in tables}
    except sqlite3.DatabaseError as exc:
        raise InputFileError(f"{path}: not a readable GeoPackage ({exc}); check the file or write it again") \
            from None


def snapshot_geopackage(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a GeoPackage consistently and atomically (SQLite backup, then rename).

    Unlike a file copy, this includes changes still in a ``-wal`` file of a store that
    has the file open, and never leaves a half-written ``dest``.

    Raises
    ------
    InputFileError
        If ``src`` cannot be read.
    OutputError
        If ``dest`` cannot be written.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise InputFileError(f"{src}: file not found; nothing to copy")
    tmp = _tmp(dest)
    try:
        with contextlib.closing(sqlite3.connect(src)) as s_con:
            s_con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            tmp.unlink(missing_ok=True)
            with contextlib.closing(sqlite3.connect(tmp)) as d_con:
                s_con.backup(d_con)
        _fsync_file(tmp)
        os.replace(tmp, dest)
        _fsync_folder(dest.parent)
    except sqlite3.DatabaseError as exc:
        tmp.unlink(missing_ok=True)
        raise InputFileError(f"{src}: cannot copy the GeoPackage ({exc}); the file is not readable") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{dest}: cannot write a copy of {src.name} ({exc.strerror or exc}); check free "
                          "space and permissions") from None


def read_patches(path: str | os.PathLike, layer: str = "patches", *, read_geometry: bool = True):
    """Read a patch layer (or any polygon layer, e.g. truth polygons) from a GeoPackage.

    Parameters
    ----------
    path : path
    layer : str
    read_geometry : bool
        False: the attributes only (a plain DataFrame), much less memory for a city.

    Returns
    -------
    geopandas.GeoDataFrame, or pandas.DataFrame without ``read_geometry``

    Raises
    ------
    InputFileError
        If the file is missing, is not a readable vector file, or has no such layer.
    """
    import pyogrio

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found; pass the path of a GeoPackage (.gpkg)")
    try:
        layers = [row[0] for row in pyogrio.list_layers(path)]
    except (pyogrio.errors.DataSourceError, OSError) as exc:
        raise InputFileError(f"{path}: not a readable GeoPackage ({exc}); check the file or write it again") \
            from None
    if layer not in layers:
        raise InputFileError(f"{path}: no layer {layer!r}; the file has: {', '.join(layers) or '(none)'}. "
                             "Pass the right layer name")
    try:
        return pyogrio.read_dataframe(path, layer=layer, read_geometry=read_geometry)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputFileError(f"{path}: cannot read layer {layer!r} ({exc})") from None


__all__ = ["write_patches", "read_patches", "save_pieces", "load_pieces", "style_qml", "style_sld",
           "rule_colours", "copy_attribute_tables", "count_table_rows", "snapshot_geopackage",
           "remove_partial_pieces"]
