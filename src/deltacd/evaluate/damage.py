"""Our building grades against a reference damage study: a join, a confusion matrix of grades, agreement maps.

The two layers are joined by id when both id fields are given, otherwise by best overlap: each
reference building is matched to the building of ours with the largest intersection over union,
one to one (greedy, largest IoU first), when that IoU reaches ``min_iou`` (default 0.25: a
footprint shifted by a metre or two still matches its twin). Matched buildings with a grade on
both sides give the 4 x 4 confusion matrix of grades; per-grade precision / recall / F1,
damaged-vs-undamaged F1 (damaged = minor or worse), Cohen's kappa with quadratic weights
(Cohen 1968, doi:10.1037/h0026256: an error of two grades costs four times an error of one),
each with a 95 % block-bootstrap interval (blocks of ``block_m`` metres of the reference
buildings' centroids, resampled with replacement, :func:`deltacd.metrics.block_bootstrap_ci_from_blocks`).
Counts and footprint areas per grade are given side by side, with the buildings found in one
layer only. With the xView2 pixel targets of the reference (``reference_masks``), the xView2
score of our ``damage.tif`` is computed too (:mod:`deltacd.datasets.xview2`).

Agreement per building: 0 same grade, 1 ours more severe, 2 ours less severe, 3 only in ours,
4 only in the reference, 5 unclassified on either side; as a GeoPackage layer, a COG (on the
grid of our ``damage.tif`` when it is beside the buildings layer) and a PNG. Every building of
the layer carries its ids, so it joins back to its sources (BD TOPO, the earlier study):
``building_id`` (ours: the damage run's ``building_id``, i.e. the footprints' id field when one
was given; empty for a building only in the reference) and ``reference_id`` (the reference's id
field, else its ``building_id`` field, else its row number; empty for a building only in ours).
With ``zones`` each building also gets its zone (the one holding its representative point) and
``per_zone.csv`` counts the buildings per zone and grade on both sides.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.qgis import categorized_qml, paletted_qml, write_styles
from deltacd.io.records import environment, write_json
from deltacd.io.vectors import clean_polygons, read_vector, write_layer
from deltacd.io.writers import RasterWriter
from deltacd.metrics import block_bootstrap_ci_from_blocks, metric_from_counts
from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS, GRADES, UNCLASSIFIED, map_grades
from deltacd.outputs.layout import DamageOutputs
from deltacd.postprocess.zonal import FeatureLabels
from deltacd.report.figures import DAMAGE_AGREEMENT, DAMAGE_AGREEMENT_COLOURS

AGREEMENT = DAMAGE_AGREEMENT
AGREEMENT_COLOURS = DAMAGE_AGREEMENT_COLOURS
AGREEMENT_NODATA = 255


@dataclass(frozen=True)
class DamageEvaluation:
    """Where the outputs are, and the scores (the content of damage_metrics.json)."""

    out_dir: Path
    metrics: dict[str, Any]


def _read(path: Path, field: str, table, *, what: str, layer: str | None = None) -> gpd.GeoDataFrame:
    frame = read_vector(path, what=what) if layer is None else gpd.read_file(path, layer=layer)
    if field not in frame.columns:
        raise InputError(f"{path}: no grade field {field!r} in the {what} (fields: {', '.join(map(str, frame.columns[:12]))}); "
                         "give the field that holds the grade (--reference-field)")
    frame, _ = clean_polygons(frame, path, what=what)
    return frame.reset_index(drop=True).assign(_grade=map_grades(frame[field], table, where=f"{path} field {field}"))


def _ours_layer(ours: Path) -> tuple[Path, Path | None]:
    """Our buildings layer and the ``damage.tif`` beside it (None when absent); ``ours``: a damage run or its layer."""
    run = DamageOutputs(ours if ours.is_dir() else ours.parent)
    raster = run.damage if run.damage.is_file() else None
    return (run.buildings if ours.is_dir() else ours), raster


def match_buildings(ours: gpd.GeoDataFrame, reference: gpd.GeoDataFrame, *, min_iou: float,
                    ours_id: str | None = None, reference_id: str | None = None) -> np.ndarray:
    """For each reference building, the row of its match in ``ours`` (-1 when none): by id, or by best overlap."""
    match = np.full(len(reference), -1, dtype=np.int64)
    if ours_id is not None and reference_id is not None:
        lookup = {str(v): i for i, v in enumerate(ours[ours_id])}
        for j, value in enumerate(reference[reference_id]):
            match[j] = lookup.get(str(value), -1)
        return match
    left, right = shapely.STRtree(ours.geometry.values).query(reference.geometry.values, predicate="intersects")
    if len(left) == 0:
        return match
    a, b = reference.geometry.values[left], ours.geometry.values[right]
    inter = shapely.area(shapely.intersection(a, b))
    iou = inter / np.maximum(shapely.area(a) + shapely.area(b) - inter, 1e-12)
    used = np.zeros(len(ours), dtype=bool)
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < min_iou:
            break
        j, i = int(left[k]), int(right[k])
        if match[j] < 0 and not used[i]:
            match[j], used[i] = i, True
    return match


def _weighted_kappa(counts: np.ndarray) -> np.ndarray:
    """Cohen's kappa with quadratic weights of ``[..., K, K]`` counts."""
    c = np.asarray(counts, dtype=np.float64)
    k = c.shape[-1]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = (i - j) ** 2 / (k - 1) ** 2
    n = c.sum(axis=(-2, -1))
    expected = c.sum(axis=-1)[..., :, None] * c.sum(axis=-2)[..., None, :] / np.maximum(n, 1)[..., None, None]
    observed_w = (w * c).sum(axis=(-2, -1))
    expected_w = (w * expected).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected_w > 0, 1 - observed_w / expected_w, np.nan)


