"""Per-polygon statistics of rasters read strip by strip: memory grows with the polygons, not the scene.

Used for buildings (damage) and change polygons (from/to land-cover classes).
:class:`FeatureLabels` rasterises polygons (footprints, rings) window by window, label ``i + 1``
for the polygon in row ``i`` (0: none; where polygons overlap the later row wins).
:class:`ZonalAccumulator` adds, strip after strip, each polygon's valid pixel count, a histogram
of a score on fixed edges (so median and 90th percentile come out to a bin, with the threshold
as an exact edge for the changed share), and optionally sums and votes of per-pixel class
probabilities. rasterstats and exactextract compute zonal statistics too, but over whole
arrays or with their own readers; the accumulation over strips of a raster being written is
what the damage and study pipelines need, hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window

from deltacd.io.grid import Grid


class FeatureLabels:
    """Polygons rasterised on demand, window by window, as int32 labels (row + 1; 0 outside)."""

    def __init__(self, geometries: gpd.GeoSeries):
        self.geometries = geometries.reset_index(drop=True)
        self._tree = shapely.STRtree(self.geometries.values)

    def read(self, grid: Grid, window: Window) -> np.ndarray:
        shape = (int(window.height), int(window.width))
        hits = self._tree.query(shapely.box(*grid.window_bounds(window)), predicate="intersects")
        if len(hits) == 0:
            return np.zeros(shape, dtype=np.int32)
        hits = np.sort(hits)
        return rasterize(((self.geometries.values[i], int(i) + 1) for i in hits if not self.geometries.values[i].is_empty),
                         out_shape=shape, transform=grid.window_transform(window), fill=0, dtype="int32")


@dataclass
class ZonalStats:
    """What :class:`ZonalAccumulator` gives per building (arrays of length n, float64; NaN where no valid pixel)."""

    pixels: np.ndarray  # pixels of the building on the grid
    valid: np.ndarray  # of which valid
    median: np.ndarray
    p90: np.ndarray
    share_above: np.ndarray  # share of valid pixels above the threshold
    probability: np.ndarray | None = None  # [n, K] mean class probabilities over valid pixels
    votes: np.ndarray | None = None  # [n, K] valid pixels whose most probable class is k


class ZonalAccumulator:
    """Per-building accumulation of a score (and class probabilities) over strips (module notes).

    Parameters
    ----------
    n
        Number of buildings (labels 1..n).
    low, high, threshold
        Histogram range of the score (values outside are clipped into the end bins) and the
        threshold of the changed share, which becomes an exact bin edge.
    bins
        Histogram bins per building (memory: ``n * bins`` int32).
    classes
        Number of per-pixel class probabilities to average and vote (0: none).
    """

    def __init__(self, n: int, *, low: float, high: float, threshold: float, bins: int = 128, classes: int = 0):
        high = max(high, threshold + 1e-6, low + 1e-6)
        edges = np.unique(np.concatenate([np.linspace(low, high, bins + 1), [threshold]]))
        self.edges = edges
        self.threshold_bin = int(np.searchsorted(edges, threshold))  # bins at or after this index lie above
        self.n = n
        self.pixels = np.zeros(n + 1, dtype=np.int64)
        self.hist = np.zeros((n + 1, len(edges) - 1), dtype=np.int32)
        self.classes = classes
        self.prob_sum = np.zeros((n + 1, classes), dtype=np.float64) if classes else None
        self.votes = np.zeros((n + 1, classes), dtype=np.int64) if classes else None

    def add(self, labels: np.ndarray, score: np.ndarray | None = None, probabilities: np.ndarray | None = None,
            valid: np.ndarray | None = None) -> None:
        """Add one strip: ``labels`` int [h, w], ``score`` float [h, w] (NaN = invalid), ``probabilities`` [K, h, w]."""
        inside = labels > 0
        if not inside.any():
            return
        self.pixels += np.bincount(labels[inside], minlength=self.n + 1)
        ok = inside if valid is None else inside & valid
        if score is not None:
            ok &= np.isfinite(score)
            values = np.clip(score[ok], self.edges[0], self.edges[-1])
            index = np.clip(np.searchsorted(self.edges, values, side="right") - 1, 0, self.hist.shape[1] - 1)
            np.add.at(self.hist, (labels[ok], index), 1)
        if probabilities is not None and self.classes:
            lab = labels[ok]
            p = probabilities[:, ok]
            for k in range(self.classes):
                self.prob_sum[:, k] += np.bincount(lab, weights=p[k], minlength=self.n + 1)
            np.add.at(self.votes, (lab, np.argmax(p, axis=0)), 1)

    def result(self) -> ZonalStats:
        hist = self.hist[1:].astype(np.float64)
        valid = hist.sum(axis=1)
        centers = (self.edges[:-1] + self.edges[1:]) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            cumulative = np.cumsum(hist, axis=1) / valid[:, None]
            median = centers[np.clip((cumulative < 0.5).sum(axis=1), 0, len(centers) - 1)]
            p90 = centers[np.clip((cumulative < 0.9).sum(axis=1), 0, len(centers) - 1)]
            share = hist[:, self.threshold_bin:].sum(axis=1) / valid
        empty = valid == 0
        median[empty] = p90[empty] = share[empty] = np.nan
        probability = votes = None
        if self.classes:
            counted = self.votes[1:].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                probability = self.prob_sum[1:] / counted[:, None]
            votes = self.votes[1:]
        if self.classes and not valid.any():  # probabilities without a score: validity from the votes
            valid = self.votes[1:].sum(axis=1).astype(np.float64)
        return ZonalStats(self.pixels[1:].astype(np.float64), valid, median, p90, share, probability, votes)
