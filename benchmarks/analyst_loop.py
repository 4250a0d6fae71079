"""The simulated analyst: F1 of the refined map against the number of reviewed objects.

For each labelled pair: ``deltacd.detect`` (CVA, default settings, ``min_area_m2=0`` since the labels
are per pixel), then the review loop of :mod:`deltacd.review` with the ground truth as the analyst:
each suggested object is answered by the majority of its pixels (change if at least half of them
are labelled change). Objects are suggested in rounds of 5 (the classifier is retrained after
each round) up to k = 40 reviews, by the model (uncertainty sampling, :func:`deltacd.review.refine.choose`)
or uniformly at random, with 3 seeds. Every map is scored on the pixels of the objects NOT reviewed
(the reviewed ones are known without any model), pooled over the pairs of a data set (micro F1):

- ``cva``: the run's own change mask;
- ``majority``: every unreviewed pixel given the majority answer of the reviews (the trivial map);
- ``refined``: each object's class from the classifier (probability >= 0.5); at k = 0 the CVA mask.

Data (../shared/data): OSCD (the 7 cities with raw bands; B02, B03, B04, B08 at 10 m), DSIFN (10
crops, 2 m), LEVIR-CD (11 crops, 0.5 m), EGY-BCD (9 crops). The PNG crops have no georeference:
they are written as GeoTIFFs on a made-up Lambert-93 grid at their stated resolution (nothing is
resampled; only areas depend on it). The table is written after each data set to
``benchmarks/results/analyst_loop[_TAG].md`` (and ``.json``).

    python benchmarks/analyst_loop.py --datasets oscd dsifn levir [--limit 3] [--features score,shape] [--tag NAME]

``--speed 5000 [20000]``: time and peak memory of each step of the loop on the scale benchmark's pair
(``benchmarks/scale.py``: OSCD Rennes mirror-tiled to N x N px at 0.5 m), each step in a fresh process:
detect (CVA), objects and features, ``suggest`` (N=10, no answers yet), ``write_suggestions``,
``refine`` with those 10 answered, and one click of a review session (an answer stored, the
classifier retrained, the next object drawn: ``ReviewSession``, mean of 10); table in
``benchmarks/results/analyst_loop_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

import deltacd
from deltacd.review.features import object_table
from deltacd.review.objects import ReviewRun
from deltacd.review.refine import choose, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
OSCD_CITIES = ["aguasclaras", "bercy", "bordeaux", "hongkong", "nantes", "paris", "rennes"]
KS = (0, 5, 10, 20, 40)
ROUND = 5
SEEDS = (0, 1, 2)
STRATEGIES = ("model", "random")


# --- data ---------------------------------------------------------------------------------------

def _png_geotiff(png: Path, out: Path, res: float) -> Path:
    values = np.array(Image.open(png).convert("RGB")).transpose(2, 0, 1)
    with rasterio.open(out, "w", driver="GTiff", width=values.shape[2], height=values.shape[1], count=3, dtype="uint8",
                       crs="EPSG:2154", transform=Affine(res, 0, 600000.0, 0, -res, 6500000.0), photometric="RGB") as dst:
        dst.write(values)
    return out


def png_cases(name: str, root: Path, res: float, work: Path) -> Iterator[tuple[str, Path, Path, np.ndarray, dict]]:
    labels = sorted((root / "label").glob("*.png")) if (root / "label").is_dir() else sorted(root.glob("*/label/*.png"))
    for label in labels:
        folder = label.parent.parent
        stem = label.stem
        a = _png_geotiff(folder / "A" / label.name, work / f"{name}_{stem}_a.tif", res)
        b = _png_geotiff(folder / "B" / label.name, work / f"{name}_{stem}_b.tif", res)
        reference = (np.array(Image.open(label).convert("L")) > 127).astype(np.uint8)
        yield stem, a, b, reference, {}


def oscd_cases(work: Path) -> Iterator[tuple[str, Path, Path, np.ndarray, dict]]:
    root = DATA / "oscd_changedetectionrepository"
    for city in OSCD_CITIES:
        folder = root / "images" / city
        dates = [[next((folder / d).glob(f"*_{b}.tif")) for b in ("B02", "B03", "B04", "B08")] for d in ("imgs_1", "imgs_2")]
        with rasterio.open(dates[0][0]) as src:
            res, shape = (src.transform.a, -src.transform.e), src.shape
        with rasterio.open(root / "train_labels" / city / "cm" / f"{city}-cm.tif") as src:
            label = src.read(1)
        assert label.shape == shape, (city, label.shape, shape)
        yield city, dates[0], dates[1], (label == 2).astype(np.uint8), {"crs": "EPSG:4326", "resolution": res}


def cases(dataset: str, work: Path):
    if dataset == "oscd":
        return oscd_cases(work)
    if dataset == "dsifn":
        return png_cases("dsifn", DATA / "dsifn_changeformer", 2.0, work)
    if dataset == "levir":
        return png_cases("levir", DATA / "levircd_bitcd", 0.5, work)
    if dataset == "egybcd":
        return png_cases("egybcd", DATA / "egy-bcd-samples_oshholail", 0.25, work)
    raise SystemExit(f"unknown data set {dataset}")


# --- one scene ----------------------------------------------------------------------------------

def object_truth(run: ReviewRun, table, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Per object: ground-truth change pixels and the CVA mask's changed and true-positive pixels."""
    gt = np.zeros(len(table), np.float64)
    cva = np.zeros(len(table), np.float64)
    cva_gt = np.zeros(len(table), np.float64)
    pixels = np.zeros(len(table), np.float64)
    with rasterio.open(run.layout.mask) as src:
        for window in run.segmentation.blocks():
            ids = run.read_ids(window)
            r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
            ref = reference[r0:r0 + h, c0:c0 + w]
            mask = src.read(1, window=window) == 1
            rows = np.searchsorted(table.ids, ids)
            ok = (ids >= 0) & (rows < len(table.ids))
            ok[ok] &= table.ids[rows[ok]] == ids[ok]
            rows = rows[ok]
            pixels += np.bincount(rows, minlength=len(table))
            gt += np.bincount(rows, weights=ref[ok], minlength=len(table))
            cva += np.bincount(rows, weights=mask[ok], minlength=len(table))
            cva_gt += np.bincount(rows, weights=mask[ok] & (ref[ok] == 1), minlength=len(table))
    return {"pixels": pixels, "gt": gt, "cva": cva, "cva_gt": cva_gt}