def _damaged_f1(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts)
    binary = np.stack([np.stack([c[..., :1, :1].sum(axis=(-2, -1)), c[..., :1, 1:].sum(axis=(-2, -1))], -1),
                       np.stack([c[..., 1:, :1].sum(axis=(-2, -1)), c[..., 1:, 1:].sum(axis=(-2, -1))], -1)], -2)
    return metric_from_counts(binary, "f1", positive_class=1)


def evaluate_damage(
    ours: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    *,
    reference_field: str,
    grade_table: str | Path = "deltacd",
    ours_field: str = "damage_grade",
    ours_id_field: str | None = None,
    reference_id_field: str | None = None,
    min_iou: float = 0.25,
    reference_masks: tuple[str | Path, str | Path] | None = None,
    block_m: float = 250.0,
    n_boot: int = 1000,
    seed: int = 0,
    resolution: float = 0.5,
    zones: str | Path | None = None,
    zone_field: str | None = None,
    overwrite: bool = False,
) -> DamageEvaluation:
    """Score our buildings (a damage output folder or its ``buildings.gpkg``) against ``reference`` (module notes).

    Parameters
    ----------
    reference_field, grade_table
        The reference's grade field and how its values map to ours (:mod:`deltacd.damage.grades`).
    ours_field
        Our grade field (``damage_grade``, deltacd's codes).
    ours_id_field, reference_id_field
        Join by these ids (both given) instead of by overlap.
    reference_masks
        ``(localisation, damage)`` rasters of the reference in xView2 convention, for the xView2 score.
    resolution
        Pixel size of the agreement raster when our ``damage.tif`` is not beside our buildings.
    zones, zone_field
        Polygons (communes ...) and their name field: each building gets its zone, ``per_zone.csv``
        counts per zone too.

    Writes ``damage_metrics.json``, ``confusion.csv``, ``per_grade.csv``, ``per_zone.csv``,
    ``agreement.gpkg`` (ids, grades and agreement per building), ``agreement.tif``,
    ``agreement.png`` and ``confusion.png`` into ``out_dir``.
    """
    ours_path, ours_raster = _ours_layer(Path(ours))
    if zones is not None and zone_field is None:
        raise InputError(f"{zones}: zones need zone_field, the field that names each zone")
    inputs = input_paths(ours, reference, *(reference_masks or ()), zones)
    check_output(out_dir, overwrite=overwrite, inputs=inputs)
    if not 0 < min_iou <= 1:
        raise InputError(f"min_iou: {min_iou}; give an intersection-over-union in (0, 1], e.g. 0.25")
    mine = _read(ours_path, ours_field, "deltacd", what="buildings (ours)", layer=DamageOutputs.layer if ours_path.suffix == ".gpkg" else None)
    theirs = _read(Path(reference), reference_field, grade_table, what="reference buildings").to_crs(mine.crs)
    for frame, field_name, path in ((mine, ours_id_field, ours_path), (theirs, reference_id_field, reference)):
        if field_name is not None and field_name not in frame.columns:
            raise InputError(f"{path}: no id field {field_name!r}; check --id-field / --reference-id-field")
    if not shapely.box(*mine.total_bounds).intersects(shapely.box(*theirs.total_bounds)):
        raise InputError(f"{reference}: the reference buildings do not overlap ours ({ours_path}); give a study of the same area")
    match = match_buildings(mine, theirs, min_iou=min_iou, ours_id=ours_id_field, reference_id=reference_id_field)
    ref_grade = theirs["_grade"].to_numpy()
    our_grade = np.where(match >= 0, mine["_grade"].to_numpy()[np.maximum(match, 0)], UNCLASSIFIED)
    both = (match >= 0) & (ref_grade >= 0) & (our_grade >= 0)
    k = len(GRADES)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (ref_grade[both], our_grade[both]), 1)

    # block bootstrap over the reference buildings' centroids
    centroids = theirs.geometry.centroid
    units = _metres_per_unit(theirs.crs)
    cells = np.stack([np.floor(centroids.x.to_numpy() * units / block_m), np.floor(centroids.y.to_numpy() * units / block_m)], 1)
    _, block = np.unique(cells[both], axis=0, return_inverse=True)
    blocks = np.zeros((int(block.max()) + 1 if both.any() else 0, k, k), dtype=np.int64)
    if both.any():
        np.add.at(blocks, (block.ravel(), ref_grade[both], our_grade[both]), 1)

    def interval(metric, **kw) -> dict[str, Any]:
        estimate = metric_from_counts(counts, metric, **kw) if isinstance(metric, str) else metric(counts)
        out = {"value": None if np.isnan(estimate) else float(estimate)}
        if len(blocks) >= 2:
            ci = block_bootstrap_ci_from_blocks(blocks, n_boot=n_boot, seed=seed, metric=metric, **kw)
            out |= {"ci_low": ci.low, "ci_high": ci.high}
        return out

    per_grade = {}
    for g in GRADES:
        per_grade[GRADE_LABELS[g]] = {m: interval(m, positive_class=g) for m in ("precision", "recall", "f1")}
        per_grade[GRADE_LABELS[g]] |= {
            "reference_buildings": int((ref_grade == g).sum()), "our_buildings": int((mine["_grade"] == g).sum()),
            "reference_area_m2": round(float(theirs.geometry.area[ref_grade == g].sum() * units**2), 1),
            "our_area_m2": round(float(mine.geometry.area[mine["_grade"].to_numpy() == g].sum() * units**2), 1),
        }
    matched_ours = np.zeros(len(mine), dtype=bool)
    matched_ours[match[match >= 0]] = True
    metrics: dict[str, Any] = {
        "format": "deltacd-damage-evaluation/1", **environment(),
        "ours": str(ours_path), "reference": str(reference), "reference_field": reference_field,
        "grade_table": str(grade_table), "join": "id" if ours_id_field and reference_id_field else f"best overlap, IoU >= {min_iou}",
        "buildings": {"ours": len(mine), "reference": len(theirs), "matched": int((match >= 0).sum()),
                      "graded_on_both": int(both.sum()), "only_ours": int((~matched_ours).sum()),
                      "only_reference": int((match < 0).sum())},
        "confusion": {"rows": "reference", "columns": "ours", "grades": [GRADE_LABELS[g] for g in GRADES],
                      "counts": counts.tolist()},
        "accuracy": interval("accuracy"),
        "damaged_f1": interval(_damaged_f1),
        "weighted_kappa": interval(_weighted_kappa),
        "macro_f1": interval("macro_f1"),
        "per_grade": per_grade,
        "bootstrap": {"block_m": block_m, "blocks": int(len(blocks)), "n_boot": n_boot, "seed": seed},
    }
    agreement = _agreement(match, ref_grade, our_grade, len(mine))
    our_ids, their_ids = _ids(mine, ours_id_field), _ids(theirs, reference_id_field)
    only_ours = np.flatnonzero(~matched_ours)
    reference_grades = np.concatenate([ref_grade, np.full(len(only_ours), UNCLASSIFIED)]).astype(int)
    our_grades = np.concatenate([our_grade, mine["_grade"].to_numpy()[only_ours]]).astype(int)
    layer = gpd.GeoDataFrame(
        {"building_id": [our_ids[m] if m >= 0 else None for m in match] + [our_ids[m] for m in only_ours],
         "reference_id": list(their_ids) + [None] * len(only_ours),
         "source": ["reference"] * len(theirs) + ["ours"] * len(only_ours),
         "in_ours": np.concatenate([match >= 0, np.ones(len(only_ours), dtype=bool)]),
         "reference_grade": reference_grades, "reference_label": [GRADE_LABELS[int(g)] for g in reference_grades],
         "our_grade": our_grades, "our_label": [GRADE_LABELS[int(g)] for g in our_grades],
         "agreement": agreement, "agreement_label": [AGREEMENT[a] for a in agreement]},
        geometry=list(theirs.geometry.values) + list(mine.geometry.values[only_ours]), crs=mine.crs)
    if zones is not None:
        layer["zone"] = _zones_of(layer, read_vector(zones, what="zones"), zone_field, zones)
    with staged_output(out_dir, overwrite=overwrite, kind="evaluate-damage", inputs=inputs) as staging:
        grid = _grid_of(ours_raster) if ours_raster is not None else Grid.from_bounds(mine.crs, tuple(layer.total_bounds), resolution / units)
        if reference_masks is not None and ours_raster is not None:
            metrics["xview2"] = _xview2(ours_raster, reference_masks, grid)
        write_layer(layer, staging / "agreement.gpkg", "agreement")
        _write_agreement_raster(staging / "agreement.tif", grid, layer)
        classes = {k: (label, AGREEMENT_COLOURS[k]) for k, label in AGREEMENT.items()}
        write_styles(staging, {"agreement.tif": lambda _: paletted_qml({**classes, 255: ("no building", "#000000")}, transparent=(255,))},
                     {("agreement.gpkg", "agreement"): categorized_qml("agreement", classes)})
        _write_tables(staging, counts, per_grade)
        _write_per_zone(staging / "per_zone.csv", layer)
        _figures(staging, counts, layer, metrics)
        write_json(staging / "damage_metrics.json", metrics)
    return DamageEvaluation(Path(out_dir), metrics)


