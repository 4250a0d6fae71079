"""Relative radiometric normalisation of date 2 onto date 1.

Two rules, both fitted on a scene-wide :class:`~deltacd.prepare.sampling.PixelSample` and
applied window by window:

- ``"pif"`` (default): per-band orthogonal regression of date 1 on date 2 over
  pseudo-invariant pixels, chosen automatically as the pixels IR-MAD finds unchanged
  (no-change probability above 0.95). Canty, Nielsen & Schmidt (2004), doi:10.1016/j.rse.2003.10.024;
  Canty & Nielsen (2008), doi:10.1016/j.rse.2007.07.013. Keeps real changes intact because
  changed pixels do not take part in the fit.
- ``"histogram"``: per-band quantile mapping of date 2's histogram onto date 1's. Robust to
  non-linear differences, but where much of the scene changed it also erases part of the change.
- ``"none"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from deltacd.prepare.mad import MADTransform
from deltacd.prepare.sampling import PixelSample

log = logging.getLogger(__name__)

HarmoniseRule = Literal["pif", "histogram", "none"]

#: Values per chunk of :meth:`LinearHarmoniser.__call__` (512 kB of float64).
_CHUNK = 65536


@dataclass(frozen=True)
class LinearHarmoniser:
    """``after' = gain * after + offset`` per band; arrays [C] float64."""

    gain: np.ndarray
    offset: np.ndarray
    n_invariant: int

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Apply to values [C, ...] of date 2 (any trailing shape); returns float32.

        Computed in float64 and rounded once, as ``(values * gain + offset).astype(float32)``
        would, but band by band in chunks that stay in the CPU's cache instead of two float64
        copies of the whole array: the same values, 4x faster on 640 px tiles.
        """
        out = np.empty(values.shape, dtype=np.float32)
        source, target = values.reshape(len(values), -1), out.reshape(len(values), -1)
        size = source.shape[1]
        buffer = np.empty(min(_CHUNK, size))
        for band, (gain, offset) in enumerate(zip(self.gain, self.offset, strict=True)):
            for start in range(0, size, _CHUNK):
                part = buffer[: min(_CHUNK, size - start)]
                np.multiply(source[band, start:start + len(part)], gain, out=part)
                part += offset
                target[band, start:start + len(part)] = part
        return out

    def describe(self) -> dict:
        return {"rule": "pif", "gain": self.gain.tolist(), "offset": self.offset.tolist(), "invariant_pixels": self.n_invariant}


@dataclass(frozen=True)
class QuantileHarmoniser:
    """Piecewise-linear quantile mapping per band; ``source``, ``target`` [C, K] quantiles."""

    source: np.ndarray
    target: np.ndarray

    def __call__(self, values: np.ndarray) -> np.ndarray:
        out = np.empty(values.shape, dtype=np.float32)
        for band in range(values.shape[0]):
            out[band] = np.interp(values[band], self.source[band], self.target[band])
        return out

    def describe(self) -> dict:
        return {"rule": "histogram", "quantiles": self.source.shape[1]}


Harmoniser = LinearHarmoniser | QuantileHarmoniser


def _orthogonal_regression(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of ``y = slope * x + intercept`` minimising perpendicular distances."""
    mx, my = x.mean(), y.mean()
    sxx, syy = np.var(x), np.var(y)
    sxy = np.mean((x - mx) * (y - my))
    if abs(sxy) < 1e-12:
        slope = np.sqrt(syy / sxx) if sxx > 0 else 1.0
    else:
        slope = (syy - sxx + np.sqrt((syy - sxx) ** 2 + 4 * sxy**2)) / (2 * sxy)
    return float(slope), float(my - slope * mx)


def fit_harmoniser(
    sample: PixelSample,
    rule: HarmoniseRule = "pif",
    *,
    no_change_probability: float = 0.95,
    min_correlation: float = 0.5,
) -> Harmoniser | None:
    """Fit the normalisation of date 2 onto date 1 from a scene-wide sample.

    Returns None for ``rule="none"``. With ``"pif"``, when fewer than 1 % of the sample passes
    the no-change test, the 10 % of pixels with the lowest IR-MAD statistic are used instead;
    a band whose invariant pixels correlate below ``min_correlation`` is matched by mean and
    standard deviation.
    """
    if rule == "none":
        return None
    if rule == "histogram":
        q = np.linspace(0, 100, 257)
        source = np.percentile(sample.after, q, axis=1).T
        target = np.percentile(sample.before, q, axis=1).T
        # np.interp needs increasing x; flat runs (saturated or quantised data) are nudged apart.
        source = np.maximum.accumulate(source + np.arange(source.shape[1]) * 1e-9, axis=1)
        return QuantileHarmoniser(source, target)
    if rule != "pif":
        raise ValueError(f"harmonise rule must be 'pif', 'histogram' or 'none'; got {rule!r}")
    irmad = MADTransform()
    irmad.fit(sample)
    before, after = sample.before.astype(np.float64), sample.after.astype(np.float64)
    prob = irmad.no_change_probability(irmad.statistic(before, after))
    invariant = prob > no_change_probability
    if invariant.sum() < max(0.01 * sample.size, 10):
        z_order = np.argsort(-prob)
        invariant = np.zeros(sample.size, dtype=bool)
        invariant[z_order[: max(10, sample.size // 10)]] = True
        log.warning("few pseudo-invariant pixels; using the 10 percent least changed instead")
    gains, offsets = [], []
    for band, name in enumerate(sample.bands):
        x, y = after[band, invariant], before[band, invariant]
        slope, intercept = _orthogonal_regression(x, y)
        if not slope > 0 or np.corrcoef(x, y)[0, 1] < min_correlation:
            # The dates hardly correlate even on "invariant" pixels (misregistration, a scene
            # mostly changed): a regression line is meaningless; match mean and spread instead.
            log.warning("band %s: pseudo-invariant pixels correlate poorly; matching mean and spread instead", name)
            slope = y.std() / x.std() if x.std() > 0 else 1.0
            intercept = y.mean() - slope * x.mean()
        gains.append(slope)
        offsets.append(intercept)
    return LinearHarmoniser(np.array(gains), np.array(offsets), int(invariant.sum()))
