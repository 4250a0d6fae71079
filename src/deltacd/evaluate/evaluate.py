"""``evaluate``: accuracy of a change map on the user's own area, at pixel, object and area level.

A change map (deltacd's ``change_mask.tif`` or any 0/1 raster, or a class raster) is compared
with the user's reference (a raster or polygons, see :mod:`deltacd.evaluate.reference` for how
each is put on the map's grid). Everything is read window by window; what is accumulated:

* **pixels**: one :class:`~deltacd.evaluate.metrics.ConfusionMatrix`, plus one matrix per
  ``block_size`` block for 95 % block-bootstrap confidence intervals
  (:func:`~deltacd.evaluate.metrics.block_bootstrap_ci_from_blocks`; Olofsson et al. 2014,
  doi:10.1016/j.rse.2014.02.015, on why accuracy needs intervals);
* **score** (optional ``change_score.tif``): histograms of the score over changed and unchanged
  reference pixels, giving the precision-recall curve and F1 against the threshold. The mask's
  own threshold (given, or read from ``run.json`` beside the mask) is one of the bin edges, so the
  curve passes exactly through the mask's scores when the mask is the thresholded score;
* **strata** (optional, e.g. land cover at date 1): one matrix per stratum, with intervals;
* **objects** (binary change only): reference objects found at IoU >= 0.5 (or the "overlap"
  rule) and object precision, via :mod:`deltacd.evaluate.objects`. Objects must never be cut by
  window borders, so on grids below :data:`LABEL_WHOLE_GRID_MAX_PIXELS` (50 MP) both maps are
  read whole and labelled once (4-connected components, the connectivity of deltacd's polygons;
  peak memory about 30 bytes per pixel, 1.5 GB at 50 MP); on larger grids objects are polygons
  (reference polygons as given, ``changes.gpkg`` beside the mask, or maps vectorised block by
  block with merging across blocks, :func:`deltacd.postprocess.polygons.vectorise_changes`), and
  IoU is the polygons' geometric IoU (equal to the pixel IoU for pixel-derived polygons).
  Predicted objects are the polygons of ``changes.gpkg`` when it sits beside a
  ``change_mask.tif``, else the connected components of the mask;
* **areas**: hectares found / missed / false, reference and mapped change
  (:func:`~deltacd.evaluate.metrics.area_stats`; map areas, not bias-corrected estimates).

Outputs (written to a temporary folder renamed at the end): ``metrics.json`` (everything, with
intervals), ``metrics.csv`` (one row per metric / class / stratum), ``confusion_matrix.png``,
``pr_curve.png`` and ``f1_threshold.png`` (with a score), ``objects.csv`` (one row per reference
object).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from pydantic import Field, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from rasterio.windows import Window
from scipy import ndimage

from deltacd._version import __version__
from deltacd.config import STRICT, build_options
from deltacd.errors import InputError
from deltacd.evaluate.metrics import (
    AreaStats,
    BootstrapCI,
    ConfusionMatrix,
    PRCurve,
    ScoreHistogram,
    area_stats,
    block_bootstrap_ci_from_blocks,
    block_confusion_matrices,
    default_bin_edges,
)
from deltacd.evaluate.objects import (
    OBJECT_TABLE_DTYPE,
    ObjectScores,
    best_match,
    detection_rates,
    label_objects,
    object_scores,
    rasterize_objects,
)
from deltacd.evaluate.reference import (
    LabelCoding,
    LabelSource,
    PolygonLabels,
    RasterLabels,
    binary_coding,
    class_coding,
    normalise_classes,
    open_labels,
    read_windows,
    scan_values,
)
from deltacd.io.grid import Grid
from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.records import to_json_value, write_json
from deltacd.postprocess.polygons import CleanUp, vectorise_changes

log = logging.getLogger(__name__)

__all__ = ["LABEL_WHOLE_GRID_MAX_PIXELS", "EvaluateOptions", "EvaluationResult", "evaluate", "open_prediction_grid"]

#: Grids up to this many pixels are labelled whole for object scores; larger ones use polygons.
LABEL_WHOLE_GRID_MAX_PIXELS = 50_000_000

#: Binary scores that get a confidence interval.
BINARY_CI_METRICS = ("f1", "precision", "recall", "iou", "kappa", "accuracy")
#: Multi-class scores that get a confidence interval (plus the F1 of each class).
CLASS_CI_METRICS = ("accuracy", "kappa", "macro_f1", "mean_iou")


METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
OBJECTS_CSV = "objects.csv"
CONFUSION_PNG = "confusion_matrix.png"
PR_PNG = "pr_curve.png"
F1_PNG = "f1_threshold.png"

#: deltacd's own file names, to find ``changes.gpkg`` / ``run.json`` beside a mask.
_DELTACD_MASK = "change_mask.tif"
_DELTACD_POLYGONS = "changes.gpkg"
_DELTACD_RUN = "run.json"


@pydantic_dataclass(frozen=True, config=STRICT)
class EvaluateOptions:
    """Every option of :func:`evaluate` (the CLI flags and YAML keys are these names).

    Attributes
    ----------
    reference_kind
        ``"auto"`` (polygons for .gpkg/.geojson/.shp..., else raster), ``"raster"`` or ``"polygons"``.
    classes
        Class codes (list) or code -> name (mapping) of a class map; None for binary change.
    reference_field
        Class field of reference polygons (None: inside = change, outside = no change).
    strata_field
        Class field of strata polygons.
    all_touched
        Rasterise polygons with GDAL's all-touched rule instead of the pixel-centre rule.
    threshold
        Score threshold the mask was made with (change where score >= threshold); None: read
        ``run.json`` beside the mask (deltacd's rule, score > threshold) when there is one.
    block_size
        Side of the bootstrap blocks (pixels).
    read_size
        Side of the windows read at once (a multiple of ``block_size``; default about 2048).
    n_boot, seed
        Bootstrap replicates and seed.
    object_rule, iou_threshold, overlap_threshold
        Object matching rule and its threshold (see :mod:`deltacd.evaluate.objects`).
    ignore_value
        Value of unlabelled pixels in rasters without a nodata tag (both maps).
    score_bins
        Number of score bins of the PR curve (thresholds).
    figures
        Write the PNG figures.
    """

    reference_kind: Literal["auto", "raster", "polygons"] = "auto"
    classes: list[int] | dict[int, str] | None = None
    reference_field: str | None = None
    strata_field: str | None = None
    all_touched: bool = False
    threshold: float | None = None
    block_size: PositiveInt = 256
    read_size: PositiveInt | None = None
    n_boot: Annotated[int, Field(ge=2)] = 1000
    seed: int = 0
    object_rule: Literal["iou", "overlap"] = "iou"
    iou_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    overlap_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    ignore_value: int | None = 255
    score_bins: Annotated[int, Field(ge=10, le=100_000)] = 2000
    figures: bool = True


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """What :func:`evaluate` measured, and where it wrote it.

    Attributes
    ----------
    out_dir : Path
    metrics : dict
        The content of ``metrics.json``.
    confusion : ConfusionMatrix
        Pixel matrix (rows = reference), classes in :attr:`class_names` order.
    class_names : tuple of str
    intervals : dict of str -> BootstrapCI
        95 % block-bootstrap intervals of the pixel scores.
    objects : ObjectScores or None
        Object scores (binary change only).
    areas : AreaStats or None
        Found / missed / false areas (binary change only).
    pr_curve : PRCurve or None
        With a score.
    strata : dict of int -> ConfusionMatrix
        Pixel matrix per stratum code.
    """

    out_dir: Path
    metrics: dict[str, Any]
    confusion: ConfusionMatrix
    class_names: tuple[str, ...]
    intervals: dict[str, BootstrapCI]
    objects: ObjectScores | None = None
    areas: AreaStats | None = None
    pr_curve: PRCurve | None = None
    strata: dict[int, ConfusionMatrix] = field(default_factory=dict)

    @property
    def metrics_json(self) -> Path:
        return self.out_dir / METRICS_JSON

    @property
    def metrics_csv(self) -> Path:
        return self.out_dir / METRICS_CSV

    @property
    def objects_csv(self) -> Path:
        return self.out_dir / OBJECTS_CSV


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def open_prediction_grid(path: str | Path, *, what: str = "prediction") -> Grid:
    """The grid of a map that others are read onto; it must be a georeferenced raster.

    Raises
    ------
    MissingInputError, InputError
    """
    from deltacd.errors import MissingInputError

    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such {what} file; check the path")
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise InputError(
                    f"{path}: {what} has no georeferencing (CRS/transform); write it as a GeoTIFF with both "
                    "(deltacd's change_mask.tif has them)"
                )
            return Grid.of(ds)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: cannot read the {what} as a raster ({exc}); give a GeoTIFF") from exc


class _ScoreRaster:
    """A float score on exactly the prediction's grid (NaN and nodata = no score)."""

    def __init__(self, path: Path, grid: Grid, grid_name: str) -> None:
        self.path = path
        try:
            self._ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"{path}: cannot read the score as a raster ({exc}); give change_score.tif") from exc
        if self._ds.crs is None:
            self._ds.close()
            raise InputError(f"{path}: score has no georeferencing; give the change_score.tif written with the mask")
        try:
            Grid.of(self._ds).check_same(grid, names=(str(path), grid_name))
        except InputError:
            self._ds.close()
            raise

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self._ds.read(1, window=window, out_dtype="float64")
        return values, (self._ds.read_masks(1, window=window) > 0) & np.isfinite(values)

    def close(self) -> None:
        self._ds.close()


