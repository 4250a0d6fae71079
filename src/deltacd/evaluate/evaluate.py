"""``evaluate``: accuracy of a change map on the user's own area, at pixel, object and area level.

A change map (deltacd's ``change_mask.tif`` or any 0/1 raster, or a class raster) is compared
with the user's reference (a raster or polygons, see :mod:`deltacd.evaluate.reference` for how
each is put on the map's grid). Everything is read window by window; what is accumulated:

* **pixels**: one :class:`~deltacd.metrics.ConfusionMatrix`, plus one matrix per
  ``block_size`` block for 95 % block-bootstrap confidence intervals
  (:func:`~deltacd.metrics.block_bootstrap_ci_from_blocks`; Olofsson et al. 2014,
  doi:10.1016/j.rse.2014.02.015, on why accuracy needs intervals);
* **score** (optional ``change_score.tif``): histograms of the score over changed and unchanged
  reference pixels, giving the precision-recall curve and F1 against the threshold. The mask's
  own threshold (given, or read from ``run.json`` beside the mask) is one of the bin edges, so the
  curve passes exactly through the mask's scores when the mask is the thresholded score
  (:mod:`deltacd.evaluate.score`);
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
  ``change_mask.tif``, else the connected components of the mask (:mod:`deltacd.evaluate.scene_objects`);
* **areas**: hectares found / missed / false, reference and mapped change
  (:func:`~deltacd.metrics.area_stats`; map areas, not bias-corrected estimates).

Outputs (written to a temporary folder renamed at the end): ``metrics.json`` (everything, with
intervals), ``metrics.csv`` (one row per metric / class / stratum), ``confusion_matrix.png``,
``pr_curve.png`` and ``f1_threshold.png`` (with a score), ``objects.csv`` (one row per reference
object). This module holds the options, the main pass and the writing; the parts above live in
their own modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import rasterio
from pydantic import Field, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from rasterio.windows import Window

from deltacd._version import __version__
from deltacd.config import STRICT, build_options
from deltacd.errors import InputError
from deltacd.evaluate.objects import ObjectScores
from deltacd.evaluate.objects import polygon_object_scores  # noqa: F401  (importable from here, as before)
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
    window_side,
)
from deltacd.evaluate.scene_objects import scene_objects, write_objects_csv
from deltacd.evaluate.score import ScoreBins, ScoreRaster, bins_for_score, score_summary
from deltacd.evaluate.tables import CSV_FIELDS, csv_rows, write_csv  # noqa: F401  (CSV_FIELDS importable from here)
from deltacd.io.grid import Grid
from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.records import to_json_value, write_json
from deltacd.metrics import (
    AreaStats,
    BootstrapCI,
    ConfusionMatrix,
    PRCurve,
    ScoreHistogram,
    area_stats,
    block_bootstrap_ci_from_blocks,
    block_confusion_matrices,
)

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
    rs = window_side(opts.block_size, opts.read_size)
    grid = open_prediction_grid(prediction)
    windows = read_windows(grid, rs)
    with ExitStack() as stack:
        layers = _open_layers(stack, prediction, reference, score, strata, grid, windows, declared, opts)
        binary, names, k = declared is None, layers.ref_coding.names, layers.ref_coding.n_classes
        counts = _count(layers, windows, k, opts.block_size, progress)
        cm = ConfusionMatrix(k, counts=counts.blocks.sum(axis=0))
        if cm.n_pixels == 0:
            raise InputError(
                f"{prediction} and {reference}: no pixel is labelled in both (nodata everywhere they overlap); "
                "check the nodata values and the extent of the reference"
            )
        ci_metrics = BINARY_CI_METRICS if binary else CLASS_CI_METRICS
        intervals = _intervals(counts.blocks, ci_metrics, k, binary, opts, names)
        strata_cms, strata_out = _strata_scores(counts.strata, layers, ci_metrics, binary, opts, grid.pixel_area_m2)

        objects = objects_table = objects_info = areas = None
        if binary:
            areas = area_stats(cm, grid.pixel_area_m2)
            whole = grid.width * grid.height <= LABEL_WHOLE_GRID_MAX_PIXELS
            objects, objects_table, objects_info = scene_objects(
                layers.pred, layers.ref, layers.pred_coding, layers.ref_coding, grid, prediction, opts, whole=whole
            )
        curve = score_out = None
        if counts.hist is not None:
            curve, score_out = score_summary(counts.hist, layers.bins, score)

        metrics = to_json_value({
            "deltacd_version": __version__,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "inputs": {
                "prediction": {"path": str(prediction), "coding": layers.pred_coding.description},
                "reference": layers.ref.describe() | {"coding": layers.ref_coding.description},
                "score": None if score is None else str(score),
                "strata": None if layers.strata is None else layers.strata.describe(),
            },
            "grid": grid.describe() | {"pixel_area_m2": grid.pixel_area_m2},
            "options": asdict(opts),
            "classes": {"codes": list(layers.ref_coding.codes), "names": list(names)},
            "pixel": cm.scores_dict(class_names=list(names)),
            "pixel_ci": {name: c.to_dict() for name, c in intervals.items()},
            "area": None if areas is None else areas.to_dict(),
            "area_per_class": None if binary else _class_areas(cm, names, grid.pixel_area_m2),
            "objects": objects_info,
            "score": score_out,
            "strata": strata_out or None,
        })
        with staged_output(out_dir, overwrite=overwrite, kind="evaluate", inputs=inputs) as staging:
            write_json(staging / METRICS_JSON, metrics)
            write_csv(staging / METRICS_CSV, csv_rows(metrics, binary))
            if objects_table is not None:
                write_objects_csv(staging / OBJECTS_CSV, objects_table)
            if opts.figures:
                _write_figures(staging, cm, names, curve, score_out, layers.bins)
    log.info("evaluation written to %s", out_dir)
    return EvaluationResult(
        out_dir=out_dir, metrics=metrics, confusion=cm, class_names=names, intervals=intervals,
        objects=objects, areas=areas, pr_curve=curve, strata=strata_cms,
    )


@dataclass(eq=False)
class _Layers:
    """The layers read on the prediction's grid, each with the coding of its values (score and strata optional)."""

    pred: RasterLabels
    pred_coding: LabelCoding
    ref: LabelSource
    ref_coding: LabelCoding
    score: ScoreRaster | None = None
    bins: ScoreBins | None = None
    strata: LabelSource | None = None
    strata_coding: LabelCoding | None = None


