"""Tests of imagery_watch.io.patches: patch GeoPackage with QGIS style, chunk pieces files."""

import os
import sqlite3
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import shapely
from affine import Affine

from imagery_watch.errors import InputFileError, OutputError
from imagery_watch.io import patches as patches_io
from imagery_watch.io.patches import load_pieces, read_patches, save_pieces, write_patches
from imagery_watch.vectorise import merge_pieces, vectorise_block

TRANSFORM = Affine(0.2, 0.0, 500_000.0, 0.0, -0.2, 3_400_000.0)
RULES = ("construction_on_farmland", "afforestation", "demolition")


def _pieces(seed=0, shape=(40, 50), row0=0, col0=0):
    rng = np.random.default_rng(seed)
    rule = np.where(rng.random(shape) < 0.5, rng.integers(1, 4, shape), 0).astype(np.uint8)
    return vectorise_block(rule, score=rng.random(shape, dtype=np.float32),
                           before_class=rng.integers(0, 7, shape, dtype=np.uint8),
                           after_class=rng.integers(0, 7, shape, dtype=np.uint8),
                           farmland=rng.random(shape) < 0.5, approved=None,
                           county=rng.integers(0, 3, shape, dtype=np.uint16), row0=row0, col0=col0,
                           transform=TRANSFORM)


@pytest.fixture(scope="module")
def patches():
    return merge_pieces([_pieces()], rule_names=RULES, min_area_m2=(0.0, 0.1, 0.0), pixel_area_m2=0.04,
                        crs="EPSG:4549", county_names=("Nanhu", "Pinghu"),
                        provenance={"job_id": "j1", "epoch_before": "2023", "epoch_after": "2024"})


def test_round_trip(tmp_path, patches):
    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    back = read_patches(path)
    assert len(back) == len(patches) > 10
    assert list(back.columns) == list(patches.columns)
    attrs = [c for c in patches.columns if c != "geometry"]
    for c in attrs:
        if patches[c].dtype.kind == "f":
            np.testing.assert_allclose(back[c], patches[c], rtol=1e-12)
        else:
            assert list(back[c]) == list(patches[c]), c
    assert back.crs.to_epsg() == 4549
    assert shapely.equals(np.asarray(back.geometry.values), np.asarray(patches.geometry.values)).all()
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_batches_write_the_same_layer_as_the_whole_table(tmp_path, patches):
    whole, parts = tmp_path / "whole.gpkg", tmp_path / "parts.gpkg"
    write_patches(patches, whole, rule_names=RULES)
    write_patches((patches.iloc[i:i + 5].reset_index(drop=True) for i in range(0, len(patches), 5)), parts,
                  rule_names=RULES)
    a, b = read_patches(whole), read_patches(parts)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert list(shapely.to_wkb(np.asarray(a.geometry.values))) == list(shapely.to_wkb(np.asarray(b.geometry.values)))
    with sqlite3.connect(parts) as con:
        assert con.execute("SELECT geometry_type_name FROM gpkg_geometry_columns").fetchone()[0] == "POLYGON"
        assert con.execute("SELECT count(*) FROM layer_styles").fetchone()[0] == 1
    with pytest.raises(ValueError, match="at least one"):
        write_patches(iter(()), tmp_path / "none.gpkg", rule_names=RULES)
    assert not (tmp_path / "none.gpkg").exists() and not list(tmp_path.glob(".*tmp*"))


def test_attributes_read_without_polygons(tmp_path, patches):
    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    back = read_patches(path, read_geometry=False)
    assert "geometry" not in back.columns and list(back["patch_id"]) == list(patches["patch_id"])


def test_round_trip_of_an_empty_table(tmp_path, patches):
    path = tmp_path / "empty.gpkg"
    write_patches(patches.iloc[:0], path, rule_names=RULES)
    back = read_patches(path)
    assert len(back) == 0 and "patch_id" in back.columns


def test_writes_are_reproducible(tmp_path, patches):
    a, b = tmp_path / "a.gpkg", tmp_path / "b.gpkg"
    write_patches(patches, a, rule_names=RULES)
    write_patches(patches, b, rule_names=RULES)
    assert a.read_bytes() == b.read_bytes()


def test_default_qgis_style_is_stored(tmp_path, patches):
    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    con = sqlite3.connect(path)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(layer_styles)")]
        rows = con.execute("SELECT f_table_name, f_geometry_column, styleName, styleQML, styleSLD, useAsDefault "
                           "FROM layer_styles").fetchall()
        contents = con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchall()
    finally:
        con.close()
    for c in ("f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column", "styleName", "styleQML",
              "styleSLD", "useAsDefault", "description", "owner", "ui", "update_time"):
        assert c in cols
    assert contents == [("attributes",)]
    assert len(rows) == 1
    table, geom_col, name, qml, sld, default = rows[0]
    assert table == "patches" and geom_col == "geometry" and default == 1
    root = ET.fromstring(qml.split("\n", 1)[1])  # skip the DOCTYPE line
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "rule"
    values = [c.get("value") for c in renderer.find("categories")]
    assert values == list(RULES)
    colours = {o.get("value") for o in renderer.iter("Option") if o.get("name") == "color"}
    assert len(colours) == len(RULES) + 1  # one per rule, plus the grey source symbol
    sld_root = ET.fromstring(sld)
    literals = [e.text for e in sld_root.iter("{http://www.opengis.net/ogc}Literal")]
    assert literals == list(RULES)


