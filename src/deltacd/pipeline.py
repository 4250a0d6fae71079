"""``detect``: two images in, a change map, polygons, a quicklook and a run record out.

The steps, in order: open both dates -> orthorectify sensor-geometry inputs -> put them on one
grid -> measure (and optionally remove) the residual shift -> harmonise date 2's radiometry
onto date 1 -> fit the method on a scene-wide sample -> run it through the tiled engine, writing
the score window by window -> threshold on the scene histogram -> polygons after the minimum
mapping unit -> mask, quicklook, run.json. Everything is written in a temporary folder beside
the output folder and renamed at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from deltacd._version import __version__
from deltacd.config import DetectOptions, build_options
from deltacd.engine.blocks import DEFAULT_BLOCK_SIZE, SceneTask, dask_client, predict_in_blocks
from deltacd.engine.regrid import FAR_RESOLUTION, SAME_RESOLUTION, grid_at_resolution, read_on_grid, write_strips
from deltacd.engine.runner import EngineStats, check_tile_memory, predict_scene
from deltacd.errors import DeltacdWarning, InputError
from deltacd.io.grid import Grid
from deltacd.io.qgis import MASK_STYLE, UNCERTAINTY_STYLE, outline_qml, score_ramp, write_styles
from deltacd.io.rasters import DateImage, open_image, warn_if_same_file
from deltacd.io.records import fingerprint
from deltacd.io.vectors import write_layer
from deltacd.io.writers import RasterWriter
from deltacd.methods import ChangeMethod, get_method
from deltacd.outputs.backdrop import write_backdrops
from deltacd.outputs.layout import MASK_NODATA, SCORE, DetectOutputs
from deltacd.outputs.quicklook import ChangeEdges, write_quicklook
from deltacd.outputs.run import Run, StageProgress, Timings, stage_progress
from deltacd.postprocess.histogram import Histogram
from deltacd.postprocess.polygons import CleanUp, change_regions, rescue_pixels
from deltacd.prepare.align import AlignedPair, align_pair, target_crs
from deltacd.prepare.coregistration import CoregistrationReport, estimate_shift
from deltacd.prepare.orthorectify import orthorectify
from deltacd.prepare.radiometry import fit_harmoniser
from deltacd.prepare.sampling import PixelSample, sample_pixels

log = logging.getLogger(__name__)

#: Subfolder of the staging folder holding the pieces of a run made in blocks (kept for --resume).
BLOCKS = "_blocks"


@dataclass(frozen=True)
class DetectResult(DetectOutputs):
    """Where the outputs are (``out_dir``, ``mask``, ``polygons``... from the layout), and the run record
    (the content of run.json)."""

    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedPair:
    """The aligned, co-registered, harmonised pair and what was measured on the way.

    ``coregistration`` waits for the measure when it runs in the background (``"report"`` mode),
    and starts it if it was left for later (:meth:`start_coregistration`).
    """

    pair: AlignedPair
    inputs: dict[str, Any]  # the inputs as opened, before any orthorectification
    measured: Future | Callable[[], Future] | None  # a callable: the measure, not started yet
    radiometry: dict[str, Any]
    sample: PixelSample  # scene-wide pixels, date 2 harmonised

    def start_coregistration(self) -> Future | None:
        """Start the background measure if it was left for later; the measure (None when there is none)."""
        if callable(self.measured):
            self.measured = self.measured()
        return self.measured

    @property
    def coregistration(self) -> CoregistrationReport | None:
        self.start_coregistration()
        return None if self.measured is None else self.measured.result()


@dataclass(frozen=True)
class Blocks:
    """A score made block by block (:mod:`deltacd.engine.blocks`): where the pieces go and what they come from."""

    folder: Path
    plan: dict[str, Any]  # inputs, settings and fitted method: pieces of another plan are not reused
    size: int = DEFAULT_BLOCK_SIZE
    client: Any = None  # a dask.distributed client, or None to run the blocks in this process
    threads: int | None = None  # engine threads inside a block


def open_pair(before: str | Path | list, after: str | Path | list, options: DetectOptions) -> tuple[DateImage, DateImage]:
    """Read both dates' metadata and band names (nothing is read from the pixels yet)."""
    first = open_image(before, bands=options.bands_before, label="before", rpc_height=options.rpc_height,
                       dem=options.dem, nodata=options.nodata_before)
    second = open_image(after, bands=options.bands_after, label="after", rpc_height=options.rpc_height,
                        dem=options.dem, nodata=options.nodata_after)
    return first, second


