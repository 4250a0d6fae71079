"""``deltacd robustness``: F1 of change methods as the after image is degraded.

Degrade AFTER in controlled steps (gain, offset, gamma, haze, blur, noise, jpeg, shift, coarsen), run detect
on each degraded pair and score change_mask.tif against REFERENCE (raster: 0 no change, >0 change, 255 not
counted). Writes robustness.csv, robustness.json and robustness.png (F1 against strength) into OUT.

API: :mod:`deltacd.evaluate.robustness`.
"""

from __future__ import annotations

import argparse

from deltacd.cli.common import floats, image_argument, load_config, progress_bars


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from deltacd.evaluate.robustness import LabelledPair, format_table, resolve_method, robustness_study

    methods = [resolve_method(item.strip()) for item in args.methods.split(",") if item.strip()]
    options = load_config(args.config)
    if args.harmonise:
        options["harmonise"] = args.harmonise
    perturbations = [item.strip() for item in args.perturbations.split(",")] if args.perturbations else None
    with progress_bars(args) as bars:
        pair = LabelledPair("pair", image_argument(args.before), image_argument(args.after), args.reference)
        result = robustness_study(
            [pair], args.out, methods=methods, perturbations=perturbations,
            strengths=floats(args.strengths, "--strengths"), detect_options=options, data_range=args.data_range,
            seed=args.seed, keep_runs=args.keep_runs, overwrite=args.overwrite, progress=bars.stage("robustness"),
        )
    print(format_table(result.rows))
    print(f"robustness.csv, robustness.json and robustness.png in {result.out_dir}/")
    return 0
