"""Damage grades: deltacd's four-level scale and the tables that map other studies' grades onto it.

deltacd grades a building 0 no damage, 1 minor, 2 major, 3 destroyed (the xBD joint damage scale,
Gupta et al. 2019, arXiv:1911.09296), and -1 unclassified (not enough valid pixels, or no
decision). Other studies use other scales; :data:`GRADE_TABLES` maps them:

* ``xbd``: xBD ``subtype`` strings (``no-damage`` ... ``destroyed``, ``un-classified`` -> -1) and
  the xView2 mask values 1-4.
* ``ems98``: the European Macroseismic Scale grades 1-5 (Grünthal 1998): grade 1 negligible to
  slight -> minor, 2 moderate -> minor, 3 substantial to heavy -> major, 4 very heavy -> major,
  5 destruction -> destroyed; grade 0 (no damage) -> no damage.
* ``copernicus``: Copernicus EMS grading products (``No visible damage``, ``Possibly damaged``,
  ``Damaged``, ``Destroyed``): possibly damaged -> minor, damaged -> major.
* ``deltacd``: our own codes and labels, as written in ``buildings.gpkg``.

A table may also be a YAML/JSON file mapping values to our grades (``{"faible": 1, "fort": 2}``).
Values are compared as lower-case stripped strings, so ``3``, ``"3"`` and ``3.0`` match.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import yaml

from deltacd.errors import InputError, MissingInputError

NO_DAMAGE, MINOR, MAJOR, DESTROYED, UNCLASSIFIED = 0, 1, 2, 3, -1
#: Grade -> label written in ``damage_label``.
GRADE_LABELS = {NO_DAMAGE: "no damage", MINOR: "minor", MAJOR: "major", DESTROYED: "destroyed",
                UNCLASSIFIED: "unclassified"}
#: The four grades a building can be given, in order of severity.
GRADES = (NO_DAMAGE, MINOR, MAJOR, DESTROYED)
#: Colours of the grades in maps (green, yellow, orange, red; grey unclassified).
GRADE_COLOURS = {NO_DAMAGE: "#1a9641", MINOR: "#f4e04d", MAJOR: "#fd8d3c", DESTROYED: "#d7191c", UNCLASSIFIED: "#9e9e9e"}

GRADE_TABLES: dict[str, dict[str, int]] = {
    "deltacd": {**{str(g): g for g in GRADE_LABELS}, **{label: g for g, label in GRADE_LABELS.items()}},
    "xbd": {"no-damage": NO_DAMAGE, "minor-damage": MINOR, "major-damage": MAJOR, "destroyed": DESTROYED,
            "un-classified": UNCLASSIFIED, "1": NO_DAMAGE, "2": MINOR, "3": MAJOR, "4": DESTROYED},
    "ems98": {"0": NO_DAMAGE, "1": MINOR, "2": MINOR, "3": MAJOR, "4": MAJOR, "5": DESTROYED,
              "g0": NO_DAMAGE, "g1": MINOR, "g2": MINOR, "g3": MAJOR, "g4": MAJOR, "g5": DESTROYED},
    "copernicus": {"no visible damage": NO_DAMAGE, "not affected": NO_DAMAGE, "possibly damaged": MINOR,
                   "damaged": MAJOR, "destroyed": DESTROYED, "not analysed": UNCLASSIFIED},
}


def _key(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value).strip().lower()


def load_grade_table(table: str | Path | Mapping) -> dict[str, int]:
    """A grade table by name (:data:`GRADE_TABLES`), from a YAML/JSON file, or a mapping; keys normalised."""
    if isinstance(table, Mapping):
        values = table
    elif str(table) in GRADE_TABLES:
        values = GRADE_TABLES[str(table)]
    else:
        path = Path(table)
        if not path.is_file():
            raise MissingInputError(
                f"grade table {table!r}: neither a known table ({', '.join(GRADE_TABLES)}) nor a file; check the name or path"
            )
        try:
            values = yaml.safe_load(path.read_text()) if path.suffix.lower() in (".yaml", ".yml") else json.loads(path.read_text())
        except (yaml.YAMLError, ValueError) as exc:
            raise InputError(f"{path}: not a readable grade table ({exc}); write value: grade pairs") from exc
        if not isinstance(values, Mapping):
            raise InputError(f"{path}: a grade table maps each value to a grade 0-3 or -1; got {type(values).__name__}")
    table_out = {}
    for key, grade in values.items():
        if grade not in (*GRADES, UNCLASSIFIED):
            raise InputError(f"grade table: {key!r} maps to {grade!r}; grades are 0 no damage, 1 minor, 2 major, 3 destroyed, -1 unclassified")
        table_out[_key(key)] = int(grade)
    return table_out


def map_grades(values: Iterable, table: str | Path | Mapping, *, where: str) -> np.ndarray:
    """Our grades (int8) for the values of another study's grade field.

    Raises
    ------
    InputError
        A value the table does not know, naming it, the field (``where``) and the table.
    """
    lookup = load_grade_table(table)
    out, unknown = [], set()
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(UNCLASSIFIED)
            continue
        grade = lookup.get(_key(value))
        if grade is None:
            unknown.add(str(value))
            continue
        out.append(grade)
    if unknown:
        shown = ", ".join(sorted(unknown)[:5])
        raise InputError(
            f"{where}: value(s) {shown} not in the grade table {table if isinstance(table, str) else '(given)'}; "
            f"known: {', '.join(sorted(lookup)[:12])}; pass --grade-table (xbd, ems98, copernicus, or a YAML file)"
        )
    return np.array(out, dtype=np.int8)