def test_failed_write_leaves_the_existing_file_intact(tmp_path, patches, monkeypatch):
    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(patches_io, "_add_style", broken)
    with pytest.raises(OutputError, match="cannot write patches GeoPackage"):
        write_patches(patches.iloc[:3], path, rule_names=RULES)
    assert path.read_bytes() == before
    assert len(read_patches(path)) == len(patches)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_unwritable_folder_raises_output_error(tmp_path, patches):
    with pytest.raises(OutputError, match="does not exist; create it"):
        write_patches(patches, tmp_path / "missing" / "p.gpkg")
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="not writable"):
                write_patches(patches, ro / "p.gpkg")
        finally:
            ro.chmod(0o700)


def test_read_errors(tmp_path, patches):
    with pytest.raises(InputFileError, match="file not found"):
        read_patches(tmp_path / "nope.gpkg")
    corrupt = tmp_path / "corrupt.gpkg"
    corrupt.write_bytes(b"this is not a geopackage" * 100)
    with pytest.raises(InputFileError, match="not a readable GeoPackage"):
        read_patches(corrupt)
    path = tmp_path / "p.gpkg"
    write_patches(patches, path, rule_names=RULES)
    with pytest.raises(InputFileError, match="no layer 'truth'.*patches"):
        read_patches(path, layer="truth")


def test_pieces_round_trip(tmp_path):
    p = _pieces(seed=1, row0=64, col0=128)
    path = tmp_path / "r000001_c000002.npz"
    save_pieces(p, path)
    assert path.exists() and not list(tmp_path.glob(".*tmp*"))
    q = load_pieces(path)
    assert (q.row0, q.col0, q.shape, q.transform) == (p.row0, p.col0, p.shape, p.transform)
    for name in ("rule", "pixel_count", "score_sum", "score_max", "before_hist", "after_hist", "farmland_px",
                 "approved_px", "county_px", "anchor"):
        np.testing.assert_array_equal(getattr(q, name), getattr(p, name))
        assert getattr(q, name).dtype == getattr(p, name).dtype
    for edge in ("top", "bottom", "left", "right"):
        np.testing.assert_array_equal(q.edges[edge], p.edges[edge])
    assert shapely.equals_exact(q.geometry, p.geometry, tolerance=0).all()
    # empty pieces too
    empty = vectorise_block(np.zeros((5, 5), np.uint8), score=np.zeros((5, 5), np.float32),
                            before_class=np.zeros((5, 5), np.uint8), after_class=np.zeros((5, 5), np.uint8),
                            row0=0, col0=0, transform=TRANSFORM)
    save_pieces(empty, tmp_path / "e.npz")
    assert len(load_pieces(tmp_path / "e.npz")) == 0


def test_pieces_file_is_one_payload_and_old_files_still_load(tmp_path):
    p = _pieces(seed=2, row0=0, col0=64)
    path = tmp_path / "new.npz"
    save_pieces(p, path)
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["layout", "payload"]
    # a file written before the packed layout (one npz entry per array) reads the same
    old = tmp_path / "old.npz"
    np.savez_compressed(old, **p.to_arrays())
    a, b = load_pieces(path), load_pieces(old)
    for name, value in a.to_arrays().items():
        np.testing.assert_array_equal(value, b.to_arrays()[name])
        assert value.dtype == b.to_arrays()[name].dtype
    # what the merge keeps of a chunk does not hold on to the file's whole payload
    for name in ("rule", "pixel_count", "score_sum", "farmland_px", "approved_px", "before_hist", "after_hist",
                 "county_px", "anchor"):
        assert getattr(a, name).base is None or getattr(a, name).base.nbytes == getattr(a, name).nbytes, name


def test_pieces_errors(tmp_path):
    with pytest.raises(InputFileError, match="chunk pieces not found"):
        load_pieces(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="not a valid chunk pieces file"):
        load_pieces(bad)
    broken = tmp_path / "broken.npz"  # a payload shorter than its layout says
    np.savez(broken, layout=np.array('[["rule", "|u1", [99], 0]]'), payload=np.zeros(8, np.uint8))
    with pytest.raises(InputFileError, match="broken.npz: not a valid chunk pieces file"):
        load_pieces(broken)
    with pytest.raises(OutputError, match="cannot write chunk pieces"):
        save_pieces(_pieces(), tmp_path / "missing" / "x.npz")


