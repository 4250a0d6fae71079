"""Running a method on another grid than the output's, and bringing its score back.

A network sees objects at the scale it learnt them: TinyCD trained on 0.5 m LEVIR-CD finds
almost nothing on a 1.5 m pair (highest probability 0.37 against its 0.5 threshold) and finds
changes again once the pair is resampled to 0.5 m. :func:`grid_at_resolution` gives the grid the
network runs on (same extent, its training resolution); the engine's score on that grid is
written to a scratch GeoTIFF (:func:`write_strips`) and read back on the output grid strip by
strip through a GDAL ``WarpedVRT`` (:func:`read_on_grid`), so memory stays flat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from deltacd.io.grid import Grid

#: A trained network runs at the scene's resolution when it is within these ratios of its training one:
#: nominal resolutions are approximate (LEVIR-CD's "0.5 m" is 0.52-0.59 m on the ground).
SAME_RESOLUTION = (0.8, 1.25)
#: Beyond these ratios the scene is far from what the network learnt, resampled or not: a warning.
FAR_RESOLUTION = (2 / 3, 1.5)


def grid_at_resolution(grid: Grid, res_m: float) -> Grid:
    """The grid over ``grid``'s extent with square pixels of ``res_m`` metres (its CRS must be projected)."""
    metres_per_unit = grid.res_m / grid.res[0]
    res = res_m / metres_per_unit
    left, bottom, right, top = grid.bounds
    width = max(1, math.ceil((right - left) / res - 1e-6))
    height = max(1, math.ceil((top - bottom) / res - 1e-6))
    return Grid(grid.crs, Affine(res, 0.0, left, 0.0, -res, top), width, height)


def write_strips(path: str | Path, grid: Grid, strips: Iterable[tuple[Window, np.ndarray]], *, channels: int = 1) -> Path:
    """Write float32 strips of ``grid`` ([h, w], or [channels, h, w]) to a tiled, uncompressed scratch GeoTIFF (NaN = no data)."""
    path = Path(path)
    block = 256 if min(grid.width, grid.height) >= 256 else 16 * max(1, min(grid.width, grid.height) // 16)
    options = {"tiled": True, "blockxsize": block, "blockysize": block} if block >= 16 else {}
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=channels, dtype="float32",
                       crs=grid.crs, transform=grid.transform, nodata=float("nan"), bigtiff="if_safer", **options) as dst:
        for window, values in strips:
            dst.write(values.astype(np.float32, copy=False).reshape(channels, *values.shape[-2:]), window=window)
    return path


def read_on_grid(path: str | Path, grid: Grid, *, rows: int = 512) -> Iterator[tuple[Window, np.ndarray]]:
    """The raster at ``path`` resampled onto ``grid``, in full-width strips of ``rows`` rows (top to bottom):
    [h, w] for one band, [bands, h, w] otherwise.

    Averaging when the source is finer than ``grid`` by more than 1.5x, bilinear otherwise (as
    the pair's own readers); NaN where the source has no data.
    """
    with rasterio.open(path) as src:
        finer = min(grid.res) > 1.5 * max(abs(src.transform.a), abs(src.transform.e))
        resampling = Resampling.average if finer else Resampling.bilinear
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=resampling, nodata=float("nan"), src_nodata=float("nan")) as vrt:
            for top in range(0, grid.height, rows):
                window = Window(0, top, grid.width, min(rows, grid.height - top))
                values = vrt.read(window=window)
                yield window, values[0] if values.shape[0] == 1 else values
