"""GeoPackage details the review store needs without GDAL: geometry blobs and trigger functions.

A GeoPackage geometry is a ``GP`` header (flags, SRS id, an optional envelope) followed by
WKB. GDAL's R-tree triggers on a feature table call ``ST_IsEmpty`` and ``ST_MinX``... which
plain :mod:`sqlite3` lacks; :func:`register_gpkg_functions` provides them.
"""

from __future__ import annotations

import sqlite3
import struct

import shapely

from ..errors import JobError


def geometry_from_gpkg(blob) -> shapely.Geometry | None:
    """Decode a GeoPackage geometry blob (``GP`` header, optional envelope, WKB)."""
    if blob is None:
        return None
    blob = bytes(blob)
    if blob[:2] != b"GP":
        raise JobError("geometry is not a GeoPackage geometry blob; rewrite the file with GDAL/pyogrio")
    flags = blob[3]
    envelope_len = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}.get((flags >> 1) & 0x07)
    if envelope_len is None:
        raise JobError("GeoPackage geometry blob has an invalid envelope code")
    if flags & 0x10:  # empty geometry
        return None
    return shapely.from_wkb(blob[8 + envelope_len:])


def geometry_to_gpkg(geom, srs_id: int) -> bytes:
    """Encode a geometry as a GeoPackage blob with an XY envelope (little endian)."""
    minx, miny, maxx, maxy = geom.bounds
    header = b"GP" + bytes([0, 0b00000011]) + struct.pack("<i", srs_id)
    return header + struct.pack("<4d", minx, maxx, miny, maxy) + shapely.to_wkb(geom, byte_order=1)


def _blob_bounds(blob):
    geom = geometry_from_gpkg(blob) if blob is not None else None
    return None if geom is None or geom.is_empty else geom.bounds


def register_gpkg_functions(con: sqlite3.Connection) -> None:
    """Register the SQL functions GeoPackage triggers call (``ST_IsEmpty``, ``ST_MinX``...).

    GDAL's R-tree triggers on the patch table reference them; SQLite needs them to
    prepare any UPDATE of the table, even one that leaves the geometry alone.
    """
    con.create_function("ST_IsEmpty", 1, lambda b: None if b is None else int(_blob_bounds(b) is None),
                        deterministic=True)
    for i, name in enumerate(("ST_MinX", "ST_MinY", "ST_MaxX", "ST_MaxY")):
        con.create_function(name, 1, lambda b, i=i: (lambda bb: None if bb is None else bb[i])(_blob_bounds(b)),
                            deterministic=True)
