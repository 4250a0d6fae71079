"""Post-classification comparison (PCC) against deltacd's CVA and IR-MAD on the 7 OSCD cities with 13 bands.

The agency's current method is PCC: a land-cover map at each date, change where the class
differs. Here a SIMPLE rule-based land-cover map stands in for their land-cover model, built
from the 10 m Sentinel-2 L1C bands (top-of-atmosphere reflectance x 10 000) of each date:

* NDVI = (B08 - B04) / (B08 + B04), NDWI = (B03 - B08) / (B03 + B08) (McFeeters 1996,
  doi:10.1080/01431169608948714), brightness = mean(B02, B03, B04, B08);
* class 1 **water**:      NDWI > 0.2 and brightness < 1000 (green above NIR, and dark: the
  brightness test keeps hazy or shadowed built-up areas, whose TOA NDWI is often > 0, out of water);
* class 2 **vegetation**: not water and NDVI > 0.35 (a TOA threshold, lower than a surface one);
* class 3 **bare/built**: everything else;
* class 0 (nodata) where any of the four bands is 0.

Thresholds were set once by looking at the NDVI/NDWI distributions of the 14 images, not tuned
on the change labels. PCC change = class at date 1 != class at date 2.

For each city: PCC; ``deltacd.detect`` with ``cva`` and ``irmad`` (``crs="EPSG:4326"``,
``resolution`` = the B02 pixel size, so the output grid IS the label grid; bands as read from the
folder, all 13); ``deltacd.evaluate.compare.compare`` of each against PCC with the OSCD labels
(``train_labels/<city>/cm/<city>-cm.tif``: 1 no change, 2 change; no georeferencing, so they are
written with the B02 file's CRS and transform) as reference. Prints per city and pooled (micro:
summed confusion matrices) F1 / precision / recall / kappa of each method against the labels and
the agreement shares with PCC, and draws the agreement map of one city as a PNG.

    python benchmarks/oscd_pcc.py [--out benchmarks/_work/oscd_pcc] [--figure-city rennes]
                                  [--figure docs/figures/oscd_rennes_agreement.png] [--model PATH]

``--model PATH`` adds a learned model (``deltacd.methods.learned.LearnedModel.from_file``); it is
skipped with a message when that module or the file cannot be loaded.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

import deltacd
from deltacd.evaluate.compare import compare
from deltacd.evaluate.metrics import ConfusionMatrix
from deltacd.report.figures import agreement_figure
from deltacd.study.examples import RULE_CLASSES, VEGETATION_NDVI, WATER_MAX_BRIGHTNESS, WATER_NDWI, band_file
from deltacd.study.examples import rule_land_cover as land_cover
from deltacd.study.examples import write_raster as write

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "oscd_changedetectionrepository"
CITIES = ["aguasclaras", "bercy", "bordeaux", "hongkong", "nantes", "paris", "rennes"]
CLASSES = RULE_CLASSES


def load_model(path: str | None):
    if path is None:
        return None
    try:
        from deltacd.methods.learned import LearnedModel
    except ImportError as exc:
        print(f"--model: deltacd.methods.learned is not available ({exc}); skipped", file=sys.stderr)
        return None
    try:
        return LearnedModel.from_file(path)
    except Exception as exc:  # a benchmark goes on without the optional model
        print(f"--model {path}: cannot be loaded ({exc}); skipped", file=sys.stderr)
        return None


def fmt(cm: ConfusionMatrix) -> str:
    return f"{cm.f1:6.3f} {cm.precision:6.3f} {cm.recall:6.3f} {cm.kappa:6.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="work folder (default: a temporary folder)")
    parser.add_argument("--figure-city", default="rennes", choices=CITIES)
    parser.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "oscd_rennes_agreement.png"),
                        help="PNG of the agreement map of --figure-city (CVA vs PCC)")
    parser.add_argument("--model", help="optional learned checkpoint (deltacd .safetensors or ARCH:PATH)")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates of the F1 intervals")
    args = parser.parse_args()
    # the OSCD labels carry no georeferencing (handled above), and the radiometry's per-band fallback
    # messages are expected on these seasonal pairs: keep the table readable
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    logging.getLogger("deltacd.prepare.radiometry").setLevel(logging.ERROR)
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="deltacd-oscd-pcc-"))
    out_root.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    methods: list[tuple[str, dict]] = [("cva", {"method": "cva"}), ("irmad", {"method": "irmad"})]
    if model is not None:
        methods.append(("model", {"method_instance": model}))

    pooled: dict[str, ConfusionMatrix] = {}
    pooled_agreement: dict[str, np.ndarray] = {}
    header = (f"{'city':12s} {'method':6s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'kappa':>6s}   "
              f"{'neither':>7s} {'only':>6s} {'onlyPCC':>7s} {'both':>6s} {'s':>5s}")
    print(f"land cover: water NDWI>{WATER_NDWI} & brightness<{WATER_MAX_BRIGHTNESS:g}; vegetation NDVI>{VEGETATION_NDVI}; else bare/built")
    print("agreement shares: of the pixels compared; 'only' = change only in the method, 'onlyPCC' = only in PCC")
    print(header)
    for city in CITIES:
        folder = DATA / "images" / city
        with rasterio.open(band_file(folder / "imgs_1", "B02")) as src:
            profile = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
            res = (src.transform.a, -src.transform.e)
        with rasterio.open(DATA / "train_labels" / city / "cm" / f"{city}-cm.tif") as src:
            label = src.read(1)
        if label.shape != (profile["height"], profile["width"]):
            print(f"{city}: label {label.shape} is not on the B02 grid {(profile['height'], profile['width'])}", file=sys.stderr)
            return 1
        work = out_root / city
        work.mkdir(exist_ok=True)
        ref = write(work / "reference.tif", np.where(label == 2, 1, 0).astype(np.uint8), profile, None)
        lc1 = write(work / "landcover_1.tif", land_cover(folder / "imgs_1", profile), profile, 0)
        lc2 = write(work / "landcover_2.tif", land_cover(folder / "imgs_2", profile), profile, 0)
        pcc_done = False
        for name, how in methods:
            start = time.perf_counter()
            result = deltacd.detect(folder / "imgs_1", folder / "imgs_2", work / f"detect_{name}", overwrite=True,
                                    crs="EPSG:4326", resolution=res, **how)
            with rasterio.open(result.mask) as src:
                if src.shape != label.shape:
                    print(f"{city}: output grid {src.shape} differs from the label grid {label.shape}", file=sys.stderr)
                    return 1
            cmp = compare(result.mask, lc1, lc2, work / f"compare_{name}", reference=ref, classes=CLASSES,
                          n_boot=args.n_boot, overwrite=True, figures=False)
            seconds = time.perf_counter() - start
            shares = cmp.agreement_pixels / cmp.agreement_pixels.sum()
            if not pcc_done:
                print(f"{city:12s} {'PCC':6s} {fmt(cmp.pcc_vs_reference)}")
                pooled.setdefault("PCC", ConfusionMatrix(2)).merge(cmp.pcc_vs_reference)
                pcc_done = True
            print(f"{city:12s} {name:6s} {fmt(cmp.ours_vs_reference)}   "
                  + " ".join(f"{s:7.1%}" if i in (0, 2) else f"{s:6.1%}" for i, s in enumerate(shares)) + f" {seconds:5.1f}")
            pooled.setdefault(name, ConfusionMatrix(2)).merge(cmp.ours_vs_reference)
            pooled_agreement[name] = pooled_agreement.get(name, 0) + cmp.agreement_pixels
            if city == args.figure_city and name == "cva":
                figure = Path(args.figure)
                figure.parent.mkdir(parents=True, exist_ok=True)
                agreement_figure(cmp.agreement, figure, names=("CVA", "PCC"), shares=shares.tolist(), reference=ref,
                                 title=f"OSCD {city}: CVA (deltacd) vs post-classification comparison, 10 m")
    print("\npooled over the 7 cities (summed confusion matrices)")
    print(f"{'method':6s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'kappa':>6s}   {'neither':>7s} {'only':>6s} {'onlyPCC':>7s} {'both':>6s}")
    for name, cm in pooled.items():
        line = f"{name:6s} {fmt(cm)}"
        if name in pooled_agreement:
            s = pooled_agreement[name] / pooled_agreement[name].sum()
            line += "   " + " ".join(f"{v:7.1%}" if i in (0, 2) else f"{v:6.1%}" for i, v in enumerate(s))
        print(line)
    print(f"\nfigure: {args.figure}\nwork folder: {out_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
