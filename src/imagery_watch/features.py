"""Per-pixel evidence shared by classification and change detection (numpy, and compiled
numba kernels for the integer window and block sums).

Every function here is a block kernel: it takes numpy arrays, returns new numpy arrays,
never modifies its input and reads no globals. Each one that looks at neighbours declares
its halo (``*_halo_px``): the number of pixels of context it needs on every side so that
the values in a block's core equal those computed on the whole image.

Bit-exactness across blocks is a design goal: window sums are exact integer sums (no
running floating-point sums, whose rounding depends on where a line starts), and floating
point is used only element-wise with correctly rounded operations (+, -, *, /, sqrt). So
a block computed with its halo gives exactly the same bits as the whole image.

Array order is (band, y, x) for images and (y, x) for masks and features. Images are
``uint8`` with bands R, G, B and optionally NIR as fourth band.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Features",
    "radius_px",
    "box_sum",
    "box_max",
    "box_min",
    "luminance",
    "local_std",
    "local_roughness",
    "compute_features",
    "features_halo_px",
    "block_mean",
    "block_std",
    "block_stats",
    "map_bands",
    "block_all",
    "block_count",
    "block_majority",
    "upsample",
]


def radius_px(radius_m: float, pixel_size_m: float) -> int:
    """Convert a window radius in metres to whole pixels (at least 1 when ``radius_m > 0``).

    Parameters
    ----------
    radius_m : float
        Radius in metres.
    pixel_size_m : float
        Ground size of one pixel in metres.

    Returns
    -------
    int
        ``round(radius_m / pixel_size_m)``, at least 1 for a positive radius, at most 64.
    """
    if pixel_size_m <= 0:
        raise ValueError(f"pixel_size_m must be > 0, found {pixel_size_m}")
    if radius_m <= 0:
        return 0
    return int(min(64, max(1, round(radius_m / pixel_size_m))))


def _pad_cols(a: np.ndarray, r: int, dtype) -> np.ndarray:
    ny, nx = a.shape
    p = np.empty((ny, nx + 2 * r), dtype)
    p[:, r:r + nx] = a
    p[:, :r] = a[:, :1]
    p[:, r + nx:] = a[:, -1:]
    return p


def _pad_rows(a: np.ndarray, r: int) -> np.ndarray:
    ny, nx = a.shape
    p = np.empty((ny + 2 * r, nx), a.dtype)
    p[r:r + ny] = a
    p[:r] = a[:1]
    p[r + ny:] = a[-1:]
    return p


def _separable(a: np.ndarray, r: int, op, dtype) -> np.ndarray:
    ny, nx = a.shape
    k = 2 * r + 1
    p = _pad_cols(a, r, dtype)
    h = op(p[:, 0:nx], p[:, 1:1 + nx])
    for i in range(2, k):
        op(h, p[:, i:i + nx], out=h)
    p = _pad_rows(h, r)
    out = op(p[0:ny], p[1:1 + ny])
    for i in range(2, k):
        op(out, p[i:i + ny], out=out)
    return out


def _box(a: np.ndarray, r: int, op, dtype) -> np.ndarray:
    """Separable (2r+1)^2 window ``op`` (np.add, np.maximum or np.minimum), edge-padded.

    Integer and bool arrays go through a compiled kernel: one pass over the pixels instead
    of one numpy pass per window offset, the same values (integer sums wrap the same way in
    any order, max and min are exact). Floats keep the numpy passes, whose order of
    additions fixes the rounding.
    """
    dtype = np.dtype(dtype)
    if a.dtype.kind not in "biu" or dtype.kind not in "biu" or a.ndim != 2:
        return _separable(a, r, op, dtype)
    if a.dtype == bool:
        out = _box(a.view(np.uint8), r, op, np.uint8 if dtype == bool else dtype)
        return out.view(bool) if dtype == bool else out
    out = np.empty(a.shape, dtype)
    if a.size:
        k = _kernels()
        kernel = {np.add: k.box_sum, np.maximum: k.box_max, np.minimum: k.box_min}[op]
        kernel(a, int(r), out)
    return out


def box_sum(a: np.ndarray, *, radius: int, dtype=np.uint16) -> np.ndarray:
    """Exact sum over the (2r+1) x (2r+1) window around each pixel.

    Parameters
    ----------
    a : ndarray (y, x), integer
        Values to sum.
    radius : int
        Window radius r in pixels (halo = r). Edges are padded by repeating the edge pixel.
    dtype : numpy integer dtype
        Accumulator and output type; it must hold ``(2r+1)**2 * a.max()``.

    Returns
    -------
    ndarray (y, x) of ``dtype``

    Notes
    -----
    Separable shift-and-add in integers: exact, so block results are bit-identical to
    whole-image results given a halo of ``radius``.
    """
    if radius == 0:
        return a.astype(dtype, copy=True)
    return _box(a, radius, np.add, dtype)


def box_max(a: np.ndarray, *, radius: int) -> np.ndarray:
    """Maximum over the (2r+1) x (2r+1) window (edge-padded). Halo = ``radius``."""
    if radius == 0:
        return a.copy()
    return _box(a, radius, np.maximum, a.dtype)


def box_min(a: np.ndarray, *, radius: int) -> np.ndarray:
    """Minimum over the (2r+1) x (2r+1) window (edge-padded). Halo = ``radius``."""
    if radius == 0:
        return a.copy()
    return _box(a, radius, np.minimum, a.dtype)


def luminance(image: np.ndarray) -> np.ndarray:
    """Luminance ``(R + 2G + B + 2) // 4`` as uint8 (y, x). No halo."""
    r = image[0].astype(np.uint16)
    y = image[1].astype(np.uint16)
    y <<= 1
    y += r
    y += image[2]
    y += 2
    y >>= 2
    return y.astype(np.uint8)


