"""Building damage assessment: one grade per building between a pre- and a post-event image.

:func:`damage` (``deltacd damage``) grades buildings with one of three methods
(:mod:`deltacd.damage.methods`); :func:`evaluate_damage` (``deltacd evaluate-damage``) sets the
result against a reference study. The decisions and the licence question of shipped models:
``src/deltacd/damage/README.md``.
"""

from deltacd.damage.pipeline import DamageOptions, DamageResult, damage

__all__ = ["DamageOptions", "DamageResult", "damage"]
