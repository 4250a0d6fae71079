"""Iteratively reweighted multivariate alteration detection (IR-MAD) as a change method, with a chi-square change test.

The transform and its statistic are :class:`deltacd.prepare.mad.MADTransform` (Nielsen 2007,
doi:10.1109/TIP.2006.888195; Canty & Nielsen 2008, doi:10.1016/j.rse.2007.07.013; the method is
described there), below both their users: radiometric normalisation picks pseudo-invariant pixels
with them. This module adds the change method's threshold and description.

The transform is fitted once on a scene-wide sample; prediction is per pixel: input
[B, C, H, W] float32, output Z [B, H, W] float32 >= 0. Threshold: the chi-square quantile
(change when Z > chi2.ppf(q, C)). Known limits: with few bands (1 PAN band) IR-MAD reduces to a
standardised difference; large changed areas bias the first iterations.
"""

from __future__ import annotations

import math

from deltacd.methods.base import ChangeMethod
from deltacd.postprocess.histogram import Histogram
from deltacd.postprocess.threshold import chi2_threshold
from deltacd.prepare.mad import PREDICT_CHUNK, MADTransform

__all__ = ["IRMAD", "PREDICT_CHUNK"]


class IRMAD(MADTransform, ChangeMethod):
    """IR-MAD chi-square change statistic: :class:`~deltacd.prepare.mad.MADTransform` as a change method.

    Parameters
    ----------
    chi2_quantile
        Quantile of chi2(C) used as the automatic threshold (0.99: 1 % of unchanged pixels
        flagged by chance).
    max_iterations, tolerance, regularisation, min_mean_weight
        Of the fit, see :class:`~deltacd.prepare.mad.MADTransform`.
    """

    name = "irmad"
    score_units = "IR-MAD chi-square statistic (degrees of freedom = number of bands)"
    score_range = (0.0, math.inf)
    thread_safe = True

    @property
    def threshold_rule(self) -> str:
        return f"chi-square {self.chi2_quantile:g} quantile"

    def __init__(
        self,
        *,
        chi2_quantile: float = 0.99,
        max_iterations: int = 50,
        tolerance: float = 1e-3,
        regularisation: float = 1e-6,
        min_mean_weight: float = 0.25,
    ):
        if not 0 < chi2_quantile < 1:
            raise ValueError(f"chi2_quantile must lie in (0, 1); got {chi2_quantile}")
        self.chi2_quantile = chi2_quantile
        super().__init__(max_iterations=max_iterations, tolerance=tolerance, regularisation=regularisation,
                         min_mean_weight=min_mean_weight)

    def auto_threshold(self, hist: Histogram) -> float:
        self._check_fitted()
        return chi2_threshold(self.chi2_quantile, len(self.rho))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "chi2_quantile": self.chi2_quantile,
            "iterations": self.iterations,
            "canonical_correlations": None if self.rho is None else self.rho.tolist(),
        }