def _open_layers(
    stack: ExitStack,
    prediction: Path,
    reference: str | Path,
    score: str | Path | None,
    strata: str | Path | None,
    grid: Grid,
    windows: Sequence[Window],
    declared: tuple[tuple[int, ...], tuple[str, ...]] | None,
    opts: EvaluateOptions,
) -> _Layers:
    """Open every layer on the prediction's grid (closed by ``stack``) and decide how its values are decoded.

    Codings are decided on the whole layers (one scan each), so every window is decoded the same way.
    """
    name = str(prediction)
    pred = stack.enter_context(RasterLabels(prediction, grid, what="prediction", grid_name=name))
    ref = stack.enter_context(
        open_labels(reference, grid, what="reference", grid_name=name, kind=opts.reference_kind,
                    field=opts.reference_field, all_touched=opts.all_touched)
    )
    if declared is not None and isinstance(ref, PolygonLabels) and ref.field is None:
        raise InputError(f"{reference}: class polygons need reference_field= (the field holding each polygon's class)")
    pred_counts = scan_values(pred, windows)
    ref_counts = scan_values(ref, windows)
    if declared is None:
        pred_coding = binary_coding(pred_counts, ignore_value=opts.ignore_value, where=f"{prediction} (prediction)")
        ref_coding = binary_coding(ref_counts, ignore_value=opts.ignore_value, where=f"{reference} (reference)")
    else:
        pred_coding = class_coding(pred_counts, declared, ignore_value=opts.ignore_value, where=f"{prediction} (prediction)")
        ref_coding = class_coding(ref_counts, declared, ignore_value=opts.ignore_value, where=f"{reference} (reference)")
    layers = _Layers(pred, pred_coding, ref, ref_coding)

    if score is not None:
        if declared is not None:
            raise InputError(f"{score}: a score needs a binary change reference; drop score= or classes=")
        layers.score = ScoreRaster(Path(score), grid, name)
        stack.callback(layers.score.close)
        layers.bins = bins_for_score(layers.score, windows, prediction, opts.threshold, opts.score_bins)
    if strata is not None:
        layers.strata = stack.enter_context(
            open_labels(strata, grid, what="strata", grid_name=name, field=opts.strata_field,
                        all_touched=opts.all_touched)
        )
        if isinstance(layers.strata, PolygonLabels) and layers.strata.field is None:
            raise InputError(f"{strata}: strata polygons need strata_field= (the field holding each polygon's stratum)")
        counts = scan_values(layers.strata, windows)
        layers.strata_coding = _codes_coding(counts, layers.strata, where=f"{strata} (strata)")
    return layers


