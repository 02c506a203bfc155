"""True changes of the after epoch, each with the truth polygon of its footprint.

Every change is confined to its truth polygon: new buildings are set back inside their
site so that their shadows (under the after-epoch sun) fall inside it, new trees are
planted only where their shadows stay inside the planting, and a demolition's polygon
holds the removed buildings together with the shadows they cast in the before epoch.
Outside the truth polygons the after epoch differs from the before epoch only by the
distractors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity
from shapely.strtree import STRtree

from .layout import Feature, Layout, _crop, _trees, rotated_rect

log = logging.getLogger(__name__)

_CROP_CLASS = {"green": "low_vegetation", "young": "low_vegetation", "vegetable": "low_vegetation",
               "ripe": "low_vegetation", "stubble": "bare", "tilled": "bare"}
_OBSTACLE_KINDS = ("road", "canal", "trees", "pond")


@dataclass
class ChangeSet:
    """Modifications of the after epoch and their truth records."""

    added: list  # Features drawn on top in the after epoch
    removed: set  # indices of before features absent after
    truth: list  # dicts: geometry, rule, approved, before_class, after_class, area_m2, kind


def shadow_vector(height_m: float, sun: dict) -> tuple:
    """World displacement (dx east, dy north) in metres of the shadow tip of a height."""
    length = height_m / math.tan(math.radians(sun["elevation"]))
    az = math.radians(sun["azimuth"])
    return -length * math.sin(az), -length * math.cos(az)


def building_shadow(geom, height_m: float, sun: dict):
    """Shadow polygon cast on flat ground by a box building (footprint excluded)."""
    dx, dy = shadow_vector(height_m, sun)
    return shapely.convex_hull(shapely.union(geom, affinity.translate(geom, dx, dy))).difference(geom)


def feature_class(f: Feature, epoch: str = "before") -> str:
    """Land-cover label of a feature's surface in an epoch."""
    if f.kind == "crop":
        return _CROP_CLASS[f.params_for(epoch)["stage"]]
    from .layout import KIND_CLASS
    return KIND_CLASS[f.kind]


class _Placer:
    def __init__(self, layout: Layout, valid_area, rng):
        self.rng = rng
        self.valid = valid_area
        self.used: list = []
        obstacles = [f.geom for f in layout.features if f.kind in _OBSTACLE_KINDS]
        self.obstacles = STRtree(obstacles) if obstacles else None
        self.approved = shapely.union_all(layout.approved) if layout.approved else shapely.Polygon()

    def free(self, geom) -> bool:
        if not self.valid.contains(geom):
            return False
        g = geom.buffer(4)
        if any(u.intersects(g) for u in self.used):
            return False
        if self.obstacles is not None and len(self.obstacles.query(geom.buffer(0.5), predicate="intersects")):
            return False
        return True

    def rect_in(self, container, angle: float, min_area=320.0, max_area=3000.0):
        """A random rectangle (aligned with ``angle``) inside ``container``, or None."""
        inner = container.buffer(-1.0)
        if inner.is_empty:
            return None
        ca, sa = math.cos(angle), math.sin(angle)
        local = affinity.rotate(inner, -angle, origin=(0, 0), use_radians=True)
        a, b, c, d = local.bounds
        for _ in range(12):
            area = math.exp(self.rng.uniform(math.log(min_area), math.log(max_area)))
            aspect = self.rng.uniform(1.0, 2.2)
            L, W = math.sqrt(area * aspect), math.sqrt(area / aspect)
            if self.rng.random() < 0.5:
                L, W = W, L
            if L > c - a:
                L, W = c - a, area / (c - a)
            if W > d - b:
                W = d - b
            if L * W < min_area or L < 12 or W < 12:
                continue
            u = self.rng.uniform(a + L / 2, c - L / 2)
            v = self.rng.uniform(b + W / 2, d - W / 2)
            rect = rotated_rect(u * ca - v * sa, u * sa + v * ca, L, W, angle)
            if inner.contains(rect) and self.free(rect):
                return rect
        return None

    def is_approved(self, geom) -> bool:
        return bool(self.approved.intersection(geom).area >= 0.5 * geom.area)


def _new_buildings(rng, site, angle: float, sun: dict) -> list:
    """Buildings inside ``site`` whose shadows under ``sun`` stay inside it."""
    out: list = []
    if rng.random() < 0.25:
        return out  # hardstanding only
    for _ in range(int(rng.integers(1, 4))):
        h = float(rng.uniform(4, 10))
        dx, dy = shadow_vector(h, sun)
        inner = site.buffer(-1.0, join_style="mitre")
        room = inner.intersection(affinity.translate(inner, -dx, -dy))
        if room.is_empty or room.area < 60:
            break
        minx, miny, maxx, maxy = room.bounds
        for _ in range(10):
            L, W = rng.uniform(8, 30), rng.uniform(6, 18)
            b = rotated_rect(rng.uniform(minx, maxx), rng.uniform(miny, maxy), L, W, angle)
            if room.contains(b) and not any(o.geom.buffer(2).intersects(b) for o in out):
                roof = str(rng.choice(("steel_blue", "white", "concrete", "tile_red", "tile_dark"),
                                      p=(0.4, 0.2, 0.2, 0.1, 0.1)))
                out.append(Feature(b, "building", {"roof": roof, "height_m": h, "angle": angle,
                                                   "tone": float(rng.normal(0, 0.05))}, role="new"))
                break
    return out


