"""The vector landscape of a synthetic scene, laid out once in world coordinates.

A scene is a list of :class:`Feature` objects (polygons with a surface ``kind`` and
rendering parameters) in painter's order: later features cover earlier ones. The list is
small (thousands of polygons for a few square kilometres), so it can be held for a
city-sized mosaic while the pixels are rendered sheet by sheet.

The landscape imitates the Jiaxing plain: a rotated network of roads and canals with tree
belts, field blocks cut into parcels with crop rows, fish ponds, villages of small houses,
industrial yards with large sheds, bare construction land, orchards and woods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box

#: roof materials and their share among village houses
ROOFS = ("tile_red", "tile_brown", "tile_dark", "steel_blue", "concrete", "white")
_HOUSE_ROOF_P = (0.24, 0.16, 0.18, 0.12, 0.2, 0.1)

#: crop stages (phenology / tillage) a parcel can show
CROP_STAGES = ("green", "young", "vegetable", "ripe", "stubble", "tilled")
_BEFORE_STAGE_P = (0.42, 0.18, 0.16, 0.0, 0.1, 0.14)

#: land-use survey class of each surface kind (crop and trees depend on their state)
KIND_CLASS = {
    "grass": "low_vegetation", "road": "built", "lane": "built", "canal": "water",
    "pond": "water", "village_ground": "built", "bare": "bare", "yard": "built",
    "rubble": "bare", "trees": "tree", "building": "built",
}

COUNTY_NAMES = ("Nanhu", "Xiuzhou", "Jiashan", "Haiyan", "Haining", "Pinghu", "Tongxiang")


@dataclass
class Feature:
    """One polygon of the landscape.

    Attributes
    ----------
    geom : shapely Polygon or MultiPolygon
        Footprint in world coordinates (grid CRS, metres).
    kind : str
        Surface kind: ``grass``, ``crop``, ``road``, ``lane``, ``canal``, ``pond``,
        ``village_ground``, ``bare``, ``yard``, ``rubble``, ``trees``, ``building``.
    params : dict
        Rendering parameters (crop stage and row angle, roof, height, tree style...).
    after : dict or None
        Parameters that differ in the after epoch (seasonal distractors), else None.
    role : str
        Where it came from (``parcel``, ``house``, ``shed``...), for change placement.
    """

    geom: object
    kind: str
    params: dict = field(default_factory=dict)
    after: dict | None = None
    role: str = ""

    def params_for(self, epoch: str) -> dict:
        if epoch == "after" and self.after:
            return {**self.params, **self.after}
        return self.params


@dataclass
class Layout:
    """Everything laid out for a scene (before epoch), plus the GIS layers."""

    features: list
    farmland: list  # (geom, kind)
    approved: list  # geom
    counties: list  # (geom, name)
    phi: float  # main orientation of the landscape, radians


def rotated_rect(cx: float, cy: float, length: float, width: float, angle: float) -> Polygon:
    """Rectangle centred on (cx, cy), ``length`` along ``angle`` (radians from east)."""
    c, s = math.cos(angle), math.sin(angle)
    hl, hw = length / 2.0, width / 2.0
    pts = [(cx + c * u - s * v, cy + s * u + c * v) for u, v in ((-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw))]
    return Polygon(pts)


def _wobbly_line(rng, p0, p1, amp: float, step: float = 40.0) -> LineString:
    n = max(2, int(math.dist(p0, p1) / step) + 1)
    t = np.linspace(0.0, 1.0, n)
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    ln = math.hypot(dx, dy)
    nx, ny = -dy / ln, dx / ln
    k1, k2 = rng.uniform(1, 3), rng.uniform(3, 7)
    ph1, ph2 = rng.uniform(0, 2 * math.pi, 2)
    off = amp * (np.sin(2 * math.pi * k1 * t + ph1) + 0.4 * np.sin(2 * math.pi * k2 * t + ph2))
    return LineString(np.column_stack([p0[0] + dx * t + nx * off, p0[1] + dy * t + ny * off]))


def _frame(phi: float, cx: float, cy: float):
    c, s = math.cos(phi), math.sin(phi)

    def to_world(u, v):
        return cx + c * u - s * v, cy + s * u + c * v

    return to_world


def _network(rng, bounds, phi):
    """Roads and canals crossing the scene along the two main directions."""
    minx, miny, maxx, maxy = bounds
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    half = math.hypot(maxx - minx, maxy - miny) / 2 + 50
    to_world = _frame(phi, cx, cy)
    lines = []
    for axis in (0, 1):
        pos = -half + rng.uniform(40, 200)
        while pos < half:
            r = rng.random()
            if r < 0.3:
                kind, width, tone = "road", rng.uniform(7, 12), "asphalt"
            elif r < 0.65:
                kind, width, tone = "road", rng.uniform(4, 6.5), "concrete"
            else:
                kind, width, tone = "canal", rng.uniform(7, 22), ""
            ends = [(-half, pos), (half, pos)] if axis == 0 else [(pos, -half), (pos, half)]
            p0, p1 = to_world(*ends[0]), to_world(*ends[1])
            amp = rng.uniform(0, 3) if kind == "road" else rng.uniform(2, 12)
            lines.append((kind, width, tone, _wobbly_line(rng, p0, p1, amp)))
            pos += rng.uniform(160, 420)
    return lines


def _parcels_of_block(rng, block, phi):
    """Cut a block into field parcels along a rotated grid (strips of varying width)."""
    ang = phi + rng.normal(0, 0.04)
    c = block.centroid
    local = affinity.rotate(block, -ang, origin=c, use_radians=True)
    minx, miny, maxx, maxy = local.bounds
    us = [minx]
    while us[-1] < maxx:
        us.append(us[-1] + rng.uniform(22, 70))
    vs = [miny]
    while vs[-1] < maxy:
        vs.append(vs[-1] + rng.uniform(50, 190))
    rects = [box(us[i], vs[j], us[i + 1], vs[j + 1]) for i in range(len(us) - 1) for j in range(len(vs) - 1)]
    rects = [affinity.rotate(r, ang, origin=c, use_radians=True) for r in rects]
    out = []
    for piece in shapely.intersection(np.array(rects, dtype=object), block):
        bund = rng.uniform(0.4, 1.2)
        piece = piece.buffer(-bund, join_style="mitre")
        for part in getattr(piece, "geoms", [piece]):
            if part.geom_type == "Polygon" and part.area > 150:
                out.append((part, ang))
    return out


def _houses(rng, parcel, ang):
    """Rows of small village houses inside a parcel, along its orientation."""
    c = parcel.centroid
    local = affinity.rotate(parcel, -ang, origin=c, use_radians=True)
    inner = local.buffer(-1.5)
    if inner.is_empty:
        return [], []
    minx, miny, maxx, maxy = local.bounds
    houses, clumps = [], []
    v = miny + rng.uniform(1, 4)
    while v < maxy:
        depth = rng.uniform(8, 12)
        u = minx + rng.uniform(0, 5)
        while u < maxx:
            length = rng.uniform(10, 17)
            rect = box(u, v, u + length, v + depth)
            if inner.contains(rect):
                if rng.random() < 0.82:
                    houses.append(affinity.rotate(rect, ang, origin=c, use_radians=True))
                elif rng.random() < 0.5:
                    p = affinity.rotate(rect.centroid, ang, origin=c, use_radians=True)
                    clumps.append(p.buffer(rng.uniform(3, 6), quad_segs=6))
            u += length + rng.uniform(1.5, 6)
        v += depth + rng.uniform(5, 12)
    return houses, clumps


def _house_params(rng, ang, kind_roofs=ROOFS, p=_HOUSE_ROOF_P, height=(5.5, 11.0)):
    return {"roof": str(rng.choice(kind_roofs, p=p)), "height_m": float(rng.uniform(*height)),
            "angle": float(ang), "tone": float(rng.normal(0, 0.06))}


def _sheds(rng, parcel, ang, feats, role):
    """An industrial yard with one or two large sheds set back from its edges."""
    feats.append(Feature(parcel, "yard", {"tone": float(rng.normal(0, 0.05)), "angle": ang}, role=role))
    c = parcel.centroid
    local = affinity.rotate(parcel, -ang, origin=c, use_radians=True).buffer(-6)
    if local.is_empty:
        return
    minx, miny, maxx, maxy = local.bounds
    for _ in range(int(rng.integers(1, 3))):
        L = rng.uniform(20, min(70, max(21, maxx - minx)))
        W = rng.uniform(12, min(35, max(13, maxy - miny)))
        u, v = rng.uniform(minx, max(minx, maxx - L)), rng.uniform(miny, max(miny, maxy - W))
        rect = box(u, v, u + L, v + W)
        if local.contains(rect) and not any(f.kind == "building" and f.geom.intersects(
                affinity.rotate(rect, ang, origin=c, use_radians=True).buffer(4)) for f in feats[-3:]):
            geom = affinity.rotate(rect, ang, origin=c, use_radians=True)
            feats.append(Feature(geom, "building", _house_params(
                rng, ang, ("steel_blue", "white", "concrete", "tile_dark"), (0.45, 0.25, 0.2, 0.1), (6, 11)), role=role))


def _trees(rng, style: str, ang: float) -> dict:
    if style == "orchard":
        sp = rng.uniform(3.5, 5.0)
        return {"style": style, "spacing_m": sp, "radius_m": sp * rng.uniform(0.35, 0.45), "jitter": 0.1,
                "height_m": rng.uniform(2.5, 4.0), "angle": ang, "tone": float(rng.normal(0, 0.06)),
                "seed": int(rng.integers(1 << 30))}
    if style == "young":
        sp = rng.uniform(2.5, 3.5)
        return {"style": style, "spacing_m": sp, "radius_m": rng.uniform(0.7, 1.1), "jitter": 0.08,
                "height_m": rng.uniform(1.5, 3.0), "angle": ang, "tone": float(rng.normal(0.05, 0.05)),
                "seed": int(rng.integers(1 << 30))}
    sp = rng.uniform(3.0, 4.5)
    return {"style": style, "spacing_m": sp, "radius_m": sp * rng.uniform(0.62, 0.75), "jitter": 0.9,
            "height_m": rng.uniform(6.0, 11.0), "angle": ang, "tone": float(rng.normal(0, 0.06)),
            "seed": int(rng.integers(1 << 30))}


def _crop(rng, ang: float, stage: str | None = None) -> dict:
    stage = stage or str(rng.choice(CROP_STAGES, p=_BEFORE_STAGE_P))
    return {"stage": stage, "row_angle": float(ang + (0.0 if rng.random() < 0.8 else math.pi / 2)),
            "row_spacing_m": float(rng.uniform(0.6, 1.4) if stage != "vegetable" else rng.uniform(1.5, 2.5)),
            "tone": float(rng.normal(0, 0.06)), "cover": float(rng.uniform(-0.1, 0.1))}


def _zones(rng, bounds, per_km2: float, radius):
    minx, miny, maxx, maxy = bounds
    area_km2 = (maxx - minx) * (maxy - miny) / 1e6
    n = rng.poisson(per_km2 * area_km2)
    return [Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy)).buffer(rng.uniform(*radius)) for _ in range(n)]


def _counties(rng, bounds):
    minx, miny, maxx, maxy = bounds
    big = box(minx - 500, miny - 500, maxx + 500, maxy + 500)
    w, h = maxx - minx, maxy - miny
    xa = minx + w * rng.uniform(0.35, 0.6)
    v = _wobbly_line(rng, (xa + rng.uniform(-0.1, 0.1) * w, maxy + 500), (xa, miny - 500), amp=0.03 * w)
    ya = miny + h * rng.uniform(0.35, 0.65)
    hl = _wobbly_line(rng, (minx - 500, ya), (maxx + 500, ya + rng.uniform(-0.1, 0.1) * h), amp=0.03 * h)
    B = 500
    west_side = shapely.make_valid(Polygon(list(v.coords) + [(minx - B, miny - B), (minx - B, maxy + B)]))
    north_side = shapely.make_valid(Polygon(list(hl.coords) + [(maxx + B, maxy + B), (minx - B, maxy + B)]))
    west = big.intersection(west_side)
    east = big.difference(west_side)
    pieces = [west, east.difference(north_side), east.intersection(north_side)]
    if rng.random() < 0.5:  # four counties: split the west one as well
        pieces = [west.difference(north_side), west.intersection(north_side)] + pieces[1:]
    pieces = [p for p in pieces if p.area > 1]
    names = rng.permutation(COUNTY_NAMES)[: len(pieces)]
    return [(p, str(n)) for p, n in zip(pieces, names)]


def build_layout(rng: np.random.Generator, bounds: tuple) -> Layout:
    """Lay out the before-epoch landscape over ``bounds`` (minx, miny, maxx, maxy), metres.

    Parameters
    ----------
    rng : numpy Generator
        Source of randomness (seeded by the caller: same seed, same layout).
    bounds : tuple of 4 floats
        Scene extent in world coordinates; the layout covers a margin around it.

    Returns
    -------
    Layout
    """
    minx, miny, maxx, maxy = bounds
    ext = box(minx - 60, miny - 60, maxx + 60, maxy + 60)
    phi = float(rng.uniform(-0.35, 0.35))
    feats: list = []
    lines = _network(rng, ext.bounds, phi)
    cut = []
    belts = []
    for kind, width, tone, line in lines:
        g = line.buffer(width / 2, cap_style="flat").intersection(ext)
        cut.append(line.buffer(width / 2 + 1.0, cap_style="flat"))
        for side in (-1, 1):
            if rng.random() < (0.55 if kind == "road" else 0.4):
                bw = rng.uniform(4, 9)
                off = line.offset_curve(side * (width / 2 + 1.0 + bw / 2))
                if not off.is_empty:
                    belt = off.buffer(bw / 2, cap_style="flat").intersection(ext)
                    belts.append(Feature(belt, "trees", _trees(rng, "belt", phi)))
                    cut.append(off.buffer(bw / 2 + 0.5, cap_style="flat"))
        params = {"tone": float(rng.normal(0, 0.05)), "surface": tone or "water"}
        feats.append(Feature(g, "canal" if kind == "canal" else "road", params, role=kind))
    blocks = ext.difference(shapely.union_all(cut))
    zones = {
        "village": _zones(rng, bounds, 7.0, (50, 110)),
        "industry": _zones(rng, bounds, 3.0, (50, 110)),
        "bare": _zones(rng, bounds, 4.0, (30, 70)),
        "ponds": _zones(rng, bounds, 3.0, (50, 110)),
        "forest": _zones(rng, bounds, 2.5, (25, 60)),
        "planned": _zones(rng, bounds, 3.0, (50, 110)),
    }
    ground, tops, farmland, approved = [], [], [], []
    for block in getattr(blocks, "geoms", [blocks]):
        if block.area < 200:
            continue
        basic = rng.random() < 0.7
        for parcel, ang in _parcels_of_block(rng, block, phi):
            c = parcel.centroid
            zone = next((z for z, zs in zones.items() if z != "planned" and any(g.contains(c) for g in zs)), "")
            planned = any(g.contains(c) for g in zones["planned"])
            r = rng.random()
            if zone == "village":
                ground.append(Feature(parcel, "village_ground", {"tone": float(rng.normal(0, 0.05))}, role="village"))
                houses, clumps = _houses(rng, parcel, ang)
                tops += [Feature(h, "building", _house_params(rng, ang), role="house") for h in houses]
                tops += [Feature(t, "trees", _trees(rng, "clump", ang), role="clump") for t in clumps]
            elif zone == "industry" and parcel.area > 900:
                site: list = []
                _sheds(rng, parcel, ang, site, "old_site" if r < 0.45 else "industry")
                ground.append(site[0])
                tops += site[1:]
                if rng.random() < 0.6:
                    approved.append(parcel)
            elif zone == "bare":
                ground.append(Feature(parcel, "bare", {"tone": float(rng.normal(0, 0.07)), "angle": ang}, role="bare"))
                if rng.random() < 0.7:
                    approved.append(parcel)
            elif zone == "ponds" and r < 0.8:
                ground.append(Feature(parcel, "grass", {"tone": float(rng.normal(0, 0.05))}, role="bank"))
                pond = parcel.buffer(-rng.uniform(2, 4), join_style="mitre")
                if not pond.is_empty:
                    ground.append(Feature(pond, "pond", {"tone": float(rng.normal(0, 0.08))}, role="pond"))
            elif zone == "forest":
                ground.append(Feature(parcel, "trees", _trees(rng, "forest", ang), role="forest"))
            elif r < 0.04:
                ground.append(Feature(parcel, "trees", _trees(rng, "orchard", ang), role="orchard"))
            elif r < 0.09:
                ground.append(Feature(parcel, "grass", {"tone": float(rng.normal(0, 0.06))}, role="fallow"))
            else:
                ground.append(Feature(parcel, "crop", _crop(rng, ang), role="parcel"))
                farmland.append((parcel, "permanent_basic" if basic else "cultivated"))
                if planned:
                    approved.append(parcel)
    features = [Feature(ext, "grass", {"tone": 0.0}, role="background")] + ground + belts + feats + tops
    for f in features:
        f.geom = shapely.make_valid(f.geom)
    return Layout(features=features, farmland=farmland, approved=approved,
                  counties=_counties(rng, bounds), phi=phi)
