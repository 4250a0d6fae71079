"""From/to change: which land-cover transition each change is, and where we agree with the current method.

:func:`attribute_transitions` gives every change polygon the majority class of the land-cover
map of each date inside it, and that class's share of the polygon's labelled pixels, so a change
reads "culture -> batiment, 0.42 ha". A polygon whose class is the same at both dates is a
**change within a class** (a new roof on a roof, a crop after a crop: ``change_kind`` "within
class"), told apart from the **transitions** (``change_kind`` "transition") and from the polygons
outside the land-cover maps ("unknown"); which of them count as land-cover change is
:attr:`FromToOptions.within_class` (default: only the transitions). :func:`transition_polygons`
vectorises the current method's own change map (the pixels whose class differs) into polygons
with their from/to classes, block by block, merged across blocks. :func:`agreement_table` counts, window by window, the
pixels where neither, only our map, only the current method, or both see change, per zone and per
transition (:func:`deltacd.evaluate.agreement.count_agreement`, as the compare verb counts them); the
current method is either the post-classification comparison of the two land-cover maps (a class
that differs) or its own change layer.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import shapely
from pydantic.dataclasses import dataclass as pydantic_dataclass
from rasterio.features import shapes
from rasterio.windows import Window

from deltacd.config import STRICT
from deltacd.evaluate.agreement import N_CODES, agreement_code, count_agreement
from deltacd.evaluate.reference import LabelSource
from deltacd.io.grid import Grid
from deltacd.postprocess.zonal import FeatureLabels

AGREEMENT = ("neither", "only ours", "only the current method", "both")
OUTSIDE = "(outside the zones)"
#: ``change_kind`` of a change polygon: its classes differ, are the same, or are not known (outside the maps).
TRANSITION, WITHIN, UNKNOWN = "transition", "within class", "unknown"
#: Fields of the current method's change polygons (``post_classification_changes.gpkg``).
PCC_FIELDS = ("from_class", "to_class", "transition", "area_ha", "zone")


@dataclass(frozen=True)
class Classes:
    """Land-cover classes: the codes in the maps and their names (``names[i]`` is ``codes[i]``)."""

    codes: tuple[int, ...]
    names: tuple[str, ...]

    def index(self, values: np.ndarray) -> np.ndarray:
        """Position of each value among ``codes``; -1 for a value that is not a class."""
        codes = np.asarray(self.codes)
        position = np.clip(np.searchsorted(codes, values), 0, len(codes) - 1)
        return np.where(codes[position] == values, position, -1)


@pydantic_dataclass(frozen=True, config=STRICT)
class FromToOptions:
    """Options of the study's compare step besides those of :class:`deltacd.evaluate.compare.CompareOptions`.

    Attributes
    ----------
    within_class
        What a change polygon whose majority class is the same at both dates counts as (a change
        within a class: a new roof on a roof, a crop after a crop). ``"apart"`` (default): shown
        and counted apart from the transitions, not as land-cover change; ``"change"``: counted as
        land-cover change with the transitions; or a list of class names whose changes within the
        class count as change (the others apart), e.g. ``[bati]``.
    """

    within_class: Literal["apart", "change"] | list[str] = "apart"

    def counted(self, kind: np.ndarray, from_class: np.ndarray) -> np.ndarray:
        """Which polygons (their ``change_kind`` and ``from_class``) count as land-cover change."""
        kind, from_class = np.asarray(kind), np.asarray(from_class)
        if self.within_class == "change":
            within = np.ones(len(kind), dtype=bool)
        elif self.within_class == "apart":
            within = np.zeros(len(kind), dtype=bool)
        else:
            within = np.isin(from_class, list(self.within_class))
        return (kind == TRANSITION) | ((kind == WITHIN) & within)

    def check(self, classes: Classes, where: str) -> None:
        """Refuse class names (in ``within_class``) that are not classes of the maps."""
        if isinstance(self.within_class, list):
            unknown = sorted(set(self.within_class) - set(classes.names))
            if unknown:
                from deltacd.errors import InputError

                raise InputError(f"{where}: within_class: {', '.join(unknown)} not among the classes "
                                 f"({', '.join(classes.names)}); give class names, apart or change")


def _strips(grid: Grid, rows: int):
    for top in range(0, grid.height, rows):
        yield Window(0, top, grid.width, min(rows, grid.height - top))


def zone_names(zones: gpd.GeoDataFrame | None, zone_field: str | None) -> list[str]:
    """Zone names by label: 0 is outside every zone, ``i + 1`` is row ``i``."""
    return [OUTSIDE] + ([] if zones is None else [str(v) for v in zones[zone_field]])


def attribute_transitions(changes: gpd.GeoDataFrame, grid: Grid, before: LabelSource, after: LabelSource, classes: Classes,
                          *, zones: gpd.GeoDataFrame | None = None, zone_field: str | None = None,
                          options: FromToOptions | None = None, rows: int = 1024) -> gpd.GeoDataFrame:
    """``changes`` with ``from_class``, ``from_share``, ``to_class``, ``to_share``, ``transition``, ``change_kind``
    (:data:`TRANSITION`, :data:`WITHIN` or :data:`UNKNOWN`), ``counts_as_change`` (``options``), ``area_ha`` and ``zone``."""
    n, k = len(changes), len(classes.codes)
    counts = np.zeros((2, n + 1, k), dtype=np.int64)
    labels = FeatureLabels(changes.geometry)
    for window in _strips(grid, rows):
        label = labels.read(grid, window)
        inside = label > 0
        if not inside.any():
            continue
        for date, source in enumerate((before, after)):
            values, valid = source.read(window)
            index = classes.index(values.astype(np.int64))
            ok = inside & valid & (index >= 0)
            np.add.at(counts[date], (label[ok], index[ok]), 1)
    out = changes.copy()
    names = np.array(classes.names, dtype=object)
    for date, prefix in enumerate(("from", "to")):
        per = counts[date][1:]
        total = per.sum(axis=1)
        best = per.argmax(axis=1)
        out[f"{prefix}_class"] = np.where(total > 0, names[best], "unknown")
        out[f"{prefix}_share"] = np.round(np.where(total > 0, per[np.arange(n), best] / np.maximum(total, 1), np.nan), 3)
    out["transition"] = out["from_class"] + " -> " + out["to_class"]
    unknown = (out["from_class"] == "unknown") | (out["to_class"] == "unknown")
    out["change_kind"] = np.where(unknown, UNKNOWN, np.where(out["from_class"] == out["to_class"], WITHIN, TRANSITION))
    out["counts_as_change"] = (options or FromToOptions()).counted(out["change_kind"].to_numpy(), out["from_class"].to_numpy())
    area = out["area_m2"] if "area_m2" in out.columns else out.geometry.area * (grid.res_m / grid.res[0]) ** 2
    out["area_ha"] = np.round(np.asarray(area, dtype=float) / 1e4, 6)
    out["zone"] = assign_zones(out, zones, zone_field)
    return out


def assign_zones(frame: gpd.GeoDataFrame, zones: gpd.GeoDataFrame | None, zone_field: str | None) -> list[str]:
    """The zone each feature's representative point lies in (:data:`OUTSIDE` when none)."""
    if zones is None or frame.empty:
        return [OUTSIDE] * len(frame)
    points = gpd.GeoDataFrame(geometry=frame.geometry.representative_point(), crs=frame.crs)
    joined = gpd.sjoin(points, zones.to_crs(frame.crs), how="left", predicate="within")
    joined = joined[~joined.index.duplicated()]
    return [OUTSIDE if v is None or v != v else str(v) for v in joined[zone_field].reindex(frame.index)]


