"""Threshold curves of a change score from its histograms over changed and unchanged reference pixels.

A score (float, any shape, higher = more likely change) is binned window by window into two
``int64 [n_bins]`` histograms (:func:`score_histograms`, :class:`ScoreHistogram`); precision, recall
and F1 of the rule "change where score >= t" then follow for every bin edge ``t`` at once, exactly,
without keeping the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deltacd.errors import InputError
from deltacd.metrics._arrays import _as_labels, _check_range, _keep_mask, _ratio

__all__ = [
    "PRCurve",
    "ScoreHistogram",
    "best_f1_threshold",
    "default_bin_edges",
    "f1_vs_threshold",
    "precision_recall_curve_from_hist",
    "score_histograms",
]


def default_bin_edges() -> np.ndarray:
    """1001 edges 0, 0.001, ..., 1: scores in [0, 1] (probabilities), thresholds every 0.001."""
    return np.linspace(0.0, 1.0, 1001)


def _check_edges(bin_edges: Any) -> np.ndarray:
    e = np.asarray(bin_edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all() or (np.diff(e) <= 0).any():
        raise InputError(
            f"bin_edges: got {e.size} value(s), expected >= 2 finite, strictly increasing edges; "
            "use e.g. np.linspace(0, 1, 1001) for probabilities"
        )
    return e


def _bin_index(s: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each score: ``i`` with ``edges[i] <= s < edges[i+1]``, clipped to 0..n_bins-1."""
    n_bins = edges.size - 1
    step = np.diff(edges)
    if n_bins >= 8 and np.allclose(step, step[0], rtol=1e-9, atol=0):
        # evenly spaced edges: arithmetic index, then an exact one-step correction against the
        # edges themselves (so a score equal to an edge always lands in the bin it opens)
        x = np.asarray(s, dtype=np.float64)
        idx = np.subtract(x, edges[0])
        idx /= step[0]
        np.floor(idx, out=idx)
        np.clip(idx, 0, n_bins - 1, out=idx)
        i = idx.astype(np.intp)
        del idx
        i -= (x < edges[i]) & (i > 0)
        i += (x >= edges[i + 1]) & (i < n_bins - 1)
        return i
    return np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_bins - 1)


