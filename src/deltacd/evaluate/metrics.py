"""Pixel accuracy of a change map against a reference, accumulated window by window.

Everything here works on numpy arrays of any size and is built to be *accumulated*: a scene is
read window by window, each window updates a :class:`ConfusionMatrix` (or a
:class:`ScoreHistogram`, or a stack of per-block matrices), and the partial results are merged.
No function needs the whole scene in memory, and the result does not depend on the windowing.

Conventions
-----------
* Confusion matrices are ``int64`` arrays of shape ``[K, K]``: **rows = reference class,
  columns = predicted class** (the scikit-learn convention). For binary change, class 0 is
  "no change" and class 1 is "change" (the positive class).
* Pixels are left out through a ``valid`` mask (``True``/non-zero = counted) and/or an
  ``ignore_value`` in the reference (e.g. 255 for "no label"); both may be given.
* Undefined ratios (0/0, e.g. the precision of a class that is never predicted) are **NaN**,
  never a silent 0 and never an exception; :meth:`ConfusionMatrix.scores_dict` writes them as
  ``None`` so the dict is strict JSON.
* F1 is computed as ``2 TP / (2 TP + FP + FN)``, which equals the harmonic mean of precision
  and recall whenever both are defined and is 0 (not NaN) when TP = 0 but FP + FN > 0; it is NaN
  only when the class appears in neither the prediction nor the reference (the scikit-learn
  >= 1.3 definition).

References
----------
.. [1] Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
   (2014). Good practices for estimating area and assessing accuracy of land change. *Remote
   Sensing of Environment* 148, 42-57. doi:10.1016/j.rse.2014.02.015 (why accuracy figures
   need confidence intervals, and why map pixel counts are not area estimates).
.. [2] Cohen, J. (1960). A coefficient of agreement for nominal scales. *Educational and
   Psychological Measurement* 20(1), 37-46. doi:10.1177/001316446002000104
.. [3] Kuensch, H. R. (1989). The jackknife and the bootstrap for general stationary
   observations. *The Annals of Statistics* 17(3), 1217-1241. doi:10.1214/aos/1176347265
.. [4] Lahiri, S. N. (2003). *Resampling Methods for Dependent Data*. Springer Series in
   Statistics, New York. doi:10.1007/978-1-4757-3803-2 (block bootstrap for spatial data, ch. 12).
.. [5] Carlstein, E. (1986). The use of subseries values for estimating the variance of a
   general statistic from a stationary sequence. *The Annals of Statistics* 14(3), 1171-1179.
   doi:10.1214/aos/1176350057 (non-overlapping blocks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deltacd.errors import InputError

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

#: Names accepted by ``metric=`` (see :func:`metric_from_counts`).
METRICS = ("f1", "precision", "recall", "iou", "accuracy", "kappa", "macro_f1", "mean_iou")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_n_classes(n_classes: Any) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise InputError(f"n_classes: got {n_classes!r}, expected an integer >= 2; use 2 for change/no-change")
    return int(n_classes)


def _as_labels(name: str, a: Any) -> np.ndarray:
    """``a`` as an integer (or bool -> uint8) array; floats must hold whole numbers."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise InputError(
                f"{name}: got a float array with non-integer or NaN values, expected class labels; "
                "threshold scores first (e.g. score >= 0.5) and mark nodata with valid= or ignore_value="
            )
        return arr.astype(np.int64)
    raise InputError(f"{name}: got dtype {arr.dtype}, expected an integer or bool label array; convert it with np.asarray(..., int)")


def _as_valid(valid: Any, shape: tuple[int, ...]) -> np.ndarray:
    v = np.asarray(valid)
    if v.shape != shape:
        raise InputError(f"valid: got shape {v.shape}, expected {shape} (the shape of pred/ref); give one flag per pixel")
    return v if v.dtype == bool else v != 0


def _keep_mask(shape: tuple[int, ...], ref: np.ndarray, valid: Any, ignore_value: int | None) -> np.ndarray | None:
    keep = None if valid is None else _as_valid(valid, shape)
    if ignore_value is not None:
        k = ref != ignore_value
        keep = k if keep is None else keep & k
    return keep


