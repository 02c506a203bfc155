"""Labelled image pairs cut from a generated scene: training data for ``imagery-watch train``.

Each map sheet of both epochs is cut into square tiles written as plain RGB PNGs
(``before/``, ``after/``), and the scene's truth polygons are rasterised on the same
tiles as 0/255 label PNGs (``label/``), every rule counting as change. Nodata pixels of
either epoch are transparent (alpha 0) in both images of the pair.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io.images import write_mask_png
from ..io.writers import ensure_dir, read_layer_frame, write_png
from .generate import SceneFiles

__all__ = ["write_labelled_pairs"]


def write_labelled_pairs(scene: SceneFiles, out_dir: str | os.PathLike, *, tile_px: int = 512) -> dict:
    """Write the tiles of a scene as labelled PNG pairs.

    Parameters
    ----------
    scene : SceneFiles
        A scene from :func:`~imagery_watch.synthetic.generate_scene`.
    out_dir : path
        Gets ``before/``, ``after/`` and ``label/`` with the same file names.
    tile_px : int
        Tile side in pixels; partial tiles at the right and bottom edges are left out.

    Returns
    -------
    dict
        ``before``, ``after``, ``label`` (folders) and ``names`` (the tile file names).
    """
    import rasterio
    from rasterio.features import rasterize

    out = Path(out_dir)
    dirs = {k: ensure_dir(out / k) for k in ("before", "after", "label")}
    truth = read_layer_frame(scene.layers_path, "truth")
    names = []
    for sheet in scene.sheets:
        with rasterio.open(scene.before_dir / sheet) as b, rasterio.open(scene.after_dir / sheet) as a:
            before, after = b.read([1, 2, 3]), a.read([1, 2, 3])
            valid = (b.read_masks(1) > 0) & (a.read_masks(1) > 0)
            shapes = [g for g in truth.to_crs(b.crs).geometry if g is not None and not g.is_empty]
            label = (rasterize(shapes, out_shape=b.shape, transform=b.transform, fill=0, default_value=1,
                               dtype="uint8") > 0) if shapes else np.zeros(b.shape, bool)
        for r0 in range(0, before.shape[1] - tile_px + 1, tile_px):
            for c0 in range(0, before.shape[2] - tile_px + 1, tile_px):
                win = (slice(r0, r0 + tile_px), slice(c0, c0 + tile_px))
                name = f"{Path(sheet).stem}_{r0:05d}_{c0:05d}.png"
                alpha = np.where(valid[win], 255, 0).astype(np.uint8)[None]
                for epoch, image in (("before", before), ("after", after)):
                    rgba = np.concatenate([image[(slice(None),) + win], alpha])
                    write_png(dirs[epoch] / name, np.moveaxis(rgba, 0, -1))
                write_mask_png(dirs["label"] / name, label[win])
                names.append(name)
    return {**dirs, "names": names}
