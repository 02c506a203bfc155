"""Finding unreadable sheets: truncated tiles, files GDAL cannot open, and the areas they cover."""

import pickle

import pytest
import rasterio
from test_rasters import ORIGIN, texture, write

from imagery_watch.align import make_reader, plan_grid, unprocessed_areas
from imagery_watch.errors import InputFileError, UnreadableSheetError
from imagery_watch.io.integrity import tiff_truncation
from imagery_watch.io.rasters import describe_epoch, find_unreadable_sheets


@pytest.fixture
def sheets(tmp_path):
    """Three 256 px sheets side by side; the middle one cut short, the last not a raster."""
    folder = tmp_path / "sheets"
    folder.mkdir()
    img = texture((3, 256, 768), seed=7)
    for k, name in enumerate(("a.tif", "b.tif", "c.tif")):
        write(folder / name, img[:, :, 256 * k:256 * (k + 1)], x0=ORIGIN[0] + 256 * 0.2 * k)
    data = (folder / "b.tif").read_bytes()
    (folder / "b.tif").write_bytes(data[: len(data) // 2])
    return folder


def test_truncated_and_unopenable_sheets_are_listed_with_their_areas(sheets):
    (sheets / "c.tif").write_text("not a raster")
    found = {u.path.rsplit("/", 1)[-1]: u for u in find_unreadable_sheets(sheets)}
    assert sorted(found) == ["b.tif", "c.tif"]
    b = found["b.tif"]
    assert b.reason.startswith("truncated: tile ") and "ends at byte" in b.reason
    assert b.bounds == pytest.approx((ORIGIN[0] + 51.2, ORIGIN[1] - 51.2, ORIGIN[0] + 102.4, ORIGIN[1]))
    assert b.area_text().endswith("in EPSG:4549")
    assert found["c.tif"].bounds is None and "cannot open" in found["c.tif"].reason


def test_intact_and_sparse_tiffs_are_not_truncated(tmp_path):
    intact = write(tmp_path / "intact.tif", texture((3, 256, 256)))
    sparse = tmp_path / "sparse.tif"
    with rasterio.open(sparse, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8", tiled=True,
                       blockxsize=128, blockysize=128, sparse_ok=True, crs="EPSG:4549",
                       transform=rasterio.transform.from_origin(*ORIGIN, 0.2, 0.2)) as ds:
        ds.write(texture((3, 128, 128)), window=rasterio.windows.Window(0, 0, 128, 128))  # one tile of 16
    for path in (intact, sparse):
        with rasterio.open(path) as ds:
            assert tiff_truncation(ds, path) is None


def test_the_error_carries_the_sheets_and_pickles(sheets, tmp_path):
    with pytest.raises(InputFileError, match=r"b\.tif: sheet cannot be read \(truncated.*Replace it") as err:
        describe_epoch(sheets, work_dir=tmp_path / "w", label="after")
    assert isinstance(err.value, UnreadableSheetError) and isinstance(err.value, OSError)
    again = pickle.loads(pickle.dumps(err.value))  # as dask.distributed sends it back
    assert type(again) is UnreadableSheetError and str(again) == str(err.value)
    assert [u.path for u in again.sheets] == [str(sheets / "b.tif")]
    assert again.sheets[0].bounds == err.value.sheets[0].bounds


def test_skipping_unreadable_sheets_leaves_their_area_invalid_and_listed(sheets, tmp_path):
    info = describe_epoch(sheets, work_dir=tmp_path / "w", label="after", skip_unreadable=True)
    assert [u.path.rsplit("/", 1)[-1] for u in info.unreadable] == ["b.tif"]
    assert [s.rsplit("/", 1)[-1] for s in info.sheets] == ["a.tif", "c.tif"]
    assert (info.width, info.height) == (768, 256)
    data, valid = make_reader(info, plan_grid(info, info).grid, (1, 2, 3)).read(0, 0, 256, 768)
    assert valid[:, :256].all() and not valid[:, 256:512].any() and valid[:, 512:].all()
    assert not data[:, :, 256:512].any()


def test_a_sheet_whose_area_is_unknown_is_never_skipped(sheets, tmp_path):
    (sheets / "c.tif").write_text("not a raster")
    with pytest.raises(InputFileError, match=r"c\.tif: sheet cannot be read \(cannot open.*an unknown area"):
        describe_epoch(sheets, work_dir=tmp_path / "w", label="after", skip_unreadable=True)


def test_unprocessed_areas_are_the_skipped_sheets_on_the_grid(sheets, tmp_path):
    after = describe_epoch(sheets, work_dir=tmp_path / "w", label="after", skip_unreadable=True)
    before = describe_epoch(sheets / "a.tif", work_dir=tmp_path / "w", label="before")
    assert len(unprocessed_areas(before, after, plan_grid(before, after).grid)) == 0  # b.tif is off the grid
    whole = describe_epoch(write(tmp_path / "whole.tif", texture((3, 256, 768))), work_dir=tmp_path, label="before")
    grid = plan_grid(whole, after).grid
    areas = unprocessed_areas(whole, after, grid)
    assert list(areas["epoch"]) == ["after"] and areas["sheet"].iloc[0] == str(sheets / "b.tif")
    assert areas["reason"].iloc[0].startswith("truncated")
    assert areas.crs == grid.crs
    assert areas.geometry.iloc[0].bounds == pytest.approx((ORIGIN[0] + 51.2, ORIGIN[1] - 51.2, ORIGIN[0] + 102.4,
                                                           ORIGIN[1]))
    assert areas["area_m2"].iloc[0] == pytest.approx(51.2 * 51.2)


def test_vrt_sources_lists_each_sheet_once_in_order(tmp_path):
    """A mosaic VRT names each sheet once per band and mask: listed once, first-seen order,
    relative names resolved against the VRT's folder."""
    from imagery_watch.io.integrity import vrt_sources

    def source(name, relative):
        return (f'<SimpleSource><SourceFilename relativeToVRT="{int(relative)}">{name}</SourceFilename>'
                '<SourceBand>1</SourceBand></SimpleSource>')

    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}">' + source("/data/z.tif", False)
                    + source("a.tif", True) + "</VRTRasterBand>" for b in (1, 2, 3))
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="10" rasterYSize="10">{bands}</VRTDataset>')
    assert vrt_sources(vrt) == ["/data/z.tif", str(tmp_path / "a.tif")]
