"""deltacd: change detection between two very-high-resolution images.

The entry points are :func:`detect` (its options are the fields of :class:`DetectOptions`),
:func:`detect_batch` (many pairs), :func:`damage` (one grade per building) and :func:`run_study`
(a whole study from one file).
"""

from __future__ import annotations

from deltacd._version import __version__
from deltacd.batch import detect_batch
from deltacd.config import DetectOptions
from deltacd.errors import DeltacdError, InputError, MissingInputError, OfflineError, OutputError
from deltacd.pipeline import DetectResult, detect


def damage(*args, **kwargs):
    """:func:`deltacd.damage.damage`: grade every building between a pre- and a post-event image."""
    from deltacd.damage import damage as run

    return run(*args, **kwargs)


def run_study(*args, **kwargs):
    """:func:`deltacd.study.run.run_study`: every step of a study file."""
    from deltacd.study.run import run_study as run

    return run(*args, **kwargs)


__all__ = [
    "DeltacdError", "DetectOptions", "DetectResult", "InputError", "MissingInputError", "OfflineError",
    "OutputError", "__version__", "damage", "detect", "detect_batch", "run_study",
]
