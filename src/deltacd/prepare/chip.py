"""A chip of an aligned pair centred on a footprint, with the footprint's mask (damage grading and its training)."""

from __future__ import annotations

import numpy as np
from rasterio.features import rasterize
from rasterio.windows import Window

from deltacd.io.grid import Grid
from deltacd.prepare.align import AlignedPair

__all__ = ["read_chip"]


def read_chip(pair: AlignedPair, footprint, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Before, after [C, size, size] float32 and the footprint mask [size, size] of a chip centred on ``footprint``.

    The chip window is clipped to the grid and padded with the band means (NaN -> 0 after
    normalisation), so buildings at the scene edge get chips too.
    """
    grid = pair.grid
    x, y = footprint.centroid.x, footprint.centroid.y
    col, row = ~grid.transform * (x, y)
    window = Window(int(round(col)) - size // 2, int(round(row)) - size // 2, size, size)
    inner = window.intersection(grid.full_window) if _overlaps(window, grid) else None
    before = np.full((len(pair.bands), size, size), np.nan, dtype=np.float32)
    after = before.copy()
    if inner is not None:
        block = pair.read(inner)
        r0, c0 = int(inner.row_off - window.row_off), int(inner.col_off - window.col_off)
        h, w = int(inner.height), int(inner.width)
        b, a = block.before.copy(), block.after.copy()
        b[:, ~block.valid] = np.nan
        a[:, ~block.valid] = np.nan
        before[:, r0:r0 + h, c0:c0 + w] = b
        after[:, r0:r0 + h, c0:c0 + w] = a
    mask = rasterize([(footprint, 1)], out_shape=(size, size), transform=grid.window_transform(window), fill=0,
                     dtype="uint8").astype(np.float32)
    return before, after, mask


def _overlaps(window: Window, grid: Grid) -> bool:
    return (window.col_off < grid.width and window.row_off < grid.height
            and window.col_off + window.width > 0 and window.row_off + window.height > 0)
