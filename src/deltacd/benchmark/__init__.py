"""Benchmarks that are part of the package (``deltacd benchmark ...``): protocols a user can rerun on their data.

* :mod:`deltacd.benchmark.few_label` -- learning curves, F1 against the number of labelled
  training chips, for training from scratch, ImageNet and TinyCD pretraining, single-date (STAR)
  labels and zero-shot (:func:`run_few_label`).
"""

from __future__ import annotations

from deltacd.benchmark.few_label import (
    ArmConfig,
    FewLabelConfig,
    FewLabelResult,
    draw_chips,
    draw_single_date_chips,
    load_few_label_config,
    run_few_label,
    summarise,
)

__all__ = [
    "ArmConfig",
    "FewLabelConfig",
    "FewLabelResult",
    "draw_chips",
    "draw_single_date_chips",
    "load_few_label_config",
    "run_few_label",
    "summarise",
]
