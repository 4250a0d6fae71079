"""Confidence intervals of pixel scores by bootstrap over spatial blocks.

:func:`block_confusion_matrices` counts one ``[K, K]`` confusion matrix per square block of an
``[H, W]`` window (rows = reference, columns = prediction, as in :mod:`deltacd.metrics.pixel`);
blocks of many windows concatenate. :func:`block_bootstrap_ci_from_blocks` resamples those blocks
into a percentile interval of any score :func:`~deltacd.metrics.pixel.metric_from_counts` knows.

References
----------
.. [1] Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
   (2014). Good practices for estimating area and assessing accuracy of land change. *Remote
   Sensing of Environment* 148, 42-57. doi:10.1016/j.rse.2014.02.015 (why accuracy figures
   need confidence intervals).
.. [2] Kuensch, H. R. (1989). The jackknife and the bootstrap for general stationary
   observations. *The Annals of Statistics* 17(3), 1217-1241. doi:10.1214/aos/1176347265
.. [3] Lahiri, S. N. (2003). *Resampling Methods for Dependent Data*. Springer Series in
   Statistics, New York. doi:10.1007/978-1-4757-3803-2 (block bootstrap for spatial data, ch. 12).
.. [4] Carlstein, E. (1986). The use of subseries values for estimating the variance of a
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
from deltacd.metrics._arrays import _check_n_classes, _pair_codes
from deltacd.metrics.pixel import metric_from_counts

__all__ = ["BootstrapCI", "block_bootstrap_ci", "block_bootstrap_ci_from_blocks", "block_confusion_matrices"]


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
