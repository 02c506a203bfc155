"""Helpers of the review tests: a small job folder (two georeferenced RGB mosaics, patches.gpkg, job.json)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import rasterio
from argon2 import PasswordHasher
from rasterio.transform import from_origin
from shapely.geometry import box

from imagery_watch.classes import M2_PER_MU

CRS = "EPSG:4549"
ORIGIN = (652000.0, 3411000.0)
SIZE_PX = 640
PIXEL_M = 0.2
#: cheap Argon2 parameters for tests (the server's default is 64 MiB, 3 passes)
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "root": "root-secret-333"}


def _plain_mosaics(folder):
    """Fallback imagery when the synthetic generator is not available."""
    rng = np.random.default_rng(5)
    t = from_origin(*ORIGIN, PIXEL_M, PIXEL_M)
    paths = {}
    for k, epoch in enumerate(("before", "after")):
        img = np.zeros((3, SIZE_PX, SIZE_PX), np.uint8)
        img[1] = 110 + rng.integers(0, 20, (SIZE_PX, SIZE_PX))
        img[0], img[2] = img[1] - 30, img[1] - 50
        if k:
            img[:, 200:300, 200:320] = 190
        paths[epoch] = folder / f"{epoch}.tif"
        with rasterio.open(paths[epoch], "w", driver="GTiff", width=SIZE_PX, height=SIZE_PX, count=3, dtype="uint8",
                           crs=CRS, transform=t, tiled=True, blockxsize=256, blockysize=256) as ds:
            ds.write(img)
    polys = [box(ORIGIN[0] + 200 * PIXEL_M, ORIGIN[1] - 300 * PIXEL_M, ORIGIN[0] + 320 * PIXEL_M,
                 ORIGIN[1] - 200 * PIXEL_M)]
    return paths, polys, ["Nanhu"]


def scene_files(folder):
    try:
        from imagery_watch.synthetic import generate_scene
    except ImportError:
        return _plain_mosaics(folder)
    files = generate_scene(folder / "scene", seed=11, width_px=SIZE_PX, height_px=SIZE_PX, sheet_px=1024,
                           compress="deflate", changes_per_km2=400, origin=ORIGIN)
    truth = gpd.read_file(files.layers_path, layer="truth")
    counties = gpd.read_file(files.layers_path, layer="counties")
    sheet = files.sheets[0]
    return ({"before": files.before_dir / sheet, "after": files.after_dir / sheet},
            [g for g in truth.geometry], list(counties["name"]))


def make_patches(polys, counties, *, job_id="job0001"):
    rules = ["construction_on_farmland", "afforestation", "demolition", "reclamation", "construction_elsewhere"]
    rows = []
    for i, g in enumerate(polys):
        g = g.buffer(0)
        rows.append({
            "patch_id": f"p{i:04d}", "rule": rules[i % len(rules)], "county": counties[i % len(counties)],
            "area_m2": float(g.area), "area_mu": float(g.area / M2_PER_MU), "farmland_m2": float(g.area * 0.8),
            "approved_m2": 0.0, "before_class": "low_vegetation", "after_class": "built",
            "score": round(0.95 - i * 0.05, 3), "status": "pending", "reviewer": None, "reviewed_at": None,
            "note": None, "version": 0, "job_id": job_id, "epoch_before": "2023", "epoch_after": "2024",
        })
    gdf = gpd.GeoDataFrame(rows, geometry=list(polys), crs=CRS)
    for col in ("reviewer", "reviewed_at", "note"):
        gdf[col] = gdf[col].astype(object)
    return gdf


def write_job(folder, mosaics, gdf):
    folder.mkdir(parents=True, exist_ok=True)
    gdf.to_file(folder / "patches.gpkg", layer="patches", driver="GPKG", engine="pyogrio")
    with rasterio.open(mosaics["before"]) as ds:
        grid = {"crs_wkt": ds.crs.to_wkt(), "transform": list(ds.transform)[:6], "width": ds.width,
                "height": ds.height}
    state = {"job": {"name": "test", "epoch_before": "2023", "epoch_after": "2024"},
             "inputs": {"before": str(mosaics["before"]), "after": str(mosaics["after"]),
                        "before_path": str(mosaics["before"]), "after_path": str(mosaics["after"]),
                        "bands": ["red", "green", "blue"]},
             "grid": grid, "completed": True}
    (folder / "job.json").write_text(json.dumps(state), encoding="utf-8")
    return folder


