"""TinyCD-LEVIR fine-tuned on a few DSIFN-CD crops against the same network trained from scratch.

Issue 3's transfer benchmark. Data (``examples/bench_dataset_dsifn_finetune.yaml``): 6 DSIFN-CD
crops to train (0_2 2_4 4_4 5_3 6_3 7_4), 2 to validate (1_1 3_4), and two test sets scored
separately at the threshold saved in each checkpoint (chosen on validation):

* DSIFN: the held-out crops 8_3 and 9_3 (the same as in ``benchmarks/architectures.py``);
* LEVIR: the 7 LEVIR-CD test crops, to see how much of the LEVIR skill survives fine-tuning.

Arms, trained with exactly the settings of ``examples/bench_train_finetune_tinycd.yaml`` (BCE + Dice,
``pos_weight: auto``, AdamW with warm-up and cosine decay, augmentation, same epochs), once per
seed:

* ``fine-tuned``: ``init_from: tinycd:<the authors' levir_best.pth>`` (all layers trained);
* ``scratch``: the same TinyCD, randomly initialised.

Reference rows (no training): TinyCD-LEVIR zero-shot with the authors' normalisation (8-bit /
255, ImageNet mean / std) and threshold 0.5, and the same weights with the fine-tuning
dataset's normalisation (what ``deltacd train`` feeds the network when fine-tuning starts: it
normalises with the manifest's statistics, not the pretrained model's).

Scores: micro F1 / IoU of the change class from TP / FP / FN summed over a test set's crops;
mean, sample standard deviation and range over the seeds.

Usage (from the repository root)::

    python benchmarks/finetune_tinycd.py --quick                # smoke run: 1 epoch, seed 0 (~4 min)
    python benchmarks/finetune_tinycd.py                        # 25 epochs, seeds 0 1 2
    python benchmarks/finetune_tinycd.py --epochs 40 --seeds 0

Work files go to ``benchmarks/_work/finetune_tinycd/`` (dataset, one folder per run; a finished
run with the same settings is reused, ``--retrain`` trains again); the table goes to
``benchmarks/results/finetune_tinycd.{csv,md}`` (``--quick``: to the work folder).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from architectures import (  # noqa: E402  (sibling benchmark script, shared helpers)
    REPO,
    RESULTS,
    TINYCD_LEVIR,
    WORK,
    BenchmarkError,
    Row,
    all_changed_row,
    ensure_dataset,
    learned_row,
    load_line,
    load_test_chips,
    machine_header,
    speed_batch,
    train_config,
    train_or_reuse,
)

DATASET_CONFIG = REPO / "examples" / "bench_dataset_dsifn_finetune.yaml"
TRAIN_CONFIG = REPO / "examples" / "bench_train_finetune_tinycd.yaml"
DEFAULT_EPOCHS = 25
DEFAULT_SEEDS = [0, 1, 2]
TEST_GROUPS: dict[str, tuple[str, ...]] = {"DSIFN": ("dsifn-test",), "LEVIR": ("levir-test",)}
ARMS = ("fine-tuned", "scratch")


def _stats(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "mean": statistics.fmean(finite),
        "sd": statistics.stdev(finite) if len(finite) > 1 else math.nan,
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def _cell(values: list[float]) -> str:
    """``mean ± sd [min-max]`` (one value: the value)."""
    s = _stats(values)
    if s["n"] == 0:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} ± {s['sd']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"


def write_tables(runs: dict[str, list[Row]], references: list[Row], header: list[str], stem: Path) -> str:
    """Markdown summary (returned, and written to ``stem.md``) and per-run CSV (``stem.csv``)."""
    groups = list(TEST_GROUPS)
    cols = ["model", "seeds", "epochs", "train min"]
    for g in groups:
        cols += [f"{g} F1", f"{g} IoU"]
    cols += ["val F1", "threshold"]
    lines = [f"| {' | '.join(cols)} |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in references:
        cells = [r.model, "-", "-", "-"]
        for g in groups:
            cells += [f"{r.scores[g].f1:.3f}", f"{r.scores[g].iou:.3f}"]
        cells += ["-", r.threshold]
        lines.append(f"| {' | '.join(cells)} |")
    for arm, rows in runs.items():
        if not rows:
            continue
        cells = [f"TinyCD {arm}", str(len(rows)), str(rows[0].extra["max_epochs"]),
                 f"{statistics.fmean(r.train_min or 0.0 for r in rows):.1f}"]
        for g in groups:
            cells += [_cell([r.scores[g].f1 for r in rows]), _cell([r.scores[g].iou for r in rows])]
        cells += [_cell([r.val_f1 for r in rows]), ", ".join(r.threshold for r in rows)]
        lines.append(f"| {' | '.join(cells)} |")
    per_seed = ["", "Per run (DSIFN F1 / LEVIR F1 at the saved threshold):", ""]
    for arm, rows in runs.items():
        for r in rows:
            per_seed.append(f"- {arm}, seed {r.extra['seed']}: DSIFN {r.scores['DSIFN'].f1:.3f}, LEVIR {r.scores['LEVIR'].f1:.3f}, "
                            f"val F1 {r.val_f1:.3f} (threshold {r.threshold}, {r.train_min:.1f} min)")
    notes = ["", *(f"- {r.model}: {r.note}" for r in references if r.note)]
    md = "\n".join([*(f"{h}  " for h in header), "", *lines, *per_seed, *notes, ""])

    csv_rows = []
    for r in references:
        csv_rows.append(_csv_row(r, "reference", None))
    for arm, rows in runs.items():
        csv_rows += [_csv_row(r, arm, r.extra["seed"]) for r in rows]
        if rows:
            summary: dict[str, Any] = {"row": "summary", "model": f"TinyCD {arm}", "arm": arm, "seed": "all",
                                       "train_min": round(statistics.fmean(r.train_min or 0.0 for r in rows), 2)}
            for g in groups:
                for metric in ("f1", "iou"):
                    s = _stats([getattr(r.scores[g], metric) for r in rows])
                    summary.update({f"{g}_{metric}": _r(s["mean"]), f"{g}_{metric}_sd": _r(s["sd"]),
                                    f"{g}_{metric}_min": _r(s["min"]), f"{g}_{metric}_max": _r(s["max"])})
            csv_rows.append(summary)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    tmp = md_path.with_name(md_path.name + ".tmp")
    tmp.write_text(md, encoding="utf-8")
    tmp.replace(md_path)
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        for h in header:
            handle.write(f"# {h}\n")
        names = list(dict.fromkeys(k for row in csv_rows for k in row))
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(csv_rows)
    tmp.replace(csv_path)
    return md


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _csv_row(r: Row, arm: str, seed: int | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"row": "run" if seed is not None else "reference", "model": r.model, "arm": arm, "seed": seed,
                           "train_min": _r(r.train_min, 2), "epochs_run": r.epochs}
    for g in TEST_GROUPS:
        s = r.scores[g]
        rec.update({f"{g}_f1": _r(s.f1), f"{g}_iou": _r(s.iou), f"{g}_precision": _r(s.precision),
                    f"{g}_recall": _r(s.recall), f"{g}_tp": s.tp, f"{g}_fp": s.fp, f"{g}_fn": s.fn})
    rec.update({"val_f1": _r(r.val_f1), "threshold": r.threshold, "note": r.note})
    return rec


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help=f"epochs per run (default {DEFAULT_EPOCHS}; --quick: 1)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"seeds (default {' '.join(map(str, DEFAULT_SEEDS))}; --quick: 0)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, seed 0, results in the work folder")
    parser.add_argument("--work", type=Path, default=WORK / "finetune_tinycd", help="work folder (dataset, runs)")
    parser.add_argument("--results", type=Path, default=RESULTS / "finetune_tinycd",
                        help="output stem: STEM.csv and STEM.md (default benchmarks/results/finetune_tinycd)")
    parser.add_argument("--dataset-config", type=Path, default=DATASET_CONFIG)
    parser.add_argument("--train-config", type=Path, default=TRAIN_CONFIG)
    parser.add_argument("--tinycd-checkpoint", type=Path, default=TINYCD_LEVIR, help="authors' TinyCD LEVIR-CD weights")
    parser.add_argument("--retrain", action="store_true", help="train again even when a finished run with the same settings exists")
    parser.add_argument("--rebuild-dataset", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1 if args.epochs is None else args.epochs
        args.seeds = args.seeds or [0]
        if args.results == RESULTS / "finetune_tinycd":
            args.results = args.work / "finetune_tinycd_quick"
    args.epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    args.seeds = list(dict.fromkeys(args.seeds or DEFAULT_SEEDS))
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from deltacd.datasets.manifest import load_manifest
    from deltacd.errors import DeltacdError

    torch.set_num_threads(2)
    started = time.perf_counter()
    header = machine_header()
    try:
        if not args.tinycd_checkpoint.is_file():
            raise BenchmarkError(f"{args.tinycd_checkpoint}: TinyCD checkpoint not found; pass --tinycd-checkpoint PATH")
        dataset = ensure_dataset(args.dataset_config, args.work / "dataset", rebuild=args.rebuild_dataset)
        manifest = load_manifest(dataset)
        chips = load_test_chips(dataset, TEST_GROUPS)
        common = dict(chips=chips, batch=speed_batch(chips), ignore_index=manifest.ignore_index, speed_runs=0,
                      pair_bands=manifest.bands)
        pretrained = f"tinycd:{args.tinycd_checkpoint}"
        mean, std = manifest.normalisation()

        def dataset_normalisation(spec: Any) -> Any:
            return dataclasses.replace(spec, mean=tuple(mean), std=tuple(std))

        references = [
            learned_row(pretrained, label="TinyCD-LEVIR zero-shot (authors' normalisation)", kind="reference", **common,
                        note="authors' weights (full LEVIR-CD train set), 8-bit / 255 then ImageNet mean / std, threshold 0.5; "
                             "its LEVIR score is the reference the fine-tuned model starts from"),
            learned_row(pretrained, label="TinyCD-LEVIR zero-shot (dataset normalisation)", kind="reference", **common,
                        spec_override=dataset_normalisation,
                        note="same weights fed with the fine-tuning dataset's per-band mean / std (6 DSIFN train crops), "
                             "as deltacd train does when fine-tuning starts; threshold 0.5"),
        ]
        references.append(all_changed_row(chips, ignore_index=manifest.ignore_index))
        runs: dict[str, list[Row]] = {arm: [] for arm in args.arms}
        for seed in args.seeds:
            for arm in args.arms:
                values = train_config(args.train_config, model="tinycd", kwargs={}, dataset=dataset,
                                      out=args.work / "runs" / f"{arm}_e{args.epochs}_seed{seed}", epochs=args.epochs, seed=seed,
                                      init_from=pretrained if arm == "fine-tuned" else None)
                t0 = time.perf_counter()
                print(f"[{(t0 - started) / 60:5.1f} min] {arm}, seed {seed}: training {args.epochs} epoch(s)...", flush=True)
                checkpoint, reused = train_or_reuse(values, retrain=args.retrain)
                row = learned_row(checkpoint, label=f"TinyCD {arm}", kind=arm, **common)
                row.extra.update(seed=seed, max_epochs=args.epochs)
                runs[arm].append(row)
                print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {arm}, seed {seed}: {'reused' if reused else 'trained'} "
                      f"({row.train_min:.1f} min), DSIFN F1 {row.scores['DSIFN'].f1:.3f}, LEVIR F1 {row.scores['LEVIR'].f1:.3f}",
                      flush=True)
    except (DeltacdError, BenchmarkError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept under the work folder and reused next time", file=sys.stderr)
        return 130
    total = (time.perf_counter() - started) / 60
    header += [
        f"data: {args.dataset_config.name} -> {manifest.splits['train']} train / {manifest.splits['val']} val DSIFN-CD crops; "
        f"test: DSIFN = {len(chips['DSIFN'])} held-out DSIFN-CD crops (8_3, 9_3), LEVIR = {len(chips['LEVIR'])} LEVIR-CD test crops",
        f"training: {args.train_config.name}, TinyCD, {args.epochs} epochs, seeds {' '.join(map(str, args.seeds))}; "
        "fine-tuned = init_from the authors' LEVIR-CD weights, scratch = random init; threshold chosen on validation",
        "scores: micro F1 / IoU of the change class (TP, FP, FN summed over a test set's crops); "
        "arms: mean ± sample sd [min-max] over seeds",
        f"benchmark wall time: {total:.1f} min (python {' '.join(['benchmarks/finetune_tinycd.py', *(argv or sys.argv[1:])])})",
        load_line("at the end"),
    ]
    md = write_tables(runs, references, header, args.results)
    print()
    print(md)
    print(f"written: {args.results.with_suffix('.csv')}, {args.results.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