def prepare_pair(
    first: DateImage, second: DateImage, options: DetectOptions, run: Run,
    progress: StageProgress | None = None, *, measure_now: bool = True,
) -> PreparedPair:
    """Orthorectify, align, co-register and harmonise both dates (scratch files in ``run.workdir``).

    A background measure is tracked by ``run``: a failed run waits for it, so its warnings stay in the run's log.

    ``measure_now=False`` leaves the background measure of the ``"report"`` mode for later
    (:meth:`PreparedPair.start_coregistration`): beside a network that keeps every core busy
    with its own threads, even a low-priority measure slowed it down more than its own cost
    (TinyCD, 2 048 px: +2.2 s for a 0.8 s measure).
    """
    inputs = {"before": first.describe(), "after": second.describe()}
    timings, workdir = run.timings, run.workdir
    if first.sensor_geometry or second.sensor_geometry:
        with timings.stage("orthorectify"):
            crs = target_crs(first, options.crs)
            first = orthorectify(first, workdir, crs=crs)
            second = orthorectify(second, workdir, crs=crs)
    with timings.stage("align"):
        pair = align_pair(first, second, crs=options.crs, resolution=options.resolution, aoi=options.aoi)
    report: Future | Callable[[], Future] | None = None
    if options.coregistration == "correct":
        measured = _coregister(pair, options, timings, progress)
        if measured.reliable:
            pair = pair.replace(after_shift=(measured.dx, measured.dy))
            measured = replace(measured, corrected=True)
        report = Future()
        report.set_result(measured)
    elif options.coregistration == "report":
        # only measured: nothing downstream waits for it, so it runs beside sampling and prediction
        report = partial(_measure_in_background, run, pair, options, progress)
        if measure_now:
            report = report()
    with timings.stage("radiometry"):
        sample = sample_pixels(pair, max_pixels=options.sample_pixels, seed=options.seed, progress=stage_progress(progress, "sampling"))
        harmoniser = fit_harmoniser(sample, options.harmonise)
        if harmoniser is not None:
            pair = pair.replace(after_transform=harmoniser)
            sample = PixelSample(sample.bands, sample.before, harmoniser(sample.after))
    radiometry = harmoniser.describe() if harmoniser else {"rule": "none"}
    return PreparedPair(pair, inputs, report, radiometry, sample)


def _measure_in_background(run: Run, pair: AlignedPair, options: DetectOptions, progress) -> Future:
    return run.track(_BACKGROUND.submit(_coregister, pair, options, run.timings, progress))


