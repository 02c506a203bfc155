"""Draw a job's flagged patches over its after-epoch mosaic (the README picture).

Usage (after ``make demo``)::

    .venv/bin/python docs/make_patches_figure.py out/sample docs/images/sample_patches.jpg

Reads the after mosaic of the job (``work/after.vrt``) over a window, decimated, and draws
each patch outline in its rule's colour with a small legend.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.windows import Window

COLOURS = {
    "construction_on_farmland": (230, 40, 40),
    "construction_elsewhere": (255, 150, 0),
    "afforestation": (40, 220, 60),
    "demolition": (160, 60, 220),
    "reclamation": (30, 160, 255),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", type=Path, help="job folder written by imagery-watch detect")
    ap.add_argument("out", type=Path, help="PNG to write")
    ap.add_argument("--window", type=int, nargs=4, default=(2048, 2048, 2048, 2048),
                    metavar=("ROW", "COL", "HEIGHT", "WIDTH"), help="window of the processing grid, in pixels")
    ap.add_argument("--scale", type=int, default=2, help="decimation factor")
    args = ap.parse_args(argv)

    state = json.loads((args.job / "job.json").read_text())
    mosaic = args.job / "work" / "after.vrt"
    if not mosaic.exists():
        mosaic = Path(state["inputs"]["after_path"])
    row, col, h, w = args.window
    with rasterio.open(mosaic) as ds:
        data = ds.read([1, 2, 3], window=Window(col, row, w, h), out_shape=(3, h // args.scale, w // args.scale))
        transform = ds.window_transform(Window(col, row, w, h))
    img = Image.fromarray(np.moveaxis(data, 0, -1))
    draw = ImageDraw.Draw(img)
    inv = ~(transform * transform.scale(args.scale))
    patches = gpd.read_file(args.job / "patches.gpkg", layer="patches")
    for rule, geom in zip(patches["rule"], patches.geometry):
        for poly in getattr(geom, "geoms", [geom]):
            ring = [inv * xy for xy in poly.exterior.coords]
            draw.line(ring, fill=COLOURS.get(rule, (255, 255, 255)), width=3)
    y = 8
    for rule, colour in COLOURS.items():
        draw.rectangle([8, y, 24, y + 14], fill=colour)
        draw.text((30, y + 1), rule, fill=(255, 255, 255))
        y += 20
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out, quality=85) if args.out.suffix.lower() in (".jpg", ".jpeg") else img.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
