"""``damage``: a pre- and a post-event image and building footprints in, one damage grade per building out.

The steps, in order: the pair is prepared exactly as by :func:`deltacd.detect` (open,
orthorectify, align, co-register, harmonise: :func:`deltacd.pipeline.prepare_pair`) -> footprints
are read, repaired and reprojected (or, without any, found on the pre image by a building
segmentation network run through the same engine and vectorised) -> the pixel change score
(CVA, or zero-shot features) is computed by the tiled engine and written window by window ->
per-building statistics of that score inside each footprint and in a ring around it are
accumulated strip by strip -> the chosen method grades each building
(:mod:`deltacd.damage.methods`) -> ``buildings.gpkg``, ``damage.tif``, ``change_score.tif``,
``quicklook.png``, ``summary.csv`` and ``run.json`` are written. Everything is staged in a
temporary folder and published at the end, as for detect.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.windows import Window

from deltacd.config import DetectOptions
from deltacd.damage.footprints import Footprints, footprints_from_frame, read_footprints, rings
from deltacd.damage.methods import BuildingGrades, DamageContext, build_damage_method
from deltacd.damage.options import DETECT_KEYS, DamageOptions, split_options  # noqa: F401 (DETECT_KEYS: public here too)
from deltacd.engine.runner import EngineStats
from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.io.qgis import categorized_qml, paletted_qml, score_ramp, write_styles
from deltacd.io.rasters import warn_if_same_file
from deltacd.io.vectors import read_vector, write_layer
from deltacd.io.writers import RasterWriter
from deltacd.methods import get_method
from deltacd.outputs.backdrop import write_backdrops
from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS, GRADES, UNCLASSIFIED
from deltacd.outputs.layout import DAMAGE_NODATA, SCORE, DamageOutputs
from deltacd.outputs.quicklook import write_damage_quicklook
from deltacd.outputs.run import Run, StageProgress, stage_progress
from deltacd.pipeline import (
    Scored,
    check_settings,
    memory_hint,
    network_resolution,
    open_pair,
    prepare_pair,
    scene_threshold,
    score_strips,
)
from deltacd.postprocess.histogram import Histogram
from deltacd.postprocess.polygons import CleanUp, vectorise_changes
from deltacd.postprocess.zonal import FeatureLabels, ZonalAccumulator, ZonalStats

PROBABILITY_FIELDS = ("p_no_damage", "p_minor", "p_major", "p_destroyed")

@dataclass(frozen=True)
class DamageResult(DamageOutputs):
    """Where the outputs are (``out_dir``, ``buildings``, ``damage_raster``, ``summary``... from the layout), and
    the run record (the content of run.json)."""

    record: dict[str, Any] = field(default_factory=dict)


def damage(
    before: str | Path | list,
    after: str | Path | list,
    out_dir: str | Path,
    *,
    buildings: str | Path | None = None,
    overwrite: bool = False,
    progress: StageProgress | None = None,
    **options: Any,
) -> DamageResult:
    """Grade every building between a pre- and a post-event image and write the outputs to ``out_dir``.

    Parameters
    ----------
    before, after
        Pre- and post-event images (as for :func:`deltacd.detect`).
    out_dir
        Output folder (must not exist unless ``overwrite``): ``buildings.gpkg`` (layer
        ``buildings``: input attributes, ``building_id``, ``damage_grade`` 0-3 or -1,
        ``damage_label``, grade probabilities for trained methods, ``change_score``,
        ``changed_share``, ring statistics, ``valid_share``, ``area_m2``), ``damage.tif`` (uint8
        COG, grade per building pixel, 255 elsewhere), ``change_score.tif``, ``quicklook.png``,
        ``summary.csv``, ``run.json``.
    buildings
        Footprints (any vector format and CRS); without them ``localisation_model`` finds the buildings.
    **options
        Fields of :class:`DamageOptions` and the pair settings of :class:`~deltacd.config.DetectOptions`
        listed in :data:`DETECT_KEYS`.

    Raises
    ------
    DeltacdError
        Bad input, with a one-line message naming the file or setting; nothing is written.
    """
    opts, detect_opts = split_options(options)
    method = build_damage_method(opts.method, model=opts.model, device=opts.device, min_valid_share=opts.min_valid_share,
                                 share_thresholds=opts.share_thresholds)
    change = get_method(opts.change_method, **(detect_opts.method_options or {}))
    if detect_opts.harmonise == "auto":
        detect_opts = replace(detect_opts, harmonise=getattr(change, "default_harmonise", "pif"))
    localiser = None
    if buildings is None:
        localiser = _load_localiser(opts)
    if opts.zones is not None and opts.zone_field is None:
        raise InputError(f"zones {opts.zones}: give zone_field (--zone-field NAME), the field that names each zone")
    run = Run(out_dir, kind="damage", overwrite=overwrite, memory_hint=memory_hint(detect_opts),
              inputs=(before, after, buildings, opts.zones, opts.model, opts.localisation_model, detect_opts.aoi,
                      detect_opts.dem))
    with run.timings.stage("open"):
        first, second = open_pair(before, after, detect_opts)
    check_settings(change, detect_opts, first, second)
    with run:
        warn_if_same_file(before, after)
        staged = DamageOutputs(run.staging)
        prepared = prepare_pair(first, second, detect_opts, run, progress)
        with prepared.pair as pair:
            grid = pair.grid
            with run.timings.stage("footprints"):
                if buildings is not None:
                    footprints = read_footprints(buildings, grid, id_field=opts.id_field, buffer_m=opts.buffer_m)
                else:
                    footprints = _localise(pair, prepared.sample, localiser, detect_opts, opts, run.workdir, progress)
            zones = _read_zones(opts, grid) if opts.zones is not None else None
            with run.timings.stage("fit"):
                change.fit(prepared.sample)
            scored, inside, ring = score_buildings(pair, change, detect_opts, opts, run, staged, footprints, progress)
            area_m2 = footprints.frame.geometry.area.to_numpy() * (grid.res_m / grid.res[0]) ** 2
            valid_share = np.clip(inside.valid * grid.pixel_area_m2 / np.maximum(area_m2, 1e-9), 0.0, 1.0)
            with run.timings.stage("grading"):
                # trained networks learnt on raw pairs: they get date 2 without the harmonisation the change score used
                seen = pair.replace(after_transform=None) if method.trained else pair
                grades = method.grade(DamageContext(seen, footprints.frame, inside, valid_share, detect_opts.tile_size,
                                                    detect_opts.batch_size, progress))
            table = building_table(footprints.frame, grades, inside, ring, valid_share, area_m2, trained=method.trained)
            with run.timings.stage("outputs"):
                summary = write_damage_outputs(staged, pair, table, zones, opts, change, method,
                                               orthorectified=first.sensor_geometry)
            record = run.record(
                prepared.inputs | {"buildings": str(buildings) if buildings else None},
                grid=grid.describe(),
                bands=list(pair.bands),
                options={"damage": _plain(opts), "pair": detect_opts.to_dict()},
                coregistration=prepared.coregistration.describe() if prepared.coregistration else None,
                radiometry=prepared.radiometry,
                change_score=change.describe() | {"score_units": change.score_units},
                threshold={"value": scored.threshold, "rule": scored.rule,
                           "fraction_of_pixels_above": scored.hist.fraction_above(scored.threshold)},
                score_histogram=scored.hist.describe(),
                footprints=footprints.counts | {"source": str(buildings) if buildings else "localisation model"},
                method=method.describe() | {"details": grades.details},
                results=summary,
                outputs={"buildings": DamageOutputs.BUILDINGS, "damage": DamageOutputs.DAMAGE, "score": SCORE,
                         "summary": DamageOutputs.SUMMARY, "quicklook": staged.quicklook.name},
            )
            run.write_record(record)
    return DamageResult(Path(out_dir), record)


def score_buildings(pair, change, detect_opts: DetectOptions, opts: DamageOptions, run: Run, staged: DamageOutputs,
                    footprints: Footprints, progress) -> tuple[Scored, ZonalStats, ZonalStats]:
    """The pixel change score written window by window, then its statistics inside each footprint and its ring."""
    grid = pair.grid
    hist = Histogram()
    with RasterWriter(staged.score, grid, dtype="float32", nodata=float("nan"), description=change.score_units) as score:
        with run.timings.stage("predict"):
            for window, values in score_strips(pair, change, detect_opts, None, run.workdir, progress, EngineStats()):
                score.write(window, values)
                hist.update(values)
        threshold, rule = scene_threshold(change, hist, detect_opts.threshold)
        with run.timings.stage("statistics"):
            inside, ring = building_statistics(score.read, grid, footprints.frame, threshold, hist,
                                               ring_width=opts.ring_m * grid.res[0] / grid.res_m, progress=progress)
        with run.timings.stage("cog"):
            score.finish()
    return Scored(hist, hist.total, threshold, rule), inside, ring


def write_damage_outputs(staged: DamageOutputs, pair, table: gpd.GeoDataFrame, zones, opts: DamageOptions, change,
                         method, *, orthorectified: bool) -> dict[str, Any]:
    """buildings.gpkg, damage.tif, their QGIS styles, summary.csv, quicklook and backdrops; the summary for run.json."""
    write_layer(table, staged.buildings, DamageOutputs.layer)
    write_damage_raster(staged.damage, pair.grid, table)
    legend = {g: (GRADE_LABELS[g], GRADE_COLOURS[g]) for g in GRADE_COLOURS}
    write_styles(staged.folder, {DamageOutputs.DAMAGE: lambda _: paletted_qml({**{g: legend[g] for g in GRADES},
                                                                               DAMAGE_NODATA: ("no building", "#000000")},
                                                                              transparent=(DAMAGE_NODATA,)),
                                 SCORE: score_ramp(change.score_units)},
                 {(DamageOutputs.BUILDINGS, DamageOutputs.layer): categorized_qml("damage_grade", legend)})
    summary = write_summary(staged.summary, table, zones, opts.zone_field)
    write_damage_quicklook(pair, table, staged.quicklook, title=f"{method.name}: {len(table)} buildings")
    write_backdrops(pair, staged.folder, shift_px=pair.after_shift, orthorectified=orthorectified)
    return summary


def _plain(opts: DamageOptions) -> dict[str, Any]:
    return {f.name: (str(v) if isinstance(v := getattr(opts, f.name), Path) else v) for f in fields(DamageOptions)}


def _load_localiser(opts: DamageOptions):
    if opts.localisation_model is None:
        raise InputError(
            "buildings: none given; give footprints (--buildings FOOTPRINTS.gpkg, e.g. BD TOPO or OpenStreetMap), "
            "or a building localisation model (--localisation-model MODEL.safetensors, deltacd train task building-localisation)"
        )
    from deltacd.methods.learned import LearnedModel

    localiser = LearnedModel.from_file(opts.localisation_model, device=opts.device)
    if localiser.spec.name != "building-unet":
        raise InputError(f"{opts.localisation_model}: a {localiser.spec.name!r} model; finding buildings needs a "
                         "building-unet (deltacd train, task building-localisation)")
    return localiser


def _localise(pair, sample, localiser, detect_opts: DetectOptions, opts: DamageOptions, workdir: Path, progress) -> Footprints:
    """Buildings found on the pre image by the localisation network, vectorised (minimum area ``min_building_m2``)."""
    from deltacd.engine.regrid import write_strips

    localiser.fit(sample)
    run_res, _ = network_resolution(localiser, replace(detect_opts, model_resolution="auto"), pair.grid)
    path = write_strips(workdir / "buildings_probability.tif", pair.grid,
                        score_strips(pair, localiser, detect_opts, run_res, workdir, progress, EngineStats()))
    with rasterio.open(path) as src:
        polygons = vectorise_changes(lambda window: src.read(1, window=window), pair.grid, float(localiser.spec.threshold),
                                     CleanUp(opts.min_building_m2, 0), progress=stage_progress(progress, "buildings"))
    polygons = polygons[["geometry"]].assign(found_score=polygons["mean_score"].to_numpy())
    return footprints_from_frame(polygons, pair.grid, source="localisation model", buffer_m=opts.buffer_m)


def building_statistics(read, grid: Grid, buildings: gpd.GeoDataFrame, threshold: float, hist: Histogram, *,
                        ring_width: float, rows: int = 1024, progress=None) -> tuple[ZonalStats, ZonalStats]:
    """Statistics of the change score inside each footprint and in its ring (see :class:`~deltacd.postprocess.zonal.ZonalAccumulator`)."""
    high = hist.quantile(0.999) if hist.total else threshold + 1.0
    low = float(hist.low) if hist.low is not None else 0.0
    inside_labels, ring_labels = FeatureLabels(buildings.geometry), FeatureLabels(rings(buildings, ring_width))
    inside = ZonalAccumulator(len(buildings), low=low, high=high, threshold=threshold)
    ring = ZonalAccumulator(len(buildings), low=low, high=high, threshold=threshold)
    for top in range(0, grid.height, rows):
        window = Window(0, top, grid.width, min(rows, grid.height - top))
        values = read(window)
        inside.add(inside_labels.read(grid, window), values)
        ring.add(ring_labels.read(grid, window), values)
        if progress is not None:
            progress("statistics", min(top + rows, grid.height), grid.height)
    return inside.result(), ring.result()


def building_table(frame: gpd.GeoDataFrame, grades: BuildingGrades, inside: ZonalStats, ring: ZonalStats,
                   valid_share: np.ndarray, area_m2: np.ndarray, *, trained: bool) -> gpd.GeoDataFrame:
    """The buildings layer: input attributes kept, damage fields added (names in :func:`damage`)."""
    table = frame.copy()
    table["damage_grade"] = grades.grade.astype(np.int16)
    table["damage_label"] = [GRADE_LABELS[int(g)] for g in grades.grade]
    if trained and grades.probability is not None:
        for k, name in enumerate(PROBABILITY_FIELDS):
            table[name] = np.round(grades.probability[:, k], 4)
    table["change_score"] = inside.median
    table["change_score_p90"] = inside.p90
    table["changed_share"] = inside.share_above
    table["ring_change_score"] = ring.median
    table["ring_changed_share"] = ring.share_above
    table["valid_share"] = np.round(valid_share, 4)
    table["area_m2"] = np.round(area_m2, 2)
    return table


def write_damage_raster(path: Path, grid: Grid, table: gpd.GeoDataFrame, rows: int = 1024) -> Path:
    """uint8 COG: each building's grade (0-3) on its pixels; 255 elsewhere, and for unclassified buildings."""
    graded = table[table["damage_grade"] >= 0].sort_values("damage_grade")  # the most severe wins where footprints overlap
    labels = FeatureLabels(graded.geometry)
    values = np.concatenate([[DAMAGE_NODATA], graded["damage_grade"].to_numpy()]).astype(np.uint8)
    with RasterWriter(path, grid, dtype="uint8", nodata=DAMAGE_NODATA, overview_resampling="nearest",
                      description="damage grade: 0 no damage, 1 minor, 2 major, 3 destroyed; 255 no building") as raster:
        for top in range(0, grid.height, rows):
            window = Window(0, top, grid.width, min(rows, grid.height - top))
            raster.write(window, values[labels.read(grid, window)])
        raster.finish()
    return path


