"""Robustness of CVA, IR-MAD (and a learned model) when the after image is degraded: tables and curves.

Each perturbation of :mod:`deltacd.evaluate.perturb` is applied to the after image at a few
strengths and the pair goes through ``deltacd.detect`` with its default settings (radiometric
harmonisation ``"pif"`` included; ``--harmonise none`` to switch it off) via
:func:`deltacd.evaluate.robustness.robustness_study`. F1 is pooled over the pairs of a data set
(micro: confusion matrices summed over the pairs, per method and strength).

Data (../shared/data, read only):

* ``levir``: the 7 LEVIR-CD test crops (``levircd_bitcd``, ``test_*.png``, 256 x 256, 8-bit
  RGB, 0.5 m). The PNGs carry no georeferencing; each is written as an RGB GeoTIFF on an arbitrary
  local grid (EPSG:32615, 0.5 m pixels, fixed origin) since only pixel-to-pixel comparison
  matters, and detect runs with ``crs``/``resolution`` of that grid, ``coregistration="off"`` and
  ``min_area_m2=0``; the output grid is checked to be the input grid. Reference: label > 0.
  Data range 255. Methods: cva, irmad and each ``--model`` (e.g. ``tinycd:...levir_best.pth``,
  when ``deltacd.methods.learned`` is importable; skipped otherwise).
* ``oscd``: the 7 OSCD cities with 13 Sentinel-2 bands (``oscd_changedetectionrepository``).
  Before and after are the band folders ``imgs_1``/``imgs_2``; detect runs with
  ``crs="EPSG:4326"`` and ``resolution`` = B02's pixel size, which reproduces the label grid
  (labels ``<city>-cm.tif``: 2 = change). The perturbed after image is one 13-band GeoTIFF on that
  10 m grid (20 m and 60 m bands resampled by the same warp detect uses), so spatial strengths
  are in 10 m pixels. Data range 10000 (L1C reflectance x 10000), so noise and offsets are
  fractions of reflectance 1. Methods: cva, irmad (the RGB learned models do not apply).
* with ``--model``, a transfer table (:func:`deltacd.evaluate.robustness.cross_dataset`): each
  model on the LEVIR crops and on the 14 OSCD RGB renders (``images/<city>/pair/img1.png``,
  ``img2.png``, 10 m, same local-grid trick), F1 per source.

Default strengths are a subset (two per perturbation, plus 0); ``--full`` runs each
perturbation's default list. Outputs: ``benchmarks/results/robustness_<data>.csv`` (pooled rows)
and ``.txt`` (the printed table), ``docs/figures/robustness_<data>.png``; the detect runs go to
``--work`` (default ``benchmarks/_work/robustness``).

    python benchmarks/robustness.py [--data levir oscd] [--full] [--harmonise pif|none]
        [--model tinycd:../shared/data/checkpoints_tinycd/levir_best.pth] [--cities bercy rennes]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from deltacd.evaluate.robustness import LabelledPair, cross_dataset, robustness_study
from deltacd.io.grid import Grid

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"
OSCD_CITIES = ["aguasclaras", "bercy", "bordeaux", "hongkong", "nantes", "paris", "rennes"]
OSCD_ALL = ["abudhabi", "aguasclaras", "beihai", "beirut", "bercy", "bordeaux", "cupertino", "hongkong", "mumbai",
            "nantes", "paris", "pisa", "rennes", "saclay_e"]
LOCAL_CRS = "EPSG:32615"

#: Default subset: a moderate and a strong value of each perturbation (0 is always added).
QUICK = {
    "gain": [0.2, 0.5], "offset": [0.05, 0.2], "gamma": [0.25, 1.0], "haze": [0.2, 0.5], "blur": [1.0, 3.0],
    "noise": [0.01, 0.05], "jpeg": [25.0, 75.0], "shift": [1.0, 3.0], "coarsen": [2.0, 4.0],
}


def write_local_geotiff(array: np.ndarray, path: Path, pixel: float, descriptions: tuple[str, ...] | None = None) -> Grid:
    """``array`` [C, H, W] as a GeoTIFF on an arbitrary local grid (EPSG:32615, fixed origin)."""
    transform = Affine(pixel, 0, 500_000.0, 0, -pixel, 3_400_000.0)
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                       dtype=array.dtype, crs=LOCAL_CRS, transform=transform) as dst:
        dst.write(array)
        if descriptions:
            dst.descriptions = descriptions
        return Grid.of(dst)


def png_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()


def png_label(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return (np.asarray(im.convert("L")) > 0).astype(np.uint8)


def levir_pairs(tmp: Path) -> tuple[list[LabelledPair], dict[str, Grid]]:
    root = DATA / "levircd_bitcd"
    pairs, grids = [], {}
    for png in sorted((root / "label").glob("test_*.png")):
        name = png.stem
        a = tmp / f"{name}_A.tif"
        grids[name] = write_local_geotiff(png_rgb(root / "A" / png.name), a, 0.5, ("R", "G", "B"))
        b = tmp / f"{name}_B.tif"
        write_local_geotiff(png_rgb(root / "B" / png.name), b, 0.5, ("R", "G", "B"))
        options = {"crs": LOCAL_CRS, "resolution": 0.5, "min_area_m2": 0, "coregistration": "off"}
        pairs.append(LabelledPair(name, a, b, png_label(png), source="LEVIR-CD", options=options))
    return pairs, grids


def oscd_label(city: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the label files carry no georeferencing
        with rasterio.open(DATA / "oscd_changedetectionrepository" / "train_labels" / city / "cm" / f"{city}-cm.tif") as src:
            return (src.read(1) == 2).astype(np.uint8)


def oscd_pairs(cities: list[str]) -> tuple[list[LabelledPair], dict[str, Grid]]:
    root = DATA / "oscd_changedetectionrepository" / "images"
    pairs, grids = [], {}
    for city in cities:
        folder = root / city
        with rasterio.open(next((folder / "imgs_1").glob("*_B02.tif"))) as src:
            grids[city] = Grid.of(src)
            res = (src.transform.a, -src.transform.e)
        options = {"crs": "EPSG:4326", "resolution": res, "min_area_m2": 0, "coregistration": "off"}
        pairs.append(LabelledPair(city, folder / "imgs_1", folder / "imgs_2", oscd_label(city), source="OSCD", options=options))
    return pairs, grids


def oscd_rgb_pairs(tmp: Path) -> list[LabelledPair]:
    root = DATA / "oscd_changedetectionrepository" / "images"
    pairs = []
    for city in OSCD_ALL:
        a, b = tmp / f"oscd_{city}_1.tif", tmp / f"oscd_{city}_2.tif"
        write_local_geotiff(png_rgb(root / city / "pair" / "img1.png"), a, 10.0, ("R", "G", "B"))
        write_local_geotiff(png_rgb(root / city / "pair" / "img2.png"), b, 10.0, ("R", "G", "B"))
        options = {"crs": LOCAL_CRS, "resolution": 10.0, "min_area_m2": 0, "coregistration": "off"}
        pairs.append(LabelledPair(city, a, b, oscd_label(city), source="OSCD-RGB", options=options))
    return pairs


def load_models(specs: list[str]) -> list:
    if not specs:
        return []
    try:
        from deltacd.methods.learned import LearnedModel
    except ImportError as exc:
        print(f"learned models skipped: deltacd.methods.learned is not importable ({exc})", file=sys.stderr)
        return []
    models = []
    for spec in specs:
        model = LearnedModel.from_file(spec, device="auto")
        stem = Path(spec.split(":", 1)[-1]).stem
        model.name = f"{model.spec.name}-{stem}"  # distinct labels for two checkpoints of one architecture
        models.append(model)
    return models


def check_grids(result_json: Path, grids: dict[str, Grid]) -> None:
    """The grid each pair was perturbed and detected on must be the input's own grid."""
    settings = json.loads(result_json.read_text())["settings"]
    for pair in settings["pairs"]:
        expected = grids[pair["name"]].describe()
        got = pair["grid"]
        same = (got["width"], got["height"]) == (expected["width"], expected["height"]) and np.allclose(
            got["transform"], expected["transform"], rtol=0, atol=1e-9 * max(1.0, abs(expected["transform"][2])))
        if not same:
            raise SystemExit(f"{pair['name']}: output grid {got} differs from the input grid {expected}")


