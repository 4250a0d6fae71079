"""The study's compare step: our change map against the team's current method, by zone and by transition.

With a land-cover map of each date, the current method is their post-classification comparison:

* its change map, as polygons with their from/to classes (``post_classification_changes.gpkg``,
  layer ``changes``: the pixels whose class differs, one polygon per connected pair of classes,
  :func:`deltacd.study.fromto.transition_polygons`), written whenever two maps are given, with or
  without a detect step;
* the maps' from/to matrix per zone (``landcover_transitions.csv``: every pair of classes, the
  unchanged ones too, in ha) and both maps at reduced resolution for the report
  (``landcover_overview.tif``: band 1 before, band 2 after, class indices, 255 no data);
* with a detect step, :func:`deltacd.evaluate.compare.compare` writes the agreement map, its
  from/to matrix and scores into ``post-classification/``; every change polygon of ours gets its
  from/to classes and its kind, a transition or a change within a class (``changes_fromto.gpkg``,
  ``transitions.csv``; :class:`deltacd.study.fromto.FromToOptions` says which count as change), and
  the agreement is counted per zone and per transition (``agreement_by_zone.csv``,
  ``agreement_by_transition.csv``).

With the current method's own change layer instead (``inputs.current_change``), the agreement is
counted against it, per zone. The step's options are those of the compare verb
(:class:`deltacd.evaluate.compare.CompareOptions`, whose ``min_area_m2`` also drops the current
method's change polygons under that area) and of :class:`~deltacd.study.fromto.FromToOptions`.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import rasterio

from deltacd.config import build_options
from deltacd.errors import InputError
from deltacd.evaluate.compare import CompareOptions, compare
from deltacd.evaluate.evaluate import open_prediction_grid
from deltacd.evaluate.reference import open_labels
from deltacd.io.grid import Grid
from deltacd.io.outputs import input_paths, staged_output
from deltacd.io.qgis import categorized_qml, write_styles
from deltacd.io.records import environment, write_json
from deltacd.io.vectors import read_vector, write_layer
from deltacd.outputs.layout import DetectOutputs
from deltacd.report.figures import palette
from deltacd.study.checks import is_vector
from deltacd.study.fromto import (
    Classes,
    FromToOptions,
    agreement_table,
    attribute_transitions,
    change_kinds,
    transition_polygons,
    write_agreement,
    write_landcover_transitions,
    write_transitions,
    zone_names,
)

if TYPE_CHECKING:  # a type only: the study file's reader imports this module (one-way)
    from deltacd.study.config import StudyConfig

#: Our change polygons with their from/to classes (layer ``changes``, as in the detect run's ``changes.gpkg``).
FROMTO_GPKG = "changes_fromto.gpkg"
#: The current method's change polygons with their from/to classes (layer ``changes``).
PCC_GPKG = "post_classification_changes.gpkg"
#: Both land-cover maps at reduced resolution (class indices; tags ``classes``: the names as JSON).
LANDCOVER_OVERVIEW = "landcover_overview.tif"
#: Longer side of :data:`LANDCOVER_OVERVIEW`, in pixels.
OVERVIEW_SIZE = 2048
LAYER = "changes"


def split_options(options: dict[str, Any], source: str) -> tuple[dict[str, Any], FromToOptions]:
    """The step's options for :func:`deltacd.evaluate.compare.compare`, checked, and its from/to options."""
    own = {f.name for f in fields(FromToOptions)}
    fromto = build_options(FromToOptions, {k: v for k, v in options.items() if k in own}, source=source)
    rest = {k: v for k, v in options.items() if k not in own}
    try:
        build_options(CompareOptions, rest, source=source)
    except InputError as exc:
        text = str(exc)
        if "unknown setting" in text:
            text = f"{text}, {', '.join(sorted(own))}"
        raise InputError(text) from None
    return rest, fromto


def write_landcover_overview(path: Path, grid: Grid, paths: tuple[str, str], classes: Classes, *, field: str | None,
                             names: dict[str, int], max_size: int = OVERVIEW_SIZE) -> Path:
    """Both land-cover maps on a grid at most ``max_size`` px long (nearest / pixel-centre), as class indices."""
    small = grid.scaled(max_size)
    bands = []
    for source, label in zip(paths, ("before", "after"), strict=True):
        with open_labels(source, small, what=f"land-cover map ({label})", grid_name="overview",
                         field=field if is_vector(source) else None, names=names) as labels:
            values, valid = labels.read(small.full_window)
        index = classes.index(values.astype(np.int64))
        bands.append(np.where(valid & (index >= 0), index, 255).astype(np.uint8))
    with rasterio.open(path, "w", driver="GTiff", width=small.width, height=small.height, count=2, dtype="uint8",
                       crs=small.crs, transform=small.transform, nodata=255, compress="deflate") as dst:
        dst.write(np.stack(bands))
        dst.update_tags(classes=json.dumps(list(classes.names)))
        for band, label in ((1, "before"), (2, "after")):
            dst.set_band_description(band, f"land-cover class index ({label}); 255 no data")
    return path


