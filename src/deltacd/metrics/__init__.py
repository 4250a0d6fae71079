"""Accuracy metrics as plain functions over arrays and tables: the lowest layer every evaluator and trainer reads.

Everything here works on numpy arrays of any size and is built to be *accumulated*: a scene is
read window by window, each window updates a :class:`ConfusionMatrix` (or a
:class:`ScoreHistogram`, or a stack of per-block matrices), and the partial results are merged.
No function needs the whole scene in memory, and the result does not depend on the windowing.

* :mod:`deltacd.metrics.pixel`: the confusion matrix ``[K, K]`` (rows = reference, columns =
  prediction) and the scores read from it (F1, IoU, kappa...; NaN where 0/0).
* :mod:`deltacd.metrics.bootstrap`: per-block matrices and block-bootstrap confidence intervals.
* :mod:`deltacd.metrics.curves`: score histograms and precision/recall/F1 against threshold.
* :mod:`deltacd.metrics.area`: found, missed and false change areas in hectares.
"""

from deltacd.metrics.area import AreaStats, area_stats
from deltacd.metrics.bootstrap import (
    BootstrapCI,
    block_bootstrap_ci,
    block_bootstrap_ci_from_blocks,
    block_confusion_matrices,
)
from deltacd.metrics.curves import (
    PRCurve,
    ScoreHistogram,
    best_f1_threshold,
    default_bin_edges,
    f1_vs_threshold,
    precision_recall_curve_from_hist,
    score_histograms,
)
from deltacd.metrics.pixel import METRICS, ConfusionMatrix, metric_from_counts

__all__ = [
    "METRICS",
    "AreaStats",
    "BootstrapCI",
    "ConfusionMatrix",
    "PRCurve",
    "ScoreHistogram",
    "area_stats",
    "best_f1_threshold",
    "block_bootstrap_ci",
    "block_bootstrap_ci_from_blocks",
    "block_confusion_matrices",
    "default_bin_edges",
    "f1_vs_threshold",
    "metric_from_counts",
    "precision_recall_curve_from_hist",
    "score_histograms",
]
