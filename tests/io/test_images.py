"""Plain image pairs: bands kept (NIR of 4-band TIFFs), alpha as transparency, files closed, bad images refused."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp

from imagery_watch.cli import main
from imagery_watch.errors import InputFileError
from imagery_watch.io.images import read_image


def texture(bands: int, size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(10, 245, size=(bands, size, size), dtype=np.uint8)


def write_tiff(path, data, *, dtype="uint8"):
    """A plain TIFF as GDAL writes it by default (a fourth 8-bit band is flagged as alpha)."""
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data.astype(dtype))
    return path


def read_closing(path):
    """``read_image(path, with_valid=True)``, checking that no file is left open."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = read_image(path, with_valid=True)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    return out


def test_four_band_tiff_keeps_nir(tmp_path):
    rgbn = texture(4)
    path = write_tiff(tmp_path / "rgbn.tif", rgbn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:  # GDAL's default flag, which must not make NIR alpha
            assert ds.colorinterp[3] == ColorInterp.alpha
    data, valid = read_closing(path)
    np.testing.assert_array_equal(data, rgbn)  # the fourth band is NIR, not alpha
    assert valid.all()


def test_tiff_with_an_alpha_band_gives_rgb_and_validity(tmp_path):
    rgba = texture(4)
    rgba[3] = 255
    rgba[3, :10] = 0
    path = write_tiff(tmp_path / "rgba.tif", rgba)
    data, valid = read_closing(path)
    np.testing.assert_array_equal(data, rgba[:3])
    assert not valid[:10].any() and valid[10:].all()


def test_png_alpha_is_transparency_not_nir(tmp_path):
    rgba = texture(4)
    rgba[3] = 255
    rgba[3, :, :7] = 0
    path = tmp_path / "rgba.png"
    Image.fromarray(np.moveaxis(rgba, 0, -1)).save(path)
    assert read_image(path).shape == (3, 96, 96)
    data, valid = read_closing(path)
    np.testing.assert_array_equal(data, rgba[:3])
    assert not valid[:, :7].any() and valid[:, 7:].all()


def test_palette_png_is_read_as_colour(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(np.moveaxis(texture(3), 0, -1)).convert("P").save(path)
    data, valid = read_image(path, with_valid=True)
    assert data.shape == (3, 96, 96) and data.dtype == np.uint8 and valid.all()


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, match", [
    (lambda p: write_tiff(p.with_suffix(".tif"), texture(3).astype("uint16") * 200, dtype="uint16"),
     r"uint16 image; expected 8-bit bands.*gdal_translate -ot Byte -scale"),
    (lambda p: Image.fromarray(texture(1)[0].astype(np.uint16) * 200).save(p.with_suffix(".png"))
     or p.with_suffix(".png"), r"I;16.* image \(more than 8 bits\).*gdal_translate -ot Byte"),
    (lambda p: Image.fromarray(texture(1)[0]).save(p.with_suffix(".png")) or p.with_suffix(".png"),
     r"greyscale image \(L\); expected a colour"),
    (lambda p: write_tiff(p.with_suffix(".tif"), texture(1)), r"greyscale image \(1 band"),
    (lambda p: write_tiff(p.with_suffix(".tif"), texture(6)), r"6 bands; expected 3 .* or 4 .*gdal_translate -b"),
    (lambda p: write_bytes(p.with_suffix(".png"), b"\x89PNG\r\n\x1a\n broken"), r"cannot read image"),
    (lambda p: write_bytes(p.with_suffix(".tif"), b"II*\x00 broken"), r"cannot read image"),
], ids=["16-bit-tiff", "16-bit-png", "grey-png", "grey-tiff", "six-bands", "broken-png", "broken-tiff"])
def test_images_that_cannot_be_used_are_refused_with_the_fix(tmp_path, make, match):
    path = make(tmp_path / "image")
    with pytest.raises(InputFileError, match=match) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_detect_pairs_runs_on_all_four_bands_of_rgbn_tiffs(tmp_path, monkeypatch, capsys):
    import imagery_watch.pairs as pairs

    seen = []
    real = pairs.detect_pair

    def spy(before, after, **kw):
        seen.append((before.shape, after.shape))
        return real(before, after, **kw)

    monkeypatch.setattr(pairs, "detect_pair", spy)
    for epoch, seed in (("before", 1), ("after", 2)):
        (tmp_path / epoch).mkdir()
        write_tiff(tmp_path / epoch / "pair.tif", texture(4, size=128, seed=seed))
    rc = main(["detect-pairs", str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(tmp_path / "masks"),
               "--pixel-size", "0.2"])
    assert rc == 0, capsys.readouterr().err
    assert seen == [((4, 128, 128), (4, 128, 128))]
    with Image.open(tmp_path / "masks" / "pair.png") as mask:
        assert mask.mode == "L" and mask.size == (128, 128)
