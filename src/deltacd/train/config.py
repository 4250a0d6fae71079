"""Training settings: one validated dataclass that serves the Python API, the CLI and YAML files.

A training run is described by a :class:`TrainConfig`; ``deltacd train CONFIG.yaml`` reads the
YAML file with :func:`load_train_config`, whose keys are exactly the dataclass fields. A typo in
a key, a value of the wrong type or an unknown model name is a one-line
:class:`~deltacd.errors.InputError` naming the setting; a dataset folder or checkpoint that does
not exist is a :class:`~deltacd.errors.MissingInputError`. Nothing is written while validating.

Relative paths (``dataset``, ``init_from``, ``out``) are relative to the current directory.

Example (``examples/train_small.yaml``)::

    dataset: out/datasets/levir_dsifn
    model: {name: fc-siam-diff}
    loss: {kind: bce_dice, pos_weight: auto}
    epochs: 5
    out: out/runs/fc-siam-diff_small

A damage training run (``task: damage-classifier | damage-segmentation | building-localisation``,
:mod:`deltacd.train.damage`) is described by a :class:`DamageTrainConfig` instead, read by
:func:`load_damage_config`; its ``sources`` are scenes with footprints and grades.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from pydantic.dataclasses import dataclass

from deltacd.config import STRICT, build_options, read_yaml
from deltacd.errors import InputError, MissingInputError

if TYPE_CHECKING:
    from deltacd.datasets.manifest import DatasetManifest

__all__ = [
    "DAMAGE_TASKS",
    "AdaptationConfig",
    "BuildingsDamageSource",
    "DamageTrainConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "TrainConfig",
    "XbdDamageSource",
    "load_damage_config",
    "load_train_config",
    "read_manifest",
]


#: Prefix of the authors' raw TinyCD state dicts in ``init_from`` (``"tinycd:PATH"``).
TINYCD_PREFIX = "tinycd:"


@dataclass(frozen=True, config=STRICT)
class ModelConfig:
    """The network to train.

    Attributes
    ----------
    name
        A registered model (``deltacd.models.registry.CHANGE_MODELS``): ``fc-siam-diff``, ``tinycd``, ...
    kwargs
        Constructor arguments. ``in_channels`` defaults to the dataset's band count and
        ``num_classes`` (where the model has it) to 1, binary change.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from deltacd.models.registry import CHANGE_MODELS

        if value not in CHANGE_MODELS:
            raise ValueError(f"unknown model {value!r}; available models: {', '.join(sorted(CHANGE_MODELS))}")
        return value


@dataclass(frozen=True, config=STRICT)
class LossConfig:
    """The loss, chosen for rare change (changed pixels are often 1-10 % of a chip).

    Attributes
    ----------
    kind
        ``"bce_dice"``: binary cross-entropy + ``dice_weight`` x Dice (default; Dice is insensitive
        to the class ratio); ``"focal"``: focal loss (Lin et al. 2017, arXiv:1708.02002);
        ``"bce"``: binary cross-entropy alone.
    pos_weight
        Weight of changed pixels relative to unchanged ones in the cross-entropy (``"auto"``:
        unchanged / changed pixels of the training split, from the manifest's class balance).
        For ``"focal"`` it sets the class weight ``alpha = pos_weight / (1 + pos_weight)``.
    dice_weight
        Weight of the Dice term in ``"bce_dice"``.
    gamma
        Focusing exponent of the focal loss (0 turns it into weighted cross-entropy).
    """

    kind: Literal["bce_dice", "focal", "bce"] = "bce_dice"
    pos_weight: float | str = 1.0
    dice_weight: NonNegativeFloat = 1.0
    gamma: NonNegativeFloat = 2.0

    @field_validator("pos_weight", mode="before")
    @classmethod
    def _positive_or_auto(cls, value: Any) -> float | str:
        if value == "auto":
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
            raise ValueError("expected a positive number or 'auto'")
        return number


