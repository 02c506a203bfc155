"""Bad inputs through the real command line (issue 7): each is answered clearly.

Every case runs ``imagery-watch detect`` (``cli.main``) on inputs made from one small
generated scene and checks the exit code, that the one-line message names the file or the
config key and the fix, and that no traceback is shown (``--debug`` shows it). Inputs the
job can handle (another CRS or pixel size, partial overlap, invalid or reprojected vector
geometries) run to the end and say what was done.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from imagery_watch.cli import main
from imagery_watch.errors import ConfigError, GridMismatchError, InputFileError, OutputError, VectorLayerError

#: a scene of 2 x 2 sheets of 512 px (tiles of 256 px): every case uses it or one of its sheets
SEED = 7
SHEET = "sheet_r00_c00.tif"

CONFIG = """\
[job]
out = "{out}"

[inputs]
before = "{before}"
after = "{after}"
bands = {bands}

[layers]
farmland = {{ path = "{farmland}", layer = "farmland" }}

[processing]
chunk_px = 512
workers = 1
{processing}

[[rules]]
name = "construction_on_farmland"
before = ["low_vegetation", "bare"]
after = ["built"]
where = "farmland"
min_area_m2 = 200

[[rules]]
name = "afforestation"
before = ["low_vegetation", "bare", "built"]
after = ["tree"]
min_area_m2 = 400
"""


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Path:
    """A generated two-epoch scene of 1024 x 1024 px in four sheets (read only)."""
    from imagery_watch.synthetic import generate_scene

    folder = tmp_path_factory.mktemp("bad_inputs") / "scene"
    generate_scene(folder, seed=SEED, width_px=1024, height_px=1024, sheet_px=512, tile_px=256,
                   changes_per_km2=160)
    return folder


def rewrite(src: Path, dst: Path, *, crs="keep", transform=None, data=None, valid=None, dtype=None,
            scale: float = 1.0) -> Path:
    """Copy a GeoTIFF with some of its properties replaced (lossless, mask kept)."""
    with rasterio.open(src) as ds:
        out_shape = (ds.count, round(ds.height / scale), round(ds.width / scale))
        pixels = ds.read(out_shape=out_shape) if data is None else data
        mask = ds.dataset_mask(out_shape=out_shape[1:]) if valid is None else np.where(valid, 255, 0).astype(np.uint8)
        profile = dict(driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=pixels.shape[0],
                       dtype=dtype or pixels.dtype.name, crs=ds.crs if crs == "keep" else crs,
                       transform=transform or ds.transform @ Affine.scale(scale), tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate")
    if profile["crs"] is None:
        del profile["crs"]
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(dst, "w", **profile) as out:
        out.write(pixels.astype(profile["dtype"]))
        out.write_mask(mask)
    return dst


def write_config(tmp_path: Path, scene: Path, *, before=None, after=None, farmland=None,
                 bands=("red", "green", "blue"), processing: str = "") -> Path:
    path = tmp_path / "job.toml"
    path.write_text(CONFIG.format(
        out=(tmp_path / "out").as_posix(), before=Path(before or scene / "before" / SHEET).as_posix(),
        after=Path(after or scene / "after" / SHEET).as_posix(),
        farmland=Path(farmland or scene / "layers.gpkg").as_posix(), bands=json.dumps(list(bands)),
        processing=processing), encoding="utf-8")
    return path


def run(capsys, config: Path, *args: str) -> tuple:
    """Run ``imagery-watch detect CONFIG ARGS``; return (exit code, stdout, stderr)."""
    rc = main(["detect", str(config), *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_refused(rc: int, err: str, error: type, *needles: str) -> None:
    """A non-zero exit with the error's code, and a last line naming every needle; no traceback.

    Step messages (processing grid...) may come before the error line.
    """
    assert rc == error.exit_code != 0, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("Error: ")] == lines[-1:], err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def assert_processed(rc: int, out: str, err: str, tmp_path: Path) -> dict:
    assert rc == 0, err
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (tmp_path / "out" / "patches.gpkg").exists()
    return summary


# -- epochs ---------------------------------------------------------------------------


def test_missing_epoch_file(scene, tmp_path, capsys):
    missing = tmp_path / "no-such-sheet.tif"
    rc, _, err = run(capsys, write_config(tmp_path, scene, after=missing))
    assert_refused(rc, err, InputFileError, str(missing), "after epoch not found", "inputs.after", "--after")


def test_missing_epoch_traceback_only_with_debug(scene, tmp_path):
    config = write_config(tmp_path, scene, after=tmp_path / "no-such-sheet.tif")
    with pytest.raises(InputFileError, match="no-such-sheet.tif"):
        main(["--debug", "detect", str(config)])


def test_file_that_is_not_a_geotiff(scene, tmp_path, capsys):
    fake = tmp_path / "before.tif"
    fake.write_text("this is not an image\n")
    rc, _, err = run(capsys, write_config(tmp_path, scene, before=fake))
    assert_refused(rc, err, InputFileError, str(fake), "cannot open", "GeoTIFF")


def test_truncated_geotiff(scene, tmp_path, capsys):
    path = shutil.copy(scene / "before" / SHEET, tmp_path / "truncated.tif")
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) * 2 // 3])  # header intact, the last tiles cut off
    rc, _, err = run(capsys, write_config(tmp_path, scene, before=path))
    assert_refused(rc, err, InputFileError, str(path), "truncated", "copy")


def test_corrupt_sheet_area_is_recorded_as_not_processed(scene, tmp_path, capsys):
    folder = shutil.copytree(scene / "after", tmp_path / "after")
    bad = folder / "sheet_r01_c01.tif"
    intact = bad.read_bytes()
    bad.write_bytes(intact[: len(intact) // 2])
    config = write_config(tmp_path, scene, before=scene / "before", after=folder)
    rc, out, err = run(capsys, config)
    summary = assert_processed(rc, out, err, tmp_path)
    with rasterio.open(scene / "after" / "sheet_r01_c01.tif") as ds:
        footprint = shapely.box(*ds.bounds)
    assert f"NOT PROCESSED: {bad} (after epoch) cannot be read (truncated" in err
    assert "NOT PROCESSED" in out  # also in the final summary
    [record] = summary["unprocessed"]
    assert record["sheet"] == str(bad) and record["epoch"] == "after"
    assert record["area_m2"] == pytest.approx(footprint.area)
    layer = gpd.read_file(tmp_path / "out" / "unprocessed.gpkg", layer="unprocessed", engine="pyogrio")
    assert len(layer) == 1 and layer.geometry.iloc[0].equals(footprint)
    patches = gpd.read_file(tmp_path / "out" / "patches.gpkg", layer="patches", engine="pyogrio")
    assert not patches.intersection(footprint).area.gt(0).any()
    bad.write_bytes(intact)  # delivered again: processed, stale record removed
    rc, out, err = run(capsys, config)
    summary = assert_processed(rc, out, err, tmp_path)
    assert summary["unprocessed"] == [] and "NOT PROCESSED" not in err
    assert not (tmp_path / "out" / "unprocessed.gpkg").exists()
    assert summary["chunks_computed"] == summary["chunks_total"]


def test_corrupt_source_of_a_vrt_epoch_is_named(scene, tmp_path, capsys):
    from imagery_watch.io.rasters import build_mosaic_vrt

    folder = shutil.copytree(scene / "before", tmp_path / "sheets")
    vrt = tmp_path / "before.vrt"
    build_mosaic_vrt(folder, vrt)
    bad = folder / "sheet_r00_c00.tif"
    bad.write_bytes(bad.read_bytes()[:3000])
    rc, _, err = run(capsys, write_config(tmp_path, scene, before=vrt))
    assert_refused(rc, err, InputFileError, str(bad), "a source of before.vrt cannot be read", "truncated",
                   "Replace it with an intact copy")


def test_sheet_unreadable_at_chunk_time_is_named(scene, tmp_path):
    """A sheet that opens but fails when its pixels are read: the read error names the sheet."""
    from imagery_watch.align import make_reader, plan_grid
    from imagery_watch.io.rasters import describe_epoch

    folder = shutil.copytree(scene / "after", tmp_path / "after")
    info = describe_epoch(folder, work_dir=tmp_path / "work", label="after")
    bad = folder / "sheet_r00_c01.tif"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # cut after the check, as when a file server fails mid-job
    reader = make_reader(info, plan_grid(info, info).grid, (1, 2, 3))
    reader.read(600, 0, 400, 400)  # a window of intact sheets reads fine
    # a window over every sheet, as a chunk with its halo reads it (GDAL reads such a
    # window with several threads and used to return zeros flagged valid)
    with pytest.raises(InputFileError, match=r"sheet_r00_c01\.tif.*cannot be read.*rows 0\.\.1024"):
        reader.read(0, 0, 1024, 1024)


def test_damaged_jpeg_tile_is_named_not_read_as_imagery(scene, tmp_path, capsys):
    """libjpeg decodes damaged data with warnings only: the job must stop and name the sheet."""
    folder = shutil.copytree(scene / "after", tmp_path / "after")
    bad = folder / "sheet_r00_c01.tif"
    with rasterio.open(bad) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    data = bytearray(bad.read_bytes())
    data[offset + size // 2: offset + size // 2 + 2] = b"\xff\xd9"  # an end-of-image marker mid-tile
    bad.write_bytes(bytes(data))  # same size: the truncation check cannot see it
    rc, _, err = run(capsys, write_config(tmp_path, scene, before=scene / "before", after=folder))
    assert_refused(rc, err, InputFileError, str(bad), "damaged compressed data", "Corrupt JPEG data",
                   "Replace it with an intact copy")


def test_no_crs(scene, tmp_path, capsys):
    path = rewrite(scene / "after" / SHEET, tmp_path / "no-crs.tif", crs=None)
    rc, _, err = run(capsys, write_config(tmp_path, scene, after=path))
    assert_refused(rc, err, GridMismatchError, str(path), "no CRS", "gdal_edit.py -a_srs")


def test_after_epoch_in_another_crs_is_reprojected_and_said(scene, tmp_path, capsys):
    # the same sheet, georeferenced in EPSG:4528 (zone number 40 in the easting)
    with rasterio.open(scene / "after" / SHEET) as ds:
        t = ds.transform
    path = rewrite(scene / "after" / SHEET, tmp_path / "after-4528.tif", crs="EPSG:4528",
                   transform=Affine(t.a, 0, t.c + 40_000_000, 0, t.e, t.f))
    rc, out, err = run(capsys, write_config(tmp_path, scene, after=path))
    summary = assert_processed(rc, out, err, tmp_path)
    assert "after epoch (EPSG:4528, pixel 0.2) is warped onto the processing grid (EPSG:4549" in err
    assert any("EPSG:4528" in n for n in summary["notes"])
    assert summary["grid_px"] == [512, 512]


def test_after_epoch_at_another_pixel_size_is_resampled_and_said(scene, tmp_path, capsys):
    path = rewrite(scene / "after" / SHEET, tmp_path / "after-25cm.tif", scale=1.25)
    rc, out, err = run(capsys, write_config(tmp_path, scene, after=path))
    summary = assert_processed(rc, out, err, tmp_path)
    assert "pixel 0.25) is warped onto the processing grid (EPSG:4549, pixel 0.2)" in err
    assert summary["grid_px"] == [512, 512]


def test_a_warped_epoch_is_read_chunk_by_chunk(scene, tmp_path, capsys, monkeypatch):
    """GDAL's warper gives values that depend on the window read: each chunk reads its own
    window with its halo in one read, whatever the blocks of chunks (workers, resumes)."""
    from imagery_watch.io.rasters import EpochReader

    reads = []
    real = EpochReader.read

    def read(self, row0, col0, height, width):
        reads.append((row0, col0, height, width))
        return real(self, row0, col0, height, width)

    monkeypatch.setattr(EpochReader, "read", read)
    path = rewrite(scene / "after" / SHEET, tmp_path / "after-25cm.tif", scale=1.25)
    rc, out, err = run(capsys, write_config(tmp_path, scene, after=path), "--chunk-px", "128")
    summary = assert_processed(rc, out, err, tmp_path)
    h = json.loads((tmp_path / "out" / "job.json").read_text())["halo_px"]
    chunks = {(r0 - h, c0 - h, 128 + 2 * h, 128 + 2 * h) for r0 in range(0, 512, 128) for c0 in range(0, 512, 128)}
    job_reads = [r for r in reads if r[2:] != (512, 512) and r[2] > 128]  # not the fits' sample blocks
    assert summary["chunks_total"] == 16 and set(job_reads) == chunks
    assert len(job_reads) == 2 * len(chunks)  # both epochs, each chunk once


def test_epoch_in_a_crs_that_cannot_be_transformed(scene, tmp_path, capsys):
    local = 'LOCAL_CS["site grid",UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    path = rewrite(scene / "after" / SHEET, tmp_path / "after-local.tif", crs=rasterio.crs.CRS.from_wkt(local))
    rc, _, err = run(capsys, write_config(tmp_path, scene, after=path))
    assert_refused(rc, err, GridMismatchError, str(path), "CRS ('site grid') cannot be transformed to the processing "
                   "CRS EPSG:4549", "gdal_edit.py -a_srs", "gdalwarp -t_srs")


def test_epochs_that_do_not_overlap(scene, tmp_path, capsys):
    before, after = scene / "before" / SHEET, scene / "after" / "sheet_r01_c01.tif"
    rc, _, err = run(capsys, write_config(tmp_path, scene, before=before, after=after))
    assert_refused(rc, err, GridMismatchError, str(before), str(after), "do not overlap", "CRS")


@pytest.mark.parametrize("larger", ["before", "after"])
def test_partial_overlap_is_processed_and_its_extent_reported(scene, tmp_path, capsys, larger):
    # the whole mosaic of one epoch against one sheet of the other: a quarter of it is processed
    epochs = {"before": scene / "before" / SHEET, "after": scene / "after" / SHEET, larger: scene / larger}
    rc, out, err = run(capsys, write_config(tmp_path, scene, **epochs))
    summary = assert_processed(rc, out, err, tmp_path)
    with rasterio.open(scene / "after" / SHEET) as ds:
        left, bottom, right, top = ds.bounds
    share = {"before": "25 % of the before epoch (0.042 km2) and 100 % of the after epoch (0.010 km2)",
             "after": "100 % of the before epoch (0.010 km2) and 25 % of the after epoch (0.042 km2)"}[larger]
    note = (f"partial overlap: processing 0.010 km2, extent ({left:.1f}, {bottom:.1f}, {right:.1f}, {top:.1f}) in "
            f"EPSG:4549; the epochs share {share}: the rest of each is not processed")
    assert note in err
    assert note in summary["notes"]
    assert summary["grid_px"] == [512, 512]


def test_different_band_counts(scene, tmp_path, capsys):
    with rasterio.open(scene / "before" / SHEET) as ds:
        rgb = ds.read()
    rgbn = rewrite(scene / "before" / SHEET, tmp_path / "before-rgbn.tif", data=np.concatenate([rgb, rgb[:1]]))
    after = scene / "after" / SHEET
    config = write_config(tmp_path, scene, before=rgbn, after=after, bands=("red", "green", "blue", "nir"))
    rc, _, err = run(capsys, config)
    assert_refused(rc, err, GridMismatchError, str(after), "3 bands", "inputs.bands")


def test_extra_band_not_named_in_the_config_is_not_used(scene, tmp_path, capsys):
    # before RGB, after RGBN, inputs.bands = RGB: both are compared on R, G, B
    with rasterio.open(scene / "after" / SHEET) as ds:
        rgb = ds.read()
    rgbn = rewrite(scene / "after" / SHEET, tmp_path / "after-rgbn.tif", data=np.concatenate([rgb, rgb[:1]]))
    rc, out, err = run(capsys, write_config(tmp_path, scene, after=rgbn))
    assert_processed(rc, out, err, tmp_path)


def test_sixteen_bit_input(scene, tmp_path, capsys):
    with rasterio.open(scene / "after" / SHEET) as ds:
        data = ds.read().astype("uint16") * 257
    path = rewrite(scene / "after" / SHEET, tmp_path / "after-16bit.tif", data=data)
    rc, _, err = run(capsys, write_config(tmp_path, scene, after=path))
    assert_refused(rc, err, InputFileError, str(path), "uint16", "8-bit", "gdal_translate -ot Byte -scale")


def test_all_nodata_epoch(scene, tmp_path, capsys):
    path = rewrite(scene / "before" / SHEET, tmp_path / "before-empty.tif", valid=np.zeros((512, 512), bool))
    rc, _, err = run(capsys, write_config(tmp_path, scene, before=path))
    assert_refused(rc, err, InputFileError, str(path), "no valid pixel", "nodata")


# -- vector layers --------------------------------------------------------------------


def farmland(scene: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(scene / "layers.gpkg", layer="farmland", engine="pyogrio")


def test_empty_vector_layer(scene, tmp_path, capsys):
    path = tmp_path / "layers.gpkg"
    farmland(scene).iloc[:0].to_file(path, layer="farmland", driver="GPKG", engine="pyogrio")
    rc, _, err = run(capsys, write_config(tmp_path, scene, farmland=path))
    assert_refused(rc, err, VectorLayerError, str(path), "layers.farmland", "empty", "at least one polygon")


def test_invalid_geometries_are_repaired_and_counted(scene, tmp_path, capsys):
    gdf = farmland(scene)
    x0, y0 = gdf.total_bounds[:2]
    bowtie = shapely.Polygon([(x0, y0), (x0 + 40, y0 + 40), (x0 + 40, y0), (x0, y0 + 40)])
    bad = gpd.GeoDataFrame(geometry=[bowtie, bowtie], crs=gdf.crs)
    path = tmp_path / "layers.gpkg"
    gpd.pd.concat([gdf, bad], ignore_index=True).to_file(path, layer="farmland", driver="GPKG", engine="pyogrio")
    rc, out, err = run(capsys, write_config(tmp_path, scene, farmland=path))
    assert_processed(rc, out, err, tmp_path)
    assert ", 2 invalid geometries repaired" in err


def test_vector_layer_in_another_crs_is_reprojected_and_said(scene, tmp_path, capsys):
    gdf = farmland(scene)
    path = tmp_path / "layers.gpkg"
    gdf.to_crs("EPSG:4326").to_file(path, layer="farmland", driver="GPKG", engine="pyogrio")
    rc, out, err = run(capsys, write_config(tmp_path, scene, farmland=path))
    assert_processed(rc, out, err, tmp_path)
    assert "layer farmland:" in err and "reprojected from EPSG:4326" in err
    job_layer = gpd.read_file(tmp_path / "out" / "work" / "layers.gpkg", layer="farmland", engine="pyogrio")
    assert job_layer.crs.to_epsg() == 4549
    with rasterio.open(scene / "before" / SHEET) as ds:
        in_grid = gdf[gdf.intersects(shapely.box(*ds.bounds))]
    assert len(job_layer) == len(in_grid)
    assert job_layer.area.sum() == pytest.approx(in_grid.area.sum(), rel=1e-6)


def test_vector_layer_without_crs(scene, tmp_path, capsys):
    path = tmp_path / "layers.gpkg"
    with pytest.warns(UserWarning, match="crs"):  # pyogrio warns on writing a layer without CRS
        farmland(scene).set_crs(None, allow_override=True).to_file(path, layer="farmland", driver="GPKG",
                                                                  engine="pyogrio")
    rc, _, err = run(capsys, write_config(tmp_path, scene, farmland=path))
    assert_refused(rc, err, VectorLayerError, str(path), "layers.farmland", "no CRS", "ogr2ogr -a_srs")


# -- config and output ----------------------------------------------------------------


@pytest.mark.parametrize("edit, needles", [
    (lambda t: t.replace("workers = 1", "workers = 1\nchunk_pxx = 512"),
     ("processing.chunk_pxx: unknown key", "spelling")),
    (lambda t: t.replace("chunk_px = 512", 'chunk_px = "512"'),
     ("processing.chunk_px: expected an integer, found str",)),
    (lambda t: t.replace('after = ["tree"]\n', ""), ("rules[1].after: missing required field", "add it")),
    (lambda t: t[:t.index("after = ")] + t[t.index("bands = "):], ("inputs.after: missing required field",)),
], ids=["unknown-key", "wrong-type", "missing-rule-field", "missing-input"])
def test_config_errors_name_the_key(scene, tmp_path, capsys, edit, needles):
    config = write_config(tmp_path, scene)
    config.write_text(edit(config.read_text()))
    rc, _, err = run(capsys, config)
    assert_refused(rc, err, ConfigError, str(config), *needles)
    assert not (tmp_path / "out").exists()


def test_output_folder_that_cannot_be_written(scene, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "job"  # a folder cannot be made inside a file (permissions do not stop root)
    rc, _, err = run(capsys, write_config(tmp_path, scene), "--out", str(out))
    assert_refused(rc, err, OutputError, str(out), "not writable", "--out")


def test_help_lists_the_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code, error in ((2, ConfigError), (3, InputFileError), (4, GridMismatchError), (5, VectorLayerError),
                        (6, OutputError)):
        assert f"  {code}  {error.__name__.removesuffix('Error')}" in out
