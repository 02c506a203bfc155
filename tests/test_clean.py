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
