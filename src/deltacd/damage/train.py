"""Training the damage networks (``deltacd train`` with ``task: damage-classifier | damage-segmentation | building-localisation``).

A YAML file names the task, the sources and the budget; relative paths are relative to the
current directory, as for change training. Sources are scenes with footprints and grades:

* ``kind: xbd``: an xBD-style folder (``images/`` with ``masks/`` or ``labels/``), each tile
  written as a georeferenced pair with footprints (:mod:`deltacd.damage.xbd`);
* ``kind: buildings``: a pair of images and a footprint layer with a grade field (any vector
  format and CRS; ``grade_table`` maps other studies' grades, :mod:`deltacd.damage.grades`).

Samples are read window by window from each aligned pair (never a whole scene): for the
classifier one chip pair of ``chip_m`` metres centred on every graded building, with its
footprint mask; for the segmenters ``crops_per_scene`` crops of ``crop_px`` pixels, half of
them centred on buildings, with a per-pixel target (background, the four grades; or building).
Pairs are read raw (no radiometric harmonisation), as ``damage`` then gives them to the network.

Recipe (the change recipe's rules, :mod:`deltacd.datasets.sampling`): training samples drawn with
each event at an equal share whatever its building count (``balance_events``), and the
classifier's weights kept on the macro F1 of each validation event averaged (``validation:
per_event``), so that the event with most buildings neither dominates the gradient nor picks the
weights. AdamW, linear warm-up over the first 10 % of the steps then cosine decay; geometric
augmentation only (the same random flips and quarter turns of both dates, mask and target);
class weights inverse to the training frequencies (capped at 10) because grades are rare; the
classifier's ordinal loss is the binary cross-entropy of the three cumulative targets
``grade > k`` (CORAL). Validation every ``eval_every`` steps on held-out scenes (a fifth, at
least one, when there are three or more; otherwise a fifth of the samples drawn at random), and
the weights of the best validation score are kept: macro F1 over grades (classifier,
segmentation, building pixels only), pixel F1 of buildings (localisation, whose threshold is then
chosen on validation). Normalisation: mean and std per band over the training samples of both
dates, stored in the checkpoint with the training resolution.
"""

from __future__ import annotations

import copy
import csv
import fnmatch
import logging
import math
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning as L
import numpy as np
import torch
import yaml
from pydantic import Field, PositiveFloat, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from rasterio.windows import Window
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from deltacd.config import STRICT, build_options, read_yaml
from deltacd.outputs.grades import GRADES, map_grades
from deltacd.damage.methods import read_chip
from deltacd.damage.xbd import list_tiles, write_xbd_tile
from deltacd.datasets.sampling import source_weights
from deltacd.errors import InputError, MissingInputError
from deltacd.io.outputs import check_output, input_paths, staged_output
from deltacd.io.rasters import open_image
from deltacd.io.records import environment, write_json
from deltacd.io.vectors import clean_polygons, read_vector
from deltacd.models.checkpoint import ModelSpec, offline_kwargs, save_checkpoint
from deltacd.models.damage import ordinal_probabilities, ordinal_targets
from deltacd.models.registry import build_model
from deltacd.postprocess.zonal import FeatureLabels
from deltacd.prepare.align import align_pair

log = logging.getLogger(__name__)

DAMAGE_TASKS = ("damage-classifier", "damage-segmentation", "building-localisation")
IGNORE = 255


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class XbdDamageSource:
    """An xBD-style folder of tiles; ``event`` names it in splits and records (default: from the tile ids)."""

    kind: Literal["xbd"] = "xbd"
    path: Path
    event: str | None = None
    glob: str | None = None


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class BuildingsDamageSource:
    """A pre/post pair and footprints with a grade field."""

    kind: Literal["buildings"] = "buildings"
    before: Path
    after: Path
    buildings: Path
    grade_field: str = "grade"
    grade_table: str = "deltacd"
    bands_before: str | None = None
    bands_after: str | None = None
    event: str | None = None


DamageSource = Annotated[XbdDamageSource | BuildingsDamageSource, Field(discriminator="kind")]


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class DamageTrainConfig:
    """Settings of a damage training run (module notes); every field has a working default but ``task``, ``sources``, ``out``."""

    task: Literal["damage-classifier", "damage-segmentation", "building-localisation"]
    sources: list[DamageSource]
    out: Path
    encoder: str = "efficientnet_lite0:imagenet"
    chip_m: PositiveFloat = 32.0
    crop_px: Annotated[int, Field(ge=64)] = 256
    crops_per_scene: PositiveInt = 16
    steps: PositiveInt = 300
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    eval_every: PositiveInt = 50
    seed: int = 0
    num_threads: PositiveInt | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    balance_events: bool = True
    validation: Literal["per_event", "pooled"] = "per_event"


