"""The optional change score of an evaluation: its raster, the mask's threshold, the bins, the curve's summary.

A score raster (``change_score.tif``: float, on exactly the prediction's grid, NaN and nodata = no
score) is binned over changed and unchanged reference pixels (a :class:`~deltacd.metrics.ScoreHistogram`),
giving the precision-recall curve and F1 against the threshold. The mask's own threshold (given,
or read from the ``run.json`` of the deltacd run the mask belongs to) is one of the bin edges, so
the curve passes exactly through the mask's scores when the mask is the thresholded score.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.metrics import PRCurve, ScoreHistogram, default_bin_edges
from deltacd.outputs.layout import DetectOutputs

log = logging.getLogger(__name__)

__all__ = [
    "ScoreBins",
    "ScoreRaster",
    "average_precision",
    "bins_for_score",
    "mask_threshold",
    "score_edges",
    "score_summary",
]


class ScoreRaster:
    """A float score on exactly the prediction's grid (NaN and nodata = no score)."""

    def __init__(self, path: Path, grid: Grid, grid_name: str) -> None:
        self.path = path
        try:
            self._ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"{path}: cannot read the score as a raster ({exc}); give change_score.tif") from exc
        if self._ds.crs is None:
            self._ds.close()
            raise InputError(f"{path}: score has no georeferencing; give the change_score.tif written with the mask")
        try:
            Grid.of(self._ds).check_same(grid, names=(str(path), grid_name))
        except InputError:
            self._ds.close()
            raise

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self._ds.read(1, window=window, out_dtype="float64")
        return values, (self._ds.read_masks(1, window=window) > 0) & np.isfinite(values)

    def close(self) -> None:
        self._ds.close()


def mask_threshold(prediction: Path, given: float | None, have_score: bool) -> tuple[float | None, str | None, bool]:
    """(threshold, where it came from, strict) — strict: the mask is ``score > t`` (deltacd's rule)."""
    if given is not None:
        return float(given), "given", False
    run = DetectOutputs(prediction.parent).record_file
    if have_score and prediction.name == DetectOutputs.MASK and run.exists():
        try:
            value = json.loads(run.read_text())["threshold"]["value"]
            return float(value), str(run), True
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            log.warning("%s: no threshold found; the PR curve is drawn without the mask's threshold", run)
    return None, None, False


def score_edges(lo: float, hi: float, n_bins: int, threshold: float | None, strict: bool) -> tuple[np.ndarray, float | None]:
    """Bin edges over the score range, with the mask's threshold as an edge.

    With ``strict`` (mask = score > t, scores float32) the edge is the smallest float32 above t,
    so "score >= edge" selects exactly the pixels the mask selected.
    """
    if 0.0 <= lo and hi <= 1.0:
        edges = default_bin_edges() if n_bins == 1000 else np.linspace(0.0, 1.0, n_bins + 1)
    else:
        top = hi + max(abs(hi), 1.0) * 1e-9 if hi > lo else lo + 1.0
        edges = np.linspace(lo, top, n_bins + 1)
    edge = None
    if threshold is not None and math.isfinite(threshold):
        edge = float(threshold)
        if strict:
            f = np.float32(threshold)
            edge = float(f) if float(f) > threshold else float(np.nextafter(f, np.float32(np.inf)))
        if edges[0] < edge < edges[-1] and edge not in edges:
            edges = np.sort(np.append(edges, edge))
    return edges, edge


@dataclass(frozen=True, eq=False)
class ScoreBins:
    """The bins of the score histograms and the mask's threshold among them.

    Attributes
    ----------
    edges : float64 ``[n_bins + 1]``
        Increasing bin edges over the score's range.
    mask_edge : float or None
        The edge equal to the mask's threshold (or just above it, for a strict mask).
    threshold, source, strict
        As returned by :func:`mask_threshold`.
    """

    edges: np.ndarray
    mask_edge: float | None
    threshold: float | None
    source: str | None
    strict: bool


def bins_for_score(scorer: ScoreRaster, windows: Sequence[Window], prediction: Path, threshold: float | None,
               n_bins: int) -> ScoreBins:
    """One pass over the score for its range, then the bins with the mask's threshold as an edge."""
    thr, source, strict = mask_threshold(prediction, threshold, True)
    lo, hi = math.inf, -math.inf
    for window in windows:
        values, ok = scorer.read(window)
        if ok.any():
            lo, hi = min(lo, float(values[ok].min())), max(hi, float(values[ok].max()))
    if not math.isfinite(lo):
        raise InputError(f"{scorer.path}: the score has no valid pixel; give the change_score.tif of this mask")
    edges, mask_edge = score_edges(lo, hi, n_bins, thr, strict)
    return ScoreBins(edges, mask_edge, thr, source, strict)


def average_precision(curve: PRCurve) -> float | None:
    """Sum over thresholds of (recall step) x precision (the step-wise area under the PR curve)."""
    r = np.nan_to_num(curve.recall, nan=0.0)
    p = np.nan_to_num(curve.precision, nan=0.0)
    steps = r - np.append(r[1:], 0.0)  # recall falls as the threshold rises
    if r.size == 0 or r[0] == 0:
        return None
    return float((steps * p).sum())


def score_summary(hist: ScoreHistogram, bins: ScoreBins, score: str | Path) -> tuple[PRCurve, dict[str, Any]]:
    """The PR curve and the ``score`` section of metrics.json (best F1, average precision, F1 at the mask's threshold)."""
    curve = hist.pr_curve()
    best_t, best_f1 = hist.best_f1_threshold()
    thr, edges = bins.threshold, bins.edges
    out: dict[str, Any] = {
        "path": str(score),
        "bins": int(edges.size - 1),
        "range": [float(edges[0]), float(edges[-1])],
        "mask_threshold": thr,
        "mask_threshold_source": bins.source,
        "mask_rule": None if thr is None else ("score > threshold" if bins.strict else "score >= threshold"),
        "best_f1": best_f1,
        "best_f1_threshold": best_t,
        "average_precision": average_precision(curve),
        "note": "a threshold tuned on the evaluation data gives an optimistic F1; tune on another area",
    }
    at_mask = np.flatnonzero(curve.thresholds == bins.mask_edge) if bins.mask_edge is not None else []
    if len(at_mask):
        i = int(at_mask[0])
        out.update(
            f1_at_mask_threshold=float(curve.f1[i]),
            precision_at_mask_threshold=float(curve.precision[i]),
            recall_at_mask_threshold=float(curve.recall[i]),
        )
    return curve, out
