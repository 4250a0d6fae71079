"""``deltacd compare``: set a change map against post-classification comparison.

Derive the change map of the current method (two land-cover maps, LC_BEFORE and LC_AFTER, compared class by
class) and set OURS against it: agreement map (0 neither, 1 only ours, 2 only post-classification, 3 both) as
COG and polygons, from/to transition areas, and with --reference both methods' scores on the same pixels.

API: :func:`deltacd.evaluate.compare.compare`.
"""

from __future__ import annotations

import argparse

from deltacd.cli.common import classes, progress_bars


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from deltacd.evaluate.compare import compare

    with progress_bars(args) as bars:
        result = compare(
            args.ours, args.landcover_before, args.landcover_after, args.out, reference=args.reference,
            classes=classes(args.classes), class_field=args.class_field, reference_field=args.reference_field,
            all_touched=args.all_touched, figures=not args.no_figures, overwrite=args.overwrite,
            progress=bars.stage("compare"),
        )
    shares = ", ".join(f"{name} {v['share']:.1%}" for name, v in result.summary["agreement"].items())
    print(f"agreement ({shares}); map, from/to transitions and scores in {result.out_dir}/ (compare.json)")
    return 0
