"""imagery_watch: change detection between two aerial orthophoto mosaics of a city.

The pipeline reads two epochs, aligns and normalises them, classifies land cover,
applies the transition rules of a config and stores change patches in a GeoPackage
for review. See ``README.md`` and ``DESIGN.md`` for the whole picture.
"""

__version__ = "0.1.0"
