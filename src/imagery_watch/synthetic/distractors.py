"""Differences between the epochs that are NOT change: the detector must ignore them.

Seasonal crop colour and tillage, another sun angle, global and per-flight-strip
radiometry, misregistration, JPEG artefacts, and irregular nodata margins. Parameters are
drawn once per scene (:func:`draw_distractors`) and recorded in ``scene.json``; the pixel
effects are applied per sheet from global coordinates so sheets join seamlessly.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from shapely.geometry import Polygon, box

from .layout import Layout

#: after-epoch crop stage reached from each before stage, with probabilities
_SEASON = {
    "green": (("ripe", "stubble", "green", "tilled"), (0.45, 0.2, 0.25, 0.1)),
    "young": (("green", "young", "ripe"), (0.6, 0.2, 0.2)),
    "vegetable": (("vegetable", "tilled", "young"), (0.5, 0.3, 0.2)),
    "ripe": (("stubble", "tilled"), (0.5, 0.5)),
    "stubble": (("tilled", "young", "stubble"), (0.5, 0.3, 0.2)),
    "tilled": (("young", "green", "tilled", "vegetable"), (0.35, 0.25, 0.25, 0.15)),
}


@dataclass(frozen=True)
class DistractorOptions:
    """Which distractors are applied to the after epoch (all on by default).

    Attributes
    ----------
    seasonal : bool
        Crop colour and tillage changes (green -> ripe, stubble, tilled, new rows).
    sun : bool
        Another sun azimuth and elevation (shadows move and change length).
    radiometric : bool
        Global gain, offset and gamma per band, and a different sensor noise.
    regional : bool
        A second flight strip with its own gain and colour cast (straight boundary).
    misregistration : bool
        A global shift of 0.3 to 2 pixels (sub-pixel part by bilinear resampling).
    jpeg : bool
        JPEG compression artefacts (quality 55-75) baked into the after pixels.
    margins : bool
        Irregular nodata margins that differ between the epochs.
    """

    seasonal: bool = True
    sun: bool = True
    radiometric: bool = True
    regional: bool = True
    misregistration: bool = True
    jpeg: bool = True
    margins: bool = True

    @classmethod
    def all(cls, on: bool) -> "DistractorOptions":
        return cls(**{f.name: on for f in fields(cls)})

    def as_dict(self) -> dict:
        return asdict(self)


def margin_polygon(rng, bounds: tuple, pixel_size_m: float) -> Polygon:
    """The flown area: the scene box with irregular, wavy margins cut from some sides."""
    minx, miny, maxx, maxy = bounds
    w, h = maxx - minx, maxy - miny
    n = 64
    t = np.linspace(0, 1, n, endpoint=False)
    pts = []
    for side in range(4):
        depth_max = rng.choice([0.0, 0.0, 0.02, 0.05, 0.08]) * min(w, h)
        a = rng.uniform(0.3, 1.0) * depth_max
        ph = rng.uniform(0, 2 * math.pi)
        d = np.clip(a * (0.6 + 0.4 * np.sin(2 * math.pi * rng.uniform(0.5, 2) * t + ph))
                    + rng.normal(0, 0.002 * min(w, h), n), 0, None) if depth_max else np.zeros(n)
        d = np.where(d > 0, d + 2 * pixel_size_m, 0.0)
        if side == 0:  # top edge, west -> east
            pts += list(zip(minx + w * t, maxy - d))
        elif side == 1:  # east edge, north -> south
            pts += list(zip(maxx - d, maxy - h * t))
        elif side == 2:  # bottom edge, east -> west
            pts += list(zip(maxx - w * t, miny + d))
        else:  # west edge, south -> north
            pts += list(zip(minx + d, miny + h * t))
    poly = Polygon(pts).buffer(0)
    return poly.intersection(box(*bounds))


def draw_distractors(rng, opts: DistractorOptions, bounds: tuple, pixel_size_m: float) -> dict:
    """Draw the scene's distractor parameters (the values written to ``scene.json``).

    Returns
    -------
    dict
        ``sun`` (before/after azimuth and elevation, degrees), ``shift_px`` (dx east,
        dy south, pixels: the after image content is displaced by this much),
        ``radiometric`` (gain, offset per band, gamma), ``strip`` (a line and the gain and
        cast of the pixels on its left), ``jpeg_quality`` (or None), ``noise_seed_after``.
    """
    minx, miny, maxx, maxy = bounds
    sun_before = {"azimuth": float(rng.uniform(145, 170)), "elevation": float(rng.uniform(50, 62))}
    sun_after = ({"azimuth": float(rng.uniform(195, 225)), "elevation": float(rng.uniform(32, 42))}
                 if opts.sun else dict(sun_before))
    out = {"sun": {"before": sun_before, "after": sun_after}, "shift_px": {"dx": 0.0, "dy": 0.0},
           "radiometric": None, "strip": None, "jpeg_quality": None, "noise_seed_after": 0}
    if opts.misregistration:
        mag, ang = rng.uniform(0.3, 2.0), rng.uniform(0, 2 * math.pi)
        out["shift_px"] = {"dx": round(mag * math.cos(ang), 3), "dy": round(mag * math.sin(ang), 3)}
    if opts.radiometric:
        out["radiometric"] = {"gain": [round(float(g), 4) for g in rng.uniform(0.88, 1.12, 4)],
                              "offset": [round(float(o), 2) for o in rng.uniform(-10, 10, 4)],
                              "gamma": round(float(rng.uniform(0.88, 1.12)), 4)}
        out["noise_seed_after"] = int(rng.integers(1, 1 << 30))
    if opts.regional:
        # a straight flight-strip boundary crossing the scene, roughly north-south
        xa, xb = rng.uniform(minx + 0.25 * (maxx - minx), maxx - 0.25 * (maxx - minx), 2)
        out["strip"] = {"line": [[float(xa), float(maxy)], [float(xb), float(miny)]],
                        "gain": [round(float(g), 4) for g in rng.uniform(0.9, 1.1, 4)],
                        "cast": [round(float(c), 2) for c in rng.uniform(-8, 8, 4)],
                        "side": "left (west) of the line, looking from its first point to its second"}
    if opts.jpeg:
        out["jpeg_quality"] = int(rng.integers(55, 76))
    return out


def apply_seasons(layout: Layout, rng) -> None:
    """Give crop parcels a different stage (and sometimes new rows) in the after epoch."""
    for f in layout.features:
        if f.kind != "crop":
            continue
        names, p = _SEASON[f.params["stage"]]
        stage = str(rng.choice(names, p=p))
        after = {"stage": stage, "tone": float(rng.normal(0, 0.06)), "cover": float(rng.uniform(-0.1, 0.1))}
        if stage in ("tilled", "young", "vegetable") and stage != f.params["stage"]:
            after["row_angle"] = f.params["row_angle"] + (math.pi / 2 if rng.random() < 0.3 else 0.0)
            after["row_spacing_m"] = float(rng.uniform(0.6, 1.4) if stage != "vegetable" else rng.uniform(1.5, 2.5))
        f.after = after


def radiometry(img: np.ndarray, x_m: np.ndarray, y_m: np.ndarray, params: dict, world_xy0: tuple) -> np.ndarray:
    """Apply the global and per-strip radiometric shifts to a float image (band, y, x), 0..255.

    ``x_m``/``y_m`` are scene coordinates of columns/rows, ``world_xy0`` the world position
    of scene coordinate (0, 0) (for the strip line, given in world coordinates).
    """
    nb = img.shape[0]
    rad = params.get("radiometric")
    if rad:
        g, o, gamma = np.asarray(rad["gain"][:nb], np.float32), np.asarray(rad["offset"][:nb], np.float32), rad["gamma"]
        img = 255.0 * np.power(np.clip(img / 255.0, 0, 1), np.float32(gamma))
        img = img * g[:, None, None] + o[:, None, None]
    strip = params.get("strip")
    if strip:
        (xa, ya), (xb, yb) = strip["line"]
        xa, xb = xa - world_xy0[0], xb - world_xy0[0]
        ya, yb = ya - world_xy0[1], yb - world_xy0[1]
        # sign of the cross product: > 0 on the left of a -> b
        side = ((xb - xa) * (y_m[:, None] - ya) - (yb - ya) * (x_m[None, :] - xa)) > 0
        g = np.asarray(strip["gain"][:nb], np.float32)[:, None, None]
        c = np.asarray(strip["cast"][:nb], np.float32)[:, None, None]
        img = np.where(side[None], img * g + c, img)
    return img


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Compress and decompress an RGB uint8 (3, y, x) image in memory (JPEG artefacts)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.moveaxis(rgb, 0, -1))).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.moveaxis(np.asarray(Image.open(buf).convert("RGB")), -1, 0)
