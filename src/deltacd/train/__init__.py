"""Training of change-detection networks on a ``deltacd prepare-dataset`` folder (PyTorch Lightning).

``deltacd train CONFIG.yaml`` is :func:`train` on :func:`load_train_config`'s result; the run ends
with ``out/model.safetensors``, a self-describing checkpoint that ``deltacd detect --model`` runs.

* :mod:`deltacd.train.config` -- :class:`TrainConfig` (validated settings, YAML keys = fields)
* :mod:`deltacd.train.losses` -- BCE + Dice, focal, weighted BCE, all ignoring label 255
* :mod:`deltacd.train.module` -- :class:`ChangeDetectionTask` (LightningModule)
* :mod:`deltacd.train.datamodule` -- :class:`ChangeDataModule` (LightningDataModule)
* :mod:`deltacd.train.fit` -- :func:`train` -> :class:`TrainResult`
"""

from __future__ import annotations

from deltacd.train.config import LossConfig, ModelConfig, OptimizerConfig, TrainConfig, load_train_config
from deltacd.train.datamodule import ChangeDataModule
from deltacd.train.fit import TrainResult, train
from deltacd.train.module import ChangeDetectionTask

__all__ = [
    "ChangeDataModule",
    "ChangeDetectionTask",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "TrainConfig",
    "TrainResult",
    "load_train_config",
    "train",
]