def _construction(rng, placer, container, angle, sun_after, rule, before_class, changes: ChangeSet) -> bool:
    site = placer.rect_in(container, angle)
    if site is None:
        return False
    placer.used.append(site)
    changes.added.append(Feature(site, "yard", {"tone": float(rng.normal(0, 0.05)), "angle": angle}, role="new"))
    builds = _new_buildings(rng, site, angle, sun_after)
    changes.added += builds
    changes.truth.append({"geometry": site, "rule": rule, "approved": placer.is_approved(site),
                          "before_class": before_class, "after_class": "built",
                          "kind": "buildings" if builds else "hardstanding"})
    return True


def _afforest(rng, placer, container, angle, sun_after, before_class, changes: ChangeSet) -> bool:
    plot = placer.rect_in(container, angle, 400.0, 3000.0)
    if plot is None:
        return False
    style = "young" if rng.random() < 0.5 else "forest"
    params = _trees(rng, style, angle)
    if style == "forest":
        params["height_m"] = float(rng.uniform(4.0, 7.0))
    dx, dy = shadow_vector(params["height_m"], sun_after)
    room = plot.intersection(affinity.translate(plot, -dx, -dy)).buffer(-0.3)
    if room.is_empty or room.area < 0.6 * plot.area:
        return False
    placer.used.append(plot)
    if style == "young":  # the planted ground: grass between the rows
        changes.added.append(Feature(plot, "grass", {"tone": float(rng.normal(0, 0.05))}, role="new"))
    changes.added.append(Feature(room, "trees", params, role="new"))
    changes.truth.append({"geometry": plot, "rule": "afforestation", "approved": placer.is_approved(plot),
                          "before_class": before_class, "after_class": "tree",
                          "kind": "young_trees" if style == "young" else "closed_canopy"})
    return True


def _removal_site(rng, placer, seed_idx, layout, btree, sun_before, target_m2):
    """Grow a group of neighbouring buildings from ``seed_idx``; return (indices, polygon)."""
    feats = layout.features
    group = [seed_idx]

    def footprint(idx):
        parts = []
        for i in idx:
            f = feats[i]
            dx, dy = shadow_vector(f.params["height_m"], sun_before)
            parts.append(shapely.convex_hull(shapely.union(f.geom, affinity.translate(f.geom, dx, dy))))
        return shapely.convex_hull(shapely.union_all(parts)).buffer(1.5, join_style="mitre")

    site = footprint(group)
    for _ in range(4):
        hits = [int(i) for i in btree.query(site) if int(i) not in group and feats[int(i)].geom.intersects(site)]
        if hits:
            group += hits
        elif site.area < target_m2:
            near = [int(i) for i in btree.query(site.buffer(10)) if int(i) not in group]
            if not near:
                break
            group.append(near[0])
        else:
            break
        site = footprint(group)
    hits = [int(i) for i in btree.query(site) if int(i) not in group and feats[int(i)].geom.intersects(site)]
    if hits or site.area > 4000 or not placer.free(site):
        return None
    return group, site


