"""Tests of imagery_watch.features: exact window sums, references, halos."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from imagery_watch.features import (box_max, box_min, box_sum, compute_features, features_halo_px,
                                    local_roughness, local_std, luminance, radius_px)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 4), st.integers(0, 2**32 - 1))
def test_box_ops_match_scipy(ny, nx, r, seed):
    a = np.random.default_rng(seed).integers(0, 256, (ny, nx), dtype=np.uint8)
    k = 2 * r + 1
    ref = ndi.correlate(a.astype(np.int64), np.ones((k, k)), mode="nearest")
    assert np.array_equal(box_sum(a, radius=r, dtype=np.uint32), ref)
    assert np.array_equal(box_max(a, radius=r), ndi.maximum_filter(a, size=k, mode="nearest"))
    assert np.array_equal(box_min(a, radius=r), ndi.minimum_filter(a, size=k, mode="nearest"))


def test_local_std_matches_float64():
    a = np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8)
    f = a.astype(np.float64)
    m = ndi.uniform_filter(f, 7, mode="nearest")
    ref = np.sqrt(np.maximum(ndi.uniform_filter(f * f, 7, mode="nearest") - m * m, 0))
    assert np.allclose(local_std(a, radius=3), ref, atol=0.05)


def test_roughness_is_low_on_a_step_edge_and_high_on_texture():
    rng = np.random.default_rng(2)
    step = np.full((40, 40), 60, np.uint8)
    step[:, 20:] = 140
    noise = rng.integers(40, 160, (40, 40), dtype=np.uint8)
    assert local_roughness(step, radius=5)[20, 20] < 0.25 * local_roughness(noise, radius=5)[20, 20]
    assert local_std(step, radius=5)[20, 20] > 30


def test_features_of_known_colours():
    img = np.zeros((4, 8, 8), np.uint8)
    img[:3] = np.array([60, 120, 40], np.uint8)[:, None, None]
    img[3] = 200
    f = compute_features(img, smooth_px=1, texture_px=2)
    assert np.allclose(f.brightness, 220 / 3)
    assert np.allclose(f.green, 120 / 220)
    assert np.allclose(f.exg, 3 * 120 / 220 - 1)
    assert np.allclose(f.saturation, 80 / 120)
    assert np.allclose(f.ndvi, 140 / 260)
    assert np.allclose(f.texture, 0)
    assert compute_features(img[:3], smooth_px=1, texture_px=2).ndvi is None
    assert all(a.dtype == np.float32 for a in (f.brightness, f.red, f.exg, f.texture, f.ndvi))


def test_features_halo_gives_exact_tiles_and_inputs_unchanged():
    img = np.random.default_rng(3).integers(0, 256, (3, 60, 70), dtype=np.uint8)
    keep = img.copy()
    whole = compute_features(img, smooth_px=1, texture_px=4)
    assert np.array_equal(img, keep)
    h = features_halo_px(smooth_px=1, texture_px=4)
    y0, y1, x0, x1 = 17, 41, 23, 52
    part = compute_features(img[:, y0 - h:y1 + h, x0 - h:x1 + h], smooth_px=1, texture_px=4)
    for name in ("brightness", "red", "green", "exg", "saturation", "texture"):
        assert np.array_equal(getattr(whole, name)[y0:y1, x0:x1], getattr(part, name)[h:-h, h:-h]), name


def test_luminance_and_radius():
    img = np.array([[[10]], [[20]], [[30]]], np.uint8)
    assert luminance(img)[0, 0] == (10 + 40 + 30 + 2) // 4
    assert radius_px(1.0, 0.2) == 5 and radius_px(0.01, 0.2) == 1 and radius_px(0, 0.2) == 0
    with pytest.raises(ValueError, match="pixel_size_m"):
        radius_px(1.0, 0)
    with pytest.raises(ValueError, match="uint8"):
        compute_features(img.astype(np.uint16), smooth_px=1, texture_px=1)


def test_block_std_is_the_luminance_std_of_each_block_and_tiles_exactly():
    from imagery_watch.features import block_std

    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (3, 37, 50), dtype=np.uint8)
    out = block_std(img, 4)
    assert out.shape == (10, 13)
    lum = luminance(img).astype(np.float64)
    for by, bx in ((0, 0), (3, 7), (8, 11)):
        block = lum[4 * by:4 * by + 4, 4 * bx:4 * bx + 4]
        assert out[by, bx] == pytest.approx(block.std(), abs=1e-4)
    # a window whose origin is on the block lattice gives the same blocks
    part = block_std(img[:, 8:32, 12:44], 4)
    assert np.array_equal(part, out[2:8, 3:11])
    assert not block_std(img, 1).any()


def test_block_mean_rounds_block_means_and_pads_edges():
    from imagery_watch.features import block_all, block_mean, upsample

    img = np.arange(3 * 6 * 6, dtype=np.uint8).reshape(3, 6, 6)
    out = block_mean(img, 4)
    assert out.shape == (3, 2, 2)
    assert out[0, 0, 0] == int(img[0, :4, :4].mean() + 0.5)  # halves round up
    valid = np.ones((6, 6), bool)
    valid[5, 5] = False
    assert block_all(valid, 2).tolist() == [[True] * 3, [True] * 3, [True, True, False]]
    assert upsample(out[0], 4, (6, 6)).shape == (6, 6)


@pytest.mark.parametrize("shape, factor", [((3, 64, 64), 4), ((4, 37, 53), 4), ((3, 20, 22), 3), ((3, 9, 9), 1)])
def test_block_stats_equals_block_mean_and_block_std_of_the_mapped_image(shape, factor):
    """The fused compiled pass gives the numpy results bit for bit, partial edge blocks included."""
    from imagery_watch.features import block_mean, block_stats, block_std, map_bands

    rng = np.random.default_rng(sum(shape) + factor)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    lut = rng.integers(0, 256, (shape[0], 256), dtype=np.uint8)
    mean, std = block_stats(img, factor, lut)
    mapped = map_bands(img, lut)
    np.testing.assert_array_equal(mean, block_mean(mapped, factor))
    np.testing.assert_array_equal(std, block_std(mapped, factor))
    mean, std = block_stats(img, factor)
    np.testing.assert_array_equal(mean, block_mean(img, factor))
    np.testing.assert_array_equal(std, block_std(img, factor))
    assert (std > 0).any() or factor == 1


@pytest.mark.parametrize("shape", [(16, 24), (17, 23)])
@pytest.mark.parametrize("kind", ["random", "all", "none"])
def test_block_count_all_and_majority(shape, kind):
    """Exact counts per 4 x 4 block (edge blocks padded with False), uniform masks included."""
    from imagery_watch.features import block_all, block_count, block_majority

    rng = np.random.default_rng(5)
    mask = {"random": rng.random(shape) < 0.5, "all": np.ones(shape, bool), "none": np.zeros(shape, bool)}[kind]
    padded = np.zeros((-(-shape[0] // 4) * 4, -(-shape[1] // 4) * 4), bool)
    padded[:shape[0], :shape[1]] = mask
    want = padded.reshape(padded.shape[0] // 4, 4, padded.shape[1] // 4, 4).sum(axis=(1, 3))
    count = block_count(mask, 4)
    assert count.dtype == np.uint16
    np.testing.assert_array_equal(count, want)
    np.testing.assert_array_equal(block_all(mask, 4), want == 16)
    np.testing.assert_array_equal(block_majority(mask, 4), want >= 8)


def test_block_average_is_the_float_mean_of_edge_padded_blocks_on_any_leading_axes():
    from imagery_watch.features import block_average

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (3, 10, 7)).astype(np.uint8)
    out = block_average(img, 4)
    assert out.shape == (3, 3, 2) and out.dtype == np.float32
    padded = np.pad(img.astype(np.float64), ((0, 0), (0, 2), (0, 1)), mode="edge")
    for b, i, j in np.ndindex(out.shape):
        assert np.isclose(out[b, i, j], padded[b, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean())
    assert np.array_equal(block_average(img[0].astype(np.float32), 4), out[0])


def _edge_blocks(a, factor, fill=None):
    """Plain numpy reference: (..., ny/f, f, nx/f, f) blocks of ``a`` padded to multiples
    of ``factor`` (edge pixels repeated, or ``fill``)."""
    py, px = -a.shape[-2] % factor, -a.shape[-1] % factor
    pad = [(0, 0)] * (a.ndim - 2) + [(0, py), (0, px)]
    a = np.pad(a, pad, mode="edge") if fill is None else np.pad(a, pad, constant_values=fill)
    ny, nx = a.shape[-2:]
    return a.reshape(a.shape[:-2] + (ny // factor, factor, nx // factor, factor)).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.uint32, bool])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (5, 3), (23, 31)])
@pytest.mark.parametrize("r", [1, 2, 3, 10])
def test_box_ops_of_every_integer_dtype_match_scipy(dtype, shape, r):
    """The compiled kernels: edge padding (windows wider than the array too), int16 min and
    max, sums that wrap in the accumulator like numpy's, bool masks, strided inputs."""
    rng = np.random.default_rng(r + sum(shape))
    if dtype is bool:
        a = rng.random(shape) < 0.5
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    k = 2 * r + 1
    for arr in (a, np.repeat(a, 2, axis=1)[:, ::2]):  # contiguous and strided
        assert np.array_equal(box_max(arr, radius=r), ndi.maximum_filter(a, size=k, mode="nearest"))
        assert np.array_equal(box_min(arr, radius=r), ndi.minimum_filter(a, size=k, mode="nearest"))
        assert box_max(arr, radius=r).dtype == a.dtype
        exact = ndi.correlate(a.astype(np.int64), np.ones((k, k), np.int64), mode="nearest")
        for out in (np.uint16, np.int32, np.uint32):
            got = box_sum(arr, radius=r, dtype=out)
            assert got.dtype == out
            assert np.array_equal(got, exact.astype(out)), out  # modulo 2**bits, as numpy wraps