def _check_range(name: str, values: np.ndarray, n_classes: int) -> None:
    if values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        hint = "convert 0/255 masks with (mask > 0)" if bad == 255 and n_classes == 2 else "set n_classes to the number of classes"
        raise InputError(
            f"{name}: found class value {bad}, expected values 0..{n_classes - 1} for n_classes={n_classes}; "
            f"{hint}, or pass ignore_value=/valid= for nodata pixels"
        )


def _pair_codes(
    pred: Any, ref: Any, n_classes: int, valid: Any, ignore_value: int | None
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """Codes ``ref * K + pred`` of the counted pixels (1-D), the keep mask, and the array shape."""
    p = _as_labels("pred", pred)
    r = _as_labels("ref", ref)
    if p.shape != r.shape:
        raise InputError(f"pred: got shape {p.shape}, expected the shape of ref {r.shape}; read both on the same grid/window")
    keep = _keep_mask(r.shape, r, valid, ignore_value)
    if keep is not None:
        p, r = p[keep], r[keep]
    else:
        p, r = p.ravel(), r.ravel()
    _check_range("ref", r, n_classes)
    _check_range("pred", p, n_classes)
    codes = r.astype(np.intp) * n_classes + p.astype(np.intp)
    return codes, keep, tuple(np.shape(pred))


# --------------------------------------------------------------------------------------------
# scores from (stacks of) confusion matrices
# --------------------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _per_class(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN per class for ``counts[..., K, K]`` -> three arrays ``[..., K]`` (float64)."""
    c = np.asarray(counts, dtype=np.float64)
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    fp = c.sum(axis=-2) - tp  # predicted as the class (column sum) but another reference class
    fn = c.sum(axis=-1) - tp  # reference of the class (row sum) predicted as another
    return tp, fp, fn


def _accuracy(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return _ratio(np.trace(c, axis1=-2, axis2=-1), c.sum(axis=(-2, -1)))


def _kappa(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=(-2, -1))
    po = _ratio(np.trace(c, axis1=-2, axis2=-1), n)
    pe = _ratio((c.sum(axis=-1) * c.sum(axis=-2)).sum(axis=-1), n * n)
    return _ratio(po - pe, 1.0 - pe)


def metric_from_counts(counts: Any, metric: str = "f1", *, positive_class: int = 1) -> np.ndarray:
    """Evaluate a named score on one confusion matrix or a stack of them (vectorised).

    Parameters
    ----------
    counts : array_like, shape ``[..., K, K]``
        Confusion matrices, rows = reference, columns = prediction.
    metric : str
        ``"f1"``, ``"precision"``, ``"recall"``, ``"iou"`` (of ``positive_class``), ``"accuracy"``
        (overall), ``"kappa"`` (Cohen's kappa, Cohen 1960), ``"macro_f1"`` or ``"mean_iou"`` (mean over
        the classes whose score is defined; NaN if none is).
    positive_class : int
        The class the binary scores refer to; 1 ("change") by default.

    Returns
    -------
    numpy.ndarray of float64, shape ``[...]``
        NaN where the score is 0/0.
    """
    c = np.asarray(counts)
    if c.ndim < 2 or c.shape[-1] != c.shape[-2]:
        raise InputError(f"counts: got shape {c.shape}, expected [..., K, K] confusion matrices; stack square matrices")
    k = c.shape[-1]
    if metric in ("f1", "precision", "recall", "iou"):
        if not 0 <= positive_class < k:
            raise InputError(f"positive_class: got {positive_class}, expected 0..{k - 1}; use 1 for change")
        tp, fp, fn = (x[..., positive_class] for x in _per_class(c))
        if metric == "f1":
            return _ratio(2 * tp, 2 * tp + fp + fn)
        if metric == "precision":
            return _ratio(tp, tp + fp)
        if metric == "recall":
            return _ratio(tp, tp + fn)
        return _ratio(tp, tp + fp + fn)
    if metric == "accuracy":
        return _accuracy(c)
    if metric == "kappa":
        return _kappa(c)
    if metric in ("macro_f1", "mean_iou"):
        tp, fp, fn = _per_class(c)
        per = _ratio(2 * tp, 2 * tp + fp + fn) if metric == "macro_f1" else _ratio(tp, tp + fp + fn)
        defined = ~np.isnan(per)
        n = defined.sum(axis=-1)
        return _ratio(np.where(defined, per, 0.0).sum(axis=-1), n)
    raise InputError(f"metric: got {metric!r}, expected one of {', '.join(METRICS)} or a callable; pick one of those")


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------


class ConfusionMatrix:
    """A K-class confusion matrix that accumulates window by window.

    Rows are the reference class, columns the predicted class (scikit-learn convention), and
    ``counts[i, j]`` is the number of counted pixels whose reference is ``i`` and prediction
    ``j``. Unlike the other result types of this module it is mutable on purpose: it is an
    accumulator. :meth:`update` and :meth:`merge` add in place and return ``self``; ``a + b``
    returns a new matrix.

    Parameters
    ----------
    n_classes : int, default 2
        Number of classes K (labels 0..K-1). For change detection K = 2 and class 1 is change.
    ignore_value : int, optional
        Reference value whose pixels are never counted (e.g. 255 = unlabelled). Applied by
        every :meth:`update`, so it is set once for the whole scene.
    counts : array_like of int, shape ``[K, K]``, optional
        Start from these counts (e.g. read back from a report) instead of zeros.

    Notes
    -----
    Undefined ratios are NaN (see the module notes). Scores are computed in float64 from int64
    counts, so they are exact to rounding for any scene size below 2**53 pixels.

    Examples
    --------
    >>> cm = ConfusionMatrix(2, ignore_value=255)
    >>> for pred_win, ref_win in windows:        # doctest: +SKIP
    ...     cm.update(pred_win, ref_win)
    >>> cm.f1, cm.kappa                          # doctest: +SKIP
    """

    __slots__ = ("_counts", "_ignore_value", "_n")

    def __init__(self, n_classes: int = 2, *, ignore_value: int | None = None, counts: Any = None) -> None:
        self._n = _check_n_classes(n_classes)
        if ignore_value is not None and 0 <= ignore_value < self._n:
            raise InputError(
                f"ignore_value: got {ignore_value}, which is also a class (0..{self._n - 1}); "
                "use a value outside the classes, e.g. 255"
            )
        self._ignore_value = ignore_value
        if counts is None:
            self._counts = np.zeros((self._n, self._n), dtype=np.int64)
        else:
            c = np.asarray(counts)
            if c.shape != (self._n, self._n):
                raise InputError(
                    f"counts: got shape {c.shape}, expected ({self._n}, {self._n}) for n_classes={self._n}; pass matching counts"
                )
            if not np.issubdtype(c.dtype, np.integer) and not (c == np.round(c)).all():
                raise InputError("counts: got non-integer values, expected pixel counts; pass integer counts")
            if (c < 0).any():
                raise InputError(f"counts: got a negative count ({int(c.min())}), expected counts >= 0; pass pixel counts")
            self._counts = c.astype(np.int64).copy()

    # -- construction / accumulation --------------------------------------------------------

    @classmethod
    def from_arrays(
        cls, pred: Any, ref: Any, *, n_classes: int = 2, valid: Any = None, ignore_value: int | None = None
    ) -> ConfusionMatrix:
        """The confusion matrix of one pair of arrays (shortcut for ``ConfusionMatrix(...).update(...)``)."""
        return cls(n_classes, ignore_value=ignore_value).update(pred, ref, valid)

    def update(self, pred: Any, ref: Any, valid: Any = None) -> ConfusionMatrix:
        """Add the pixels of one window.

        Parameters
        ----------
        pred, ref : array_like of int or bool, same shape (any, typically ``[H, W]``)
            Predicted and reference class per pixel, values 0..K-1 (``ref`` may also hold
            ``ignore_value``). Floats are accepted when they hold whole numbers.
        valid : array_like of bool, same shape, optional
            ``True`` (non-zero) where the pixel is counted; e.g. the nodata mask of the window.

        Returns
        -------
        ConfusionMatrix
            ``self``, updated in place.

        Raises
        ------
        deltacd.errors.InputError
            On shape mismatch or a class value outside 0..K-1 among counted pixels.
        """
        codes, _, _ = _pair_codes(pred, ref, self._n, valid, self._ignore_value)
        if codes.size:
            self._counts += np.bincount(codes, minlength=self._n * self._n).reshape(self._n, self._n)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (e.g. from another window or worker) in place; returns ``self``."""
        if not isinstance(other, ConfusionMatrix):
            raise InputError(
                f"other: got {type(other).__name__}, expected a ConfusionMatrix; wrap counts with ConfusionMatrix(counts=...)"
            )
        if other.n_classes != self._n:
            raise InputError(f"other: has n_classes={other.n_classes}, expected {self._n}; merge matrices of the same classes")
        self._counts += other._counts
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.copy().merge(other)

    def copy(self) -> ConfusionMatrix:
        return ConfusionMatrix(self._n, ignore_value=self._ignore_value, counts=self._counts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfusionMatrix) and other.n_classes == self._n and bool((other._counts == self._counts).all())

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return f"ConfusionMatrix(n_classes={self._n}, counts={self._counts.tolist()})"

    # -- raw counts ---------------------------------------------------------------------------

    @property
    def n_classes(self) -> int:
        return self._n

    @property
    def ignore_value(self) -> int | None:
        return self._ignore_value

    @property
    def counts(self) -> np.ndarray:
        """int64 ``[K, K]``, rows = reference, columns = prediction (a read-only view)."""
        v = self._counts.view()
        v.flags.writeable = False
        return v

    @property
    def n_pixels(self) -> int:
        """Number of counted pixels."""
        return int(self._counts.sum())

    def _binary(self, what: str) -> None:
        if self._n != 2:
            raise InputError(
                f"{what}: defined for binary change (n_classes=2), this matrix has n_classes={self._n}; "
                f"use {what}_per_class[k] or metric_from_counts(cm.counts, '{what}', positive_class=k)"
            )

    @property
    def tp(self) -> int:
        """Binary: changed pixels predicted as changed."""
        self._binary("tp")
        return int(self._counts[1, 1])

    @property
    def fp(self) -> int:
        """Binary: unchanged pixels predicted as changed (false alarms)."""
        self._binary("fp")
        return int(self._counts[0, 1])

    @property
    def fn(self) -> int:
        """Binary: changed pixels predicted as unchanged (misses)."""
        self._binary("fn")
        return int(self._counts[1, 0])

    @property
    def tn(self) -> int:
        """Binary: unchanged pixels predicted as unchanged."""
        self._binary("tn")
        return int(self._counts[0, 0])

    # -- per class -----------------------------------------------------------------------------

    @property
    def precision_per_class(self) -> np.ndarray:
        """float64 ``[K]``: TP / (TP + FP); NaN for a class never predicted."""
        tp, fp, _ = _per_class(self._counts)
        return _ratio(tp, tp + fp)

    @property
    def recall_per_class(self) -> np.ndarray:
        """float64 ``[K]``: TP / (TP + FN) (producer's accuracy); NaN for a class absent from the reference."""
        tp, _, fn = _per_class(self._counts)
        return _ratio(tp, tp + fn)

    @property
    def f1_per_class(self) -> np.ndarray:
        """float64 ``[K]``: 2 TP / (2 TP + FP + FN); NaN for a class absent from both maps."""
        tp, fp, fn = _per_class(self._counts)
        return _ratio(2 * tp, 2 * tp + fp + fn)

    @property
    def iou_per_class(self) -> np.ndarray:
        """float64 ``[K]``: TP / (TP + FP + FN) (Jaccard index); NaN for a class absent from both maps."""
        tp, fp, fn = _per_class(self._counts)
        return _ratio(tp, tp + fp + fn)

    # -- overall --------------------------------------------------------------------------------

    @property
    def overall_accuracy(self) -> float:
        """Fraction of counted pixels on the diagonal; NaN when nothing was counted."""
        return float(_accuracy(self._counts))

    accuracy = overall_accuracy

    @property
    def kappa(self) -> float:
        """Cohen's kappa (Cohen 1960) ``(p_o - p_e) / (1 - p_e)``; NaN when ``p_e = 1`` (one class only) or nothing was counted."""
        return float(_kappa(self._counts))

    @property
    def macro_f1(self) -> float:
        """Mean of :attr:`f1_per_class` over the classes where it is defined."""
        return float(metric_from_counts(self._counts, "macro_f1"))

    @property
    def mean_iou(self) -> float:
        """Mean of :attr:`iou_per_class` over the classes where it is defined."""
        return float(metric_from_counts(self._counts, "mean_iou"))

    # -- binary change conveniences (class 1 = change) ---------------------------------------------

    @property
    def f1(self) -> float:
        """Binary: F1 of the change class."""
        self._binary("f1")
        return float(self.f1_per_class[1])

    @property
    def precision(self) -> float:
        """Binary: precision (user's accuracy) of the change class."""
        self._binary("precision")
        return float(self.precision_per_class[1])

    @property
    def recall(self) -> float:
        """Binary: recall (producer's accuracy) of the change class."""
        self._binary("recall")
        return float(self.recall_per_class[1])

    @property
    def iou(self) -> float:
        """Binary: IoU of the change class."""
        self._binary("iou")
        return float(self.iou_per_class[1])

    # -- export -----------------------------------------------------------------------------------

    def scores_dict(self, *, class_names: list[str] | None = None) -> dict[str, Any]:
        """All counts and scores as a flat, strict-JSON dict.

        Parameters
        ----------
        class_names : list of str, optional
            Names used in the per-class keys (``precision_<name>``...); default
            ``["no_change", "change"]`` for K = 2 and ``["0", "1", ...]`` otherwise.

        Returns
        -------
        dict
            Python ``int``/``float``/``None`` values only; NaN scores become ``None``. Keys:
            ``n_classes``, ``n_pixels``, ``overall_accuracy``, ``kappa``, ``macro_f1``,
            ``mean_iou``, ``count_<ref>_<pred>``, ``precision_<c>``, ``recall_<c>``, ``f1_<c>``,
            ``iou_<c>``, and for K = 2 also ``tp``, ``fp``, ``fn``, ``tn``, ``precision``,
            ``recall``, ``f1``, ``iou`` of the change class.
        """
        if class_names is None:
            class_names = ["no_change", "change"] if self._n == 2 else [str(i) for i in range(self._n)]
        if len(class_names) != self._n:
            raise InputError(f"class_names: got {len(class_names)} names, expected {self._n}; give one name per class")

        def f(x: float) -> float | None:
            x = float(x)
            return None if math.isnan(x) else x

        d: dict[str, Any] = {"n_classes": self._n, "n_pixels": self.n_pixels}
        if self._n == 2:
            d.update(tp=self.tp, fp=self.fp, fn=self.fn, tn=self.tn)
            d.update(precision=f(self.precision), recall=f(self.recall), f1=f(self.f1), iou=f(self.iou))
        d.update(
            overall_accuracy=f(self.overall_accuracy), kappa=f(self.kappa), macro_f1=f(self.macro_f1), mean_iou=f(self.mean_iou)
        )
        for i, ri in enumerate(class_names):
            for j, pj in enumerate(class_names):
                d[f"count_{ri}_{pj}"] = int(self._counts[i, j])
        for name, arr in (
            ("precision", self.precision_per_class),
            ("recall", self.recall_per_class),
            ("f1", self.f1_per_class),
            ("iou", self.iou_per_class),
        ):
            for c, v in zip(class_names, arr):
                d[f"{name}_{c}"] = f(v)
        return d


# --------------------------------------------------------------------------------------------
# block bootstrap
# --------------------------------------------------------------------------------------------


def block_confusion_matrices(
    pred: Any,
    ref: Any,
    *,
    n_classes: int = 2,
    block_size: int = 64,
    valid: Any = None,
    ignore_value: int | None = None,
    drop_empty: bool = True,
) -> np.ndarray:
    """One confusion matrix per square spatial block, in one pass.

    Parameters
    ----------
    pred, ref : array_like of int, shape ``[H, W]``
        Prediction and reference, values 0..K-1 (see :meth:`ConfusionMatrix.update`).
    n_classes : int, default 2
    block_size : int, default 64
        Block side in pixels. Blocks tile the array from its top-left corner; blocks on the
        right and bottom edges are smaller when ``H`` or ``W`` is not a multiple. To accumulate a
        large raster, read windows whose offsets are multiples of ``block_size`` and
        concatenate the results.
    valid : array_like of bool, shape ``[H, W]``, optional
    ignore_value : int, optional
        Reference value that is never counted.
    drop_empty : bool, default True
        Leave out blocks with no counted pixel (e.g. entirely nodata); they carry no
        information and would only dilute the resampling.

    Returns
    -------
    numpy.ndarray of int64, shape ``[n_blocks, K, K]``
        Blocks in row-major order; their sum is the confusion matrix of the whole array.
    """
    k = _check_n_classes(n_classes)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise InputError(f"block_size: got {block_size!r}, expected a positive integer (pixels); e.g. 64")
    shape = np.shape(ref)
    if len(shape) != 2:
        raise InputError(f"ref: got {len(shape)} dimension(s) {shape}, expected a 2-D [H, W] array; pass one band")
    codes, keep, _ = _pair_codes(pred, ref, k, valid, ignore_value)
    h, w = shape
    nby, nbx = -(-h // block_size), -(-w // block_size)
    block = (np.arange(h, dtype=np.intp) // block_size)[:, None] * nbx + (np.arange(w, dtype=np.intp) // block_size)[None, :]
    block = block[keep] if keep is not None else block.ravel()
    out = np.bincount(block * (k * k) + codes, minlength=nby * nbx * k * k).reshape(nby * nbx, k, k).astype(np.int64)
    if drop_empty:
        out = out[out.sum(axis=(1, 2)) > 0]
    return out


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap confidence interval.

    Attributes
    ----------
    metric : str
        Name of the score.
    estimate : float
        The score of the whole map (all blocks summed), not the bootstrap mean.
    low, high : float
        The ``alpha/2`` and ``1 - alpha/2`` quantiles of the bootstrap distribution.
    std_error : float
        Standard deviation of the bootstrap replicates.
    alpha : float
        1 - confidence level (0.05 for a 95 % interval).
    n_boot : int
        Number of bootstrap replicates drawn.
    n_undefined : int
        Replicates where the score was 0/0 (e.g. no change drawn); left out of the quantiles.
    n_blocks : int
        Number of (non-empty) blocks resampled.
    block_size : int or None
        Block side in pixels, when known.
    """

    metric: str
    estimate: float
    low: float
    high: float
    std_error: float
    alpha: float
    n_boot: int
    n_undefined: int
    n_blocks: int
    block_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat strict-JSON dict (NaN -> None)."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = None if isinstance(v, float) and math.isnan(v) else v
        return out


def _check_boot_args(n_boot: Any, alpha: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise InputError(f"n_boot: got {n_boot!r}, expected an integer >= 2; use 1000 or more for a 95 % interval")
    if not (isinstance(alpha, (float, int)) and 0 < alpha < 1):
        raise InputError(f"alpha: got {alpha!r}, expected a number in (0, 1); use 0.05 for a 95 % interval")


def block_bootstrap_ci_from_blocks(
    block_counts: Any,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | None = 0,
    metric: str | Callable[[np.ndarray], np.ndarray] = "f1",
    positive_class: int = 1,
    block_size: int | None = None,
) -> BootstrapCI:
    """Block-bootstrap confidence interval from precomputed per-block confusion matrices.

    Each replicate draws ``n_blocks`` blocks with replacement, sums their confusion matrices
    and evaluates the score. Resampling whole blocks instead of pixels keeps the spatial
    autocorrelation of errors inside each block, so the interval is not absurdly narrow the way
    a pixel bootstrap is (errors of neighbouring pixels are not independent): Kuensch (1989),
    Lahiri (2003, ch. 12), Carlstein (1986) for non-overlapping blocks. Reporting an interval
    rather than a bare score follows Olofsson et al. (2014). References in the module docstring.

    The work is vectorised: the replicates are the matrix product of the draw counts
    ``[n_boot, n_blocks]`` with the flattened blocks ``[n_blocks, K*K]``, done in chunks so memory
    stays below ~50 MB whatever the number of blocks.

    Parameters
    ----------
    block_counts : array_like of int, shape ``[n_blocks, K, K]``
        Per-block confusion matrices (see :func:`block_confusion_matrices`); they may come
        from many windows, concatenated.
    n_boot : int, default 1000
        Number of replicates.
    alpha : float, default 0.05
        1 - confidence level; the interval is the percentile interval
        ``[q(alpha/2), q(1 - alpha/2)]``.
    seed : int or None, default 0
        Seed of :func:`numpy.random.default_rng`; the same seed and blocks give the same interval.
    metric : str or callable, default "f1"
        A name from :data:`METRICS` (see :func:`metric_from_counts`) or a function mapping
        ``[n, K, K]`` counts to ``[n]`` scores.
    positive_class : int, default 1
        The class that binary scores refer to.
    block_size : int, optional
        Only recorded in the result.

    Returns
    -------
    BootstrapCI

    Notes
    -----
    Blocks should be larger than the range of spatial autocorrelation of the errors (a few
    times the typical object size) and there should be many of them (>= 50 or so) for the
    percentile interval to be meaningful; with fewer than 2 blocks an error is raised.
    """
    b = np.asarray(block_counts)
    if b.ndim != 3 or b.shape[1] != b.shape[2] or b.shape[1] < 2:
        raise InputError(f"block_counts: got shape {b.shape}, expected [n_blocks, K, K] with K >= 2; use block_confusion_matrices()")
    if not np.issubdtype(b.dtype, np.integer) or (b < 0).any():
        raise InputError(
            f"block_counts: got dtype {b.dtype} with minimum {b.min() if b.size else 0}, expected non-negative integer "
            "pixel counts; pass the int64 output of block_confusion_matrices()"
        )
    _check_boot_args(n_boot, alpha)
    n_blocks, k = b.shape[0], b.shape[1]
    if n_blocks < 2:
        raise InputError(f"block_counts: got {n_blocks} block(s), expected at least 2 (ideally 50+); use a smaller block_size")

    if callable(metric):
        name = getattr(metric, "__name__", "custom")

        def score(c: np.ndarray) -> np.ndarray:
            return np.asarray(metric(c), dtype=np.float64)
    else:
        name = str(metric)
        metric_from_counts(np.zeros((k, k), dtype=np.int64), name, positive_class=positive_class)  # validates the name

        def score(c: np.ndarray) -> np.ndarray:
            return metric_from_counts(c, name, positive_class=positive_class)

    flat = b.reshape(n_blocks, k * k).astype(np.float64)  # exact below 2**53 pixels
    estimate = float(score(flat.sum(axis=0).reshape(k, k)))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(int(n_boot), (1 << 21) // n_blocks))  # ~50 MB of draws per chunk
    reps = np.empty(int(n_boot), dtype=np.float64)
    for start in range(0, int(n_boot), chunk):
        c = min(chunk, int(n_boot) - start)
        idx = rng.integers(0, n_blocks, size=(c, n_blocks))
        idx += (np.arange(c, dtype=idx.dtype) * n_blocks)[:, None]
        draws = np.bincount(idx.ravel(), minlength=c * n_blocks).reshape(c, n_blocks).astype(np.float64)
        reps[start : start + c] = score((draws @ flat).reshape(c, k, k))
    ok = reps[~np.isnan(reps)]
    if ok.size:
        low, high = (float(x) for x in np.quantile(ok, [alpha / 2, 1 - alpha / 2]))
        se = float(ok.std(ddof=1)) if ok.size > 1 else math.nan
    else:
        low = high = se = math.nan
    return BootstrapCI(
        metric=name,
        estimate=estimate,
        low=low,
        high=high,
        std_error=se,
        alpha=float(alpha),
        n_boot=int(n_boot),
        n_undefined=int(reps.size - ok.size),
        n_blocks=int(n_blocks),
        block_size=None if block_size is None else int(block_size),
    )


def block_bootstrap_ci(
    pred: Any,
    ref: Any,
    *,
    block_size: int = 64,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | None = 0,
    metric: str | Callable[[np.ndarray], np.ndarray] = "f1",
    valid: Any = None,
    ignore_value: int | None = None,
    n_classes: int = 2,
    positive_class: int = 1,
) -> BootstrapCI:
    """Confidence interval of a score by bootstrap over spatial blocks.

    Shortcut for :func:`block_confusion_matrices` followed by
    :func:`block_bootstrap_ci_from_blocks`; see the latter for the method and references.

    Parameters
    ----------
    pred, ref : array_like of int, shape ``[H, W]``
        Prediction and reference, classes 0..K-1 (1 = change for K = 2).
    block_size : int, default 64
        Block side in pixels.
    n_boot, alpha, seed, metric, positive_class
        As in :func:`block_bootstrap_ci_from_blocks` (default: 95 % interval of the change F1
        from 1000 replicates, seed 0).
    valid : array_like of bool, shape ``[H, W]``, optional
    ignore_value : int, optional
    n_classes : int, default 2

    Returns
    -------
    BootstrapCI
    """
    blocks = block_confusion_matrices(
        pred, ref, n_classes=n_classes, block_size=block_size, valid=valid, ignore_value=ignore_value
    )
    return block_bootstrap_ci_from_blocks(
        blocks, n_boot=n_boot, alpha=alpha, seed=seed, metric=metric, positive_class=positive_class, block_size=block_size
    )


# --------------------------------------------------------------------------------------------
# threshold curves from score histograms
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# areas
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AreaStats:
    """Change areas in hectares (1 ha = 10 000 m²) from a confusion matrix.

    These are *map* areas (pixel counts times pixel area), not the bias-corrected area
    estimates of Olofsson et al. (2014), which need a probability sample of the reference.

    Attributes
    ----------
    found_ha : float
        Reference change that the map shows as change (TP).
    missed_ha : float
        Reference change the map misses (FN).
    false_ha : float
        Change on the map that the reference does not have (FP).
    reference_ha : float
        All reference change (TP + FN).
    predicted_ha : float
        All mapped change (TP + FP).
    pixel_area_m2 : float
        The pixel area used.
    """

    found_ha: float
    missed_ha: float
    false_ha: float
    reference_ha: float
    predicted_ha: float
    pixel_area_m2: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def area_stats(cm: ConfusionMatrix | Any, pixel_area_m2: float, *, positive_class: int = 1) -> AreaStats:
    """Found, missed and false change areas.

    Parameters
    ----------
    cm : ConfusionMatrix or array_like of int, shape ``[K, K]``
        Rows = reference, columns = prediction.
    pixel_area_m2 : float
        Area of one pixel in square metres (e.g. 0.25 for 0.5 m pixels; use the ground area on
        a geographic CRS).
    positive_class : int, default 1
        The change class.

    Returns
    -------
    AreaStats
    """
    counts = cm.counts if isinstance(cm, ConfusionMatrix) else np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise InputError(f"cm: got shape {counts.shape}, expected a ConfusionMatrix or a [K, K] count array; pass cm.counts")
    try:
        a = float(pixel_area_m2)
    except (TypeError, ValueError):
        a = math.nan
    if not (math.isfinite(a) and a > 0):
        raise InputError(f"pixel_area_m2: got {pixel_area_m2!r}, expected a positive area in m²; e.g. 0.25 for 0.5 m pixels")
    k = counts.shape[0]
    if not 0 <= positive_class < k:
        raise InputError(f"positive_class: got {positive_class}, expected 0..{k - 1}; use 1 for change")
    tp, fp, fn = (float(x[positive_class]) for x in _per_class(counts))
    ha = a / 10_000.0
    return AreaStats(
        found_ha=tp * ha,
        missed_ha=fn * ha,
        false_ha=fp * ha,
        reference_ha=(tp + fn) * ha,
        predicted_ha=(tp + fp) * ha,
        pixel_area_m2=a,
    )
