"""Building damage assessment: one grade per building between a pre- and a post-event image.

:func:`damage` (``deltacd damage``) grades buildings with one of three methods
(:mod:`deltacd.damage.methods`); :func:`deltacd.evaluate.damage.evaluate_damage` (``deltacd evaluate-damage``) sets the
result against a reference study. The decisions and the licence question of shipped models:
``src/deltacd/damage/README.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

from deltacd.damage.options import DamageOptions


def __getattr__(name: str) -> Any:  # the pipeline (numpy, rasterio, geopandas) is imported when first used
    if name in ("DamageResult", "damage"):
        return getattr(importlib.import_module("deltacd.damage.pipeline"), name)
    raise AttributeError(f"module 'deltacd.damage' has no attribute {name!r}")


__all__ = ["DamageOptions", "DamageResult", "damage"]
