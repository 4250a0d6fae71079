"""Every registered change-detection network trained on the same small real training set, against CVA and IR-MAD.

Issue 3's benchmark of learned models. The training set is ``examples/dataset_levir_dsifn.yaml``
(9 train / 3 val chips of 256 x 256 px: 3 LEVIR-CD + 6 DSIFN-CD train, 1 LEVIR + 2 DSIFN val);
each architecture is trained from scratch with the settings of
``examples/bench_train_architectures.yaml`` (BCE + Dice, ``pos_weight: auto``, AdamW with warm-up
and cosine decay, augmentation, seed 0, same epochs, best validation epoch kept), then scored
at the threshold saved in its checkpoint (chosen on validation) on two test sets, separately:

* LEVIR: the 7 official LEVIR-CD test crops (0.5 m, building change);
* DSIFN: the 2 held-out DSIFN-CD crops 8_3 and 9_3 (about 2 m, land-cover change).

Scores are micro-averaged: F1 and IoU of the change class from TP / FP / FN summed over the
crops of a test set. Rows added for reference:

* CVA and IR-MAD (``deltacd.methods``), fitted on all pixels of each crop and thresholded per crop
  with the method's own automatic rule (``auto_threshold`` on the crop's score histogram), as
  ``deltacd detect`` does on a scene (no radiometric harmonisation, no minimum area);
* TinyCD with the authors' LEVIR-CD weights (``tinycd:PATH``, ImageNet normalisation,
  threshold 0.5): NOT trained here, and trained on the full LEVIR-CD train set (445 tiles of
  1024 px), so its LEVIR score is not comparable with the 9-chip models; its DSIFN score is
  zero-shot.

Speed: CPU megapixels per second of inference (``predict`` on a batch of 4 x 256 x 256 real test
chips, ``torch.set_num_threads(2)``, one warm-up, median of ``--speed-runs``), on a machine that
may be shared (the load average is written in the header). Training minutes are the
``TrainResult`` wall-clock time (``minutes`` saved in the checkpoint).

Usage (from the repository root)::

    python benchmarks/architectures.py --quick                 # smoke run: 1 epoch, 2 models (~3 min)
    python benchmarks/architectures.py                         # full run (see --epochs)
    python benchmarks/architectures.py --models fc-ef bit --epochs 10

Work files go to ``benchmarks/_work/architectures/`` (dataset, one folder per training run;
a finished run with the same settings is reused, ``--retrain`` trains again); the table goes to
``benchmarks/results/architectures.{csv,md}`` (``--quick``: to the work folder).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WORK = REPO / "benchmarks" / "_work"
RESULTS = REPO / "benchmarks" / "results"

DATASET_CONFIG = REPO / "examples" / "dataset_levir_dsifn.yaml"
TRAIN_CONFIG = REPO / "examples" / "bench_train_architectures.yaml"
TINYCD_LEVIR = SHARED / "checkpoints_tinycd" / "levir_best.pth"

#: Every architecture of the registry, with the constructor arguments used here (no pretrained weights).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "fc-ef": {},
    "fc-siam-conc": {},
    "fc-siam-diff": {},
    "siamese-unet": {"encoder_name": "resnet18", "encoder_weights": None},
    "bit": {},
    "tinycd": {},
}
QUICK_MODELS = ["fc-siam-diff", "tinycd"]
DEFAULT_EPOCHS = 30

#: Test sets scored separately: name -> dataset source names (``chips.csv`` column ``source_name``).
TEST_GROUPS: dict[str, tuple[str, ...]] = {"LEVIR": ("levir-test",), "DSIFN": ("dsifn-test",)}

THREADS = 2  # the benchmark machine's core count; every timing uses it

class BenchmarkError(RuntimeError):
    """A benchmark cannot run as asked (message says what to change)."""


# ---------------------------------------------------------------------------------------------
# dataset


def resolve_dataset_config(path: Path) -> dict[str, Any]:
    """The dataset YAML as a dict, its relative source paths made absolute.

    Relative paths are taken from the current directory when they exist there, else from the
    repository root (the YAML files say "run from the repository root"), so the benchmark runs
    from anywhere.
    """
    if not path.is_file():
        raise BenchmarkError(f"{path}: dataset configuration not found; pass --dataset-config")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for source in values.get("sources", []):
        folder = Path(source["path"])
        if not folder.is_absolute():
            folder = folder if folder.exists() else REPO / folder
        source["path"] = str(folder.resolve())
        if not Path(source["path"]).is_dir():
            raise BenchmarkError(
                f"{path}: source {source.get('name')!r} folder {source['path']} does not exist; "
                f"the real data must sit at {SHARED}"
            )
    return values


def ensure_dataset(config_path: Path, out: Path, *, rebuild: bool = False) -> Path:
    """Prepare the dataset of ``config_path`` into ``out``, or reuse it when it was made from the same settings."""
    from deltacd.datasets import prepare_dataset

    values = resolve_dataset_config(config_path)
    fingerprint = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
    stamp = out.parent / f"{out.name}.config.json"
    if (out / "manifest.json").is_file() and not rebuild:
        previous = json.loads(stamp.read_text()).get("fingerprint") if stamp.is_file() else None
        if previous == fingerprint:
            print(f"dataset: reusing {out}", flush=True)
            return out
        raise BenchmarkError(
            f"{out} exists but was prepared from other settings than {config_path}; pass --rebuild-dataset to prepare it again"
        )
    print(f"dataset: preparing {out} from {config_path}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    prepare_dataset(values, out, overwrite=rebuild)
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "config": str(config_path), "values": values}, indent=2))
    tmp.replace(stamp)
    return out


@dataclass
class Chip:
    """One test chip: raw DN of both dates and its label."""

    id: str
    before: np.ndarray  # float32 [C, H, W], raw DN, manifest band order
    after: np.ndarray
    label: np.ndarray  # int64 [H, W], 0 / 1 / ignore_index


def load_test_chips(dataset: Path, groups: dict[str, tuple[str, ...]]) -> dict[str, list[Chip]]:
    """Test chips of the dataset, grouped by source (``groups``: name -> source names)."""
    from deltacd.datasets.manifest import load_manifest
    from deltacd.datasets.torch_dataset import ChangeChipDataset

    manifest = load_manifest(dataset)
    records = {r.id: r for r in manifest.chips("test")}
    ds = ChangeChipDataset(dataset, "test")
    chips: dict[str, list[Chip]] = {name: [] for name in groups}
    for i in range(len(ds)):
        item = ds[i]
        source = records[item["id"]].source_name
        for name, sources in groups.items():
            if source in sources:
                chips[name].append(Chip(item["id"], item["before"].numpy(), item["after"].numpy(), item["label"].numpy()))
    empty = [name for name, c in chips.items() if not c]
    if empty:
        raise BenchmarkError(f"{dataset}: no test chips for {', '.join(empty)} (sources {groups}); rebuild the dataset")
    return chips


# ---------------------------------------------------------------------------------------------
# scoring


@dataclass
class Scores:
    """Micro scores of one test set (summed counts over its chips)."""

    f1: float
    iou: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    chips: int

    @classmethod
    def of(cls, cm: Any, chips: int) -> Scores:
        counts = cm.counts
        return cls(float(cm.f1), float(cm.iou), float(cm.precision), float(cm.recall),
                   int(counts[1, 1]), int(counts[0, 1]), int(counts[1, 0]), chips)


def score_masks(pairs: list[tuple[np.ndarray, np.ndarray]], ignore_index: int) -> Scores:
    """Micro scores of (predicted bool mask, label) pairs."""
    from deltacd.evaluate.metrics import ConfusionMatrix

    cm = ConfusionMatrix(2, ignore_value=ignore_index)
    for mask, label in pairs:
        cm.update(mask.astype(np.uint8), label)
    return Scores.of(cm, len(pairs))


def learned_masks(method: Any, chips: list[Chip], threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Masks of a :class:`~deltacd.methods.learned.LearnedModel`: probability > threshold (as ``detect``)."""
    out = []
    for chip in chips:
        prob = method.predict(chip.before[None], chip.after[None])[0]
        out.append((prob > threshold, chip.label))
    return out


