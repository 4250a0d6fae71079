"""Change areas (hectares) read from a confusion matrix.

References
----------
.. [1] Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
   (2014). Good practices for estimating area and assessing accuracy of land change. *Remote
   Sensing of Environment* 148, 42-57. doi:10.1016/j.rse.2014.02.015 (why map pixel counts are not
   area estimates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deltacd.errors import InputError
from deltacd.metrics._arrays import _per_class
from deltacd.metrics.pixel import ConfusionMatrix

__all__ = ["AreaStats", "area_stats"]


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
