"""Training of change and damage networks (PyTorch Lightning), one stack for every task.

``deltacd train CONFIG.yaml`` is :func:`train` on :func:`load_train_config`'s result (change
networks on a ``deltacd prepare-dataset`` folder), or :func:`train_damage` when the config names
a damage ``task``; the run ends with ``out/model.safetensors``, a self-describing checkpoint that
``deltacd detect --model`` (or ``deltacd damage --model``) runs.

* :mod:`deltacd.train.config` -- :class:`TrainConfig`, :class:`DamageTrainConfig` (validated settings, YAML keys = fields)
* :mod:`deltacd.train.module` -- :class:`TrainingTask`, the LightningModule base every task derives
  from, and :class:`ChangeDetectionTask`
* :mod:`deltacd.train.losses` -- BCE + Dice, focal, weighted BCE, all ignoring label 255
* :mod:`deltacd.train.augment` -- the augmentation of training batches (both tasks)
* :mod:`deltacd.train.datamodule` -- :class:`ChangeDataModule` (LightningDataModule)
* :mod:`deltacd.train.fit` -- :func:`train` -> :class:`TrainResult`
* :mod:`deltacd.train.damage`, :mod:`deltacd.train.damage_data` -- :func:`train_damage`, the damage
  tasks' :class:`DamageTask` and samples
"""

from __future__ import annotations

from deltacd.train.config import (
    DamageTrainConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    TrainConfig,
    load_damage_config,
    load_train_config,
)
from deltacd.train.datamodule import ChangeDataModule
from deltacd.train.fit import TrainResult, train
from deltacd.train.module import ChangeDetectionTask, TrainingTask

__all__ = [
    "ChangeDataModule",
    "ChangeDetectionTask",
    "DamageTask",
    "DamageTrainConfig",
    "DamageTrainResult",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingTask",
    "load_damage_config",
    "load_train_config",
    "train",
    "train_damage",
]


def __getattr__(name: str):
    # the damage task reads footprints and grade tables: imported when asked for, not by change training
    if name in ("DamageTask", "DamageTrainResult", "train_damage"):
        from deltacd.train import damage

        return getattr(damage, name)
    raise AttributeError(f"module 'deltacd.train' has no attribute {name!r}")
