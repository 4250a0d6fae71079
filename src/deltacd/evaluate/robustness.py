"""Robustness of a change method to differences between the dates, and its transfer across data sets.

:func:`robustness` degrades the **after** image in controlled steps (the perturbations of
:mod:`deltacd.evaluate.perturb`: gain, offset, gamma, haze, blur, noise, JPEG, misregistration,
coarser resolution), runs :func:`deltacd.detect` on each degraded pair exactly as a user would,
and scores each ``change_mask.tif`` against a reference: F1 against strength, one curve per
perturbation. :func:`compare_methods` puts several methods on the same curves,
:func:`robustness_study` pools several labelled pairs (micro average: confusion matrices summed
over the pairs before the scores are computed), and :func:`cross_dataset` scores one model on
labelled pairs of several sources (transfer, no perturbation).

How a perturbed after image is made
-----------------------------------
Both dates are put on the grid ``detect`` would use (:func:`~deltacd.prepare.align.align_pair`
with the same ``crs``, ``resolution``, ``aoi`` and band options); the after image's common bands
are read **whole** on that grid, perturbed, rounded and clipped to the after image's data type
(integer types saturate like a sensor), and written as one GeoTIFF on that grid whose band
descriptions are the band names; no-data pixels stay masked. ``detect`` then runs on the
original before image and that file, with ``crs`` and ``resolution`` of the grid, so its output
grid is the same grid (checked). Strength 0 goes through the same path, so every curve starts
from the unperturbed result computed the same way. Consequences:

* spatial strengths (blur sigma, shift, resolution factor) are in pixels of the output grid;
  for a folder of Sentinel-2 band files on the 10 m grid, the 20 m and 60 m bands are first
  resampled to 10 m (as ``detect`` does) and then perturbed on that grid;
* the whole after image is held in memory (a few times ``C x H x W`` float32): inputs larger
  than ``max_pixels`` grid pixels are refused; crop them with ``aoi=`` (``detect_options``).

Settings
--------
``detect_options`` go to :func:`deltacd.detect` unchanged (validated by
:class:`~deltacd.config.DetectOptions`), so robustness is measured with detect's defaults —
radiometric harmonisation ``"pif"`` included, which undoes much of a gain or offset; pass
``{"harmonise": "none"}`` to see the method alone. One exception: ``coregistration`` defaults to
``"off"`` here, because detect's default ``"report"`` only measures the shift (the mask is the
same) and costs more than the detection on small scenes; pass ``"report"`` to record the
measured shift of each run (columns ``coreg_dx``, ``coreg_dy``) or ``"correct"`` to measure how
much the correction recovers under ``shift``.

Outputs (``out_dir``, written in a temporary folder renamed at the end)
---------------------------------------------------------------------
``robustness.csv``
    One row per method, perturbation and strength: ``method, perturbation, strength, units, f1,
    precision, recall, iou, changed_fraction, threshold, tp, fp, fn, tn, pairs, seconds,
    coreg_dx, coreg_dy`` (pooled over the pairs when there are several).
``robustness_pairs.csv``
    The same per pair (only when there are several pairs).
``robustness.json``
    Settings (perturbations, strengths, units, detect options, seed, data range per pair) and
    both tables.
``robustness.png``
    One panel per perturbation, F1 against strength, one line per method.
``runs/``
    Each run's detect outputs, only with ``keep_runs=True``.

References
----------
.. [1] Dai, X., Khorram, S. (1998). The effects of image misregistration on the accuracy of
   remotely sensed change detection. *IEEE TGRS* 36(5), 1566-1577. doi:10.1109/36.718860
.. [2] Hendrycks, D., Dietterich, T. (2019). Benchmarking neural network robustness to common
   corruptions and perturbations. ICLR. arXiv:1903.12261 (corruption curves at graded severities).
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT

from deltacd._version import __version__
from deltacd.config import DetectOptions, build_options
from deltacd.errors import DeltacdError, InputError, MissingInputError
from deltacd.evaluate.metrics import ConfusionMatrix, metric_from_counts
from deltacd.evaluate.perturb import PERTURBATIONS, Perturbation, data_range_of, get_perturbation
from deltacd.io.grid import Grid
from deltacd.io.outputs import input_paths, staged_output
from deltacd.io.rasters import open_image
from deltacd.io.records import dumps
from deltacd.methods import ChangeMethod
from deltacd.pipeline import MASK_NODATA, DetectResult, detect
from deltacd.prepare.align import align_pair

log = logging.getLogger(__name__)

__all__ = [
    "CrossDatasetResult",
    "LabelledPair",
    "RobustnessResult",
    "ScoreRow",
    "compare_methods",
    "cross_dataset",
    "format_table",
    "plot_robustness",
    "pool_rows",
    "reference_on_grid",
    "robustness",
    "robustness_study",
]

#: Grid pixels above which the after image is not read whole (about 16 Mpx: 4000 x 4000).
MAX_PIXELS = 16_000_000

#: A change reference: a raster file (0 = no change, non-zero = change, ``ignore_value`` and
#: nodata not counted) or an array on the output grid with the same convention.
Reference = str | Path | np.ndarray

#: ``progress(done, total)`` after each detect run.
Progress = Callable[[int, int], None]

_METRICS = ("f1", "precision", "recall", "iou")


# --------------------------------------------------------------------------------------------
# data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledPair:
    """One labelled pair: two dates, a reference, and detect options specific to it.

    Attributes
    ----------
    name
        Short name (a city, a crop), used in tables.
    before, after
        As for :func:`deltacd.detect`: a raster file, a folder of single-band rasters or a list of files.
    reference
        See :data:`Reference`.
    source
        Data set the pair comes from (``"LEVIR-CD"``), for :func:`cross_dataset`.
    options
        Detect options of this pair (``crs``, ``resolution``, ``bands_before`` ...), applied over
        the study's ``detect_options``.
    """

    name: str
    before: str | Path | list
    after: str | Path | list
    reference: Reference
    source: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreRow:
    """Pixel counts of one detect run (or of several pooled) against the reference.

    ``tp``/``fp``/``fn``/``tn`` count pixels labelled in the reference and valid in the output;
    ``changed_pixels``/``valid_pixels`` count the output's changed and valid pixels. Scores are
    computed from the counts, so pooled rows give micro averages.
    """

    method: str
    pair: str
    perturbation: str
    strength: float
    units: str
    tp: int
    fp: int
    fn: int
    tn: int
    changed_pixels: int
    valid_pixels: int
    threshold: float
    seconds: float
    pairs: int = 1
    source: str = ""
    coreg_dx: float = math.nan
    coreg_dy: float = math.nan

    @property
    def counts(self) -> np.ndarray:
        """Confusion matrix [2, 2], rows = reference (0 no change, 1 change), columns = prediction."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]], dtype=np.int64)

    def score(self, metric: str) -> float:
        """``"f1"``, ``"precision"``, ``"recall"`` or ``"iou"`` of the change class (NaN when 0/0)."""
        return float(metric_from_counts(self.counts, metric))

    @property
    def f1(self) -> float:
        return self.score("f1")

    @property
    def changed_fraction(self) -> float:
        return self.changed_pixels / self.valid_pixels if self.valid_pixels else math.nan

    def as_dict(self) -> dict[str, Any]:
        """The CSV/JSON record: identification, scores, then counts."""
        out: dict[str, Any] = {
            "method": self.method, "source": self.source, "pair": self.pair, "perturbation": self.perturbation,
            "strength": self.strength, "units": self.units,
        }
        out.update({m: self.score(m) for m in _METRICS})
        out.update(
            changed_fraction=self.changed_fraction, threshold=self.threshold, tp=self.tp, fp=self.fp, fn=self.fn,
            tn=self.tn, pairs=self.pairs, seconds=round(self.seconds, 2), coreg_dx=self.coreg_dx, coreg_dy=self.coreg_dy,
        )
        return out


