"""Learn the scene from the analyst: suggest the objects to review, refine the map from the answers.

The loop: :func:`suggest` (or :func:`write_suggestions`, a GeoPackage to fill in QGIS) names the
objects whose answer would teach the classifier most; the analyst answers (``label`` 1 change /
0 no change, or the damage grade 0-3); :func:`refine` merges the answers into the run's review
store (:mod:`deltacd.review.store`), trains a classifier on every reviewed object and writes a
new run folder with the same files as the run it refines.

The classifier (a balanced random forest) and the suggestions (uncertainty sampling) are in
:mod:`deltacd.review.classifier`; their names are re-exported here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import rasterize

from deltacd.errors import InputError, MissingInputError, OutputError
from deltacd.io.qgis import MASK_STYLE, categorized_qml, outline_qml, paletted_qml, ramp_qml, store_style, write_styles
from deltacd.io.vectors import read_vector, write_layer
from deltacd.io.writers import RasterWriter
from deltacd.outputs.layout import MASK_NODATA, SCORE, DamageOutputs, DetectOutputs
from deltacd.outputs.run import Run
from deltacd.review.classifier import (
    TREES,
    Model,
    choose,
    classifier_beats_base,
    cross_validate,
    make_classifier,
    train,
)
from deltacd.review.embeddings import review_table
from deltacd.review.features import ObjectTable, run_pair
from deltacd.review.objects import PER_BLOCK, ReviewRun
from deltacd.review.pseudo import pseudo_model
from deltacd.review.store import ANSWER_STYLE, GRADE_STYLE, Answer, ReviewStore

log = logging.getLogger(__name__)

#: Probability at or above which an object is mapped as change.
DECISION = 0.5
#: Layer name of a suggestions GeoPackage.
SUGGESTIONS_LAYER = "suggestions"
#: QGIS's NULL in a value map.
_QGIS_NULL = "{2839923C-8B7D-419E-B84B-CA2FE9B80EC7}"


def suggest(run_dir: str | Path, n: int, *, strategy: str = "model", seed: int = 0, embeddings: str | None = None
            ) -> gpd.GeoDataFrame:
    """The ``n`` objects of the run in ``run_dir`` to review next, given the answers in its review store.

    Returns polygons (the run's CRS) with ``object_id``, an empty ``label`` to fill in (nullable
    integer), the run's ``score_mean`` and the current classifier's ``probability`` (NaN before there is one).
    ``embeddings``: an encoder spec whose embeddings are added to the features (:mod:`deltacd.review.embeddings`).
    """
    if n < 1:
        raise InputError(f"--suggest {n}: give a number of objects to review, at least 1")
    with ReviewRun(run_dir) as run:
        table = review_table(run, embeddings)
        known = set(table.ids.tolist())
        answers = {k: v for k, v in ReviewStore(run.folder, run.grid.crs, kind=run.kind).latest().items() if k in known}
        model = train(table, answers, seed=seed)
        ids = choose(table, answers, n, threshold=run.threshold, model=model, strategy=strategy, seed=seed)
        rows = table.rows(ids)
        frame = run.polygons(ids, table.boxes[rows]).reindex(ids)
        frame["object_id"] = ids
        frame["label"] = pd.array([None] * len(ids), dtype="Int32")
        if "score_mean" in table.names:
            frame["score_mean"] = np.round(table.column("score_mean")[rows].astype(float), 4)
        if model is not None and run.kind == "detect":
            frame["probability"] = np.round(model.change_probability(table.features[rows]), 3)
        else:
            frame["probability"] = np.nan
        frame = gpd.GeoDataFrame(frame, geometry="geometry", crs=run.grid.crs).reset_index(drop=True)
        return frame[["object_id", "label", "score_mean", "probability", "geometry"]] if "score_mean" in frame \
            else frame[["object_id", "label", "probability", "geometry"]]


def suggestion_qml(kind: str = "detect") -> str:
    """QGIS style of a suggestions layer: outlines by answer, and a value-map widget on ``label`` (QGIS's attribute form)."""
    styles = GRADE_STYLE if kind == "damage" else ANSWER_STYLE
    qml = categorized_qml("label", {"": ("to review", "#ffd700"), **styles}, outline_only=True)
    entries = "".join(f'<Option type="Map"><Option type="QString" name="{label} ({code})" value="{code}"/></Option>'
                      for code, (label, _) in sorted(styles.items(), reverse=True))
    entries += f'<Option type="Map"><Option type="QString" name="(not reviewed)" value="{_QGIS_NULL}"/></Option>'
    fields = ('<fieldConfiguration><field name="label" configurationFlags="None"><editWidget type="ValueMap"><config>'
              f'<Option type="Map"><Option type="List" name="map">{entries}</Option></Option></config></editWidget></field>'
              '</fieldConfiguration><editable><field name="object_id" editable="0"/><field name="score_mean" editable="0"/>'
              '<field name="probability" editable="0"/><field name="label" editable="1"/></editable>')
    return qml.replace("</qgis>", fields + "</qgis>")


def write_suggestions(run_dir: str | Path, n: int, out_gpkg: str | Path, *, strategy: str = "model", seed: int = 0,
                      overwrite: bool = False, embeddings: str | None = None) -> Path:
    """Write :func:`suggest`'s objects to ``out_gpkg`` (layer ``suggestions``), styled for QGIS with a value map on ``label``.

    Fill ``label`` in QGIS's attribute form (1 change / 0 no change, or the grade), save, then
    ``deltacd refine RUN --labels FILE -o OUT``.
    """
    out = Path(out_gpkg)
    style = out.with_suffix(".qml")
    if out.suffix.lower() != ".gpkg":
        raise InputError(f"{out}: suggestions are written as a GeoPackage; name the file *.gpkg")
    # never inside the run: --overwrite there could replace its review store (the analyst's answers) or its outputs
    if out.resolve().is_relative_to(Path(run_dir).resolve()):
        raise OutputError(f"{out}: inside the run folder {run_dir}; write the suggestions outside it")
    for path in (out, style):
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: exists; pass --overwrite or choose another file")
    kind = ReviewRun(run_dir).kind
    frame = suggest(run_dir, n, strategy=strategy, seed=seed, embeddings=embeddings)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".gpkg", dir=out.parent)
    os.close(handle)
    os.unlink(tmp)
    try:
        write_layer(frame, tmp, SUGGESTIONS_LAYER)
        store_style(Path(tmp), SUGGESTIONS_LAYER, suggestion_qml(kind))
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    style.write_text(suggestion_qml(kind))
    return out