def _ids(frame: gpd.GeoDataFrame, field: str | None) -> list[str]:
    """Each building's id, as text: ``field``, else the ``building_id`` field, else its row number (from 1)."""
    name = field if field is not None else ("building_id" if "building_id" in frame.columns else None)
    if name is None:
        return [str(i + 1) for i in range(len(frame))]
    return [None if _empty(v) else str(v) for v in frame[name]]


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _zones_of(layer: gpd.GeoDataFrame, zones: gpd.GeoDataFrame, field: str, path) -> list[str]:
    """The zone holding each building's representative point ("(outside the zones)" for none)."""
    if field not in zones.columns:
        raise InputError(f"{path}: no field {field!r} (fields: {', '.join(map(str, zones.columns[:12]))}); check zone_field")
    points = gpd.GeoDataFrame(geometry=layer.geometry.representative_point(), crs=layer.crs)
    joined = gpd.sjoin(points, zones[[field, "geometry"]].to_crs(layer.crs), how="left", predicate="within")
    joined = joined[~joined.index.duplicated()][field].reindex(layer.index)
    return ["(outside the zones)" if _empty(v) else str(v) for v in joined]


def _write_per_zone(path: Path, layer: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """Buildings per zone and grade: in the reference, in ours, and graded the same; returns the rows."""
    zones = ["all"] + (sorted(set(layer["zone"])) if "zone" in layer.columns else [])
    in_reference = (layer["source"] == "reference").to_numpy()
    in_ours = layer["in_ours"].to_numpy()
    rows = []
    for zone in zones:
        inside = np.ones(len(layer), dtype=bool) if zone == "all" else (layer["zone"] == zone).to_numpy()
        for g in (*GRADES, UNCLASSIFIED):
            ref = inside & in_reference & (layer["reference_grade"].to_numpy() == g)
            rows.append({"zone": zone, "grade": GRADE_LABELS[g], "reference_buildings": int(ref.sum()),
                         "our_buildings": int((inside & in_ours & (layer["our_grade"].to_numpy() == g)).sum()),
                         "same_grade": int((ref & (layer["agreement"].to_numpy() == 0)).sum())})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _metres_per_unit(crs) -> float:
    return float(crs.axis_info[0].unit_conversion_factor) if crs.is_projected else 111_320.0


def _agreement(match: np.ndarray, ref_grade: np.ndarray, our_grade: np.ndarray, n_ours: int) -> np.ndarray:
    codes = np.where(match < 0, 4, np.where((ref_grade < 0) | (our_grade < 0), 5,
                                            np.where(our_grade == ref_grade, 0, np.where(our_grade > ref_grade, 1, 2))))
    matched = np.zeros(n_ours, dtype=bool)
    matched[match[match >= 0]] = True
    return np.concatenate([codes, np.full(int((~matched).sum()), 3)]).astype(int)


def _grid_of(path: Path) -> Grid:
    with rasterio.open(path) as src:
        return Grid.of(src)


def _write_agreement_raster(path: Path, grid: Grid, layer: gpd.GeoDataFrame, rows: int = 1024) -> None:
    labels = FeatureLabels(layer.geometry)
    values = np.concatenate([[AGREEMENT_NODATA], layer["agreement"].to_numpy()]).astype(np.uint8)
    description = "; ".join(f"{k} {v}" for k, v in AGREEMENT.items()) + f"; {AGREEMENT_NODATA} no building"
    with RasterWriter(path, grid, dtype="uint8", nodata=AGREEMENT_NODATA, overview_resampling="nearest",
                      description=description) as raster:
        for top in range(0, grid.height, rows):
            window = Window(0, top, grid.width, min(rows, grid.height - top))
            raster.write(window, values[labels.read(grid, window)])
        raster.finish()


def _xview2(ours_raster: Path, masks: tuple[str | Path, str | Path], grid: Grid, rows: int = 1024) -> dict[str, Any]:
    """xView2 score of our damage.tif against the reference localisation and damage masks (read on our grid)."""
    from deltacd.datasets.xview2 import XView2Accumulator, tile_counts

    localisation, cm = np.zeros(3, dtype=np.int64), np.zeros((5, 5), dtype=np.int64)
    with rasterio.open(ours_raster) as mine, rasterio.open(masks[0]) as loc_src, rasterio.open(masks[1]) as dmg_src:
        opts = dict(crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height, resampling=Resampling.nearest)
        with WarpedVRT(loc_src, **opts) as loc, WarpedVRT(dmg_src, **opts) as dmg:
            for top in range(0, grid.height, rows):
                window = Window(0, top, grid.width, min(rows, grid.height - top))
                grade = mine.read(1, window=window)
                counts = tile_counts((grade != 255).astype(np.uint8), np.where(grade != 255, grade + 1, 0).astype(np.uint8),
                                     loc.read(1, window=window), dmg.read(1, window=window))
                localisation += counts[0]
                cm += counts[1]
    return XView2Accumulator().add_tile_counts(localisation, cm).result().to_dict()  # the scene is one tile


def _write_tables(folder: Path, counts: np.ndarray, per_grade: dict[str, Any]) -> None:
    with open(folder / "confusion.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["reference \\ ours", *(GRADE_LABELS[g] for g in GRADES)])
        for g in GRADES:
            writer.writerow([GRADE_LABELS[g], *counts[g].tolist()])
    with open(folder / "per_grade.csv", "w", newline="") as handle:
        fields = ["grade", "precision", "recall", "f1", "f1_ci_low", "f1_ci_high", "reference_buildings", "our_buildings",
                  "reference_area_m2", "our_area_m2"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for label, values in per_grade.items():
            writer.writerow({"grade": label, "precision": values["precision"]["value"], "recall": values["recall"]["value"],
                             "f1": values["f1"]["value"], "f1_ci_low": values["f1"].get("ci_low"),
                             "f1_ci_high": values["f1"].get("ci_high"),
                             **{k: values[k] for k in fields[6:]}})


def _figures(folder: Path, counts: np.ndarray, layer: gpd.GeoDataFrame, metrics: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from deltacd.report.figures import confusion_matrix_figure

    confusion_matrix_figure(counts, [GRADE_LABELS[g] for g in GRADES], folder / "confusion.png",
                            title="damage grades: buildings (rows reference, columns ours)")
    fig, ax = plt.subplots(figsize=(8, 8), constrained_layout=True)
    for code, colour in AGREEMENT_COLOURS.items():
        part = layer[layer["agreement"] == code]
        if not part.empty:
            part.plot(ax=ax, facecolor=colour, edgecolor="black", linewidth=0.2)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=f"{AGREEMENT[k]} ({int((layer['agreement'] == k).sum())})")
                       for k, c in AGREEMENT_COLOURS.items()], loc="lower right", fontsize=8)
    f1 = metrics["damaged_f1"]["value"]
    ax.set_title(f"agreement per building (damaged-vs-undamaged F1 {f1:.2f})" if f1 is not None else "agreement per building")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.savefig(folder / "agreement.png", dpi=110)
    plt.close(fig)


__all__ = ["AGREEMENT", "DamageEvaluation", "evaluate_damage", "match_buildings", "GRADE_COLOURS"]
