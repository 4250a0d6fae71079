"""Agreement of two change maps, pixel by pixel, counted per land-cover transition and per zone.

Our change map and another (the post-classification comparison of two land-cover maps, or the
change layer of the current method) agree or not on each pixel; :func:`agreement_code` gives
0 neither sees change, 1 only ours, 2 only the other, 3 both. :func:`count_agreement` counts the
codes of one window's valid pixels per (zone, class at date 1, class at date 2), so that
:mod:`deltacd.evaluate.compare` and :mod:`deltacd.study.fromto` count agreement the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["N_CODES", "agreement_code", "count_agreement"]

#: Agreement codes 0..3: neither, only ours, only the other, both.
N_CODES = 4


def agreement_code(ours: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Agreement code per pixel, uint8 of the inputs' shape: ``ours + 2 * other``.

    ``ours``, ``other``: change (True / 1) or not (False / 0) per pixel, same shape.
    """
    return ours.astype(np.uint8) + 2 * other.astype(np.uint8)


def count_agreement(
    code: np.ndarray,
    valid: np.ndarray,
    *,
    before: np.ndarray | None = None,
    after: np.ndarray | None = None,
    n_classes: int = 1,
    zone: np.ndarray | None = None,
    n_zones: int = 1,
) -> np.ndarray:
    """Pixels of one window per zone, transition and agreement code.

    Parameters
    ----------
    code : uint8 ``[H, W]``
        :func:`agreement_code` of the window.
    valid : bool ``[H, W]``
        Pixels to count; the other arrays may hold anything elsewhere.
    before, after : int ``[H, W]``, optional
        Class index 0..n_classes-1 at each date; None: a single class.
    n_classes : int
    zone : int ``[H, W]``, optional
        Zone index 0..n_zones-1; None: a single zone.
    n_zones : int

    Returns
    -------
    numpy.ndarray of int64, shape ``[n_zones, n_classes, n_classes, 4]``
        Add the windows' counts up for a scene.
    """
    key = code[valid].astype(np.intp)
    if after is not None:
        key += N_CODES * after[valid].astype(np.intp)
    if before is not None:
        key += N_CODES * n_classes * before[valid].astype(np.intp)
    if zone is not None:
        key += N_CODES * n_classes * n_classes * zone[valid].astype(np.intp)
    size = n_zones * n_classes * n_classes * N_CODES
    return np.bincount(key, minlength=size).astype(np.int64).reshape(n_zones, n_classes, n_classes, N_CODES)
