"""Automatic thresholds computed from a scene-wide :class:`Histogram`."""

from __future__ import annotations

import numpy as np
from scipy import special
from skimage.filters import threshold_otsu

from deltacd.postprocess.histogram import Histogram


def otsu_threshold(hist: Histogram) -> float:
    """Otsu's threshold of the scene's score histogram.

    Otsu (1979), "A threshold selection method from gray-level histograms",
    doi:10.1109/TSMC.1979.4310076. The histogram is first trimmed to its 99.9th percentile
    so that a few extreme scores do not squeeze the rest into a handful of bins.
    A constant score returns the top of its bin, so that nothing lies above the threshold.
    """
    if hist.total == 0:
        return float("nan")
    centers, counts = hist.centers, hist.counts
    nonzero = np.flatnonzero(counts)
    if len(nonzero) == 1:
        return float(hist.edges[nonzero[0] + 1])
    top = hist.quantile(0.999)
    keep = centers <= top
    if np.count_nonzero(counts[keep]) < 2:
        keep = slice(None)
    return float(threshold_otsu(hist=(counts[keep], centers[keep])))


def chi2_threshold(quantile: float, dof: int) -> float:
    """The ``quantile`` of a chi-square law with ``dof`` degrees of freedom.

    For IR-MAD the sum of squared standardised MAD variates of an unchanged pixel follows
    chi2(n_bands) (Nielsen 2007); pixels above this quantile are changed at significance
    ``1 - quantile``.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"chi2 quantile must lie in (0, 1); got {quantile}")
    # scipy.stats.chi2.ppf's own formula; scipy.stats itself costs 0.7 s of import at every run
    return float(2 * special.gammaincinv(dof / 2, quantile))



def capped_threshold(hist: Histogram, threshold: float, max_fraction: float) -> float:
    """``threshold`` raised, if needed, so that at most ``max_fraction`` of the scene lies above it.

    A no-change prior: in the scenes deltacd maps, change is occasional, so a rule that flags
    more than ``max_fraction`` of the valid pixels is taken to have split the no-change
    distribution rather than found change (see ``benchmarks/zero_shot_threshold.py``).
    """
    if not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction must lie in (0, 1]; got {max_fraction}")
    if hist.total == 0:
        return threshold
    return max(float(threshold), hist.quantile(1.0 - max_fraction))