@dataclass(frozen=True, config=STRICT)
class OptimizerConfig:
    """AdamW with a linear warm-up then cosine decay of the learning rate.

    Attributes
    ----------
    lr
        Peak learning rate, reached at the end of the warm-up.
    weight_decay
        Decoupled weight decay of AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101).
    warmup_epochs
        Epochs of linear warm-up from ``lr / 100``; then cosine decay to ``min_lr_ratio * lr`` at
        the last epoch.
    min_lr_ratio
        Final learning rate as a fraction of ``lr``.
    interval
        ``"step"`` updates the learning rate after every batch (smooth, the default), ``"epoch"``
        after every epoch.
    """

    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-2
    warmup_epochs: NonNegativeInt = 1
    min_lr_ratio: NonNegativeFloat = 0.01
    interval: Literal["step", "epoch"] = "step"


@dataclass(frozen=True, config=STRICT)
class AdaptationConfig:
    """Which parameters of a (pretrained) encoder train; see :mod:`deltacd.train.adaptation`.

    Attributes
    ----------
    mode
        ``"full"``: every parameter trains (default). ``"frozen"``: the encoder is frozen (no
        gradient, and kept in eval mode so its BatchNorm statistics do not drift); the
        bi-temporal fusion, the decoder and the head train, plus the randomly initialised
        simple feature pyramid of ViT encoders. ``"partial"``: only the deepest
        ``trainable_stages`` encoder stages train, plus the decoder and head. ``"lora"``:
        low-rank adapters (Hu et al. 2021, arXiv:2106.09685) on the attention layers of a ViT
        encoder train, its other weights stay frozen; the adapters are merged into the weights
        before the model is saved.
    trainable_stages
        ``"partial"``: number of encoder stages that train, counted from the deepest (1: only
        the stride-32 stage of a CNN, or the last transformer block of a ViT).
    lora_rank, lora_alpha
        ``"lora"``: rank ``r`` of the adapters and their scale numerator (the update is
        ``(lora_alpha / r) B A``).
    lora_targets
        ``"lora"``: names (suffixes) of the layers that get adapters; default
        ``["attn.qkv", "attn.proj"]`` (timm ViT attention projections).
    """

    mode: Literal["full", "frozen", "partial", "lora"] = "full"
    trainable_stages: PositiveInt = 1
    lora_rank: PositiveInt = 8
    lora_alpha: PositiveInt = 16
    lora_targets: list[str] | None = None


