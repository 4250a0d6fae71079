"""Building damage, leave one event out: Harvey, Ida and Joplin, each graded by models trained on the other two.

Data (../shared/data): 5 xBD hurricane Harvey tiles and 4 Ida-BD tiles (DAHiTra masks), 3 xBD
Joplin tornado tiles (JSON polygons); each tile is written as a georeferenced 0.5 m pair with its
footprints and grades (:mod:`deltacd.damage.xbd`). For each held-out event:

* ``classifier`` and ``segmentation`` are trained (``deltacd.damage.train``) on the tiles of the
  two other events, one seed, the budgets below (CPU);
* every tile of the held-out event goes through ``deltacd.damage`` with the reference footprints
  (so localisation is perfect and the scores measure grading) for ``change`` (CVA), ``change``
  (zero-shot features), ``classifier`` and ``segmentation``; plus two trivial baselines: every
  building "no damage", and a grade drawn at random from the training events' grade frequencies;
* scores, pooled over the event's buildings (unclassified reference buildings left out):
  damaged-vs-undamaged F1 (damaged = minor or worse), F1 per grade, macro F1, and the xView2 score
  (0.3 localisation F1 + 0.7 harmonic mean of the per-grade pixel F1, official per-tile rule).

Speed: buildings per second and megapixels per second of each method's whole ``damage`` run
(reading, preparation, change score, statistics, grading, outputs), on the machine it runs on.

Usage::

    python benchmarks/damage_loeo.py [--steps-classifier 300] [--steps-segmentation 200] [--out benchmarks/results/damage_loeo]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio

import deltacd
from deltacd.damage import damage
from deltacd.outputs.grades import GRADE_LABELS, GRADES
from deltacd.damage.train import train_damage
from deltacd.damage.xbd import list_tiles, write_xbd_tile
from deltacd.datasets.xview2 import XView2Accumulator, tile_counts
from deltacd.io.grid import Grid
from deltacd.postprocess.zonal import FeatureLabels

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EVENTS = {
    "harvey": ("xbd-hurricanes-idabd_dahitra/xbd/train", None),
    "ida": ("xbd-hurricanes-idabd_dahitra/IdaBD", None),
    "joplin": ("xbd_matthinfo/tier3", None),
}
METHODS = ("all no damage", "training prior", "change (cva)", "change (zero-shot)", "classifier", "segmentation")


def tiles_of(data: Path, work: Path) -> dict[str, list]:
    """Every tile of every event written as a pair + footprints, apart from each other."""
    out, k = {}, 0
    for event, (folder, _) in EVENTS.items():
        out[event] = []
        for tile in list_tiles(data / folder):
            out[event].append(write_xbd_tile(data / folder, tile, work / "tiles" / tile, event=event,
                                             origin=(500000.0 + 2000.0 * k, 3300000.0)))
            k += 1
    return out


def train(task: str, events: list[str], data: Path, out: Path, steps: int, batch: int, seed: int) -> Path:
    sources = [{"kind": "xbd", "path": str(data / EVENTS[e][0]), "event": e} for e in events]
    config = {"task": task, "sources": sources, "out": str(out), "steps": steps, "batch_size": batch,
              "eval_every": max(25, steps // 6), "seed": seed, "crop_px": 256, "crops_per_scene": 24, "num_threads": os.cpu_count()}
    return train_damage(config, progress=False).checkpoint


def score(rows: list[tuple[np.ndarray, np.ndarray]], xview: XView2Accumulator) -> dict[str, float]:
    ref = np.concatenate([r for r, _ in rows])
    ours = np.concatenate([o for _, o in rows])
    keep = (ref >= 0) & (ours >= 0)
    ref, ours = ref[keep], ours[keep]

    def f1(p, t):
        tp, fp, fn = np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)
        return 2 * tp / max(2 * tp + fp + fn, 1)

    per = {GRADE_LABELS[g]: f1(ours == g, ref == g) for g in GRADES}
    present = [GRADE_LABELS[g] for g in GRADES if (ref == g).any()]
    return {"buildings": int(keep.sum()), "damaged_f1": f1(ours >= 1, ref >= 1),
            "macro_f1": float(np.mean([per[p] for p in present])), **{f"f1_{k}": v for k, v in per.items()},
            "xview2": xview.result().score}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "damage_loeo")
    parser.add_argument("--steps-classifier", type=int, default=300)
    parser.add_argument("--steps-segmentation", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", default=",".join(EVENTS))
    args = parser.parse_args()
    events = args.events.split(",")
    rows_out, speed = [], {m: [0.0, 0, 0] for m in METHODS}  # seconds, buildings, pixels
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiles = tiles_of(args.data, work)
        for held in events:
            others = [e for e in EVENTS if e != held]
            t0 = time.perf_counter()
            classifier = train("damage-classifier", others, args.data, work / f"cls_{held}", args.steps_classifier, 32, args.seed)
            t1 = time.perf_counter()
            segmenter = train("damage-segmentation", others, args.data, work / f"seg_{held}", args.steps_segmentation, 4, args.seed)
            t2 = time.perf_counter()
            prior = np.bincount(np.concatenate([gpd.read_file(t.buildings)["grade"].to_numpy()
                                                for e in others for t in tiles[e]]) .clip(0), minlength=4).astype(float)
            prior /= prior.sum()
            rng = np.random.default_rng(args.seed)
            results = {m: ([], XView2Accumulator()) for m in METHODS}
            for tile in tiles[held]:
                reference = gpd.read_file(tile.buildings)
                with rasterio.open(tile.damage_mask) as src:
                    target = src.read(1)
                with rasterio.open(tile.localisation) as src:
                    footprint = src.read(1)
                runs = {
                    "change (cva)": dict(method="change", change_method="cva"),
                    "change (zero-shot)": dict(method="change", change_method="zero-shot"),
                    "classifier": dict(method="classifier", model=str(classifier)),
                    "segmentation": dict(method="segmentation", model=str(segmenter)),
                }
                for name, options in runs.items():
                    begun = time.perf_counter()
                    result = damage(tile.before, tile.after, work / "runs" / held / name.replace(" ", "_") / tile.tile,
                                    buildings=tile.buildings, coregistration="off", **options)
                    speed[name][0] += time.perf_counter() - begun
                    speed[name][1] += len(reference)
                    speed[name][2] += target.size
                    ours = gpd.read_file(result.buildings, layer="buildings").set_index("building_id").loc[reference["building_id"], "damage_grade"]
                    results[name][0].append((reference["grade"].to_numpy(), ours.to_numpy()))
                    with rasterio.open(result.damage_raster) as src:
                        grade = src.read(1)
                    results[name][1].add_tile_counts(*tile_counts((grade != 255).astype(np.uint8),
                                                                  np.where(grade != 255, grade + 1, 0).astype(np.uint8), footprint, target))
                for name, grades in (("all no damage", np.zeros(len(reference), dtype=int)),
                                     ("training prior", rng.choice(4, size=len(reference), p=prior))):
                    results[name][0].append((reference["grade"].to_numpy(), grades))
                    # the baselines' damage raster: each footprint pixel gets its building's grade (footprints are the reference's)
                    with rasterio.open(tile.damage_mask) as src:
                        grid = Grid.of(src)
                    labels = FeatureLabels(reference.geometry).read(grid, grid.full_window)
                    values = np.concatenate([[0], grades + 1])[labels].astype(np.uint8)
                    results[name][1].add_tile_counts(*tile_counts((labels > 0).astype(np.uint8), values, footprint, target))
            for name in METHODS:
                rows_out.append({"held_out": held, "method": name, **score(*results[name])})
            rows_out.append({"held_out": held, "method": "_training_minutes", "classifier": round((t1 - t0) / 60, 2),
                             "segmentation": round((t2 - t1) / 60, 2)})
    minutes = (time.perf_counter() - started) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    scored = [r for r in rows_out if not r["method"].startswith("_")]
    fields = ["held_out", "method", "buildings", "damaged_f1", "macro_f1", *[f"f1_{GRADE_LABELS[g]}" for g in GRADES], "xview2"]
    with open(args.out / "damage_loeo.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in fields} for r in scored])
    lines = [f"Damage, leave one event out ({platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
             f"deltacd {deltacd.__version__}; {minutes:.1f} min; classifier {args.steps_classifier} steps, "
             f"segmentation {args.steps_segmentation} steps, seed {args.seed})", "",
             "| held out | method | buildings | damaged F1 | macro F1 | F1 no | F1 minor | F1 major | F1 destroyed | xView2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in scored:
        lines.append(f"| {r['held_out']} | {r['method']} | {r['buildings']} | {r['damaged_f1']:.3f} | {r['macro_f1']:.3f} | "
                     + " | ".join(f"{r[f'f1_{GRADE_LABELS[g]}']:.3f}" for g in GRADES) + f" | {r['xview2']:.3f} |")
    lines += ["", "Training time (min): " + "; ".join(f"{r['held_out']}: classifier {r['classifier']}, segmentation "
                                                      f"{r['segmentation']}" for r in rows_out if r["method"] == "_training_minutes"),
              "", "| method | buildings/s | Mpx/s (whole damage run) |", "|---|---|---|"]
    for name in METHODS[2:]:
        seconds, n, px = speed[name]
        lines.append(f"| {name} | {n / seconds:.1f} | {px / seconds / 1e6:.3f} |")
    text = "\n".join(lines)
    (args.out / "damage_loeo.md").write_text(text + "\n")
    (args.out / "damage_loeo.json").write_text(json.dumps({"rows": rows_out, "speed": speed, "minutes": minutes}, indent=1, default=float))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