# -- keeping review tables across rewrites ------------------------------------------------

LOG_SQL = ("CREATE TABLE decision_log (id INTEGER PRIMARY KEY AUTOINCREMENT, patch_id TEXT NOT NULL, "
           "to_status TEXT NOT NULL, note TEXT)")


def _add_log(path, rows):
    with sqlite3.connect(path) as con:
        con.execute(LOG_SQL)
        con.execute("CREATE INDEX iw_log_patch ON decision_log (patch_id, id)")
        con.executemany("INSERT INTO decision_log (patch_id, to_status, note) VALUES (?, ?, ?)", rows)
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier) "
                    "VALUES ('decision_log', 'attributes', 'decision_log')")
    con.close()


def test_rewrite_keeps_named_tables_of_the_replaced_file(tmp_path, patches):
    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    rows = [("a", "illegal", "n1"), ("b", "legal", None), ("a", "legal", "permit")]
    _add_log(path, rows)
    copied = write_patches(patches.iloc[:2], path, rule_names=RULES, tables_from=path,
                           tables=("decision_log", "not_there"))
    assert copied == {"decision_log": 3}
    assert len(read_patches(path)) == 2
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT patch_id, to_status, note FROM decision_log ORDER BY id").fetchall() == rows
        assert con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'decision_log'").fetchone() == \
            ("attributes",)
        assert con.execute("SELECT name FROM sqlite_master WHERE name = 'iw_log_patch'").fetchone()
        # AUTOINCREMENT goes on after the copied ids
        con.execute("INSERT INTO decision_log (patch_id, to_status) VALUES ('c', 'legal')")
        assert con.execute("SELECT max(id) FROM decision_log").fetchone() == (4,)
    con.close()
    assert not list(tmp_path.glob(".*tmp*"))


def test_unreadable_table_source_leaves_the_existing_file_intact(tmp_path, patches):
    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    before = path.read_bytes()
    bad = tmp_path / "bad.gpkg"
    bad.write_bytes(b"not sqlite" * 200)
    with pytest.raises(InputFileError, match="bad.gpkg"):
        write_patches(patches.iloc[:1], path, rule_names=RULES, tables_from=bad, tables=("decision_log",))
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp*"))


def test_snapshot_includes_changes_still_in_the_wal(tmp_path, patches):
    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    _add_log(path, [("a", "illegal", None)])
    con = sqlite3.connect(path)  # a review server with the file open in WAL mode
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("INSERT INTO decision_log (patch_id, to_status) VALUES ('b', 'legal')")
        con.commit()
        assert (tmp_path / "patches.gpkg-wal").stat().st_size > 0
        patches_io.snapshot_geopackage(path, tmp_path / "copy.gpkg")
    finally:
        con.close()
    with sqlite3.connect(tmp_path / "copy.gpkg") as copy:
        assert copy.execute("SELECT patch_id FROM decision_log ORDER BY id").fetchall() == [("a",), ("b",)]
    copy.close()
    assert len(read_patches(tmp_path / "copy.gpkg")) == len(patches)
    assert patches_io.count_table_rows(tmp_path / "copy.gpkg", ("decision_log", "x")) == {"decision_log": 2, "x": 0}
    with pytest.raises(InputFileError, match="file not found"):
        patches_io.snapshot_geopackage(tmp_path / "nope.gpkg", tmp_path / "c2.gpkg")


def test_partial_pieces_files_are_removed(tmp_path):
    save_pieces(_pieces(), tmp_path / "r000000_c000000.npz")
    (tmp_path / ".r000000_c000001.tmp123.npz").write_bytes(b"half")
    assert patches_io.remove_partial_pieces(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r000000_c000000.npz"]


def test_rewrite_is_safe_from_a_wal_left_by_a_killed_review_server(tmp_path, patches):
    import subprocess
    import sys

    path = tmp_path / "patches.gpkg"
    write_patches(patches, path, rule_names=RULES)
    _add_log(path, [("a", "illegal", None)])
    # a process that commits in WAL mode and dies without closing: its -wal file stays
    code = ("import os, sqlite3, sys; con = sqlite3.connect(sys.argv[1]); con.execute('PRAGMA journal_mode=WAL'); "
            "con.execute('PRAGMA wal_autocheckpoint=0'); "
            "con.executemany(\"INSERT INTO decision_log (patch_id, to_status, note) VALUES (?, 'legal', ?)\", "
            "[(str(i), 'x' * 500) for i in range(200)]); con.commit(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    wal = tmp_path / "patches.gpkg-wal"
    assert wal.stat().st_size > 0
    write_patches(patches.iloc[:2], path, rule_names=RULES)
    assert not wal.exists() or wal.stat().st_size == 0
    back = read_patches(path)
    assert len(back) == 2 and (back["status"] == "pending").all()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
