"""Scene-wide pixel samples and per-band statistics, read from random windows.

Statistics that steer the whole run (normalisation, radiometric harmonisation, IR-MAD's
transform) come from pixels spread over the whole scene, never from one tile: a seeded random
set of windows is read, so the cost is bounded whatever the scene size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from deltacd.errors import InputError


@dataclass(frozen=True)
class BandStats:
    """Robust per-band statistics of one date; every array is [C] float64 in band order."""

    bands: tuple[str, ...]
    median: np.ndarray
    low: np.ndarray  # 2nd percentile
    high: np.ndarray  # 98th percentile
    mean: np.ndarray
    std: np.ndarray
    robust_std: np.ndarray  # 1.4826 x median absolute deviation, floored to avoid division by 0

    @classmethod
    def of(cls, values: np.ndarray, bands: tuple[str, ...]) -> BandStats:
        """Statistics of ``values`` [C, N]."""
        median = np.median(values, axis=1)
        mad = np.median(np.abs(values - median[:, None]), axis=1)
        std = values.std(axis=1)
        robust = 1.4826 * mad
        robust = np.where(robust > 0, robust, np.where(std > 0, std, 1.0))
        low, high = np.percentile(values, [2, 98], axis=1)
        return cls(bands, median, low, high, values.mean(axis=1), std, robust)

    def describe(self) -> dict:
        return {
            name: {k: float(getattr(self, k)[i]) for k in ("median", "low", "high", "mean", "std", "robust_std")}
            for i, name in enumerate(self.bands)
        }


@dataclass(frozen=True)
class PixelSample:
    """Valid pixels drawn from the whole scene at both dates.

    Attributes
    ----------
    bands : tuple of str
        Band names, in the order of the rows.
    before, after : np.ndarray
        float32 [C, N], the same N pixels at both dates.
    """

    bands: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray

    @property
    def size(self) -> int:
        return self.before.shape[1]


def sample_pixels(
    pair, *, max_pixels: int = 250_000, windows: int = 64, window_size: int = 256, seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> PixelSample:
    """Draw up to ``max_pixels`` valid pixels spread over the whole scene.

    ``windows`` windows of ``window_size`` pixels are chosen at random over the scene (all of
    them for a small scene) and the same number of valid pixels is drawn at random in each, so
    the sample covers the scene rather than a few places, at a bounded reading cost.

    Parameters
    ----------
    pair : deltacd.prepare.align.AlignedPair
        The pair to sample (its current harmonisation and shift apply).
    max_pixels
        Upper bound on the number of pixels returned.
    windows, window_size
        How many windows are read, and their side in pixels.
    seed
        Seed of the random choices, for repeatable runs.
    progress
        Called as ``progress(done, total)`` after each window.

    Raises
    ------
    InputError
        No valid pixel in the overlap (e.g. nodata everywhere, or an AOI over nodata).
    """
    grid = pair.grid
    rows = math.ceil(grid.height / window_size)
    cols = math.ceil(grid.width / window_size)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(rows * cols)[:windows]
    per_window = math.ceil(max_pixels / len(chosen))
    before, after = [], []
    for done, index in enumerate(np.sort(chosen), start=1):  # row order reads strip-organised files sequentially
        if progress is not None:
            progress(done, len(chosen))
        r, c = divmod(int(index), cols)
        window = Window(c * window_size, r * window_size, window_size, window_size).intersection(grid.full_window)
        block = pair.read(window)
        valid = np.flatnonzero(block.valid)
        if valid.size == 0:
            continue
        take = rng.choice(valid, min(per_window, valid.size), replace=False)
        before.append(block.before.reshape(len(pair.bands), -1)[:, take])
        after.append(block.after.reshape(len(pair.bands), -1)[:, take])
    if not before:
        raise InputError("no pixel is valid at both dates over the overlap (nodata or masks everywhere); check the inputs' nodata and the AOI")
    return PixelSample(pair.bands, np.concatenate(before, axis=1), np.concatenate(after, axis=1))
