"""Reading epochs: files, folders of sheets, masks, windows beyond the edge, bad inputs."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from imagery_watch.align import make_reader, plan_grid
from imagery_watch.errors import GridMismatchError, InputFileError
from imagery_watch.io.rasters import build_mosaic_vrt, describe_epoch

ORIGIN = (650_000.0, 3_410_000.0)


def texture(shape, seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = rng.integers(20, 235, size=shape).astype(np.uint8)
    return np.stack([ndimage.uniform_filter(b, 3) for b in img])


def write(path, data, *, x0=ORIGIN[0], y0=ORIGIN[1], res=0.2, crs="EPSG:4549", jpeg=False, invalid_rows=0,
          dtype="uint8", internal_mask=True):
    count, h, w = data.shape
    prof = dict(driver="GTiff", width=w, height=h, count=count, dtype=dtype,
                transform=from_origin(x0, y0, res, res), tiled=True, blockxsize=128, blockysize=128)
    if crs:
        prof["crs"] = crs
    if jpeg:
        prof.update(compress="jpeg", photometric="ycbcr")
    else:
        prof.update(compress="deflate", nodata=0)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=internal_mask):
        with rasterio.open(path, "w", **prof) as ds:
            out = data.copy()
            if invalid_rows and not jpeg:
                out[:, :invalid_rows] = 0
            ds.write(out)
            if jpeg:
                m = np.full((h, w), 255, np.uint8)
                m[:invalid_rows] = 0
                ds.write_mask(m)
    return path


@pytest.mark.parametrize("jpeg", [False, True])
def test_folder_of_sheets_becomes_one_mosaic_with_masks(tmp_path, jpeg):
    img = texture((3, 256, 512))
    (tmp_path / "sheets").mkdir()
    write(tmp_path / "sheets" / "a.tif", img[:, :, :256], jpeg=jpeg, invalid_rows=40)
    write(tmp_path / "sheets" / "b.tif", img[:, :, 256:], x0=ORIGIN[0] + 256 * 0.2, jpeg=jpeg, invalid_rows=40)
    info = describe_epoch(tmp_path / "sheets", work_dir=tmp_path / "work", label="before")
    assert (info.width, info.height, info.count) == (512, 256, 3)
    assert len(info.sheets) == 2
    grid = plan_grid(info, info).grid
    data, valid = make_reader(info, grid, (1, 2, 3)).read(-8, -8, 272, 528)
    assert data.shape == (3, 272, 528)
    # outside the raster and in the masked margin: invalid; elsewhere valid
    assert not valid[:48].any() and not valid[:, :8].any() and not valid[:, -8:].any()
    assert valid[48:264, 8:520].all()
    if not jpeg:
        np.testing.assert_array_equal(data[:, 48:264, 8:520], img[:, 40:, :])


@pytest.mark.parametrize("folder", [True, False])
def test_side_car_masks_are_read_with_the_jobs_settings(tmp_path, folder):
    # masks in .msk side-car files (GDAL_TIFF_INTERNAL_MASK=NO), opened for the first time
    # under the settings of the job's reads (OPEN_ENV: GDAL told not to list folders)
    from imagery_watch.io.integrity import OPEN_ENV

    img = texture((3, 256, 512), seed=5)
    (tmp_path / "sheets").mkdir()
    write(tmp_path / "sheets" / "a.tif", img[:, :, :256], jpeg=True, invalid_rows=40, internal_mask=False)
    write(tmp_path / "sheets" / "b.tif", img[:, :, 256:], x0=ORIGIN[0] + 256 * 0.2, jpeg=True, invalid_rows=40,
          internal_mask=False)
    assert (tmp_path / "sheets" / "a.tif.msk").exists()
    epoch = tmp_path / "sheets" if folder else tmp_path / "sheets" / "a.tif"
    with rasterio.Env(**OPEN_ENV):
        info = describe_epoch(epoch, work_dir=tmp_path / "work", label="before")
        data, valid = make_reader(info, plan_grid(info, info).grid, (1, 2, 3)).read(0, 0, info.height, info.width)
    assert not valid[:40].any() and valid[40:].all()


def test_sheets_are_checked_in_batches_through_a_mapper(tmp_path):
    # how a cluster's workers open the sheets: describe_epoch hands batches to ``mapper``
    img = texture((3, 128, 512), seed=6)
    (tmp_path / "sheets").mkdir()
    for k in range(4):
        write(tmp_path / "sheets" / f"s{k}.tif", img[:, :, 128 * k:128 * (k + 1)], x0=ORIGIN[0] + 128 * k * 0.2)
    calls = []

    def one_by_one(func, items):
        calls.append(len(items))
        return [func([item]) for item in items]

    plain = describe_epoch(tmp_path / "sheets", work_dir=tmp_path / "w1", label="before")
    mapped = describe_epoch(tmp_path / "sheets", work_dir=tmp_path / "w2", label="before", mapper=one_by_one)
    assert calls == [4]
    assert (mapped.width, mapped.height) == (plain.width, plain.height) == (512, 128)
    assert mapped.sheets == plain.sheets and len(plain.sheets) == 4
    # a worker that does not see the files (another mount): a set-up fault, never sheets to leave out
    def unseen(func, items):
        hidden = tmp_path / "hidden"
        (tmp_path / "sheets").rename(hidden)
        try:
            return [func(items)]
        finally:
            hidden.rename(tmp_path / "sheets")

    for epoch in (tmp_path / "sheets", tmp_path / "w2" / "before.vrt"):
        with pytest.raises(InputFileError, match=r"s0.tif: opens in the job's process but not on a worker.*"
                                                 r"\(3 more like it\).*same paths"):
            describe_epoch(epoch, work_dir=tmp_path / "w4", label="before", skip_unreadable=True, mapper=unseen)
    # the sources of a VRT epoch too, and a truncated one is named whichever batch holds it
    (tmp_path / "sheets" / "s2.tif").write_bytes((tmp_path / "sheets" / "s2.tif").read_bytes()[:3000])
    with pytest.raises(InputFileError, match="s2.tif: a source of before.vrt cannot be read"):
        describe_epoch(tmp_path / "w2" / "before.vrt", work_dir=tmp_path / "w3", label="before", mapper=one_by_one)
    assert calls == [4, 4]


def test_reader_window_matches_file(tmp_path):
    img = texture((3, 300, 300), seed=3)
    info = describe_epoch(write(tmp_path / "a.tif", img), work_dir=tmp_path, label="before")
    grid = plan_grid(info, info).grid
    data, valid = make_reader(info, grid, (3, 2, 1)).read(10, 20, 50, 60)
    np.testing.assert_array_equal(data, img[::-1, 10:60, 20:80])
    assert valid.all()


def test_integer_shift_read_equals_offset_window(tmp_path):
    img = texture((3, 200, 200), seed=4)
    info = describe_epoch(write(tmp_path / "a.tif", img), work_dir=tmp_path, label="after")
    grid = plan_grid(info, info).grid
    shifted, _ = make_reader(info, grid, (1, 2, 3), shift_rc=(2, -3)).read(50, 50, 40, 40)
    np.testing.assert_array_equal(shifted, img[:, 52:92, 47:87])


def test_warped_read_of_other_crs_is_georeferenced(tmp_path):
    img = texture((3, 400, 400), seed=5)
    before = describe_epoch(write(tmp_path / "b.tif", img), work_dir=tmp_path, label="before")
    # the same image, georeferenced in EPSG:4528 (zone number in the easting)
    after = describe_epoch(write(tmp_path / "a.tif", img, x0=ORIGIN[0] + 40_000_000, crs="EPSG:4528"),
                           work_dir=tmp_path, label="after")
    plan = plan_grid(before, after)
    assert plan.after_warped and not plan.before_warped
    assert any("warped" in n for n in plan.notes)
    a, va = make_reader(after, plan.grid, (1, 2, 3)).read(100, 100, 100, 100)
    b, _ = make_reader(before, plan.grid, (1, 2, 3)).read(100, 100, 100, 100)
    assert va.all()
    assert np.abs(a.astype(int) - b).mean() < 1.0


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match=r"nope\.tif: before epoch not found.*inputs\.before"):
        describe_epoch(tmp_path / "nope.tif", work_dir=tmp_path, label="before")


def test_corrupt_file(tmp_path):
    path = write(tmp_path / "a.tif", texture((3, 256, 256)))
    data = path.read_bytes()
    path.write_bytes(data[:200])
    with pytest.raises(InputFileError, match=r"a\.tif: cannot open"):
        describe_epoch(path, work_dir=tmp_path, label="before")


def test_no_crs(tmp_path):
    path = write(tmp_path / "a.tif", texture((3, 64, 64)), crs=None)
    with pytest.raises(GridMismatchError, match=r"a\.tif: before epoch has no CRS.*gdal_edit"):
        describe_epoch(path, work_dir=tmp_path, label="before")


def test_sixteen_bit(tmp_path):
    path = write(tmp_path / "a.tif", texture((3, 64, 64)).astype("uint16") * 100, dtype="uint16")
    with pytest.raises(InputFileError, match=r"uint16.*8-bit.*gdal_translate"):
        describe_epoch(path, work_dir=tmp_path, label="after")


def test_too_few_bands(tmp_path):
    path = write(tmp_path / "a.tif", texture((2, 64, 64)))
    with pytest.raises(GridMismatchError, match="2 band"):
        describe_epoch(path, work_dir=tmp_path, label="after")


def test_sheet_in_other_crs_is_named(tmp_path):
    (tmp_path / "s").mkdir()
    write(tmp_path / "s" / "a.tif", texture((3, 64, 64)))
    write(tmp_path / "s" / "b.tif", texture((3, 64, 64)), crs="EPSG:32651", x0=300_000)
    with pytest.raises(GridMismatchError, match=r"b\.tif: CRS .* differs"):
        build_mosaic_vrt(tmp_path / "s", tmp_path / "m.vrt")


def test_empty_folder(tmp_path):
    (tmp_path / "s").mkdir()
    with pytest.raises(InputFileError, match="no raster sheets"):
        describe_epoch(tmp_path / "s", work_dir=tmp_path, label="before")


def test_no_overlap(tmp_path):
    b = describe_epoch(write(tmp_path / "b.tif", texture((3, 64, 64))), work_dir=tmp_path, label="before")
    a = describe_epoch(write(tmp_path / "a.tif", texture((3, 64, 64)), x0=ORIGIN[0] + 1000), work_dir=tmp_path,
                       label="after")
    with pytest.raises(GridMismatchError, match="do not overlap"):
        plan_grid(b, a)


def test_partial_overlap_is_processed_and_reported(tmp_path):
    b = describe_epoch(write(tmp_path / "b.tif", texture((3, 100, 100))), work_dir=tmp_path, label="before")
    a = describe_epoch(write(tmp_path / "a.tif", texture((3, 100, 100)), x0=ORIGIN[0] + 10), work_dir=tmp_path,
                       label="after")
    plan = plan_grid(b, a)
    assert (plan.grid.width, plan.grid.height) == (50, 100)
    assert any("partial overlap" in n for n in plan.notes)


@pytest.mark.parametrize("relative", [False, True])
def test_large_mosaics_are_read_through_parts_with_the_same_pixels(tmp_path, monkeypatch, relative):
    """A VRT of many sheets is opened, per window, as a VRT of the sheets around it: the
    same pixels and masks as the whole mosaic, and only a few sheets held open."""
    from imagery_watch.io import rasters

    monkeypatch.setattr(rasters, "PART_MIN_SOURCES", 8)
    monkeypatch.setattr(rasters, "PART_GROW_PX", 64)
    img = texture((3, 384, 512), seed=5)
    (tmp_path / "sheets").mkdir()
    for i in range(3):
        for j in range(4):
            write(tmp_path / "sheets" / f"s{i}{j}.tif", img[:, 128 * i:128 * (i + 1), 128 * j:128 * (j + 1)],
                  x0=ORIGIN[0] + 128 * 0.2 * j, y0=ORIGIN[1] - 128 * 0.2 * i, jpeg=True, invalid_rows=9 * i)
    info = describe_epoch(tmp_path / "sheets", work_dir=tmp_path / "work", label="before")
    path = info.path
    if relative:  # sheets named relative to the VRT: the parts (not files) must still find them
        text = open(path).read().replace(f'relativeToVRT="0">{tmp_path}/sheets/', 'relativeToVRT="1">../sheets/')
        assert 'relativeToVRT="1"' in text
        path = str(tmp_path / "work" / "relative.vrt")
        open(path, "w").write(text)
        info = describe_epoch(path, work_dir=tmp_path / "work", label="before")
    grid = plan_grid(info, info).grid
    reader = make_reader(info, grid, (1, 2, 3))
    with rasterio.open(path) as whole:
        full = whole.read([1, 2, 3], boundless=True, window=((-10, 394), (-10, 522)), fill_value=0)
        mask = whole.dataset_mask()
    for r0, c0, h, w in [(-10, -10, 100, 150), (200, 300, 184, 212), (100, 0, 64, 512), (0, 250, 384, 30)]:
        data, valid = reader.read(r0, c0, h, w)
        np.testing.assert_array_equal(data, full[:, r0 + 10:r0 + 10 + h, c0 + 10:c0 + 10 + w])
        inside = valid[max(0, -r0):, max(0, -c0):]
        np.testing.assert_array_equal(inside, mask[max(r0, 0):r0 + h, max(c0, 0):c0 + w] > 0)
    held = rasters._THREAD.datasets[path]
    assert 1 <= len(held) <= rasters.PARTS_KEPT and all(part is not None for _, part, _ in held)
    assert all(0 < len(ds.files) < 12 for _, _, ds in held), [len(ds.files) for _, _, ds in held]  # fewer sheets than 12
