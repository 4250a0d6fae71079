"""Change vector analysis (CVA): magnitude of the spectral difference over all common bands.

Malila (1980), "Change vector analysis: an approach for detecting forest changes with Landsat",
LARS Symposia paper 385; Bovolo & Bruzzone (2007), "A theoretical framework for unsupervised
change detection based on change vector analysis in the polar domain",
doi:10.1109/TGRS.2006.885408.

Each band difference is divided by the first date's robust standard deviation of that band
(learnt over the scene in :meth:`CVA.fit`), so bands with a wide digital-number range (NIR in
12-bit Pléiades) do not drown the others. Input [B, C, H, W] float32, output [B, H, W] float32,
>= 0, in units of "robust standard deviations". Per pixel, so no tile context is needed.
Cost: O(C) per pixel. Known failure modes: illumination, shadows, phenology and residual
misregistration all raise the magnitude; harmonise radiometry and co-register first.

Threshold: Otsu on the scene histogram, but never below ``min_threshold`` (default 1 robust
standard deviation): on a pair without change the score is rounding or sensor noise, a small
fraction of the scene's texture, and Otsu would split that noise in two (an unchanged scene read
at two resolutions came out 56 % "changed" at a threshold of 0.02). Real changes score far above
it: Otsu gave 3.1-19.6 on the OSCD and Landsat pairs (``benchmarks/accuracy_unsupervised.py``).
"""

from __future__ import annotations

import math

import numpy as np

from deltacd.methods.base import ChangeMethod
from deltacd.postprocess.histogram import Histogram
from deltacd.postprocess.threshold import otsu_threshold
from deltacd.prepare.sampling import BandStats, PixelSample


class CVA(ChangeMethod):
    """Change vector magnitude ``sqrt(sum_b ((after_b - before_b) / s_b)**2)``; threshold: Otsu, at least 1."""

    name = "cva"
    score_units = "CVA magnitude (robust standard deviations of date 1)"
    score_range = (0.0, math.inf)
    thread_safe = True

    def __init__(self, *, min_threshold: float = 1.0) -> None:
        if not min_threshold >= 0:
            raise ValueError(f"min_threshold must be >= 0 (robust standard deviations); got {min_threshold}")
        self.min_threshold = float(min_threshold)
        self.scale: np.ndarray | None = None

    @property
    def threshold_rule(self) -> str:
        return f"Otsu, at least {self.min_threshold:g}"

    def auto_threshold(self, hist: Histogram) -> float:
        return max(otsu_threshold(hist), self.min_threshold)

    def fit(self, sample: PixelSample) -> None:
        self.scale = BandStats.of(sample.before, sample.bands).robust_std.astype(np.float32)

    def predict(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        scale = self.scale if self.scale is not None else np.ones(before.shape[1], dtype=np.float32)
        with np.errstate(invalid="ignore"):  # inf - inf on no-data pixels: NaN, masked by the engine
            diff = (after - before) / scale[None, :, None, None]
        return np.sqrt(np.einsum("bchw,bchw->bhw", diff, diff, dtype=np.float32))

    def describe(self) -> dict:
        return {"name": self.name, "min_threshold": self.min_threshold,
                "band_scale": None if self.scale is None else self.scale.tolist()}