def write_transitions(path: Path, attributed: gpd.GeoDataFrame) -> list[dict]:
    """Areas (ha) and counts of our change polygons per zone and from/to pair, in CSV: the pairs that count as
    change first (``counts_as_change``), then the changes within a class and those outside the maps, largest first."""
    rows = []
    groups = attributed.groupby(["zone", "from_class", "to_class", "change_kind", "counts_as_change"], sort=False)["area_ha"]
    for (zone, source, target, kind, counted), areas in groups:
        rows.append({"zone": zone, "from_class": source, "to_class": target, "transition": f"{source} -> {target}",
                     "change_kind": kind, "counts_as_change": bool(counted), "polygons": int(areas.size),
                     "area_ha": round(float(areas.sum()), 4)})
    for key in dict.fromkeys((r["from_class"], r["to_class"], r["change_kind"], r["counts_as_change"]) for r in list(rows)):
        part = [r for r in rows if (r["from_class"], r["to_class"], r["change_kind"], r["counts_as_change"]) == key]
        rows.append({**part[0], "zone": "all", "polygons": sum(r["polygons"] for r in part),
                     "area_ha": round(sum(r["area_ha"] for r in part), 4)})
    rows.sort(key=lambda r: (r["zone"] != "all", r["zone"], not r["counts_as_change"], r["change_kind"] == UNKNOWN, -r["area_ha"]))
    _write_csv(path, rows, ["zone", "from_class", "to_class", "transition", "change_kind", "counts_as_change", "polygons",
                            "area_ha"])
    return rows


