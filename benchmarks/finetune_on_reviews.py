"""A network fine-tuned on the analyst's reviewed objects, beside the review loop's forest, on the same scenes.

The issue asks, side by side with the analyst loop (``benchmarks/analyst_loop.py``), for "a network of the
default recipe fine-tuned on the very same reviewed pixels". Per DSIFN crop (the 10 crops of
``analyst_loop.cases("dsifn", ...)``), exactly as ``analyst_loop`` does for model suggestions and seed 0:

1. ``deltacd.detect`` (CVA, ``min_area_m2=0``), the review objects and their features, the per-object ground truth
   (``object_truth``) and the simulated analyst's answers (majority of each object's labelled pixels);
2. ``analyst_loop.loop`` itself, run unchanged with ``analyst_loop.detect_evaluator`` wrapped so that each
   evaluation also records a copy of the answers given so far: the reviewed objects and their answers at
   k = 10 and k = 40, and the forest's scores at those k (``refined``: the classifier that ``loop`` trained
   through ``deltacd.review.refine.train`` = ``deltacd.review.classifier.train`` on those answers);
3. per k, a network of the default training recipe (``deltacd train`` without ``model``, docs/benchmarks.md section
   10: siamese U-Net over EfficientNet-Lite0 with its ImageNet weights, ``normalisation: dataset``, BCE + Dice,
   AdamW lr 1e-3 / weight decay 1e-2 with linear warm-up and cosine decay to 1 %, the default paired
   augmentation ``augment: {}``; built as :class:`deltacd.train.module.ChangeDetectionTask` and stepped by a
   plain loop) fine-tuned on the pixels of the reviewed objects only: every pixel of a reviewed object carries
   the analyst's answer for it, every other pixel is ``ignore_index`` (out of the loss). One model per scene and
   k, from the ImageNet weights each time. Budget: ``--steps`` steps of ``--batch`` crops of ``--crop`` px, each
   crop centred on a random pixel of a reviewed object drawn uniformly (clamped to the scene). The
   normalisation is the scene's per-band mean / std over both dates (the recipe's ``dataset`` normalisation,
   with the scene as the dataset: unlabelled pixels, no label used). Its map: probability >= 0.5 on the
   whole scene (no validation split exists to pick a threshold);
4. TinyCD-LEVIR (``../shared/data/checkpoints_tinycd/levir_best.pth``) without fine-tuning, through
   ``deltacd.detect(..., model="tinycd:PATH", min_area_m2=0)`` as ``analyst_loop --model`` runs it.

Every map is scored as ``analyst_loop`` scores the base run: per pixel, on the labelled pixels of the objects NOT
reviewed at that k, pooled over the scenes (micro F1). The network maps are per pixel (like the base run), the
forest's per object. The CVA row of this script is checked against ``analyst_loop``'s own ``base`` confusion
(the same pixels must give the same counts).

    python benchmarks/finetune_on_reviews.py [--limit N] [--steps 120] [--batch 4] [--tag NAME] [--crop 64]

Writes ``benchmarks/results/finetune_on_reviews[_TAG].md`` and ``.json`` after every scene.
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
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deltacd
from analyst_loop import DATA, RESULTS, cases, detect_evaluator, f1, loop, object_truth
from deltacd.review.features import object_table
from deltacd.review.objects import ReviewRun
from deltacd.review.refine import train as train_forest

TINYCD = DATA / "checkpoints_tinycd" / "levir_best.pth"
KS_HERE = (10, 40)
SEED = 0
STRATEGY = "model"
IGNORE = 255
MAPS = ("cva", "forest", "tinycd", "finetuned", "majority", "ceiling")
LABELS = {
    "cva": "CVA (the loop's base run)",
    "forest": "forest refined (review loop, `deltacd.review.classifier`)",
    "tinycd": "TinyCD-LEVIR, no fine-tuning",
    "finetuned": "default recipe (Lite0 ImageNet siamese U-Net) fine-tuned on the reviewed pixels",
    "majority": "majority answer of the reviews (trivial)",
    "ceiling": "ceiling: every object at its majority truth",
}


# --- pixels ----------------------------------------------------------------------------------------

def object_rows(run: ReviewRun, table) -> np.ndarray:
    """Row of ``table`` for every pixel of the scene (-1: no object)."""
    ids = run.read_ids(Window(0, 0, run.grid.width, run.grid.height))
    rows = np.searchsorted(table.ids, ids)
    ok = (ids >= 0) & (rows < len(table.ids))
    ok[ok] &= table.ids[rows[ok]] == ids[ok]
    return np.where(ok, rows, -1)


def pixel_confusion(mask: np.ndarray, reference: np.ndarray, rows: np.ndarray, keep: np.ndarray,
                    labelled: np.ndarray | None) -> np.ndarray:
    """[tp, fp, fn] of a per-pixel change mask over the labelled pixels of the objects in ``keep`` (per row)."""
    on = rows >= 0
    on[on] = keep[rows[on]]
    if labelled is not None:
        on &= labelled
    m, g = mask[on].astype(bool), reference[on] == 1
    return np.array([float((m & g).sum()), float((m & ~g).sum()), float((~m & g).sum())])


def read_rgb(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read().astype(np.float32)


def read_mask(run_dir: Path) -> np.ndarray:
    with ReviewRun(run_dir) as run:
        path = run.layout.mask
    with rasterio.open(path) as src:
        return src.read(1) == 1


# --- fine-tuning -----------------------------------------------------------------------------------

def finetune(before: np.ndarray, after: np.ndarray, target: np.ndarray, *, steps: int, batch: int, crop: int,
             seed: int) -> tuple[np.ndarray, dict]:
    """The default recipe's network fine-tuned on ``target`` (0 / 1 / IGNORE, [H, W]); its probability map [H, W]."""
    import torch

    from deltacd.train.module import ChangeDetectionTask, warmup_cosine_schedule

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    both = np.concatenate([before, after], axis=2)  # [C, H, 2W]: the scene's per-band statistics over both dates
    mean = both.reshape(3, -1).mean(axis=1).tolist()
    std = np.maximum(both.reshape(3, -1).std(axis=1), 1e-6).tolist()
    task = ChangeDetectionTask(model="siamese-unet", model_kwargs={"encoder_spec": "efficientnet_lite0:imagenet"},
                               bands=("R", "G", "B"), mean=mean, std=std, loss="bce_dice", pos_weight=1.0,
                               dice_weight=1.0, lr=1e-3, weight_decay=1e-2, augment={}, ignore_index=IGNORE)
    optimizer = torch.optim.AdamW([p for p in task.model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-2)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=max(1, steps // 10), total_steps=steps, min_lr_ratio=0.01)
    h, w = target.shape
    ys, xs = np.nonzero(target != IGNORE)
    c = min(crop, h, w)
    x_b, x_a, x_t = torch.from_numpy(before), torch.from_numpy(after), torch.from_numpy(target.astype(np.int64))
    task.train()
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        pick = rng.integers(0, len(ys), batch)
        r0 = np.clip(ys[pick] - c // 2, 0, h - c)
        c0 = np.clip(xs[pick] - c // 2, 0, w - c)
        b = torch.stack([x_b[:, r:r + c, q:q + c] for r, q in zip(r0, c0)])
        a = torch.stack([x_a[:, r:r + c, q:q + c] for r, q in zip(r0, c0)])
        t = torch.stack([x_t[r:r + c, q:q + c] for r, q in zip(r0, c0)])
        nb, na = task.normalise(b), task.normalise(a)
        nb, na, t = task.augment(nb, na, t)
        loss = task.criterion(task.model(nb, na), t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    t1 = time.perf_counter()
    task.eval()
    pad_h, pad_w = (-h) % 32, (-w) % 32
    with torch.no_grad():
        pb = torch.nn.functional.pad(x_b[None], (0, pad_w, 0, pad_h), mode="reflect")
        pa = torch.nn.functional.pad(x_a[None], (0, pad_w, 0, pad_h), mode="reflect")
        prob = torch.sigmoid(task(pb, pa)[0, 0, :h, :w]).numpy()
    t2 = time.perf_counter()
    info = {"train_s": t1 - t0, "predict_s": t2 - t1, "loss_first": float(np.mean(losses[:5])),
            "loss_last": float(np.mean(losses[-5:])), "labelled_px": len(ys),
            "labelled_change_px": int((target == 1).sum())}
    return prob, info


# --- output ----------------------------------------------------------------------------------------

def write(results: dict, args, header: str) -> None:
    pooled = results["pooled"]
    lines = [header, "",
             (f"## DSIFN ({len(results['scenes'])} of 10 crops: {', '.join(results['scenes'])}); model suggestions, "
             f"seed {SEED}; pooled micro F1 on the labelled pixels of the objects NOT reviewed at that k"), "",
             "| map | " + " | ".join(f"k={k}" for k in KS_HERE) + " |", "|---|" + "---|" * len(KS_HERE)]
    for m in MAPS:
        cells = [f"{f1(np.array(pooled[str(k)][m])):.3f}" if m in pooled[str(k)] else "-" for k in KS_HERE]
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    sec = results["seconds"]
    n = max(1, len(results["scenes"]))
    lines += ["", "Seconds (sums over the scenes done; per scene in brackets):", "",
              "| step | seconds | per scene |", "|---|---|---|"]
    for key, what in (("detect_cva", "detect (CVA)"), ("features", "objects and features"),
                      ("loop", "simulated loop (model suggestions, seed 0, forest retrained after each round, k=0..40)"),
                      ("tinycd", "detect (TinyCD-LEVIR)"), ("forest_10", "forest: train + map, k=10"),
                      ("forest_40", "forest: train + map, k=40"), ("finetune_10", "network fine-tuning + map, k=10"),
                      ("finetune_40", "network fine-tuning + map, k=40")):
        lines.append(f"| {what} | {sec[key]:.1f} | {sec[key] / n:.2f} |")
    lines += ["", ("Per scene (F1 on that scene's unreviewed pixels; cva / forest / tinycd / fine-tuned), and the "
              "fine-tuning's labelled pixels (change) and mean loss of its first / last 5 steps:"), ""]
    for scene, row in results["per_scene"].items():
        parts = []
        for k in KS_HERE:
            r = row[str(k)]
            parts.append(f"k={k}: {r['cva']:.3f} / {r['forest']:.3f} / {r['tinycd']:.3f} / {r['finetuned']:.3f} "
                         f"({r['ft']['labelled_px']} px, {r['ft']['labelled_change_px']} change; loss "
                         f"{r['ft']['loss_first']:.2f} -> {r['ft']['loss_last']:.2f})")
        lines.append(f"- {scene}: " + "; ".join(parts))
    lines += ["", "Notes:", "",
              (f"- network: the default recipe of `deltacd train` (docs/benchmarks.md section 10): siamese U-Net over "
              f"EfficientNet-Lite0 ImageNet weights, dataset normalisation (the scene's per-band mean / std over both "
              f"dates), BCE + Dice (pos_weight 1), AdamW lr 1e-3 wd 1e-2, warm-up {max(1, args.steps // 10)} steps then "
              f"cosine to 1 %, default paired augmentation; {args.steps} steps of {args.batch} crops of {args.crop} px "
              f"centred on random pixels of the reviewed objects; every pixel of a reviewed object labelled with the "
              f"analyst's answer, all others ignored; one model per scene and k, each from the ImageNet weights; "
              f"seed {SEED}; map = probability >= 0.5; torch threads {args.threads}."),
              ("- the forest and the CVA rows are analyst_loop's own evaluation (`detect_evaluator`) at the same k; the "
              "CVA row recomputed per pixel here matches it exactly (checked per scene)."),
              "- TinyCD-LEVIR: `deltacd.detect(model='tinycd:levir_best.pth', min_area_m2=0)`, its mask as is.",
              f"- load average at the end (1/5/15 min): {' '.join(f'{v:.1f}' for v in os.getloadavg())}.", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"finetune_on_reviews{args.tag and '_' + args.tag}.md").write_text("\n".join(lines))
    out = dict(results)
    out["f1"] = {str(k): {m: f1(np.array(c)) for m, c in pooled[str(k)].items()} for k in KS_HERE}
    out["settings"] = {"steps": args.steps, "batch": args.batch, "crop": args.crop, "threads": args.threads,
                       "seed": SEED, "strategy": STRATEGY, "network": "siamese-unet efficientnet_lite0:imagenet",
                       "threshold": 0.5}
    out["load_end"] = os.getloadavg()
    (RESULTS / f"finetune_on_reviews{args.tag and '_' + args.tag}.json").write_text(json.dumps(out, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="at most this many DSIFN crops")
    parser.add_argument("--steps", type=int, default=120, help="optimisation steps per fine-tuning (default 120)")
    parser.add_argument("--batch", type=int, default=4, help="crops per step (default 4)")
    parser.add_argument("--crop", type=int, default=64, help="crop size in px (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: 2 threads on the loaded 2 cores were 4-6x slower per step)")
    parser.add_argument("--work", help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="deltacd-ft-reviews-"))
    work.mkdir(parents=True, exist_ok=True)
    header = (f"# Fine-tuning a network on the reviewed objects vs the review loop's forest ({platform.platform()}, "
              f"{os.cpu_count()} CPUs, load {' '.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min) at start)\n\n"
              f"`python benchmarks/finetune_on_reviews.py {' '.join(sys.argv[1:])}`")
    results: dict = {"scenes": [], "pooled": {str(k): {} for k in KS_HERE}, "per_scene": {},
                     "seconds": {key: 0.0 for key in ("detect_cva", "features", "loop", "tinycd", "forest_10", "forest_40",
                                                      "finetune_10", "finetune_40")},
                     "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "load_start": os.getloadavg()}
    started = time.perf_counter()
    for n, (scene, before, after, reference, labelled, extra) in enumerate(cases("dsifn", work)):
        if args.limit and n >= args.limit:
            break
        sec = results["seconds"]
        t0 = time.perf_counter()
        out = work / f"dsifn_cva_{scene}"
        shutil.rmtree(out, ignore_errors=True)
        deltacd.detect(before, after, out, min_area_m2=0, method="cva", **extra)
        t1 = time.perf_counter()
        with ReviewRun(out) as run:
            table = object_table(run, refresh=True)
            truth = object_truth(run, table, reference, labelled)
            threshold = float(run.record["threshold"]["value"])
            rows = object_rows(run, table)
        answer = np.where(truth["pixels"] > 0, (truth["gt"] >= 0.5 * truth["pixels"]).astype(int), -1)
        evaluate = detect_evaluator(table, truth, None)

        def recording(keep, answers, model, evaluate=evaluate):
            return {**evaluate(keep, answers, model), "_answers": dict(answers), "_keep": keep.copy()}

        t2 = time.perf_counter()
        scores = loop(table, answer, recording, threshold, STRATEGY, SEED, None)
        t3 = time.perf_counter()
        tiny = work / f"dsifn_tinycd_{scene}"
        shutil.rmtree(tiny, ignore_errors=True)
        deltacd.detect(before, after, tiny, min_area_m2=0, model=f"tinycd:{TINYCD}", **extra)
        t4 = time.perf_counter()
        for key, dt in (("detect_cva", t1 - t0), ("features", t2 - t1), ("loop", t3 - t2), ("tinycd", t4 - t3)):
            sec[key] += dt
        cva_mask, tiny_mask = read_mask(out), read_mask(tiny)
        b_img, a_img = read_rgb(before), read_rgb(after)
        features = table.select(None)[0]
        row_scene = {}
        for k in KS_HERE:
            s = scores[k]
            answers, keep = s["_answers"], s["_keep"]
            assert len(answers) == k, (scene, k, len(answers))
            cva_c = pixel_confusion(cva_mask, reference, rows, keep, labelled)
            assert np.allclose(cva_c, s["base"]), (scene, k, cva_c, s["base"])  # same pixels as analyst_loop's base
            tf = time.perf_counter()
            forest = train_forest(table, answers, seed=SEED, groups=None)  # the model loop() evaluated at this k
            forest_map = (forest.change_probability(features) >= 0.5) if forest is not None else None
            sec[f"forest_{k}"] += time.perf_counter() - tf
            if forest_map is not None:
                on = forest_map[keep]
                p, g = truth["pixels"][keep], truth["gt"][keep]
                check = np.array([g[on].sum(), (p - g)[on].sum(), g[~on].sum()])
                assert np.allclose(check, s["refined"]), (scene, k)  # retrained forest = the loop's
            target = np.full(reference.shape, IGNORE, np.uint8)
            reviewed_rows = np.flatnonzero(~keep)
            row_answer = np.full(len(table), -1)
            for object_id, value in answers.items():
                row_answer[np.searchsorted(table.ids, object_id)] = value
            inside = rows >= 0
            inside[inside] = ~keep[rows[inside]]
            target[inside] = row_answer[rows[inside]]
            assert set(np.unique(target[inside])) <= {0, 1} and len(reviewed_rows) == k
            tf = time.perf_counter()
            prob, info = finetune(b_img, a_img, target, steps=args.steps, batch=args.batch, crop=args.crop, seed=SEED)
            sec[f"finetune_{k}"] += time.perf_counter() - tf
            confusions = {"cva": s["base"], "forest": s["refined"], "majority": s.get("majority"), "ceiling": s["ceiling"],
                          "tinycd": pixel_confusion(tiny_mask, reference, rows, keep, labelled),
                          "finetuned": pixel_confusion(prob >= 0.5, reference, rows, keep, labelled)}
            pooled = results["pooled"][str(k)]
            for m, c in confusions.items():
                if c is not None:
                    pooled[m] = (np.array(pooled.get(m, np.zeros(3))) + c).tolist()
            row_scene[str(k)] = {**{m: f1(c) for m, c in confusions.items() if c is not None}, "ft": info,
                                 "answers_change": int(sum(answers.values())), "reviewed": sorted(int(i) for i in answers)}
        results["scenes"].append(scene)
        results["per_scene"][scene] = row_scene
        write(results, args, header)
        print(f"{scene}: detect {t1 - t0:.1f} s, features {t2 - t1:.1f} s, loop {t3 - t2:.1f} s, tinycd {t4 - t3:.1f} s, "
              f"finetune {row_scene['10']['ft']['train_s']:.1f} / {row_scene['40']['ft']['train_s']:.1f} s; "
              + "; ".join(f"k={k}: cva {row_scene[str(k)]['cva']:.3f} forest {row_scene[str(k)]['forest']:.3f} "
                          f"tinycd {row_scene[str(k)]['tinycd']:.3f} ft {row_scene[str(k)]['finetuned']:.3f}"
                          for k in KS_HERE)
              + f" [{time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
