"""The few-label benchmark protocol, research scaffolding kept beside the package (``python benchmarks/few_label.py``).

* :mod:`fewlabel.protocol` -- learning curves, F1 against the number of labelled training
  chips, for training from scratch, ImageNet and TinyCD pretraining, single-date (STAR) labels,
  deltacd's training recipe and zero-shot (:func:`run_few_label`).
* :mod:`fewlabel.peers` -- the peer arm: torchgeo's ``ChangeDetectionTask`` on the same chips.

Importable when ``benchmarks/`` is on ``sys.path`` (the scripts there put it; the tests' conftest too).
"""

from __future__ import annotations

from fewlabel.protocol import (
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
