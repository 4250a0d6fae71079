"""The pixel grid both dates are read on: CRS, affine transform and size.

A :class:`Grid` is a value: two grids compare equal when every pixel of one falls on a pixel of
the other. Everything that combines rasters (alignment, the engine, evaluation) checks grids
once, here, instead of comparing shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import Geod
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window, from_bounds
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from deltacd.errors import InputError

_WGS84 = Geod(ellps="WGS84")


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid.

    Attributes
    ----------
    crs : rasterio.crs.CRS
        Coordinate reference system of the grid.
    transform : affine.Affine
        Maps (col, row) pixel corners to (x, y) in ``crs`` units.
    width, height : int
        Size in pixels.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(CRS.from_user_input(dataset.crs), dataset.transform, dataset.width, dataset.height)

    @classmethod
    def from_bounds(cls, crs: CRS, bounds: tuple[float, float, float, float], res: float) -> Grid:
        """A grid with square pixels of ``res`` (CRS units) covering ``bounds`` (left, bottom, right, top)."""
        left, bottom, right, top = bounds
        width = max(1, round((right - left) / res))
        height = max(1, round((top - bottom) / res))
        return cls(crs, Affine(res, 0.0, left, 0.0, -res, top), width, height)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> BoundingBox:
        left, top = self.transform.c, self.transform.f
        right = left + self.width * self.transform.a
        bottom = top + self.height * self.transform.e
        return BoundingBox(left, bottom, right, top)

    @property
    def full_window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def window_transform(self, window: Window) -> Affine:
        return window_transform(window, self.transform)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        return window_bounds(window, self.transform)

    def window_of(self, bounds: tuple[float, float, float, float]) -> Window:
        """The window of this grid that covers ``bounds``, rounded outwards and clipped to the grid."""
        win = from_bounds(*bounds, transform=self.transform)
        col, row = math.floor(win.col_off), math.floor(win.row_off)
        win = Window(col, row, math.ceil(win.col_off + win.width) - col, math.ceil(win.row_off + win.height) - row)
        return win.intersection(self.full_window)

    def subgrid(self, window: Window) -> Grid:
        """The grid of ``window`` (same pixels, smaller extent)."""
        return Grid(self.crs, self.window_transform(window), int(window.width), int(window.height))

    def scaled(self, max_size: int) -> Grid:
        """A coarser grid over the same extent whose longer side is at most ``max_size`` pixels.

        Used for quicklooks and overview statistics: reading on it costs ``max_size**2`` pixels
        whatever the scene size.
        """
        factor = max(self.width, self.height) / max_size
        if factor <= 1:
            return self
        width = max(1, math.ceil(self.width / factor))
        height = max(1, math.ceil(self.height / factor))
        transform = self.transform @ Affine.scale(self.width / width, self.height / height)
        return Grid(self.crs, transform, width, height)

    def decimated(self, max_size: int) -> Grid:
        """A coarser grid of whole cells of f x f pixels, f the smallest integer that puts the longer side at most ``max_size``.

        Unlike :meth:`scaled`, each cell is exactly f x f pixels of this grid, so a file on this
        grid averaged by cells *is* a view on it, with no resampling (the coarse views of the
        co-registration and the quicklook); the last row and column of cells may reach up to f - 1
        pixels past the extent.
        """
        factor = math.ceil(max(self.width, self.height) / max_size)
        if factor <= 1:
            return self
        return Grid(self.crs, self.transform @ Affine.scale(factor, factor),
                    math.ceil(self.width / factor), math.ceil(self.height / factor))

    def translated(self, dx_px: float, dy_px: float) -> Grid:
        """The same grid moved by (dx, dy) pixels: reading on it samples at (col + dx, row + dy)."""
        return Grid(self.crs, self.transform @ Affine.translation(dx_px, dy_px), self.width, self.height)

    @property
    def pixel_area_m2(self) -> float:
        """Area of one pixel in square metres (geodesic, at the grid centre for geographic CRSs)."""
        xres, yres = self.res
        if self.crs.is_projected:
            factor = self.crs.linear_units_factor[1]
            return xres * yres * factor * factor
        left, bottom, right, top = self.bounds
        cx, cy = (left + right) / 2, (top + bottom) / 2
        lons = [cx, cx + xres, cx + xres, cx]
        lats = [cy, cy, cy + yres, cy + yres]
        area, _ = _WGS84.polygon_area_perimeter(lons, lats)
        return abs(area)

    @property
    def res_m(self) -> float:
        """Mean pixel side in metres."""
        return float(np.sqrt(self.pixel_area_m2))

    def describe(self) -> dict:
        """A JSON-serialisable summary (for run.json)."""
        return {
            "crs": self.crs.to_string(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
            "res": list(self.res),
            "bounds": list(self.bounds),
        }

    def check_same(self, other: Grid, *, names: tuple[str, str] = ("first raster", "second raster")) -> None:
        """Raise :class:`InputError` naming both rasters when the grids differ."""
        same = (
            self.crs == other.crs
            and self.shape == other.shape
            and self.transform.almost_equals(other.transform, precision=1e-6 * min(self.res))
        )
        if not same:
            raise InputError(
                f"{names[0]} ({self.crs.to_string()}, {self.res[0]:g} px, {self.width}x{self.height}) and "
                f"{names[1]} ({other.crs.to_string()}, {other.res[0]:g} px, {other.width}x{other.height}) "
                "are on different grids; resample one onto the other (deltacd aligns them when given as a pair)"
            )
