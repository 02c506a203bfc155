"""Tests of imagery_watch.blocks: one helper, numpy and Dask agree for any chunking."""

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from imagery_watch.blocks import is_lazy, map_blocks_with_halo
from imagery_watch.features import box_sum


def _kernel(img, valid, *, radius):
    return box_sum(img[1], radius=radius, dtype=np.uint32) * valid


def _stack(img, valid):
    return np.stack([img[0], valid.astype(np.uint8)])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, 50, 61), dtype=np.uint8), rng.random((50, 61)) > 0.1


def test_numpy_input_calls_kernel_once(data):
    img, valid = data
    out = map_blocks_with_halo(_kernel, img, valid, halo_px=3, dtype=np.uint32, radius=3)
    assert isinstance(out, np.ndarray)
    assert np.array_equal(out, _kernel(img, valid, radius=3))


@pytest.mark.parametrize("chunks", [(7, 9), (3, 3), (13, 20), (50, 61), (49, 1)])
def test_dask_matches_numpy_for_awkward_chunks(data, chunks):
    img, valid = data
    ref = _kernel(img, valid, radius=3)
    lazy = map_blocks_with_halo(_kernel, da.from_array(img, chunks=(1,) + chunks),
                                da.from_array(valid, chunks=chunks), halo_px=3, dtype=np.uint32, radius=3)
    assert is_lazy(lazy)
    assert np.array_equal(lazy.compute(scheduler="sync"), ref)


def test_multiband_output_and_xarray_input(data):
    img, valid = data
    lazy = map_blocks_with_halo(_stack, da.from_array(img, chunks=(1, 7, 9)),
                                xr.DataArray(da.from_array(valid, chunks=(11, 5)), dims=("y", "x")),
                                halo_px=2, dtype=np.uint8, out_bands=2)
    assert lazy.shape == (2, 50, 61)
    assert np.array_equal(lazy.compute(scheduler="sync"), _stack(img, valid))


def test_mismatched_shapes_raise(data):
    img, valid = data
    with pytest.raises(ValueError, match="share the"):
        map_blocks_with_halo(_kernel, img, valid[:10], halo_px=1, dtype=np.uint32, radius=1)