def local_std(lum: np.ndarray, *, radius: int) -> np.ndarray:
    """Standard deviation of ``lum`` (uint8) over the (2r+1)^2 window, float32. Halo = r.

    Sums are exact integers (``radius <= 7`` keeps the sum of squares below 2**24, so its
    float32 conversion is exact as well).
    """
    if radius > 7:
        raise ValueError(f"local_std radius must be <= 7 px, found {radius}")
    n = np.float32((2 * radius + 1) ** 2)
    s = box_sum(lum, radius=radius, dtype=np.uint16).astype(np.float32)
    sq = lum.astype(np.uint16)
    sq *= sq
    s2 = box_sum(sq, radius=radius, dtype=np.uint32).astype(np.float32)
    s /= n
    s2 /= n
    s *= s
    s2 -= s
    np.maximum(s2, 0, out=s2)
    return np.sqrt(s2, out=s2)


def local_roughness(lum: np.ndarray, *, radius: int) -> np.ndarray:
    """Mean absolute high-pass of luminance over the (2r+1)^2 window, float32. Halo = r + 1.

    The high-pass is ``|Y - mean_3x3(Y)|``. Unlike the local standard deviation it stays
    low next to a single straight edge (a field boundary, a roof outline) and is high on
    canopy, whose crowns and gaps give fine detail everywhere. Exact integer sums.
    """
    if radius > 7:
        raise ValueError(f"local_roughness radius must be <= 7 px, found {radius}")
    y9 = lum.astype(np.int16)
    y9 *= 9
    hp = y9 - box_sum(lum, radius=1, dtype=np.uint16).view(np.int16)
    np.abs(hp, out=hp)
    total = box_sum(hp.view(np.uint16), radius=radius, dtype=np.uint32).astype(np.float32)
    total *= np.float32(1.0 / (9 * (2 * radius + 1) ** 2))
    return total


@dataclass(frozen=True)
class Features:
    """Per-pixel evidence of one epoch; every array is (y, x) float32.

    Attributes
    ----------
    brightness : mean of the smoothed R, G, B (0..255).
    red, green, blue : chromaticity of the smoothed bands (R / (R + G + B)...), 0..1.
    exg : excess green on chromaticity, ``2g - r - b`` (-1..2; vegetation > ~0.05).
    saturation : ``(max - min) / max`` of the smoothed R, G, B (0..1).
    texture : local roughness of luminance (:func:`local_roughness`, 0..255).
    darkest : minimum luminance over the texture window (0..255): low inside tree canopy
        (shaded gaps between crowns), high in bright striped crops whose rows are rough too.
    ndvi : ``(NIR - R) / (NIR + R)`` of the smoothed bands, or None without NIR.
    """

    brightness: np.ndarray
    red: np.ndarray
    green: np.ndarray
    blue: np.ndarray
    exg: np.ndarray
    saturation: np.ndarray
    texture: np.ndarray
    darkest: np.ndarray
    ndvi: np.ndarray | None = None