@dataclass(frozen=True)
class RobustnessResult:
    """Where the outputs are, and the rows (pooled over the pairs, and per pair)."""

    out_dir: Path
    rows: tuple[ScoreRow, ...]
    pair_rows: tuple[ScoreRow, ...]

    @property
    def csv(self) -> Path:
        return self.out_dir / "robustness.csv"

    @property
    def json(self) -> Path:
        return self.out_dir / "robustness.json"

    @property
    def png(self) -> Path:
        return self.out_dir / "robustness.png"

    def table(self, metric: str = "f1") -> str:
        """A plain-text table: one line per perturbation and strength, one column per method."""
        return format_table(self.rows, metric)


@dataclass(frozen=True)
class CrossDatasetResult:
    """Scores of one model per source (pooled over its pairs) and per pair."""

    out_dir: Path
    rows: tuple[ScoreRow, ...]
    pair_rows: tuple[ScoreRow, ...]

    @property
    def csv(self) -> Path:
        return self.out_dir / "cross_dataset.csv"

    @property
    def json(self) -> Path:
        return self.out_dir / "cross_dataset.json"

    def table(self) -> str:
        lines = [f"{'source':16s} {'pairs':>5s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'IoU':>6s}"]
        for r in self.rows:
            lines.append(f"{r.source:16s} {r.pairs:5d} {r.score('f1'):6.3f} {r.score('precision'):6.3f} "
                         f"{r.score('recall'):6.3f} {r.score('iou'):6.3f}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------


def reference_on_grid(reference: Reference, grid: Grid, *, ignore_value: int | None = 255) -> tuple[np.ndarray, np.ndarray]:
    """The reference as change labels on ``grid``, and which pixels count.

    Parameters
    ----------
    reference
        A raster (band 1: 0 = no change, any other value = change) or an array ``[H, W]`` of
        ``grid``'s shape with the same convention. A georeferenced raster on another grid is
        resampled onto ``grid`` (nearest neighbour); a raster without georeferencing must have
        ``grid``'s shape (its pixels are taken to be the grid's).
    ignore_value
        Reference value that is not counted (unlabelled); the raster's nodata and pixels outside
        its footprint are not counted either. ``None``: every value counts.

    Returns
    -------
    labels : np.ndarray
        uint8 [H, W], 1 = change, 0 = no change.
    counted : np.ndarray
        bool [H, W], True where the reference has a label.

    Raises
    ------
    InputError
        Wrong shape, unreadable file, or no labelled pixel at all.
    """
    name = "reference array" if isinstance(reference, np.ndarray) else str(reference)
    if isinstance(reference, np.ndarray):
        values = np.asarray(reference)
        if values.ndim == 3 and values.shape[0] == 1:
            values = values[0]
        if values.shape != grid.shape:
            raise InputError(f"reference array: shape {values.shape}, expected the output grid's {grid.shape} (rows, cols)")
        inside = np.ones(grid.shape, dtype=bool)
    else:
        values, inside = _read_reference(Path(reference), grid)
    counted = inside & (values != ignore_value if ignore_value is not None else True)
    counted &= np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else True
    if not counted.any():
        hint = f"; if {ignore_value} means change, pass ignore_value=None" if ignore_value is not None else ""
        raise InputError(f"{name}: no labelled pixel on the output grid (all nodata, outside or equal to {ignore_value}){hint}")
    labels = ((values != 0) & counted).astype(np.uint8)
    return labels, counted


def _read_reference(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise MissingInputError(f"{path}: no such reference file; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                georeferenced = ds.crs is not None and not ds.transform.is_identity
                if not georeferenced:
                    if (ds.height, ds.width) != grid.shape:
                        raise InputError(
                            f"{path}: not georeferenced and {ds.height}x{ds.width} px (rows x cols), while the output grid is "
                            f"{grid.height}x{grid.width}; georeference it or give it on the output grid"
                        )
                    return ds.read(1), ds.read_masks(1) > 0
                own = Grid.of(ds)
                try:
                    own.check_same(grid)
                    return ds.read(1), ds.read_masks(1) > 0
                except InputError:
                    pass
                options = dict(crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                               resampling=Resampling.nearest)
                options.update({"add_alpha": True} if ds.nodata is None else {"nodata": ds.nodata})
                with WarpedVRT(ds, **options) as vrt:
                    return vrt.read(1), vrt.read_masks(1) > 0
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a raster GDAL can read ({exc}); give the reference as a GeoTIFF") from exc


# --------------------------------------------------------------------------------------------
# one detect run, scored
# --------------------------------------------------------------------------------------------


def _read_mask(result: DetectResult, grid: Grid | None) -> tuple[np.ndarray, Grid]:
    with rasterio.open(result.mask) as ds:
        out_grid = Grid.of(ds)
        mask = ds.read(1)
    if grid is not None:
        try:
            grid.check_same(out_grid, names=("the perturbed pair's grid", f"{result.mask}"))
        except InputError as exc:
            raise DeltacdError(f"robustness: detect wrote its mask on another grid than the one perturbed ({exc})") from None
    return mask, out_grid


def _score(mask: np.ndarray, labels: np.ndarray, counted: np.ndarray) -> dict[str, int]:
    """Confusion counts of the mask (1 change, 0 no change, 255 no data) where the reference has a label."""
    valid = mask != MASK_NODATA
    predicted = (mask == 1).astype(np.uint8)
    cm = ConfusionMatrix(2).update(predicted, labels, valid=counted & valid)
    return {"tp": cm.tp, "fp": cm.fp, "fn": cm.fn, "tn": cm.tn,
            "changed_pixels": int(predicted[valid].sum()), "valid_pixels": int(valid.sum())}


def _coreg(record: dict[str, Any]) -> dict[str, float]:
    report = record.get("coregistration") or {}
    if not report.get("blocks_used"):
        return {}
    return {"coreg_dx": float(report["dx"]), "coreg_dy": float(report["dy"])}


# --------------------------------------------------------------------------------------------
# methods, options, strengths
# --------------------------------------------------------------------------------------------


def _method_label(method: str | ChangeMethod) -> str:
    if isinstance(method, str):
        return method
    if isinstance(method, ChangeMethod):
        return str(method.name)
    raise InputError(f"method: got {type(method).__name__}, expected a method name (cva, irmad) or a ChangeMethod instance")


def _method_kwargs(method: str | ChangeMethod) -> dict[str, Any]:
    return {"method": method} if isinstance(method, str) else {"method_instance": method}


def _labels(methods: Sequence[str | ChangeMethod]) -> list[str]:
    if not methods:
        raise InputError("methods: empty list; give at least one method name or ChangeMethod")
    labels = [_method_label(m) for m in methods]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise InputError(f"methods: {', '.join(twice)} given twice; give each method once (set distinct names on instances)")
    return labels


def _detect_options(detect_options: Mapping[str, Any] | None, pair_options: Mapping[str, Any]) -> dict[str, Any]:
    options = {"coregistration": "off", **dict(detect_options or {}), **dict(pair_options)}
    if "method" in options:
        raise InputError("detect_options: 'method' is not a detect option here; give the method(s) with method= / methods=")
    build_options(DetectOptions, options, source="detect_options")  # fail early, with detect's message
    return options


def _plan(
    perturbations: Sequence[str] | str | None, strengths: Sequence[float] | Mapping[str, Sequence[float]] | None
) -> list[tuple[Perturbation, tuple[float, ...]]]:
    """(perturbation, strengths) to run, each list sorted, starting at 0."""
    if perturbations is None:
        names = list(PERTURBATIONS)
    else:
        names = [perturbations] if isinstance(perturbations, str) else list(perturbations)
    if not names:
        raise InputError(f"perturbations: empty list; give one or more of {', '.join(PERTURBATIONS)}")
    chosen = [get_perturbation(n) for n in names]
    if isinstance(strengths, Mapping):
        unknown = sorted(set(strengths) - set(names))
        if unknown:
            raise InputError(
                f"strengths: given for {', '.join(unknown)}, which are not among the perturbations run ({', '.join(names)})"
            )
    plan = []
    for p in chosen:
        given = strengths.get(p.name) if isinstance(strengths, Mapping) else strengths
        values = p.strengths if given is None else tuple(float(s) for s in given)
        if not values:
            raise InputError(f"strengths of {p.name}: empty list; give values in {p.units}, e.g. {list(p.strengths)}")
        for s in values:  # validate on a tiny image: a bad strength fails before any detect run
            p(np.zeros((1, 4, 4), np.float32), s, data_range=1.0)
        plan.append((p, tuple(sorted({0.0, *values}))))
    return plan


# --------------------------------------------------------------------------------------------
# the after image on the grid, perturbed
# --------------------------------------------------------------------------------------------


@dataclass
class _PreparedAfter:
    grid: Grid
    bands: tuple[str, ...]
    values: np.ndarray  # float32 [C, H, W], no-data filled with the band mean
    valid: np.ndarray  # bool [H, W]
    dtype: np.dtype
    data_range: float


def _prepare_after(
    pair: LabelledPair, options: Mapping[str, Any], *, data_range: float | None, max_pixels: int
) -> _PreparedAfter:
    first = open_image(pair.before, bands=options.get("bands_before"), label="before")
    second = open_image(pair.after, bands=options.get("bands_after"), label="after")
    if first.sensor_geometry or second.sensor_geometry:
        raise InputError(
            f"{pair.name}: robustness needs orthorectified images (the after image is rewritten on the output grid); "
            "orthorectify them first (deltacd.prepare.orthorectify)"
        )
    aligned = align_pair(first, second, crs=options.get("crs"), resolution=options.get("resolution"), aoi=options.get("aoi"))
    with aligned:
        grid = aligned.grid
        if grid.width * grid.height > max_pixels:
            raise InputError(
                f"{pair.name}: output grid {grid.width}x{grid.height} px ({grid.width * grid.height / 1e6:.1f} Mpx) exceeds "
                f"max_pixels={max_pixels} (robustness holds the after image in memory); crop the inputs with an AOI "
                "(detect_options aoi=...) or raise max_pixels"
            )
        block = aligned.read(grid.full_window)
    values, valid = block.after, block.valid
    if not valid.any():
        raise InputError(f"{pair.name}: the two dates share no valid pixel on the output grid; check nodata and footprints")
    dtype = np.result_type(*[np.dtype(f.dtype) for f in second.files])
    for band in values:  # perturbations need finite values everywhere: no-data gets the band mean
        band[~valid] = float(band[valid].mean())
    r = float(data_range) if data_range is not None else data_range_of(values[:, valid], dtype)
    return _PreparedAfter(grid, tuple(aligned.bands), values, valid, dtype, r)


def _write_after(path: Path, prepared: _PreparedAfter, values: np.ndarray) -> Path:
    dtype = prepared.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    grid = prepared.grid
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=len(values), dtype=dtype,
                   crs=grid.crs, transform=grid.transform)
    if grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype))
        dst.descriptions = prepared.bands
        if not prepared.valid.all():
            dst.write_mask(prepared.valid.astype(np.uint8) * 255)
    return path


