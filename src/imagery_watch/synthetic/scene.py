"""Assemble a synthetic scene (layout, changes, distractors) and write it to disk."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from shapely.geometry import box
from shapely.strtree import STRtree

from ..classes import RULE_NAMES
from ..errors import ConfigError
from .changes import building_shadow, feature_class, place_changes
from .distractors import DistractorOptions, apply_seasons, draw_distractors, margin_polygon
from .layout import build_layout
from .render import EpochPlan, WindowGrid, render_window

log = logging.getLogger(__name__)

CRS = "EPSG:4549"
#: default top-left corner (easting, northing) of a scene: farmland south-east of Jiaxing city
DEFAULT_ORIGIN = (652_000.0, 3_411_000.0)


@dataclass(frozen=True)
class SceneGrid:
    """Pixel grid of a scene in EPSG:4549.

    Attributes
    ----------
    x0, y0 : float
        World coordinates (m) of the top-left corner.
    pixel_size_m : float
    width_px, height_px : int
    crs : str
    """

    x0: float
    y0: float
    pixel_size_m: float
    width_px: int
    height_px: int
    crs: str = CRS

    @property
    def transform(self) -> Affine:
        return Affine(self.pixel_size_m, 0.0, self.x0, 0.0, -self.pixel_size_m, self.y0)

    @property
    def bounds(self) -> tuple:
        """(minx, miny, maxx, maxy) in metres."""
        return (self.x0, self.y0 - self.height_px * self.pixel_size_m,
                self.x0 + self.width_px * self.pixel_size_m, self.y0)

    def window_transform(self, row0: int, col0: int) -> Affine:
        return self.transform @ Affine.translation(col0, row0)

    def as_dict(self) -> dict:
        return {"crs": self.crs, "transform": list(self.transform)[:6], "width": self.width_px,
                "height": self.height_px, "pixel_size_m": self.pixel_size_m, "bounds": list(self.bounds)}


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, found {value!r}")
    return int(value)


@dataclass
class Scene:
    """A laid-out scene: renders either epoch over any window, in memory.

    Build with :func:`build_scene`. Attributes: ``grid``, ``seed``, ``bands``, ``layout``,
    ``plans`` (``{"before": EpochPlan, "after": EpochPlan}``), ``truth`` (list of dicts),
    ``distractor_params`` (dict), ``options`` (dict).
    """

    grid: SceneGrid
    seed: int
    bands: int
    layout: object
    plans: dict
    truth: list
    distractor_params: dict
    options: dict = field(default_factory=dict)

    def render(self, epoch: str, row0: int = 0, col0: int = 0, height: int | None = None,
               width: int | None = None) -> tuple:
        """Render ``epoch`` (``"before"``/``"after"``) over a window of the scene.

        Returns
        -------
        image : ndarray (bands, y, x), uint8 (0 = nodata)
        valid : ndarray (y, x), bool
        """
        if epoch not in self.plans:
            raise ConfigError(f"epoch must be 'before' or 'after', found {epoch!r}")
        height = self.grid.height_px - row0 if height is None else height
        width = self.grid.width_px - col0 if width is None else width
        wg = WindowGrid(self.grid.x0, self.grid.y0, self.grid.pixel_size_m)
        return render_window(self.plans[epoch], wg, row0, col0, height, width, seed=self.seed, bands=self.bands)

    def truth_frame(self) -> gpd.GeoDataFrame:
        """The truth polygons (one row per change) as a GeoDataFrame in the grid CRS."""
        cols = {"rule": "str", "approved": "bool", "before_class": "str", "after_class": "str",
                "area_m2": "float64", "kind": "str"}
        data = {c: pd.Series([t[c] for t in self.truth], dtype=d) for c, d in cols.items()}
        data["change_id"] = pd.Series(range(1, len(self.truth) + 1), dtype="int64")
        return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([t["geometry"] for t in self.truth], crs=self.grid.crs),
                                crs=self.grid.crs)

    def layers(self) -> dict:
        """GIS layers: ``farmland``, ``approved``, ``counties``, ``landuse``, ``truth``."""
        crs = self.grid.crs
        lay = self.layout
        scene_box = box(*self.grid.bounds)

        def frame(geoms, **cols):
            geoms = [shapely.make_valid(g) for g in geoms]
            return gpd.GeoDataFrame({k: pd.Series(v, dtype=("str" if v and isinstance(v[0], str) else None))
                                     for k, v in cols.items()}, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)

        farm = [(g.intersection(scene_box), k) for g, k in lay.farmland]
        farm = [(g, k) for g, k in farm if not g.is_empty and g.area > 1]
        appr = [g.intersection(scene_box) for g in lay.approved]
        appr = [g for g in appr if not g.is_empty and g.area > 1]
        counties = [(g.intersection(scene_box), n) for g, n in lay.counties]
        counties = [(g, n) for g, n in counties if g.area > 1]
        lu = []
        for f in lay.features:
            if f.role == "background":
                continue
            g = f.geom.intersection(scene_box)
            if not g.is_empty and g.area > 1 and g.geom_type in ("Polygon", "MultiPolygon"):
                lu.append((g, feature_class(f, "before")))
        return {
            "farmland": frame([g for g, _ in farm], kind=[k for _, k in farm]),
            "approved": frame(appr, approval_id=[f"A{i + 1:04d}" for i in range(len(appr))]),
            "counties": frame([g for g, _ in counties], name=[n for _, n in counties]),
            "landuse": frame([g for g, _ in lu], **{"class": [c for _, c in lu]}),
            "truth": self.truth_frame(),
        }

    def counts(self) -> dict:
        """Number of truth changes per rule."""
        return {r: sum(1 for t in self.truth if t["rule"] == r) for r in RULE_NAMES}


def _plan(epoch, features, sun, noise_seed, effects, valid_geom) -> EpochPlan:
    shadows = [building_shadow(f.geom, f.params["height_m"], sun) for f in features if f.kind == "building"]
    heights = [f.params.get("height_m", 0.0) for f in features if f.kind == "trees"]
    return EpochPlan(epoch=epoch, features=features, tree=STRtree([f.geom for f in features]),
                     shadows=shadows, shadow_tree=STRtree(shadows) if shadows else None, sun=sun,
                     noise_seed=noise_seed, effects=effects, valid_geom=valid_geom,
                     max_tree_m=1.15 * max(heights, default=1.0))


def build_scene(*, seed: int, width_px: int, height_px: int, pixel_size_m: float = 0.2,
                origin: tuple | None = None, nir: bool = False, changes: bool = True,
                distractors: bool | DistractorOptions = True, changes_per_km2: float = 18.0) -> Scene:
    """Lay out a scene (vectors only; cheap) that can then render any window of either epoch.

    Parameters
    ----------
    seed : int
        Everything follows from it: same seed, same scene.
    width_px, height_px : int
        Scene size in pixels (16 .. 1,000,000).
    pixel_size_m : float
        Ground sampling distance, metres (default 0.2).
    origin : (float, float), optional
        World (easting, northing) of the top-left corner in EPSG:4549; default in Jiaxing.
    nir : bool
        Add a near-infrared 4th band.
    changes : bool
        Place true changes in the after epoch (False: truth is empty).
    distractors : bool or DistractorOptions
        Which non-change differences the after epoch gets (True: all, False: none).
    changes_per_km2 : float
        Wanted density of changes per rule (at least one of each is attempted).

    Returns
    -------
    Scene

    Raises
    ------
    ConfigError
        On a bad size, pixel size or seed.
    """
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    width_px = _check_int("width_px", width_px, 16, 1_000_000)
    height_px = _check_int("height_px", height_px, 16, 1_000_000)
    if not (isinstance(pixel_size_m, (int, float)) and 0.01 <= pixel_size_m <= 10):
        raise ConfigError(f"pixel_size_m must be a number in 0.01..10 metres, found {pixel_size_m!r}")
    if not changes_per_km2 >= 0:
        raise ConfigError(f"changes_per_km2 must be >= 0, found {changes_per_km2!r}")
    opts = distractors if isinstance(distractors, DistractorOptions) else DistractorOptions.all(bool(distractors))
    x0, y0 = origin if origin is not None else DEFAULT_ORIGIN
    grid = SceneGrid(float(x0), float(y0), float(pixel_size_m), width_px, height_px)
    t0 = time.perf_counter()
    # independent streams, so switching one option does not reshuffle the others
    streams = np.random.SeedSequence(seed).spawn(5)
    rng_layout, rng_dis, rng_changes, rng_season, rng_margin = (np.random.default_rng(s) for s in streams)
    layout = build_layout(rng_layout, grid.bounds)
    params = draw_distractors(rng_dis, opts, grid.bounds, grid.pixel_size_m)
    m_before = margin_polygon(rng_margin, grid.bounds, grid.pixel_size_m)
    m_after = margin_polygon(rng_margin, grid.bounds, grid.pixel_size_m) if opts.margins else m_before
    sun_b, sun_a = params["sun"]["before"], params["sun"]["after"]
    truth, after_feats = [], list(layout.features)
    if changes:
        area_km2 = (grid.bounds[2] - grid.bounds[0]) * (grid.bounds[3] - grid.bounds[1]) / 1e6
        n = max(1, int(round(changes_per_km2 * area_km2)))
        cs = place_changes(layout, rng_changes, counts={r: n for r in RULE_NAMES},
                           valid_area=m_before.intersection(m_after).buffer(-1.0), sun_before=sun_b, sun_after=sun_a)
        after_feats = [f for i, f in enumerate(layout.features) if i not in cs.removed] + cs.added
        truth = cs.truth
    if opts.seasonal:
        apply_seasons(layout, rng_season)
    effects = {"radiometric": params["radiometric"], "strip": params["strip"], "shift_px": params["shift_px"],
               "jpeg_quality": params["jpeg_quality"]}
    before = _plan("before", layout.features, sun_b, seed, {}, m_before)
    after = _plan("after", after_feats, sun_a, params["noise_seed_after"] or seed, effects, m_after)
    params["margins"] = {"before_valid_m2": round(m_before.area, 1), "after_valid_m2": round(m_after.area, 1)}
    log.info("laid out scene seed=%d (%dx%d px): %d features, %d changes in %.1f s", seed, width_px, height_px,
             len(layout.features), len(truth), time.perf_counter() - t0)
    options = {"nir": bool(nir), "changes": bool(changes), "distractors": opts.as_dict(),
               "changes_per_km2": float(changes_per_km2)}
    return Scene(grid=grid, seed=seed, bands=4 if nir else 3, layout=layout,
                 plans={"before": before, "after": after}, truth=truth, distractor_params=params, options=options)


