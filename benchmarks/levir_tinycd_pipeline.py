"""TinyCD (authors' LEVIR-CD weights) through ``deltacd.detect`` on the 7 LEVIR-CD test crops: F1 and speed.

Each crop pair (A = before, B = after) is georeferenced into a temporary folder
(:func:`levir.georeference_levir_crop` (benchmarks/levir.py), EPSG:4326, square pixels of 360/2**26 deg) and
run through the whole pipeline with ``method_instance=LearnedModel.from_file("tinycd:...")``,
``crs="EPSG:4326"`` and ``resolution`` = the crop's pixel size, so the output grid is the crop's
own pixel grid (checked) and ``change_mask.tif`` is compared pixel for pixel with the label PNG
(any non-zero value is change, as in the authors' loader). ``coregistration="off"``,
``min_area_m2=0`` (no minimum mapping unit: the authors' metric is per pixel) and
``tile_size=256`` (one tile per crop, as in the authors' evaluation).

Configurations: radiometric harmonisation of B onto A ``none`` / ``pif`` (deltacd's default) x
flip test-time augmentation off / on, plus ``tile 128`` (harmonise none, 128-px tiles, 64-px
overlap: 9 blended tiles per crop) to measure the cost of tiling. For each: per-crop TP / FP / FN,
micro precision / recall / F1 over the 7 crops, and megapixels per second of the engine's
predict stage (reading + normalisation + network + blending; from run.json's timings; the first
run includes the network's warm-up), ``(net)`` the same for the time spent inside the method
(run.json's ``method_inside_predict``), and of ``LearnedModel.predict`` alone on 4 x 256 x 256 batches.
Timings are wall-clock on whatever machine runs this; on a shared CPU they vary with the load.
The ``max|dp|`` column is the largest difference between the pipeline's change_score.tif and the
network run directly on the PNG arrays (the raw evaluation of ``tinycd_levir_raw.py``).

The authors' code gives micro F1 0.937 on these crops; the exit status is 0 when the
``none / off`` configuration is within 0.01 of it.

Usage::

    python benchmarks/levir_tinycd_pipeline.py [--data DIR] [--checkpoint FILE] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image

import deltacd
from deltacd.io.grid import Grid
from deltacd.methods.learned import LearnedModel
from deltacd.models.tinycd import normalise_rgb8
from levir import PIXEL_DEG, georeference_levir_crop

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFERENCE_F1 = 0.937  # the authors' code on the same 7 crops


@dataclass(frozen=True)
class Config:
    label: str
    harmonise: str
    tta: bool
    tile_size: int = 256


CONFIGS = (
    Config("none / tta off", "none", False),
    Config("none / tta on", "none", True),
    Config("pif  / tta off", "pif", False),
    Config("pif  / tta on", "pif", True),
    Config("none / off / tile 128", "none", False, 128),
)


def read_label(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def raw_probability(model: torch.nn.Module, a_png: Path, b_png: Path) -> np.ndarray:
    """The network on the PNG arrays directly, as the authors evaluate it: float32 [H, W]."""
    def rgb(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).transpose(2, 0, 1)

    with torch.inference_mode():
        x = normalise_rgb8(rgb(a_png)).unsqueeze(0)
        y = normalise_rgb8(rgb(b_png)).unsqueeze(0)
        return torch.sigmoid(model(x, y))[0, 0].numpy()


def throughput(method: LearnedModel, *, batch: int = 4, size: int = 256, repeats: int = 5) -> float:
    """Megapixels per second of ``method.predict`` alone on random 8-bit batches (median of ``repeats``)."""
    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (batch, 3, size, size)).astype(np.float32)
    after = rng.integers(0, 256, (batch, 3, size, size)).astype(np.float32)
    method.select_bands(("R", "G", "B"))
    method.predict(before, after)  # warm-up (first call allocates, autotunes on CUDA)
    times = []
    for _ in range(repeats):
        if method.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        method.predict(before, after)
        if method.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch * size * size / 1e6 / float(np.median(times))


def run(args: argparse.Namespace) -> int:
    data, coords = args.data, args.coords
    names = sorted(p.name for p in (data / "label").glob("test_*.png"))
    if not names:
        raise SystemExit(f"no test_*.png under {data / 'label'}")
    spec_string = f"tinycd:{args.checkpoint}"
    models = {tta: LearnedModel.from_file(spec_string, device=args.device, tta=tta) for tta in (False, True)}
    raw_model = models[False].model.to("cpu") if models[False].device.type == "cpu" else None

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="levir_pipeline_") as tmp:
        tmp = Path(tmp)
        tifs = {}
        for name in names:
            stem = Path(name).stem
            tifs[name] = tuple(
                georeference_levir_crop(data / side / name, tmp / f"{stem}_{side}.tif", coords) for side in ("A", "B")
            )
        raw = {name: raw_probability(raw_model, data / "A" / name, data / "B" / name) for name in names} if raw_model else {}
        for config in CONFIGS:
            rows, predict_s, method_s, pixels, max_dp = [], 0.0, 0.0, 0, 0.0
            for name in names:
                a_tif, b_tif = tifs[name]
                out = tmp / f"out_{config.harmonise}_{config.tta}_{config.tile_size}_{Path(name).stem}"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # harmonisation notes on 256x256 crops
                    result = deltacd.detect(
                        a_tif, b_tif, out, method_instance=models[config.tta], harmonise=config.harmonise,
                        coregistration="off", min_area_m2=0, tile_size=config.tile_size, crs="EPSG:4326",
                        resolution=PIXEL_DEG, seed=0,
                    )
                with rasterio.open(a_tif) as ds:
                    crop_grid = Grid.of(ds)
                with rasterio.open(result.mask) as ds:
                    crop_grid.check_same(Grid.of(ds), names=(a_tif.name, "change_mask.tif"))
                    mask = ds.read(1)
                with rasterio.open(result.score) as ds:
                    score = ds.read(1)
                if name in raw:
                    max_dp = max(max_dp, float(np.nanmax(np.abs(score - raw[name]))))
                pred, truth = mask == 1, read_label(data / "label" / name)
                rows.append((name, int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())))
                predict_s += result.record["timings_s"]["predict"]
                method_s += result.record["timings_s"].get("method_inside_predict", float("nan"))
                pixels += mask.size
            tp, fp, fn = (sum(r[i] for r in rows) for i in (1, 2, 3))
            results[config.label] = {
                "rows": rows, "tp": tp, "fp": fp, "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else 0.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                "mps": pixels / 1e6 / predict_s if predict_s else float("nan"),
                "mps_method": pixels / 1e6 / method_s if method_s else float("nan"),
                "max_dp": max_dp if raw else float("nan"),
            }

    device = models[False].device
    print(f"checkpoint: {args.checkpoint}  device: {device}  torch threads: {torch.get_num_threads()}")
    print("command: detect(A.tif, B.tif, out, method_instance=LearnedModel.from_file('tinycd:...', tta=...), "
          "harmonise=..., coregistration='off', min_area_m2=0, tile_size=..., crs='EPSG:4326', resolution=360/2**26)")
    print()
    header = f"{'crop':<24}" + "".join(f"{c.label:>24}" for c in CONFIGS)
    print("per crop: TP/FP/FN")
    print(header)
    for i, name in enumerate(names):
        cells = []
        for c in CONFIGS:
            _, tp, fp, fn = results[c.label]["rows"][i]
            cells.append(f"{tp}/{fp}/{fn}")
        print(f"{Path(name).stem:<24}" + "".join(f"{cell:>24}" for cell in cells))
    print()
    print(f"{'configuration':<24}{'TP':>8}{'FP':>8}{'FN':>8}{'prec':>8}{'recall':>8}{'F1':>8}{'MP/s':>8}{'(net)':>8}{'max|dp|':>10}")
    for c in CONFIGS:
        r = results[c.label]
        print(f"{c.label:<24}{r['tp']:>8}{r['fp']:>8}{r['fn']:>8}{r['precision']:>8.4f}{r['recall']:>8.4f}"
              f"{r['f1']:>8.4f}{r['mps']:>8.2f}{r['mps_method']:>8.2f}{r['max_dp']:>10.2e}")
    print()
    print("predict alone (LearnedModel.predict, batch 4 x 256 x 256, median of 5):")
    for tta in (False, True):
        print(f"  tta {'on ' if tta else 'off'}: {throughput(models[tta]):.2f} MP/s")
    base = results[CONFIGS[0].label]["f1"]
    print(f"authors' code: F1 {REFERENCE_F1:.3f}; pipeline (none / tta off) {base:.4f}, difference {base - REFERENCE_F1:+.4f}")
    return 0 if abs(base - REFERENCE_F1) <= 0.01 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "levircd_bitcd", help="folder with A/, B/, label/")
    parser.add_argument("--coords", type=Path, default=SHARED / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json")
    parser.add_argument("--checkpoint", type=Path, default=SHARED / "checkpoints_tinycd" / "levir_best.pth")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # 256-px crops give few pseudo-invariant pixels; the fallback note would repeat for every run.
    logging.getLogger("deltacd.prepare.radiometry").setLevel(logging.ERROR)
    torch.manual_seed(0)
    start = time.perf_counter()
    status = run(args)
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