def _mask_threshold(prediction: Path, given: float | None, have_score: bool) -> tuple[float | None, str | None, bool]:
    """(threshold, where it came from, strict) — strict: the mask is ``score > t`` (deltacd's rule)."""
    if given is not None:
        return float(given), "given", False
    run = prediction.parent / _DELTACD_RUN
    if have_score and prediction.name == _DELTACD_MASK and run.exists():
        try:
            value = json.loads(run.read_text())["threshold"]["value"]
            return float(value), str(run), True
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            log.warning("%s: no threshold found; the PR curve is drawn without the mask's threshold", run)
    return None, None, False


def _score_edges(lo: float, hi: float, n_bins: int, threshold: float | None, strict: bool) -> tuple[np.ndarray, float | None]:
    """Bin edges over the score range, with the mask's threshold as an edge.

    With ``strict`` (mask = score > t, scores float32) the edge is the smallest float32 above t,
    so "score >= edge" selects exactly the pixels the mask selected.
    """
    if 0.0 <= lo and hi <= 1.0:
        edges = default_bin_edges() if n_bins == 1000 else np.linspace(0.0, 1.0, n_bins + 1)
    else:
        top = hi + max(abs(hi), 1.0) * 1e-9 if hi > lo else lo + 1.0
        edges = np.linspace(lo, top, n_bins + 1)
    edge = None
    if threshold is not None and math.isfinite(threshold):
        edge = float(threshold)
        if strict:
            f = np.float32(threshold)
            edge = float(f) if float(f) > threshold else float(np.nextafter(f, np.float32(np.inf)))
        if edges[0] < edge < edges[-1] and edge not in edges:
            edges = np.sort(np.append(edges, edge))
    return edges, edge