def _lower_priority() -> None:
    """Run this thread at a lower priority (Linux: a nice value per thread), where the OS allows it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


# The measure only reports: at a lower priority it takes the cores the scene's own work leaves
# idle instead of slowing it.
_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltacd-coregistration", initializer=_lower_priority)


def _coregister(pair: AlignedPair, options: DetectOptions, timings: Timings, progress) -> CoregistrationReport:
    with timings.stage("coregistration"):
        report = estimate_shift(pair, progress=stage_progress(progress, "co-registration"))
    if report.blocks_measured and not report.reliable:
        warnings.warn(
            f"co-registration unreliable: only {report.blocks_used} of {report.blocks_measured} blocks agree on the "
            f"shift ({report.dx:+.2f}, {report.dy:+.2f} px)" + ("; it was not applied" if options.coregistration == "correct" else "")
            + "; check the pair covers the same area, or co-register it yourself", DeltacdWarning, stacklevel=3)
    return report


def build_method(options: DetectOptions, method_instance: ChangeMethod | None = None) -> ChangeMethod:
    """The method of a run: ``method_instance``, the checkpoint ``options.model``, or ``options.method`` by name."""
    if method_instance is not None:
        return method_instance
    if options.model:
        from deltacd.methods.learned import LearnedModel  # torch is imported only when a model is asked for

        return LearnedModel.from_file(options.model, device=options.device, tta=options.tta, uncertainty=options.uncertainty,
                                      runtime=options.runtime, precision=options.precision)
    return get_method(options.method, **(options.method_options or {}))


def check_settings(method: ChangeMethod, options: DetectOptions, first: DateImage, second: DateImage) -> None:
    """Every check that needs no pixel, before any work: threshold range, tile memory."""
    if options.threshold != "auto":
        method.check_threshold(float(options.threshold))
    check_tile_memory(method, tile_size=options.tile_size, batch_size=options.batch_size,
                      bands=max(len(first.names), len(second.names)))


def detect(
    before: str | Path | list,
    after: str | Path | list,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: StageProgress | None = None,
    method_instance: ChangeMethod | None = None,
    resume: bool = False,
    **options: Any,
) -> DetectResult:
    """Detect changes between two images and write the outputs to ``out_dir``.

    Parameters
    ----------
    before, after
        Each a raster file, a folder of single-band rasters, or a list of files.
    out_dir
        Output folder (must not exist unless ``overwrite``). Receives ``change_score.tif``
        (float32 COG, NaN = no data), ``change_mask.tif`` (uint8 COG, 1 change, 0 no change,
        255 no data), ``changes.gpkg`` (polygons with area_m2, pixels, mean_score, max_score),
        ``quicklook.png`` and ``run.json``.
    overwrite
        Replace an existing output folder (only once the new run has succeeded).
    progress
        Called as ``progress(stage, done, total)`` during the long stages.
    method_instance
        A ready :class:`ChangeMethod` (e.g. a loaded model) instead of ``method=`` by name.
    resume
        Continue a run on ``out_dir`` that was killed or interrupted: the blocks it completed
        are reused when its inputs and settings were the same (the run is made in blocks,
        ``block_size``). The outputs are those of an uninterrupted run.
    **options
        Fields of :class:`~deltacd.config.DetectOptions` (``method="irmad"``, ``harmonise="none"``, ...).

    Returns
    -------
    DetectResult

    Raises
    ------
    DeltacdError
        Bad input or output location, with a one-line message naming the file or setting.
    """
    opts = build_options(DetectOptions, options, source="detect options")
    method = build_method(opts, method_instance)
    if opts.harmonise == "auto":
        opts = replace(opts, harmonise=getattr(method, "default_harmonise", "pif"))
    in_blocks = bool(resume or opts.block_size or opts.workers or opts.scheduler)
    run = Run(out_dir, kind="detect", inputs=(before, after, opts.aoi, opts.dem, opts.model), overwrite=overwrite,
              resumable=(BLOCKS,) if in_blocks else (), resume=resume, memory_hint=memory_hint(opts))
    with run.timings.stage("open"):
        first, second = open_pair(before, after, opts)
    check_settings(method, opts, first, second)
    with run:  # BLAS on one thread here; Dask's workers get one from their nanny (distributed's pre-spawn environment)
        warn_if_same_file(before, after)  # inside the run: the warning reaches run.json
        staged = DetectOutputs(run.staging)
        # per-pixel numpy methods leave room for the measure beside them; networks run their own threads
        prepared = prepare_pair(first, second, opts, run, progress, measure_now=method.thread_safe)
        with prepared.pair as pair:
            with run.timings.stage("fit"):
                method.fit(prepared.sample)
            run_res, resolution = network_resolution(method, opts, pair.grid)
            blocks = block_settings(opts, run.staging, run.inputs, method, prepared) if in_blocks else None
            engine = EngineStats()
            with ScoreWriters(staged, pair.grid, method) as writers:
                scored = score_scene(pair, method, opts, run, writers, run_res, progress, engine, blocks)
                prepared.start_coregistration()
                changes = write_changes(pair, opts, run, writers, scored, progress, orthorectified=first.sensor_geometry)
            with run.timings.stage("styles and quicklook"):
                write_styles(run.staging, {DetectOutputs.MASK: lambda _: MASK_STYLE, SCORE: score_ramp(method.score_units),
                                           DetectOutputs.UNCERTAINTY: lambda _: UNCERTAINTY_STYLE},
                             {(DetectOutputs.POLYGONS, DetectOutputs.layer): outline_qml()})
                write_quicklook(pair, changes.edges, staged.quicklook, polygons=len(changes.polygons),
                                title=f"{method.name}: {len(changes.polygons)} changes")
            warn_if_mostly_changed(changes.changed, scored.valid_pixels, scored.rule)
            if blocks is not None:
                shutil.rmtree(blocks.folder)
            run.timings["method_inside_predict"] = round(engine.method_s, 3)
            run.timings["read_wait_inside_predict"] = round(engine.read_wait_s, 3)
            record = _run_record(run, prepared, opts, method, scored, changes, resolution)
            record["blocks"] = engine.blocks
            run.write_record(record)
    return DetectResult(Path(out_dir), record)


def memory_hint(options: DetectOptions) -> str:
    """The settings that lower a run's memory, with their values, for an out-of-memory error."""
    return (f"--tile-size (tile_size, now {options.tile_size or 'the method default'}) or --batch-size "
            f"(batch_size, now {options.batch_size or 'the method default'})")


