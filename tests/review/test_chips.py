"""Chips and tiles of a job whose after epoch is misregistered, and how a job folder is opened."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from shapely.geometry import box

from imagery_watch.align import measure_shift
from imagery_watch.errors import InputFileError, JobError
from imagery_watch.review.chips import _inner_window, chip_frame, read_frame, render_chip
from imagery_watch.review.job import open_job, shift_m_from_state
from imagery_watch.review.tiles import TileSource

from review_fixtures import ORIGIN, PIXEL_M, make_patches, write_job

#: the after content sits 3 rows lower and 2 columns further left than the before
SHIFT_ROWS, SHIFT_COLS = 3, -2


def _mosaic_paths(template_job) -> dict:
    inputs = json.loads((template_job / "job.json").read_text())["inputs"]
    return {"before": inputs["before_path"], "after": inputs["after_path"]}


@pytest.fixture(scope="module")
def shifted_pair(template_job, tmp_path_factory):
    """The before mosaic, and an after mosaic that is the same image displaced by the shift."""
    folder = tmp_path_factory.mktemp("shifted")
    with rasterio.open(_mosaic_paths(template_job)["before"]) as src:
        before = src.read(window=((0, 512), (0, 512)))
        profile = dict(driver="GTiff", width=512, height=512, count=3, dtype="uint8", crs=src.crs,
                       transform=src.transform, tiled=True, blockxsize=256,
                       blockysize=256)
    after = np.roll(before, (SHIFT_ROWS, SHIFT_COLS), axis=(1, 2))
    paths = {"before": folder / "before.tif", "after": folder / "after.tif"}
    for label, img in (("before", before), ("after", after)):
        with rasterio.open(paths[label], "w", **profile) as ds:
            ds.write(img)
    return paths, before, after


def _job(folder, paths, *, shift: dict | None):
    patch = box(ORIGIN[0] + 40, ORIGIN[1] - 62, ORIGIN[0] + 58, ORIGIN[1] - 44)  # well inside the 102 m square
    root = write_job(folder, paths, make_patches([patch], ["Nanhu"]))
    if shift is not None:
        state = json.loads((root / "job.json").read_text())
        state["fit"] = {"shift": dict(shift, blocks_used=9, spread_px=0.1)}
        (root / "job.json").write_text(json.dumps(state))
    return open_job(root), patch


def _chip(job, epoch, patch) -> np.ndarray:
    image = render_chip(job.mosaic(epoch), patch, crs=job.crs, size_px=256, outline=False)
    return np.asarray(image).astype(int)


def test_shift_convention_matches_the_detection_measurement(shifted_pair):
    """The pair's shift, measured the way the detection job measures it, is the one these tests record."""
    _paths, before, after = shifted_pair
    blocks = [(slice(40, 296), slice(40, 296)), (slice(200, 456), slice(180, 436))]
    est = measure_shift([before[:, r, c] for r, c in blocks], [after[:, r, c] for r, c in blocks],
                        [np.ones((256, 256), bool)] * len(blocks))
    assert (est.dy, est.dx) == pytest.approx((SHIFT_ROWS, SHIFT_COLS), abs=0.15)


def test_after_chip_applies_the_recorded_shift(shifted_pair, tmp_path):
    paths, _before, _after = shifted_pair
    job, patch = _job(tmp_path / "with_shift", paths, shift={"dy": float(SHIFT_ROWS), "dx": float(SHIFT_COLS)})
    assert job.after.shift_m == pytest.approx((SHIFT_COLS * PIXEL_M, -SHIFT_ROWS * PIXEL_M))
    assert job.before.shift_m == (0.0, 0.0)
    before_chip, after_chip = _chip(job, "before", patch), _chip(job, "after", patch)
    assert before_chip.std() > 5
    assert np.abs(after_chip - before_chip).max() <= 1  # the same ground under the same outline

    # without the recorded shift the after chip shows displaced ground
    plain, _ = _job(tmp_path / "without_shift", paths, shift=None)
    assert plain.after.shift_m == (0.0, 0.0)
    assert np.abs(_chip(plain, "after", patch) - before_chip).mean() > 5


