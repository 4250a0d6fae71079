"""Run records as strict JSON: what every verb writes (run.json, metrics.json, ...) parses anywhere.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON; numpy scalars and paths
are not serialisable at all. :func:`to_json_value` turns a record into plain JSON values
(non-finite numbers become ``null``), and :func:`dumps` refuses anything it cannot represent.
"""

from __future__ import annotations

import hashlib
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

    from deltacd._version import __version__

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


_WHOLE_FILE = 256 * 2**20
_EDGE = 16 * 2**20


def fingerprint(path: str | Path) -> dict[str, Any]:
    """What identifies the content of a file or folder, for records that decide whether work is up to date.

    The SHA-256 of the content when the file is under 256 MiB; for larger files (scenes of
    several GB) the SHA-256 of its first and last 16 MiB with its size, which catches a
    rewritten file without reading it whole. Folders (tiles, band files) file by file; a
    Shapefile or an image with its sidecar files; a VRT with the files it lists.
    """
    path = Path(path)
    if path.is_dir():
        return {"folder": {p.name: fingerprint(p) for p in sorted(path.iterdir()) if p.is_file()}}
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if stat.st_size <= _WHOLE_FILE:
            for chunk in iter(lambda: handle.read(2**20), b""):
                digest.update(chunk)
        else:
            digest.update(handle.read(_EDGE))
            handle.seek(stat.st_size - _EDGE)
            digest.update(handle.read(_EDGE))
    out = {"size": stat.st_size, "sha256": digest.hexdigest(), "whole": stat.st_size <= _WHOLE_FILE}
    sidecars = [p for p in path.parent.glob(path.stem + ".*") if p != path and p.suffix.lower() in (".dbf", ".shx", ".prj", ".cpg", ".geom", ".rpb")]
    if sidecars:
        out["sidecars"] = {p.name: fingerprint(p) for p in sorted(sidecars)}
    if path.suffix.lower() == ".vrt":  # a VRT is a list of other files: they are its content
        out["sources"] = {str(p): fingerprint(p) for p in _vrt_sources(path)}
    return out


def _vrt_sources(path: Path) -> list[Path]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return []
    found = []
    for element in root.iter("SourceFilename"):
        source = Path(element.text or "")
        if element.get("relativeToVRT") == "1":
            source = path.parent / source
        if source.is_file() and source not in found:
            found.append(source)
    return sorted(found)


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a record's strict-JSON text: equal records, equal digests."""
    return hashlib.sha256(dumps(record, indent=None).encode()).hexdigest()