def _changes_gpkg(prediction: Path) -> Path | None:
    candidate = prediction.parent / _DELTACD_POLYGONS
    return candidate if prediction.name == _DELTACD_MASK and candidate.exists() else None


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def evaluate(
    prediction: str | Path,
    reference: str | Path,
    out_dir: str | Path,
    *,
    score: str | Path | None = None,
    reference_kind: Literal["auto", "raster", "polygons"] = "auto",
    classes: Sequence[int] | Mapping[int, str] | None = None,
    strata: str | Path | None = None,
    reference_field: str | None = None,
    strata_field: str | None = None,
    all_touched: bool = False,
    threshold: float | None = None,
    block_size: int = 256,
    read_size: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    object_rule: Literal["iou", "overlap"] = "iou",
    iou_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    ignore_value: int | None = 255,
    score_bins: int = 2000,
    figures: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Accuracy of a change map against a reference, written to ``out_dir``.

    Parameters
    ----------
    prediction
        Change mask raster: deltacd's ``change_mask.tif`` (1 change, 0 no change, 255 nodata), any
        0/1 or 0/255 raster, or, with ``classes``, a class raster. Its grid is the evaluation grid.
    reference
        Raster (0/1 or 0/255 mask, or class codes; its nodata tag is respected; another grid or
        CRS is warped onto the prediction's with nearest resampling) or polygons (GeoPackage,
        GeoJSON, Shapefile; rasterised on the prediction's grid window by window: a pixel is in a
        polygon when its **centre** is, or with ``all_touched=True`` when the polygon touches it;
        without ``reference_field`` pixels inside a polygon are change and all others no change,
        so clip the prediction to the area the polygons describe completely).
    out_dir
        Output folder; must not exist unless ``overwrite``.
    score
        Optional score raster on the prediction's grid (``change_score.tif``) for the PR curve
        and F1 against threshold (binary change only).
    reference_kind, classes, reference_field, strata_field, all_touched, threshold, block_size,
    read_size, n_boot, seed, object_rule, iou_threshold, overlap_threshold, ignore_value,
    score_bins, figures
        See :class:`EvaluateOptions`.
    strata
        Optional strata raster (codes) or polygons with ``strata_field`` (e.g. land cover at
        date 1): scores are also given per stratum.
    overwrite
        Replace an existing ``out_dir`` once the new one is complete.
    progress
        ``progress(done, total)`` over the windows of the main pass.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InputError
        Unreadable or non-overlapping inputs (both files named), no reference polygon, values
        not among the declared classes (listed), a score on another grid; nothing is written.
    OutputError
        ``out_dir`` exists and ``overwrite`` is False.
    """
    opts = build_options(
        EvaluateOptions,
        dict(
            reference_kind=reference_kind, classes=classes, reference_field=reference_field, strata_field=strata_field,
            all_touched=all_touched, threshold=threshold, block_size=block_size, read_size=read_size, n_boot=n_boot,
            seed=seed, object_rule=object_rule, iou_threshold=iou_threshold, overlap_threshold=overlap_threshold,
            ignore_value=ignore_value, score_bins=score_bins, figures=figures,
        ),
        source="evaluate options",
    )
    prediction, out_dir = Path(prediction), Path(out_dir)
    inputs = input_paths(prediction, reference, score, strata)
    check_output(out_dir, overwrite=overwrite, inputs=inputs)
    declared = normalise_classes(opts.classes)
    bs = opts.block_size
    rs = opts.read_size or bs * max(1, 2048 // bs)
    if rs % bs:
        raise InputError(f"read_size: got {rs}, expected a multiple of block_size ({bs}); e.g. {bs * max(1, rs // bs)}")

    grid = open_prediction_grid(prediction)
    windows = read_windows(grid, rs)
    with ExitStack() as stack:
        pred = stack.enter_context(RasterLabels(prediction, grid, what="prediction", grid_name=str(prediction)))
        ref = stack.enter_context(
            open_labels(reference, grid, what="reference", grid_name=str(prediction), kind=opts.reference_kind,
                        field=opts.reference_field, all_touched=opts.all_touched)
        )
        if declared is not None and isinstance(ref, PolygonLabels) and ref.field is None:
            raise InputError(f"{reference}: class polygons need reference_field= (the field holding each polygon's class)")

        # codings are decided on the whole layers, so every window is decoded the same way
        pred_counts = scan_values(pred, windows)
        ref_counts = scan_values(ref, windows)
        if declared is None:
            pred_coding = binary_coding(pred_counts, ignore_value=opts.ignore_value, where=f"{prediction} (prediction)")
            ref_coding = binary_coding(ref_counts, ignore_value=opts.ignore_value, where=f"{reference} (reference)")
        else:
            pred_coding = class_coding(pred_counts, declared, ignore_value=opts.ignore_value, where=f"{prediction} (prediction)")
            ref_coding = class_coding(ref_counts, declared, ignore_value=opts.ignore_value, where=f"{reference} (reference)")
        binary = declared is None
        k = ref_coding.n_classes

        scorer = None
        edges = mask_edge = None
        thr, thr_source, strict = None, None, False
        if score is not None:
            if not binary:
                raise InputError(f"{score}: a score needs a binary change reference; drop score= or classes=")
            scorer = _ScoreRaster(Path(score), grid, str(prediction))
            stack.callback(scorer.close)
            thr, thr_source, strict = _mask_threshold(prediction, opts.threshold, True)
            lo, hi = math.inf, -math.inf
            for window in windows:
                values, ok = scorer.read(window)
                if ok.any():
                    lo, hi = min(lo, float(values[ok].min())), max(hi, float(values[ok].max()))
            if not math.isfinite(lo):
                raise InputError(f"{score}: the score has no valid pixel; give the change_score.tif of this mask")
            edges, mask_edge = _score_edges(lo, hi, opts.score_bins, thr, strict)

        strata_src = strata_coding = None
        if strata is not None:
            strata_src = stack.enter_context(
                open_labels(strata, grid, what="strata", grid_name=str(prediction), field=opts.strata_field,
                            all_touched=opts.all_touched)
            )
            if isinstance(strata_src, PolygonLabels) and strata_src.field is None:
                raise InputError(f"{strata}: strata polygons need strata_field= (the field holding each polygon's stratum)")
            strata_coding = _codes_coding(scan_values(strata_src, windows), strata_src, where=f"{strata} (strata)")

        # ---- main pass -------------------------------------------------------------------
        blocks: list[np.ndarray] = []
        hist = ScoreHistogram(edges) if scorer is not None else None
        n_strata = strata_coding.n_classes if strata_coding else 0
        strata_blocks: list[list[np.ndarray]] = [[] for _ in range(n_strata)]
        for done, window in enumerate(windows, start=1):
            p, pv = pred_coding.apply(*pred.read(window))
            r, rv = ref_coding.apply(*ref.read(window))
            valid = pv & rv
            b = block_confusion_matrices(p, r, n_classes=k, block_size=bs, valid=valid)
            blocks.append(b)
            if hist is not None:
                s, sv = scorer.read(window)
                hist.update(s, r, valid & sv)
            if strata_src is not None:
                st, stv = strata_coding.apply(*strata_src.read(window))
                inside = valid & stv
                for i in np.unique(st[inside]):
                    strata_blocks[int(i)].append(
                        block_confusion_matrices(p, r, n_classes=k, block_size=bs, valid=inside & (st == i))
                    )
            if progress is not None:
                progress(done, len(windows))
        block_counts = np.concatenate(blocks) if blocks else np.zeros((0, k, k), np.int64)
        cm = ConfusionMatrix(k, counts=block_counts.sum(axis=0))
        if cm.n_pixels == 0:
            raise InputError(
                f"{prediction} and {reference}: no pixel is labelled in both (nodata everywhere they overlap); "
                "check the nodata values and the extent of the reference"
            )
        ci_metrics = BINARY_CI_METRICS if binary else CLASS_CI_METRICS
        intervals = _intervals(block_counts, ci_metrics, k, binary, opts, ref_coding.names)

        strata_cms: dict[int, ConfusionMatrix] = {}
        strata_out: dict[str, Any] = {}
        for i in range(n_strata):
            sb = np.concatenate(strata_blocks[i]) if strata_blocks[i] else np.zeros((0, k, k), np.int64)
            scm = ConfusionMatrix(k, counts=sb.sum(axis=0) if sb.size else None)
            code = strata_coding.codes[i]
            strata_cms[code] = scm
            strata_out[str(code)] = {
                "name": strata_coding.names[i],
                "pixels": scm.n_pixels,
                "area_ha": scm.n_pixels * grid.pixel_area_m2 / 1e4,
                "scores": scm.scores_dict(class_names=list(ref_coding.names)),
                "ci": {m: c.to_dict() for m, c in _intervals(sb, ci_metrics, k, binary, opts, ref_coding.names).items()},
            }

        # ---- objects and areas -----------------------------------------------------------
        objects = objects_table = None
        objects_info: dict[str, Any] | None = None
        areas = None
        if binary:
            areas = area_stats(cm, grid.pixel_area_m2)
            objects, objects_table, objects_info = _objects(pred, ref, pred_coding, ref_coding, grid, prediction, opts)

        # ---- score curves ------------------------------------------------------------------
        curve = None
        score_out: dict[str, Any] | None = None
        if hist is not None:
            curve = hist.pr_curve()
            best_t, best_f1 = hist.best_f1_threshold()
            score_out = {
                "path": str(score),
                "bins": int(edges.size - 1),
                "range": [float(edges[0]), float(edges[-1])],
                "mask_threshold": thr,
                "mask_threshold_source": thr_source,
                "mask_rule": None if thr is None else ("score > threshold" if strict else "score >= threshold"),
                "best_f1": best_f1,
                "best_f1_threshold": best_t,
                "average_precision": _average_precision(curve),
                "note": "a threshold tuned on the evaluation data gives an optimistic F1; tune on another area",
            }
            if mask_edge is not None:
                i = int(np.flatnonzero(curve.thresholds == mask_edge)[0]) if (curve.thresholds == mask_edge).any() else None
                if i is not None:
                    score_out.update(
                        f1_at_mask_threshold=float(curve.f1[i]),
                        precision_at_mask_threshold=float(curve.precision[i]),
                        recall_at_mask_threshold=float(curve.recall[i]),
                    )

        metrics = {
            "deltacd_version": __version__,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "inputs": {
                "prediction": {"path": str(prediction), "coding": pred_coding.description},
                "reference": ref.describe() | {"coding": ref_coding.description},
                "score": None if score is None else str(score),
                "strata": None if strata_src is None else strata_src.describe(),
            },
            "grid": grid.describe() | {"pixel_area_m2": grid.pixel_area_m2},
            "options": _plain(opts),
            "classes": {"codes": list(ref_coding.codes), "names": list(ref_coding.names)},
            "pixel": cm.scores_dict(class_names=list(ref_coding.names)),
            "pixel_ci": {name: c.to_dict() for name, c in intervals.items()},
            "area": None if areas is None else areas.to_dict(),
            "area_per_class": None if binary else _class_areas(cm, ref_coding.names, grid.pixel_area_m2),
            "objects": objects_info,
            "score": score_out,
            "strata": strata_out or None,
        }
        metrics = to_json_value(metrics)

        with staged_output(out_dir, overwrite=overwrite, kind="evaluate", inputs=inputs) as staging:
            write_json(staging / METRICS_JSON, metrics)
            _write_csv(staging / METRICS_CSV, _csv_rows(metrics, binary))
            if objects_table is not None:
                _write_objects_csv(staging / OBJECTS_CSV, objects_table)
            if opts.figures:
                from deltacd.report import figures as fig

                fig.confusion_matrix_figure(cm.counts, ref_coding.names, staging / CONFUSION_PNG)
                if curve is not None:
                    point = (cm.recall, cm.precision)
                    fig.pr_curve_figure(curve, staging / PR_PNG, mask_point=point, best=(score_out["best_f1_threshold"], score_out["best_f1"]))
                    fig.f1_threshold_figure(curve, staging / F1_PNG, threshold=thr)
    log.info("evaluation written to %s", out_dir)
    return EvaluationResult(
        out_dir=out_dir, metrics=metrics, confusion=cm, class_names=ref_coding.names, intervals=intervals,
        objects=objects, areas=areas, pr_curve=curve, strata=strata_cms,
    )


def _codes_coding(counts: Mapping[Any, int], source: LabelSource, *, where: str) -> LabelCoding:
    """A coding whose classes are the integer codes a layer holds (strata, land cover)."""
    present = sorted(v for v, n in counts.items() if n)
    if not present:
        raise InputError(f"{where}: holds no labelled pixel; check its nodata value and extent")
    if not all(float(v).is_integer() for v in present):
        raise InputError(f"{where}: holds non-integer values; give integer class codes")
    codes = tuple(int(v) for v in present)
    names = getattr(source, "names", None) or {}
    return LabelCoding(codes, tuple(names.get(c, str(c)) for c in codes), "class codes")


def _intervals(
    block_counts: np.ndarray, names: Sequence[str], k: int, binary: bool, opts: EvaluateOptions, class_names: Sequence[str]
) -> dict[str, BootstrapCI]:
    """Block-bootstrap 95 % intervals; empty when there are fewer than 2 non-empty blocks."""
    if block_counts.shape[0] < 2:
        return {}
    out = {}
    for name in names:
        out[name] = block_bootstrap_ci_from_blocks(block_counts, n_boot=opts.n_boot, seed=opts.seed, metric=name, block_size=opts.block_size)
    if not binary:
        for i, cname in enumerate(class_names):
            out[f"f1_{cname}"] = block_bootstrap_ci_from_blocks(
                block_counts, n_boot=opts.n_boot, seed=opts.seed, metric="f1", positive_class=i, block_size=opts.block_size
            )
    return out


def _average_precision(curve: PRCurve) -> float | None:
    """Sum over thresholds of (recall step) x precision (the step-wise area under the PR curve)."""
    r = np.nan_to_num(curve.recall, nan=0.0)
    p = np.nan_to_num(curve.precision, nan=0.0)
    steps = r - np.append(r[1:], 0.0)  # recall falls as the threshold rises
    if r.size == 0 or r[0] == 0:
        return None
    return float((steps * p).sum())


def _class_areas(cm: ConfusionMatrix, names: Sequence[str], pixel_area_m2: float) -> dict[str, Any]:
    ha = pixel_area_m2 / 1e4
    c = cm.counts
    return {
        name: {"reference_ha": float(c[i].sum() * ha), "predicted_ha": float(c[:, i].sum() * ha), "agreed_ha": float(c[i, i] * ha)}
        for i, name in enumerate(names)
    }


# --------------------------------------------------------------------------------------------
# objects
# --------------------------------------------------------------------------------------------


def _change_polygons(ref: PolygonLabels, coding: LabelCoding) -> tuple[np.ndarray, np.ndarray]:
    """(geometries, source rows) of the reference polygons that mark change."""
    if ref.field is None:
        sel = np.ones(len(ref.values), dtype=bool)
    else:
        sel = ref.values == coding.codes[1]
    return ref.geometries[sel], ref.source_rows[sel]


def _objects(
    pred: RasterLabels,
    ref: LabelSource,
    pred_coding: LabelCoding,
    ref_coding: LabelCoding,
    grid: Grid,
    prediction: Path,
    opts: EvaluateOptions,
) -> tuple[ObjectScores, np.ndarray, dict[str, Any]]:
    """Object scores and the per-reference-object table (see the module notes for the two paths)."""
    gpkg = _changes_gpkg(prediction)
    pred_polys = None
    if gpkg is not None:
        pred_polys = gpd.read_file(gpkg, layer="changes")
        pred_polys = pred_polys.to_crs(grid.crs) if pred_polys.crs is not None else pred_polys.set_crs(grid.crs)
        pred_polys = pred_polys[pred_polys.geometry.notna() & ~pred_polys.geometry.is_empty]
    ref_polys = _change_polygons(ref, ref_coding) if isinstance(ref, PolygonLabels) else None
    whole = grid.width * grid.height <= LABEL_WHOLE_GRID_MAX_PIXELS
    if whole:
        scores, centres, rows = _objects_on_grid(pred, ref, pred_coding, ref_coding, grid, pred_polys, ref_polys, opts)
        method = "labels on the whole grid"
    else:
        scores, centres, rows = _objects_from_polygons(pred, ref, pred_coding, ref_coding, grid, pred_polys, ref_polys, opts)
        method = "polygons (grid above the whole-grid limit)"
    table = _reference_table(scores, centres, rows, grid.pixel_area_m2)
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


def polygon_object_scores(
    pred: np.ndarray, ref: np.ndarray, *, rule: Literal["iou", "overlap"], threshold: float, pixel_area_m2: float
) -> ObjectScores:
    """Object scores of two polygon sets from their geometric intersections (the large-grid path).

    The same rules as :func:`deltacd.evaluate.objects.object_scores`, with areas measured on the
    geometries (``area_px`` = area / pixel area, rounded). Covered fractions assume the polygons
    of one side do not overlap each other (true of vectorised masks), and are capped at 1.
    """
    n_r, n_p = len(ref), len(pred)
    area_r, area_p = shapely.area(ref) if n_r else np.zeros(0), shapely.area(pred) if n_p else np.zeros(0)
    if n_r and n_p:
        ri, pi = shapely.STRtree(pred).query(ref, predicate="intersects")
        inter = shapely.area(shapely.intersection(ref[ri], pred[pi]))
        keep = inter > 0
        ri, pi, inter = ri[keep], pi[keep], inter[keep]
    else:
        ri = pi = np.zeros(0, dtype=np.int64)
        inter = np.zeros(0)
    iou = inter / (area_r[ri] + area_p[pi] - inter) if inter.size else inter
    best_r, partner_r = best_match(ri, pi, iou, n_r)
    best_p, partner_p = best_match(pi, ri, iou, n_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov_r = np.minimum(np.bincount(ri, inter, minlength=n_r) / np.maximum(area_r, 1e-12), 1.0)
        cov_p = np.minimum(np.bincount(pi, inter, minlength=n_p) / np.maximum(area_p, 1e-12), 1.0)
    found_r, found_p = (best_r >= threshold, best_p >= threshold) if rule == "iou" else (cov_r >= threshold, cov_p >= threshold)

    def table(n, area, best, partner, cov, found):
        t = np.zeros(n, dtype=OBJECT_TABLE_DTYPE)
        t["id"] = np.arange(1, n + 1)
        t["area_px"] = np.round(area / pixel_area_m2).astype(np.int64)
        t["best_iou"], t["best_match_id"] = best, np.where(partner >= 0, partner + 1, 0)
        t["covered_fraction"], t["found"] = cov, found
        return t

    n_found, n_matched = int(found_r.sum()), int(found_p.sum())
    precision, recall, f1 = detection_rates(n_found, n_r, n_matched, n_p)
    return ObjectScores(
        rule=rule, threshold=float(threshold), connectivity=None, n_reference=n_r, n_predicted=n_p, n_found=n_found,
        n_matched=n_matched, precision=precision, recall=recall, f1=f1,
        reference_objects=table(n_r, area_r, best_r, partner_r, cov_r, found_r),
        predicted_objects=table(n_p, area_p, best_p, partner_p, cov_p, found_p),
    )


def _reference_table(scores: ObjectScores, centres: np.ndarray, rows: np.ndarray | None, pixel_area_m2: float) -> list[dict[str, Any]]:
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


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _plain(opts: EvaluateOptions) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(opts)


CSV_FIELDS = ("level", "metric", "class", "stratum", "value", "ci_low", "ci_high")


def _csv_rows(metrics: dict[str, Any], binary: bool) -> list[dict[str, Any]]:
    """One row per metric / class / stratum (values from metrics.json)."""
    rows: list[dict[str, Any]] = []
    names = metrics["classes"]["names"]

    def add(level, metric, value, cls="", stratum="", ci=None):
        rows.append({
            "level": level, "metric": metric, "class": cls, "stratum": stratum, "value": value,
            "ci_low": None if ci is None else ci.get("low"), "ci_high": None if ci is None else ci.get("high"),
        })

    def pixel_rows(scores: dict[str, Any], cis: dict[str, Any], stratum: str = ""):
        level = "stratum" if stratum else "pixel"
        for m in ("overall_accuracy", "kappa", "macro_f1", "mean_iou"):
            add(level, m, scores[m], "", stratum, cis.get("accuracy" if m == "overall_accuracy" else m))
        for c in names:
            for m in ("precision", "recall", "f1", "iou"):
                if binary:
                    ci = cis.get(m) if c == "change" else None  # binary intervals are those of the change class
                else:
                    ci = cis.get(f"f1_{c}") if m == "f1" else None
                add(level, m, scores[f"{m}_{c}"], c, stratum, ci)
        add(level, "n_pixels", scores["n_pixels"], "", stratum)

    pixel_rows(metrics["pixel"], metrics["pixel_ci"])
    if metrics["area"]:
        for m in ("found_ha", "missed_ha", "false_ha", "reference_ha", "predicted_ha"):
            add("area", m, metrics["area"][m], "change")
    if metrics["area_per_class"]:
        for c, d in metrics["area_per_class"].items():
            for m, v in d.items():
                add("area", m, v, c)
    if metrics["objects"]:
        o = metrics["objects"]
        for m in ("precision", "recall", "f1", "n_reference", "n_predicted", "n_found", "n_matched"):
            add("object", m, o[m], "change")
    if metrics["score"]:
        s = metrics["score"]
        for m in ("best_f1", "best_f1_threshold", "average_precision", "f1_at_mask_threshold", "mask_threshold"):
            if m in s:
                add("score", m, s[m], "change")
    for code, d in (metrics["strata"] or {}).items():
        pixel_rows(d["scores"], d["ci"], stratum=f"{code}" if d["name"] == code else f"{code} {d['name']}")
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _write_objects_csv(path: Path, table: list[dict[str, Any]]) -> None:
    fields = ("object_id", "source_row", "x", "y", "area_px", "area_m2", "best_iou", "best_match_id", "covered_fraction", "found")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