def compare_with_current_method(config: StudyConfig, detect_dir: Path | None, out_dir: Path, **options: Any) -> dict[str, Any]:
    """Run the compare step of ``config`` on the detect step's outputs in ``detect_dir`` (module notes).

    Without a detect step (``detect_dir`` None) only the land-cover maps are compared: their change
    polygons, from/to matrix and areas per transition and per zone, on the grid of the first map (a raster).
    """
    i = config.inputs
    compare_options, fromto = split_options(options, f"{config.source}: steps.compare")
    ours = DetectOutputs(detect_dir).mask if detect_dir is not None else None
    if ours is None and (not i.landcover_before or is_vector(i.landcover_before)):
        raise InputError(f"{config.source}: compare without a detect step needs land-cover maps as rasters "
                         "(inputs.landcover_before / landcover_after), or add steps.detect")
    grid_source = ours if ours is not None else Path(i.landcover_before)
    grid = open_prediction_grid(grid_source, what="change map (ours)" if ours is not None else "land-cover map (before)")
    zones = read_vector(i.zones, what="zones")[[i.zone_field, "geometry"]].to_crs(grid.crs) if i.zones else None
    inputs = input_paths(ours, i.landcover_before, i.landcover_after, i.current_change, i.zones, i.reference)
    summary: dict[str, Any] = {"format": "deltacd-study-compare/2", **environment(), "within_class": fromto.within_class}
    min_area_m2 = float(compare_options.get("min_area_m2", 0.0))
    with staged_output(out_dir, overwrite=True, kind="compare", inputs=inputs) as staging:
        before = after = classes = None
        vectors: dict[tuple[str, str], str] = {}
        if i.landcover_before and i.landcover_after:
            if ours is not None:
                result = compare(ours, i.landcover_before, i.landcover_after, staging / "post-classification",
                                 reference=i.reference, reference_field=i.reference_field, class_field=i.landcover_field,
                                 classes=i.landcover_classes, **compare_options)
                classes = Classes(tuple(int(c) for c in result.class_codes), tuple(str(n) for n in result.class_names))
                summary["post_classification"] = {"agreement": result.summary.get("agreement"), "classes": list(classes.names)}
            else:
                declared = i.landcover_classes or {}
                classes = Classes(tuple(sorted(int(c) for c in declared)), tuple(declared[c] for c in sorted(declared))) if declared else None
                if classes is None:
                    raise InputError(f"{config.source}: inputs.landcover_classes: give the classes (code: name) of the maps")
            fromto.check(classes, f"{config.source}: steps.compare")
            names = {name: code for code, name in zip(classes.codes, classes.names, strict=True)}
            before, after = (open_labels(path, grid, what=f"land-cover map ({label})", grid_name=str(grid_source),
                                         field=i.landcover_field if is_vector(path) else None, names=names)
                             for path, label in ((i.landcover_before, "before"), (i.landcover_after, "after")))
            colours = dict(zip((f"{a} -> {b}" for a in classes.names for b in classes.names),
                               palette(len(classes.names) ** 2), strict=True))
            pcc = transition_polygons(grid, before, after, classes, zones=zones, zone_field=i.zone_field, min_area_m2=min_area_m2)
            write_layer(pcc, staging / PCC_GPKG, LAYER)
            present = list(dict.fromkeys(pcc.groupby("transition")["area_ha"].sum().sort_values(ascending=False).index))
            vectors[(PCC_GPKG, LAYER)] = categorized_qml("transition", {t: (t, colours[t]) for t in present})
            summary["post_classification_changes"] = {"polygons": len(pcc), "area_ha": round(float(pcc["area_ha"].sum()), 4),
                                                      "min_area_m2": min_area_m2}
            write_landcover_overview(staging / LANDCOVER_OVERVIEW, grid, (i.landcover_before, i.landcover_after), classes,
                                     field=i.landcover_field, names=names)
            if ours is not None:
                changes = gpd.read_file(DetectOutputs(detect_dir).polygons, layer=DetectOutputs.layer)
                attributed = attribute_transitions(changes, grid, before, after, classes, zones=zones,
                                                   zone_field=i.zone_field, options=fromto)
                write_layer(attributed, staging / FROMTO_GPKG, DetectOutputs.layer)
                rows = write_transitions(staging / "transitions.csv", attributed)
                shown = list(dict.fromkeys(r["transition"] for r in rows if r["zone"] == "all"))
                vectors[(FROMTO_GPKG, DetectOutputs.layer)] = categorized_qml(
                    "transition", {t: (t, colours.get(t, "#9e9e9e")) for t in shown})
                summary["transitions"] = [r for r in rows if r["zone"] == "all"]
                summary["change_kinds"] = change_kinds(attributed)
        theirs = open_labels(i.current_change, grid, what="current change layer", grid_name=str(grid_source),
                             field=i.current_change_field) if i.current_change else None
        mine = open_labels(ours, grid, what="change map (ours)", grid_name=str(ours)) if ours is not None else None
        counts = agreement_table(grid, mine, theirs, before, after, classes, zones)
        for source in (mine, theirs, before, after):
            if source is not None:
                source.close()
        pixel_ha = grid.pixel_area_m2 / 1e4
        names_of_zones = zone_names(zones, i.zone_field)
        if ours is not None:
            summary["agreement"] = write_agreement(staging, counts, pixel_ha, names_of_zones, classes)
        if classes is not None:
            rows = write_landcover_transitions(staging / "landcover_transitions.csv", counts, pixel_ha, names_of_zones, classes)
            summary["landcover_transitions"] = [r for r in rows if r["zone"] == "all"]
        write_styles(staging, {}, vectors)
        summary["current_method"] = "change layer" if i.current_change else "post-classification comparison"
        write_json(staging / "compare_study.json", summary)
    return summary
