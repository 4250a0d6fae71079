"""deltacd: change detection between two very-high-resolution images.

The entry point is :func:`detect`; its options are the fields of :class:`DetectOptions`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from deltacd.config import DetectOptions  # noqa: E402
from deltacd.errors import DeltacdError, InputError, MissingInputError, OfflineError, OutputError  # noqa: E402
from deltacd.pipeline import DetectResult, detect  # noqa: E402

__all__ = [
    "DeltacdError", "DetectOptions", "DetectResult", "InputError", "MissingInputError", "OfflineError",
    "OutputError", "__version__", "detect",
]