def unsupervised_masks(name: str, chips: list[Chip], bands: Sequence[str]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    """CVA / IR-MAD per crop: fit on all its pixels, automatic threshold on its score histogram."""
    from deltacd.methods import get_method
    from deltacd.postprocess.histogram import Histogram
    from deltacd.prepare.sampling import PixelSample

    out, thresholds = [], []
    for chip in chips:
        method = get_method(name)
        c = chip.before.shape[0]
        method.fit(PixelSample(tuple(bands), chip.before.reshape(c, -1), chip.after.reshape(c, -1)))
        score = method.predict(chip.before[None], chip.after[None])[0]
        hist = Histogram()
        hist.update(score)
        threshold = float(method.auto_threshold(hist))
        thresholds.append(threshold)
        out.append((score > threshold, chip.label))
    return out, thresholds


def megapixels_per_second(predict: Callable[[np.ndarray, np.ndarray], Any], before: np.ndarray, after: np.ndarray,
                          *, runs: int = 5) -> float:
    """Median throughput (Mpx/s) of ``predict(before, after)`` on one batch, after one warm-up call."""
    import torch

    torch.set_num_threads(THREADS)
    predict(before, after)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        predict(before, after)
        times.append(time.perf_counter() - start)
    pixels = before.shape[0] * before.shape[-2] * before.shape[-1]
    return pixels / statistics.median(times) / 1e6


def speed_batch(chips: dict[str, list[Chip]], n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` test chips as one batch ``[n, C, H, W]`` (real images, raw DN)."""
    pool = [c for group in chips.values() for c in group][:n]
    if len(pool) < n:
        raise BenchmarkError(f"need {n} test chips for the speed batch, found {len(pool)}")
    return np.stack([c.before for c in pool]), np.stack([c.after for c in pool])


# ---------------------------------------------------------------------------------------------
# training


def train_config(template: Path, *, model: str, kwargs: dict[str, Any], dataset: Path, out: Path,
                 epochs: int, seed: int, init_from: str | None = None) -> dict[str, Any]:
    """The template's training settings with this run's model, data, epochs, seed and folder."""
    if not template.is_file():
        raise BenchmarkError(f"{template}: training settings not found; pass --train-config")
    values = yaml.safe_load(template.read_text(encoding="utf-8")) or {}
    values.update(
        model={"name": model, "kwargs": dict(kwargs)}, dataset=str(dataset), out=str(out), epochs=epochs, seed=seed,
    )
    if init_from is not None:
        values["init_from"] = init_from
    return values


def _same_settings(run: Path, values: dict[str, Any]) -> tuple[bool, str]:
    """Whether ``run`` is a finished training run of exactly these settings, and if not, why."""
    from deltacd.train.config import load_train_config

    record = run / "train_record.json"
    if not (record.is_file() and (run / "model.safetensors").is_file()):
        return False, "no finished run"
    try:
        done = json.loads(record.read_text())["config"]
    except (ValueError, KeyError):
        return False, f"unreadable {record.name}"
    wanted = load_train_config(values).to_dict()
    differ = sorted(k for k in set(done) | set(wanted) if done.get(k) != wanted.get(k))
    if differ:
        return False, f"settings differ ({', '.join(differ)})"
    # same folder name, but the dataset may have been prepared again since (--rebuild-dataset)
    from deltacd.datasets.manifest import load_manifest
    from deltacd.models.checkpoint import read_spec

    if read_spec(run / "model.safetensors").data.get("created_utc") != load_manifest(values["dataset"]).created_utc:
        return False, "the dataset was prepared again since"
    return True, ""


def train_or_reuse(values: dict[str, Any], *, retrain: bool = False) -> tuple[Path, bool]:
    """Train with ``values`` unless its ``out`` folder already holds a finished run of the same settings.

    Returns the checkpoint path and whether the run was reused.
    """
    from deltacd.train import train

    out = Path(values["out"])
    same, why = _same_settings(out, values)
    if same and not retrain:
        return out / "model.safetensors", True
    if out.exists():
        print(f"  {out.name}: {'--retrain' if same else why}: training again", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers / logging intervals (tiny data on purpose)
        result = train(values, overwrite=True, progress=False)
    return result.checkpoint, False


# ---------------------------------------------------------------------------------------------
# rows and tables


@dataclass
class Row:
    """One line of the table."""

    model: str
    kind: str  # "trained here", "pretrained (reference)", "unsupervised"
    params: int | None
    train_min: float | None
    scores: dict[str, Scores]
    mpx_s: float
    threshold: str
    val_f1: float | None = None
    epochs: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def load_line(when: str) -> str:
    """The 1/5/15-minute load average, for the record (the benchmark machine is shared)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return f"load average (1/5/15 min) {when}: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (machine shared: timings are indicative)"


def machine_header() -> list[str]:
    import torch

    return [
        f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {THREADS} threads, no GPU used",
        load_line("at the start"),
    ]


def write_table(rows: list[Row], groups: Sequence[str], header: list[str], stem: Path) -> str:
    """Print-ready markdown table; writes ``stem.md`` and ``stem.csv`` (temporary names, then renamed)."""
    cols = ["model", "kind", "params", "train min"]
    for g in groups:
        cols += [f"{g} F1", f"{g} IoU"]
    cols += ["MP/s", "threshold", "val F1", "epochs"]
    lines = [f"| {' | '.join(cols)} |", "|" + "|".join("---" for _ in cols) + "|"]
    csv_rows = []
    for r in rows:
        cells = [r.model, r.kind, f"{r.params:,}" if r.params else "-", _fmt(r.train_min, 1)]
        rec: dict[str, Any] = {"model": r.model, "kind": r.kind, "params": r.params, "train_min": _round(r.train_min, 2)}
        for g in groups:
            s = r.scores[g]
            cells += [_fmt(s.f1), _fmt(s.iou)]
            rec.update({f"{g}_f1": _round(s.f1), f"{g}_iou": _round(s.iou), f"{g}_precision": _round(s.precision),
                        f"{g}_recall": _round(s.recall), f"{g}_tp": s.tp, f"{g}_fp": s.fp, f"{g}_fn": s.fn,
                        f"{g}_chips": s.chips})
        cells += [_fmt(r.mpx_s, 2), r.threshold, _fmt(r.val_f1), str(r.epochs) if r.epochs else "-"]
        rec.update({"mpx_per_s": _round(r.mpx_s, 3), "threshold": r.threshold, "val_f1": _round(r.val_f1),
                    "epochs": r.epochs, "note": r.note})
        lines.append(f"| {' | '.join(cells)} |")
        csv_rows.append(rec)
    notes = [f"- {r.model}: {r.note}" for r in rows if r.note]
    md = "\n".join([*(f"{h}  " for h in header), "", *lines, "", *notes, ""])
    stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".md", lambda f: f.write(md)), (".csv", lambda f: _write_csv(f, header, csv_rows))):
        path = stem.with_suffix(suffix)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            write(handle)
        tmp.replace(path)
    return md


def _write_csv(handle: Any, header: list[str], rows: list[dict[str, Any]]) -> None:
    for h in header:
        handle.write(f"# {h}\n")
    if not rows:
        return
    names = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(handle, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


# ---------------------------------------------------------------------------------------------
# rows


def learned_row(checkpoint: str | Path, chips: dict[str, list[Chip]], batch: tuple[np.ndarray, np.ndarray], *,
                label: str, kind: str, ignore_index: int, pair_bands: Sequence[str], speed_runs: int,
                note: str = "", spec_override: Callable[[Any], Any] | None = None) -> Row:
    """Score and time one model given as a deltacd checkpoint or ``ARCH:PATH``."""
    import torch

    from deltacd.methods.learned import LearnedModel
    from deltacd.models.registry import count_parameters

    torch.set_num_threads(THREADS)
    method = LearnedModel.from_file(checkpoint, device="cpu")
    if spec_override is not None:
        method = LearnedModel(method.model, spec_override(method.spec), device="cpu", source=method.source)
    method.select_bands(pair_bands)
    threshold = float(method.spec.threshold)
    scores = {g: score_masks(learned_masks(method, c, threshold), ignore_index) for g, c in chips.items()}
    mpx = megapixels_per_second(method.predict, *batch, runs=speed_runs) if speed_runs > 0 else math.nan
    training = method.spec.training or {}
    return Row(
        model=label, kind=kind, params=count_parameters(method.model), train_min=training.get("minutes"),
        scores=scores, mpx_s=mpx, threshold=f"{threshold:.3f}", val_f1=training.get("best_val_f1"),
        epochs=training.get("epochs_run"), note=note,
    )


def unsupervised_row(name: str, chips: dict[str, list[Chip]], batch: tuple[np.ndarray, np.ndarray], *,
                     bands: Sequence[str], ignore_index: int, speed_runs: int) -> Row:
    """CVA / IR-MAD on the same test chips (per-crop fit and automatic threshold)."""
    from deltacd.methods import get_method
    from deltacd.prepare.sampling import PixelSample

    scores, thresholds = {}, []
    for g, c in chips.items():
        masks, thr = unsupervised_masks(name, c, bands)
        scores[g] = score_masks(masks, ignore_index)
        thresholds += thr
    method = get_method(name)
    before, after = batch
    n, ch = before.shape[:2]
    method.fit(PixelSample(tuple(bands), before.transpose(1, 0, 2, 3).reshape(ch, -1),
                           after.transpose(1, 0, 2, 3).reshape(ch, -1)))
    mpx = megapixels_per_second(method.predict, before, after, runs=speed_runs) if speed_runs > 0 else math.nan
    rule = "Otsu" if name == "cva" else "chi2 0.99"
    span = f"{min(thresholds):.2f}" if max(thresholds) - min(thresholds) < 5e-3 else f"{min(thresholds):.2f}-{max(thresholds):.2f}"
    return Row(
        model=name.upper().replace("IRMAD", "IR-MAD"), kind="unsupervised", params=None, train_min=None,
        scores=scores, mpx_s=mpx, threshold=f"{rule} per crop ({span})",
        note="fitted and thresholded on each crop (auto_threshold, as detect); MP/s of predict only",
    )


def all_changed_row(chips: dict[str, list[Chip]], *, ignore_index: int) -> Row:
    """The trivial "everything changed" answer: the F1 a model gets without learning anything (2p / (1 + p))."""
    scores = {g: score_masks([(np.ones(ch.label.shape, bool), ch.label) for ch in c], ignore_index) for g, c in chips.items()}
    return Row(model="all changed (trivial)", kind="baseline", params=None, train_min=None, scores=scores, mpx_s=math.nan,
               threshold="-", note="every pixel called changed: F1 = 2p / (1 + p) with p the changed fraction; "
                                   "a model at this F1 has learnt nothing")


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(ARCHITECTURES), help="architectures to train (default: all)")
    parser.add_argument("--epochs", type=int, help=f"epochs per model (default {DEFAULT_EPOCHS}; --quick: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: 1 epoch, models {' '.join(QUICK_MODELS)}, "
                        "results in the work folder")
    parser.add_argument("--work", type=Path, default=WORK / "architectures", help="work folder (dataset, runs)")
    parser.add_argument("--results", type=Path, default=RESULTS / "architectures",
                        help="output stem: STEM.csv and STEM.md (default benchmarks/results/architectures)")
    parser.add_argument("--dataset-config", type=Path, default=DATASET_CONFIG)
    parser.add_argument("--train-config", type=Path, default=TRAIN_CONFIG)
    parser.add_argument("--tinycd-checkpoint", default=str(TINYCD_LEVIR),
                        help="authors' TinyCD LEVIR-CD weights for the reference row ('' to skip)")
    parser.add_argument("--speed-runs", type=int, default=5, help="timed inference runs per model (median; 0: no timing)")
    parser.add_argument("--retrain", action="store_true", help="train again even when a finished run with the same settings exists")
    parser.add_argument("--rebuild-dataset", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1 if args.epochs is None else args.epochs
        args.models = args.models or QUICK_MODELS
        args.speed_runs = min(args.speed_runs, 2)
        if args.results == RESULTS / "architectures":
            args.results = args.work / "architectures_quick"
    args.epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
    args.models = args.models or list(ARCHITECTURES)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from deltacd.datasets.manifest import load_manifest
    from deltacd.errors import DeltacdError

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    header = machine_header()
    try:
        dataset = ensure_dataset(args.dataset_config, args.work / "dataset", rebuild=args.rebuild_dataset)
        manifest = load_manifest(dataset)
        chips = load_test_chips(dataset, TEST_GROUPS)
        batch = speed_batch(chips)
        common = dict(chips=chips, batch=batch, ignore_index=manifest.ignore_index, speed_runs=args.speed_runs)
        rows: list[Row] = []
        for name in args.models:
            values = train_config(args.train_config, model=name, kwargs=ARCHITECTURES[name], dataset=dataset,
                                  out=args.work / "runs" / f"{name}_e{args.epochs}_seed{args.seed}",
                                  epochs=args.epochs, seed=args.seed)
            t0 = time.perf_counter()
            print(f"[{(t0 - started) / 60:5.1f} min] {name}: training {args.epochs} epoch(s)...", flush=True)
            checkpoint, reused = train_or_reuse(values, retrain=args.retrain)
            row = learned_row(checkpoint, label=name, kind="trained here", pair_bands=manifest.bands, **common,
                              note="resnet18 encoder, no pretrained weights" if name == "siamese-unet" else "")
            rows.append(row)
            print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {name}: {'reused' if reused else 'trained'} "
                  f"({row.train_min:.1f} min), LEVIR F1 {row.scores['LEVIR'].f1:.3f}, DSIFN F1 {row.scores['DSIFN'].f1:.3f}, "
                  f"{row.mpx_s:.2f} MP/s", flush=True)
        if args.tinycd_checkpoint:
            if not Path(args.tinycd_checkpoint).is_file():
                raise BenchmarkError(f"{args.tinycd_checkpoint}: TinyCD checkpoint not found; pass --tinycd-checkpoint '' to skip the row")
            rows.append(learned_row(
                f"tinycd:{args.tinycd_checkpoint}", label="TinyCD-LEVIR (authors)", kind="pretrained (reference)",
                pair_bands=manifest.bands, **common,
                note="authors' weights, trained on the full LEVIR-CD train set (not by us), ImageNet normalisation, "
                     "threshold 0.5; its DSIFN score is zero-shot",
            ))
        rows.append(all_changed_row(chips, ignore_index=manifest.ignore_index))
        for name in ("cva", "irmad"):
            rows.append(unsupervised_row(name, chips, batch, bands=manifest.bands, ignore_index=manifest.ignore_index,
                                         speed_runs=args.speed_runs))
    except (DeltacdError, BenchmarkError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept under the work folder and reused next time", file=sys.stderr)
        return 130
    total = (time.perf_counter() - started) / 60
    levir, dsifn = (len(chips[g]) for g in TEST_GROUPS)
    header += [
        f"training set: {args.dataset_config.relative_to(REPO) if args.dataset_config.is_relative_to(REPO) else args.dataset_config} "
        f"-> {manifest.splits['train']} train / {manifest.splits['val']} val chips of {manifest.chip_size} px; "
        f"test: LEVIR = {levir} LEVIR-CD test crops, DSIFN = {dsifn} held-out DSIFN-CD crops (8_3, 9_3)",
        f"training: {args.train_config.name}, {args.epochs} epochs, seed {args.seed}, same settings for every model; "
        "threshold chosen on validation (saved in the checkpoint)",
        "scores: micro F1 / IoU of the change class (TP, FP, FN summed over a test set's crops); "
        "MP/s: CPU inference on 4 x 256 x 256 px, median",
        f"benchmark wall time: {total:.1f} min (python {' '.join(['benchmarks/architectures.py', *(argv or sys.argv[1:])])})",
        load_line("at the end"),
    ]
    md = write_table(rows, list(TEST_GROUPS), header, args.results)
    print()
    print(md)
    print(f"written: {args.results.with_suffix('.csv')}, {args.results.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
