"""The agency's study templates, installed with the package: ``deltacd template occitanie|fiona DIR``.

Each template is a study file (:mod:`deltacd.study.config`) whose inputs name the agency's usual
files; a copy is written into the user's folder, to be pointed at their data and run with
``deltacd run``. The files are package data (``deltacd/study/templates/*.yaml``); the copies in the
repository's ``examples/`` are the same files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from deltacd.errors import InputError, OutputError

#: Template name -> (file, what it is).
TEMPLATES = {
    "occitanie": ("occitanie_coast_2025.yaml", "land-cover changes of a Pléiades pair against OCS GE of both dates, per commune"),
    "fiona": ("fiona_guadeloupe_2022.yaml", "damage per BD TOPO building against an earlier damage study (EPSG:5490)"),
}


def template_text(name: str) -> str:
    """The text of template ``name`` (:data:`TEMPLATES`)."""
    if name not in TEMPLATES:
        raise InputError(f"template {name!r}: unknown; available: {', '.join(TEMPLATES)}")
    return resources.files("deltacd.study").joinpath("templates", TEMPLATES[name][0]).read_text(encoding="utf-8")


def write_template(name: str, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write template ``name`` into ``folder`` (made if needed); returns the study file's path.

    Raises
    ------
    InputError
        Unknown template (the available ones named).
    OutputError
        The file exists and ``overwrite`` is False, or ``folder`` is a file.
    """
    text = template_text(name)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; give a folder for the template")
    path = folder / TEMPLATES[name][0]
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; edit it, or pass --overwrite to replace it with the template")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