def confusion(predicted: np.ndarray, truth: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """[tp, fp, fn] over the pixels of the objects in ``keep``, each object mapped as ``predicted`` (bool)."""
    p, g = truth["pixels"][keep], truth["gt"][keep]
    on = predicted[keep]
    return np.array([g[on].sum(), (p - g)[on].sum(), g[~on].sum()])


def cva_confusion(truth: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    tp = truth["cva_gt"][keep].sum()
    return np.array([tp, truth["cva"][keep].sum() - tp, truth["gt"][keep].sum() - tp])


def f1(c: np.ndarray) -> float:
    tp, fp, fn = c
    return float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else float("nan")


def loop(table, truth, threshold: float, strategy: str, seed: int, groups) -> dict[int, dict[str, np.ndarray]]:
    """The simulated analyst's rounds; per k: confusions of cva, majority and refined on the unreviewed objects."""
    answer = (truth["gt"] >= 0.5 * truth["pixels"]).astype(int)
    answers: dict[int, int] = {}
    out = {}
    model = None
    row_of = {int(i): r for r, i in enumerate(table.ids)}
    for k in range(0, max(KS) + 1, ROUND):
        if k in KS:
            reviewed = np.zeros(len(table), bool)
            reviewed[[row_of[i] for i in answers]] = True
            keep = ~reviewed
            result = {"cva": cva_confusion(truth, keep)}
            if answers:
                values = np.array(list(answers.values()))
                result["majority"] = confusion(np.full(len(table), values.mean() >= 0.5), truth, keep)
            if model is not None:
                features = table.select(groups)[0]
                result["refined"] = confusion(model.change_probability(features) >= 0.5, truth, keep)
            else:  # no classifier yet (k = 0, or one class answered): the run's own map stands
                result["refined"] = result["cva"]
            out[k] = result
        if k == max(KS):
            break
        chosen = choose(table, answers, ROUND, threshold=threshold, model=model, strategy=strategy, seed=seed + 1000 * k)
        for object_id in chosen.tolist():
            answers[int(object_id)] = int(answer[row_of[int(object_id)]])
        model = train(table, answers, seed=seed, groups=groups)
        if model is not None and groups is not None:  # train() selected the groups' columns
            pass
    return out


def write_table(path: Path, results: dict, header: str) -> None:
    lines = [header, ""]
    for dataset, per in results.items():
        scenes = per["scenes"]
        title = (f"## {dataset} ({len(scenes)} pairs: {', '.join(scenes)}; pooled micro F1 on the unreviewed pixels, "
                 f"mean over {len(SEEDS)} seeds, min-max in brackets)")
        lines += [title, "",
                  "| suggestions | map | " + " | ".join(f"k={k}" for k in KS) + " |",
                  "|---|---|" + "---|" * len(KS)]
        for strategy in STRATEGIES:
            for name in ("cva", "majority", "refined"):
                cells = []
                for k in KS:
                    values = [f1(per["pooled"][strategy][seed][k][name]) for seed in SEEDS
                              if name in per["pooled"][strategy][seed].get(k, {})]
                    cells.append("-" if not values else f"{np.mean(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
                                 if len(values) > 1 and np.ptp(values) > 0.0005 else f"{np.mean(values):.3f}")
                lines.append(f"| {strategy} | {name} | " + " | ".join(cells) + " |")
        timing = (f"seconds: detect {per['seconds']['detect']:.1f}, objects and features "
                  f"{per['seconds']['features']:.1f}, loop {per['seconds']['loop']:.1f}; objects per scene "
                  f"{min(per['objects'])}-{max(per['objects'])}")
        lines += ["", timing, ""]
        lines += ["per pair, model suggestions, seed 0 (F1 cva / refined at k=" + ",".join(map(str, KS)) + "):", ""]
        for scene, row in per["per_scene"].items():
            lines.append(f"- {scene}: cva {row['cva']:.3f}; refined " + " ".join(f"{v:.3f}" for v in row["refined"]))
        lines.append("")
    path.write_text("\n".join(lines))


SPEED_CHILD = """
import json, resource, sys, time
step, run, work = sys.argv[1], sys.argv[2], sys.argv[3]
started = time.perf_counter()
if step == "detect":
    import shutil
    import deltacd
    shutil.rmtree(run, ignore_errors=True)  # a reviewed run holds the review's files: --overwrite refuses it
    deltacd.detect(sys.argv[4], sys.argv[5], run, overwrite=True)
elif step == "features":
    from deltacd.review.features import object_table
    from deltacd.review.objects import ReviewRun
    print(len(object_table(ReviewRun(run), refresh=True)), file=sys.stderr)
elif step == "suggest":
    from deltacd.review.refine import suggest
    suggest(run, 10)
elif step == "write_suggestions":
    from deltacd.review.refine import write_suggestions
    write_suggestions(run, 10, work + "/next.gpkg", overwrite=True)
elif step == "click":  # an answer stored, the classifier retrained, the next object drawn: mean of 10 clicks
    from deltacd.review.session import ReviewSession
    session = ReviewSession(run)
    started = time.perf_counter()
    for k in range(10):
        session.answer(int(session.next(1)["object_id"].iloc[0]), k % 2)
    started += (time.perf_counter() - started) * 0.9  # seconds of one click
elif step == "refine":
    import geopandas as gpd
    from deltacd.review.refine import refine
    frame = gpd.read_file(work + "/next.gpkg", layer="suggestions")
    frame["label"] = [1, 0] * (len(frame) // 2)
    frame.to_file(work + "/labels.gpkg", layer="suggestions")
    started = time.perf_counter()
    refine(run, [work + "/labels.gpkg"], work + "/refined", overwrite=True)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def speed(sizes: list[int], work: Path) -> int:
    """Time and peak memory of each step of the loop on the scale benchmark's pair (module notes)."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale import source_tiles, write_mosaic

    tiles = source_tiles()
    rows = []
    for size in sizes:
        before, after = work / f"{size}_before.tif", work / f"{size}_after.tif"
        if not before.exists():
            write_mosaic(before, tiles[0], size)
            write_mosaic(after, tiles[1], size)
        run = work / f"run_{size}"
        row = {"size": size}
        for step in ("detect", "features", "suggest", "write_suggestions", "refine", "click"):
            done = subprocess.run([sys.executable, "-c", SPEED_CHILD, step, str(run), str(work), str(before), str(after)],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            row[step] = json.loads(done.stdout.strip().splitlines()[-1])
            if step == "features":
                row["objects"] = int(done.stderr.strip().splitlines()[-1])
            print(size, step, row[step], flush=True)
        rows.append(row)
    title = f"# Review loop speed ({platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at end)"
    how = (f"`python benchmarks/analyst_loop.py --speed {' '.join(map(str, sizes))}`: each step in a fresh process "
           "(seconds of the step itself, after imports; peak resident MiB of the process)")
    head = ("| size px | objects | detect s | objects+features s | suggest 10 s | write_suggestions s "
            "| refine (10 answers) s | one click s | peak MiB detect / features / suggest / refine |")
    lines = [title, "", how, "", head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['objects']} | {r['detect']['seconds']:.1f} | {r['features']['seconds']:.1f} | "
                     f"{r['suggest']['seconds']:.2f} | {r['write_suggestions']['seconds']:.2f} | {r['refine']['seconds']:.1f} | "
                     f"{r['click']['seconds']:.2f} | "
                     f"{r['detect']['peak_mib']:.0f} / {r['features']['peak_mib']:.0f} / {r['suggest']['peak_mib']:.0f} / "
                     f"{r['refine']['peak_mib']:.0f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "analyst_loop_speed.md").write_text("\n".join(lines) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", nargs="+", type=int, help="measure the loop's speed on N px scenes instead")
    parser.add_argument("--datasets", nargs="+", default=["oscd", "dsifn", "levir"])
    parser.add_argument("--limit", type=int, help="at most this many pairs per data set")
    parser.add_argument("--features", help="comma-separated feature groups (score, shape, texture, indices, bands); default all")
    parser.add_argument("--area", type=int, help="pixels per superpixel (default: deltacd's, from the scene size)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()
    if args.speed:
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="deltacd-analyst-speed-"))
        work.mkdir(parents=True, exist_ok=True)
        return speed(args.speed, work)
    groups = args.features.split(",") if args.features else None
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="deltacd-analyst-"))
    work.mkdir(parents=True, exist_ok=True)
    name = "analyst_loop" + (f"_{args.tag}" if args.tag else "")
    header = (f"# Simulated analyst ({platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start; "
              f"features: {args.features or 'all'}; superpixels: {args.area or 'default'} px)\n\n`python benchmarks/analyst_loop.py {' '.join(sys.argv[1:])}`")
    results: dict = {}
    for dataset in args.datasets:
        per = {"scenes": [], "pooled": {s: {seed: {} for seed in SEEDS} for s in STRATEGIES},
               "seconds": {"detect": 0.0, "features": 0.0, "loop": 0.0}, "objects": [], "per_scene": {}}
        for n, (scene, before, after, reference, options) in enumerate(cases(dataset, work)):
            if args.limit and n >= args.limit:
                break
            t0 = time.perf_counter()
            out = work / f"{dataset}_{scene}"
            shutil.rmtree(out, ignore_errors=True)  # a run holding review files is not replaced by --overwrite
            deltacd.detect(before, after, out, min_area_m2=0, **options)
            t1 = time.perf_counter()
            with ReviewRun(out, area=args.area) as run:
                table = object_table(run, refresh=True)
                assert reference.shape == (run.grid.height, run.grid.width), (scene, reference.shape, run.grid.shape)
                truth = object_truth(run, table, reference)
                threshold = float(run.record["threshold"]["value"])
            t2 = time.perf_counter()
            for strategy in STRATEGIES:
                for seed in SEEDS:
                    scores = loop(table, truth, threshold, strategy, seed, groups)
                    pooled = per["pooled"][strategy][seed]
                    for k, maps in scores.items():
                        for m, c in maps.items():
                            pooled.setdefault(k, {}).setdefault(m, np.zeros(3))
                            pooled[k][m] = pooled[k][m] + c
                    if strategy == "model" and seed == 0:
                        per["per_scene"][scene] = {"cva": f1(scores[0]["cva"]),
                                                   "refined": [f1(scores[k]["refined"]) for k in KS]}
            t3 = time.perf_counter()
            per["scenes"].append(scene)
            per["objects"].append(len(table))
            for key, dt in (("detect", t1 - t0), ("features", t2 - t1), ("loop", t3 - t2)):
                per["seconds"][key] += dt
            print(f"{dataset} {scene}: {len(table)} objects, detect {t1 - t0:.1f} s, features {t2 - t1:.1f} s, "
                  f"loop {t3 - t2:.1f} s; F1 cva {per['per_scene'][scene]['cva']:.3f} refined "
                  + " ".join(f"{v:.3f}" for v in per["per_scene"][scene]["refined"]), flush=True)
        results[dataset] = per
        RESULTS.mkdir(exist_ok=True)
        write_table(RESULTS / f"{name}.md", results, header)
        (RESULTS / f"{name}.json").write_text(json.dumps(
            {d: {"scenes": p["scenes"], "seconds": p["seconds"], "objects": p["objects"], "per_scene": p["per_scene"],
                 "f1": {s: {str(seed): {str(k): {m: f1(c) for m, c in maps.items()} for k, maps in p["pooled"][s][seed].items()}
                            for seed in SEEDS} for s in STRATEGIES}} for d, p in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
