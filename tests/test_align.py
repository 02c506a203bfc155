"""Tests of imagery_watch.align.measure_shift (misregistration of the after epoch)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from imagery_watch.align import measure_shift


def _textured(seed: int, shape=(3, 600, 600)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.normal(0, 1, shape), (0, 2, 2))
    return np.clip(120 + 40 * img / img.std(), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dy, dx", [(2, -1), (0, 3)])
def test_measures_the_displacement_the_same_with_any_number_of_threads(dy, dx):
    before = _textured(1)
    after = np.roll(before, (dy, dx), axis=(1, 2))  # after content sits (dy, dx) px further
    blocks = [(slice(r, r + 128), slice(c, c + 128)) for r in (20, 200, 400) for c in (30, 250, 420)]
    b = [before[:, r, c] for r, c in blocks]
    a = [after[:, r, c] for r, c in blocks]
    v = [np.ones((128, 128), bool)] * len(blocks)
    v[0] = np.zeros((128, 128), bool)  # an unusable block is left out
    one = measure_shift(b, a, v, workers=1)
    assert (one.dy, one.dx) == pytest.approx((dy, dx), abs=0.15)
    assert one.blocks_used == len(blocks) - 1
    assert measure_shift(b, a, v, workers=3) == one


def test_no_usable_block_means_no_shift():
    flat = np.full((3, 64, 64), 100, np.uint8)
    est = measure_shift([flat], [flat], [np.ones((64, 64), bool)], workers=2)
    assert (est.dy, est.dx, est.blocks_used) == (0.0, 0.0, 0)
