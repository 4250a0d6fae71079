"""Damage training moved to :mod:`deltacd.train.damage` (a task of the one training stack); re-exported here.

``deltacd train`` with ``task: damage-classifier | damage-segmentation | building-localisation``
runs :func:`~deltacd.train.damage.train_damage`; its settings are
:class:`~deltacd.train.config.DamageTrainConfig`, its samples :mod:`deltacd.train.damage_data`.
"""

from __future__ import annotations

from deltacd.train.config import DAMAGE_TASKS, DamageTrainConfig, load_damage_config
from deltacd.train.damage import DamageTask, DamageTrainResult, train_damage

__all__ = ["DAMAGE_TASKS", "DamageTask", "DamageTrainConfig", "DamageTrainResult", "load_damage_config", "train_damage"]