def run_dataset(name: str, pairs, grids, methods, args, data_range: float) -> None:
    strengths = None if args.full else QUICK
    started = time.perf_counter()
    print(f"\n[{name}] {len(pairs)} pairs x {len(methods)} methods", file=sys.stderr, flush=True)

    def progress(done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            print(f"  {done}/{total} runs, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    options = {"harmonise": args.harmonise}
    title = f"{name}: {len(pairs)} pairs pooled (micro F1), harmonise={args.harmonise}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # harmonisation notes repeated on every run
        result = robustness_study(pairs, args.work / name, methods=methods, strengths=strengths, detect_options=options,
                                  data_range=data_range, overwrite=True, progress=progress, title=title)
    check_grids(result.json, grids)
    elapsed = time.perf_counter() - started
    suffix = "" if args.harmonise == "pif" else f"_{args.harmonise}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    FIGURES.mkdir(parents=True, exist_ok=True)
    shutil.copy(result.csv, RESULTS / f"robustness_{name}{suffix}.csv")
    shutil.copy(result.png, FIGURES / f"robustness_{name}{suffix}.png")
    # strength 0 is run once per pair and method and repeated in every perturbation's rows
    runs = sum(1 for r in result.pair_rows if r.strength != 0) + len({(r.method, r.pair) for r in result.pair_rows})
    header = (f"{name}: F1 pooled over {len(pairs)} pairs (micro), detect defaults + harmonise={args.harmonise}, "
              f"{runs} detect runs in {elapsed:.0f} s\n")
    text = header + result.table() + "\n"
    (RESULTS / f"robustness_{name}{suffix}.txt").write_text(text)
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=["levir", "oscd"], default=["levir", "oscd"])
    parser.add_argument("--full", action="store_true", help="every default strength of each perturbation (slow)")
    parser.add_argument("--harmonise", choices=["pif", "histogram", "none"], default="pif")
    parser.add_argument("--model", action="append", default=[], help="learned model for LEVIR and the transfer table, "
                        "e.g. tinycd:../shared/data/checkpoints_tinycd/levir_best.pth (repeatable)")
    parser.add_argument("--cities", nargs="+", choices=OSCD_CITIES, default=OSCD_CITIES)
    parser.add_argument("--no-cross", action="store_true", help="skip the transfer table")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "robustness")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # harmonisation notes on every run would drown the table
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    models = load_models(args.model)
    with tempfile.TemporaryDirectory(prefix="deltacd-robustness-") as tmp:
        tmp = Path(tmp)
        if "levir" in args.data:
            pairs, grids = levir_pairs(tmp)
            run_dataset("levir", pairs, grids, ["cva", "irmad", *models], args, data_range=255.0)
        if "oscd" in args.data:
            pairs, grids = oscd_pairs(args.cities)
            run_dataset("oscd", pairs, grids, ["cva", "irmad"], args, data_range=10000.0)
        if models and not args.no_cross:
            levir, _ = levir_pairs(tmp)
            pairs = [*levir, *oscd_rgb_pairs(tmp)]
            lines = []
            for model in models:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = cross_dataset(model, pairs, args.work / f"cross_{model.name}", overwrite=True,
                                           detect_options={"harmonise": args.harmonise})
                lines.append(f"model {model.name}\n{result.table()}")
            text = ("transfer: each model on LEVIR-CD test crops and OSCD RGB renders, F1 pooled per source, "
                    f"harmonise={args.harmonise}\n" + "\n\n".join(lines) + "\n")
            (RESULTS / "robustness_transfer.txt").write_text(text)
            print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