def features_halo_px(*, smooth_px: int, texture_px: int) -> int:
    """Halo of :func:`compute_features`: the larger of the two window radii."""
    return max(smooth_px, texture_px + 1)


def compute_features(image: np.ndarray, *, smooth_px: int, texture_px: int) -> Features:
    """Colour, brightness, vegetation and texture evidence of one epoch.

    Parameters
    ----------
    image : ndarray (band, y, x), uint8
        R, G, B and optionally NIR.
    smooth_px : int
        Radius of the box that smooths the bands before colour indices (noise and
        sub-pixel misregistration); at most 3.
    texture_px : int
        Radius of the window of the local roughness of luminance; at most 7.

    Returns
    -------
    Features

    Notes
    -----
    Halo: :func:`features_halo_px`. Exact integer window sums: block results are
    bit-identical to whole-image results given that halo.
    """
    if image.ndim != 3 or image.shape[0] not in (3, 4):
        raise ValueError(f"image must be (band, y, x) with 3 or 4 bands, found shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, found {image.dtype}")
    if not 0 <= smooth_px <= 3:
        raise ValueError(f"smooth_px must be 0..3, found {smooth_px}")
    nb, ny, nx = image.shape
    # the window sums; without smoothing the bands themselves (the same values, no copies)
    sums = [image[b] if smooth_px == 0 else box_sum(image[b], radius=smooth_px, dtype=np.uint16)
            for b in range(nb)]
    # brightness, red, green, blue, exg, saturation and ndvi: arrays of their own, so that
    # keeping one does not keep the others
    out = tuple(np.empty((ny, nx) if k < 6 or nb == 4 else (0, 0), np.float32) for k in range(7))
    lum = np.empty((ny, nx), np.uint8)
    if lum.size:
        # the colour indices and the luminance in one compiled pass, with the float32
        # operations of the numpy expressions it replaced, in their order
        n_win = np.float32(3 * (2 * smooth_px + 1) ** 2)
        _kernels().colour(sums[0], sums[1], sums[2], sums[nb - 1], nb == 4, image[0], image[1], image[2],
                          np.float32(1.0 / float(n_win)), out, lum)
    brightness, red, green, blue, exg, saturation = out[:6]
    ndvi = out[6] if nb == 4 else None
    texture = local_roughness(lum, radius=texture_px)
    darkest = box_min(lum, radius=texture_px).astype(np.float32)
    return Features(brightness=brightness, red=red, green=green, blue=blue, exg=exg,
                    saturation=saturation, texture=texture, darkest=darkest, ndvi=ndvi)


