"""Small PNG previews of a mosaic folder, optionally with truth outlines."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..io.writers import ensure_dir, read_layer_frame, read_sheet_overview, write_png

log = logging.getLogger(__name__)

#: outline colour of each rule in previews
RULE_COLOURS = {
    "construction_on_farmland": (255, 40, 40), "construction_elsewhere": (255, 150, 0),
    "afforestation": (40, 255, 80), "demolition": (255, 0, 255), "reclamation": (0, 220, 255),
}
NODATA_GREY = (128, 128, 128)


def preview_mosaic(folder, out_png, *, max_px: int = 800, truth=None, palette: bool = False) -> Path:
    """Render a downsampled PNG of a folder of sheets (nodata grey, optional truth outlines).

    Parameters
    ----------
    folder : path
        Folder of GeoTIFF sheets on one grid.
    out_png : path
        PNG to write.
    max_px : int
        Longest side of the preview, pixels.
    truth : GeoDataFrame, optional
        Polygons with a ``rule`` column, drawn as outlines coloured by rule.
    palette : bool
        Write a 256-colour PNG (about a third of the size; for documentation).

    Returns
    -------
    Path of the PNG.

    Raises
    ------
    InputFileError
        If the folder holds no sheets.
    """
    from PIL import Image, ImageDraw

    sheets = sorted(Path(folder).glob("*.tif"))
    if not sheets:
        raise InputFileError(f"{folder}: no .tif sheets found; pass the before/ or after/ folder of a scene")
    infos = []
    for s in sheets:
        _, _, b = read_sheet_overview(s, out_height=1, out_width=1)
        infos.append((s, b))
    minx = min(b.left for _, b in infos)
    maxx = max(b.right for _, b in infos)
    miny = min(b.bottom for _, b in infos)
    maxy = max(b.top for _, b in infos)
    scale = max_px / max(maxx - minx, maxy - miny)  # preview pixels per metre
    W, H = max(1, round((maxx - minx) * scale)), max(1, round((maxy - miny) * scale))
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = NODATA_GREY
    for s, b in infos:
        c0, c1 = round((b.left - minx) * scale), round((b.right - minx) * scale)
        r0, r1 = round((maxy - b.top) * scale), round((maxy - b.bottom) * scale)
        if c1 <= c0 or r1 <= r0:
            continue
        rgb, valid, _ = read_sheet_overview(s, out_height=r1 - r0, out_width=c1 - c0)
        tile = np.moveaxis(rgb, 0, -1).copy()
        tile[~valid] = NODATA_GREY
        canvas[r0:r1, c0:c1] = tile
    if truth is not None and len(truth):
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        for geom, rule in zip(truth.geometry, truth["rule"]):
            for poly in getattr(geom, "geoms", [geom]):
                pts = [((x - minx) * scale, (maxy - y) * scale) for x, y in poly.exterior.coords]
                draw.line(pts, fill=RULE_COLOURS.get(rule, (255, 255, 0)), width=1)
        canvas = np.asarray(img)
    write_png(out_png, canvas, palette=palette)
    return Path(out_png)


def preview_scene(scene_dir, out_dir, *, truth: bool = False, max_px: int = 800, palette: bool = False) -> tuple:
    """Write ``before.png`` and ``after.png`` previews of a generated scene.

    Parameters
    ----------
    scene_dir : path
        Folder written by :func:`~imagery_watch.synthetic.generate_scene`.
    out_dir : path
        Where the PNGs go (created).
    truth : bool
        Draw the truth polygons of ``layers.gpkg`` (coloured by rule).
    max_px : int
        Longest side of each preview.
    palette : bool
        Write 256-colour PNGs (smaller files).

    Returns
    -------
    (Path, Path)
        The before and after PNGs.
    """
    scene_dir = Path(scene_dir)
    for sub in ("before", "after"):
        if not (scene_dir / sub).is_dir():
            raise InputFileError(f"{scene_dir}: no {sub}/ folder; pass a folder made by 'synthetic generate'")
    frame = None
    if truth:
        gpkg = scene_dir / "layers.gpkg"
        if not gpkg.is_file():
            raise InputFileError(f"{gpkg}: not found; --truth needs the scene's layers.gpkg")
        frame = read_layer_frame(gpkg, "truth")
    out = ensure_dir(out_dir)
    paths = tuple(preview_mosaic(scene_dir / e, out / f"{e}.png", max_px=max_px, truth=frame, palette=palette)
                  for e in ("before", "after"))
    log.info("previews written: %s", ", ".join(os.fspath(p) for p in paths))
    return paths
