"""``deltacd evaluate-damage``: score building grades against a reference study.

Join OURS (a damage output folder or its buildings.gpkg) to REFERENCE (a building layer with a grade field) by id
or by best overlap, and write the per-building confusion matrix of grades, per-grade precision/recall/F1 and
damaged-vs-undamaged F1 with block-bootstrap intervals, weighted kappa, counts and areas per grade, and an
agreement map (GeoPackage, COG, PNG) into OUT.

API: :func:`deltacd.evaluate.damage.evaluate_damage`.
"""

from __future__ import annotations

import argparse

from deltacd.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ours", metavar="OURS")
    p.add_argument("reference", metavar="REFERENCE")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--reference-field", required=True, help="grade field of REFERENCE")
    p.add_argument("--grade-table", default="deltacd",
                   help="how REFERENCE's grades map to ours: deltacd, xbd, ems98, copernicus, or a YAML file")
    p.add_argument("--id-field", help="id field of OURS (with --reference-id-field: join by id)")
    p.add_argument("--reference-id-field", help="id field of REFERENCE")
    p.add_argument("--min-iou", type=float, default=0.25, help="smallest overlap (IoU) that matches two buildings (default 0.25)")
    p.add_argument("--reference-masks", help="LOCALISATION.tif,DAMAGE.tif of the reference (xView2 convention) for the xView2 score")
    p.add_argument("--block-m", type=float, default=250.0, help="bootstrap block side in m (default 250)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from deltacd.evaluate.damage import evaluate_damage

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
