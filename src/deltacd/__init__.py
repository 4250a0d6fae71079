"""deltacd: change detection between two very-high-resolution images.

The entry points are :func:`detect` (its options are the fields of :class:`DetectOptions`),
:func:`detect_batch` (many pairs), :func:`damage` (one grade per building) and :func:`run_study`
(a whole study from one file).
"""

from __future__ import annotations

__version__ = "0.1.0"

from deltacd.batch import detect_batch  # noqa: E402
from deltacd.config import DetectOptions  # noqa: E402
from deltacd.errors import DeltacdError, InputError, MissingInputError, OfflineError, OutputError  # noqa: E402
from deltacd.pipeline import DetectResult, detect  # noqa: E402


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