# --------------------------------------------------------------------------------------------
# studies
# --------------------------------------------------------------------------------------------


def _run_pair(
    pair: LabelledPair,
    methods: Sequence[str | ChangeMethod],
    labels: Sequence[str],
    plan: list[tuple[Perturbation, tuple[float, ...]]],
    detect_options: Mapping[str, Any] | None,
    *,
    data_range: float | None,
    ignore_value: int | None,
    seed: int,
    max_pixels: int,
    workdir: Path,
    keep_runs: Path | None,
    tick: Callable[[], None],
) -> tuple[list[ScoreRow], dict[str, Any]]:
    options = _detect_options(detect_options, pair.options)
    prepared = _prepare_after(pair, options, data_range=data_range, max_pixels=max_pixels)
    ref_labels, counted = reference_on_grid(pair.reference, prepared.grid, ignore_value=ignore_value)
    run_options = {**options, "bands_after": ",".join(prepared.bands), "crs": prepared.grid.crs.to_string(),
                   "resolution": prepared.grid.res, "seed": options.get("seed", seed)}
    info = {"grid": prepared.grid.describe(), "bands": list(prepared.bands), "data_range": prepared.data_range,
            "dtype": str(prepared.dtype), "labelled_pixels": int(counted.sum()), "changed_in_reference": int(ref_labels.sum())}
    rows: list[ScoreRow] = []
    for method, label in zip(methods, labels, strict=True):
        baseline: ScoreRow | None = None
        for perturbation, strengths in plan:
            for strength in strengths:
                if strength == 0 and baseline is not None:
                    # the unperturbed run is shared by every perturbation; its time is counted once
                    rows.append(replace(baseline, perturbation=perturbation.name, units=perturbation.units, seconds=0.0))
                    continue
                tag = f"{_safe(pair.name)}_{_safe(label)}_{perturbation.name if strength else 'none'}_{strength:g}"
                started = time.perf_counter()
                after = perturbation(prepared.values, strength, data_range=prepared.data_range, seed=seed)
                after_path = _write_after(workdir / f"after_{tag}.tif", prepared, after)
                del after
                run_dir = workdir / f"run_{tag}"
                try:
                    result = detect(pair.before, after_path, run_dir, **_method_kwargs(method), **run_options)
                except DeltacdError as exc:  # say which run failed; the message stays one line
                    raise type(exc)(f"{pair.name}, {label}, {perturbation.name}={strength:g}: {exc}") from exc
                mask, _ = _read_mask(result, prepared.grid)
                counts = _score(mask, ref_labels, counted)
                row = ScoreRow(
                    method=label, pair=pair.name, perturbation=perturbation.name, strength=float(strength),
                    units=perturbation.units, threshold=float(result.record["threshold"]["value"]),
                    seconds=time.perf_counter() - started, source=pair.source, **counts, **_coreg(result.record),
                )
                log.info("%s %s %s=%g: F1 %.3f", pair.name, label, perturbation.name, strength, row.f1)
                rows.append(row)
                if strength == 0:
                    baseline = row
                after_path.unlink()
                if keep_runs is not None:
                    shutil.move(run_dir, keep_runs / tag)
                else:
                    shutil.rmtree(run_dir)
                tick()
    return rows, info


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)


