"""Realistic synthetic orthophoto scenes: the project's test bed.

Two epochs of a 0.2 m aerial mosaic of Jiaxing-like countryside (fields with crop rows,
canals and ponds, villages with shadowed roofs, tree belts), with true changes recorded
as truth polygons and realistic distractors that are not change.

>>> from imagery_watch.synthetic import build_scene
>>> scene = build_scene(seed=1, width_px=256, height_px=256)
>>> image, valid = scene.render("before")
>>> image.shape
(3, 256, 256)
"""

from .distractors import DistractorOptions
from .generate import SceneFiles, generate_scene
from .preview import preview_mosaic, preview_scene
from .scene import CRS, DEFAULT_ORIGIN, Scene, SceneGrid, build_scene

__all__ = ["build_scene", "generate_scene", "preview_mosaic", "preview_scene", "Scene", "SceneGrid",
           "SceneFiles", "DistractorOptions", "CRS", "DEFAULT_ORIGIN"]
