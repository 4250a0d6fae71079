"""One pair of a robustness study: the after image perturbed on the output grid, each detect run scored."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from deltacd.errors import DeltacdError, InputError
from deltacd.evaluate.perturb import Perturbation, data_range_of
from deltacd.evaluate.robustness.options import merged_detect_options, method_kwargs
from deltacd.evaluate.robustness.reference_raster import reference_on_grid
from deltacd.evaluate.robustness.rows import LabelledPair, ScoreRow
from deltacd.io.grid import Grid
from deltacd.io.rasters import open_image
from deltacd.methods import ChangeMethod
from deltacd.metrics import ConfusionMatrix
from deltacd.pipeline import MASK_NODATA, DetectResult, detect
from deltacd.prepare.align import align_pair

log = logging.getLogger(__name__)

__all__ = ["MAX_PIXELS", "coreg_shift", "read_mask", "run_pair", "score_mask"]

#: Grid pixels above which the after image is not read whole (about 16 Mpx: 4000 x 4000).
MAX_PIXELS = 16_000_000


def read_mask(result: DetectResult, grid: Grid | None) -> tuple[np.ndarray, Grid]:
    with rasterio.open(result.mask) as ds:
        out_grid = Grid.of(ds)
        mask = ds.read(1)
    if grid is not None:
        try:
            grid.check_same(out_grid, names=("the perturbed pair's grid", f"{result.mask}"))
        except InputError as exc:
            raise DeltacdError(f"robustness: detect wrote its mask on another grid than the one perturbed ({exc})") from None
    return mask, out_grid


def score_mask(mask: np.ndarray, labels: np.ndarray, counted: np.ndarray) -> dict[str, int]:
    """Confusion counts of the mask (1 change, 0 no change, 255 no data) where the reference has a label."""
    valid = mask != MASK_NODATA
    predicted = (mask == 1).astype(np.uint8)
    cm = ConfusionMatrix(2).update(predicted, labels, valid=counted & valid)
    return {"tp": cm.tp, "fp": cm.fp, "fn": cm.fn, "tn": cm.tn,
            "changed_pixels": int(predicted[valid].sum()), "valid_pixels": int(valid.sum())}


def coreg_shift(record: dict[str, Any]) -> dict[str, float]:
    report = record.get("coregistration") or {}
    if not report.get("blocks_used"):
        return {}
    return {"coreg_dx": float(report["dx"]), "coreg_dy": float(report["dy"])}


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
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": len(values), "dtype": dtype,
               "crs": grid.crs, "transform": grid.transform}
    if grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype))
        dst.descriptions = prepared.bands
        if not prepared.valid.all():
            dst.write_mask(prepared.valid.astype(np.uint8) * 255)
    return path


def run_pair(
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
    options = merged_detect_options(detect_options, pair.options)
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
                    result = detect(pair.before, after_path, run_dir, **method_kwargs(method), **run_options)
                except DeltacdError as exc:  # say which run failed; the message stays one line
                    raise type(exc)(f"{pair.name}, {label}, {perturbation.name}={strength:g}: {exc}") from exc
                mask, _ = read_mask(result, prepared.grid)
                counts = score_mask(mask, ref_labels, counted)
                row = ScoreRow(
                    method=label, pair=pair.name, perturbation=perturbation.name, strength=float(strength),
                    units=perturbation.units, threshold=float(result.record["threshold"]["value"]),
                    seconds=time.perf_counter() - started, source=pair.source, **counts, **coreg_shift(result.record),
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

