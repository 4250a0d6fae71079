"""Pseudo-labels from the confident extremes of the score against the plain CVA map (issue 25, point 5).

For each labelled pair of a data set (the cases of ``benchmarks/analyst_loop.py``: OSCD, DSIFN,
LEVIR-CD, EGY-BCD, Landsat): the base CVA run once (``deltacd.detect``, ``min_area_m2=0``), its
objects and features (:func:`deltacd.review.features.object_table`), then on the same labelled pixels:

- ``cva``: the run's own change mask (pixels);
- ``cva objects``: each object mapped change when at least half of its pixels lie above the run's
  threshold (``score_above >= 0.5``): CVA at the objects' resolution, the control that tells apart
  what the pseudo-labels add from what mapping whole objects does;
- ``pseudo H/L``: no answer at all; the loop's classifier trained on the pseudo-labels of
  :func:`deltacd.review.pseudo.pseudo_labels`: the H % of the objects with the highest ratio of mean
  score to threshold (if above it) as change, the L % with the lowest (if below it) as no change;
  each object mapped change at probability >= 0.5; ``(no score)``: the classifier trained without
  the score features (the labels come from the score, the classifier sees the other features only);
- with answers (the simulated analyst of ``analyst_loop.loop``, model suggestions, rounds of 5, 3
  seeds): at k = 5 and 10, ``refined`` (the classifier of the answers alone; the run's map while
  they hold one class) against ``refined + pseudo`` (the answers plus the pseudo-labels of the
  unreviewed objects, weight 1, or 0.3 against an answer), both trained on the same answers, and
  ``refined, pseudo while one class`` (what ``refine(..., pseudo_labels=True)`` does: the pseudo-labels
  only while the answers hold one class); scored on the objects not reviewed;
- ``ceiling``: every object at the majority of its labelled pixels.

Pooled micro F1, precision and recall over the pairs of a data set (mean over the 3 seeds of the
classifier, min-max in brackets). Each invocation adds its data sets to
``benchmarks/results/pseudo_labels.json`` and rewrites ``pseudo_labels.md`` from it (after each data
set), so the data sets can be run one invocation at a time:

    python benchmarks/pseudo_labels.py --datasets dsifn [--limit 5] [--work DIR]
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deltacd
from analyst_loop import SEEDS, _cell, base_confusion, cases, confusion, f1, loop, object_truth
from deltacd.review.features import object_table
from deltacd.review.objects import ReviewRun
from deltacd.review.pseudo import LOW_SHARE, SHARE, pseudo_model

RESULTS = Path(__file__).resolve().parent / "results"
STORE = RESULTS / "pseudo_labels.json"
NO_SCORE = ["shape", "texture", "indices", "bands"]
#: The pseudo-label maps with no answer: name -> share (change), low share (no change), feature groups.
VARIANTS = {
    "pseudo 10/10": (0.1, 0.1, None),
    "pseudo 5/50": (0.05, 0.5, None),
    "pseudo 10/50": (0.1, 0.5, None),
    "pseudo 20/50": (0.2, 0.5, None),
    "pseudo 10/80": (0.1, 0.8, None),
    "pseudo 10/50 (no score)": (0.1, 0.5, NO_SCORE),
}
DEFAULT = f"pseudo {100 * SHARE:g}/{100 * LOW_SHARE:g}"
WITH_ANSWERS = (5, 10)
WEIGHTS = (1.0, 0.3)


def k0_maps(table, truth, threshold: float, seed: int) -> dict[str, np.ndarray]:
    """The maps with no answer: confusion [tp, fp, fn] over every object."""
    keep = np.ones(len(table), bool)
    out = {"cva": base_confusion(truth, keep),
           "cva objects": confusion(table.column("score_above") >= 0.5, truth, keep),
           "ceiling": confusion(truth["gt"] >= 0.5 * truth["pixels"], truth, keep)}
    for key, (share, low_share, groups) in VARIANTS.items():
        model, _ = pseudo_model(table, threshold, share=share, low_share=low_share, seed=seed, groups=groups)
        if model is None:  # too few objects above the threshold: the run's map stands
            out[key] = out["cva"]
        else:
            out[key] = confusion(model.change_probability(table.select(groups)[0]) >= 0.5, truth, keep)
    return out


def answer_evaluator(table, truth, threshold: float, seed: int):
    """``evaluate(keep, answers, model)`` for ``analyst_loop.loop``: the plain refined map and the ones with pseudo-labels."""
    def evaluate(keep, answers, model):
        k = len(answers)
        if k not in WITH_ANSWERS:
            return {}
        features = table.features
        result = {"cva": base_confusion(truth, keep)}
        result["refined"] = (confusion(model.change_probability(features) >= 0.5, truth, keep) if model is not None
                             else result["cva"])
        for weight in WEIGHTS:
            combined, _ = pseudo_model(table, threshold, answers, weight=weight, seed=seed)
            key = f"refined + pseudo {100 * SHARE:g}/{100 * LOW_SHARE:g} w={weight:g}"
            result[key] = (confusion(combined.change_probability(features) >= 0.5, truth, keep) if combined is not None
                           else result["cva"])
            if weight == 1.0:  # refine(pseudo_labels=True): pseudo-labels only while the answers hold one class
                result["refined, pseudo while one class"] = result["refined"] if model is not None else result[key]
        return result
    return evaluate


def _prf(c) -> tuple[float, float, float]:
    tp, fp, fn = c
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return f1(np.asarray(c)), p, r


def write_table(saved: dict) -> None:
    lines = ["# Pseudo-labels from the score's confident extremes against plain CVA",
             "",
             ("`python benchmarks/pseudo_labels.py --datasets D [--limit N]`, one invocation per data set (module "
             "docstring). Pooled micro F1, precision and recall on the labelled pixels (k = 0: every object; "
             "k = 5, 10: the objects not reviewed), mean over 3 seeds (the classifier's seed; with answers also the "
             "suggestions'), min-max in brackets. Default shares (pseudo.SHARE / LOW_SHARE): "
             f"{100 * SHARE:g}/{100 * LOW_SHARE:g}."), ""]
    summary = ["## Summary: pooled F1 with no answer", "",
               "| data set | pairs | cva | cva objects | " + " | ".join(VARIANTS) + " | ceiling |",
               "|---|---|---|---|" + "---|" * len(VARIANTS) + "---|"]
    body, wins = [], []
    scores = {d: {n: np.mean([_prf(p["k0"][str(s)][n])[0] for s in SEEDS]) for n in ["cva", *VARIANTS]}
              for d, p in saved.items()}
    for dataset, per in saved.items():
        k0 = per["k0"]

        def f1s(name, table=k0):
            return [_prf(table[str(seed)][name])[0] for seed in SEEDS if name in table[str(seed)]]

        summary.append(f"| {dataset} | {len(per['scenes'])} | " + " | ".join(
            _cell(f1s(n)) for n in ["cva", "cva objects", *VARIANTS, "ceiling"]) + " |")
        body += [f"## {dataset} ({len(per['scenes'])} pairs: {', '.join(per['scenes'])})", "",
                 (f"Machine: {per['machine']}; load average (1 min) {per['load'][0]:.1f} at start, "
                 f"{per['load'][1]:.1f} at end; {per['seconds']:.0f} s; objects per pair "
                 f"{min(per['objects'])}-{max(per['objects'])}; pseudo-labels per pair (default shares): "
                 f"{min(per['pseudo_count'])}-{max(per['pseudo_count'])}."), "",
                 "| answers k | map | F1 | precision | recall |", "|---|---|---|---|---|"]
        for name in k0[str(SEEDS[0])]:
            cells = [_cell([_prf(k0[str(seed)][name])[i] for seed in SEEDS]) for i in range(3)]
            body.append(f"| 0 | {name} | " + " | ".join(cells) + " |")
        for k in map(str, WITH_ANSWERS):
            first = per["answers"][str(SEEDS[0])].get(k, {})
            for name in first:
                cells = [_cell([_prf(per["answers"][str(seed)][k][name])[i] for seed in SEEDS
                                if name in per["answers"][str(seed)].get(k, {})]) for i in range(3)]
                body.append(f"| {k} | {name} | " + " | ".join(cells) + " |")
        body += ["", f"per pair, seed 0, F1 (cva / cva objects / {per.get('default', DEFAULT)}):", ""]
        body += [f"- {s}: {v[0]:.3f} / {v[1]:.3f} / {v[2]:.3f}" for s, v in per["per_scene"].items()]
        body.append("")
    if len(saved) > 1:
        wins += ["", "Each variant against cva (pooled F1, mean of the seeds): data sets won, mean difference:", ""]
        wins += [f"- {v}: {sum(scores[d][v] > scores[d]['cva'] for d in saved)} of {len(saved)}, "
                 f"{np.mean([scores[d][v] - scores[d]['cva'] for d in saved]):+.3f}" for v in VARIANTS]
        wins += ["", ("Shares chosen without the data set they are scored on (the variant with the largest mean gain "
                  "over cva on the other data sets):"), ""]
        for d in saved:
            best = max(VARIANTS, key=lambda v, d=d: np.mean([scores[o][v] - scores[o]["cva"] for o in saved if o != d]))
            wins.append(f"- {d}: {best}, F1 {scores[d][best]:.3f} against cva {scores[d]['cva']:.3f} "
                        f"({scores[d][best] - scores[d]['cva']:+.3f})")
    summary += wins
    (RESULTS / "pseudo_labels.md").write_text("\n".join(lines + summary + [""] + body))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", required=True, help="dsifn levir egybcd oscd landsat")
    parser.add_argument("--limit", type=int, help="at most this many pairs per data set")
    parser.add_argument("--no-answers", action="store_true", help="k = 0 only (skip the simulated analyst)")
    parser.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="deltacd-pseudo-"))
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    saved = json.loads(STORE.read_text()) if STORE.is_file() else {}
    for dataset in args.datasets:
        started, load0 = time.perf_counter(), os.getloadavg()[0]
        per = {"scenes": [], "objects": [], "pseudo_count": [], "per_scene": {},
               "k0": {str(s): {} for s in SEEDS}, "answers": {str(s): {} for s in SEEDS},
               "command": " ".join(sys.argv[1:]), "default": DEFAULT}

        def add(into: dict, maps: dict) -> None:
            for name, c in maps.items():
                into[name] = (np.asarray(into.get(name, np.zeros(3))) + c).tolist()

        for n, (scene, before, after, reference, labelled, extra) in enumerate(cases(dataset, work)):
            if args.limit and n >= args.limit:
                break
            t0 = time.perf_counter()
            out = work / f"{dataset}_cva_{scene}"
            shutil.rmtree(out, ignore_errors=True)
            deltacd.detect(before, after, out, min_area_m2=0, method="cva", **extra)
            with ReviewRun(out) as run:
                table = object_table(run, refresh=True)
                truth = object_truth(run, table, reference, labelled)
                threshold = float(run.record["threshold"]["value"])
            t1 = time.perf_counter()
            answer = np.where(truth["pixels"] > 0, (truth["gt"] >= 0.5 * truth["pixels"]).astype(int), -1)
            for seed in SEEDS:
                maps = k0_maps(table, truth, threshold, seed)
                add(per["k0"][str(seed)], maps)
                if seed == SEEDS[0]:
                    per["per_scene"][scene] = [f1(maps["cva"]), f1(maps["cva objects"]), f1(maps[DEFAULT])]
                    _, labels = pseudo_model(table, threshold, seed=seed)
                    per["pseudo_count"].append(len(labels))
                if not args.no_answers:
                    scores = loop(table, answer, answer_evaluator(table, truth, threshold, seed), threshold, "model",
                                  seed, None)
                    for k, maps in scores.items():
                        if maps:
                            add(per["answers"][str(seed)].setdefault(str(k), {}), maps)
            per["scenes"].append(scene)
            per["objects"].append(len(table))
            s = per["per_scene"][scene]
            print(f"{dataset} {scene}: {len(table)} objects, detect+features {t1 - t0:.1f} s, rest "
                  f"{time.perf_counter() - t1:.1f} s; F1 cva {s[0]:.3f} cva objects {s[1]:.3f} pseudo {s[2]:.3f}",
                  flush=True)
        per["seconds"] = time.perf_counter() - started
        per["load"] = [load0, os.getloadavg()[0]]
        per["machine"] = f"{platform.platform()}, {os.cpu_count()} CPUs"
        saved[dataset] = per
        STORE.write_text(json.dumps(saved, indent=1))
        write_table(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
