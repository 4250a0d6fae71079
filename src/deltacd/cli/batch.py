"""``deltacd batch``: detect on many pairs with the same settings.

Run detect on every pair of PAIRS (a CSV with columns name,before,after; paths relative to it) into OUT/NAME/,
and record each pair's outcome in OUT/batch.json. --workers N / --scheduler ADDRESS send whole pairs to a Dask
cluster; a failed pair does not stop the others.

API: :func:`deltacd.batch.detect_batch`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deltacd.cli.common import progress_bars
from deltacd.cli.detect import add_detect_flags, detect_options
from deltacd.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", metavar="PAIRS", help="CSV file: name,before,after")
    p.add_argument("-o", "--out", required=True, help="batch folder (new, empty, or an earlier batch's)")
    p.add_argument("--overwrite", action="store_true", help="replace the pairs' existing output folders")
    p.add_argument("--resume", action="store_true", help="skip complete pairs and continue interrupted ones")
    add_detect_flags(p)


def run(args: argparse.Namespace) -> int:
    from deltacd.batch import detect_batch

    options = detect_options(args)
    workers, scheduler = options.pop("workers", None), options.pop("scheduler", None)
    with progress_bars(args) as bars:
        record = detect_batch(args.pairs, args.out, workers=workers, scheduler=scheduler, overwrite=args.overwrite,
                              resume=args.resume, progress=bars.stage("pairs"), **options)
    for line in record["pairs"]:
        detail = line.get("error") or (f"{line['polygons']} change polygons" if "polygons" in line else "")
        print(f"{line['name']}: {line['status']} ({line['seconds']:.1f} s){': ' + detail if detail else ''}")
    print(f"batch record: {Path(args.out) / 'batch.json'}")
    if record["failed"]:
        raise InputError(f"{record['failed']} of {len(record['pairs'])} pairs failed (above); fix them and rerun with --resume")
    return 0
