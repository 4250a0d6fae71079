"""Pixel accuracy of a change map against a reference: the confusion matrix and the scores read from it.

A scene is read window by window, each window updates a :class:`ConfusionMatrix`, and the partial
matrices are merged; no function needs the whole scene in memory, and the result does not depend on
the windowing.

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
.. [1] Cohen, J. (1960). A coefficient of agreement for nominal scales. *Educational and
   Psychological Measurement* 20(1), 37-46. doi:10.1177/001316446002000104
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from deltacd.errors import InputError
from deltacd.metrics._arrays import _check_n_classes, _pair_codes, _per_class, _ratio

__all__ = ["METRICS", "ConfusionMatrix", "metric_from_counts"]

#: Names accepted by ``metric=`` (see :func:`metric_from_counts`).
METRICS = ("f1", "precision", "recall", "iou", "accuracy", "kappa", "macro_f1", "mean_iou")


# --------------------------------------------------------------------------------------------
# scores from (stacks of) confusion matrices
# --------------------------------------------------------------------------------------------


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