@dataclass
class Scene:
    """One training scene: a pair, its footprints with grades, and where it comes from."""

    event: str
    name: str
    before: Path
    after: Path
    buildings: Path
    grade_field: str = "grade"
    grade_table: str = "deltacd"
    bands_before: str | None = None
    bands_after: str | None = None


@dataclass
class Samples:
    """Training samples in memory: before/after float32 [N, C, H, W], mask [N, 1, H, W] (chips), target, scene index."""

    before: np.ndarray
    after: np.ndarray
    target: np.ndarray
    scene: np.ndarray
    mask: np.ndarray | None = None
    bands: tuple[str, ...] = ()
    resolution_m: float | None = None
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DamageTrainResult:
    out_dir: Path
    checkpoint: Path
    best_val: float
    steps: int
    minutes: float


def load_damage_config(source: str | Path | dict[str, Any] | DamageTrainConfig) -> DamageTrainConfig:
    """Validate a damage training configuration from a YAML file, a dict or a config."""
    if isinstance(source, DamageTrainConfig):
        return source
    where = "damage train config"
    if isinstance(source, (str, Path)):
        where = str(source)
        source = read_yaml(source, what="training config file")
    if not isinstance(source, dict):
        raise InputError(f"{where}: expected a mapping of settings; got {type(source).__name__}")
    cfg = build_options(DamageTrainConfig, source, source=where)
    if not cfg.sources:
        raise InputError(f"{where}: sources is empty; give at least one xbd folder or buildings pair")
    return cfg


def scenes_of(cfg: DamageTrainConfig, work: Path) -> list[Scene]:
    """Every scene of the sources; xBD tiles are written as georeferenced pairs into ``work``."""
    scenes: list[Scene] = []
    for index, source in enumerate(cfg.sources):
        if isinstance(source, XbdDamageSource):
            tiles = [t for t in list_tiles(source.path) if source.glob is None or fnmatch.fnmatch(t, source.glob)]
            if not tiles:
                raise InputError(f"sources[{index}]: no tile of {source.path} matches glob {source.glob!r}")
            for tile in tiles:
                origin = (500000.0 + 1000.0 * len(scenes), 3300000.0)  # apart from each other
                written = write_xbd_tile(source.path, tile, work / f"{index}_{tile}", event=source.event, origin=origin)
                scenes.append(Scene(written.event, tile, written.before, written.after, written.buildings))
        else:
            for path in (source.before, source.after, source.buildings):
                if not Path(path).exists():
                    raise MissingInputError(f"sources[{index}]: {path}: no such file; check the path")
            scenes.append(Scene(source.event or f"source{index}", Path(source.before).stem, source.before, source.after,
                                source.buildings, source.grade_field, source.grade_table, source.bands_before,
                                source.bands_after))
    return scenes


def _open_scene(scene: Scene):
    first = open_image(scene.before, bands=scene.bands_before, label="before")
    second = open_image(scene.after, bands=scene.bands_after, label="after")
    pair = align_pair(first, second)
    frame, _ = clean_polygons(read_vector(scene.buildings, what="buildings"), scene.buildings, what="buildings")
    if scene.grade_field not in frame.columns:
        raise InputError(f"{scene.buildings}: no grade field {scene.grade_field!r} (fields: "
                         f"{', '.join(map(str, frame.columns[:12]))}); set grade_field")
    grades = map_grades(frame[scene.grade_field], scene.grade_table, where=f"{scene.buildings} field {scene.grade_field}")
    frame = frame.to_crs(pair.grid.crs).assign(_grade=grades)
    return pair, frame


def chip_samples(scenes: list[Scene], chip_m: float, progress=None) -> Samples:
    """One chip pair per graded building (``chip_m`` metres, at each scene's resolution)."""
    before, after, masks, target, scene_index, bands, resolution = [], [], [], [], [], None, None
    for s, scene in enumerate(scenes):
        pair, frame = _open_scene(scene)
        with pair:
            bands = bands or pair.bands
            resolution = resolution or pair.grid.res_m
            size = max(32, 32 * round(chip_m / pair.grid.res_m / 32))
            for geom, grade in zip(frame.geometry.values, frame["_grade"].to_numpy(), strict=True):
                if grade < 0:
                    continue
                b, a, m = read_chip(pair, geom, size)
                if np.isnan(b).all():
                    continue
                before.append(b)
                after.append(a)
                masks.append(m[None])
                target.append(grade)
                scene_index.append(s)
        if progress is not None:
            progress("scenes", s + 1, len(scenes))
    if not target:
        raise InputError("sources: no graded building on the images; check the footprints overlap the pairs and carry grades")
    target = np.array(target, dtype=np.int64)
    return Samples(np.stack(before), np.stack(after), target, np.array(scene_index), np.stack(masks), tuple(bands), resolution,
                   {"buildings_per_grade": {str(g): int((target == g).sum()) for g in GRADES}})