class ScoreWriters:
    """The rasters a detect run writes window by window: score, uncertainty (networks with TTA), mask."""

    def __init__(self, staged: DetectOutputs, grid: Grid, method: ChangeMethod):
        self.staged, self.grid, self.method = staged, grid, method
        self.channels = int(getattr(method, "channels", 1))

    def __enter__(self) -> ScoreWriters:
        self._stack = ExitStack().__enter__()
        open_ = lambda *a, **k: self._stack.enter_context(RasterWriter(*a, **k))
        self.score = open_(self.staged.score, self.grid, dtype="float32", nodata=float("nan"),
                           description=self.method.score_units)
        self.uncertainty = open_(
            self.staged.uncertainty, self.grid, dtype="float32", nodata=float("nan"),
            description="predictive entropy of the change probability over test-time augmentation (bits)",
        ) if self.channels == 2 else None
        self.mask = open_(self.staged.mask, self.grid, dtype="uint8", nodata=MASK_NODATA,
                          description="1 = change, 0 = no change", overview_resampling="nearest")
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)


@dataclass
class Scored:
    """What scoring the scene measured: its histogram, valid pixels and the threshold taken from them."""

    hist: Histogram
    valid_pixels: int
    threshold: float
    rule: str


@dataclass
class Changes:
    """The change polygons, the changed pixels written to the mask, and the quicklook's outlines."""

    polygons: Any
    changed: int
    edges: ChangeEdges


def score_scene(pair: AlignedPair, method: ChangeMethod, opts: DetectOptions, run: Run, writers: ScoreWriters,
                run_res: float | None, progress: StageProgress | None, engine: EngineStats,
                blocks: Blocks | None) -> Scored:
    """The method's score over the scene, written window by window; the threshold from the scene histogram."""
    hist = Histogram()
    valid_pixels = 0
    with run.timings.stage("predict"), (dask_client(opts.scheduler, opts.workers) if opts.scheduler or opts.workers
                                        else nullcontext()) as client:
        if blocks is not None:
            blocks = replace(blocks, client=client)
        for window, values in score_strips(pair, method, opts, run_res, run.workdir, progress, engine, blocks):
            if writers.channels == 2:
                values, spread = values
                writers.uncertainty.write(window, spread)
            writers.score.write(window, values)
            valid_pixels += hist.update(values)
    threshold, rule = scene_threshold(method, hist, opts.threshold)
    return Scored(hist, valid_pixels, threshold, rule)


