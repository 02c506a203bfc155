"""XYZ map tiles (web mercator, EPSG:3857) of the mosaics, for the review map.

The tile grid is the usual one (tile 0/0/0 covers the world; y grows southward). A tile is
warped from the mosaic with a :class:`~rasterio.vrt.WarpedVRT` onto the tile's 256 x 256
grid. Tiles outside the mosaic's footprint are never read: they are answered with an
empty transparent tile. Zooms much coarser than the mosaic's pixels would read huge
windows of a city-sized mosaic, so they are refused (empty tile) below
:attr:`TileSource.min_zoom`. The after mosaic's recorded misregistration
(:attr:`~imagery_watch.review.job.Mosaic.shift_m`) is undone, as in the chips.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from ..errors import InputFileError
from .job import Mosaic

TILE_PX = 256
#: half the side of the web mercator square, metres
ORIGIN_M = 20037508.342789244
MAX_ZOOM = 23
#: how many zooms coarser than the native one the server still renders
ZOOMS_BELOW_NATIVE = 3
WEB_MERCATOR = CRS.from_epsg(3857)


def tile_bounds(z: int, x: int, y: int) -> tuple:
    """(left, bottom, right, top) of tile ``z/x/y`` in EPSG:3857 metres."""
    size = 2 * ORIGIN_M / (1 << z)
    left = -ORIGIN_M + x * size
    top = ORIGIN_M - y * size
    return left, top - size, left + size, top


def valid_tile(z: int, x: int, y: int) -> bool:
    """Whether ``z/x/y`` names a tile of the grid."""
    return 0 <= z <= MAX_ZOOM and 0 <= x < (1 << z) and 0 <= y < (1 << z)


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


#: the tile answered outside the footprint
EMPTY_TILE = _png(np.zeros((TILE_PX, TILE_PX, 4), dtype=np.uint8))


@dataclass(frozen=True)
class TileSource:
    """Renders the tiles of one mosaic.

    Attributes
    ----------
    mosaic : Mosaic
    """

    mosaic: Mosaic

    @cached_property
    def _info(self) -> dict:
        try:
            with rasterio.open(self.mosaic.path) as ds:
                if ds.crs is None:
                    raise InputFileError(f"{self.mosaic.path}: the {self.mosaic.label} mosaic has no CRS")
                bounds = transform_bounds(ds.crs, WEB_MERCATOR, *ds.bounds, densify_pts=21)
                lon_lat = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
                # ground pixel size in mercator metres (scale grows with 1/cos(lat))
                lat = math.radians((lon_lat[1] + lon_lat[3]) / 2)
                px_m = abs(ds.transform.a) * (ds.crs.linear_units_factor[1] if ds.crs.is_projected else 111_320.0)
                px_merc = px_m / math.cos(lat)
        except RasterioError as exc:
            raise InputFileError(f"{self.mosaic.path}: cannot open the {self.mosaic.label} mosaic ({exc})") from None
        native = int(math.ceil(math.log2(2 * ORIGIN_M / TILE_PX / px_merc)))
        native = max(0, min(native, MAX_ZOOM))
        return {"bounds_3857": bounds, "bounds_wgs84": lon_lat, "native_zoom": native,
                "min_zoom": max(0, native - ZOOMS_BELOW_NATIVE)}

    @property
    def native_zoom(self) -> int:
        """Zoom whose pixels are about as fine as the mosaic's."""
        return self._info["native_zoom"]

    @property
    def min_zoom(self) -> int:
        return self._info["min_zoom"]

    @property
    def bounds_wgs84(self) -> tuple:
        return self._info["bounds_wgs84"]

    def intersects(self, z: int, x: int, y: int) -> bool:
        left, bottom, right, top = tile_bounds(z, x, y)
        bl, bb, br, bt = self._info["bounds_3857"]
        return left < br and right > bl and bottom < bt and top > bb

    def render(self, z: int, x: int, y: int) -> bytes:
        """PNG bytes of tile ``z/x/y`` (RGBA; transparent where the mosaic has no data).

        Raises
        ------
        ValueError
            If ``z/x/y`` is not a tile of the grid.
        InputFileError
            If the mosaic cannot be read.
        """
        if not valid_tile(z, x, y):
            raise ValueError(f"no tile {z}/{x}/{y}")
        if z < self.min_zoom or not self.intersects(z, x, y):
            return EMPTY_TILE
        left, bottom, right, top = tile_bounds(z, x, y)
        res = (right - left) / TILE_PX
        transform = Affine(res, 0, left, 0, -res, top)
        try:
            with rasterio.open(self.mosaic.path) as ds:
                extra = {}
                if self.mosaic.shifted and ds.crs is not None and ds.crs.is_projected:
                    # move the content back by the shift (metres of the grid ~ metres of the mosaic)
                    dx_m, dy_m = self.mosaic.shift_m
                    extra["src_transform"] = Affine.translation(-dx_m, -dy_m) @ ds.transform
                with WarpedVRT(ds, crs=WEB_MERCATOR, transform=transform, width=TILE_PX, height=TILE_PX,
                               resampling=Resampling.bilinear, add_alpha=True, **extra) as vrt:
                    out = vrt.read(list(self.mosaic.band_indexes) + [vrt.count])
        except RasterioError as exc:
            raise InputFileError(f"{self.mosaic.path}: cannot read the {self.mosaic.label} mosaic ({exc})") from None
        rgba = np.moveaxis(out, 0, -1).copy()
        rgba[..., 3] = np.where(out[3] > 0, 255, 0)
        return _png(rgba)