def pool_rows(rows: Sequence[ScoreRow], *, by: tuple[str, ...] = ("method", "perturbation", "strength")) -> list[ScoreRow]:
    """Sum the counts of rows that share the ``by`` fields (micro average); first-seen order.

    The pooled ``threshold`` is the median over the rows, ``seconds`` the sum, ``pairs`` the
    number of rows pooled; fields not in ``by`` and not summed become ``"pooled"`` (strings) or NaN.
    """
    groups: dict[tuple, list[ScoreRow]] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, k) for k in by), []).append(row)
    summed = ("tp", "fp", "fn", "tn", "changed_pixels", "valid_pixels", "seconds", "pairs")
    out = []
    for members in groups.values():
        first = members[0]
        values: dict[str, Any] = {}
        for f in fields(ScoreRow):
            if f.name in by:
                values[f.name] = getattr(first, f.name)
            elif f.name in summed:
                values[f.name] = sum(getattr(m, f.name) for m in members)
            elif f.name == "threshold":
                values[f.name] = float(np.median([m.threshold for m in members]))
            elif f.name in ("units", "source"):
                distinct = {getattr(m, f.name) for m in members}
                values[f.name] = distinct.pop() if len(distinct) == 1 else "pooled"
            elif f.name in ("coreg_dx", "coreg_dy"):
                found = [getattr(m, f.name) for m in members if not math.isnan(getattr(m, f.name))]
                values[f.name] = float(np.median(found)) if found else math.nan
            else:
                values[f.name] = "pooled" if len(members) > 1 else getattr(first, f.name)
        out.append(ScoreRow(**values))
    return out