# --- labels in --------------------------------------------------------------------------------------

def _read_labels(path: Path) -> gpd.GeoDataFrame:
    """The label file, waiting a little for a writer that holds it (QGIS saving its edits)."""
    if not path.exists():
        raise MissingInputError(f"{path}: no such label file; check the path")
    for attempt in range(3):
        try:
            return read_vector(path, what="label file")
        except InputError as exc:
            locked = "locked" in str(exc).lower() or "busy" in str(exc).lower()
            if not locked:
                raise
            if attempt == 2:
                raise InputError(f"{path}: locked by another program (QGIS saving its edits?); save or stop editing "
                                 "the layer, then run refine again") from exc
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _check_values(path: Path, values: pd.Series, allowed: tuple[int, ...], what: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = values[numeric.isna() | ~numeric.isin(allowed)]
    if len(bad):
        shown = ", ".join(map(repr, bad.astype(str).unique()[:5].tolist()))
        raise InputError(f"{path}: {len(bad)} label(s) outside {{{', '.join(map(str, allowed))}}} ({shown}); "
                         f"set label to {what}, or leave it empty for an object not reviewed")
    return numeric.to_numpy(dtype=np.int64)


def _objects_of(run: ReviewRun, table: ObjectTable, frame: gpd.GeoDataFrame) -> np.ndarray:
    """The object each label names: its ``object_id`` when it is one of the run's objects under the label, else the
    object under a point, else the object most of whose pixels a polygon covers (or under its inner point)."""
    out = np.full(len(frame), -1, dtype=np.int64)
    known = set(table.ids.tolist())
    inner = frame.geometry.representative_point()
    under = run.objects_at(np.c_[inner.x.to_numpy(), inner.y.to_numpy()])
    if "object_id" in frame.columns:
        given = pd.to_numeric(frame["object_id"], errors="coerce").to_numpy()
        for i, value in enumerate(given):
            if not np.isnan(value) and int(value) in known and under[i] != -1:
                out[i] = int(value)
    polygons = frame.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
    for i in np.flatnonzero((out == -1) & polygons):
        out[i] = _covered_object(run, table, frame.geometry.iloc[i], under[i])
    left = out == -1
    out[left] = under[left]
    return out


def _covered_object(run: ReviewRun, table: ObjectTable, geom: shapely.Geometry, fallback: int) -> int:
    """The object with the largest share of its pixels inside ``geom`` (detect runs; buildings: the largest overlap)."""
    if run.kind == "damage":
        buildings = run.buildings()
        hits = buildings[buildings.intersects(geom)]
        if hits.empty:
            return int(fallback)
        return int(hits.geometry.intersection(geom).area.idxmax())
    window = run.grid.window_of(geom.bounds)
    if window.width <= 0 or window.height <= 0:
        return int(fallback)
    ids = run.read_ids(window)
    inside = rasterize([geom], out_shape=ids.shape, transform=run.grid.window_transform(window), dtype=np.uint8).astype(bool)
    found, counts = np.unique(ids[inside & (ids >= 0)], return_counts=True)
    if found.size == 0:
        return int(fallback)
    share = counts / table.pixels[table.rows(found)]
    return int(found[np.argmax(share)])


def read_labels(run: ReviewRun, table: ObjectTable, files: Sequence[str | Path], *, reviewer: str = "") -> list[Answer]:
    """The answers in label files (points or polygons in any CRS, field ``label``), checked; nothing is written.

    Raises
    ------
    MissingInputError
        A file does not exist.
    InputError
        A file is unreadable, has no CRS, has no ``label`` field or no label filled in, has values
        outside the allowed set, or has labels outside the run's scene; one line naming the file and the fix.
    """
    answers: list[Answer] = []
    allowed = run.classes
    what = "1 (change) or 0 (no change)" if run.kind == "detect" else "the damage grade 0-3"
    bounds = shapely.box(*run.grid.bounds)
    for name in files:
        path = Path(name)
        frame = _read_labels(path)
        if "label" not in frame.columns:
            raise InputError(f"{path}: no field 'label' (fields: {', '.join(c for c in frame.columns if c != 'geometry')}); "
                             f"add an integer field 'label' set to {what}")
        frame = frame[frame["label"].notna() & frame.geometry.notna() & ~frame.geometry.is_empty]
        if frame.empty:
            continue
        values = _check_values(path, frame["label"], allowed, what)
        frame = frame.to_crs(run.grid.crs)
        outside = ~frame.geometry.intersects(bounds).to_numpy()
        ids = np.full(len(frame), -1, dtype=np.int64)
        ids[~outside] = _objects_of(run, table, frame[~outside])
        missed = ids == -1
        if missed.any():
            raise InputError(f"{path}: {int(missed.sum())} of {len(frame)} label(s) fall outside the run's scene or on "
                             f"its no-data (scene bounds {tuple(round(v, 1) for v in run.grid.bounds)} in "
                             f"{run.grid.crs.to_string()}); check the file is for the run {run.folder}")
        answers += [Answer(int(i), int(v), None, reviewer, f"file:{path.name}") for i, v in zip(ids, values, strict=True)]
    return answers


# --- refine ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RefineResult:
    """Where the refined run is, and its record (the content of its run.json)."""

    out_dir: Path
    record: dict[str, Any]


def _one_class_error(run: ReviewRun, answers: dict[int, int]) -> InputError:
    if not answers:
        return InputError(f"{run.folder}: no object reviewed yet; give --labels FILE (fill the label field of "
                          "`deltacd review RUN --suggest N -o FILE.gpkg` in QGIS) or answer objects in the review map")
    seen = sorted(set(answers.values()))
    if run.kind == "damage":
        return InputError(f"{run.folder}: the reviews hold only grade {seen} ({len(answers)} objects); review buildings "
                          "of at least two different grades, then refine again")
    only = {0: "no change", 1: "change"}.get(seen[0], str(seen[0])) if seen else "nothing"
    return InputError(f"{run.folder}: the reviews hold only '{only}' ({len(answers)} objects); review at least one "
                      "change and one no-change object, then refine again")


def refine(run_dir: str | Path, labels: Sequence[str | Path] = (), out_dir: str | Path | None = None, *,
           reviewer: str = "", overwrite: bool = False, seed: int = 0, groups: Sequence[str] | None = None,
           progress: Callable[[str, int, int], None] | None = None, pseudo_labels: bool = False,
           embeddings: str | None = None) -> RefineResult:
    """Merge ``labels`` into the run's review store, train the classifier on every reviewed object, write ``out_dir``.

    Parameters
    ----------
    run_dir
        A detect or damage run folder.
    labels
        Label files (points or polygons in any CRS, integer field ``label``: 1 change / 0 no change,
        or the damage grade 0-3; empty labels are skipped); none: the answers already in the store.
    out_dir
        The refined run: the files of the run it refines (detect: ``change_score.tif`` holding each
        object's change probability, ``change_mask.tif``, ``changes.gpkg`` with a ``probability`` per
        polygon; damage: ``buildings.gpkg`` with refined grades and probabilities, ``damage.tif``,
        ``summary.csv``), QGIS styles, quicklook, backdrops, ``run.json`` with the reviews, the
        cross-validated accuracy with its bootstrap interval and the feature importances.
        Staged and published at once, like every run.
    reviewer
        Recorded with the answers of ``labels``.
    embeddings
        Detect runs: an encoder spec (e.g. ``efficientnet_lite0:imagenet``) whose embeddings of each object are
        added to its features (:mod:`deltacd.review.embeddings`; off by default: they paid on LEVIR only).
    pseudo_labels
        Detect runs: also train on pseudo-labels, the objects at the confident extremes of the run's
        score (:mod:`deltacd.review.pseudo`), while the answers hold fewer than two classes; with them
        a run can be refined with no answer at all. Off by default: with no answer they beat the plain
        CVA map on 3 of 5 data sets but not on average (``benchmarks/results/pseudo_labels.md``).

    Raises
    ------
    DeltacdError
        Bad input, with one line naming the file and the fix; the review store is then untouched
        and nothing is written.
    """
    if out_dir is None:
        raise InputError("refine: give the output folder (-o OUT)")
    run = ReviewRun(run_dir)
    label_paths = [Path(p) for p in labels]
    job = Run(out_dir, kind="refine", inputs=(run.folder, *label_paths), overwrite=overwrite)
    started = time.perf_counter()
    with job.timings.stage("objects and features"):
        table = review_table(run, embeddings, progress=None if progress is None else lambda d, t: progress("features", d, t))
    store = ReviewStore(run.folder, run.grid.crs, kind=run.kind)
    with job.timings.stage("labels"):
        new = read_labels(run, table, label_paths, reviewer=reviewer)
        known = set(table.ids.tolist())
        merged = {k: v for k, v in store.latest().items() if k in known}
        merged.update({a.object_id: a.answer for a in new})
        model, pseudo = None, {}
        if pseudo_labels and run.kind == "detect" and len(set(merged.values())) < 2:
            model, pseudo = pseudo_model(table, run.threshold, merged, seed=seed, groups=groups)
        if model is None and len(set(merged.values())) < 2:
            raise _one_class_error(run, merged)
    if new:
        added = np.array([a.object_id for a in new], dtype=np.int64)
        geoms = run.polygons(added, table.boxes[table.rows(added)]).geometry
        store.add(Answer(a.object_id, a.answer, geoms.get(a.object_id), a.reviewer, a.source) for a in new)
    with job.timings.stage("train"):
        model = model or train(table, merged, seed=seed, groups=groups)
        assert model is not None
        cv = cross_validate(table, merged, seed=seed, groups=groups)
        features, _ = table.select(groups)
        use_classifier, which_map = classifier_beats_base(table, merged, cv)
    review = {"objects_reviewed": len(merged), "answers_added": len(new), "store": str(store.path),
              "per_class": {str(c): int(sum(1 for v in merged.values() if v == c)) for c in run.classes},
              "classifier": f"scikit-learn RandomForestClassifier ({TREES} trees, balanced classes)",
              "cross_validated": cv, "map_outside_reviews": which_map, "feature_importances": model.importances(),
              "features": len(model.names), "objects": len(table)}
    if pseudo:
        review["pseudo_labels"] = {"change": sum(pseudo.values()), "no_change": len(pseudo) - sum(pseudo.values()),
                                   "rule": "confident extremes of the run's score (deltacd.review.pseudo)"}
    with job:
        if run.kind == "damage":
            record = _write_damage(run, table, model, features, merged, review, job)
        else:
            record = _write_detect(run, table, model, features, merged, review, job, progress,
                                   keep_base=not use_classifier)
        job.write_record(record)
    log.info("refined %s from %d reviews in %.1f s", run.folder, len(merged), time.perf_counter() - started)
    return RefineResult(Path(out_dir), record)


class _MaskSink:
    def __init__(self, writer: RasterWriter, edges):
        self.writer, self.edges, self.changed = writer, edges, 0

    def __call__(self, window, values) -> None:
        self.writer.write(window, values)
        self.edges.add(window, values)
        self.changed += int(np.count_nonzero(values == 1))


def _write_detect(run: ReviewRun, table: ObjectTable, model: Model, features: np.ndarray, answers: dict[int, int],
                  review: dict[str, Any], job: Run, progress, *, keep_base: bool = False) -> dict[str, Any]:
    """The refined detect run in ``job``'s staging folder; ``keep_base``: the base run's own mask outside the reviewed
    objects (:func:`~deltacd.review.classifier.classifier_beats_base`), else the classifier's."""
    from deltacd.outputs.backdrop import write_backdrops
    from deltacd.outputs.quicklook import ChangeEdges, write_quicklook
    from deltacd.postprocess.polygons import CleanUp, change_regions, rescue_pixels

    staged = DetectOutputs(job.staging)
    grid, seg = run.grid, run.segmentation
    with job.timings.stage("predict"):
        probability = model.change_probability(features).astype(np.float32)
        rows = table.rows(list(answers))  # a reviewed object is what the analyst said
        probability[rows] = np.array([1.0 if v == 1 else 0.0 for v in answers.values()], dtype=np.float32)
    options = run.record.get("options", {})
    cleanup = CleanUp(float(options.get("min_area_m2", 0.0)), 0)
    reviewed = np.fromiter(answers, dtype=np.int64)
    with rasterio.open(run.layout.mask) as base_mask, RasterWriter(staged.score, grid, dtype="float32", nodata=float("nan"),
                      description="probability of change, refined from the analyst's reviews") as score, \
            RasterWriter(staged.mask, grid, dtype="uint8", nodata=MASK_NODATA, description="1 = change, 0 = no change",
                         overview_resampling="nearest") as mask:
        with job.timings.stage("probability raster"):
            for index, window in enumerate(seg.blocks()):
                ids = run.read_ids(window)
                values = np.full(ids.shape, np.nan, dtype=np.float32)
                ok = ids >= 0
                if ok.any():  # a block's objects are ids index * PER_BLOCK + k: a table of PER_BLOCK values
                    low = index * PER_BLOCK
                    first, last = np.searchsorted(table.ids, [low, low + PER_BLOCK])
                    lut = np.zeros(PER_BLOCK, dtype=np.float32)
                    lut[table.ids[first:last] - low] = probability[first:last]
                    values[ok] = lut[ids[ok] - low]
                    if keep_base:  # the base run's own mask outside the reviewed objects (classifier_beats_base)
                        base = base_mask.read(1, window=window)
                        outside = ok & ~np.isin(ids, reviewed)
                        values[outside] = np.where(base[outside] == MASK_NODATA, np.nan, (base[outside] == 1))
                score.write(window, values)
            score.seal()
        sink = _MaskSink(mask, ChangeEdges(grid))
        with job.timings.stage("polygons and mask"):
            regions = change_regions(score.read, grid, DECISION, cleanup, mask_block=sink, nodata=MASK_NODATA)
            sink.changed += rescue_pixels(mask.read, mask.write, regions.rescued)
            for window, pixels in regions.rescued:
                sink.edges.add_pixels(window, pixels)
            polygons = regions.polygons.rename(columns={"mean_score": "probability", "max_score": "max_probability"})
            write_layer(polygons, staged.polygons, DetectOutputs.layer)

        def pictures() -> None:  # reads the pair, not the rasters being finished: runs beside the COGs
            with run_pair(run) as pair:
                write_backdrops(pair, staged.folder, shift_px=pair.after_shift)
                write_quicklook(pair, sink.edges, staged.quicklook, polygons=len(polygons),
                                title=f"refined from {len(answers)} reviews: {len(polygons)} changes")

        drawn = job.submit("quicklook and backdrops", pictures)
        with job.timings.stage("cog"):
            score.finish()
            mask.finish()
    write_styles(staged.folder, {DetectOutputs.MASK: lambda _: MASK_STYLE,
                                 SCORE: lambda _: ramp_qml(0.0, 1.0, label="probability of change")},
                 {(DetectOutputs.POLYGONS, DetectOutputs.layer): outline_qml()})
    drawn.result()
    valid = int(table.pixels.sum())
    record = job.record(
        run.record.get("inputs", {}) | {"refined_run": str(run.folder.resolve())},
        grid=grid.describe(), bands=run.record.get("bands"),
        options=run.record.get("options"),  # the pair's settings: the refined run reads its pair as the run did
        coregistration=run.record.get("coregistration"), radiometry=run.record.get("radiometry"),
        method={"name": "refine", "base_method": run.record.get("method"), "score_units": "probability of change",
                "objects": seg.describe() | {"count": len(table)}},
        threshold={"value": DECISION, "rule": "object probability of change",
                   "fraction_of_pixels_above": sink.changed / valid if valid else None},
        review=review,
        results={"valid_pixels": valid, "changed_pixels": sink.changed,
                 "changed_fraction": sink.changed / valid if valid else None,
                 "changed_area_ha": sink.changed * grid.pixel_area_m2 / 1e4, "polygons": len(polygons)},
        outputs={"score": SCORE, "mask": DetectOutputs.MASK, "polygons": DetectOutputs.POLYGONS,
                 "quicklook": staged.quicklook.name},
    )
    return record


def _write_damage(run: ReviewRun, table: ObjectTable, model: Model, features: np.ndarray, answers: dict[int, int],
                  review: dict[str, Any], job: Run) -> dict[str, Any]:
    from deltacd.damage.pipeline import write_damage_raster, write_summary
    from deltacd.outputs.backdrop import write_backdrops
    from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS, GRADES
    from deltacd.outputs.layout import DAMAGE_NODATA
    from deltacd.outputs.quicklook import write_damage_quicklook

    staged = DamageOutputs(job.staging)
    buildings = run.buildings()
    p = model.probabilities(features)
    grade = model.classes[np.argmax(p, axis=1)].astype(np.int16)
    rows = table.rows(list(answers))
    grade[rows] = np.array(list(answers.values()), dtype=np.int16)
    refined = buildings.loc[table.ids].copy()
    refined["damage_grade"] = grade
    refined["damage_label"] = [GRADE_LABELS[int(g)] for g in grade]
    for k, name in zip(GRADES, ("p_no_damage", "p_minor", "p_major", "p_destroyed"), strict=True):
        column = p[:, list(model.classes).index(k)] if k in model.classes else np.zeros(len(p))
        column[rows] = (grade[rows] == k).astype(float)
        refined[name] = np.round(column, 4)
    refined["reviewed"] = np.isin(table.ids, np.array(list(answers), dtype=np.int64))
    refined = refined.reset_index(drop=True)
    with job.timings.stage("outputs"):
        write_layer(refined, staged.buildings, DamageOutputs.layer)
        write_damage_raster(staged.damage, run.grid, refined)
        if run.layout.score.is_file():
            shutil.copyfile(run.layout.score, staged.score)
        legend = {g: (GRADE_LABELS[g], GRADE_COLOURS[g]) for g in GRADE_COLOURS}
        write_styles(staged.folder, {DamageOutputs.DAMAGE: lambda _: paletted_qml(
            {**{g: legend[g] for g in GRADES}, DAMAGE_NODATA: ("no building", "#000000")}, transparent=(DAMAGE_NODATA,))},
            {(DamageOutputs.BUILDINGS, DamageOutputs.layer): categorized_qml("damage_grade", legend)})
        for qml in run.folder.glob("change_score.qml"):
            shutil.copyfile(qml, staged.folder / qml.name)
        summary = write_summary(staged.summary, refined, None, None)
        with run_pair(run) as pair:
            write_damage_quicklook(pair, refined, staged.quicklook, title=f"refined from {len(answers)} reviews")
            write_backdrops(pair, staged.folder, shift_px=pair.after_shift)
    return job.record(
        run.record.get("inputs", {}) | {"refined_run": str(run.folder.resolve())},
        grid=run.grid.describe(), bands=run.record.get("bands"), options=run.record.get("options"),
        coregistration=run.record.get("coregistration"), radiometry=run.record.get("radiometry"),
        method={"name": "refine", "base_method": run.record.get("method")}, review=review, results=summary,
        outputs={"buildings": DamageOutputs.BUILDINGS, "damage": DamageOutputs.DAMAGE, "summary": DamageOutputs.SUMMARY,
                 "quicklook": staged.quicklook.name},
    )


__all__ = ["Model", "RefineResult", "choose", "cross_validate", "make_classifier", "read_labels", "refine", "suggest",
           "suggestion_qml", "train", "write_suggestions"]
