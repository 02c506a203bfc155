"""Radiometric normalisation: recovers a global gain/gamma, ignores changed pixels."""

import numpy as np
from scipy import ndimage

from imagery_watch.normalise import Normalisation, apply_normalisation, fit_normalisation


def scene(seed=0, shape=(3, 256, 256)):
    rng = np.random.default_rng(seed)
    img = rng.integers(10, 245, size=shape).astype(np.float32)
    return np.clip(np.stack([ndimage.gaussian_filter(b, 2) * 3 - 250 for b in img]), 1, 255).astype(np.uint8)


def test_identity_for_identical_epochs():
    before = scene()
    valid = np.ones(before.shape[1:], bool)
    norm = fit_normalisation([before], [before.copy()], [valid])
    out = apply_normalisation(before, norm)
    assert np.abs(out.astype(int) - before).max() <= 1


def test_recovers_gain_offset_and_gamma_despite_changes():
    before = scene(1)
    after = (255 * (before / 255.0) ** 0.8 * 0.9 + 12).clip(0, 255).astype(np.uint8)
    after[:, :60, :60] = 250  # a changed area (new bright roofs)
    valid = np.ones(before.shape[1:], bool)
    original = after.copy()
    norm = fit_normalisation([before], [after], [valid])
    np.testing.assert_array_equal(after, original)  # input not modified
    out = apply_normalisation(after, norm)
    unchanged = np.ones(before.shape[1:], bool)
    unchanged[:60, :60] = False
    err = np.abs(out.astype(int) - before)[:, unchanged]
    assert np.median(err) <= 2
    assert np.abs(after.astype(int) - before)[:, unchanged].mean() > 3 * err.mean()


def test_round_trip_dict():
    norm = Normalisation.identity(4)
    assert Normalisation.from_dict(norm.to_dict()) == norm
