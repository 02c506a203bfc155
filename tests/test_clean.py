"""Tests of imagery_watch.clean: morphology, bounded hole filling, halo exactness."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from imagery_watch.clean import clean_halo_px, clean_mask, close_mask, fill_small_holes, open_mask


def test_opening_removes_speckle_and_keeps_blocks():
    m = np.zeros((30, 30), bool)
    m[5, 5] = True
    m[10:20, 10:20] = True
    out = open_mask(m, radius=1)
    assert not out[5, 5] and out[10:20, 10:20].all() and out.sum() == 100


def test_closing_bridges_a_gap():
    m = np.zeros((20, 30), bool)
    m[5:15, 5:14] = True
    m[5:15, 15:25] = True
    assert close_mask(m, radius=1)[5:15, 14].all()


def test_hole_filling_is_bounded_by_extent():
    m = np.zeros((40, 40), bool)
    m[5:35, 5:35] = True
    m[10:13, 10:13] = False  # small hole
    m[15:30, 15:30] = False  # large hole
    out = fill_small_holes(m, max_extent_px=5)
    assert out[10:13, 10:13].all() and not out[15:30, 15:30].any()
    edge = np.zeros((10, 10), bool)
    edge[:, 3:] = True
    edge[0, 5] = False  # touches the border: not a hole
    assert not fill_small_holes(edge, max_extent_px=5)[0, 5]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(8, 30), st.integers(8, 30))
def test_halo_makes_tiles_exact(seed, ty, tx):
    rng = np.random.default_rng(seed)
    m = rng.random((70, 80)) > 0.45
    kw = dict(open_px=1, close_px=1, hole_px=4)
    whole = clean_mask(m, **kw)
    h = clean_halo_px(**kw)
    for y0 in range(0, 70, ty):
        for x0 in range(0, 80, tx):
            y1, x1 = min(70, y0 + ty), min(80, x0 + tx)
            ya, xa = max(0, y0 - h), max(0, x0 - h)
            part = clean_mask(m[ya:y1 + h, xa:x1 + h], **kw)
            assert np.array_equal(part[y0 - ya:y1 - ya, x0 - xa:x1 - xa], whole[y0:y1, x0:x1])


def test_empty_mask_and_input_unchanged():
    m = np.zeros((5, 5), bool)
    assert not clean_mask(m, open_px=1, close_px=1, hole_px=3).any()
    m[1:4, 1:4] = True
    keep = m.copy()
    clean_mask(m, open_px=1, close_px=1, hole_px=3)
    assert np.array_equal(m, keep)


def _holes_reference(mask, max_extent):
    """Background regions (4-connected) off the border whose bounding box fits, by labelling."""
    from scipy import ndimage as ndi

    labels, _ = ndi.label(~mask)
    out = mask.copy()
    h, w = mask.shape
    for k, (ys, xs) in enumerate(ndi.find_objects(labels), start=1):
        if ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w:
            continue
        if ys.stop - ys.start <= max_extent and xs.stop - xs.start <= max_extent:
            out[labels == k] = True
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 1.0),
       st.integers(1, 8))
def test_fill_small_holes_matches_labelling(seed, ny, nx, density, extent):
    """Sparse to dense masks: holes next to the border, holes that touch a large region
    diagonally only, regions just above the extent."""
    m = np.random.default_rng(seed).random((ny, nx)) < density
    np.testing.assert_array_equal(fill_small_holes(m, max_extent_px=extent), _holes_reference(m, extent))


def test_fill_small_holes_of_shapes_and_strided_masks():
    m = np.zeros((30, 40), bool)
    m[2:12, 2:12] = True
    m[4:6, 4:7] = False  # 2 x 3: filled with extent 3, not 2
    m[8, 8] = False  # 1 x 1
    m[15:25, 15:25] = True
    m[16:24, 16:24] = False  # 8 x 8 ring interior
    m[19, 19] = True
    m[0, 30:33] = True
    m[1, 29] = m[1, 33] = m[2, 30:33] = True
    m[1, 30:33] = False  # 1 x 3, enclosed but one row below the border
    for extent in (1, 2, 3, 8):
        want = _holes_reference(m, extent)
        np.testing.assert_array_equal(fill_small_holes(m, max_extent_px=extent), want)
        strided = np.repeat(m, 2, axis=1)[:, ::2]
        np.testing.assert_array_equal(fill_small_holes(strided, max_extent_px=extent), want)
    assert fill_small_holes(m, max_extent_px=3)[4:6, 4:7].all()
    assert not fill_small_holes(m, max_extent_px=2)[4:6, 4:7].any()
    assert fill_small_holes(m, max_extent_px=8)[16:24, 16:24].all()