def crop_samples(scenes: list[Scene], crop_px: int, per_scene: int, *, task: str, seed: int, progress=None) -> Samples:
    """Crops of ``crop_px`` pixels, half centred on buildings, with a pixel target (module notes)."""
    rng = np.random.default_rng(seed)
    before, after, target, scene_index, bands, resolution = [], [], [], [], None, None
    for s, scene in enumerate(scenes):
        pair, frame = _open_scene(scene)
        with pair:
            grid = pair.grid
            bands = bands or pair.bands
            resolution = resolution or grid.res_m
            size = min(crop_px, grid.width, grid.height) // 32 * 32
            if size < 32:
                continue
            labels = FeatureLabels(frame.geometry)
            centres = np.array([(~grid.transform) * (p.x, p.y) for p in frame.geometry.representative_point()])
            for k in range(per_scene):
                if k % 2 == 0 and len(centres):
                    col, row = centres[rng.integers(len(centres))]
                    col, row = int(col) - size // 2, int(row) - size // 2
                else:
                    col, row = rng.integers(0, grid.width - size + 1), rng.integers(0, grid.height - size + 1)
                col = int(np.clip(col, 0, grid.width - size))
                row = int(np.clip(row, 0, grid.height - size))
                window = Window(col, row, size, size)
                block = pair.read(window)
                label = labels.read(grid, window)
                if task == "building-localisation":
                    pixel = (label > 0).astype(np.uint8)
                else:
                    grades = np.concatenate([[-1], frame["_grade"].to_numpy()])[label]
                    pixel = np.where(label == 0, 0, np.where(grades >= 0, grades + 1, IGNORE)).astype(np.uint8)
                pixel[~block.valid] = IGNORE
                before.append(block.before)
                after.append(block.after)
                target.append(pixel)
                scene_index.append(s)
        if progress is not None:
            progress("scenes", s + 1, len(scenes))
    if not target:
        raise InputError(f"sources: no crop of {crop_px} px fits the images; lower crop_px")
    target = np.stack(target)
    return Samples(np.stack(before), np.stack(after), target, np.array(scene_index), None, tuple(bands), resolution,
                   {"pixels_per_class": {str(c): int((target == c).sum()) for c in range(6) if (target == c).any()}})


