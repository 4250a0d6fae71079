"""The base of the Lightning training tasks, :class:`TrainingTask`, and the change task on binary change chips.

:class:`TrainingTask` holds what every deltacd training task shares (normalisation buffers, the
augmentation hook, AdamW over the trainable parameters with the task's learning-rate schedule);
:class:`ChangeDetectionTask` and :class:`deltacd.train.damage.DamageTask` derive from it.

:class:`ChangeDetectionTask` is split like torchgeo's trainers (``torchgeo/trainers/change.py``):
``configure_model()`` builds the network from the registry (and loads the weights to fine-tune
from), ``configure_losses()`` the loss, ``configure_metrics()`` one ``MetricCollection`` cloned
per stage (``train_``, ``val_``, ``test_``), and one ``_shared_step(batch, batch_idx, stage)``
serves training, validation and test.

Data flow of a step
-------------------
``batch["before"]``, ``batch["after"]``: float32 ``[B, C, H, W]`` in raw digital numbers, bands in
the dataset manifest's order; ``batch["label"]``: int64 ``[B, H, W]``, 0 / 1 / ``ignore_index``.

1. normalise per band with the manifest's mean / std, or the pretrained encoder's
   (``normalisation="encoder"``), held in registered buffers, so they move with the module to
   the GPU and are saved with it: ``x = (dn - mean) / std``;
2. training only: augmentation (``deltacd.datasets.augment.PairAugmentation``, built by
   :func:`deltacd.train.augment.build_augmentation`) on the normalised batch, on the device;
3. ``logits = model(before, after)`` ``[B, 1, H, W]``; loss; ``sigmoid`` -> probabilities
   ``[B, H, W]`` for the metrics.

Decision threshold
------------------
During validation the probabilities of changed and unchanged labelled pixels are accumulated
in a :class:`deltacd.metrics.ScoreHistogram` (bins of 0.001); at the end of each
validation epoch the threshold with the best F1 is chosen (never 0, which would call every pixel
changed) and logged as ``val_threshold`` with its F1 ``val_f1_best`` (the score that checkpoints
and early stopping follow). The threshold is a buffer, so a Lightning checkpoint carries the one
of its epoch; test metrics use it.

Adaptation of a pretrained encoder
----------------------------------
``adaptation`` (:mod:`deltacd.train.adaptation`) freezes the encoder, all but its deepest stages,
or adds LoRA adapters, once, in :meth:`ChangeDetectionTask.configure_model`. Frozen modules are
put back in eval mode after every ``train()`` call (Lightning switches the module to eval for
validation and back), so their BatchNorm running statistics never move.
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex, BinaryPrecision, BinaryRecall

from deltacd.errors import InputError
from deltacd.metrics import ScoreHistogram
from deltacd.train.adaptation import (
    ENCODER_PREFIXES,
    AdaptationReport,
    apply_adaptation,
    encoder_normalisation,
    is_pretrained,
    keep_frozen_in_eval,
)
from deltacd.train.augment import build_augmentation
from deltacd.train.losses import build_loss

log = logging.getLogger(__name__)

__all__ = ["ENCODER_PREFIXES", "ChangeDetectionTask", "TrainingTask", "warmup_cosine_factor", "warmup_cosine_schedule"]

#: Learning rate at the start of the warm-up, as a fraction of the peak (LinearLR needs > 0).
WARMUP_START_FACTOR = 0.01

Stage = Literal["train", "val", "test"]


def warmup_cosine_schedule(
    optimizer: Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.01
) -> LRScheduler:
    """Linear warm-up from ``lr / 100`` to ``lr`` over ``warmup_steps``, then cosine decay to
    ``min_lr_ratio * lr`` at ``total_steps`` (Loshchilov & Hutter 2017, arXiv:1608.03983).

    Built from ``torch.optim.lr_scheduler`` (``LinearLR`` then ``CosineAnnealingLR`` chained by
    ``SequentialLR``). A "step" is one ``scheduler.step()`` call: a batch or an epoch, as the caller
    steps it. ``warmup_steps`` is capped at ``total_steps - 1``; 0 gives cosine decay only.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))
    base = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=base * min_lr_ratio)
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=WARMUP_START_FACTOR, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def warmup_cosine_factor(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of each step, for ``LambdaLR``: ``(step + 1) / warmup_steps`` over the
    first ``warmup_steps``, then cosine decay to 0 at ``total_steps`` (held there after).

    A closed form (the damage recipe's schedule); :func:`warmup_cosine_schedule` is the change
    recipe's, from ``lr / 100`` up, and down to a floor of ``min_lr_ratio * lr``.
    """
    warmup_steps = max(1, int(warmup_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))

    return factor


class TrainingTask(L.LightningModule):
    """The base of deltacd's training tasks (:class:`ChangeDetectionTask`, :class:`deltacd.train.damage.DamageTask`).

    What every task shares:

    * ``model``: the registry network being trained (set by the subclass);
    * ``bands`` and the normalisation of raw digital numbers per band, in the buffers ``mean``
      and ``std`` ``[1, C, 1, 1]`` that move with the module to the device and are saved with it
      (:meth:`set_normalisation`, :meth:`normalise`);
    * ``augment``: called on training batches as ``augment(before, after, target)``; None: no
      augmentation (:mod:`deltacd.train.augment`);
    * AdamW over the trainable parameters of ``model`` at :meth:`optimizer_settings`, with the
      learning-rate schedule of :meth:`lr_schedule` (:meth:`configure_optimizers`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.model: nn.Module | None = None
        self.augment: nn.Module | None = None
        self.bands: tuple[str, ...] = ()

    def set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the ``mean`` / ``std`` buffers (raw DN per band): registered on the first call, then replaced in place."""
        for name, values in (("mean", mean), ("std", std)):
            tensor = torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, -1, 1, 1)
            if name in self._buffers:
                getattr(self, name).copy_(tensor)
            else:
                self.register_buffer(name, tensor)

    def normalise(self, dn: Tensor) -> Tensor:
        """Raw digital numbers ``[B, C, H, W]`` -> normalised float32 ``(dn - mean) / std``."""
        if dn.ndim != 4 or dn.shape[1] != self.mean.shape[1]:
            raise InputError(
                f"task: got a batch of shape {tuple(dn.shape)}, expected [B, {self.mean.shape[1]}, H, W] "
                f"with bands {', '.join(self.bands)}"
            )
        return (dn.float() - self.mean) / self.std

    def optimizer_settings(self) -> tuple[float, float]:
        """``(lr, weight_decay)`` of AdamW."""
        raise NotImplementedError

    def lr_schedule(self, optimizer: Optimizer) -> tuple[LRScheduler, Literal["step", "epoch"]]:
        """The learning-rate scheduler of ``optimizer`` and how often it steps."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW on the trainable parameters of ``model``, with :meth:`lr_schedule`."""
        lr, weight_decay = self.optimizer_settings()
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = AdamW(params, lr=lr, weight_decay=weight_decay)
        scheduler, interval = self.lr_schedule(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


class ChangeDetectionTask(TrainingTask):
    """Train a registry model for binary change on normalised before/after chips.

    Parameters
    ----------
    model
        Registry name (``deltacd.models.registry.MODELS``).
    model_kwargs
        Constructor arguments; ``in_channels`` is set to ``len(bands)`` and ``num_classes`` to 1.
    bands, mean, std
        Band names in the order of the batches, and the normalisation per band in raw digital
        numbers (from the dataset manifest).
    loss, pos_weight, dice_weight, gamma
        See :func:`deltacd.train.losses.build_loss`; ``pos_weight`` must already be a number.
    lr, weight_decay, warmup_epochs, min_lr_ratio, lr_interval
        AdamW and :func:`warmup_cosine_schedule`, stepped per batch (``"step"``) or per epoch.
    init_from
        Weights to start from: a deltacd ``.safetensors`` checkpoint of the same architecture
        (its ``kwargs`` are the defaults of ``model_kwargs``), or ``"tinycd:PATH"`` (the authors'
        raw TinyCD state dict, RGB kernels adapted to the band count).
    freeze_encoder
        Old spelling of ``adaptation={"mode": "frozen"}`` (frozen: parameters whose names start
        with one of :data:`ENCODER_PREFIXES`, kept in eval mode).
    adaptation
        ``AdaptationConfig`` fields as a dict (``{"mode": "partial", "trainable_stages": 2}``);
        None: ``"full"``. See :mod:`deltacd.train.adaptation`.
    normalisation
        ``"dataset"``: ``mean``/``std`` as given; ``"encoder"``: the pretrained encoder's own
        (:func:`~deltacd.train.adaptation.encoder_normalisation`; with ``init_from`` a deltacd
        checkpoint whose encoder is rebuilt without pretrained weights, the checkpoint's).
    augment
        ``AugmentConfig`` options for training batches (None: no augmentation).
    ignore_index
        Label value of unlabelled pixels: out of the loss, the metrics and the histogram.
    val_sources
        Names of the sources of the validation chips (batches carry each chip's ``"source"``).
        With two or more, the threshold and the validation F1 that picks the epoch are
        :meth:`best_threshold_per_source`: the F1 of each source at one common threshold,
        averaged, so that the source with most validation pixels cannot choose alone. Empty
        or one source: the pooled F1 (:meth:`best_threshold`).
    """

    def __init__(
        self,
        *,
        model: str,
        model_kwargs: dict[str, Any] | None = None,
        bands: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        loss: Literal["bce_dice", "focal", "bce"] = "bce_dice",
        pos_weight: float = 1.0,
        dice_weight: float = 1.0,
        gamma: float = 2.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        warmup_epochs: int = 1,
        min_lr_ratio: float = 0.01,
        lr_interval: Literal["step", "epoch"] = "step",
        init_from: str | None = None,
        freeze_encoder: bool = False,
        adaptation: dict[str, Any] | None = None,
        normalisation: Literal["dataset", "encoder"] = "dataset",
        augment: dict[str, Any] | None = None,
        ignore_index: int = 255,
        val_sources: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not (len(bands) == len(mean) == len(std)) or not bands:
            raise InputError(f"task: {len(bands)} bands, {len(mean)} means, {len(std)} stds; give one mean and std per band")
        self.save_hyperparameters()
        self.bands = tuple(bands)
        self.set_normalisation(mean, std)
        self.register_buffer("threshold", torch.tensor(0.5))
        self.model_kwargs: dict[str, Any] = {}
        #: What the adaptation did (counts, frozen modules); set by configure_model.
        self.adaptation_report: AdaptationReport | None = None
        self._frozen: tuple[str, ...] = ()
        self._init_spec = None
        self.configure_model()
        if normalisation == "encoder":
            self._use_encoder_normalisation()
        elif normalisation != "dataset":
            raise InputError(f"normalisation: {normalisation!r} is not one of dataset, encoder")
        self.configure_losses()
        self.configure_metrics()
        self.augment = build_augmentation(augment, ignore_index=ignore_index)
        self._val_hist: dict[str, ScoreHistogram] | None = None
        self.val_sources = tuple(sorted(set(val_sources)))
        #: F1 at the chosen threshold on the last validation epoch (NaN when undefined); the
        #: mean over sources when the validation has several.
        self.val_f1_best = math.nan
        #: F1 per validation source at the chosen threshold (last validation epoch).
        self.val_f1_per_source: dict[str, float] = {}

    # -- configuration --------------------------------------------------------------------

    def configure_model(self) -> None:
        """Build the network (once: Lightning calls this hook again at each stage)."""
        if self.model is not None:
            return
        from deltacd.models.registry import CHANGE_MODELS, build_model

        hp = self.hparams
        kwargs = dict(hp.model_kwargs or {})
        state: dict[str, Tensor] | None = None
        if hp.init_from:
            start_kwargs, state = self._initial_weights(hp.init_from, hp.model)
            kwargs = {**start_kwargs, **kwargs}
        kwargs["in_channels"] = len(self.bands)
        if hp.model not in CHANGE_MODELS:
            raise InputError(f"unknown change model {hp.model!r}; available models: {', '.join(sorted(CHANGE_MODELS))} "
                             "(damage networks train with task: damage-classifier / damage-segmentation)")
        accepted = inspect.signature(CHANGE_MODELS[hp.model].__init__).parameters
        if "num_classes" in accepted:
            kwargs["num_classes"] = 1
        if kwargs.get("encoder_spec") and "encoder_bands" in accepted and kwargs.get("encoder_bands") is None:
            # Pretrained first layers are adapted band by band by name (B,G,R,N data gets the R, G,
            # B kernels in its own order); smp's positional rule would read blue with the red kernel.
            kwargs["encoder_bands"] = list(self.bands)
        self.model = build_model(hp.model, **kwargs)
        self.model_kwargs = kwargs
        if state is not None:
            try:
                self.model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                detail = " ".join(str(exc).split())[:200]
                raise InputError(
                    f"init_from: {hp.init_from}: weights do not fit a {hp.model} with {kwargs} ({detail}); "
                    "use the checkpoint's model kwargs"
                ) from exc
            log.info("initialised %s from %s", hp.model, hp.init_from)
        options = self._adaptation_options()
        if options["mode"] != "full" and not hp.init_from and not is_pretrained(self.model, kwargs):
            warnings.warn(
                f"adaptation.mode {options['mode']!r} with a randomly initialised encoder: the frozen part stays random; "
                "give pretrained weights (model.kwargs.encoder_spec / encoder_weights) or use mode 'full'",
                stacklevel=2,
            )
        self.adaptation_report = apply_adaptation(self.model, model_name=hp.model, **options)
        self._frozen = self.adaptation_report.frozen_modules

    def _adaptation_options(self) -> dict[str, Any]:
        """``AdaptationConfig`` values from ``hparams.adaptation`` with ``freeze_encoder`` as its old spelling."""
        from deltacd.config import build_options
        from deltacd.train.config import AdaptationConfig

        hp = self.hparams
        config = build_options(AdaptationConfig, dict(hp.adaptation or {}), source="adaptation")
        if hp.freeze_encoder and config.mode not in ("full", "frozen"):
            raise InputError(
                f"freeze_encoder: true contradicts adaptation.mode {config.mode!r}; remove freeze_encoder"
            )
        mode = "frozen" if hp.freeze_encoder else config.mode
        return {
            "mode": mode,
            "trainable_stages": config.trainable_stages,
            "lora_rank": config.lora_rank,
            "lora_alpha": config.lora_alpha,
            "lora_targets": config.lora_targets,
        }

    def _use_encoder_normalisation(self) -> None:
        """Replace the mean / std buffers by what the pretrained encoder (or the init_from checkpoint) expects."""
        norm = encoder_normalisation(self.model)
        spec = self._init_spec
        if norm is None and spec is not None and tuple(spec.bands) == self.bands:
            # a deltacd checkpoint rebuilds its encoder without the pretrained file: its own
            # normalisation is what its weights expect
            norm = spec.mean, spec.std
        if norm is None:
            raise InputError(
                f"normalisation: 'encoder' but the encoder of {self.hparams.model!r} states no normalisation "
                "(randomly initialised, or not a registry encoder); use normalisation: dataset, or pretrained "
                "weights through model.kwargs.encoder_spec"
            )
        self.set_normalisation(*norm)

    def normalisation_dn(self) -> tuple[list[float], list[float]]:
        """The normalisation in use, ``(mean, std)`` per band in raw DN (what the checkpoint must record)."""
        return [float(v) for v in self.mean.flatten()], [float(v) for v in self.std.flatten()]

    def train(self, mode: bool = True) -> ChangeDetectionTask:
        """``nn.Module.train``, then the adaptation's frozen modules back to eval mode."""
        super().train(mode)
        if mode and self.model is not None:
            keep_frozen_in_eval(self.model, getattr(self, "_frozen", ()))
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning restores captured module modes around validation; keep the frozen ones in eval
        # whatever path set them back
        if self.model is not None:
            keep_frozen_in_eval(self.model, self._frozen)

    def _initial_weights(self, init_from: str, name: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Constructor kwargs and state dict to start from, with the first layer adapted to the bands."""
        from deltacd.train.config import parse_init_from

        kind, path = parse_init_from(init_from)
        n_bands = len(self.bands)
        if kind == "tinycd":
            from deltacd.models.tinycd import adapt_first_conv, load_tinycd_checkpoint

            if name != "tinycd":
                raise InputError(f"init_from: {init_from!r} holds TinyCD weights but the model is {name!r}; set model.name: tinycd")
            tiny = load_tinycd_checkpoint(path)
            state = tiny.state_dict()
            if tiny.in_channels != n_bands:
                state = adapt_first_conv(state, n_bands)
            return {}, state

        from deltacd.models.checkpoint import load_checkpoint

        loaded, spec = load_checkpoint(path)
        self._init_spec = spec
        if spec.name != name:
            raise InputError(f"init_from: {path} is a {spec.name!r} model but model.name is {name!r}; set model.name: {spec.name}")
        state = loaded.state_dict()
        if len(spec.bands) != n_bands:
            if name == "tinycd" and len(spec.bands) == 3:
                from deltacd.models.tinycd import adapt_first_conv

                state = adapt_first_conv(state, n_bands)
            else:
                raise InputError(
                    f"init_from: {path} takes {len(spec.bands)} bands ({', '.join(spec.bands)}) but the dataset has "
                    f"{n_bands} ({', '.join(self.bands)}); fine-tune on a dataset with the same bands"
                )
        elif tuple(spec.bands) != self.bands:
            log.warning("init_from: %s was trained on bands %s, the dataset has %s", path, spec.bands, self.bands)
        kwargs = {k: v for k, v in spec.kwargs.items() if k not in ("in_channels", "num_classes")}
        return kwargs, state

    def configure_losses(self) -> None:
        """The loss of ``hparams.loss`` (see :mod:`deltacd.train.losses`)."""
        hp = self.hparams
        self.criterion = build_loss(
            hp.loss, pos_weight=float(hp.pos_weight), dice_weight=hp.dice_weight, gamma=hp.gamma, ignore_index=hp.ignore_index
        )

    def _metric_collection(self, threshold: float = 0.5) -> MetricCollection:
        kw = {"threshold": threshold, "ignore_index": self.hparams.ignore_index}
        return MetricCollection(
            {
                "f1": BinaryF1Score(**kw),
                "precision": BinaryPrecision(**kw),
                "recall": BinaryRecall(**kw),
                "iou": BinaryJaccardIndex(**kw),
            }
        )

    def configure_metrics(self) -> None:
        """F1, precision, recall, IoU of the change class (threshold 0.5; test: the validation threshold)."""
        metrics = self._metric_collection()
        self.train_metrics = metrics.clone(prefix="train_")
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    def optimizer_settings(self) -> tuple[float, float]:
        return self.hparams.lr, self.hparams.weight_decay

    def lr_schedule(self, optimizer: Optimizer) -> tuple[LRScheduler, Literal["step", "epoch"]]:
        """:func:`warmup_cosine_schedule` over the run, stepped per batch or per epoch (``lr_interval``)."""
        hp = self.hparams
        max_epochs = max(1, int(self.trainer.max_epochs or 1))
        if hp.lr_interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
            warmup = hp.warmup_epochs * max(1, total // max_epochs)
        else:
            total, warmup = max_epochs, hp.warmup_epochs
        scheduler = warmup_cosine_schedule(optimizer, warmup_steps=warmup, total_steps=total, min_lr_ratio=hp.min_lr_ratio)
        return scheduler, hp.lr_interval

    # -- steps ----------------------------------------------------------------------------

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        """Change logits ``[B, 1, H, W]`` for raw-DN images ``[B, C, H, W]`` (normalised here)."""
        return self.model(self.normalise(before), self.normalise(after))

    def _shared_step(self, batch: dict[str, Any], batch_idx: int, stage: Stage) -> Tensor:
        before, after = self.normalise(batch["before"]), self.normalise(batch["after"])
        label = batch["label"].long()
        if stage == "train" and self.augment is not None:
            before, after, label = self.augment(before, after, label)
        logits = self.model(before, after)
        loss = self.criterion(logits, label)
        prob = torch.sigmoid(logits[:, 0].float())
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(prob, label)
        n = label.shape[0]
        self.log(f"{stage}_loss", loss, on_step=stage == "train", on_epoch=True, batch_size=n, sync_dist=stage != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=n)
        if stage == "val" and self._val_hist is not None:
            prob_np, label_np = prob.detach().cpu().numpy(), label.cpu().numpy()
            sources = batch.get("source")
            if len(self._val_hist) > 1 and sources is not None:
                names = np.asarray(sources)
                for name in set(sources):
                    if name in self._val_hist:
                        pick = names == name
                        self._val_hist[name].update(prob_np[pick], label_np[pick])
            else:
                self._val_hist["all"].update(prob_np, label_np)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, batch_idx, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Change probability ``[B, H, W]`` (float32 in 0..1) of a batch of raw-DN chips."""
        return torch.sigmoid(self(batch["before"], batch["after"])[:, 0].float())

    # -- validation threshold --------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        names = self.val_sources if len(self.val_sources) > 1 else ("all",)
        self._val_hist = {name: ScoreHistogram(ignore_value=self.hparams.ignore_index) for name in names}

    def on_validation_epoch_end(self) -> None:
        hists = self._val_hist
        self._val_hist = None
        if hists is None:
            return
        if self.trainer.world_size > 1:
            # every device saw its own share of the validation chips: add the counts (the same
            # sources in the same order on every device, so the collective calls match)
            for hist in hists.values():
                for name in ("pos_hist", "neg_hist"):
                    counts = torch.as_tensor(getattr(hist, name), device=self.device)
                    setattr(hist, name, self.trainer.strategy.reduce(counts, reduce_op="sum").cpu().numpy().astype(np.int64))
        if len(hists) > 1:
            threshold, f1, self.val_f1_per_source = self.best_threshold_per_source(hists)
        else:
            threshold, f1 = self.best_threshold(hists["all"])
        if self.trainer.sanity_checking:
            return
        if math.isnan(f1):
            log.warning("validation has no changed pixel and none was predicted: F1 undefined, threshold kept at %.3f",
                        float(self.threshold))
        else:
            self.threshold.fill_(threshold)
        self.val_f1_best = f1
        # NaN would stop early stopping (check_finite); an undefined F1 ranks as 0
        # identical on every device (the counts were summed); sync_dist only keeps DDP quiet
        self.log("val_f1_best", 0.0 if math.isnan(f1) else f1, sync_dist=True)
        self.log("val_threshold", float(self.threshold), sync_dist=True)

    @staticmethod
    def best_threshold(hist: ScoreHistogram) -> tuple[float, float]:
        """F1-best threshold of a validation histogram and its F1, excluding threshold 0.

        Threshold 0 (the first edge) calls every pixel changed: it can win on a model that has
        not learnt anything yet, and is useless as a decision rule. ``(nan, nan)`` when F1 is
        undefined at every other threshold.
        """
        curve = hist.pr_curve()
        f1 = curve.f1[1:]
        if np.isnan(f1).all():
            return math.nan, math.nan
        i = int(np.nanargmax(f1))
        return float(curve.thresholds[1:][i]), float(f1[i])

    @staticmethod
    def best_threshold_per_source(hists: dict[str, ScoreHistogram]) -> tuple[float, float, dict[str, float]]:
        """The threshold that maximises the mean over sources of each source's F1, that mean, and each F1.

        A source whose F1 is undefined at a threshold (no changed pixel, none predicted) is left
        out of the mean there. Threshold 0 is excluded, as in :meth:`best_threshold`.
        ``(nan, nan, {})`` when the mean is undefined at every threshold.
        """
        curves = {name: hist.pr_curve() for name, hist in hists.items()}
        edges = next(iter(curves.values())).thresholds[1:]
        f1 = np.stack([c.f1[1:] for c in curves.values()])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mean of an all-NaN column
            mean = np.nanmean(f1, axis=0)
        if np.isnan(mean).all():
            return math.nan, math.nan, {}
        i = int(np.nanargmax(mean))
        return float(edges[i]), float(mean[i]), {name: float(c.f1[1:][i]) for name, c in curves.items()}

    def on_test_start(self) -> None:
        # test metrics at the validation-chosen threshold
        self.test_metrics = self._metric_collection(float(self.threshold)).clone(prefix="test_").to(self.device)