def _block_sums(a: np.ndarray, factor: int, *, edge: bool = False) -> np.ndarray:
    """Exact sums of ``factor x factor`` blocks over the last two axes (uint16).

    A partial block at the bottom or right edge is padded with zeros, or by repeating the
    edge pixels when ``edge``. ``factor**2 * a.max()`` must fit uint16 (uint8 input:
    factor <= 16). uint8 and bool arrays go through a compiled kernel; other dtypes need
    the last two dimensions to be multiples of ``factor``.
    """
    ny, nx = a.shape[-2:]
    if a.dtype == bool or a.dtype == np.uint8:
        out = np.empty(a.shape[:-2] + (-(-ny // factor), -(-nx // factor)), np.uint16)
        if out.size:
            kernel = _kernels().block_sums
            planes = a.view(np.uint8).reshape((-1, ny, nx))
            flat = out.reshape((-1,) + out.shape[-2:])
            for k in range(planes.shape[0]):
                kernel(planes[k], int(factor), edge, flat[k])
        return out
    acc = np.zeros(a.shape[:-2] + (ny // factor, nx // factor), np.uint16)
    for i in range(factor):
        for j in range(factor):
            acc += a[..., i::factor, j::factor]
    return acc


def _pad_to_multiple(a: np.ndarray, factor: int, fill=None) -> np.ndarray:
    ny, nx = a.shape[-2:]
    py, px = -ny % factor, -nx % factor
    if not py and not px:
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, py), (0, px)]
    if fill is None:
        return np.pad(a, pad, mode="edge")
    return np.pad(a, pad, mode="constant", constant_values=fill)


def block_average(a: np.ndarray, factor: int) -> np.ndarray:
    """Float32 mean of each ``factor x factor`` block over the last two axes of any array
    (partial edge blocks padded by repeating the edge pixels, as :func:`block_mean`)."""
    padded = _pad_to_multiple(a, factor)
    ny, nx = padded.shape[-2:]
    shape = padded.shape[:-2] + (ny // factor, factor, nx // factor, factor)
    return padded.reshape(shape).mean(axis=(-3, -1), dtype=np.float32)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor x factor`` block of a (band, y, x) uint8 image, rounded, uint8.

    Blocks are anchored at index (0, 0); a partial block at the bottom or right edge is
    padded by repeating the edge pixels. No halo: a block's value depends on its own pixels
    only, so any array whose origin is a multiple of ``factor`` gives the same blocks.
    """
    if factor == 1:
        return image.copy()
    if not 1 <= factor <= 16:
        raise ValueError(f"factor must be 1..16, found {factor}")
    sums = _block_sums(image, factor, edge=True)
    n = factor * factor
    sums += n // 2
    sums //= n
    return sums.astype(np.uint8)


def block_std(image: np.ndarray, factor: int) -> np.ndarray:
    """Standard deviation of the luminance inside each ``factor x factor`` block, float32.

    The fine texture that block averaging removes (crop rows, straw, gravel against smooth
    concrete or roofs). Exact integer sums, so any array whose origin is a multiple of
    ``factor`` gives the same values; zeros when ``factor == 1``.
    """
    lum = luminance(image)
    if factor == 1:
        return np.zeros(lum.shape, np.float32)
    lum = _pad_to_multiple(lum, factor)
    s1 = _block_sums(lum, factor).astype(np.int64)
    sq = lum.astype(np.uint16)
    sq *= sq
    acc = np.zeros((lum.shape[0] // factor, lum.shape[1] // factor), np.uint32)
    for i in range(factor):
        for j in range(factor):
            acc += sq[i::factor, j::factor]
    n = factor * factor
    var = acc.astype(np.int64) * n - s1 * s1  # n^2 * variance, exact
    out = np.sqrt(var.astype(np.float32))
    out *= np.float32(1.0 / n)
    return out


def map_bands(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Each band of a (band, y, x) uint8 image through its own look-up table
    (``lut[band]``, 256 uint8 values); a new array. No halo."""
    lut = np.asarray(lut, np.uint8)
    out = np.empty_like(image)
    rows = 256  # np.take converts its indices to intp: strips keep that temporary small
    for k in range(image.shape[0]):
        for y0 in range(0, image.shape[1], rows):
            np.take(lut[k], image[k, y0:y0 + rows], out=out[k, y0:y0 + rows])
    return out


_ROW_SUMS = None  # a kernel the others call: a module global, so that numba's cache holds them


@functools.cache  # made once, on first use (importing numba takes a while)
def _kernels():
    """The compiled (numba) kernels of this module, made or loaded from numba's cache on
    first use. They release the GIL, so worker threads run them in parallel."""
    global _ROW_SUMS
    from types import SimpleNamespace

    import numba

    jit = numba.njit(nogil=True, cache=True)

    @jit
    def row_sums(c, factor, nx, out):  # pragma: no cover (compiled)
        # out[bx] = sum of c[bx * factor:(bx + 1) * factor] for the whole blocks of nx columns;
        # a literal stride lets LLVM vectorise the interleaved loads (a variable one does not)
        full = nx // factor
        if factor == 4:
            for bx in range(full):
                out[bx] = c[4 * bx] + c[4 * bx + 1] + c[4 * bx + 2] + c[4 * bx + 3]
        elif factor == 2:
            for bx in range(full):
                out[bx] = c[2 * bx] + c[2 * bx + 1]
        elif factor == 3:
            for bx in range(full):
                out[bx] = c[3 * bx] + c[3 * bx + 1] + c[3 * bx + 2]
        else:
            out[:full] = 0
            for j in range(factor):
                for bx in range(full):
                    out[bx] += c[bx * factor + j]

    _ROW_SUMS = row_sums

    @jit
    def block_sums(a, factor, edge, out):  # pragma: no cover (compiled)
        # column sums over each block row (contiguous, vectorised), then the row sums
        ny, nx = a.shape
        by_n, bx_n = out.shape
        full = nx // factor
        cols = np.empty(nx, out.dtype)
        for by in range(by_n):
            cols[:] = 0
            for i in range(factor):
                y = by * factor + i
                if y >= ny:  # partial block: zeros, or the edge row repeated
                    if not edge:
                        break
                    y = ny - 1
                row = a[y]
                for x in range(nx):
                    cols[x] += row[x]
            o = out[by]
            _ROW_SUMS(cols, factor, nx, o)
            if full < bx_n:
                s = 0
                for x in range(full * factor, nx):
                    s += cols[x]
                if edge:
                    s += ((full + 1) * factor - nx) * cols[nx - 1]
                o[full] = s

    @jit
    def block_stats(img, lut, use_lut, pairs, img16, lut2, factor, mapped, mapped16, mean,
                    std):  # pragma: no cover (compiled)
        # column sums of the bands, luminance and its square over each block row
        # (contiguous, vectorised), then the sums of each block from them
        nb, ny, nx = img.shape
        by_n, bx_n = mean.shape[1], mean.shape[2]
        full = nx // factor
        n = factor * factor
        shift = -1  # n = 2**shift: round the means by a shift (vectorised; a division is not)
        for s in range(9):
            if n == 1 << s:
                shift = s
        inv = np.float32(1.0 / n)
        cols = np.empty((nb + 2, nx), np.int32)
        sums = np.empty((nb + 2, bx_n), np.int32)
        for by in range(by_n):
            cols[:] = 0
            for i in range(factor):
                y = min(by * factor + i, ny - 1)  # partial blocks repeat the edge pixels
                if pairs:
                    for k in range(nb):
                        lk, src, dst = lut2[k], img16[k, y], mapped16[k]
                        for x in range(nx // 2):
                            dst[x] = lk[src[x]]
                elif use_lut:
                    for k in range(nb):
                        lk, src, dst = lut[k], img[k, y], mapped[k]
                        for x in range(nx):
                            dst[x] = lk[src[x]]
                if use_lut:
                    r_row, g_row, b_row = mapped[0], mapped[1], mapped[2]
                else:
                    r_row, g_row, b_row = img[0, y], img[1, y], img[2, y]
                cr, cg, cb, c1, c2 = cols[0], cols[1], cols[2], cols[nb], cols[nb + 1]
                for x in range(nx):
                    r = np.int32(r_row[x])
                    g = np.int32(g_row[x])
                    b = np.int32(b_row[x])
                    cr[x] += r
                    cg[x] += g
                    cb[x] += b
                    lum = (r + 2 * g + b + 2) >> 2  # as luminance()
                    c1[x] += lum
                    c2[x] += lum * lum
                for k in range(3, nb):  # NIR: means only
                    ck = cols[k]
                    row = mapped[k] if use_lut else img[k, y]
                    for x in range(nx):
                        ck[x] += np.int32(row[x])
            for k in range(nb + 2):
                ck, sk = cols[k], sums[k]
                _ROW_SUMS(ck, factor, nx, sk)
                if full < bx_n:  # partial block: repeat the edge column
                    a = 0
                    for j in range(factor):
                        a += ck[min(full * factor + j, nx - 1)]
                    sk[full] = a
            for k in range(nb):
                sk, mk = sums[k], mean[k, by]
                if shift >= 0:
                    for bx in range(bx_n):
                        mk[bx] = (sk[bx] + n // 2) >> shift
                else:
                    for bx in range(bx_n):
                        mk[bx] = (sk[bx] + n // 2) // n
            s1, s2, sd = sums[nb], sums[nb + 1], std[by]
            for bx in range(bx_n):
                var = np.int64(s2[bx]) * n - np.int64(s1[bx]) * s1[bx]  # n**2 * variance, exact
                sd[bx] = np.sqrt(np.float32(var)) * inv

    @jit
    def box_sum(a, r, out):  # pragma: no cover (compiled)
        # per output row: the vertical sum into an edge-padded row buffer, then the
        # horizontal sum of the buffer (contiguous loops, vectorised)
        ny, nx = a.shape
        v = np.empty(nx + 2 * r, out.dtype)
        for y in range(ny):
            row = a[y]
            for x in range(nx):
                v[r + x] = row[x]
            for d in range(1, r + 1):
                ra, rb = a[max(y - d, 0)], a[min(y + d, ny - 1)]  # rows repeat at the edges
                for x in range(nx):
                    v[r + x] += ra[x] + rb[x]
            for x in range(r):
                v[x] = v[r]
                v[r + nx + x] = v[r + nx - 1]
            o = out[y]
            if r == 1:
                for x in range(nx):
                    o[x] = v[x] + v[x + 1] + v[x + 2]
            else:
                for x in range(nx):
                    o[x] = v[x]
                for d in range(1, 2 * r + 1):
                    for x in range(nx):
                        o[x] += v[x + d]

    # box_max and box_min repeat box_sum with another operation: one kernel with the
    # operation as an argument does not vectorise
    @jit
    def box_max(a, r, out):  # pragma: no cover (compiled)
        ny, nx = a.shape
        v = np.empty(nx + 2 * r, out.dtype)
        for y in range(ny):
            row = a[y]
            for x in range(nx):
                v[r + x] = row[x]
            for d in range(1, r + 1):
                ra, rb = a[max(y - d, 0)], a[min(y + d, ny - 1)]
                for x in range(nx):
                    v[r + x] = max(v[r + x], max(ra[x], rb[x]))
            for x in range(r):
                v[x] = v[r]
                v[r + nx + x] = v[r + nx - 1]
            o = out[y]
            if r == 1:
                for x in range(nx):
                    o[x] = max(max(v[x], v[x + 1]), v[x + 2])
            else:
                for x in range(nx):
                    o[x] = v[x]
                for d in range(1, 2 * r + 1):
                    for x in range(nx):
                        o[x] = max(o[x], v[x + d])

    @jit
    def box_min(a, r, out):  # pragma: no cover (compiled)
        ny, nx = a.shape
        v = np.empty(nx + 2 * r, out.dtype)
        for y in range(ny):
            row = a[y]
            for x in range(nx):
                v[r + x] = row[x]
            for d in range(1, r + 1):
                ra, rb = a[max(y - d, 0)], a[min(y + d, ny - 1)]
                for x in range(nx):
                    v[r + x] = min(v[r + x], min(ra[x], rb[x]))
            for x in range(r):
                v[x] = v[r]
                v[r + nx + x] = v[r + nx - 1]
            o = out[y]
            if r == 1:
                for x in range(nx):
                    o[x] = min(min(v[x], v[x + 1]), v[x + 2])
            else:
                for x in range(nx):
                    o[x] = v[x]
                for d in range(1, 2 * r + 1):
                    for x in range(nx):
                        o[x] = min(o[x], v[x + d])

    @jit
    def colour(rs, gs, bs, ns, has_nir, r8, g8, b8, k_bright, out, lum):  # pragma: no cover (compiled)
        # per row, one loop per output over row buffers in cache: LLVM vectorises a loop
        # only when it can check that its few arrays do not overlap
        ny, nx = lum.shape
        one = np.float32(1)
        tot = np.empty(nx, np.float32)
        inv = np.empty(nx, np.float32)
        for y in range(ny):
            r, g, b = rs[y], gs[y], bs[y]
            for x in range(nx):
                tot[x] = np.float32(np.int32(r[x]) + np.int32(g[x]) + np.int32(b[x]))
            o = out[0][y]  # brightness
            for x in range(nx):
                o[x] = tot[x] * k_bright
            for x in range(nx):
                t = tot[x]
                inv[x] = one / (t if t >= one else one)
            o = out[1][y]  # red, green, blue chromaticity
            for x in range(nx):
                o[x] = np.float32(r[x]) * inv[x]
            o = out[2][y]
            for x in range(nx):
                o[x] = np.float32(g[x]) * inv[x]
            o = out[3][y]
            for x in range(nx):
                o[x] = np.float32(b[x]) * inv[x]
            o, gr = out[4][y], out[2][y]  # excess green
            for x in range(nx):
                o[x] = gr[x] * np.float32(3) - one
            o = out[5][y]  # saturation
            for x in range(nx):
                mx = max(max(np.int32(r[x]), np.int32(g[x])), np.int32(b[x]))
                mn = min(min(np.int32(r[x]), np.int32(g[x])), np.int32(b[x]))
                mxf = np.float32(mx)
                o[x] = np.float32(mx - mn) / (mxf if mxf >= one else one)
            if has_nir:
                o, nir = out[6][y], ns[y]
                for x in range(nx):
                    nf = np.float32(nir[x])
                    rf = np.float32(r[x])
                    den = nf + rf
                    o[x] = (nf - rf) / (den if den >= one else one)
            lr, lg, lb, lo = r8[y], g8[y], b8[y], lum[y]
            for x in range(nx):
                lo[x] = (np.int32(lr[x]) + 2 * np.int32(lg[x]) + np.int32(lb[x]) + 2) >> 2  # as luminance()

    return SimpleNamespace(block_sums=block_sums, block_stats=block_stats, box_sum=box_sum,
                           box_max=box_max, box_min=box_min, colour=colour)


def block_stats(image: np.ndarray, factor: int, lut: np.ndarray | None = None) -> tuple:
    """:func:`block_mean` and :func:`block_std` of ``image`` (mapped through ``lut`` first,
    as :func:`map_bands`) in one pass over its pixels: the same values, bit for bit.

    A compiled kernel (numba) that releases the GIL, so worker threads run it in parallel.
    Returns ``(mean, std)``: (band, ny, nx) uint8 and (ny, nx) float32, ``ny = ceil(y / factor)``.
    """
    if factor == 1:
        mapped = image.copy() if lut is None else map_bands(image, lut)
        return mapped, block_std(mapped, 1)
    if not 1 <= factor <= 16:
        raise ValueError(f"factor must be 1..16, found {factor}")
    image = np.ascontiguousarray(image, dtype=np.uint8)
    nb, ny, nx = image.shape
    if nb < 3:
        raise ValueError(f"image must have at least 3 bands (R, G, B), found {nb}")
    use_lut = lut is not None
    lut = np.zeros((nb, 256), np.uint8) if lut is None else np.ascontiguousarray(lut, dtype=np.uint8)
    if lut.shape != (nb, 256):
        raise ValueError(f"lut must be (bands, 256) = ({nb}, 256), found {lut.shape}")
    shape = (-(-ny // factor), -(-nx // factor))
    mean = np.empty((nb,) + shape, np.uint8)
    std = np.empty(shape, np.float32)
    mapped = np.empty((nb, nx + nx % 2), np.uint8)  # one row of the mapped bands
    # the look-up tables applied to pairs of pixels, (uint16 -> uint16): half the look-ups,
    # which bound the pass (their 128 KiB tables stay in cache on real images)
    pairs = use_lut and nx % 2 == 0 and np.little_endian
    if pairs:
        wide = lut.astype(np.uint16)
        lut2 = (wide[:, :, None] << 8 | wide[:, None, :]).reshape(nb, 65536)
        image16 = image.view(np.uint16)
    else:
        lut2, image16 = np.zeros((nb, 1), np.uint16), np.zeros((nb, 1, 1), np.uint16)
    if ny and nx:
        _kernels().block_stats(image, lut, use_lut, pairs, image16, lut2, int(factor), mapped,
                               mapped.view(np.uint16), mean, std)
    return mean, std


def block_all(mask: np.ndarray, factor: int) -> np.ndarray:
    """True where every pixel of the ``factor x factor`` block is True (edge blocks are
    padded with False)."""
    if factor == 1:
        return mask.astype(bool, copy=True)
    return block_count(mask, factor) == factor * factor


def block_count(mask: np.ndarray, factor: int) -> np.ndarray:
    """Number of True pixels in each ``factor x factor`` block (uint16; edge blocks are
    padded with False)."""
    if factor == 1:
        return mask.astype(np.uint16)
    mask = np.asarray(mask)
    return _block_sums(mask if mask.dtype == bool else mask.astype(np.uint8), factor)


def block_majority(mask: np.ndarray, factor: int) -> np.ndarray:
    """True where at least half of the pixels of the ``factor x factor`` block are True."""
    if factor == 1:
        return mask.astype(bool, copy=True)
    return 2 * block_count(mask, factor) >= factor * factor


def upsample(a: np.ndarray, factor: int, shape: tuple) -> np.ndarray:
    """Repeat each pixel of a (y, x) array into a ``factor x factor`` block, cropped to ``shape``."""
    if factor == 1:
        return a[:shape[0], :shape[1]].copy()
    out = np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)
    return np.ascontiguousarray(out[:shape[0], :shape[1]])
