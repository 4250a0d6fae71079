"""Tile layout and blending weights for the tiled engine.

Tiles of ``size`` pixels step by ``size - overlap``; the last tile of a row or column is moved
back to end on the scene edge instead of running past it, so every tile is full size (batches
need equal shapes) except when the scene itself is smaller than a tile.
"""

from __future__ import annotations

import numpy as np


def tile_offsets(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``size`` along an axis of ``length``, overlapping by ``overlap``.

    >>> tile_offsets(10, 4, 1)
    [0, 3, 6]
    >>> tile_offsets(3, 4, 1)
    [0]
    """
    if size <= overlap:
        raise ValueError(f"tile size ({size}) must exceed the overlap ({overlap})")
    if length <= size:
        return [0]
    stride = size - overlap
    offsets = list(range(0, length - size, stride))
    offsets.append(length - size)
    return offsets


def blend_weights(height: int, width: int, overlap: int, *, floor: float = 1e-3) -> np.ndarray:
    """Weights [height, width] float32 that ramp linearly from ``floor`` to 1 over ``overlap`` pixels at each edge.

    Overlapping tiles are averaged with these weights, so seams fade out instead of showing the
    tiles' border effects. The floor keeps scene-edge pixels, seen by one tile only, defined.
    """

    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, dtype=np.float32)
        pos = np.arange(n, dtype=np.float32) + 0.5
        edge = np.minimum(pos, n - pos) / overlap
        return np.clip(edge, floor, 1.0).astype(np.float32)

    return ramp(height)[:, None] * ramp(width)[None, :]
