"""Pixels of one epoch over one window: surfaces, textures, crowns, roofs and shadows.

:func:`render_window` is pure: it reads the vector landscape of an epoch and returns a
float image. Every texture is addressed by global coordinates, and the window is rendered
with a halo (``halo_px``: tree shadows, blur, misregistration), so any two windows agree
where they overlap and sheets rendered one by one join without seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from rasterio import features as rfeatures
from rasterio.transform import array_bounds
from scipy import ndimage
from shapely.geometry import box

from .noise import fbm, hash_unit, sensor_noise, value_noise

KINDS = ("none", "grass", "crop", "road", "lane", "canal", "pond", "village_ground", "bare", "yard",
         "rubble", "trees", "building")
K = {k: i for i, k in enumerate(KINDS)}

# colours: R, G, B, NIR (0..255 reflectance-like digital numbers)
_STAGES = ("green", "young", "vegetable", "ripe", "stubble", "tilled")
_PLANT = np.array([[62, 100, 44, 195], [86, 124, 52, 175], [70, 116, 56, 190],
                   [178, 158, 84, 150], [182, 168, 128, 138], [98, 80, 62, 92]], np.float32)
_SOIL = np.array([[84, 98, 60, 130], [128, 108, 86, 108], [118, 98, 78, 104],
                  [146, 126, 84, 124], [140, 126, 98, 116], [142, 118, 92, 112]], np.float32)
_COVER = np.array([0.85, 0.42, 0.62, 0.85, 0.55, 0.5], np.float32)
_SHARP = np.array([0.35, 1.6, 2.2, 0.3, 0.9, 1.8], np.float32)

ROOF_NAMES = ("tile_red", "tile_brown", "tile_dark", "steel_blue", "concrete", "white")
_ROOF = np.array([[150, 74, 58, 105], [124, 90, 70, 100], [84, 86, 92, 85],
                  [64, 110, 170, 120], [160, 158, 150, 150], [220, 220, 214, 205]], np.float32)
_GABLE = np.array([0.2, 0.2, 0.2, 0.08, 0.0, 0.03], np.float32)

_SHADOW = np.array([0.36, 0.40, 0.52, 0.38], np.float32)


@dataclass
class EpochPlan:
    """What the renderer needs about one epoch (built once per scene).

    Attributes
    ----------
    features : list of Feature
        Surfaces in painter's order.
    tree : shapely STRtree
        Index over ``features`` geometries.
    shadows : list of shapely geometries
        Building shadows on the ground under this epoch's sun.
    shadow_tree : shapely STRtree or None
    sun : dict
        ``azimuth`` and ``elevation`` in degrees.
    noise_seed : int
        Seed of the sensor noise.
    effects : dict
        Distractor parameters applied to this epoch (radiometric, strip, shift_px, jpeg_quality).
    valid_geom : shapely geometry
        Flown area (outside is nodata).
    """

    epoch: str
    features: list
    tree: object
    shadows: list
    shadow_tree: object
    sun: dict
    noise_seed: int
    effects: dict = field(default_factory=dict)
    valid_geom: object = None
    max_tree_m: float = 12.0


@dataclass(frozen=True)
class WindowGrid:
    """Georeferencing of the scene: world (x0, y0) of the top-left corner and pixel size."""

    x0: float
    y0: float
    pixel_size_m: float

    def transform(self, row0: float, col0: float) -> Affine:
        ps = self.pixel_size_m
        return Affine(ps, 0.0, self.x0 + col0 * ps, 0.0, -ps, self.y0 - row0 * ps)


def _attr(local, name, default=0.0, epoch="before"):
    return np.array([default] + [f.params_for(epoch).get(name, default) for f in local], np.float32)


def _crop(out, rr, cc, slot, local, x, y, nz, epoch):
    stage = np.array([0] + [_STAGES.index(f.params_for(epoch).get("stage", "green")) for f in local], np.int64)[slot]
    ang = _attr(local, "row_angle", 0, epoch)[slot]
    sp = _attr(local, "row_spacing_m", 1.0, epoch)[slot]
    tone = _attr(local, "tone", 0, epoch)[slot]
    cover = _attr(local, "cover", 0, epoch)[slot]
    d = (x[cc] * np.cos(ang) + y[rr] * np.sin(ang)) * np.float32(2 * np.pi) / sp
    p = np.float32(0.5) + np.float32(0.5) * np.cos(d)
    w = np.clip(_COVER[stage] + cover + _SHARP[stage] * (p - 0.5) + 0.6 * (nz["mid"][rr, cc] - 0.5), 0, 1)
    col = _SOIL[stage] + (_PLANT[stage] - _SOIL[stage]) * w[:, None]
    shade = 1 + tone + 0.22 * (nz["lo"][rr, cc] - 0.5)
    return col * shade[:, None] + 12 * (nz["fine"][rr, cc] - 0.5)[:, None]


def _flat(base, tone, nz, rr, cc, lo=0.25, fine=8.0):
    shade = 1 + tone + lo * (nz["lo"][rr, cc] - 0.5)
    return np.asarray(base, np.float32)[None] * shade[:, None] + fine * (nz["fine"][rr, cc] - 0.5)[:, None]


def _mix(a, b, w):
    return np.asarray(a, np.float32)[None] * (1 - w[:, None]) + np.asarray(b, np.float32)[None] * w[:, None]


def _crowns(rr, cc, slot, local, x, y, epoch):
    """Worley-style crowns: nearest jittered tree centre around each tree pixel."""
    sp = _attr(local, "spacing_m", 4.0, epoch)[slot]
    rad = _attr(local, "radius_m", 2.0, epoch)[slot]
    jit = _attr(local, "jitter", 0.5, epoch)[slot]
    ang = _attr(local, "angle", 0, epoch)[slot]
    hgt = _attr(local, "height_m", 6, epoch)[slot]
    fseed = np.array([0] + [int(f.params.get("seed", 0)) for f in local], np.int64)[slot]
    ca, sa = np.cos(ang), np.sin(ang)
    px, py = x[cc], y[rr]
    u = (px * ca + py * sa) / sp
    v = (-px * sa + py * ca) / sp
    iu0, iv0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    best = np.full(u.shape, 9.0, np.float32)
    bu = np.zeros_like(best)
    bv = np.zeros_like(best)
    bh = np.zeros_like(best)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            iu, iv = iu0 + di, iv0 + dj
            h1 = hash_unit(iu, iv, fseed, 1)
            h2 = hash_unit(iu, iv, fseed, 2)
            h3 = hash_unit(iu, iv, fseed, 3)
            cu = iu + 0.5 + jit * (h1 - 0.5)
            cv = iv + 0.5 + jit * (h2 - 0.5)
            r = rad / sp * (0.8 + 0.4 * h3)
            du, dv = (u - cu) / r, (v - cv) / r
            q = du * du + dv * dv
            take = q < best
            best = np.where(take, q, best)
            bu = np.where(take, du, bu)
            bv = np.where(take, dv, bv)
            bh = np.where(take, h3, bh)
    # horizontal offsets back in world orientation (x east, y north)
    ox, oy = bu * ca - bv * sa, bu * sa + bv * ca
    return best, ox, oy, bh, hgt


def _trees(out_h, rr, cc, slot, local, x, y, nz, sun, epoch):
    q, ox, oy, bh, hgt = _crowns(rr, cc, slot, local, x, y, epoch)
    tone = _attr(local, "tone", 0, epoch)[slot]
    style = np.array([0] + [("young", "orchard").index(f.params["style"]) + 1
                            if f.params.get("style") in ("young", "orchard") else 0 for f in local])[slot]
    crown = q < 1.0
    nzc = np.sqrt(np.clip(1 - q, 0, 1))
    az, el = math.radians(sun["azimuth"]), math.radians(sun["elevation"])
    lx, ly, lz = math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)
    lam = np.clip(ox * lx + oy * ly + nzc * lz, 0, 1)
    leaf = nz["leaf"][rr, cc]
    bright = (0.55 + 0.6 * lam) * (1 + tone + 0.25 * (bh - 0.5)) * (0.85 + 0.3 * leaf)
    col_crown = np.array([50, 84, 42, 190], np.float32)[None] * bright[:, None]
    under = np.where((style == 0)[:, None], np.array([[46, 60, 38, 110]], np.float32),
                     np.where((style == 1)[:, None], np.array([[120, 122, 82, 150]], np.float32),
                              np.array([[96, 112, 64, 155]], np.float32)))
    under = under * (1 + 0.2 * (nz["mid"][rr, cc] - 0.5))[:, None]
    out_h[rr, cc] = np.where(crown, hgt * (0.85 + 0.3 * bh) * nzc, 0.0)
    return np.where(crown[:, None], col_crown, under)


def _roofs(rr, cc, slot, local, x, y, nz, sun, slots_full, x0, y0):
    roof = np.array([0] + [ROOF_NAMES.index(f.params.get("roof", "concrete")) for f in local], np.int64)[slot]
    ang = _attr(local, "angle", 0)[slot]
    tone = _attr(local, "tone", 0)[slot]
    cxs = np.array([0] + [f.geom.centroid.x - x0 for f in local], np.float64)[slot]
    cys = np.array([0] + [f.geom.centroid.y - y0 for f in local], np.float64)[slot]
    ca, sa = np.cos(ang), np.sin(ang)
    dx, dy = x[cc] - cxs, y[rr] - cys
    u = dx * ca + dy * sa
    v = -dx * sa + dy * ca
    az = math.radians(sun["azimuth"])
    facing = (-sa * math.sin(az) + ca * math.cos(az))  # sun on the +v half
    half = np.where(v >= 0, 1.0, -1.0)
    f = 1 + _GABLE[roof] * half * np.sign(facing) * np.minimum(1, 3 * np.abs(facing))
    f = f + np.where(np.abs(v) < 0.3, 0.08 * (_GABLE[roof] > 0.1), 0)
    corr = np.where(roof == 3, 0.06 * np.cos(2 * np.pi * u / 0.9), 0.0)
    weather = nz["mid"][rr, cc] - 0.5
    col = _ROOF[roof] * (f + corr + tone + 0.12 * weather)[:, None] + 6 * (nz["fine"][rr, cc] - 0.5)[:, None]
    # eaves: a darker line where the building ends
    edge = np.zeros(rr.shape, bool)
    H, W = slots_full.shape
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        r2, c2 = np.clip(rr + dr, 0, H - 1), np.clip(cc + dc, 0, W - 1)
        edge |= slots_full[r2, c2] != slots_full[rr, cc]
    return col * np.where(edge, 0.78, 1.0)[:, None]


def _tree_shadow(h, sun, ps):
    """Pixels shaded by the crown height field ``h`` (metres): marching toward the sun."""
    az, el = math.radians(sun["azimuth"]), math.radians(sun["elevation"])
    ux, uy = math.sin(az), -math.cos(az)  # toward the sun in (col, row)
    tan_e = math.tan(el)
    hmax = float(h.max())
    shade = np.zeros(h.shape, bool)
    if hmax <= 0:
        return shade
    steps = int(math.ceil(hmax / tan_e / ps))
    H, W = h.shape
    for k in range(1, steps + 1, 2):
        dc, dr = int(round(k * ux)), int(round(k * uy))
        drop = k * ps * tan_e
        src = h[max(0, dr):H + min(0, dr), max(0, dc):W + min(0, dc)]
        dst = (slice(max(0, -dr), H - max(0, dr)), slice(max(0, -dc), W - max(0, dc)))
        shade[dst] |= (src - drop) > h[dst] + 0.3
    return shade


def halo_px(plan: EpochPlan, pixel_size_m: float) -> int:
    """Halo needed around a window: tree shadows, blur and misregistration."""
    el = math.radians(plan.sun["elevation"])
    shift = plan.effects.get("shift_px") or {"dx": 0, "dy": 0}
    return int(math.ceil(plan.max_tree_m / math.tan(el) / pixel_size_m)) + 4 + int(
        math.ceil(max(abs(shift["dx"]), abs(shift["dy"])))) + 1


def render_window(plan: EpochPlan, grid: WindowGrid, row0: int, col0: int, height: int, width: int,
                  *, seed: int, bands: int = 3) -> tuple:
    """Render one epoch over the window ``[row0:row0+height, col0:col0+width]`` of the scene.

    Parameters
    ----------
    plan : EpochPlan
        The epoch's landscape, sun and distractor effects.
    grid : WindowGrid
        Scene georeferencing.
    row0, col0, height, width : int
        The window, in global scene pixels.
    seed : int
        Scene seed (textures).
    bands : {3, 4}
        RGB or RGB + NIR.

    Returns
    -------
    image : ndarray (bands, height, width), uint8
        Valid pixels are >= 1; nodata pixels are 0.
    valid : ndarray (height, width), bool
        True inside the flown area.

    Notes
    -----
    Rendered with a halo of :func:`halo_px` pixels, so the result does not depend on how
    the scene is cut into windows.
    """
    ps = grid.pixel_size_m
    pad = halo_px(plan, ps)
    R0, C0, H, W = row0 - pad, col0 - pad, height + 2 * pad, width + 2 * pad
    tr = grid.transform(R0, C0)
    x = ((np.arange(C0, C0 + W) + 0.5) * ps).astype(np.float64)
    y = (-(np.arange(R0, R0 + H) + 0.5) * ps).astype(np.float64)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    west, south, east, north = array_bounds(H, W, tr)
    wbox = box(west, south, east, north)
    idx = np.sort(plan.tree.query(wbox))
    local = [plan.features[i] for i in idx]
    slots = rfeatures.rasterize(((f.geom, k + 1) for k, f in enumerate(local)), out_shape=(H, W),
                                transform=tr, fill=0, dtype="int32") if local else np.zeros((H, W), np.int32)
    kind = np.array([0] + [K[f.kind] for f in local], np.uint8)[slots]
    nz = {"lo": fbm(x, y, 35.0, seed, 1, 3), "mid": fbm(x, y, 4.0, seed, 2, 2),
          "fine": value_noise(x, y, 0.6, seed, 3), "leaf": value_noise(x, y, 0.45, seed, 4)}
    img = np.zeros((H, W, 4), np.float32)
    heights = np.zeros((H, W), np.float32)
    epoch = plan.epoch
    for kname in KINDS[1:]:
        rr, cc = np.nonzero(kind == K[kname])
        if rr.size == 0:
            continue
        slot = slots[rr, cc]
        tone = _attr(local, "tone", 0, epoch)[slot]
        if kname == "crop":
            col = _crop(img, rr, cc, slot, local, x32, y32, nz, epoch)
        elif kname == "grass":
            dry = np.clip((nz["lo"][rr, cc] - 0.45) * 2.5, 0, 0.7)
            col = _mix((92, 116, 62, 175), (150, 144, 98, 140), dry) * (1 + tone + 0.3 * (nz["mid"][rr, cc] - 0.5))[:, None]
            col += 10 * (nz["fine"][rr, cc] - 0.5)[:, None]
        elif kname in ("road", "lane"):
            surf = np.array([0] + [f.params.get("surface", "concrete") == "asphalt" for f in local], bool)[slot]
            col = np.where(surf[:, None], _flat((88, 88, 92, 78), tone, nz, rr, cc, 0.15, 10),
                           _flat((166, 163, 154, 148), tone, nz, rr, cc, 0.15, 10))
        elif kname in ("canal", "pond"):
            base = (70, 84, 66, 24) if kname == "canal" else (46, 70, 64, 18)
            col = _flat(base, tone, nz, rr, cc, 0.35, 3)
        elif kname == "village_ground":
            g = np.clip((nz["mid"][rr, cc] - 0.55) * 4, 0, 1)
            col = _mix((132, 128, 118, 130), (84, 100, 58, 160), g) * (1 + tone + 0.2 * (nz["lo"][rr, cc] - 0.5))[:, None]
            col += 12 * (nz["fine"][rr, cc] - 0.5)[:, None]
        elif kname == "bare":
            weeds = np.clip((nz["mid"][rr, cc] - 0.7) * 4, 0, 1)
            col = _mix((170, 144, 112, 135), (112, 120, 72, 160), weeds)
            col = col * (1 + tone + 0.35 * (nz["lo"][rr, cc] - 0.5))[:, None] + 18 * (nz["fine"][rr, cc] - 0.5)[:, None]
        elif kname == "yard":
            ang = _attr(local, "angle", 0, epoch)[slot]
            u = x[cc] * np.cos(ang) + y[rr] * np.sin(ang)
            v = -x[cc] * np.sin(ang) + y[rr] * np.cos(ang)
            joint = (np.mod(u, 5.0) < ps * 0.9) | (np.mod(v, 5.0) < ps * 0.9)
            col = _flat((162, 159, 151, 150), tone, nz, rr, cc, 0.15, 8)
            col *= (np.where(joint, 0.92, 1.0) - 0.1 * np.clip(nz["mid"][rr, cc] - 0.6, 0, 1))[:, None]
        elif kname == "rubble":
            bits = value_noise(x, y, 0.5, seed, 9)[rr, cc]
            brick = np.clip((bits - 0.72) * 6, 0, 1)
            col = _mix((150, 140, 124, 126), (160, 98, 78, 110), brick)
            col = col * ((0.7 + 0.6 * bits) * (1 + tone))[:, None]
        elif kname == "trees":
            col = _trees(heights, rr, cc, slot, local, x, y, nz, plan.sun, epoch)
        else:  # building
            col = _roofs(rr, cc, slot, local, x, y, nz, plan.sun, slots, grid.x0, grid.y0)
        img[rr, cc] = col
    # shadows: buildings (vector, ground only) and tree crowns (height field)
    shade = _tree_shadow(heights, plan.sun, ps)
    if plan.shadow_tree is not None:
        sidx = plan.shadow_tree.query(wbox)
        if len(sidx):
            bshade = rfeatures.rasterize(((plan.shadows[i], 1) for i in np.sort(sidx)), out_shape=(H, W),
                                         transform=tr, fill=0, dtype="uint8").astype(bool)
            shade |= bshade & (kind != K["building"])
    soft = ndimage.uniform_filter(shade.astype(np.float32), 3)
    img *= (1 - soft[..., None] * (1 - _SHADOW[None, None]))
    img = np.moveaxis(img, -1, 0)[:bands]
    img = ndimage.gaussian_filter(img, sigma=(0, 0.55, 0.55), truncate=3.0)
    rows, cols = np.arange(R0, R0 + H), np.arange(C0, C0 + W)
    img += sensor_noise(rows, cols, plan.noise_seed, bands)
    if plan.effects.get("radiometric") or plan.effects.get("strip"):
        from .distractors import radiometry
        img = radiometry(img, x, y, plan.effects, (grid.x0, grid.y0))
    shift = plan.effects.get("shift_px") or {"dx": 0.0, "dy": 0.0}
    if shift["dx"] or shift["dy"]:
        img = np.stack([ndimage.shift(b, (shift["dy"], shift["dx"]), order=1, mode="nearest")
                        [pad:pad + height, pad:pad + width] for b in img])
    else:
        img = img[:, pad:pad + height, pad:pad + width]
    out = np.clip(np.rint(img), 1, 255).astype(np.uint8)
    q = plan.effects.get("jpeg_quality")
    if q:
        from .distractors import jpeg_roundtrip
        out[:3] = np.maximum(jpeg_roundtrip(out[:3], q), 1)
    wtr = grid.transform(row0, col0)
    if plan.valid_geom is None:
        valid = np.ones((height, width), bool)
    else:
        valid = rfeatures.rasterize([(plan.valid_geom, 1)], out_shape=(height, width), transform=wtr,
                                    fill=0, dtype="uint8").astype(bool)
    out[:, ~valid] = 0
    return out, valid
