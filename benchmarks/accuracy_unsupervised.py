"""Accuracy of CVA and IR-MAD with their automatic thresholds on labelled real pairs.

Data (../shared/data): the 7 OSCD cities with all 13 Sentinel-2 bands (labels: 1 no change,
2 change, on the 10 m band grid) and the 2 Landsat TM pairs (Nanjing, Taizhou; sample labels
``change.bmp`` / ``unchanged.bmp``, only their pixels count). Each pair goes through
``deltacd.detect`` with default settings except the method and ``min_area_m2=0`` (the labels are
per pixel); the change mask is compared with
the labels pixel to pixel (OSCD: the output grid is the 10 m band grid in EPSG:4326, so no label
is resampled). Prints one row per pair and the pooled (micro) scores per data set and method.

    python benchmarks/accuracy_unsupervised.py [--out benchmarks/_work/accuracy]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

import deltacd
from deltacd.evaluate.metrics import ConfusionMatrix

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OSCD_CITIES = ["aguasclaras", "bercy", "bordeaux", "hongkong", "nantes", "paris", "rennes"]
METHODS = ["cva", "irmad"]


def oscd_cases():
    root = DATA / "oscd_changedetectionrepository"
    for city in OSCD_CITIES:
        folder = root / "images" / city
        b02 = next((folder / "imgs_1").glob("*_B02.tif"))
        with rasterio.open(b02) as src:
            res = (src.transform.a, -src.transform.e)
            shape = src.shape
        with rasterio.open(root / "train_labels" / city / "cm" / f"{city}-cm.tif") as src:
            label = src.read(1)
        assert label.shape == shape, (city, label.shape, shape)
        reference = np.where(label == 2, 1, 0).astype(np.uint8)
        options = dict(crs="EPSG:4326", resolution=res)
        yield "OSCD", city, folder / "imgs_1", folder / "imgs_2", reference, np.ones(shape, bool), options


def _marked(path: Path) -> np.ndarray:
    """Pixels marked in a sample-label bitmap (any non-zero value, palette or RGB)."""
    values = np.array(Image.open(path))
    return (values if values.ndim == 2 else values.max(axis=-1)) > 0


def landsat_cases():
    root = DATA / "landsat-taizhou-nanjing_changedetectionrepository"
    pairs = {
        "Nanjing": ("LT51200382000124BJC00_Nanjing", "LT51200382002193BJC00_Nanjing"),
        "Taizhou": ("2000TM", "2003TM"),
    }
    for name, (first, second) in pairs.items():
        folder = root / name
        changed, unchanged = (_marked(folder / f"{kind}.bmp") for kind in ("change", "unchanged"))
        yield "Landsat", name, folder / first, folder / second, changed.astype(np.uint8), changed | unchanged, {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for the detect outputs (default: a temporary folder)")
    parser.add_argument("--harmonise", default="pif", choices=["pif", "histogram", "none"], help="detect's harmonisation (default pif)")
    parser.add_argument("--pairs", nargs="+", help="only these pairs (e.g. Taizhou rennes); default: all")
    args = parser.parse_args()
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="deltacd-accuracy-"))
    pooled: dict[tuple[str, str], ConfusionMatrix] = {}
    print(f"{'data':8s} {'pair':12s} {'method':6s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'kappa':>6s} {'labelled px':>11s} {'thr':>8s}")
    for dataset, name, before, after, reference, labelled, options in [*oscd_cases(), *landsat_cases()]:
        if args.pairs and name not in args.pairs:
            continue
        for method in METHODS:
            result = deltacd.detect(before, after, out_root / f"{name}_{method}", method=method, overwrite=True,
                                    min_area_m2=0, harmonise=args.harmonise, **options)
            with rasterio.open(result.mask) as src:
                mask = src.read(1)
            if mask.shape != reference.shape:
                print(f"{name}: output grid {mask.shape} differs from the label grid {reference.shape}", file=sys.stderr)
                return 1
            valid = labelled & (mask != 255)
            cm = ConfusionMatrix(2).update(np.where(mask == 1, 1, 0), reference, valid=valid)
            pooled.setdefault((dataset, method), ConfusionMatrix(2)).merge(cm)
            print(f"{dataset:8s} {name:12s} {method:6s} {cm.f1:6.3f} {cm.precision:6.3f} {cm.recall:6.3f} {cm.kappa:6.3f} "
                  f"{int(valid.sum()):11d} {result.record['threshold']['value']:8.3f}")
    print("\npooled over the pairs of each data set (micro average)")
    print(f"{'data':8s} {'method':6s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'kappa':>6s}")
    for (dataset, method), cm in pooled.items():
        print(f"{dataset:8s} {method:6s} {cm.f1:6.3f} {cm.precision:6.3f} {cm.recall:6.3f} {cm.kappa:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
