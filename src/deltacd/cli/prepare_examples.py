"""``deltacd prepare-examples``: write the data of the example studies.

Write into OUT what the example studies (examples/*.yaml) need from the shared data sets: land-cover maps,
georeferenced labels and zones for OSCD Bordeaux, the IGN land-cover mosaics, an Ida-BD tile as a GeoTIFF pair
with footprints.

API: :func:`deltacd.study.examples.prepare_examples`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: The repository holding this package (src/deltacd/cli/ -> the repository) in a source checkout.
REPOSITORY = Path(__file__).resolve().parents[3]


def add_arguments(p: argparse.ArgumentParser) -> None:
    default_data = REPOSITORY.parent / "shared" / "data"
    p.add_argument("--data", default=str(default_data), help=f"the shared data folder (default {default_data})")
    p.add_argument("-o", "--out", default=str(REPOSITORY / "examples" / "data"),
                   help="output folder (default examples/data of the repository)")


def run(args: argparse.Namespace) -> int:
    from deltacd.study.examples import prepare_examples

    out = prepare_examples(args.data, args.out)
    print(f"example data in {out}/ (from {args.data}); now e.g. deltacd run examples/coast_landcover_oscd.yaml")
    return 0
