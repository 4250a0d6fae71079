"""Robustness curves and transfer scores: the studies, and the tables and settings they write."""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deltacd._version import __version__
from deltacd.errors import InputError
from deltacd.evaluate.robustness.figure import plot_robustness
from deltacd.evaluate.robustness.options import (
    merged_detect_options,
    method_kwargs,
    method_label,
    method_labels,
    perturbation_plan,
    resolve_method,
)
from deltacd.evaluate.robustness.reference_raster import reference_on_grid
from deltacd.evaluate.robustness.rows import (
    CrossDatasetResult,
    LabelledPair,
    Reference,
    RobustnessResult,
    ScoreRow,
    pool_rows,
)
from deltacd.evaluate.robustness.runs import MAX_PIXELS, coreg_shift, read_mask, run_pair, score_mask
from deltacd.io.outputs import input_paths, staged_output
from deltacd.io.records import dumps
from deltacd.methods import ChangeMethod
from deltacd.pipeline import detect

log = logging.getLogger(__name__)

__all__ = ["Progress", "compare_methods", "cross_dataset", "robustness", "robustness_study"]

#: ``progress(done, total)`` after each detect run.
Progress = Callable[[int, int], None]


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
    labels = method_labels(methods)
    plan = perturbation_plan(perturbations, strengths)
    for pair in pairs:
        merged_detect_options(detect_options, pair.options)
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
            rows, info = run_pair(
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
            "detect_options": merged_detect_options(detect_options, {}),
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
    label = method_label(method)
    if not pairs:
        raise InputError("pairs: empty list; give at least one LabelledPair")
    for pair in pairs:
        merged_detect_options(detect_options, pair.options)
    pair_rows: list[ScoreRow] = []
    with staged_output(out_dir, overwrite=overwrite, kind="cross-dataset",
                       inputs=input_paths(*[(p.before, p.after, p.reference) for p in pairs])) as staging:
        workdir = staging / "_work"
        workdir.mkdir()
        for i, pair in enumerate(pairs):
            options = merged_detect_options(detect_options, pair.options)
            started = time.perf_counter()
            result = detect(pair.before, pair.after, workdir / f"run_{i}", **method_kwargs(method), **options)
            mask, grid = read_mask(result, None)
            ref_labels, counted = reference_on_grid(pair.reference, grid, ignore_value=ignore_value)
            row = ScoreRow(
                method=label, pair=pair.name, perturbation="none", strength=0.0, units="", source=pair.source or pair.name,
                threshold=float(result.record["threshold"]["value"]), seconds=time.perf_counter() - started,
                **score_mask(mask, ref_labels, counted), **coreg_shift(result.record),
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
                         "detect_options": merged_detect_options(detect_options, {}), "ignore_value": ignore_value,
                         "pairs": [{"name": p.name, "source": p.source, "before": _describe_input(p.before),
                                    "after": _describe_input(p.after), "reference": _describe_input(p.reference),
                                    "options": dict(p.options)} for p in pairs]},
            "rows": [r.as_dict() for r in rows], "pair_rows": [r.as_dict() for r in pair_rows],
        }))
    return CrossDatasetResult(Path(out_dir), tuple(rows), tuple(pair_rows))


def _default_title(pairs: Sequence[LabelledPair]) -> str:
    if len(pairs) == 1:
        return "robustness of change detection to perturbations of the after image"
    return f"robustness, pooled over {len(pairs)} pairs (micro F1)"


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
