"""``deltacd evaluate``: score a change map against a reference.

Score PREDICTION (a change_mask.tif, or a class map) against REFERENCE (a raster, or polygons burnt on the
prediction's grid with the pixel-centre rule; without --reference-field everything outside them is no change).
Writes metrics.json, metrics.csv, objects.csv and figures into OUT: confusion matrix, precision, recall, F1, IoU,
kappa with 95 % block-bootstrap intervals, objects found (IoU >= 0.5), hectares found/missed/false, and with
--score a precision-recall curve and F1 against threshold.

API: :func:`deltacd.evaluate.evaluate.evaluate`.
"""

from __future__ import annotations

import argparse

from deltacd.cli.common import classes, progress_bars


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from deltacd.evaluate.evaluate import evaluate

    with progress_bars(args) as bars:
        result = evaluate(
            args.prediction, args.reference, args.out, score=args.score, reference_kind=args.reference_kind,
            classes=classes(args.classes), strata=args.strata, reference_field=args.reference_field,
            strata_field=args.strata_field, all_touched=args.all_touched, block_size=args.block_size,
            n_boot=args.n_boot, seed=args.seed, object_rule=args.object_rule, iou_threshold=args.iou_threshold,
            figures=not args.no_figures, overwrite=args.overwrite, progress=bars.stage("evaluate"),
        )
    cm, ci = result.confusion, result.intervals
    line = f"F1 {cm.f1:.3f}" if cm.n_classes == 2 else f"overall accuracy {cm.overall_accuracy:.3f}"
    if "f1" in ci:
        line += f" (95 % CI {ci['f1'].low:.3f}-{ci['f1'].high:.3f})"
    print(f"{line}, kappa {cm.kappa:.3f}; metrics.json, metrics.csv and figures in {result.out_dir}/")
    return 0
