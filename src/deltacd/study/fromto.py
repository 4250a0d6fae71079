"""From/to change: which land-cover transition each change is, and where we agree with the current method.

:func:`attribute_transitions` gives every change polygon the majority class of the land-cover
map of each date inside it, and that class's share of the polygon's labelled pixels, so a change
reads "culture -> batiment, 0.42 ha". :func:`agreement_table` counts, window by window, the
pixels where neither, only our map, only the current method, or both see change, per zone and per
transition (:func:`deltacd.evaluate.agreement.count_agreement`, as the compare verb counts them); the
current method is either the post-classification comparison of the two land-cover maps (a class
that differs) or its own change layer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
from rasterio.windows import Window

from deltacd.evaluate.agreement import N_CODES, agreement_code, count_agreement
from deltacd.evaluate.reference import LabelSource
from deltacd.io.grid import Grid
from deltacd.postprocess.zonal import FeatureLabels

AGREEMENT = ("neither", "only ours", "only the current method", "both")
OUTSIDE = "(outside the zones)"


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


def _strips(grid: Grid, rows: int):
    for top in range(0, grid.height, rows):
        yield Window(0, top, grid.width, min(rows, grid.height - top))


def zone_names(zones: gpd.GeoDataFrame | None, zone_field: str | None) -> list[str]:
    """Zone names by label: 0 is outside every zone, ``i + 1`` is row ``i``."""
    return [OUTSIDE] + ([] if zones is None else [str(v) for v in zones[zone_field]])


def attribute_transitions(changes: gpd.GeoDataFrame, grid: Grid, before: LabelSource, after: LabelSource, classes: Classes,
                          *, zones: gpd.GeoDataFrame | None = None, zone_field: str | None = None, rows: int = 1024) -> gpd.GeoDataFrame:
    """``changes`` with ``from_class``, ``from_share``, ``to_class``, ``to_share``, ``transition``, ``area_ha`` and ``zone``."""
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
    area = out["area_m2"] if "area_m2" in out.columns else out.geometry.area * (grid.res_m / grid.res[0]) ** 2
    out["area_ha"] = np.round(np.asarray(area, dtype=float) / 1e4, 4)
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
    """Areas (ha) and counts of our change polygons per zone and transition, largest first, in CSV."""
    rows = []
    groups = attributed.groupby(["zone", "from_class", "to_class"], sort=False)["area_ha"]
    for (zone, source, target), areas in groups:
        rows.append({"zone": zone, "from_class": source, "to_class": target, "transition": f"{source} -> {target}",
                     "polygons": int(areas.size), "area_ha": round(float(areas.sum()), 4)})
    for source, target in {(r["from_class"], r["to_class"]) for r in rows}:
        part = [r for r in rows if (r["from_class"], r["to_class"]) == (source, target)]
        rows.append({"zone": "all", "from_class": source, "to_class": target, "transition": f"{source} -> {target}",
                     "polygons": sum(r["polygons"] for r in part), "area_ha": round(sum(r["area_ha"] for r in part), 4)})
    rows.sort(key=lambda r: (r["zone"] != "all", r["zone"], -r["area_ha"]))
    _write_csv(path, rows, ["zone", "from_class", "to_class", "transition", "polygons", "area_ha"])
    return rows


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