def score_histograms(
    score: Any,
    ref: Any,
    *,
    bin_edges: Any = None,
    valid: Any = None,
    ignore_value: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of a change score over changed and unchanged reference pixels.

    Bin ``i`` holds scores ``bin_edges[i] <= s < bin_edges[i+1]``; scores below the first edge
    fall in the first bin and scores at or above the last edge in the last bin, so thresholds
    ``bin_edges[1:-1]`` are exact (``s >= t``) and the threshold ``bin_edges[0]`` means "every pixel
    is change". NaN scores are not counted. The two histograms of several windows add up.

    Parameters
    ----------
    score : array_like of float, any shape (typically ``[H, W]``)
        Change score per pixel, higher = more likely change (e.g. a probability).
    ref : array_like of int or bool, same shape
        Reference, 0 = no change, 1 = change (``ignore_value`` pixels are skipped).
    bin_edges : array_like of float, shape ``[n_bins + 1]``, optional
        Strictly increasing edges; default :func:`default_bin_edges` (0..1 by 0.001).
    valid : array_like of bool, same shape, optional
    ignore_value : int, optional

    Returns
    -------
    pos_hist, neg_hist : numpy.ndarray of int64, shape ``[n_bins]``
        Counts of changed and unchanged reference pixels per score bin.
    """
    edges = default_bin_edges() if bin_edges is None else _check_edges(bin_edges)
    s = np.asarray(score)
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer) or s.dtype == bool):
        raise InputError(f"score: got dtype {s.dtype}, expected a numeric score array; convert it with np.asarray(..., float)")
    r = _as_labels("ref", ref)
    if s.shape != r.shape:
        raise InputError(f"score: got shape {s.shape}, expected the shape of ref {r.shape}; read both on the same grid/window")
    keep = _keep_mask(r.shape, r, valid, ignore_value)
    if np.issubdtype(s.dtype, np.floating):
        finite = ~np.isnan(s)
        keep = finite if keep is None else keep & finite
    if keep is not None:
        s, r = s[keep], r[keep]
    else:
        s, r = s.ravel(), r.ravel()
    _check_range("ref", r, 2)
    n_bins = edges.size - 1
    idx = _bin_index(s, edges)
    pos = np.bincount(idx[r == 1], minlength=n_bins).astype(np.int64)
    neg = np.bincount(idx[r == 0], minlength=n_bins).astype(np.int64)
    return pos, neg


class ScoreHistogram:
    """Accumulates :func:`score_histograms` window by window (mutable accumulator).

    Parameters
    ----------
    bin_edges : array_like of float, optional
        Default :func:`default_bin_edges`.
    ignore_value : int, optional
        Reference value that is never counted.
    """

    __slots__ = ("bin_edges", "ignore_value", "neg_hist", "pos_hist")

    def __init__(self, bin_edges: Any = None, *, ignore_value: int | None = None) -> None:
        self.bin_edges = default_bin_edges() if bin_edges is None else _check_edges(bin_edges)
        self.ignore_value = ignore_value
        self.pos_hist = np.zeros(self.bin_edges.size - 1, dtype=np.int64)
        self.neg_hist = np.zeros(self.bin_edges.size - 1, dtype=np.int64)

    def update(self, score: Any, ref: Any, valid: Any = None) -> ScoreHistogram:
        """Add one window; returns ``self``."""
        p, n = score_histograms(score, ref, bin_edges=self.bin_edges, valid=valid, ignore_value=self.ignore_value)
        self.pos_hist += p
        self.neg_hist += n
        return self

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        """Add another accumulator with the same edges; returns ``self``."""
        if not isinstance(other, ScoreHistogram) or not np.array_equal(other.bin_edges, self.bin_edges):
            raise InputError("other: expected a ScoreHistogram with the same bin_edges; build both with the same edges")
        self.pos_hist += other.pos_hist
        self.neg_hist += other.neg_hist
        return self

    def pr_curve(self) -> PRCurve:
        return precision_recall_curve_from_hist(self.pos_hist, self.neg_hist, self.bin_edges)

    def best_f1_threshold(self) -> tuple[float, float]:
        return best_f1_threshold(self.pos_hist, self.neg_hist, self.bin_edges)


@dataclass(frozen=True, eq=False)
class PRCurve:
    """Counts and scores of the rule "change where score >= threshold", one entry per threshold.

    Attributes
    ----------
    thresholds : float64 ``[n_bins]``
        ``bin_edges[:-1]``, increasing.
    tp, fp, fn, tn : int64 ``[n_bins]``
        Pixel counts at each threshold.
    precision, recall, f1 : float64 ``[n_bins]``
        NaN where 0/0 (precision when nothing is predicted, recall when there is no change).
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


def _check_hists(pos_hist: Any, neg_hist: Any, bin_edges: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = _check_edges(bin_edges)
    p = np.asarray(pos_hist)
    n = np.asarray(neg_hist)
    for name, h in (("pos_hist", p), ("neg_hist", n)):
        if h.shape != (e.size - 1,):
            raise InputError(f"{name}: got shape {h.shape}, expected ({e.size - 1},) = len(bin_edges) - 1; pass the matching edges")
        if (h < 0).any():
            raise InputError(f"{name}: got a negative count, expected pixel counts >= 0; pass histograms from score_histograms()")
    return p.astype(np.int64), n.astype(np.int64), e


def precision_recall_curve_from_hist(pos_hist: Any, neg_hist: Any, bin_edges: Any) -> PRCurve:
    """Precision-recall curve (and F1) against threshold from score histograms.

    Parameters
    ----------
    pos_hist, neg_hist : array_like of int, shape ``[n_bins]``
        Score histograms of changed and unchanged reference pixels (:func:`score_histograms`,
        summed over windows).
    bin_edges : array_like of float, shape ``[n_bins + 1]``

    Returns
    -------
    PRCurve
        At threshold ``t_i = bin_edges[i]``: ``TP_i = sum(pos_hist[i:])``,
        ``FP_i = sum(neg_hist[i:])``, ``FN_i = sum(pos_hist[:i])``. Exact, for every threshold that
        is an inner edge, equal to thresholding the scores themselves.
    """
    p, n, e = _check_hists(pos_hist, neg_hist, bin_edges)
    tp = np.cumsum(p[::-1])[::-1]
    fp = np.cumsum(n[::-1])[::-1]
    fn = p.sum() - tp
    tn = n.sum() - fp
    return PRCurve(
        thresholds=e[:-1].copy(),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
    )


def f1_vs_threshold(pos_hist: Any, neg_hist: Any, bin_edges: Any) -> tuple[np.ndarray, np.ndarray]:
    """F1 of the change class against threshold.

    Returns
    -------
    thresholds, f1 : numpy.ndarray of float64, shape ``[n_bins]``
        See :func:`precision_recall_curve_from_hist`.
    """
    c = precision_recall_curve_from_hist(pos_hist, neg_hist, bin_edges)
    return c.thresholds, c.f1


def best_f1_threshold(pos_hist: Any, neg_hist: Any, bin_edges: Any) -> tuple[float, float]:
    """The threshold (a bin edge) with the highest F1, and that F1.

    Ties (e.g. across empty bins) go to the lowest threshold. Returns ``(nan, nan)`` when F1 is
    undefined everywhere (no change in the reference and none predicted).

    Note that a threshold tuned on the evaluation data makes the reported F1 optimistic; tune
    on a separate area.
    """
    t, f1 = f1_vs_threshold(pos_hist, neg_hist, bin_edges)
    if np.isnan(f1).all():
        return math.nan, math.nan
    i = int(np.nanargmax(f1))
    return float(t[i]), float(f1[i])