def change_kinds(attributed: gpd.GeoDataFrame) -> dict[str, Any]:
    """Polygons and hectares of our changes by kind, and those that count as land-cover change (for the summary)."""
    out: dict[str, Any] = {}
    for kind in (TRANSITION, WITHIN, UNKNOWN):
        part = attributed[attributed["change_kind"] == kind]
        out[kind] = {"polygons": len(part), "area_ha": round(float(part["area_ha"].sum()), 4)}
    counted = attributed[attributed["counts_as_change"]]
    out["counted_as_change"] = {"polygons": len(counted), "area_ha": round(float(counted["area_ha"].sum()), 4)}
    out["all"] = {"polygons": len(attributed), "area_ha": round(float(attributed["area_ha"].sum()), 4)}
    return out


def _blocks(grid: Grid, size: int):
    for top in range(0, grid.height, size):
        for left in range(0, grid.width, size):
            yield Window(left, top, min(size, grid.width - left), min(size, grid.height - top))


def transition_polygons(grid: Grid, before: LabelSource, after: LabelSource, classes: Classes, *,
                        zones: gpd.GeoDataFrame | None = None, zone_field: str | None = None, min_area_m2: float = 0.0,
                        block_size: int = 2048) -> gpd.GeoDataFrame:
    """The current method's change map as polygons: 4-connected pixels of one (class before, class after) pair
    whose classes differ, with ``from_class``, ``to_class``, ``transition``, ``area_ha`` and ``zone``.

    Vectorised block by block; a piece that touches an inner block edge is merged with the pieces of the
    same pair across it (a shared edge, not a corner), so the polygons do not depend on ``block_size``.
    Polygons under ``min_area_m2`` are left out.
    """
    k = len(classes.codes)
    pieces: list[str] = []
    codes: list[int] = []
    open_piece: list[bool] = []
    eps = 1e-6 * min(grid.res)
    for window in _blocks(grid, block_size):
        b, vb = before.read(window)
        a, va = after.read(window)
        ib, ia = classes.index(b.astype(np.int64)), classes.index(a.astype(np.int64))
        changed = vb & va & (ib >= 0) & (ia >= 0) & (ib != ia)
        if not changed.any():
            continue
        code = np.where(changed, ib * k + ia + 1, 0).astype(np.int32)
        left, bottom, right, top = grid.window_bounds(window)
        inner = (window.col_off > 0, window.row_off > 0, window.col_off + window.width < grid.width,
                 window.row_off + window.height < grid.height)  # left, top, right, bottom edges inside the grid
        for geom, value in shapes(code, mask=changed, connectivity=4, transform=grid.window_transform(window)):
            xs = [x for ring in geom["coordinates"][:1] for x, _ in ring]
            ys = [y for ring in geom["coordinates"][:1] for _, y in ring]
            touches = ((inner[0] and min(xs) <= left + eps) or (inner[2] and max(xs) >= right - eps)
                       or (inner[1] and max(ys) >= top - eps) or (inner[3] and min(ys) <= bottom + eps))
            pieces.append(json.dumps(geom))
            codes.append(int(value))
            open_piece.append(touches)
    geoms = shapely.from_geojson(np.asarray(pieces, dtype=object)) if pieces else np.zeros(0, dtype=object)
    codes_arr, open_arr = np.asarray(codes, dtype=np.int64), np.asarray(open_piece, dtype=bool)
    out_geoms, out_codes = list(geoms[~open_arr]), list(codes_arr[~open_arr])
    for value in np.unique(codes_arr[open_arr]):
        merged = shapely.get_parts(shapely.union_all(geoms[open_arr & (codes_arr == value)]))
        out_geoms += list(merged)
        out_codes += [int(value)] * len(merged)
    names = np.array(classes.names, dtype=object)
    index = np.asarray(out_codes, dtype=np.int64) - 1
    frame = gpd.GeoDataFrame({"from_class": names[index // k] if len(index) else [],
                              "to_class": names[index % k] if len(index) else []},
                             geometry=out_geoms, crs=grid.crs)
    frame["transition"] = frame["from_class"] + " -> " + frame["to_class"]
    metres = grid.res_m / grid.res[0]  # metres per CRS unit
    frame["area_ha"] = np.round(frame.geometry.area.to_numpy() * metres**2 / 1e4, 6)
    frame = frame[frame["area_ha"] * 1e4 >= min_area_m2] if min_area_m2 > 0 else frame
    frame = frame.sort_values("area_ha", ascending=False, ignore_index=True)
    frame["zone"] = assign_zones(frame, zones, zone_field)
    frame.index.name = "change_id"
    return gpd.GeoDataFrame(frame[[*PCC_FIELDS, "geometry"]], geometry="geometry", crs=grid.crs)


def agreement_table(grid: Grid, ours: LabelSource | None, theirs: LabelSource | None, before: LabelSource | None,
                    after: LabelSource | None, classes: Classes | None, zones: gpd.GeoDataFrame | None, *,
                    rows: int = 1024) -> np.ndarray:
    """Pixel counts ``[zones + 1, from, to, 4]``: agreement (:data:`AGREEMENT`) per zone and transition.

    ``theirs`` None: the current method is the comparison of ``before`` and ``after`` (a pixel
    whose class differs). Without land-cover maps there is a single transition; without ``ours``
    (a study without a detect step) every pixel counts as "not ours", which leaves the
    land-cover maps' own from/to matrix.
    """
    k = len(classes.codes) if classes is not None else 1
    z = 1 + (0 if zones is None else len(zones))
    counts = np.zeros((z, k, k, N_CODES), dtype=np.int64)
    zone_labels = FeatureLabels(zones.geometry) if zones is not None else None
    for window in _strips(grid, rows):
        if ours is not None:
            mine, ok = ours.read(window)
            mine = mine > 0
        else:
            shape = (int(window.height), int(window.width))
            mine, ok = np.zeros(shape, dtype=bool), np.ones(shape, dtype=bool)
        if classes is not None:
            b, vb = before.read(window)
            a, va = after.read(window)
            ib, ia = classes.index(b.astype(np.int64)), classes.index(a.astype(np.int64))
            ok = ok & vb & va & (ib >= 0) & (ia >= 0)
        else:
            ib = ia = np.zeros(mine.shape, dtype=np.int64)
        if theirs is not None:
            other, vo = theirs.read(window)
            other, ok = other > 0, ok & vo
        else:
            other = ib != ia
        zone = zone_labels.read(grid, window) if zone_labels is not None else None
        code = agreement_code(mine, other)
        counts += count_agreement(code, ok, before=ib, after=ia, n_classes=k, zone=zone, n_zones=z)
    return counts


def write_agreement(folder: Path, counts: np.ndarray, pixel_ha: float, zones: list[str], classes: Classes | None) -> dict:
    """``agreement_by_zone.csv`` (and ``agreement_by_transition.csv`` with land-cover maps); returns the totals."""
    fields = ["neither_ha", "only_ours_ha", "only_current_ha", "both_ha", "ours_ha", "current_ha", "agreement_of_changes"]

    def row(c: np.ndarray) -> dict:
        ha = c * pixel_ha
        changed = c[1] + c[2] + c[3]
        return {"neither_ha": round(ha[0], 4), "only_ours_ha": round(ha[1], 4), "only_current_ha": round(ha[2], 4),
                "both_ha": round(ha[3], 4), "ours_ha": round(ha[1] + ha[3], 4), "current_ha": round(ha[2] + ha[3], 4),
                "agreement_of_changes": round(c[3] / changed, 4) if changed else None}

    by_zone = [{"zone": "all", **row(counts.sum(axis=(0, 1, 2)))}]
    by_zone += [{"zone": name, **row(counts[i].sum(axis=(0, 1)))} for i, name in enumerate(zones) if counts[i].sum()]
    _write_csv(folder / "agreement_by_zone.csv", by_zone, ["zone", *fields])
    if classes is not None:
        per = counts.sum(axis=0)
        by_transition = [{"from_class": classes.names[i], "to_class": classes.names[j], **row(per[i, j])}
                         for i in range(len(classes.codes)) for j in range(len(classes.codes)) if per[i, j].sum()]
        by_transition.sort(key=lambda r: -(r["ours_ha"] + r["current_ha"]))
        _write_csv(folder / "agreement_by_transition.csv", by_transition, ["from_class", "to_class", *fields])
    return by_zone[0]


def write_landcover_transitions(path: Path, counts: np.ndarray, pixel_ha: float, zones: list[str], classes: Classes) -> list[dict]:
    """The land-cover maps' own from/to areas (ha) per zone, every pair of classes (unchanged ones too), in CSV."""
    per_zone = counts.sum(axis=3)
    rows = []
    for z, name in [(None, "all"), *enumerate(zones)]:
        matrix = per_zone.sum(axis=0) if z is None else per_zone[z]
        for i, source in enumerate(classes.names):
            for j, target in enumerate(classes.names):
                if matrix[i, j]:
                    rows.append({"zone": name, "from_class": source, "to_class": target, "transition": f"{source} -> {target}",
                                 "changed": source != target, "area_ha": round(float(matrix[i, j] * pixel_ha), 4)})
    rows.sort(key=lambda r: (r["zone"] != "all", r["zone"], not r["changed"], -r["area_ha"]))
    _write_csv(path, rows, ["zone", "from_class", "to_class", "transition", "changed", "area_ha"])
    return rows


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