def write_changes(pair: AlignedPair, opts: DetectOptions, run: Run, writers: ScoreWriters, scored: Scored,
                  progress: StageProgress | None, *, orthorectified: bool) -> Changes:
    """Polygons and mask from the score (one pass), the backdrops, and every raster's COG."""
    score, mask, grid = writers.score, writers.mask, pair.grid
    # the score's COG is written by GDAL's threads while polygons and mask are made from it
    score.seal()
    score_cog = run.submit("cog (beside polygons)", score.publish)
    sink = _MaskSink(mask, ChangeEdges(grid))
    with run.timings.stage("polygons and mask"):
        regions = change_regions(
            score.read, grid, scored.threshold, CleanUp(opts.min_area_m2, opts.morphology_radius_px),
            mask_block=sink, nodata=MASK_NODATA, progress=stage_progress(progress, "polygons and mask"),
        )
        sink.rescue(regions.rescued)
        mask.seal()
    mask_cog = run.submit("mask cog (beside outputs)", mask.publish)
    with run.timings.stage("outputs"):
        write_backdrops(pair, run.staging, shift_px=pair.after_shift, orthorectified=orthorectified)
        write_layer(regions.polygons, writers.staged.polygons, DetectOutputs.layer)
    with run.timings.stage("cog"):
        score_cog.result()
        mask_cog.result()
        score.close()
        mask.close()
        if writers.uncertainty is not None:
            writers.uncertainty.finish()
    return Changes(regions.polygons, sink.changed, sink.edges)


def network_resolution(method: ChangeMethod, options: DetectOptions, grid: Grid) -> tuple[float | None, dict[str, Any] | None]:
    """The resolution (m) a trained network runs at when it is not the output grid's, and its record for run.json.

    ``options.model_resolution``: ``"auto"`` the checkpoint's training resolution (when known),
    ``"grid"`` the output grid, or metres. Warns when the scene is far from the training resolution.
    """
    if not hasattr(method, "gsd_m"):
        return None, None
    scene, trained = grid.res_m, method.gsd_m
    wanted = {"grid": None, "auto": trained}.get(options.model_resolution, options.model_resolution)
    run = None
    if wanted is not None and not SAME_RESOLUTION[0] <= scene / float(wanted) <= SAME_RESOLUTION[1]:
        run = float(wanted)
    if trained is not None and not FAR_RESOLUTION[0] <= scene / trained <= FAR_RESOLUTION[1]:
        if run is not None and math.isclose(run, trained):
            how = (f"the pair is resampled to {trained:g} m for it (and the score back to {scene:.2g} m); "
                   "resampling adds no detail, expect lower accuracy than at its training resolution")
        else:
            how = f"it runs at {(run or scene):.2g} m as asked (model_resolution); expect few or no detections"
        warnings.warn(f"the scene is at {scene:.2g} m and {method.name} was trained at {trained:g} m: {how}",
                      DeltacdWarning, stacklevel=2)
    record = {"trained_m": trained, "scene_m": round(scene, 4), "run_m": round(run or scene, 4),
              "rule": str(options.model_resolution)}
    return run, record


