"""The damage classifier's leave-one-event-out figures with the old and the new training recipe, side by side.

The new recipe (``deltacd.damage.train``, the change recipe's rules): training samples drawn with
each event at an equal share, validation scenes held out in every event and the weights kept on
the macro F1 of each validation event averaged. The old one: a plain shuffle (the event with most
buildings dominates) and one pooled validation score. Same tiles, budget, seed and scoring as
``benchmarks/damage_loeo.py`` (whose helpers it reuses); only the classifier is trained.

Usage::

    python benchmarks/damage_recipe.py [--events ida,joplin] [--steps 300] [--out benchmarks/results/damage_recipe]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from damage_loeo import EVENTS, SHARED, tiles_of  # noqa: E402
from deltacd.damage import damage  # noqa: E402
from deltacd.damage.train import train_damage  # noqa: E402

RECIPES = {"old (shuffle, pooled validation)": {"balance_events": False, "validation": "pooled"},
           "new (events balanced, validation per event)": {}}


def f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = np.sum(predicted & truth), np.sum(predicted & ~truth), np.sum(~predicted & truth)
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--events", default="ida,joplin")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "damage_recipe")
    args = parser.parse_args()
    rows, started, load = [], time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiles = tiles_of(args.data, work)
        for held in args.events.split(","):
            others = [e for e in EVENTS if e != held]
            for recipe, settings in RECIPES.items():
                begun = time.perf_counter()
                sources = [{"kind": "xbd", "path": str(args.data / EVENTS[e][0]), "event": e} for e in others]
                config = {"task": "damage-classifier", "sources": sources, "out": str(work / f"{held}_{len(rows)}"),
                          "steps": args.steps, "batch_size": 32, "eval_every": max(25, args.steps // 6), "seed": args.seed,
                          "num_threads": os.cpu_count(), **settings}
                model = train_damage(config, progress=False).checkpoint
                minutes = (time.perf_counter() - begun) / 60
                truth, ours = [], []
                for tile in tiles[held]:
                    reference = gpd.read_file(tile.buildings)
                    result = damage(tile.before, tile.after, work / "runs" / f"{held}_{len(rows)}" / tile.tile,
                                    buildings=tile.buildings, coregistration="off", method="classifier", model=str(model))
                    graded = gpd.read_file(result.buildings, layer="buildings").set_index("building_id")
                    truth.append(reference["grade"].to_numpy())
                    ours.append(graded.loc[reference["building_id"], "damage_grade"].to_numpy())
                ref, got = np.concatenate(truth), np.concatenate(ours)
                keep = (ref >= 0) & (got >= 0)
                ref, got = ref[keep], got[keep]
                present = [g for g in range(4) if (ref == g).any()]
                rows.append({"held_out": held, "recipe": recipe, "buildings": int(keep.sum()),
                             "damaged_f1": f1(got >= 1, ref >= 1),
                             "macro_f1": float(np.mean([f1(got == g, ref == g) for g in present])),
                             "train_min": round(minutes, 2)})
                print(rows[-1], flush=True)
    minutes = (time.perf_counter() - started) / 60
    lines = [f"Damage classifier, leave one event out, old vs new recipe ({platform.platform()}, {os.cpu_count()} CPUs, "
             f"load {load:.1f} at start; {args.steps} steps of 32 chips, seed {args.seed}; {minutes:.1f} min)", "",
             "| held out | recipe | buildings | damaged F1 | macro F1 | train min |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['held_out']} | {r['recipe']} | {r['buildings']} | {r['damaged_f1']:.3f} | {r['macro_f1']:.3f} | "
              f"{r['train_min']} |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "damage_recipe.md").write_text("\n".join(lines) + "\n")
    (args.out / "damage_recipe.json").write_text(json.dumps({"rows": rows, "minutes": minutes}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