def split_samples(samples: Samples, scenes: list[Scene], val_fraction: float, seed: int,
                  per_event: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of the training and validation samples: whole scenes held out when there are three or more.

    ``per_event``: a fifth (``val_fraction``) of *each* event's scenes, at least one of every
    event that has two or more, so that validation can be scored event by event.
    """
    rng = np.random.default_rng(seed)
    n = len(samples.target)
    if val_fraction == 0:
        return np.arange(n), np.array([], dtype=int)
    if len(scenes) >= 3:
        events = sorted({sc.event for sc in scenes})
        if per_event and len(events) > 1:
            held = []
            for event in events:
                mine = [i for i, sc in enumerate(scenes) if sc.event == event]
                if len(mine) >= 2:
                    held += list(rng.permutation(mine)[: max(1, round(val_fraction * len(mine)))])
        else:
            held = list(rng.permutation(len(scenes))[: max(1, round(val_fraction * len(scenes)))])
        val = np.isin(samples.scene, held)
        if val.any() and (~val).any():
            return np.flatnonzero(~val), np.flatnonzero(val)
    order = rng.permutation(n)
    cut = max(1, round(val_fraction * n))
    return np.sort(order[cut:]), np.sort(order[:cut])


def class_weights(target: np.ndarray, classes: int, *, ignore: int = IGNORE, cap: float = 10.0) -> np.ndarray:
    """Weights inverse to each class's frequency (mean 1 over the present classes, capped at ``cap``)."""
    counts = np.bincount(target[target != ignore].ravel().astype(np.int64), minlength=classes)[:classes].astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return np.minimum(weights, cap) / max(np.minimum(weights, cap)[present].mean(), 1e-12)


def macro_f1(predicted: np.ndarray, truth: np.ndarray, classes: list[int]) -> float:
    """Mean F1 over the classes present in ``truth``."""
    scores = []
    for c in classes:
        if not (truth == c).any():
            continue
        tp = np.sum((predicted == c) & (truth == c))
        fp = np.sum((predicted == c) & (truth != c))
        fn = np.sum((predicted != c) & (truth == c))
        scores.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(scores)) if scores else 0.0


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
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        with staged_output(out, overwrite=overwrite, kind="train", inputs=inputs) as staging:
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
            with quiet_lightning():
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
                training={"steps": cfg.steps, "best_val": task.best_score, "best_step": task.best_step,
                          "val_metric": task.metric_name, "lr": cfg.lr, "batch_size": cfg.batch_size,
                          "class_weights": task.weights.tolist(), "minutes": round(minutes, 2), "seed": cfg.seed,
                          "harmonise": "none"},
            )
            checkpoint = save_checkpoint(staging / "model.safetensors", model.cpu(), spec)
            with open(staging / "metrics.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["step", task.metric_name, "train_loss"])
                writer.writeheader()
                writer.writerows(task.history)
            (staging / "config_used.yaml").write_text(yaml.safe_dump(_plain(asdict(cfg)), sort_keys=False))
            write_json(staging / "train_record.json", {
                "format": "deltacd-damage-train/1", "started": started_at, **environment(),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"), "config": _plain(asdict(cfg)),
                "spec": {"name": name, "task": spec.task, "gsd_m": spec.gsd_m, "threshold": threshold},
                "data": spec.data, "training": spec.training,
            })
            shutil.rmtree(work)
    finally:
        torch.set_num_threads(threads)
    log.info("trained %s in %.1f min: best %s %.3f", cfg.task, minutes, task.metric_name, task.best_score)
    return DamageTrainResult(out, out / checkpoint.name, task.best_score, cfg.steps, minutes)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's console notices (GPU available, worker tips) are noise in a library call."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _augment(tensors: list, generator) -> list:
    """The same random flips and quarter turn of every tensor [B, ..., H, W] (geometric only)."""
    import torch

    k = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        t = torch.rot90(t, k, dims=(-2, -1))
        out.append(torch.flip(t, dims=(-1,)) if flip else t)
    return out


class DamageTask(L.LightningModule):
    """The Lightning module of a damage training run: loss, validation score and best weights (module notes)."""

    def __init__(self, cfg: DamageTrainConfig, model: torch.nn.Module, samples: Samples, train_idx: np.ndarray,
                 val_idx: np.ndarray, mean: np.ndarray, std: np.ndarray, scene_events: list[str]):
        super().__init__()
        self.cfg, self.samples, self.train_idx, self.val_idx = cfg, samples, train_idx, val_idx
        self.model = model
        self.scene_events = list(scene_events)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        classes = {"damage-classifier": len(GRADES), "damage-segmentation": 1 + len(GRADES)}.get(cfg.task, 2)
        self.weights = class_weights(samples.target[train_idx], classes)
        self.register_buffer("class_weight", torch.tensor(self.weights, dtype=torch.float32))
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.best_score, self.best_state, self.best_step, self.best_threshold = -1.0, None, 0, 0.5
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
            weights = torch.as_tensor(source_weights(events))
            order = {"sampler": WeightedRandomSampler(weights, len(events), replacement=True, generator=generator)}
        return DataLoader(self._dataset(self.train_idx), batch_size=self.cfg.batch_size,
                          drop_last=len(self.train_idx) > self.cfg.batch_size, **order)

    def _val_index(self) -> np.ndarray:
        return self.val_idx if len(self.val_idx) else self.train_idx[: max(1, len(self.train_idx) // 5)]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(self._val_index()), batch_size=self.cfg.batch_size)

    def _forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        before, after, target = batch[:3]
        x, y = (before - self.mean) / self.std, (after - self.mean) / self.std
        if self.cfg.task == "damage-classifier":
            return self.model(x, y, batch[3]), target
        if self.cfg.task == "damage-segmentation":
            return self.model(x, y), target
        return self.model(x), target

    def training_step(self, batch, batch_idx):
        batch = list(batch)
        moved = (0, 1, 3) if self.cfg.task == "damage-classifier" else (0, 1, 2)  # images, mask or pixel target
        for i, t in zip(moved, _augment([batch[i] for i in moved], self.generator), strict=True):
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
        predicted = np.concatenate([p for p, _ in self._val]) if self._val else np.array([])
        truth = np.concatenate([t for _, t in self._val]) if self._val else np.array([])
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
            f1 = [macro_f1((predicted > t).astype(int), truth, [1]) for t in candidates]
            threshold, score = float(candidates[int(np.argmax(f1))]), float(max(f1))
        step = int(self.global_step)
        self.history.append({"step": step, self.metric_name: round(score, 4),
                             "train_loss": round(float(np.mean(self._losses)), 4) if self._losses else None})
        self._losses = []
        if score > self.best_score:
            self.best_score, self.best_step, self.best_threshold = score, step, threshold
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        steps, warmup = self.cfg.steps, max(1, self.cfg.steps // 10)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}}
