"""Damage grades: kept here for existing imports; they live in :mod:`deltacd.outputs.grades` (a low layer that
the report and the damage step both read)."""

from deltacd.outputs.grades import *  # noqa: F403
