"""The study's compare step: our change map against the team's current method, by zone and by transition.

With a land-cover map of each date, the current method is their post-classification comparison:
:func:`deltacd.evaluate.compare.compare` writes its agreement map, from/to matrix and scores into
``post-classification/``; then every change polygon of ours gets its from/to classes
(``changes_fromto.gpkg``, ``transitions.csv``) and the agreement is counted per zone and per
transition (``agreement_by_zone.csv``, ``agreement_by_transition.csv``). With the current method's
own change layer instead (``inputs.current_change``), the agreement is counted against it, per zone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd

from deltacd.errors import InputError
from deltacd.evaluate.compare import compare
from deltacd.evaluate.evaluate import open_prediction_grid
from deltacd.evaluate.reference import open_labels
from deltacd.io.outputs import input_paths, staged_output
from deltacd.io.qgis import categorized_qml, write_styles
from deltacd.io.records import environment, write_json
from deltacd.io.vectors import read_vector, write_layer
from deltacd.outputs.layout import DetectOutputs
from deltacd.study.config import StudyConfig
from deltacd.study.fromto import (
    Classes,
    agreement_table,
    attribute_transitions,
    write_agreement,
    write_landcover_transitions,
    write_transitions,
    zone_names,
)

#: Our change polygons with their from/to classes (layer ``changes``, as in the detect run's ``changes.gpkg``).
FROMTO_GPKG = "changes_fromto.gpkg"
#: Colours given to the largest transitions in the styles (the others are grey).
TRANSITION_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf")


def _is_vector(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml")


def compare_with_current_method(config: StudyConfig, detect_dir: Path | None, out_dir: Path, **options: Any) -> dict[str, Any]:
    """Run the compare step of ``config`` on the detect step's outputs in ``detect_dir`` (module notes).

    Without a detect step (``detect_dir`` None) only the land-cover maps are compared: their
    from/to matrix and areas per transition and per zone, on the grid of the first map (a raster).
    """
    i = config.inputs
    ours = DetectOutputs(detect_dir).mask if detect_dir is not None else None
    if ours is None and (not i.landcover_before or _is_vector(i.landcover_before)):
        raise InputError(f"{config.source}: compare without a detect step needs land-cover maps as rasters "
                         "(inputs.landcover_before / landcover_after), or add steps.detect")
    grid_source = ours if ours is not None else Path(i.landcover_before)
    grid = open_prediction_grid(grid_source, what="change map (ours)" if ours is not None else "land-cover map (before)")
    zones = read_vector(i.zones, what="zones")[[i.zone_field, "geometry"]].to_crs(grid.crs) if i.zones else None
    inputs = input_paths(ours, i.landcover_before, i.landcover_after, i.current_change, i.zones, i.reference)
    summary: dict[str, Any] = {"format": "deltacd-study-compare/1", **environment()}
    with staged_output(out_dir, overwrite=True, kind="compare", inputs=inputs) as staging:
        before = after = classes = None
        if i.landcover_before and i.landcover_after:
            if ours is not None:
                result = compare(ours, i.landcover_before, i.landcover_after, staging / "post-classification",
                                 reference=i.reference, reference_field=i.reference_field, class_field=i.landcover_field,
                                 classes=i.landcover_classes, **options)
                classes = Classes(tuple(int(c) for c in result.class_codes), tuple(str(n) for n in result.class_names))
                summary["post_classification"] = {"agreement": result.summary.get("agreement"), "classes": list(classes.names)}
            else:
                declared = i.landcover_classes or {}
                classes = Classes(tuple(sorted(int(c) for c in declared)), tuple(declared[c] for c in sorted(declared))) if declared else None
                if classes is None:
                    raise InputError(f"{config.source}: inputs.landcover_classes: give the classes (code: name) of the maps")
            names = {name: code for code, name in zip(classes.codes, classes.names, strict=True)}
            before, after = (open_labels(path, grid, what=f"land-cover map ({label})", grid_name=str(grid_source),
                                         field=i.landcover_field if _is_vector(path) else None, names=names)
                             for path, label in ((i.landcover_before, "before"), (i.landcover_after, "after")))
            if ours is not None:
                changes = gpd.read_file(DetectOutputs(detect_dir).polygons, layer=DetectOutputs.layer)
                attributed = attribute_transitions(changes, grid, before, after, classes, zones=zones, zone_field=i.zone_field)
                write_layer(attributed, staging / FROMTO_GPKG, DetectOutputs.layer)
                rows = write_transitions(staging / "transitions.csv", attributed)
                top = [r["transition"] for r in rows if r["zone"] == "all"][: len(TRANSITION_COLOURS)]
                write_styles(staging, {}, {(FROMTO_GPKG, DetectOutputs.layer): categorized_qml(
                    "transition", {t: (t, c) for t, c in zip(top, TRANSITION_COLOURS, strict=False)})})
                summary["transitions"] = [r for r in rows if r["zone"] == "all"]
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
        else:
            rows = write_landcover_transitions(staging / "landcover_transitions.csv", counts, pixel_ha, names_of_zones, classes)
            summary["landcover_transitions"] = [r for r in rows if r["zone"] == "all"]
        summary["current_method"] = "change layer" if i.current_change else "post-classification comparison"
        write_json(staging / "compare_study.json", summary)
    return summary