def test_after_tiles_apply_the_recorded_shift(shifted_pair, tmp_path):
    paths, _before, _after = shifted_pair
    job, _patch = _job(tmp_path / "job", paths, shift={"dy": float(SHIFT_ROWS), "dx": float(SHIFT_COLS)})
    sources = {e: TileSource(job.mosaic(e)) for e in ("before", "after")}
    z = sources["before"].native_zoom
    lon0, lat0, lon1, lat1 = sources["before"].bounds_wgs84
    lon, lat = (lon0 + lon1) / 2, (lat0 + lat1) / 2
    n = 1 << z
    x = int((lon + 180) / 360 * n)
    y = int((1 - np.log(np.tan(np.radians(lat)) + 1 / np.cos(np.radians(lat))) / np.pi) / 2 * n)
    tiles = {e: np.asarray(Image.open(io.BytesIO(s.render(z, x, y)))).astype(int) for e, s in sources.items()}
    both = (tiles["before"][..., 3] == 255) & (tiles["after"][..., 3] == 255)
    assert both.sum() > 1000
    diff = np.abs(tiles["after"][..., :3] - tiles["before"][..., :3])[both]
    assert np.percentile(diff, 99) <= 2


def test_chip_windowed_read_agrees_with_warping_and_edges_are_no_data(shifted_pair, tmp_path):
    paths, _before, _after = shifted_pair
    job, patch = _job(tmp_path / "job", paths, shift={"dy": 0.5, "dx": -0.25})  # a fractional shift
    frame = chip_frame(patch, size_px=256)
    rgb, valid = read_frame(job.after, frame, crs=job.crs)  # inside the mosaic: one windowed read
    with rasterio.open(job.after.path) as ds, WarpedVRT(
            ds, crs=job.crs, transform=Affine.translation(*job.after.shift_m) @ frame.transform, width=256,
            height=256, resampling=Resampling.bilinear) as vrt:
        warped = vrt.read([1, 2, 3])
        assert _inner_window(ds, frame.transform, 256, job.crs) is not None
        assert _inner_window(ds, frame.transform, 256, "EPSG:32651") is None  # another CRS: warped
    assert valid.all()
    assert np.abs(rgb.astype(int) - warped).mean() < 0.5
    # a patch on the mosaic's corner: the square reaches outside, which is no data
    corner = box(ORIGIN[0] - 5, ORIGIN[1] - 5, ORIGIN[0] + 5, ORIGIN[1] + 5)
    with rasterio.open(job.before.path) as ds:
        assert _inner_window(ds, chip_frame(corner, size_px=256).transform, 256, job.crs) is None
    rgb, valid = read_frame(job.before, chip_frame(corner, size_px=256), crs=job.crs)
    assert 0.15 < valid.mean() < 0.35  # about the quarter of the square that lies on the mosaic
    assert not valid[:100, :100].any() and valid[-100:, -100:].all()
    chip = np.asarray(render_chip(job.before, corner, crs=job.crs, size_px=256, outline=False))
    assert (chip[:100, :100] == (96, 96, 96)).all()


def test_shift_from_job_state():
    state = {"grid": {"transform": [0.2, 0.0, 652000.0, 0.0, -0.2, 3411000.0]},
             "fit": {"shift": {"dy": -0.3, "dx": 0.4, "blocks_used": 17, "spread_px": 0.5}}}
    # content 0.3 px higher (north, +y) and 0.4 px further east (+x)
    assert shift_m_from_state(state) == pytest.approx((0.08, 0.06))
    assert shift_m_from_state({"grid": state["grid"]}) == (0.0, 0.0)
    with pytest.raises(JobError, match="fit.shift or grid.transform is malformed"):
        shift_m_from_state({"grid": {}, "fit": {"shift": {"dy": 1}}})


def test_mosaic_paths_recorded_relative_to_where_the_job_ran(shifted_pair, tmp_path, monkeypatch):
    """``detect --out out/sample`` records ``out/sample/work/before.vrt``: relative to the run's folder."""
    paths, _before, _after = shifted_pair
    root = tmp_path / "runs" / "job"
    (root / "work").mkdir(parents=True)
    for label, p in paths.items():
        (root / "work" / f"{label}.tif").write_bytes(p.read_bytes())
    write_job(root, paths, make_patches([box(ORIGIN[0] + 40, ORIGIN[1] - 62, ORIGIN[0] + 58, ORIGIN[1] - 44)],
                                        ["Nanhu"]))
    state = json.loads((root / "job.json").read_text())
    state["inputs"].update(before_path="runs/job/work/before.tif", after_path="runs/job/work/after.tif")
    (root / "job.json").write_text(json.dumps(state))
    monkeypatch.chdir(tmp_path)  # where the job ran
    assert open_job("runs/job").before.path == str((tmp_path / "runs/job/work/before.tif").resolve())
    monkeypatch.chdir(root.parent)  # elsewhere: the job's own work/ folder holds them
    assert open_job("job").after.path == str((root / "work" / "after.tif").resolve())
    state["inputs"]["after_path"] = "elsewhere/after.tif"
    (root / "job.json").write_text(json.dumps(state))
    with pytest.raises(InputFileError, match="after mosaic named in job.json is missing"):
        open_job(root)

