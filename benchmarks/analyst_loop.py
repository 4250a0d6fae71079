"""The simulated analyst: F1 of the refined map against the number of reviewed objects.

For each labelled pair: ``deltacd.detect`` (CVA by default, ``--method irmad`` or ``--model tinycd:PATH``
for another base run; ``min_area_m2=0`` since the labels are per pixel), then the review loop of
:mod:`deltacd.review` with the ground truth as the analyst: each suggested object is answered by the
majority of its labelled pixels (change if at least half of them are labelled change; an object
with no labelled pixel, which only the sample-labelled Landsat pairs have, is skipped and does not
count as a review). Objects are suggested in rounds of 5 (the classifier is retrained after each
round) up to k = 40 reviews, by the model (uncertainty sampling, :func:`deltacd.review.refine.choose`)
or uniformly at random, with 3 seeds. Every map is scored on the labelled pixels of the objects NOT
reviewed (the reviewed ones are known without any model), pooled over the pairs of a data set (micro F1):

- the base run (``cva``, ``irmad``, ``tinycd``): the run's own change mask;
- ``majority``: every unreviewed pixel given the majority answer of the reviews (the trivial map);
- ``refined``: each object's class from the classifier (probability >= 0.5); at k = 0 the run's mask;
- ``ceiling``: every object at the majority of its labelled pixels (what a perfect classifier of the
  objects would map: the most the loop can reach with these objects).

Data (../shared/data): OSCD (the 7 cities with raw bands; B02, B03, B04, B08 at 10 m), DSIFN (10
crops, 2 m), LEVIR-CD (11 crops, 0.5 m), EGY-BCD (9 crops), Landsat TM (Nanjing, Taizhou: 6 bands
at 30 m; only the pixels of ``change.bmp`` / ``unchanged.bmp`` are labelled). The PNG crops have no
georeference: they are written as GeoTIFFs on a made-up Lambert-93 grid at their stated resolution
(nothing is resampled; only areas depend on it). The table is written after each data set to
``benchmarks/results/analyst_loop[_TAG].md`` (and ``.json``).

    python benchmarks/analyst_loop.py --datasets oscd dsifn levir [--limit 3] [--features score,shape] [--tag NAME]
    python benchmarks/analyst_loop.py --datasets levir --model tinycd:../shared/data/checkpoints_tinycd/levir_best.pth --tag tinycd_levir

**Damage** (``--datasets joplin harvey ida xbd-other``): each xBD tile (Joplin: 3 tiles, JSON polygons;
Harvey: 5 and Ida-BD: 4, DAHiTra masks; six other events, one tile each, YOLO polygons of
Bennit99) is written as a georeferenced 0.5 m pair (:func:`deltacd.damage.xbd.write_xbd_tile`;
the YOLO tiles by :func:`yolo_tile`) and graded by ``deltacd.damage(pre, post, out, buildings=...)``
(default method: ``change``, CVA statistics in each footprint; ``coregistration="off"`` as in
``benchmarks/damage_loeo.py``). The footprints given to the run carry only an integer
``building_id`` and the geometry: the review features of a damage run are the numeric attributes of
its ``buildings.gpkg``, so a reference grade left in the layer would be a feature. The analyst
answers each suggested building with its true grade (0-3; an un-classified reference building is
skipped). Scored on the buildings not reviewed (and graded by the run, as in ``damage_loeo``):
damaged-vs-undamaged F1 (damaged = minor or worse) and macro F1 over the grades present, pooled
over the tiles of the group, for the run's own grades, the majority grade of the reviews, and the
refined grades (the classifier's likeliest grade).

``--speed 5000 [20000]``: time and peak memory of each step of the loop on the scale benchmark's pair
(``benchmarks/scale.py``: OSCD Rennes mirror-tiled to N x N px at 0.5 m), each step in a fresh process:
detect (CVA), objects and features, ``suggest`` (N=10, no answers yet), ``write_suggestions``,
``refine`` with those 10 answered, and one click of a review session (an answer stored, the
classifier retrained, the next object drawn: ``ReviewSession``, mean of 10); ``--steps`` runs only
some of them (each call then adds its rows to ``analyst_loop_scale.json`` and rewrites
``analyst_loop_scale.md``, so that a big scene can be measured step by step within a time limit);
without ``--steps`` the table goes to ``benchmarks/results/analyst_loop_speed.md``.
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

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from PIL import Image

import deltacd
from deltacd.review.classifier import classifier_beats_base, cross_validate
from deltacd.review.embeddings import with_embeddings
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
DAMAGE_GROUPS = ("joplin", "harvey", "ida", "xbd-other")


# --- data ---------------------------------------------------------------------------------------

# a case: scene name, before, after, reference [h, w] (1 change), labelled [h, w] bool or None (all), detect options
Case = tuple[str, Path, Path, np.ndarray, "np.ndarray | None", dict]


def _png_geotiff(png: Path, out: Path, res: float) -> Path:
    values = np.array(Image.open(png).convert("RGB")).transpose(2, 0, 1)
    with rasterio.open(out, "w", driver="GTiff", width=values.shape[2], height=values.shape[1], count=3, dtype="uint8",
                       crs="EPSG:2154", transform=Affine(res, 0, 600000.0, 0, -res, 6500000.0), photometric="RGB") as dst:
        dst.write(values)
    return out


def png_cases(name: str, root: Path, res: float, work: Path) -> Iterator[Case]:
    labels = sorted((root / "label").glob("*.png")) if (root / "label").is_dir() else sorted(root.glob("*/label/*.png"))
    for label in labels:
        folder = label.parent.parent
        stem = label.stem
        a = _png_geotiff(folder / "A" / label.name, work / f"{name}_{stem}_a.tif", res)
        b = _png_geotiff(folder / "B" / label.name, work / f"{name}_{stem}_b.tif", res)
        reference = (np.array(Image.open(label).convert("L")) > 127).astype(np.uint8)
        yield stem, a, b, reference, None, {}


def oscd_cases(work: Path) -> Iterator[Case]:
    root = DATA / "oscd_changedetectionrepository"
    for city in OSCD_CITIES:
        folder = root / "images" / city
        dates = [[next((folder / d).glob(f"*_{b}.tif")) for b in ("B02", "B03", "B04", "B08")] for d in ("imgs_1", "imgs_2")]
        with rasterio.open(dates[0][0]) as src:
            res, shape = (src.transform.a, -src.transform.e), src.shape
        with rasterio.open(root / "train_labels" / city / "cm" / f"{city}-cm.tif") as src:
            label = src.read(1)
        assert label.shape == shape, (city, label.shape, shape)
        yield city, dates[0], dates[1], (label == 2).astype(np.uint8), None, {"crs": "EPSG:4326", "resolution": res}


def _marked(path: Path) -> np.ndarray:
    """Pixels marked in a sample-label bitmap (any non-zero value, palette or RGB)."""
    values = np.array(Image.open(path))
    return (values if values.ndim == 2 else values.max(axis=-1)) > 0


def landsat_cases(work: Path) -> Iterator[Case]:
    """The 2 Landsat TM pairs (ENVI, georeferenced); only the pixels of change.bmp / unchanged.bmp are labelled."""
    root = DATA / "landsat-taizhou-nanjing_changedetectionrepository"
    pairs = {"Nanjing": ("LT51200382000124BJC00_Nanjing", "LT51200382002193BJC00_Nanjing"), "Taizhou": ("2000TM", "2003TM")}
    for name, (first, second) in pairs.items():
        folder = root / name
        changed, unchanged = (_marked(folder / f"{kind}.bmp") for kind in ("change", "unchanged"))
        yield name, folder / first, folder / second, changed.astype(np.uint8), changed | unchanged, {}


def cases(dataset: str, work: Path) -> Iterator[Case]:
    if dataset == "oscd":
        return oscd_cases(work)
    if dataset == "dsifn":
        return png_cases("dsifn", DATA / "dsifn_changeformer", 2.0, work)
    if dataset == "levir":
        return png_cases("levir", DATA / "levircd_bitcd", 0.5, work)
    if dataset == "egybcd":
        return png_cases("egybcd", DATA / "egy-bcd-samples_oshholail", 0.25, work)
    if dataset == "landsat":
        return landsat_cases(work)
    raise SystemExit(f"unknown data set {dataset}")


# --- one scene ----------------------------------------------------------------------------------

def object_truth(run: ReviewRun, table, reference: np.ndarray, labelled: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per object, over its labelled pixels: pixels, ground-truth change pixels, the base mask's changed and
    true-positive pixels."""
    gt = np.zeros(len(table), np.float64)
    base = np.zeros(len(table), np.float64)
    base_gt = np.zeros(len(table), np.float64)
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
            if labelled is not None:
                ok &= labelled[r0:r0 + h, c0:c0 + w]
            rows = rows[ok]
            pixels += np.bincount(rows, minlength=len(table))
            gt += np.bincount(rows, weights=ref[ok], minlength=len(table))
            base += np.bincount(rows, weights=mask[ok], minlength=len(table))
            base_gt += np.bincount(rows, weights=mask[ok] & (ref[ok] == 1), minlength=len(table))
    return {"pixels": pixels, "gt": gt, "base": base, "base_gt": base_gt}


