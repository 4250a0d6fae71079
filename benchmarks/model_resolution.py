"""A network run away from its training resolution: TinyCD-LEVIR on LEVIR-CD test crops coarsened 3x.

The 7 LEVIR-CD test crops (0.5 m nominal, 0.52-0.59 m in their EPSG:4326 grid) are averaged 3 x 3
into ~1.7 m pairs and run through ``deltacd detect --model tinycd:levir_best.pth`` twice: with
``model_resolution="auto"`` (the pair resampled to the 0.5 m the checkpoint was trained at, the
score back to the 1.7 m grid) and ``"grid"`` (the network on the 1.7 m pixels). The masks are scored
against the labels averaged 3 x 3 (a coarse pixel is changed when half its fine pixels are).

Usage::

    python benchmarks/model_resolution.py [--data DIR] [--out benchmarks/results/model_resolution.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp, Resampling

import deltacd
from levir import georeference_levir_crop

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FACTOR = 3


def coarsen(src_path: Path, dst_path: Path, factor: int = FACTOR) -> Path:
    """Average ``factor`` x ``factor`` pixels of an RGB GeoTIFF into one."""
    with rasterio.open(src_path) as src:
        shape = (src.count, src.height // factor, src.width // factor)
        data = src.read(out_shape=shape, resampling=Resampling.average)
        profile = src.profile | {"width": shape[2], "height": shape[1],
                                 "transform": src.transform * src.transform.scale(factor, factor)}
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return dst_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "model_resolution.txt")
    args = parser.parse_args()
    levir = args.data / "levircd_bitcd"
    coords = args.data / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    model = "tinycd:" + str(args.data / "checkpoints_tinycd" / "levir_best.pth")
    names = [p.stem for p in sorted((levir / "A").glob("test_*.png"))]
    lines = [f"TinyCD-LEVIR on the {len(names)} LEVIR-CD test crops coarsened {FACTOR}x; {platform.platform()}, "
             f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; deltacd {deltacd.__version__}", "",
             "| model_resolution | scene (m) | network ran at (m) | precision | recall | F1 | crops with max probability < 0.5 |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = {}
        for n in names:
            a = georeference_levir_crop(levir / "A" / f"{n}.png", work / f"{n}_A.tif", coords)
            b = georeference_levir_crop(levir / "B" / f"{n}.png", work / f"{n}_B.tif", coords)
            pairs[n] = (coarsen(a, work / f"{n}_A3.tif"), coarsen(b, work / f"{n}_B3.tif"))
        for rule in ("auto", "grid"):
            tp = fp = fn = silent = 0
            for n, (a, b) in pairs.items():
                result = deltacd.detect(a, b, work / f"run_{rule}_{n}", model=model, crs="EPSG:4326", coregistration="off",
                                        min_area_m2=0, model_resolution=rule, tile_size=256)
                with rasterio.open(result.mask) as src:
                    mask = src.read(1) == 1
                with rasterio.open(result.score) as src:
                    silent += int(np.nanmax(src.read(1)) < 0.5)
                with Image.open(levir / "label" / f"{n}.png") as im:
                    label = np.asarray(im.convert("L")) > 0
                h, w = mask.shape
                truth = label[: h * FACTOR, : w * FACTOR].reshape(h, FACTOR, w, FACTOR).mean(axis=(1, 3)) >= 0.5
                tp += int((mask & truth).sum())
                fp += int((mask & ~truth).sum())
                fn += int((~mask & truth).sum())
            res = result.record["model_resolution"]
            p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
            lines.append(f"| {rule} | {res['scene_m']:.2f} | {res['run_m']:.2f} | {p:.3f} | {r:.3f} | "
                         f"{2 * p * r / max(p + r, 1e-12):.3f} | {silent} of {len(pairs)} |")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
