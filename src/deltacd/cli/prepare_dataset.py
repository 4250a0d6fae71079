"""``deltacd prepare-dataset``: build a training dataset from ground truth.

Cut chips from change ground truth (A/B/label chip folders, a GeoTIFF pair with change polygons or two
land-cover maps, xBD damage labels), split them by spatial blocks, and write A/, B/, label/, chips.csv and
manifest.json into OUT. CONFIG is a YAML file with the fields of deltacd.datasets.DatasetConfig
(example: examples/dataset_levir_dsifn.yaml).

API: :func:`deltacd.datasets.prepare_dataset`.
"""

from __future__ import annotations

import argparse

from deltacd.cli.common import progress_bars


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="dataset YAML file")
    p.add_argument("out", metavar="OUT", help="dataset folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")


def run(args: argparse.Namespace) -> int:
    from deltacd.datasets import load_manifest, prepare_dataset

    with progress_bars(args) as bars:
        out = prepare_dataset(args.config, args.out, overwrite=args.overwrite, progress=bars.stage("chips"))
    manifest = load_manifest(out)
    splits = ", ".join(f"{k} {v}" for k, v in manifest.splits.items())
    print(f"dataset in {out}/: {splits} chips of {manifest.chip_size} px, bands {','.join(manifest.bands)} (manifest.json)")
    return 0