def confusion(predicted: np.ndarray, truth: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """[tp, fp, fn] over the pixels of the objects in ``keep``, each object mapped as ``predicted`` (bool)."""
    p, g = truth["pixels"][keep], truth["gt"][keep]
    on = predicted[keep]
    return np.array([g[on].sum(), (p - g)[on].sum(), g[~on].sum()])


def base_confusion(truth: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    tp = truth["base_gt"][keep].sum()
    return np.array([tp, truth["base"][keep].sum() - tp, truth["gt"][keep].sum() - tp])


def f1(c: np.ndarray) -> float:
    tp, fp, fn = c
    return float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else float("nan")


def draw(table, answers: dict[int, int], skipped: set[int], answer: np.ndarray, row_of: dict[int, int], n: int, *,
         threshold, model, strategy: str, seed: int) -> list[int]:
    """The next ``n`` objects the analyst answers: the suggestions in order, those the analyst cannot answer
    (``answer`` -1: no labelled pixel, an un-classified building) skipped and added to ``skipped``."""
    extra = len(skipped)
    while True:
        ids = choose(table, answers, n + extra, threshold=threshold, model=model, strategy=strategy, seed=seed).tolist()
        fresh = [int(i) for i in ids if int(i) not in skipped]
        for i in fresh:
            if answer[row_of[i]] < 0:
                skipped.add(i)
        good = [i for i in fresh if answer[row_of[i]] >= 0]
        if len(good) >= n or len(ids) < n + extra:
            return good[:n]
        extra = len(skipped)


def loop(table, answer: np.ndarray, evaluate, threshold, strategy: str, seed: int, groups) -> dict[int, dict]:
    """The simulated analyst's rounds; per k: ``evaluate(keep, answers, model)`` on the objects not reviewed.

    ``answer``: the analyst's answer per row of ``table`` (-1: cannot answer, skipped)."""
    answers: dict[int, int] = {}
    skipped: set[int] = set()
    out = {}
    model = None
    row_of = {int(i): r for r, i in enumerate(table.ids)}
    for k in range(0, max(KS) + 1, ROUND):
        if k in KS:
            reviewed = np.zeros(len(table), bool)
            reviewed[[row_of[i] for i in answers]] = True
            out[k] = evaluate(~reviewed, answers, model)
        if k == max(KS):
            break
        chosen = draw(table, answers, skipped, answer, row_of, ROUND, threshold=threshold, model=model,
                      strategy=strategy, seed=seed + 1000 * k)
        if not chosen:
            break
        for object_id in chosen:
            answers[object_id] = int(answer[row_of[object_id]])
        model = train(table, answers, seed=seed, groups=groups)
    return out


def detect_evaluator(table, truth, groups):
    majority_truth = truth["gt"] >= 0.5 * truth["pixels"]  # what the analyst would answer: the objects' ceiling

    def evaluate(keep, answers, model):
        result = {"base": base_confusion(truth, keep), "ceiling": confusion(majority_truth, truth, keep)}
        if answers:
            values = np.array(list(answers.values()))
            result["majority"] = confusion(np.full(len(table), values.mean() >= 0.5), truth, keep)
        if model is not None:
            features = table.select(groups)[0]
            result["refined"] = confusion(model.change_probability(features) >= 0.5, truth, keep)
            trusted, _ = classifier_beats_base(table, answers, cross_validate(table, answers, groups=groups))
            result["guarded"] = result["refined"] if trusted else result["base"]
        else:  # no classifier yet (k = 0, or one class answered): the run's own map stands
            result["refined"] = result["guarded"] = result["base"]
        return result
    return evaluate


def _cell(values: list[float]) -> str:
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return "-"
    if len(values) > 1 and np.ptp(values) > 0.0005:
        return f"{np.mean(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
    return f"{np.mean(values):.3f}"


def write_table(path: Path, results: dict, header: str, base: str) -> None:
    lines = [header, ""]
    for dataset, per in results.items():
        scenes = per["scenes"]
        title = (f"## {dataset} ({len(scenes)} pairs: {', '.join(scenes)}; base run {base}; pooled micro F1 on the "
                 f"unreviewed labelled pixels, mean over {len(SEEDS)} seeds, min-max in brackets)")
        lines += [title, "",
                  "| suggestions | map | " + " | ".join(f"k={k}" for k in KS) + " |",
                  "|---|---|" + "---|" * len(KS)]
        for strategy in STRATEGIES:
            for name in ("base", "majority", "refined", "guarded"):
                cells = [_cell([f1(per["pooled"][strategy][seed][k][name]) for seed in SEEDS
                                if name in per["pooled"][strategy][seed].get(k, {})]) for k in KS]
                lines.append(f"| {strategy} | {base if name == 'base' else name} | " + " | ".join(cells) + " |")
        if "ceiling" in per["pooled"]["model"][SEEDS[0]].get(0, {}):
            cells = [_cell([f1(per["pooled"]["model"][seed][k]["ceiling"]) for seed in SEEDS]) for k in KS]
            lines.append("| (any) | ceiling: every object at its majority truth | " + " | ".join(cells) + " |")
        timing = (f"seconds: detect {per['seconds']['detect']:.1f}, objects and features "
                  f"{per['seconds']['features']:.1f}, loop {per['seconds']['loop']:.1f}; objects per scene "
                  f"{min(per['objects'])}-{max(per['objects'])}")
        if per.get("answerable"):
            timing += f"; objects with a labelled pixel (the analyst can answer) {min(per['answerable'])}-{max(per['answerable'])}"
        lines += ["", timing, ""]
        lines += [f"per pair, model suggestions, seed 0 (F1 {base} / refined at k=" + ",".join(map(str, KS)) + "):", ""]
        for scene, row in per["per_scene"].items():
            lines.append(f"- {scene}: {base} {row['base']:.3f}; refined " + " ".join(f"{v:.3f}" for v in row["refined"]))
        lines.append("")
    path.write_text("\n".join(lines))


# --- damage ----------------------------------------------------------------------------------------

def yolo_tile(stem: str, out: Path, origin: tuple[float, float]):
    """One tile of xbd-other-events_bennit99 (pre/, post/, YOLO polygons in labels/) as a georeferenced pair and
    footprints with grades (class 0-3 the grade, 4 un-classified: -1), like :func:`write_xbd_tile`."""
    from deltacd.datasets.xbd_tiles import DEFAULT_CRS, XBD_RESOLUTION, XbdTile

    root = DATA / "xbd-other-events_bennit99"
    out.mkdir(parents=True, exist_ok=True)
    transform = Affine(XBD_RESOLUTION, 0.0, origin[0], 0.0, -XBD_RESOLUTION, origin[1])
    paths = []
    for date, name in (("pre", "before.tif"), ("post", "after.tif")):
        rgb = np.array(Image.open(root / date / f"{stem}_{date}_disaster.png").convert("RGB")).transpose(2, 0, 1)
        with rasterio.open(out / name, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3,
                           dtype="uint8", crs=DEFAULT_CRS, transform=transform, photometric="RGB") as dst:
            dst.write(rgb)
        paths.append(out / name)
        h, w = rgb.shape[1:]
    geoms, grades = [], []
    for line in (root / "labels" / f"{stem}_post_disaster.txt").read_text().split("\n"):
        values = line.split()
        if len(values) < 7:
            continue
        xy = np.array(values[1:], dtype=float).reshape(-1, 2) * (w, h)
        x, y = transform * (xy[:, 0], xy[:, 1])
        geom = shapely.make_valid(shapely.Polygon(np.column_stack([x, y])))
        if geom.is_empty or geom.area <= 0:
            continue
        geoms.append(geom)
        grades.append(int(values[0]) if int(values[0]) <= 3 else -1)
    buildings = out / "buildings.gpkg"
    gpd.GeoDataFrame({"building_id": [f"{stem}-{i}" for i in range(len(geoms))], "grade": grades},
                     geometry=gpd.GeoSeries(geoms, crs=DEFAULT_CRS)).to_file(buildings, layer="buildings")
    return XbdTile(event=stem.rsplit("_", 1)[0], tile=stem, before=paths[0], after=paths[1], buildings=buildings,
                   localisation=buildings, damage_mask=buildings)


def damage_tiles(group: str, work: Path) -> list:
    from deltacd.damage.xbd import list_tiles, write_xbd_tile

    base = {"joplin": 0, "harvey": 10, "ida": 20, "xbd-other": 30}[group]
    if group == "xbd-other":
        stems = sorted(p.name.removesuffix("_pre_disaster.png")
                       for p in (DATA / "xbd-other-events_bennit99" / "pre").glob("*_pre_disaster.png"))
        return [yolo_tile(s, work / "tiles" / s, (500000.0 + 2000.0 * (base + k), 3300000.0)) for k, s in enumerate(stems)]
    folder = DATA / {"joplin": "xbd_matthinfo/tier3", "harvey": "xbd-hurricanes-idabd_dahitra/xbd/train",
                     "ida": "xbd-hurricanes-idabd_dahitra/IdaBD"}[group]
    return [write_xbd_tile(folder, t, work / "tiles" / t, event=group, origin=(500000.0 + 2000.0 * (base + k), 3300000.0))
            for k, t in enumerate(list_tiles(folder))]


def grade_confusion(truth: np.ndarray, predicted: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """4 x 4 counts [reference grade, predicted grade] over the buildings in ``keep`` (reference and prediction >= 0)."""
    ok = keep & (truth >= 0) & (predicted >= 0)
    return np.bincount(truth[ok] * 4 + predicted[ok], minlength=16).reshape(4, 4).astype(float)


def damage_scores(c: np.ndarray) -> tuple[float, float, int]:
    """Damaged-vs-undamaged F1, macro F1 over the grades present in the reference, buildings scored."""
    def f(tp, fp, fn):
        return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    damaged = f(c[1:, 1:].sum(), c[0, 1:].sum(), c[1:, 0].sum())
    present = [g for g in range(4) if c[g].sum() > 0]
    macro = float(np.mean([f(c[g, g], c[:, g].sum() - c[g, g], c[g].sum() - c[g, g]) for g in present])) if present else float("nan")
    return damaged, macro, int(c.sum())


def damage_evaluator(table, truth: np.ndarray, own: np.ndarray, groups):
    """Maps of the damage loop: the run's own grades, the reviews' majority grade, the refined grades; only
    buildings the run graded are scored (as in benchmarks/damage_loeo.py), the same for every map."""
    graded = own >= 0

    def evaluate(keep, answers, model):
        keep = keep & graded
        result = {"base": grade_confusion(truth, own, keep)}
        if answers:
            values = np.array(list(answers.values()))
            result["majority"] = grade_confusion(truth, np.full(len(table), np.bincount(values, minlength=4).argmax()), keep)
        if model is not None:
            p = model.probabilities(table.select(groups)[0])
            result["refined"] = grade_confusion(truth, model.classes[np.argmax(p, axis=1)].astype(int), keep)
        else:
            result["refined"] = result["base"]
        return result
    return evaluate


def write_damage_table(path: Path, results: dict, header: str) -> None:
    lines = [header, ""]
    for group, per in results.items():
        lines += [(f"## {group} ({len(per['scenes'])} tiles: {', '.join(per['scenes'])}; {sum(per['objects'])} buildings, "
                   f"{sum(per['graded'])} with a reference grade; pooled over the tiles, mean over {len(SEEDS)} seeds, "
                   "min-max in brackets)"), ""]
        for metric, index in (("damaged-vs-undamaged F1", 0), ("macro F1", 1)):
            lines += [f"{metric}:", "", "| suggestions | map | " + " | ".join(f"k={k}" for k in KS) + " |",
                      "|---|---|" + "---|" * len(KS)]
            for strategy in STRATEGIES:
                for name in ("base", "majority", "refined"):
                    cells = [_cell([damage_scores(per["pooled"][strategy][seed][k][name])[index] for seed in SEEDS
                                    if name in per["pooled"][strategy][seed].get(k, {})]) for k in KS]
                    label = "damage run (change, CVA)" if name == "base" else name
                    lines.append(f"| {strategy} | {label} | " + " | ".join(cells) + " |")
            lines.append("")
        scored = [int(np.mean([damage_scores(per["pooled"]["model"][seed][k]["base"])[2] for seed in SEEDS])) for k in KS]
        lines += [("buildings scored (not reviewed, graded by the run, reference grade known), model suggestions: "
                   + ", ".join(f"k={k}: {n}" for k, n in zip(KS, scored, strict=True))), ""]
        if per.get("end_to_end"):
            lines += ["public path (write_suggestions 10, labels = true grades, refine, one ReviewSession click) on "
                      + per["end_to_end"], ""]
        lines += [(f"seconds: damage {per['seconds']['detect']:.1f}, objects and features {per['seconds']['features']:.1f}, "
                   f"loop {per['seconds']['loop']:.1f}"), ""]
        lines += ["per tile, model suggestions, seed 0 (damaged F1 of the run / refined at k=" + ",".join(map(str, KS))
                  + "; buildings):", ""]
        for scene, row in per["per_scene"].items():
            lines.append(f"- {scene}: run {row['base']:.3f}; refined " + " ".join(f"{v:.3f}" for v in row["refined"])
                         + f"; {row['buildings']} buildings")
        lines.append("")
    path.write_text("\n".join(lines))


def damage_end_to_end(out: Path, truth_of: dict[int, int], work: Path) -> str:
    """The public path on one damage run: ``write_suggestions`` (10 buildings), the labels filled with the true
    grades (un-classified left empty), ``refine``, a ``ReviewSession`` click; one line saying what happened."""
    from deltacd.errors import DeltacdError
    from deltacd.review.refine import refine, write_suggestions
    from deltacd.review.session import ReviewSession

    try:
        path = write_suggestions(out, 10, work / "suggestions.gpkg", overwrite=True)
        frame = gpd.read_file(path, layer="suggestions")
        grades = [truth_of.get(int(i), -1) for i in frame["object_id"]]
        frame["label"] = [g if g >= 0 else None for g in grades]
        frame.to_file(work / "labels.gpkg", layer="suggestions")
        result = refine(out, [work / "labels.gpkg"], work / "refined", overwrite=True)
        refined = gpd.read_file(work / "refined" / "buildings.gpkg", layer="buildings")
        session = ReviewSession(out)
        nxt = session.next(1)
        session.answer(int(nxt.index[0]), max(truth_of.get(int(nxt.index[0]), 0), 0))
        session.close()
        review = result.record["review"]
        return (f"ok: 10 suggested, {review['objects_reviewed']} reviewed (per grade {review['per_class']}), "
                f"{len(refined)} buildings refined ({int(refined['reviewed'].sum())} marked reviewed), "
                f"cross-validated accuracy {review['cross_validated'].get('accuracy')}; one click stored")
    except DeltacdError as exc:
        return f"refused with one line: {exc}"


def run_damage(groups_run: list[str], args, work: Path, name: str, header: str, groups) -> int:
    from deltacd.damage import damage

    results: dict = {}
    for group in groups_run:
        per = {"scenes": [], "pooled": {s: {seed: {} for seed in SEEDS} for s in STRATEGIES},
               "seconds": {"detect": 0.0, "features": 0.0, "loop": 0.0}, "objects": [], "graded": [], "per_scene": {}}
        for n, tile in enumerate(damage_tiles(group, work / group)):
            if args.limit and n >= args.limit:
                break
            reference = gpd.read_file(tile.buildings, layer="buildings")
            if len(reference) == 0:
                print(f"{group} {tile.tile}: no building, left out", flush=True)
                continue
            plain = work / group / f"{tile.tile}_footprints.gpkg"  # no grade in the run's input: it would be a feature
            gpd.GeoDataFrame({"building_id": np.arange(len(reference), dtype=np.int64)}, geometry=reference.geometry,
                             crs=reference.crs).to_file(plain, layer="buildings")
            t0 = time.perf_counter()
            out = work / group / f"run_{tile.tile}"
            shutil.rmtree(out, ignore_errors=True)
            damage(tile.before, tile.after, out, buildings=plain, coregistration="off")
            t1 = time.perf_counter()
            with ReviewRun(out) as run:
                table = object_table(run, refresh=True)
                own = run.buildings().loc[table.ids, "damage_grade"].to_numpy(dtype=int)
            truth = reference["grade"].to_numpy(dtype=int)[table.ids]
            t2 = time.perf_counter()
            evaluate = damage_evaluator(table, truth, own, groups)
            for strategy in STRATEGIES:
                for seed in SEEDS:
                    scores = loop(table, truth, evaluate, None, strategy, seed, groups)
                    pooled = per["pooled"][strategy][seed]
                    for k in KS:
                        maps = scores.get(k) or scores[max(scores)]  # every building reviewed earlier: nothing left
                        if k not in scores:
                            maps = {m: np.zeros((4, 4)) for m in maps}
                        for m, c in maps.items():
                            pooled.setdefault(k, {}).setdefault(m, np.zeros((4, 4)))
                            pooled[k][m] = pooled[k][m] + c
                    if strategy == "model" and seed == 0:
                        per["per_scene"][tile.tile] = {
                            "base": damage_scores(scores[0]["base"])[0], "buildings": len(table),
                            "refined": [damage_scores(scores[k]["refined"])[0] if k in scores else float("nan") for k in KS]}
            t3 = time.perf_counter()
            if not per["scenes"]:  # the first tile of the group also goes through the public path
                per["end_to_end"] = f"{tile.tile}: " + damage_end_to_end(
                    out, dict(zip(table.ids.tolist(), truth.tolist(), strict=True)), work / group / "e2e")
                print(per["end_to_end"], flush=True)
            per["scenes"].append(tile.tile)
            per["objects"].append(len(table))
            per["graded"].append(int((truth >= 0).sum()))
            for key, dt in (("detect", t1 - t0), ("features", t2 - t1), ("loop", t3 - t2)):
                per["seconds"][key] += dt
            row = per["per_scene"][tile.tile]
            print(f"{group} {tile.tile}: {len(table)} buildings, damage {t1 - t0:.1f} s, loop {t3 - t2:.1f} s; damaged F1 run "
                  f"{row['base']:.3f} refined " + " ".join(f"{v:.3f}" for v in row["refined"]), flush=True)
        results[group] = per
        RESULTS.mkdir(exist_ok=True)
        write_damage_table(RESULTS / f"{name}.md", results, header)
        (RESULTS / f"{name}.json").write_text(json.dumps(
            {g: {"scenes": p["scenes"], "seconds": p["seconds"], "objects": p["objects"], "graded": p["graded"],
                 "per_scene": p["per_scene"], "end_to_end": p.get("end_to_end"),
                 "scores": {s: {str(seed): {str(k): {m: dict(zip(("damaged_f1", "macro_f1", "buildings"), damage_scores(c)))
                                                     for m, c in maps.items()} for k, maps in p["pooled"][s][seed].items()}
                                for seed in SEEDS} for s in STRATEGIES}} for g, p in results.items()}, indent=1))
    return 0


# --- speed and memory ------------------------------------------------------------------------------

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


SPEED_STEPS = ("detect", "features", "suggest", "write_suggestions", "refine", "click")


def speed(sizes: list[int], work: Path, steps: list[str] | None = None) -> int:
    """Time and peak memory of each step of the loop on the scale benchmark's pair (module notes)."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale import source_tiles, write_mosaic

    tiles = source_tiles()
    rows = []
    store = RESULTS / "analyst_loop_scale.json"
    saved = json.loads(store.read_text()) if steps and store.is_file() else {}
    for size in sizes:
        before, after = work / f"{size}_before.tif", work / f"{size}_after.tif"
        if not before.exists() or not after.exists():
            started = time.perf_counter()
            write_mosaic(before, tiles[0], size)
            write_mosaic(after, tiles[1], size)
            print(size, "mosaic", f"{time.perf_counter() - started:.1f} s", flush=True)
        run = work / f"run_{size}"
        row = {"size": size}
        for step in steps or SPEED_STEPS:
            done = subprocess.run([sys.executable, "-c", SPEED_CHILD, step, str(run), str(work), str(before), str(after)],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            row[step] = json.loads(done.stdout.strip().splitlines()[-1])
            row[step]["load"] = os.getloadavg()[0]
            if step == "features":
                row["objects"] = int(done.stderr.strip().splitlines()[-1])
                row[step]["objects"] = row["objects"]
            print(size, step, row[step], flush=True)
            if steps:  # one step at a time: kept at once, the table rebuilt from every step measured so far
                saved.setdefault(str(size), {})[step] = row[step]
                saved[str(size)]["machine"] = f"{platform.platform()}, {os.cpu_count()} CPUs"
                RESULTS.mkdir(exist_ok=True)
                store.write_text(json.dumps(saved, indent=1))
                write_scale_table(saved)
        rows.append(row)
    if steps:
        return 0
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


def write_scale_table(saved: dict) -> None:
    """``analyst_loop_scale.md`` from the steps measured one call at a time (``--steps``), with the slope of peak
    memory against the scene's pixels and its projection to 40 000 px."""
    sizes = sorted(saved, key=int)
    lines = ["# Review loop: time and peak memory against the scene's size", "",
             "`python benchmarks/analyst_loop.py --speed SIZE --steps STEP [STEP ...] --work DIR`, one call per size and "
             "group of steps (each under 10 minutes), each step in a fresh process: seconds of the step itself (after "
             "imports), peak resident MiB of the process (`resource.getrusage`, ru_maxrss), load average (1 min) when the "
             "step ended. Machine: " + "; ".join(sorted({saved[s].get("machine", "?") for s in sizes})), "",
             "| size px | Mpx | objects | " + " | ".join(f"{st} s / MiB / load" for st in SPEED_STEPS) + " |",
             "|---|---|---|" + "---|" * len(SPEED_STEPS)]
    for size in sizes:
        row = saved[size]
        cells = []
        for st in SPEED_STEPS:
            r = row.get(st)
            cells.append("-" if r is None else f"{r['seconds']:.1f} / {r['peak_mib']:.0f} / {r.get('load', float('nan')):.1f}")
        objects = row.get("features", {}).get("objects", "-")
        lines.append(f"| {size} | {int(size) ** 2 / 1e6:.0f} | {objects} | " + " | ".join(cells) + " |")
    lines += ["", ("Peak memory against pixels (least squares; MiB per 100 Mpx) and projected to 40 000 px (1 600 Mpx), "
                   "over every size measured and over the sizes from 10 000 px on (5 000 px sits below the level the "
                   "others share); seconds projected linearly in pixels from the sizes from 10 000 px on:"), "",
              ("| step | sizes | MiB at each size | slope, all sizes | projected MiB, all sizes | slope, >= 10 000 px "
               "| projected MiB, >= 10 000 px | seconds projected at 40 000 px |"),
              "|---|---|---|---|---|---|---|---|"]
    for st in SPEED_STEPS:
        have = [s for s in sizes if st in saved[s]]
        if len(have) < 2:
            continue
        fits = []
        for chosen in (have, [s for s in have if int(s) >= 10000]):
            if len(chosen) < 2:
                fits.append(None)
                continue
            mpx = np.array([int(s) ** 2 / 1e6 for s in chosen])
            mib = np.array([saved[s][st]["peak_mib"] for s in chosen])
            sec = np.array([saved[s][st]["seconds"] for s in chosen])
            fits.append((np.polyfit(mpx, mib, 1), np.polyfit(mpx, sec, 1)))
        top_mib = max(saved[s][st]["peak_mib"] for s in have)
        top_sec = max(saved[s][st]["seconds"] for s in have)
        cells = ["- | -" if f is None else f"{100 * f[0][0]:.1f} | " + (
            f"{f[0][1] + f[0][0] * 1600:.0f}" if f[0][0] > 0 else f"flat (at most {top_mib:.0f} measured)") for f in fits]
        last = fits[1] or fits[0]
        seconds = f"{last[1][1] + last[1][0] * 1600:.0f}" if last[1][0] > 0 else f"flat (at most {top_sec:.1f} measured)"
        levels = " / ".join(f"{saved[s][st]['peak_mib']:.0f}" for s in have)
        lines.append(f"| {st} | {', '.join(have)} | {levels} | {cells[0]} | {cells[1]} | {seconds} |")
    (RESULTS / "analyst_loop_scale.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", nargs="+", type=int, help="measure the loop's speed on N px scenes instead")
    parser.add_argument("--steps", nargs="+", choices=SPEED_STEPS, help="with --speed: only these steps (module notes)")
    parser.add_argument("--datasets", nargs="+", default=["oscd", "dsifn", "levir"],
                        help="oscd dsifn levir egybcd landsat, or the damage groups joplin harvey ida xbd-other")
    parser.add_argument("--method", default="cva", help="detect's method for the base run (default cva)")
    parser.add_argument("--model", help="detect's model for the base run (e.g. tinycd:PATH); its name labels the base")
    parser.add_argument("--limit", type=int, help="at most this many pairs per data set")
    parser.add_argument("--features", help="comma-separated feature groups (score, shape, texture, indices, bands, embeddings); default all")
    parser.add_argument("--embeddings", metavar="SPEC",
                        help="add the objects' encoder embeddings (group 'embeddings', deltacd.review.embeddings), "
                             "e.g. efficientnet_lite0:imagenet")
    parser.add_argument("--area", type=int, help="pixels per superpixel (default: deltacd's, from the scene size)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()
    if args.speed:
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="deltacd-analyst-speed-"))
        work.mkdir(parents=True, exist_ok=True)
        return speed(args.speed, work, args.steps)
    groups = args.features.split(",") if args.features else None
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="deltacd-analyst-"))
    work.mkdir(parents=True, exist_ok=True)
    name = "analyst_loop" + (f"_{args.tag}" if args.tag else "")
    base = args.model.split(":", 1)[0] if args.model else args.method
    header = (f"# Simulated analyst ({platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start; "
              f"base run: {args.model or args.method}; features: {args.features or 'all'}{'; embeddings: ' + args.embeddings if args.embeddings else ''}; superpixels: {args.area or 'default'} px)"
              f"\n\n`python benchmarks/analyst_loop.py {' '.join(sys.argv[1:])}`")
    damage_groups = [d for d in args.datasets if d in DAMAGE_GROUPS]
    if damage_groups:
        if len(damage_groups) != len(args.datasets):
            raise SystemExit("give either change data sets or damage groups, not both")
        return run_damage(damage_groups, args, work, name, header.replace(f"base run: {args.model or args.method}",
                                                                          "damage run: change (CVA)"), groups)
    options = {"model": args.model} if args.model else {"method": args.method}
    results: dict = {}
    for dataset in args.datasets:
        per = {"scenes": [], "pooled": {s: {seed: {} for seed in SEEDS} for s in STRATEGIES},
               "seconds": {"detect": 0.0, "features": 0.0, "loop": 0.0}, "objects": [], "answerable": [], "per_scene": {}}
        for n, (scene, before, after, reference, labelled, extra) in enumerate(cases(dataset, work)):
            if args.limit and n >= args.limit:
                break
            t0 = time.perf_counter()
            out = work / f"{dataset}_{base}_{scene}"
            shutil.rmtree(out, ignore_errors=True)  # a run holding review files is not replaced by --overwrite
            deltacd.detect(before, after, out, min_area_m2=0, **options, **extra)
            t1 = time.perf_counter()
            with ReviewRun(out, area=args.area) as run:
                table = object_table(run, refresh=True)
                if args.embeddings:
                    table = with_embeddings(run, table, spec=args.embeddings)
                assert reference.shape == (run.grid.height, run.grid.width), (scene, reference.shape, run.grid.shape)
                truth = object_truth(run, table, reference, labelled)
                threshold = float(run.record["threshold"]["value"])
            answer = np.where(truth["pixels"] > 0, (truth["gt"] >= 0.5 * truth["pixels"]).astype(int), -1)
            evaluate = detect_evaluator(table, truth, groups)
            t2 = time.perf_counter()
            for strategy in STRATEGIES:
                for seed in SEEDS:
                    scores = loop(table, answer, evaluate, threshold, strategy, seed, groups)
                    pooled = per["pooled"][strategy][seed]
                    for k, maps in scores.items():
                        for m, c in maps.items():
                            pooled.setdefault(k, {}).setdefault(m, np.zeros(3))
                            pooled[k][m] = pooled[k][m] + c
                    if strategy == "model" and seed == 0:
                        per["per_scene"][scene] = {"base": f1(scores[0]["base"]),
                                                   "refined": [f1(scores[k]["refined"]) if k in scores else float("nan")
                                                               for k in KS]}
            t3 = time.perf_counter()
            per["scenes"].append(scene)
            per["objects"].append(len(table))
            if labelled is not None:
                per["answerable"].append(int((answer >= 0).sum()))
            for key, dt in (("detect", t1 - t0), ("features", t2 - t1), ("loop", t3 - t2)):
                per["seconds"][key] += dt
            print(f"{dataset} {scene}: {len(table)} objects, detect {t1 - t0:.1f} s, features {t2 - t1:.1f} s, "
                  f"loop {t3 - t2:.1f} s; F1 {base} {per['per_scene'][scene]['base']:.3f} refined "
                  + " ".join(f"{v:.3f}" for v in per["per_scene"][scene]["refined"]), flush=True)
        results[dataset] = per
        RESULTS.mkdir(exist_ok=True)
        write_table(RESULTS / f"{name}.md", results, header, base)
        (RESULTS / f"{name}.json").write_text(json.dumps(
            {d: {"scenes": p["scenes"], "base": base, "seconds": p["seconds"], "objects": p["objects"],
                 "per_scene": p["per_scene"],
                 "f1": {s: {str(seed): {str(k): {m: f1(c) for m, c in maps.items()} for k, maps in p["pooled"][s][seed].items()}
                            for seed in SEEDS} for s in STRATEGIES}} for d, p in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
