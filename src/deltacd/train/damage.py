"""Training the damage networks (``deltacd train`` with ``task: damage-classifier | damage-segmentation | building-localisation``).

A YAML file names the task, the sources and the budget (:class:`~deltacd.train.config.DamageTrainConfig`);
relative paths are relative to the current directory, as for change training. Sources are scenes
with footprints and grades:

* ``kind: xbd``: an xBD-style folder (``images/`` with ``masks/`` or ``labels/``), each tile
  written as a georeferenced pair with footprints (:mod:`deltacd.datasets.xbd_tiles`);
* ``kind: buildings``: a pair of images and a footprint layer with a grade field (any vector
  format and CRS; ``grade_table`` maps other studies' grades, :mod:`deltacd.outputs.grades`).

Samples are read window by window from each aligned pair (never a whole scene), as
:mod:`deltacd.train.damage_data` describes: one chip pair per graded building for the classifier,
crops with a per-pixel target for the segmenters.

Recipe (the change recipe's rules, :mod:`deltacd.datasets.sampling`): training samples drawn with
each event at an equal share whatever its building count (``balance_events``), and the
classifier's weights kept on the macro F1 of each validation event averaged (``validation:
per_event``), so that the event with most buildings neither dominates the gradient nor picks the
weights. AdamW, linear warm-up over the first 10 % of the steps then cosine decay
(:func:`~deltacd.train.module.warmup_cosine_factor`); geometric augmentation only (the same random
flips and quarter turns of both dates, mask and target, :class:`~deltacd.train.augment.DihedralAugmentation`);
class weights inverse to the training frequencies (capped at 10) because grades are rare; the
classifier's ordinal loss is the binary cross-entropy of the three cumulative targets
``grade > k`` (CORAL). Validation every ``eval_every`` steps on held-out scenes (a fifth, at
least one, when there are three or more; otherwise a fifth of the samples drawn at random), and
the weights of the best validation score are kept: macro F1 over grades (classifier,
segmentation, building pixels only), pixel F1 of buildings (localisation, whose threshold is then
chosen on validation), each the mean F1 (:class:`deltacd.metrics.ConfusionMatrix`) over the
classes present in the validation reference, NaN when none is (an undefined score ranks as 0
when the weights are picked, as in change training). Normalisation: mean and std per band over
the training samples of both dates, stored in the checkpoint with the training resolution.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import yaml
from torch.nn import functional as F
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torch.utils.data import DataLoader, TensorDataset

from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.records import environment, to_json_value, write_json
from deltacd.metrics import ConfusionMatrix
from deltacd.models.checkpoint import ModelSpec, offline_kwargs, save_checkpoint
from deltacd.models.damage import ordinal_probabilities, ordinal_targets
from deltacd.models.registry import build_model
from deltacd.outputs.grades import GRADES
from deltacd.train.augment import DihedralAugmentation
from deltacd.train.config import DamageTrainConfig, load_damage_config
from deltacd.train.damage_data import IGNORE, Samples, chip_samples, crop_samples, scenes_of, split_samples
from deltacd.train.datamodule import balanced_sampler
from deltacd.train.fit import torch_settings
from deltacd.train.losses import class_weights
from deltacd.train.module import TrainingTask, warmup_cosine_factor

log = logging.getLogger(__name__)

__all__ = ["DamageTask", "DamageTrainResult", "macro_f1", "train_damage"]


@dataclass(frozen=True)
class DamageTrainResult:
    out_dir: Path
    checkpoint: Path
    best_val: float
    steps: int
    minutes: float


def macro_f1(predicted: np.ndarray, truth: np.ndarray, classes: list[int]) -> float:
    """Mean F1 (:attr:`deltacd.metrics.ConfusionMatrix.f1_per_class`) over the ``classes`` present in ``truth``; NaN if none is.

    Classes absent from ``truth`` are left out even when predicted: a validation event without
    destroyed buildings is not scored on that grade.
    """
    n = max([*classes, int(predicted.max(initial=0)), int(truth.max(initial=0))]) + 1
    matrix = ConfusionMatrix.from_arrays(predicted, truth, n_classes=n)
    present = [c for c in classes if matrix.counts[c].sum() > 0]
    return float(np.mean(matrix.f1_per_class[present])) if present else math.nan


def _model_kwargs(cfg: DamageTrainConfig, bands: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    common = {"in_channels": len(bands), "encoder_spec": cfg.encoder, "encoder_bands": list(bands)}
    if cfg.task == "damage-classifier":
        return "damage-classifier", common
    if cfg.task == "damage-segmentation":
        return "siamese-unet", common | {"num_classes": 1 + len(GRADES), "fusion": "concat"}
    return "building-unet", common


def train_damage(config: DamageTrainConfig | dict[str, Any] | str | Path, *, overwrite: bool = False,
                 progress: bool = True) -> DamageTrainResult:
    """Train a damage network and save it as a self-describing checkpoint (module notes)."""
    cfg = load_damage_config(config)
    out = Path(cfg.out)
    inputs = input_paths(*[getattr(s, f) for s in cfg.sources for f in ("path", "before", "after", "buildings") if hasattr(s, f)])
    check_output(out, overwrite=overwrite, inputs=inputs)
    started, started_at = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    with torch_settings(cfg.num_threads, quiet=True), \
            staged_output(out, overwrite=overwrite, kind="train", inputs=inputs) as staging:
        work = staging / "_work"
        work.mkdir()
        scenes = scenes_of(cfg, work)
        if cfg.task == "damage-classifier":
            samples = chip_samples(scenes, cfg.chip_m)
        else:
            samples = crop_samples(scenes, cfg.crop_px, cfg.crops_per_scene, task=cfg.task, seed=cfg.seed)
        train_idx, val_idx = split_samples(samples, scenes, cfg.val_fraction, cfg.seed,
                                           per_event=cfg.validation == "per_event")
        values = np.concatenate([samples.before[train_idx], samples.after[train_idx]]).transpose(1, 0, 2, 3)
        values = values.reshape(values.shape[0], -1)
        values = values[:, np.isfinite(values).all(axis=0)]
        mean, std = values.mean(axis=1), values.std(axis=1)
        std = np.where(std > 0, std, 1.0)
        name, kwargs = _model_kwargs(cfg, samples.bands)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        model = build_model(name, **kwargs)
        task = DamageTask(cfg, model, samples, train_idx, val_idx, mean, std, [sc.event for sc in scenes])
        accelerator = "cpu" if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()) else "gpu"
        trainer = L.Trainer(max_steps=cfg.steps, accelerator=accelerator, devices=1, precision=cfg.precision,
                            val_check_interval=min(cfg.eval_every, cfg.steps), check_val_every_n_epoch=None,
                            logger=False, enable_checkpointing=False, enable_progress_bar=progress,
                            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(work))
        trainer.fit(task)
        if task.best_state is not None:
            model.load_state_dict(task.best_state)
        threshold = task.best_threshold
        minutes = (time.perf_counter() - started) / 60
        spec = ModelSpec(
            name=name, kwargs=offline_kwargs(kwargs), bands=samples.bands, mean=tuple(mean.tolist()), std=tuple(std.tolist()),
            threshold=threshold, task=cfg.task if cfg.task != "building-localisation" else "binary",
            gsd_m=round(samples.resolution_m, 4) if samples.resolution_m else None,
            data={"task": cfg.task, "events": sorted({s.event for s in scenes}), "scenes": len(scenes),
                  "samples": {"train": len(train_idx), "val": len(val_idx)}, **samples.counts,
                  "chip_m": cfg.chip_m, "chip_px": int(samples.before.shape[-1]) if cfg.task == "damage-classifier" else None,
                  "crop_px": cfg.crop_px if cfg.task != "damage-classifier" else None},
            training={"steps": cfg.steps, "best_val": task.best_score if math.isfinite(task.best_score) else None,
                      "best_step": task.best_step, "val_metric": task.metric_name, "lr": cfg.lr,
                      "batch_size": cfg.batch_size, "class_weights": task.weights.tolist(), "minutes": round(minutes, 2),
                      "seed": cfg.seed, "harmonise": "none"},
        )
        checkpoint = save_checkpoint(staging / "model.safetensors", model.cpu(), spec)
        with open(staging / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", task.metric_name, "train_loss"])
            writer.writeheader()
            writer.writerows(task.history)
        config_used = to_json_value(asdict(cfg))
        (staging / "config_used.yaml").write_text(yaml.safe_dump(config_used, sort_keys=False))
        write_json(staging / "train_record.json", {
            "format": "deltacd-damage-train/1", "started": started_at, **environment(),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"), "config": config_used,
            "spec": {"name": name, "task": spec.task, "gsd_m": spec.gsd_m, "threshold": threshold},
            "data": spec.data, "training": spec.training,
        })
        shutil.rmtree(work)
    log.info("trained %s in %.1f min: best %s %.3f", cfg.task, minutes, task.metric_name, task.best_score)
    return DamageTrainResult(out, out / checkpoint.name, task.best_score, cfg.steps, minutes)


class DamageTask(TrainingTask):
    """The Lightning task of a damage training run: loss, validation score and best weights (module notes)."""

    def __init__(self, cfg: DamageTrainConfig, model: torch.nn.Module, samples: Samples, train_idx: np.ndarray,
                 val_idx: np.ndarray, mean: np.ndarray, std: np.ndarray, scene_events: list[str]):
        super().__init__()
        self.cfg, self.samples, self.train_idx, self.val_idx = cfg, samples, train_idx, val_idx
        self.model = model
        self.bands = tuple(samples.bands)
        self.scene_events = list(scene_events)
        self.set_normalisation(mean, std)
        classes = {"damage-classifier": len(GRADES), "damage-segmentation": 1 + len(GRADES)}.get(cfg.task, 2)
        self.weights = class_weights(samples.target[train_idx], classes)
        self.register_buffer("class_weight", torch.tensor(self.weights, dtype=torch.float32))
        self.augment = DihedralAugmentation(cfg.seed)
        self.best_score, self.best_state, self.best_step, self.best_threshold = -1.0, None, 0, 0.5
        self._best_rank = -1.0
        self.metric_name = {"damage-classifier": "val_macro_f1", "damage-segmentation": "val_macro_f1_pixels",
                            "building-localisation": "val_building_f1"}[cfg.task]
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._val: list = []

    def _dataset(self, index: np.ndarray) -> TensorDataset:
        s = self.samples
        parts = [torch.from_numpy(np.nan_to_num(s.before[index])), torch.from_numpy(np.nan_to_num(s.after[index])),
                 torch.from_numpy(s.target[index].astype(np.int64))]
        if s.mask is not None:
            parts.append(torch.from_numpy(s.mask[index]))
        return TensorDataset(*parts)

    def _events(self, index: np.ndarray) -> list[str]:
        return [self.scene_events[int(i)] for i in self.samples.scene[index]]

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.cfg.seed)
        events = self._events(self.train_idx)
        order: dict[str, Any] = {"shuffle": True, "generator": generator}
        if self.cfg.balance_events and len(set(events)) > 1:  # each event its share, whatever its building count
            order = {"sampler": balanced_sampler(events, generator=generator)}
        return DataLoader(self._dataset(self.train_idx), batch_size=self.cfg.batch_size,
                          drop_last=len(self.train_idx) > self.cfg.batch_size, **order)

    def _val_index(self) -> np.ndarray:
        return self.val_idx if len(self.val_idx) else self.train_idx[: max(1, len(self.train_idx) // 5)]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(self._val_index()), batch_size=self.cfg.batch_size)

    def _forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        before, after, target = batch[:3]
        x, y = self.normalise(before), self.normalise(after)
        if self.cfg.task == "damage-classifier":
            return self.model(x, y, batch[3]), target
        if self.cfg.task == "damage-segmentation":
            return self.model(x, y), target
        return self.model(x), target

    def training_step(self, batch, batch_idx):
        batch = list(batch)
        moved = (0, 1, 3) if self.cfg.task == "damage-classifier" else (0, 1, 2)  # images, mask or pixel target
        for i, t in zip(moved, self.augment(*(batch[i] for i in moved)), strict=True):
            batch[i] = t
        logits, target = self._forward(batch)
        if self.cfg.task == "damage-classifier":
            loss = F.binary_cross_entropy_with_logits(logits, ordinal_targets(target), weight=self.class_weight[target][:, None])
        elif self.cfg.task == "damage-segmentation":
            loss = F.cross_entropy(logits, target, weight=self.class_weight, ignore_index=IGNORE)
        else:
            valid = target != IGNORE
            positive = self.class_weight[1] / self.class_weight[0].clamp_min(1e-6)
            loss = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float(), pos_weight=positive)
        self._losses.append(float(loss.detach()))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx) -> None:
        logits, target = self._forward(batch)
        if self.cfg.task == "damage-classifier":
            self._val.append((ordinal_probabilities(logits).argmax(dim=1).cpu().numpy(), target.cpu().numpy()))
        elif self.cfg.task == "damage-segmentation":
            keep = (target > 0) & (target != IGNORE)  # building pixels: the grade given a building
            predicted = logits[:, 1:].argmax(dim=1) + 1
            self._val.append((predicted[keep].cpu().numpy(), target[keep].cpu().numpy()))
        else:
            keep = target != IGNORE
            self._val.append((torch.sigmoid(logits[:, 0].float())[keep].cpu().numpy(), target[keep].cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        predicted = np.concatenate([p for p, _ in self._val]) if self._val else np.array([], dtype=np.int64)
        truth = np.concatenate([t for _, t in self._val]) if self._val else np.array([], dtype=np.int64)
        threshold = 0.5
        if self.cfg.task == "damage-classifier":
            events = np.asarray(self._events(self._val_index()))
            if self.cfg.validation == "per_event" and len(set(events)) > 1 and len(events) == len(truth):
                # one event must not choose the weights alone: macro F1 of each event, averaged
                score = float(np.mean([macro_f1(predicted[events == e], truth[events == e], list(GRADES))
                                       for e in sorted(set(events))]))
            else:
                score = macro_f1(predicted, truth, list(GRADES))
        elif self.cfg.task == "damage-segmentation":
            score = macro_f1(predicted, truth, [g + 1 for g in GRADES])
        else:  # the threshold of the building probability is chosen here, on validation
            candidates = np.round(np.arange(0.05, 0.96, 0.05), 2)
            f1 = np.array([macro_f1((predicted > t).astype(int), truth, [1]) for t in candidates])
            if not np.isnan(f1).all():  # undefined without building pixels: the threshold stays 0.5
                best = int(np.nanargmax(f1))
                threshold, score = float(candidates[best]), float(f1[best])
            else:
                score = math.nan
        step = int(self.global_step)
        self.history.append({"step": step, self.metric_name: round(score, 4),
                             "train_loss": round(float(np.mean(self._losses)), 4) if self._losses else None})
        self._losses = []
        rank = 0.0 if math.isnan(score) else score  # an undefined score ranks as 0, as in change training
        if rank > self._best_rank:
            self._best_rank = rank
            self.best_score, self.best_step, self.best_threshold = score, step, threshold
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})

    def optimizer_settings(self) -> tuple[float, float]:
        return self.cfg.lr, self.cfg.weight_decay

    def lr_schedule(self, optimizer: Optimizer) -> tuple[LRScheduler, Literal["step", "epoch"]]:
        """Linear warm-up over the first 10 % of the steps, then cosine decay to 0 (:func:`warmup_cosine_factor`)."""
        return LambdaLR(optimizer, warmup_cosine_factor(self.cfg.steps, max(1, self.cfg.steps // 10))), "step"