def test_box_ops_of_floats_keep_the_numpy_passes():
    a = np.random.default_rng(9).random((12, 17)).astype(np.float32)
    assert np.array_equal(box_max(a, radius=2), ndi.maximum_filter(a, size=5, mode="nearest"))
    assert np.allclose(box_sum(a, radius=1, dtype=np.float32),
                       ndi.correlate(a.astype(np.float64), np.ones((3, 3)), mode="nearest"), atol=1e-5)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("shape", [(3, 16, 24), (4, 17, 23), (3, 1, 1), (4, 7, 41), (3, 33, 5)])
def test_block_stats_and_block_mean_match_a_plain_numpy_reference(factor, shape):
    """Rounded block means and luminance std of edge-padded blocks, with and without a look-up
    table, on sizes that are not multiples of the factor (literal and generic factors)."""
    from imagery_watch.features import block_mean, block_stats

    rng = np.random.default_rng(factor * 100 + sum(shape))
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    img[:, ::3] = 255  # extremes too
    img[:, 1::5] = 0
    lut = rng.integers(0, 256, (shape[0], 256), dtype=np.uint8)
    n = factor * factor
    for table in (None, lut):
        mapped = img if table is None else np.stack([table[k][img[k]] for k in range(shape[0])])
        blocks = _edge_blocks(mapped, factor)
        want_mean = ((blocks.sum(axis=(-3, -1)) + n // 2) // n).astype(np.uint8)
        lum = (blocks[0] + 2 * blocks[1] + blocks[2] + 2) // 4
        var = (lum * lum).sum(axis=(-3, -1)) * n - lum.sum(axis=(-3, -1)) ** 2
        want_std = np.sqrt(var.astype(np.float32)) * np.float32(1.0 / n)
        mean, std = block_stats(img, factor, table)
        np.testing.assert_array_equal(mean, want_mean)
        if factor > 1:
            np.testing.assert_array_equal(std, want_std)
        np.testing.assert_array_equal(block_mean(mapped, factor), want_mean)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("shape", [(16, 24), (17, 23), (1, 1), (5, 41), (2, 9, 11)])
@pytest.mark.parametrize("kind", ["random", "all", "none", "blocks"])
def test_block_count_matches_a_plain_numpy_reference(factor, shape, kind):
    """Counts of False-padded blocks for every factor, leading axes and strided masks."""
    from imagery_watch.features import block_all, block_count, block_majority

    rng = np.random.default_rng(factor)
    mask = {"random": rng.random(shape) < 0.5, "all": np.ones(shape, bool),
            "none": np.zeros(shape, bool), "blocks": np.ones(shape, bool)}[kind]
    if kind == "blocks":
        mask[..., 2:5, 3:] = False
    want = _edge_blocks(mask, factor, fill=False).sum(axis=(-3, -1))
    for m in (mask, np.repeat(mask, 2, axis=-1)[..., ::2]):
        count = block_count(m, factor)
        assert count.dtype == np.uint16
        np.testing.assert_array_equal(count, want)
        np.testing.assert_array_equal(block_all(m, factor), want == factor * factor)
        np.testing.assert_array_equal(block_majority(m, factor), 2 * want >= factor * factor)
    ints = mask.astype(np.int32)
    np.testing.assert_array_equal(block_count(ints, factor), want)


def _features_reference(image, smooth_px, texture_px):
    """compute_features as plain numpy expressions: the float32 operations, in their order."""
    f32 = np.float32
    k = 2 * smooth_px + 1
    sums = [ndi.correlate(b.astype(np.int64), np.ones((k, k), np.int64), mode="nearest").astype(np.uint16)
            for b in image]
    rs, gs, bs = sums[:3]
    tot = (rs + gs + bs).astype(f32)
    want = {"brightness": tot * f32(1.0 / float(f32(3 * k * k)))}
    inv = f32(1) / np.maximum(tot, f32(1))
    want.update(red=rs * inv, green=gs * inv, blue=bs * inv)
    want["exg"] = want["green"] * f32(3) - f32(1)
    mx = np.maximum(np.maximum(rs, gs), bs)
    mn = np.minimum(np.minimum(rs, gs), bs)
    want["saturation"] = (mx - mn).astype(f32) / np.maximum(mx.astype(f32), f32(1))
    if len(image) == 4:
        ns, rf = sums[3].astype(f32), rs.astype(f32)
        want["ndvi"] = (ns - rf) / np.maximum(ns + rf, f32(1))
    lum = luminance(image)
    want["texture"] = local_roughness(lum, radius=texture_px)
    want["darkest"] = ndi.minimum_filter(lum, size=2 * texture_px + 1, mode="nearest").astype(f32)
    return want


@pytest.mark.parametrize("bands", [3, 4])
@pytest.mark.parametrize("smooth_px, texture_px", [(0, 2), (1, 1), (2, 4), (3, 7)])
def test_compute_features_equals_the_numpy_expressions_bit_for_bit(bands, smooth_px, texture_px):
    """The compiled colour pass: the same float32 values, black and saturated pixels included,
    on a sliced (non-contiguous) image."""
    rng = np.random.default_rng(bands * 10 + smooth_px)
    big = rng.integers(0, 256, (bands, 31, 47), dtype=np.uint8)
    big[:, 3:9, 5:15] = 0  # black: total 0, max 0
    big[0, 12:20] = 255
    big[1:, 12:20] = 0
    img = big[:, 1:30, 2:45]
    f = compute_features(img, smooth_px=smooth_px, texture_px=texture_px)
    want = _features_reference(img, smooth_px, texture_px)
    assert (f.ndvi is None) == (bands == 3)
    for name, value in want.items():
        got = getattr(f, name)
        assert got.dtype == np.float32 and got.flags.c_contiguous, name
        np.testing.assert_array_equal(got, value, err_msg=name)
