"""What a study's input files hold, checked before any step runs: their fields and their value tables.

:func:`value_problems` reads only what it needs (a layer's field names and one field's values, a
small raster's codes), so a study with a misspelt field or a grade its grade table does not know
stops at once, with every such problem named, instead of after the steps before the one that
reads it (the damage step took minutes before evaluate-damage refused the reference's grades).

Checked: the name field of the zones, the id field of the buildings, the grade field of the damage
reference and each of its values against the grade table (:func:`deltacd.outputs.grades.map_grades`),
the class field of land-cover polygons and the class of each against ``landcover_classes``, the
codes of land-cover rasters (up to :data:`MAX_SCAN_PIXELS`; larger ones are checked by the compare
step as it starts), and the field of a polygon change reference or current change layer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from deltacd.errors import DeltacdError, InputError

#: Land-cover rasters up to this many pixels have their codes checked before the study runs.
MAX_SCAN_PIXELS = 64_000_000
#: Suffixes read as vector layers.
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite", ".parquet")


def is_vector(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def _fields(path: Path) -> list[str]:
    import pyogrio

    from deltacd.io.vectors import spatial_layer

    return list(pyogrio.read_info(path, layer=spatial_layer(path))["fields"])


def _values(path: Path, field: str) -> list[Any]:
    import pyogrio

    from deltacd.io.vectors import spatial_layer

    frame = pyogrio.read_dataframe(path, layer=spatial_layer(path), columns=[field], read_geometry=False)
    return frame[field].tolist()


def _given(value) -> bool:
    """False for an empty cell (None, NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _shown(values, limit: int = 8) -> str:
    values = sorted(values, key=str)
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:limit]) + more


def _field_problem(path: Path, field: str | None, key: str, field_key: str, where: str) -> DeltacdError | None:
    """None when ``field`` is a field of the layer ``path`` (or not given)."""
    if field is None:
        return None
    try:
        names = _fields(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        return InputError(f"{where}: inputs.{key}: {path}: cannot read it ({str(exc).splitlines()[0]}); "
                          "give a GeoPackage, GeoJSON or Shapefile")
    if field not in names:
        return InputError(f"{where}: inputs.{field_key}: {field!r} is not a field of {path} (fields: {', '.join(names[:15])})")
    return None


def grade_problems(path: Path, field: str, table: str, where: str) -> list[DeltacdError]:
    """The reference's grade values that ``table`` does not know, named (the accepted ones listed)."""
    from deltacd.outputs.grades import GRADE_TABLES, load_grade_table, map_grades

    if table not in GRADE_TABLES and not Path(table).is_file():
        return []  # named as a missing file by study_problems
    try:
        lookup = load_grade_table(table)
    except DeltacdError as exc:
        return [type(exc)(f"{where}: inputs.damage_grade_table: {exc}")]
    distinct = {v for v in _values(path, field) if _given(v)}
    unknown = []
    for v in distinct:
        try:
            map_grades([v], lookup, where=str(path))
        except InputError:
            unknown.append(v)
    if not unknown:
        return []
    name = table if table in GRADE_TABLES else f"in {table}"
    accepted = sorted({k for k in lookup if not k.isdigit()} or set(lookup))
    return [InputError(f"{where}: inputs.damage_reference: {path} field {field}: value(s) {_shown(unknown)} not in the grade "
                       f"table {name} (accepted: {', '.join(accepted)}, any case); set inputs.damage_grade_table "
                       "(deltacd, xbd, ems98, copernicus) or give a YAML file of value: grade")]


def _raster_codes(path: Path, ignore: set[int]) -> set[int] | None:
    """The codes of a land-cover raster (its nodata and ``ignore`` left out); None when too large to scan now."""
    import rasterio

    with rasterio.open(path) as src:
        if src.width * src.height > MAX_SCAN_PIXELS:
            return None
        found: set[int] = set()
        for _, window in src.block_windows(1):
            values = src.read(1, window=window, masked=True)
            found |= {int(v) for v in np.unique(values.compressed())}
        return found - ignore


def landcover_problems(inputs, ignore_value: int | None, where: str) -> list[DeltacdError]:
    """Land-cover maps: their class field, and classes that ``landcover_classes`` does not declare."""
    problems: list[DeltacdError] = []
    declared = inputs.landcover_classes
    for key in ("landcover_before", "landcover_after"):
        path = getattr(inputs, key)
        if path is None or not Path(path).exists():
            continue
        path = Path(path)
        if is_vector(path):
            if inputs.landcover_field is None:
                problems.append(InputError(f"{where}: inputs.{key}: {path} holds polygons: give inputs.landcover_field, "
                                           "the field of their class"))
                continue
            problem = _field_problem(path, inputs.landcover_field, key, "landcover_field", where)
            if problem is not None:
                problems.append(problem)
                continue
            if declared:
                values = {v for v in _values(path, inputs.landcover_field) if _given(v)}
                known = set(map(str, declared.values())) | {str(c) for c in declared}
                unknown = sorted({v for v in values if str(int(v) if isinstance(v, float) and v.is_integer() else v)
                                  not in known}, key=str)
                if unknown:
                    problems.append(InputError(f"{where}: inputs.{key}: classes {_shown(unknown)} of field "
                                               f"{inputs.landcover_field} are not in inputs.landcover_classes; declare them"))
        elif declared:
            try:
                codes = _raster_codes(path, set() if ignore_value is None else {ignore_value})
            except Exception as exc:  # rasterio raises several types for unreadable files
                problems.append(InputError(f"{where}: inputs.{key}: {path}: cannot read it ({str(exc).splitlines()[0]})"))
                continue
            unknown = sorted((codes or set()) - {int(c) for c in declared})
            if unknown:
                problems.append(InputError(f"{where}: inputs.{key}: codes {_shown(unknown)} of {path.name} are not in "
                                           "inputs.landcover_classes; declare them (code: name)"))
    return problems


def value_problems(config, where: str) -> list[DeltacdError]:
    """Every field and value-table problem of the study's input files (module notes); missing files are skipped
    (:func:`deltacd.study.config.study_problems` names them)."""
    i = config.inputs
    problems: list[DeltacdError] = []

    def exists(path) -> bool:
        return isinstance(path, str) and Path(path).exists()

    for key, field_key in (("zones", "zone_field"), ("buildings", "building_id_field"),
                           ("damage_reference", "damage_reference_field"), ("reference", "reference_field"),
                           ("current_change", "current_change_field")):
        path, field = getattr(i, key), getattr(i, field_key)
        if exists(path) and is_vector(path):
            problem = _field_problem(Path(path), field, key, field_key, where)
            if problem is not None:
                problems.append(problem)
            elif key == "damage_reference" and field is not None and "evaluate-damage" in config.steps:
                problems += grade_problems(Path(path), field, i.damage_grade_table, where)
    if "compare" in config.steps:
        problems += landcover_problems(i, config.steps["compare"].get("ignore_value", 255), where)
    return problems