def robustness_study(
    pairs: Sequence[LabelledPair],
    out_dir: str | Path,
    *,
    methods: Sequence[str | ChangeMethod] = ("cva",),
    perturbations: Sequence[str] | str | None = None,
    strengths: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    detect_options: Mapping[str, Any] | None = None,
    data_range: float | None = None,
    ignore_value: int | None = 255,
    seed: int = 0,
    max_pixels: int = MAX_PIXELS,
    keep_runs: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    title: str = "",
) -> RobustnessResult:
    """Robustness curves of one or more methods, pooled over one or more labelled pairs.

    Runs ``len(pairs) x len(methods) x (1 + non-zero strengths)`` detections (strength 0 is run
    once per pair and method and shared by all perturbations). See the module notes for how the
    after image is perturbed and what is written.

    Parameters
    ----------
    pairs
        Labelled pairs (:class:`LabelledPair`).
    out_dir
        Output folder; refused if it exists unless ``overwrite``.
    methods
        Method names (``"cva"``, ``"irmad"``) and/or :class:`~deltacd.methods.ChangeMethod`
        instances (e.g. ``LearnedModel.from_file("tinycd:levir_best.pth")``; detect calls its
        ``fit`` at every run, so one instance serves all runs). Names must be distinct.
    perturbations
        Names from :data:`~deltacd.evaluate.perturb.PERTURBATIONS` (default: all).
    strengths
        Strengths for every perturbation run (a list, in each perturbation's units) or per
        perturbation (``{"shift": [0, 1, 2]}``); default: each perturbation's ``strengths``.
        0 (the unperturbed pair) is always added.
    detect_options
        Options of :func:`deltacd.detect` for every run (``{"harmonise": "none"}``,
        ``{"threshold": 0.5}`` ...); ``coregistration`` defaults to ``"off"`` (module notes).
    data_range
        Sensor range of the after image's DN (255, 4095 ...); default: guessed per pair with
        :func:`~deltacd.evaluate.perturb.data_range_of` (recorded in robustness.json).
    ignore_value
        Reference value that is not counted (default 255).
    seed
        Seed of the perturbations (band weights, noise) and, unless ``detect_options`` sets one,
        of detect's sampling.
    max_pixels
        Largest output grid (pixels) accepted, since the after image is held in memory.
    keep_runs
        Keep every run's detect outputs under ``out_dir/runs/``.
    progress
        ``progress(done, total)`` after each detect run.
    title
        Title of the figure.

    Returns
    -------
    RobustnessResult

    Raises
    ------
    InputError
        Unknown perturbation or method, bad strength or option, reference not on the grid,
        input too large.
    OutputError
        ``out_dir`` exists and ``overwrite`` is False.
    """
    if not pairs:
        raise InputError("pairs: empty list; give at least one LabelledPair")
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        raise InputError(f"pairs: names must be distinct; got {', '.join(names)}")
    labels = _labels(methods)
    plan = _plan(perturbations, strengths)
    for pair in pairs:
        _detect_options(detect_options, pair.options)
    runs_per_pair = len(methods) * (1 + sum(sum(1 for s in strengths_ if s != 0) for _, strengths_ in plan))
    total, done = runs_per_pair * len(pairs), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with staged_output(out_dir, overwrite=overwrite, kind="robustness",
                       inputs=input_paths(*[(p.before, p.after, p.reference) for p in pairs])) as staging:
        workdir = staging / "_work"
        workdir.mkdir()
        keep = None
        if keep_runs:
            keep = staging / "runs"
            keep.mkdir()
        pair_rows: list[ScoreRow] = []
        pair_info: dict[str, Any] = {}
        for pair in pairs:
            rows, info = _run_pair(
                pair, methods, labels, plan, detect_options, data_range=data_range, ignore_value=ignore_value,
                seed=seed, max_pixels=max_pixels, workdir=workdir, keep_runs=keep, tick=tick,
            )
            pair_rows += rows
            pair_info[pair.name] = info
        shutil.rmtree(workdir)
        rows = pool_rows(pair_rows) if len(pairs) > 1 else list(pair_rows)
        _write_csv(staging / "robustness.csv", rows)
        if len(pairs) > 1:
            _write_csv(staging / "robustness_pairs.csv", pair_rows)
        settings = {
            "deltacd_version": __version__,
            "methods": labels,
            "pairs": [{"name": p.name, "source": p.source, "before": _describe_input(p.before),
                       "after": _describe_input(p.after), "reference": _describe_input(p.reference),
                       "options": dict(p.options), **pair_info[p.name]} for p in pairs],
            "perturbations": {p.name: {"units": p.units, "strengths": list(s), "what": p.what} for p, s in plan},
            "detect_options": _detect_options(detect_options, {}),
            "seed": seed,
            "ignore_value": ignore_value,
            "pooling": "micro: confusion matrices summed over the pairs" if len(pairs) > 1 else "single pair",
        }
        (staging / "robustness.json").write_text(_dumps({
            "settings": settings, "rows": [r.as_dict() for r in rows], "pair_rows": [r.as_dict() for r in pair_rows],
        }))
        plot_robustness(rows, staging / "robustness.png", title=title or _default_title(pairs))
    return RobustnessResult(Path(out_dir), tuple(rows), tuple(pair_rows))


