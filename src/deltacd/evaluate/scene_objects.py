"""Object scores of a whole scene: the predicted and reference objects of two maps, found or not.

The object rules and scores are those of :mod:`deltacd.evaluate.objects`; this module finds the
objects of a scene. Objects must never be cut by window borders, so on small grids (the caller's
``whole``) both maps are read whole and labelled once (4-connected components, the connectivity
of deltacd's polygons); on larger grids objects are polygons (reference polygons as given,
``changes.gpkg`` beside the mask, or maps vectorised block by block with merging across blocks,
:func:`deltacd.postprocess.polygons.vectorise_changes`), and IoU is the polygons' geometric IoU.
Predicted objects are the polygons of ``changes.gpkg`` when it sits beside a ``change_mask.tif``,
else the connected components of the mask. Coordinates are in the grid's CRS, areas in m².
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import shapely
from rasterio.windows import Window
from scipy import ndimage

from deltacd.evaluate.objects import (
    ObjectScores,
    label_objects,
    object_scores,
    polygon_object_scores,
    rasterize_objects,
)
from deltacd.evaluate.reference import LabelCoding, LabelSource, PolygonLabels, RasterLabels
from deltacd.io.grid import Grid
from deltacd.outputs.layout import DetectOutputs
from deltacd.postprocess.polygons import CleanUp, vectorise_changes

if TYPE_CHECKING:
    from deltacd.evaluate.evaluate import EvaluateOptions

__all__ = ["changes_beside", "reference_table", "scene_objects", "write_objects_csv"]


def changes_beside(prediction: Path) -> Path | None:
    """``changes.gpkg`` of the deltacd run whose ``change_mask.tif`` is ``prediction``, when there is one."""
    candidate = DetectOutputs(prediction.parent).polygons
    return candidate if prediction.name == DetectOutputs.MASK and candidate.exists() else None


def _change_polygons(ref: PolygonLabels, coding: LabelCoding) -> tuple[np.ndarray, np.ndarray]:
    """(geometries, source rows) of the reference polygons that mark change."""
    if ref.field is None:
        sel = np.ones(len(ref.values), dtype=bool)
    else:
        sel = ref.values == coding.codes[1]
    return ref.geometries[sel], ref.source_rows[sel]


def scene_objects(
    pred: RasterLabels,
    ref: LabelSource,
    pred_coding: LabelCoding,
    ref_coding: LabelCoding,
    grid: Grid,
    prediction: Path,
    opts: EvaluateOptions,
    *,
    whole: bool,
) -> tuple[ObjectScores, list[dict[str, Any]], dict[str, Any]]:
    """Object scores, the per-reference-object table and the ``objects`` section of metrics.json.

    ``whole``: label both maps on the whole grid (else compare polygons, see the module notes).
    """
    gpkg = changes_beside(prediction)
    pred_polys = None
    if gpkg is not None:
        pred_polys = gpd.read_file(gpkg, layer=DetectOutputs.layer)
        pred_polys = pred_polys.to_crs(grid.crs) if pred_polys.crs is not None else pred_polys.set_crs(grid.crs)
        pred_polys = pred_polys[pred_polys.geometry.notna() & ~pred_polys.geometry.is_empty]
    ref_polys = _change_polygons(ref, ref_coding) if isinstance(ref, PolygonLabels) else None
    if whole:
        scores, centres, rows = _objects_on_grid(pred, ref, pred_coding, ref_coding, grid, pred_polys, ref_polys, opts)
        method = "labels on the whole grid"
    else:
        scores, centres, rows = _objects_from_polygons(pred, ref, pred_coding, ref_coding, grid, pred_polys, ref_polys, opts)
        method = "polygons (grid above the whole-grid limit)"
    table = reference_table(scores, centres, rows, grid.pixel_area_m2)
    info = scores.to_dict() | {
        "method": method,
        "connectivity": 4,
        "predicted_objects_from": str(gpkg) if gpkg is not None else "connected components of the prediction",
        "reference_objects_from": "reference polygons" if ref_polys is not None else "connected components of the reference",
    }
    return scores, table, info


def _objects_on_grid(pred, ref, pred_coding, ref_coding, grid, pred_polys, ref_polys, opts):
    full = grid.full_window
    p, pv = pred_coding.apply(*pred.read(full))
    r, rv = ref_coding.apply(*ref.read(full))
    valid = pv & rv
    if pred_polys is not None:
        pl = rasterize_objects(pred_polys.geometry.values, shape=grid.shape, transform=grid.transform)
    else:
        pl, _ = label_objects(p, connectivity=4)
    del p
    rows = None
    if ref_polys is not None:
        geoms, rows = ref_polys
        rl = rasterize_objects(geoms, shape=grid.shape, transform=grid.transform, all_touched=opts.all_touched)
    else:
        rl, _ = label_objects(r, connectivity=4)
    del r
    scores = object_scores(
        pl, rl, rule=opts.object_rule, iou_threshold=opts.iou_threshold, overlap_threshold=opts.overlap_threshold,
        labelled=True, valid=valid,
    )
    ids = scores.reference_objects["id"]
    centres = np.zeros((ids.size, 2))
    if ids.size:
        rl = np.where(valid, rl, 0)
        com = np.asarray(ndimage.center_of_mass(rl > 0, rl, ids), dtype=np.float64).reshape(-1, 2)
        xs, ys = grid.transform * (com[:, 1] + 0.5, com[:, 0] + 0.5)
        centres = np.column_stack([xs, ys])
    if rows is not None:
        rows = rows[ids - 1]
    return scores, centres, rows


def _vectorise(source: LabelSource, coding: LabelCoding, grid: Grid) -> np.ndarray:
    def read(window: Window) -> np.ndarray:
        labels, ok = coding.apply(*source.read(window))
        return np.where(ok, labels.astype(np.float32), np.float32(np.nan))

    return vectorise_changes(read, grid, 0.5, CleanUp(min_area_m2=0.0)).geometry.values


def _objects_from_polygons(pred, ref, pred_coding, ref_coding, grid, pred_polys, ref_polys, opts):
    pgeoms = pred_polys.geometry.values if pred_polys is not None else _vectorise(pred, pred_coding, grid)
    rows = None
    if ref_polys is not None:
        rgeoms, rows = ref_polys
        box = shapely.box(*grid.bounds)
        rgeoms = shapely.intersection(rgeoms, box)
        keep = ~shapely.is_empty(rgeoms)
        rgeoms, rows = rgeoms[keep], rows[keep]
    else:
        rgeoms = _vectorise(ref, ref_coding, grid)
    scores = polygon_object_scores(
        np.asarray(pgeoms), np.asarray(rgeoms), rule=opts.object_rule,
        threshold=opts.iou_threshold if opts.object_rule == "iou" else opts.overlap_threshold,
        pixel_area_m2=grid.pixel_area_m2,
    )
    cx = shapely.get_x(shapely.centroid(rgeoms)) if len(rgeoms) else np.zeros(0)
    cy = shapely.get_y(shapely.centroid(rgeoms)) if len(rgeoms) else np.zeros(0)
    return scores, np.column_stack([cx, cy]), rows


def reference_table(scores: ObjectScores, centres: np.ndarray, rows: np.ndarray | None, pixel_area_m2: float) -> list[dict[str, Any]]:
    t = scores.reference_objects
    out = []
    for i in range(t.size):
        out.append({
            "object_id": int(t["id"][i]),
            "source_row": "" if rows is None else int(rows[i]),
            "x": float(centres[i, 0]),
            "y": float(centres[i, 1]),
            "area_px": int(t["area_px"][i]),
            "area_m2": float(t["area_px"][i] * pixel_area_m2),
            "best_iou": float(t["best_iou"][i]),
            "best_match_id": int(t["best_match_id"][i]),
            "covered_fraction": float(t["covered_fraction"][i]),
            "found": bool(t["found"][i]),
        })
    return out


def write_objects_csv(path: Path, table: list[dict[str, Any]]) -> None:
    fields = ("object_id", "source_row", "x", "y", "area_px", "area_m2", "best_iou", "best_match_id", "covered_fraction", "found")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