def block_settings(options: DetectOptions, staging: Path, inputs: list[Path], method: ChangeMethod,
                   prepared: PreparedPair) -> Blocks:
    """Where and how a run is made in blocks; the plan names everything the pieces depend on."""
    plan = {
        "deltacd_version": __version__,
        "inputs": [fingerprint(p) for p in inputs if p.exists()],
        "options": {k: v for k, v in options.to_dict().items() if k not in DetectOptions.execution},
        "method": method.describe(),
        "after_shift": list(prepared.pair.after_shift),
        "radiometry": prepared.radiometry,
    }
    cores = os.cpu_count() or 1
    # local workers share this machine's cores; a remote worker's threads each run one block
    threads = options.threads or (max(1, cores // options.workers) if options.workers else (1 if options.scheduler else None))
    return Blocks(staging / BLOCKS, plan, options.block_size or DEFAULT_BLOCK_SIZE, threads=threads)


def score_strips(
    pair: AlignedPair, method: ChangeMethod, options: DetectOptions, run_res: float | None, workdir: Path,
    progress: StageProgress | None, stats: EngineStats, blocks: Blocks | None = None,
) -> Iterator[tuple[Window, np.ndarray]]:
    """The method's score on ``pair.grid`` in strips: through the engine (in ``blocks`` when given), at ``run_res`` metres when given."""
    run_pair = pair if run_res is None else pair.on_grid(grid_at_resolution(pair.grid, run_res))
    if blocks is None:
        strips = predict_scene(run_pair, method, tile_size=options.tile_size, overlap=options.overlap,
                               batch_size=options.batch_size, progress=stage_progress(progress, "detect"), stats=stats,
                               threads=options.threads)
    else:
        task = SceneTask(run_pair, method, options.tile_size, options.overlap, options.batch_size, blocks.threads)
        strips = predict_in_blocks(task, blocks.folder, blocks.plan | {"grid": run_pair.grid.describe()},
                                   block_size=blocks.size, client=blocks.client, progress=stage_progress(progress, "blocks"),
                                   stats=stats)
    if run_res is None:
        yield from strips
        return
    scratch = write_strips(workdir / "score_at_model_resolution.tif", run_pair.grid, strips, channels=int(getattr(method, "channels", 1)))
    yield from read_on_grid(scratch, pair.grid)


#: Above this share of changed pixels a threshold has most likely split unchanged land.
MOSTLY_CHANGED = 0.5


def warn_if_mostly_changed(changed_pixels: int, valid_pixels: int, rule: str) -> None:
    if valid_pixels and changed_pixels / valid_pixels > MOSTLY_CHANGED:
        warnings.warn(
            f"{changed_pixels / valid_pixels:.0%} of the valid pixels are flagged as changed (threshold: {rule}); "
            "that is more often a radiometric or registration difference than real change: look at the score, "
            "give a --threshold, or check the harmonisation and co-registration in run.json",
            DeltacdWarning, stacklevel=2)


def scene_threshold(method: ChangeMethod, hist: Histogram, given: float | str) -> tuple[float, str]:
    """The threshold of a run and its rule: ``given``, or the method's own rule on the scene histogram."""
    if given != "auto":
        return float(given), "given (threshold setting)"
    if hist.total == 0:
        raise InputError("no valid pixel was scored; check the inputs' nodata and the AOI")
    return method.auto_threshold(hist), method.threshold_rule


@dataclass
class _MaskSink:
    """Writes the mask blocks :func:`change_regions` hands over; gathers the quicklook's outlines and the changed pixels."""

    writer: RasterWriter
    edges: ChangeEdges
    changed: int = 0

    def __call__(self, window: Window, values: np.ndarray) -> None:
        self.writer.write(window, values)
        self.edges.add(window, values)
        self.changed += int(np.count_nonzero(values == 1))

    def rescue(self, rescued: list[tuple[Window, np.ndarray]]) -> None:
        """Add the pixels that were waiting for the merge across blocks (:attr:`ChangeRegions.rescued`)."""
        self.changed += rescue_pixels(self.writer.read, self.writer.write, rescued)
        for window, pixels in rescued:
            self.edges.add_pixels(window, pixels)


def _run_record(run: Run, prepared: PreparedPair, opts: DetectOptions, method: ChangeMethod, scored: Scored,
                changes: Changes, resolution: dict[str, Any] | None) -> dict[str, Any]:
    grid = prepared.pair.grid
    valid, changed = scored.valid_pixels, changes.changed
    return run.record(
        prepared.inputs,
        grid=grid.describe(),
        bands=list(prepared.pair.bands),
        options=opts.to_dict(),
        coregistration=prepared.coregistration.describe() if prepared.coregistration else None,
        radiometry=prepared.radiometry,
        method=method.describe() | {"score_units": method.score_units},
        model_resolution=resolution,
        threshold={"value": scored.threshold, "rule": scored.rule,
                   "fraction_of_pixels_above": scored.hist.fraction_above(scored.threshold)},
        score_histogram=scored.hist.describe(),
        results={
            "valid_pixels": valid,
            "changed_pixels": changed,
            "changed_fraction": changed / valid if valid else None,
            "changed_area_ha": changed * grid.pixel_area_m2 / 1e4,
            "polygons": len(changes.polygons),
        },
        outputs={"score": SCORE, "mask": DetectOutputs.MASK, "polygons": DetectOutputs.POLYGONS,
                 "quicklook": DetectOutputs(".").quicklook.name},
    )