def robustness(
    before: str | Path | list,
    after: str | Path | list,
    reference: Reference,
    out_dir: str | Path,
    *,
    method: str | ChangeMethod = "cva",
    method_instance: ChangeMethod | None = None,
    perturbations: Sequence[str] | str | None = None,
    strengths: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    detect_options: Mapping[str, Any] | None = None,
    data_range: float | None = None,
    ignore_value: int | None = 255,
    seed: int = 0,
    max_pixels: int = MAX_PIXELS,
    keep_runs: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RobustnessResult:
    """F1 of one method on one pair as the after image is degraded step by step.

    ``method`` is a method name or a :class:`~deltacd.methods.ChangeMethod` instance
    (``method_instance``, as in :func:`deltacd.detect`, takes precedence). ``reference`` is a
    change raster (0 = no change, non-zero = change, ``ignore_value`` and nodata not counted) or
    an array on the output grid. The other parameters are those of :func:`robustness_study`.

    Examples
    --------
    >>> robustness("before.tif", "after.tif", "reference.tif", "out", method="irmad",
    ...            perturbations=["shift", "gain"], detect_options={"harmonise": "none"})  # doctest: +SKIP
    """
    chosen = method_instance if method_instance is not None else method
    pair = LabelledPair("pair", before, after, reference)
    return robustness_study(
        [pair], out_dir, methods=[chosen], perturbations=perturbations, strengths=strengths,
        detect_options=detect_options, data_range=data_range, ignore_value=ignore_value, seed=seed,
        max_pixels=max_pixels, keep_runs=keep_runs, overwrite=overwrite, progress=progress,
    )


def compare_methods(
    before: str | Path | list,
    after: str | Path | list,
    reference: Reference,
    out_dir: str | Path,
    *,
    methods: Sequence[str | ChangeMethod] = ("cva", "irmad"),
    **kwargs: Any,
) -> RobustnessResult:
    """:func:`robustness` for several methods on one pair, drawn on the same panels.

    ``kwargs`` are those of :func:`robustness_study` (perturbations, strengths, detect_options ...).
    """
    pair = LabelledPair("pair", before, after, reference)
    return robustness_study([pair], out_dir, methods=methods, **kwargs)


def cross_dataset(
    model: str | Path | ChangeMethod,
    pairs: Sequence[LabelledPair],
    out_dir: str | Path,
    *,
    detect_options: Mapping[str, Any] | None = None,
    ignore_value: int | None = 255,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> CrossDatasetResult:
    """Scores of one model on labelled pairs from several sources: F1 per source (transfer).

    Each pair runs through :func:`deltacd.detect` as given (no perturbation); its mask is scored
    against its reference (resampled onto the output grid if georeferenced, otherwise it must
    have the output grid's shape) and the counts are pooled per ``pair.source``.

    Parameters
    ----------
    model
        A :class:`~deltacd.methods.ChangeMethod`, a method name (``"cva"``), or a model file as
        for :meth:`LearnedModel.from_file <deltacd.methods.learned.LearnedModel.from_file>`
        (``PATH.safetensors``, ``tinycd:PATH``).
    pairs
        Labelled pairs; ``source`` groups them (empty source: the pair's name).
    detect_options
        Options of :func:`deltacd.detect` for every pair (``coregistration`` defaults to ``"off"``).

    Outputs: ``cross_dataset.csv`` (per source), ``cross_dataset_pairs.csv``, ``cross_dataset.json``.
    """
    method = resolve_method(model)
    label = _method_label(method)
    if not pairs:
        raise InputError("pairs: empty list; give at least one LabelledPair")
    for pair in pairs:
        _detect_options(detect_options, pair.options)
    pair_rows: list[ScoreRow] = []
    with staged_output(out_dir, overwrite=overwrite, kind="cross-dataset",
                       inputs=input_paths(*[(p.before, p.after, p.reference) for p in pairs])) as staging:
        workdir = staging / "_work"
        workdir.mkdir()
        for i, pair in enumerate(pairs):
            options = _detect_options(detect_options, pair.options)
            started = time.perf_counter()
            result = detect(pair.before, pair.after, workdir / f"run_{i}", **_method_kwargs(method), **options)
            mask, grid = _read_mask(result, None)
            ref_labels, counted = reference_on_grid(pair.reference, grid, ignore_value=ignore_value)
            row = ScoreRow(
                method=label, pair=pair.name, perturbation="none", strength=0.0, units="", source=pair.source or pair.name,
                threshold=float(result.record["threshold"]["value"]), seconds=time.perf_counter() - started,
                **_score(mask, ref_labels, counted), **_coreg(result.record),
            )
            log.info("%s %s: F1 %.3f", row.source, pair.name, row.f1)
            pair_rows.append(row)
            shutil.rmtree(workdir / f"run_{i}")
            if progress is not None:
                progress(i + 1, len(pairs))
        shutil.rmtree(workdir)
        rows = pool_rows(pair_rows, by=("method", "source"))
        _write_csv(staging / "cross_dataset.csv", rows, drop=("pair", "perturbation", "strength", "units"))
        _write_csv(staging / "cross_dataset_pairs.csv", pair_rows, drop=("perturbation", "strength", "units"))
        (staging / "cross_dataset.json").write_text(_dumps({
            "settings": {"deltacd_version": __version__,
                         "model": method.describe() if isinstance(method, ChangeMethod) else label,
                         "detect_options": _detect_options(detect_options, {}), "ignore_value": ignore_value,
                         "pairs": [{"name": p.name, "source": p.source, "before": _describe_input(p.before),
                                    "after": _describe_input(p.after), "reference": _describe_input(p.reference),
                                    "options": dict(p.options)} for p in pairs]},
            "rows": [r.as_dict() for r in rows], "pair_rows": [r.as_dict() for r in pair_rows],
        }))
    return CrossDatasetResult(Path(out_dir), tuple(rows), tuple(pair_rows))


def resolve_method(model: str | Path | ChangeMethod) -> str | ChangeMethod:
    if isinstance(model, ChangeMethod):
        return model
    from deltacd.methods import METHODS

    if isinstance(model, str) and model in METHODS:
        return model
    try:
        from deltacd.methods.learned import LearnedModel
    except ImportError as exc:  # torch missing
        raise InputError(f"model {model!s}: learned models need torch ({exc}); install deltacd with its model extras") from exc
    return LearnedModel.from_file(model)


# --------------------------------------------------------------------------------------------
# tables and figures
# --------------------------------------------------------------------------------------------


def format_table(rows: Sequence[ScoreRow], metric: str = "f1") -> str:
    """Plain-text table: one line per perturbation and strength, one ``metric`` column per method."""
    methods = list(dict.fromkeys(r.method for r in rows))
    keys = list(dict.fromkeys((r.perturbation, r.strength, r.units) for r in rows))
    index = {(r.method, r.perturbation, r.strength): r for r in rows}
    width = max(8, *(len(m) for m in methods))
    lines = [f"{'perturbation':12s} {'strength':>8s} {'units':32s} " + " ".join(f"{m:>{width}s}" for m in methods)]
    for pert, strength, units in keys:
        cells = []
        for m in methods:
            row = index.get((m, pert, strength))
            cells.append(f"{row.score(metric):{width}.3f}" if row is not None else " " * (width - 1) + "-")
        lines.append(f"{pert:12s} {strength:8g} {units[:32]:32s} " + " ".join(cells))
    return "\n".join(lines)


def plot_robustness(rows: Sequence[ScoreRow], path: str | Path, *, metric: str = "f1", title: str = "") -> Path:
    """One panel per perturbation: ``metric`` against strength, one line per method.

    A dotted horizontal line marks each method's unperturbed score.
    """
    perts = list(dict.fromkeys(r.perturbation for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    ncols = min(3, len(perts))
    nrows = math.ceil(len(perts) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + (0.5 if title else 0)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, pert in zip(axes.flat, perts, strict=False):
        units = next(r.units for r in rows if r.perturbation == pert)
        for m in methods:
            mine = sorted((r for r in rows if r.perturbation == pert and r.method == m), key=lambda r: r.strength)
            if not mine:
                continue
            xs = [r.strength for r in mine]
            ys = [r.score(metric) for r in mine]
            ax.plot(xs, ys, marker="o", ms=4, color=colours[m], label=m)
            base = [r.score(metric) for r in mine if r.strength == 0]
            if base:
                ax.axhline(base[0], color=colours[m], ls=":", lw=0.8)
        ax.set_title(pert)
        ax.set_xlabel(units)
        ax.set_ylabel(metric.upper() if metric in ("f1", "iou") else metric)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(perts):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _default_title(pairs: Sequence[LabelledPair]) -> str:
    if len(pairs) == 1:
        return "robustness of change detection to perturbations of the after image"
    return f"robustness, pooled over {len(pairs)} pairs (micro F1)"


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: Sequence[ScoreRow], *, drop: Sequence[str] = ()) -> None:
    records = [{k: v for k, v in r.as_dict().items() if k not in drop} for r in rows]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["method"])
        writer.writeheader()
        for rec in records:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else _fmt(v)) for k, v in rec.items()})


def _fmt(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _describe_input(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return f"array {value.shape} {value.dtype}"
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


def _dumps(data: dict) -> str:
    return dumps(data)
