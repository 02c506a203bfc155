"""Write a synthetic scene to disk: sheets of both epochs, GIS layers and ``scene.json``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..io.writers import COMPRESSIONS, ensure_dir, write_json, write_layers, write_sheet
from .distractors import DistractorOptions
from .scene import SceneGrid, build_scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneFiles:
    """Where a generated scene lies on disk.

    Attributes
    ----------
    out_dir, before_dir, after_dir : Path
        Scene folder and the two folders of sheets.
    layers_path : Path
        ``layers.gpkg`` (farmland, approved, counties, landuse, truth).
    scene_json : Path
        ``scene.json`` (seed, grid, options, distractor parameters, counts).
    grid : SceneGrid
    sheets : tuple of str
        Sheet file names (the same in both epoch folders).
    counts : dict
        Number of truth changes per rule.
    """

    out_dir: Path
    before_dir: Path
    after_dir: Path
    layers_path: Path
    scene_json: Path
    grid: SceneGrid
    sheets: tuple
    counts: dict


def sheet_name(row: int, col: int) -> str:
    """File name of the map sheet in sheet row ``row`` and column ``col``."""
    return f"sheet_r{row:02d}_c{col:02d}.tif"


def generate_scene(out_dir, *, seed: int, width_px: int, height_px: int, pixel_size_m: float = 0.2,
                   sheet_px: int = 2048, tile_px: int = 512, nir: bool = False, compress: str = "jpeg",
                   changes: bool = True, distractors: bool | DistractorOptions = True,
                   origin: tuple | None = None, changes_per_km2: float = 18.0, jpeg_quality: int = 88) -> SceneFiles:
    """Generate a two-epoch synthetic scene in ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created; existing files of the same names are replaced).
    seed : int
        Same seed, same bytes in every file.
    width_px, height_px : int
        Scene size in pixels.
    pixel_size_m : float
        Pixel size in metres (default 0.2).
    sheet_px : int
        Size of the square map sheets in pixels (the last row/column may be smaller).
    tile_px : int
        Internal tile size of the GeoTIFFs (multiple of 16).
    nir : bool
        Write a fourth, near-infrared band.
    compress : {"jpeg", "deflate"}
        ``jpeg``: YCbCr JPEG (plain JPEG with NIR) with an internal mask; ``deflate``:
        lossless with nodata = 0.
    changes : bool
        Place true changes (False: the truth layer is empty).
    distractors : bool or DistractorOptions
        Non-change differences of the after epoch. With ``changes=False`` and
        ``distractors=False`` both epochs are identical.
    origin : (float, float), optional
        World coordinates of the top-left corner (EPSG:4549).
    changes_per_km2 : float
        Wanted number of changes per rule and square kilometre.
    jpeg_quality : int
        Quality of the JPEG sheets.

    Returns
    -------
    SceneFiles

    Raises
    ------
    ConfigError
        On bad sizes or options.
    OutputError
        If ``out_dir`` cannot be written.
    """
    if compress not in COMPRESSIONS:
        raise ConfigError(f"compress must be one of {', '.join(COMPRESSIONS)}, found {compress!r}")
    for name, value in (("sheet_px", sheet_px), ("tile_px", tile_px)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 16 or value % 16:
            raise ConfigError(f"{name} must be a positive multiple of 16 pixels, found {value!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ConfigError(f"jpeg_quality must be 1..100, found {jpeg_quality!r}")
    scene = build_scene(seed=seed, width_px=width_px, height_px=height_px, pixel_size_m=pixel_size_m,
                        origin=origin, nir=nir, changes=changes, distractors=distractors,
                        changes_per_km2=changes_per_km2)
    out = ensure_dir(out_dir)
    dirs = {e: ensure_dir(out / e) for e in ("before", "after")}
    grid = scene.grid
    identical = not changes and not any(scene.options["distractors"].values())
    t0 = time.perf_counter()
    names = []
    for r0 in range(0, grid.height_px, sheet_px):
        for c0 in range(0, grid.width_px, sheet_px):
            h, w = min(sheet_px, grid.height_px - r0), min(sheet_px, grid.width_px - c0)
            name = sheet_name(r0 // sheet_px, c0 // sheet_px)
            names.append(name)
            image = valid = None
            for epoch in ("before", "after"):
                if not (identical and epoch == "after"):
                    image, valid = scene.render(epoch, r0, c0, h, w)
                write_sheet(dirs[epoch] / name, image, transform=grid.window_transform(r0, c0), crs=grid.crs,
                            compress=compress, valid=valid, tile_px=tile_px, jpeg_quality=jpeg_quality)
            log.info("wrote sheet %s (%d x %d px)", name, w, h)
    write_layers(out / "layers.gpkg", scene.layers())
    counts = scene.counts()
    meta = {
        "generator": "imagery_watch.synthetic",
        "seed": scene.seed,
        "size_px": {"width": grid.width_px, "height": grid.height_px},
        "grid": grid.as_dict(),
        "sheets": {"sheet_px": sheet_px, "tile_px": tile_px, "files": names, "compress": compress,
                   "jpeg_quality": jpeg_quality if compress == "jpeg" else None,
                   "nodata": "internal mask" if compress == "jpeg" else 0},
        "bands": ["red", "green", "blue", "nir"][: scene.bands],
        "options": scene.options,
        "identical_epochs": identical,
        "distractors_applied": scene.distractor_params,
        "changes_per_rule": counts,
        "notes": {"shift_px": "after-epoch content is displaced by dx pixels east and dy pixels south; "
                              "truth polygons are in before-epoch (true ground) coordinates",
                  "sun": "azimuth clockwise from north, elevation above the horizon, degrees"},
    }
    write_json(out / "scene.json", meta)
    log.info("scene written to %s in %.1f s", out, time.perf_counter() - t0)
    return SceneFiles(out_dir=out, before_dir=dirs["before"], after_dir=dirs["after"],
                      layers_path=out / "layers.gpkg", scene_json=out / "scene.json", grid=grid,
                      sheets=tuple(names), counts=counts)