def place_changes(layout: Layout, rng: np.random.Generator, *, counts: dict, valid_area,
                  sun_before: dict, sun_after: dict) -> ChangeSet:
    """Choose and build the true changes of the after epoch.

    Parameters
    ----------
    layout : Layout
        The before-epoch landscape.
    rng : numpy Generator
        Seeded randomness.
    counts : dict
        Wanted number of changes per rule name (fewer are placed when room runs out).
    valid_area : shapely geometry
        Where both epochs have data; changes are placed inside it.
    sun_before, sun_after : dict
        ``{"azimuth": deg, "elevation": deg}`` of each epoch.

    Returns
    -------
    ChangeSet
    """
    feats = layout.features
    changes = ChangeSet([], set(), [])
    placer = _Placer(layout, valid_area, rng)
    crops = [f for f in feats if f.kind == "crop" and f.geom.area > 600]
    approved_crops = [f for f in crops if placer.is_approved(f.geom)]
    open_land = [f for f in feats if f.role in ("bare", "fallow") and f.geom.area > 600]
    bare_land = [f for f in open_land if f.kind == "bare"]
    open_aff = list(open_land)

    def pick(pool):
        """Take a random candidate out of ``pool`` (each parcel hosts at most one change)."""
        return pool.pop(int(rng.integers(len(pool)))) if pool else None

    def pick_any(pool):
        return pool[int(rng.integers(len(pool)))] if pool else None

    def cof(k):
        f = pick_any(approved_crops if (k % 2 == 0 and approved_crops) else crops)
        return f and _construction(rng, placer, f.geom, layout.phi,
                                   sun_after, "construction_on_farmland", feature_class(f), changes)

    def celse(k):
        f = open_land[int(rng.integers(len(open_land)))] if open_land else None
        return f and _construction(rng, placer, f.geom, layout.phi, sun_after, "construction_elsewhere",
                                   feature_class(f), changes)

    def aff(k):
        f = pick(open_aff) if (k % 3 == 0 and open_aff) else pick_any(crops)
        return f and _afforest(rng, placer, f.geom, layout.phi, sun_after, feature_class(f), changes)

    bidx = [i for i, f in enumerate(feats) if f.kind == "building"]
    btree = STRtree([feats[i].geom for i in bidx])
    houses = [k for k, i in enumerate(bidx) if feats[i].role in ("house", "industry")]
    old = [k for k, i in enumerate(bidx) if feats[i].role == "house"]
    old_yards = [f for f in feats if f.role == "old_site" and f.kind == "yard" and 600 < f.geom.area < 4500]

    def removal(rule, after_kind, k):
        pool = houses if rule == "demolition" else old
        if not pool:
            return False
        got = _removal_site(rng, placer, pool[int(rng.integers(len(pool)))], _Sub(feats, bidx), btree,
                            sun_before, float(rng.uniform(300, 1500)))
        if got is None:
            return False
        group, site = got
        placer.used.append(site)
        changes.removed.update(bidx[g] for g in group)
        params = ({"tone": float(rng.normal(0, 0.08))} if after_kind == "rubble"
                  else _crop(rng, layout.phi, str(rng.choice(("young", "vegetable", "green", "tilled")))))
        changes.added.append(Feature(site, after_kind, params, role="new"))
        after_class = "bare" if after_kind == "rubble" else feature_class(changes.added[-1], "before")
        changes.truth.append({"geometry": site, "rule": rule, "approved": placer.is_approved(site),
                              "before_class": "built", "after_class": after_class,
                              "kind": "buildings_removed"})
        return True

    def recl(k):
        if k % 3 == 1 and old_yards:
            yard = pick(old_yards)
            inside = [bidx[j] for j in btree.query(yard.geom) if feats[bidx[j]].geom.within(yard.geom.buffer(0.5))]
            parts = [yard.geom] + [building_shadow(feats[i].geom, feats[i].params["height_m"], sun_before)
                                   for i in inside]
            site = shapely.union_all(parts).buffer(0.5, join_style="mitre")
            if not placer.free(site):
                return False
            placer.used.append(site)
            changes.removed.update(inside)
            stage = str(rng.choice(("young", "vegetable", "tilled")))
            changes.added.append(Feature(yard.geom, "crop", _crop(rng, layout.phi, stage), role="new"))
            changes.truth.append({"geometry": site, "rule": "reclamation", "approved": placer.is_approved(site),
                                  "before_class": "built", "after_class": _CROP_CLASS[stage],
                                  "kind": "yard_to_crop"})
            return True
        if k % 3 == 2 and bare_land:
            f = bare_land[int(rng.integers(len(bare_land)))]
            plot = placer.rect_in(f.geom, layout.phi, 400.0, 3000.0)
            if plot is None:
                return False
            placer.used.append(plot)
            stage = str(rng.choice(("young", "vegetable", "green")))
            changes.added.append(Feature(plot, "crop", _crop(rng, layout.phi, stage), role="new"))
            changes.truth.append({"geometry": plot, "rule": "reclamation", "approved": placer.is_approved(plot),
                                  "before_class": "bare", "after_class": "low_vegetation", "kind": "bare_to_crop"})
            return True
        return removal("reclamation", "crop", k)

    attempts = {
        "construction_on_farmland": cof,
        "construction_elsewhere": celse,
        "afforestation": aff,
        "demolition": lambda k: removal("demolition", "rubble", k),
        "reclamation": recl,
    }
    # round robin over the rules, so that a small scene gets some of each
    placed = {rule: 0 for rule in attempts}
    tries = {rule: 0 for rule in attempts}
    active = [r for r in attempts if counts.get(r, 0) > 0]
    while active:
        for rule in list(active):
            for _ in range(150):
                tries[rule] += 1
                if attempts[rule](tries[rule]):
                    placed[rule] += 1
                    break
            else:
                active.remove(rule)
                continue
            if placed[rule] >= counts[rule]:
                active.remove(rule)
    for rule, n in placed.items():
        if n < counts.get(rule, 0):
            log.info("placed %d of %d %s changes (no more room)", n, counts[rule], rule)
    for t in changes.truth:
        t["area_m2"] = float(t["geometry"].area)
    return changes


class _Sub:
    """View of the layout so that building-tree indices map back to features."""

    def __init__(self, feats, bidx):
        self.features = _Idx(feats, bidx)


class _Idx:
    def __init__(self, feats, bidx):
        self.feats, self.bidx = feats, bidx

    def __getitem__(self, k):
        return self.feats[self.bidx[k]]
