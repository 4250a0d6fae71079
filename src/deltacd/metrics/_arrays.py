"""Label arrays, masks, safe ratios and per-class counts shared by the metric modules (private).

Label arrays are integer (or bool, read as 0/1) arrays of any shape; a ``valid`` mask has the same
shape (``True``/non-zero = counted); an ``ignore_value`` in the reference marks pixels never counted.
Ratios are float64 and NaN where the denominator is 0. Confusion matrices are ``[..., K, K]``,
rows = reference class, columns = predicted class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deltacd.errors import InputError


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