@dataclass(frozen=True, eq=False)
class _Counts:
    """What the main pass accumulates: per-block matrices int64 ``[n_blocks, K, K]`` overall and per stratum index."""

    blocks: np.ndarray
    hist: ScoreHistogram | None
    strata: list[np.ndarray]


def _count(
    layers: _Layers, windows: Sequence[Window], k: int, bs: int, progress: Callable[[int, int], None] | None
) -> _Counts:
    """The main pass, window by window: matrices per ``bs`` block (overall and per stratum), score histograms."""
    blocks: list[np.ndarray] = []
    hist = ScoreHistogram(layers.bins.edges) if layers.score is not None else None
    n_strata = layers.strata_coding.n_classes if layers.strata_coding is not None else 0
    strata_blocks: list[list[np.ndarray]] = [[] for _ in range(n_strata)]
    for done, window in enumerate(windows, start=1):
        p, pv = layers.pred_coding.apply(*layers.pred.read(window))
        r, rv = layers.ref_coding.apply(*layers.ref.read(window))
        valid = pv & rv
        blocks.append(block_confusion_matrices(p, r, n_classes=k, block_size=bs, valid=valid))
        if hist is not None:
            s, sv = layers.score.read(window)
            hist.update(s, r, valid & sv)
        if layers.strata is not None:
            st, stv = layers.strata_coding.apply(*layers.strata.read(window))
            inside = valid & stv
            for i in np.unique(st[inside]):
                strata_blocks[int(i)].append(
                    block_confusion_matrices(p, r, n_classes=k, block_size=bs, valid=inside & (st == i))
                )
        if progress is not None:
            progress(done, len(windows))

    def stacked(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, k, k), np.int64)

    return _Counts(stacked(blocks), hist, [stacked(parts) for parts in strata_blocks])


def _strata_scores(
    strata_blocks: list[np.ndarray], layers: _Layers, ci_metrics: Sequence[str], binary: bool, opts: EvaluateOptions,
    pixel_area_m2: float,
) -> tuple[dict[int, ConfusionMatrix], dict[str, Any]]:
    """Per stratum code: its pixel matrix, and its section of metrics.json (scores with intervals)."""
    names = layers.ref_coding.names
    k = len(names)
    strata_cms: dict[int, ConfusionMatrix] = {}
    strata_out: dict[str, Any] = {}
    for i, sb in enumerate(strata_blocks):
        scm = ConfusionMatrix(k, counts=sb.sum(axis=0) if sb.size else None)
        code = layers.strata_coding.codes[i]
        strata_cms[code] = scm
        strata_out[str(code)] = {
            "name": layers.strata_coding.names[i],
            "pixels": scm.n_pixels,
            "area_ha": scm.n_pixels * pixel_area_m2 / 1e4,
            "scores": scm.scores_dict(class_names=list(names)),
            "ci": {m: c.to_dict() for m, c in _intervals(sb, ci_metrics, k, binary, opts, names).items()},
        }
    return strata_cms, strata_out


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


def _class_areas(cm: ConfusionMatrix, names: Sequence[str], pixel_area_m2: float) -> dict[str, Any]:
    ha = pixel_area_m2 / 1e4
    c = cm.counts
    return {
        name: {"reference_ha": float(c[i].sum() * ha), "predicted_ha": float(c[:, i].sum() * ha), "agreed_ha": float(c[i, i] * ha)}
        for i, name in enumerate(names)
    }


def _write_figures(
    folder: Path, cm: ConfusionMatrix, names: Sequence[str], curve: PRCurve | None, score_out: dict[str, Any] | None,
    bins: ScoreBins | None,
) -> None:
    """``confusion_matrix.png``, and with a score ``pr_curve.png`` and ``f1_threshold.png``."""
    from deltacd.report import figures as fig

    fig.confusion_matrix_figure(cm.counts, names, folder / CONFUSION_PNG)
    if curve is not None:
        point = (cm.recall, cm.precision)
        fig.pr_curve_figure(curve, folder / PR_PNG, mask_point=point, best=(score_out["best_f1_threshold"], score_out["best_f1"]))
        fig.f1_threshold_figure(curve, folder / F1_PNG, threshold=bins.threshold)
