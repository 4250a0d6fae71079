"""Robustness of a change method to differences between the dates, and its transfer across data sets.

:func:`robustness` degrades the **after** image in controlled steps (the perturbations of
:mod:`deltacd.evaluate.perturb`: gain, offset, gamma, haze, blur, noise, JPEG, misregistration,
coarser resolution), runs :func:`deltacd.detect` on each degraded pair exactly as a user would,
and scores each ``change_mask.tif`` against a reference: F1 against strength, one curve per
perturbation. :func:`compare_methods` puts several methods on the same curves,
:func:`robustness_study` pools several labelled pairs (micro average: confusion matrices summed
over the pairs before the scores are computed), and :func:`cross_dataset` scores one model on
labelled pairs of several sources (transfer, no perturbation).

How a perturbed after image is made
-----------------------------------
Both dates are put on the grid ``detect`` would use (:func:`~deltacd.prepare.align.align_pair`
with the same ``crs``, ``resolution``, ``aoi`` and band options); the after image's common bands
are read **whole** on that grid, perturbed, rounded and clipped to the after image's data type
(integer types saturate like a sensor), and written as one GeoTIFF on that grid whose band
descriptions are the band names; no-data pixels stay masked. ``detect`` then runs on the
original before image and that file, with ``crs`` and ``resolution`` of the grid, so its output
grid is the same grid (checked). Strength 0 goes through the same path, so every curve starts
from the unperturbed result computed the same way. Consequences:

* spatial strengths (blur sigma, shift, resolution factor) are in pixels of the output grid;
  for a folder of Sentinel-2 band files on the 10 m grid, the 20 m and 60 m bands are first
  resampled to 10 m (as ``detect`` does) and then perturbed on that grid;
* the whole after image is held in memory (a few times ``C x H x W`` float32): inputs larger
  than ``max_pixels`` grid pixels are refused; crop them with ``aoi=`` (``detect_options``).

Settings
--------
``detect_options`` go to :func:`deltacd.detect` unchanged (validated by
:class:`~deltacd.config.DetectOptions`), so robustness is measured with detect's defaults —
radiometric harmonisation ``"pif"`` included, which undoes much of a gain or offset; pass
``{"harmonise": "none"}`` to see the method alone. One exception: ``coregistration`` defaults to
``"off"`` here, because detect's default ``"report"`` only measures the shift (the mask is the
same) and costs more than the detection on small scenes; pass ``"report"`` to record the
measured shift of each run (columns ``coreg_dx``, ``coreg_dy``) or ``"correct"`` to measure how
much the correction recovers under ``shift``.

Outputs (``out_dir``, written in a temporary folder renamed at the end)
---------------------------------------------------------------------
``robustness.csv``
    One row per method, perturbation and strength: ``method, perturbation, strength, units, f1,
    precision, recall, iou, changed_fraction, threshold, tp, fp, fn, tn, pairs, seconds,
    coreg_dx, coreg_dy`` (pooled over the pairs when there are several).
``robustness_pairs.csv``
    The same per pair (only when there are several pairs).
``robustness.json``
    Settings (perturbations, strengths, units, detect options, seed, data range per pair) and
    both tables.
``robustness.png``
    One panel per perturbation, F1 against strength, one line per method.
``runs/``
    Each run's detect outputs, only with ``keep_runs=True``.

References
----------
.. [1] Dai, X., Khorram, S. (1998). The effects of image misregistration on the accuracy of
   remotely sensed change detection. *IEEE TGRS* 36(5), 1566-1577. doi:10.1109/36.718860
.. [2] Hendrycks, D., Dietterich, T. (2019). Benchmarking neural network robustness to common
   corruptions and perturbations. ICLR. arXiv:1903.12261 (corruption curves at graded severities).

Modules: ``rows`` (pairs, score rows, pooling, table), ``reference_raster`` (the reference on the
output grid), ``options`` (methods, detect options, strengths), ``runs`` (one pair: the perturbed
after image and its scored detect runs), ``studies`` (the four entry points and their files) and
``figure`` (``robustness.png``).
"""

from __future__ import annotations

from deltacd.evaluate.robustness.figure import plot_robustness
from deltacd.evaluate.robustness.options import resolve_method
from deltacd.evaluate.robustness.reference_raster import reference_on_grid
from deltacd.evaluate.robustness.rows import (
    CrossDatasetResult,
    LabelledPair,
    Reference,
    RobustnessResult,
    ScoreRow,
    format_table,
    pool_rows,
)
from deltacd.evaluate.robustness.runs import MAX_PIXELS
from deltacd.evaluate.robustness.studies import Progress, compare_methods, cross_dataset, robustness, robustness_study

__all__ = [
    "MAX_PIXELS",
    "CrossDatasetResult",
    "LabelledPair",
    "Progress",
    "Reference",
    "RobustnessResult",
    "ScoreRow",
    "compare_methods",
    "cross_dataset",
    "format_table",
    "plot_robustness",
    "pool_rows",
    "reference_on_grid",
    "resolve_method",
    "robustness",
    "robustness_study",
]