def _read_zones(opts: DamageOptions, grid: Grid) -> gpd.GeoDataFrame:
    frame = read_vector(opts.zones, what="zones")
    if opts.zone_field not in frame.columns:
        raise InputError(f"{opts.zones}: no field {opts.zone_field!r} (fields: {', '.join(map(str, frame.columns[:12]))}); "
                         "check --zone-field")
    return frame[[opts.zone_field, "geometry"]].to_crs(grid.crs)


def write_summary(path: Path, table: gpd.GeoDataFrame, zones: gpd.GeoDataFrame | None, zone_field: str | None) -> dict[str, Any]:
    """Counts and footprint areas per grade (and per zone); returns them for run.json."""
    rows = []
    by_zone = None
    if zones is not None:
        centroids = gpd.GeoDataFrame(geometry=table.geometry.representative_point(), crs=table.crs)
        joined = gpd.sjoin(centroids, zones, how="left", predicate="within")
        by_zone = joined[~joined.index.duplicated()][zone_field].reindex(table.index).fillna("(outside the zones)")
    groups = [("all", table)] + ([] if by_zone is None else [(str(z), table[by_zone == z]) for z in sorted(by_zone.unique())])
    for zone, part in groups:
        for grade in (*GRADES, UNCLASSIFIED):
            chosen = part[part["damage_grade"] == grade]
            rows.append({"zone": zone, "damage_grade": grade, "damage_label": GRADE_LABELS[grade], "buildings": len(chosen),
                         "footprint_area_m2": round(float(chosen["area_m2"].sum()), 2)})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    overall = [r for r in rows if r["zone"] == "all"]
    return {"buildings": len(table), "per_grade": {r["damage_label"]: r["buildings"] for r in overall},
            "area_m2_per_grade": {r["damage_label"]: r["footprint_area_m2"] for r in overall}}


__all__ = ["DamageOptions", "DamageResult", "damage", "split_options"]
