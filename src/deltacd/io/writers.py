"""Rasters written window by window and finished as Cloud-Optimized GeoTIFFs.

Windows go into a tiled, uncompressed GeoTIFF under a temporary name (``<name>.part.tif``); at
:meth:`RasterWriter.finish` GDAL's COG driver copies it, with overviews, to another temporary
name that is renamed to the final one, so a reader never sees a half-written file. The scratch
file is not compressed because the COG copy compresses anyway (with every core): deflating it
first cost a second compression and the decompression of every window read back. COGs are
ZSTD-compressed: on a 10 000 px float32 score, ZSTD wrote 212 MiB in 2.8 s where DEFLATE wrote
348 MiB in 4.1 s (GDAL reads ZSTD since 2.3, QGIS since 3.4).
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
            bigtiff="if_safer",
        )
        if description:
            self._dataset.set_band_description(1, description)

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write ``array`` [h, w] at ``window`` of the grid."""
        self._dataset.write(array, 1, window=window)

    def read(self, window: Window) -> np.ndarray:
        """Read back a window already written (the file is open for reading and writing, or read-only once sealed)."""
        return self._dataset.read(1, window=window)

    def seal(self) -> None:
        """Stop writing: the partial file is complete and stays readable (:meth:`read`) while :meth:`publish` runs."""
        if self._dataset.mode != "r":
            self._dataset.close()
            self._dataset = rasterio.open(self.part)

    def publish(self) -> Path:
        """Copy the sealed partial file to the COG at ``path`` (GDAL's threads; may run beside :meth:`read`)."""
        tmp = self.path.with_name(self.path.stem + ".cog.tmp")
        rasterio.shutil.copy(
            self.part, tmp, driver="COG", compress="ZSTD", blocksize=512,
            overview_resampling=self.overview_resampling.upper(), bigtiff="IF_SAFER", num_threads="ALL_CPUS",
        )
        os.replace(tmp, self.path)
        return self.path

    def close(self) -> None:
        """Close and remove the partial file (after :meth:`publish`)."""
        if not self._dataset.closed:
            self._dataset.close()
        self.part.unlink(missing_ok=True)

    def finish(self) -> Path:
        """Seal the partial file, publish the COG at ``path``, remove the partial file."""
        self.seal()
        self.publish()
        self.close()
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
