"""Rasters written window by window and finished as Cloud-Optimized GeoTIFFs.

Windows go into a tiled, compressed GeoTIFF under a temporary name (``<name>.part.tif``); at
:meth:`RasterWriter.finish` GDAL's COG driver copies it, with overviews, to another temporary
name that is renamed to the final one, so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from deltacd.io.grid import Grid


class RasterWriter:
    """Write a single-band raster on ``grid`` window by window, then publish it as a COG.

    Parameters
    ----------
    path
        Final path of the COG.
    grid
        Grid of the raster (CRS, transform, size).
    dtype, nodata
        Pixel type and nodata value.
    description
        Band description (shown by ``gdalinfo`` and QGIS).
    overview_resampling
        ``"average"`` for continuous scores, ``"nearest"`` for classes.

    Use as a context manager: on an exception the partial file is removed.
    """

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        *,
        dtype: str,
        nodata: float | int | None,
        description: str = "",
        overview_resampling: str = "average",
    ):
        self.path = Path(path)
        self.part = self.path.with_name(self.path.stem + ".part.tif")
        self.grid = grid
        self.overview_resampling = overview_resampling
        block = 512 if min(grid.width, grid.height) >= 512 else 256
        self._dataset = rasterio.open(
            self.part, "w+", driver="GTiff", width=grid.width, height=grid.height, count=1, dtype=dtype,
            crs=grid.crs, transform=grid.transform, nodata=nodata, tiled=True, blockxsize=block, blockysize=block,
            compress="deflate", bigtiff="if_safer",
        )
        if description:
            self._dataset.set_band_description(1, description)

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write ``array`` [h, w] at ``window`` of the grid."""
        self._dataset.write(array, 1, window=window)

    def read(self, window: Window) -> np.ndarray:
        """Read back a window already written (the file is open for reading and writing)."""
        return self._dataset.read(1, window=window)

    def finish(self) -> Path:
        """Close the partial file and publish the COG at ``path``."""
        self._dataset.close()
        tmp = self.path.with_name(self.path.stem + ".cog.tmp")
        rasterio.shutil.copy(
            self.part, tmp, driver="COG", compress="DEFLATE", blocksize=512,
            overview_resampling=self.overview_resampling.upper(), bigtiff="IF_SAFER",
        )
        os.replace(tmp, self.path)
        self.part.unlink()
        return self.path

    def abort(self) -> None:
        if not self._dataset.closed:
            self._dataset.close()
        for leftover in (self.part, self.path.with_name(self.path.stem + ".cog.tmp")):
            leftover.unlink(missing_ok=True)

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abort()
