"""deltacd: change detection between two very-high-resolution images.

The entry points are :func:`detect` (its options are the fields of :class:`DetectOptions`),
:func:`detect_batch` (many pairs), :func:`damage` (one grade per building) and :func:`run_study`
(a whole study from one file).

Names are imported when first used (PEP 562), so ``import deltacd`` and ``deltacd --help`` do not
load numpy, rasterio and geopandas before they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from deltacd._version import __version__
from deltacd.errors import DeltacdError, InputError, MissingInputError, OfflineError, OutputError, ResourceError

#: Public name -> the module that defines it.
_LAZY = {
    "detect": "deltacd.pipeline", "DetectResult": "deltacd.pipeline", "detect_batch": "deltacd.batch",
    "DetectOptions": "deltacd.config", "damage": "deltacd.damage.pipeline", "run_study": "deltacd.study.run",
}

if TYPE_CHECKING:
    from deltacd.batch import detect_batch
    from deltacd.config import DetectOptions
    from deltacd.damage.pipeline import damage
    from deltacd.pipeline import DetectResult, detect
    from deltacd.study.run import run_study


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deltacd' has no attribute {name!r}")


__all__ = [
    "DeltacdError", "DetectOptions", "DetectResult", "InputError", "MissingInputError", "OfflineError",
    "OutputError", "ResourceError", "__version__", "damage", "detect", "detect_batch", "run_study",
]
