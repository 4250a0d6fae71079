"""Run records as strict JSON: what every verb writes (run.json, metrics.json, ...) parses anywhere.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON; numpy scalars and paths
are not serialisable at all. :func:`to_json_value` turns a record into plain JSON values
(non-finite numbers become ``null``), and :func:`dumps` refuses anything it cannot represent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def to_json_value(value: Any) -> Any:
    """A strict-JSON copy: NaN/inf -> None, numpy scalars and arrays -> Python, tuples -> lists, keys -> str, paths -> str."""
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_json_value(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Path):
        return str(value)
    return value


def environment() -> dict[str, Any]:
    """Who wrote a record: the command line, the machine, and the versions of the libraries that shape results."""
    import os
    import platform
    import sys

    import rasterio

    from deltacd import __version__

    torch = sys.modules.get("torch")  # only when this run used it
    return {
        "command": sys.argv,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "versions": {
            "deltacd": __version__, "gdal": rasterio.__gdal_version__, "rasterio": rasterio.__version__,
            "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
        },
    }


def dumps(record: Any, *, indent: int | None = 2) -> str:
    """``record`` as strict JSON text (see :func:`to_json_value`); other types raise TypeError."""
    return json.dumps(to_json_value(record), indent=indent, allow_nan=False, ensure_ascii=False)


def write_json(path: str | Path, record: Any) -> Path:
    """Write ``record`` to ``path`` as strict JSON (UTF-8)."""
    path = Path(path)
    path.write_text(dumps(record) + "\n", encoding="utf-8")
    return path