@dataclass(frozen=True, config=STRICT)
class TrainConfig:
    """Everything :func:`deltacd.train.train` can be told.

    Attributes
    ----------
    dataset
        Folder written by ``deltacd prepare-dataset`` (``manifest.json``, ``chips.csv``, ``A/``,
        ``B/``, ``label/``).
    model
        :class:`ModelConfig`, e.g. ``{"name": "fc-siam-diff"}``.
    out
        Output folder of the run (must not exist unless overwriting).
    init_from
        Start from these weights (fine-tuning): a deltacd ``.safetensors`` checkpoint of the same
        architecture, or ``"tinycd:PATH"`` for the authors' raw TinyCD state dict (its 3 RGB
        bands are adapted to the dataset's band count).
    loss, optimizer
        :class:`LossConfig`, :class:`OptimizerConfig`.
    epochs
        Maximum number of epochs.
    batch_size
        Chips per batch (per device).
    early_stopping_patience
        Stop after this many epochs without a better validation F1 (``None``: never).
    seed
        Seed of every random choice (initialisation, shuffling, augmentation, chip subset).
    precision
        ``"32"``, ``"16-mixed"`` (GPU) or ``"bf16-mixed"``.
    accelerator, devices
        Passed to the Lightning Trainer: ``"auto"`` uses a GPU when one is present; ``devices``
        is a count, a list of GPU indices or ``"auto"`` (several GPUs train with DDP).
    strategy, num_nodes
        Lightning's distribution strategy (``"auto"``: DDP when ``devices`` > 1, on GPUs with NCCL,
        on CPUs with gloo) and the number of machines (each started with the same command and
        Lightning's ``MASTER_ADDR``/``NODE_RANK`` variables). Batch size is per device: the
        effective batch is ``batch_size * devices * num_nodes``. Validation counts are summed
        over devices, so the threshold and F1 are those of the whole validation split.
    num_workers
        Data-loading processes.
    num_threads
        CPU threads of torch (default: torch's own choice).
    augment
        Options of ``deltacd.datasets.augment.AugmentConfig`` (``{}``: its defaults; ``None``: no
        augmentation). Augmentation is applied to training batches only.
    crop_size
        Train on a random window of this many px of each chip (new offsets every epoch; the same
        window in both dates and the label); None: whole chips. Validation and test use whole chips.
    balance_sources
        Draw training chips so that every source of the dataset (``chips.csv`` ``source_name``)
        gets the same share of each epoch, whatever its chip count (with replacement); False: a
        plain shuffle. No effect with one source.
    source_shares
        Source name -> relative share for ``balance_sources`` (default: equal).
    validation
        ``"per_source"``: the F1 that picks the epoch and the threshold is each validation
        source's F1 at a common threshold, averaged over sources; ``"pooled"``: the F1 of all
        validation pixels together (the source with most pixels decides).
    max_train_chips
        Use only this many training chips (the first after a seeded shuffle), for few-label
        experiments.
    adaptation
        :class:`AdaptationConfig`: which encoder parameters train (``{"mode": "frozen"}``,
        ``{"mode": "partial", "trainable_stages": 2}``, ``{"mode": "lora", "lora_rank": 8}``).
    normalisation
        ``"dataset"``: per-band mean / std of the training chips (the manifest), default.
        ``"encoder"``: what the pretrained encoder's weights expect (e.g. ``(dn - 127) / 128`` for
        EfficientNet-Lite0), mapped to the dataset's bands; only for an encoder that states it
        (pretrained weights). See :mod:`deltacd.train.adaptation` for the trade-off.
    freeze_encoder
        Kept for older configurations: ``true`` is ``adaptation: {mode: frozen}``.
    start
        A starting point by name (:mod:`deltacd.train.recipes`: ``imagenet``, ``scratch``,
        ``tinycd-levir:PATH``, ``checkpoint:PATH`` ...) that fills ``model``, ``init_from`` and
        ``normalisation`` when they are not given; with neither ``model`` nor ``start``,
        ``imagenet`` (EfficientNet-Lite0 ImageNet siamese U-Net).
    """

    dataset: Path
    model: ModelConfig
    out: Path
    init_from: str | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    epochs: PositiveInt = 50
    batch_size: PositiveInt = 8
    early_stopping_patience: PositiveInt | None = 10
    seed: int = 0
    precision: Literal["32", "16-mixed", "bf16-mixed"] = "32"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: PositiveInt | list[NonNegativeInt] | Literal["auto"] = 1
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp"] = "auto"
    num_nodes: PositiveInt = 1
    num_workers: NonNegativeInt = 2
    num_threads: PositiveInt | None = None
    augment: dict[str, Any] | None = field(default_factory=dict)
    crop_size: PositiveInt | None = None
    balance_sources: bool = True
    source_shares: dict[str, PositiveFloat] | None = None
    validation: Literal["per_source", "pooled"] = "per_source"
    max_train_chips: PositiveInt | None = None
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    normalisation: Literal["dataset", "encoder"] = "dataset"
    freeze_encoder: bool = False
    start: str | None = None

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` as an integer; Lightning's own spelling is the string.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready values (paths as strings)."""
        return json.loads(json.dumps(asdict(self), default=str))


def read_manifest(dataset: str | Path) -> DatasetManifest:
    """The manifest of a dataset folder (:func:`deltacd.datasets.manifest.load_manifest`), checked for training.

    Raises
    ------
    MissingInputError
        The folder or its manifest does not exist.
    InputError
        The manifest is unreadable, of another format, or its labels are not binary change.
    """
    from deltacd.datasets.manifest import load_manifest

    root = Path(dataset)
    if not root.is_dir():
        raise MissingInputError(f"dataset: folder {root} does not exist; make one with `deltacd prepare-dataset` or fix the path")
    try:
        manifest = load_manifest(root)
    except (MissingInputError, InputError) as exc:
        raise type(exc)(f"dataset: {exc}") from None
    if manifest.label_kind != "binary":
        raise InputError(
            f"dataset: {root} has label_kind {manifest.label_kind!r}; deltacd train handles binary change labels only"
        )
    return manifest


def resolve_adaptation(config: TrainConfig) -> AdaptationConfig:
    """The adaptation to apply: ``config.adaptation``, with ``freeze_encoder: true`` read as mode ``"frozen"``.

    Raises
    ------
    InputError
        ``freeze_encoder: true`` together with mode ``"partial"`` or ``"lora"``.
    """
    adaptation = config.adaptation
    if not config.freeze_encoder or adaptation.mode == "frozen":
        return adaptation
    if adaptation.mode != "full":
        raise InputError(
            f"freeze_encoder: true contradicts adaptation.mode {adaptation.mode!r}; remove freeze_encoder "
            "(it is the old spelling of adaptation: {mode: frozen})"
        )
    return AdaptationConfig(**{**asdict(adaptation), "mode": "frozen"})


def parse_init_from(value: str) -> tuple[Literal["deltacd", "tinycd"], Path]:
    """Split ``init_from`` into its kind and path: ``"tinycd:PATH"`` or a deltacd checkpoint path."""
    if value.startswith(TINYCD_PREFIX):
        return "tinycd", Path(value[len(TINYCD_PREFIX) :])
    return "deltacd", Path(value)


def check_config(config: TrainConfig) -> TrainConfig:
    """Check what validation of the values alone cannot: files exist, the dataset is readable.

    Raises :class:`MissingInputError` / :class:`InputError` (one line, naming the setting).
    """
    bands = read_manifest(config.dataset).bands
    resolve_adaptation(config)
    in_channels = config.model.kwargs.get("in_channels")
    if in_channels is not None and in_channels != len(bands):
        raise InputError(
            f"model.kwargs.in_channels: got {in_channels!r} but the dataset has {len(bands)} bands ({', '.join(bands)}); "
            "leave in_channels out, it follows the dataset"
        )
    if config.init_from is not None:
        kind, path = parse_init_from(config.init_from)
        if not path.is_file():
            raise MissingInputError(f"init_from: {path} does not exist; give a deltacd .safetensors model or tinycd:PATH")
        if kind == "tinycd" and config.model.name != "tinycd":
            raise InputError(
                f"init_from: {config.init_from!r} holds TinyCD weights but model.name is {config.model.name!r}; set model.name: tinycd"
            )
    if config.augment is not None:
        from deltacd.datasets.augment import AugmentConfig

        build_options(AugmentConfig, dict(config.augment), source="augment")
    num_classes = config.model.kwargs.get("num_classes")
    if num_classes not in (None, 1):
        raise InputError(f"model.kwargs.num_classes: got {num_classes!r}; binary change training needs 1 (or leave it out)")
    return config


def load_train_config(source: str | Path | dict[str, Any] | TrainConfig) -> TrainConfig:
    """Validate a training configuration from a YAML file, a dict or a :class:`TrainConfig`.

    Parameters
    ----------
    source
        Path of a YAML file whose keys are :class:`TrainConfig` fields, or those values as a dict.

    Returns
    -------
    TrainConfig

    Raises
    ------
    InputError
        Unknown key, wrong value, unknown model (the message names the setting and lists the
        accepted values), unreadable YAML or manifest.
    MissingInputError
        The YAML file, the dataset folder or ``init_from`` does not exist.
    """
    if isinstance(source, TrainConfig):
        return check_config(source)
    where = "train config"
    if isinstance(source, (str, Path)):
        values = read_yaml(source, what="training config file")
        where = str(source)
    else:
        values = source
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping of settings (key: value); got {type(values).__name__}")
    from deltacd.train.recipes import expand_start

    return check_config(build_options(TrainConfig, expand_start(values, where), source=where))


# --- damage training ------------------------------------------------------------------------

#: The tasks of a damage training run (``task:`` key); any other config is a change training.
DAMAGE_TASKS = ("damage-classifier", "damage-segmentation", "building-localisation")


@dataclass(frozen=True, config=STRICT, kw_only=True)
class XbdDamageSource:
    """An xBD-style folder of tiles; ``event`` names it in splits and records (default: from the tile ids)."""

    kind: Literal["xbd"] = "xbd"
    path: Path
    event: str | None = None
    glob: str | None = None


@dataclass(frozen=True, config=STRICT, kw_only=True)
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


@dataclass(frozen=True, config=STRICT, kw_only=True)
class DamageTrainConfig:
    """Settings of a damage training run (:mod:`deltacd.train.damage`); every field has a working default but ``task``, ``sources``, ``out``."""

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
