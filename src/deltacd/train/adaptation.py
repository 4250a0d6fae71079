"""How much of a pretrained encoder trains: full fine-tuning, frozen, the deepest stages, or LoRA adapters.

:func:`apply_adaptation` sets ``requires_grad`` on a freshly built network (and, for LoRA, injects
the adapters) according to one of four modes; :class:`~deltacd.train.module.ChangeDetectionTask`
calls it and keeps the frozen parts in eval mode; :func:`merge_lora` folds the adapters back into
plain weights before the model is saved, so the checkpoint rebuilds without peft.

Modes
-----
``"full"``
    Every parameter trains (the default, and what training from scratch needs).
``"frozen"``
    The encoder's parameters (names starting with :data:`ENCODER_PREFIXES`) get no gradient
    and the encoder stays in **eval mode** during training: its BatchNorm layers keep the
    pretrained running statistics instead of drifting towards the statistics of the training
    batches (which would change what the frozen filters compute, although no weight is
    trained), and dropout / drop-path in it are off. What trains is the "light bi-temporal
    head": the per-scale fusion (``fuse``), the U-Net decoder and the segmentation head.
    Exception: the simple feature pyramid of a ViT encoder (``encoder.pyramid``) is randomly
    initialised even when the ViT is pretrained, so it always trains; only ``encoder.model``
    (the ViT itself) is frozen.
``"partial"``
    Only the deepest ``trainable_stages`` encoder stages train, plus the decoder and head; the
    shallower stages are frozen and kept in eval mode as above. Rationale: early layers hold
    generic edge / texture filters that transfer across sensors, deep layers hold
    task-specific semantics (Yosinski et al. 2014, arXiv:1411.1792).
``"lora"``
    Low-rank adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
    arXiv:2106.09685) are injected with peft (``peft.inject_adapter_in_model``) into the
    attention projections of a ViT encoder (``attn.qkv``, ``attn.proj`` by default): each
    adapted linear layer computes ``W x + (alpha / r) B A x`` with ``A`` [r x in], ``B`` [out x r]
    (``B`` starts at zero, so training starts from the pretrained network). The ViT's own
    weights are frozen; the adapters, the pyramid, the fusion, the decoder and the head train.
    Only ViT encoders (:class:`~deltacd.models.encoders.vit_pyramid.ViTPyramidEncoder`) are
    accepted: for CNNs use ``"partial"`` or ``"frozen"``.

What a "stage" is (``"partial"``)
---------------------------------
Defined from the encoder contract, so it holds for smp encoders (``encoder_name``) and the
registry's (``encoder_spec``) alike, without a table per architecture:

* **CNN encoders** (any module following smp's contract, ``forward(x) -> [x, f2, f4, f8, f16,
  f32]``): a parameter belongs to the stage of the *shallowest feature map that depends on
  it*. This is found once, structurally, by one forward pass of a small random input and the
  autograd graph (``torch.autograd.grad(..., allow_unused=True)``: a parameter that does not
  reach a map gets ``None``, whatever its value). Stage "stride 32" is then exactly what turns
  the stride-16 map into the stride-32 map (ResNet ``layer4``, EfficientNet-Lite0
  ``blocks.5`` and ``blocks.6``), stage "stride 16" what turns f8 into f16, and so on: the
  encoder's own choice of feature maps defines its stages. Parameters that reach no map (a head
  the encoder keeps but never uses) stay frozen in ``"partial"``.
* **ViT encoders**: every feature map of the pyramid comes from the last block's tokens, so
  the rule above would put the whole ViT in one stage. Stages are the transformer blocks
  instead: ``trainable_stages = k`` trains the last ``k`` blocks and the final LayerNorm (the
  pyramid always trains).

Other architectures (fc-*, bit, tinycd) have an ``encoder``/``backbone`` but no such contract:
they accept ``"full"`` and ``"frozen"`` only.

Normalisation with a pretrained encoder (``TrainConfig.normalisation``)
-----------------------------------------------------------------------
``"dataset"`` (default) standardises each band with the training chips' mean and std (the
dataset manifest). ``"encoder"`` uses what the weights were trained on,
:meth:`~deltacd.models.encoders.registry.Encoder.normalisation_dn` mapped to the dataset's
bands (``N`` and ``PAN`` get the mean of the RGB statistics, see
:mod:`deltacd.models.encoders.weights`), e.g. ``(dn - 127) / 128`` for EfficientNet-Lite0.

Trade-off: the encoder's normalisation is exact only for data in the weights' units. For 8-bit
RGB imagery (Google Earth, LEVIR-CD, xBD) it reproduces the pretraining inputs, colours and
contrast included, which is what a frozen encoder needs. For 12-bit Pléiades DN (0-4095, mean
around 300-600 depending on the band) the 8-bit formula gives inputs of several units where
the filters expect roughly -1..1: the pretrained filters are then far outside their range, and
a frozen encoder in particular cannot compensate. Dataset statistics put every band at mean 0,
std 1 whatever the sensor, which is also the scale ImageNet-normalised inputs have, at the
cost of per-band contrast and colour balance that differ from the pretraining data (the first
layers adapt to it in ``"full"``/``"partial"`` fine-tuning). Use ``"encoder"`` for 8-bit data
in the weights' units, ``"dataset"`` otherwise; :func:`deltacd.train.train` warns when the
dataset's means lie more than 3 encoder standard deviations from the encoder's.

Checkpoints
-----------
The saved model is always a plain network of the registry: LoRA adapters are merged into the
weights first (:func:`merge_lora`), and :func:`deltacd.models.checkpoint.offline_kwargs` stores
``encoder_weights="random"`` (registry encoders) or ``None`` (smp encoders), because the trained
weights are in the checkpoint and rebuilding must not need the pretrained file (or a download).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from deltacd.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "ENCODER_PREFIXES",
    "AdaptationMode",
    "AdaptationReport",
    "apply_adaptation",
    "encoder_normalisation",
    "encoder_stages",
    "frozen_modules",
    "is_pretrained",
    "merge_lora",
]

AdaptationMode = Literal["full", "frozen", "partial", "lora"]

#: Parameter-name prefixes of the encoder of each registered family (fc-*, siamese-unet: ``encoder``;
#: bit: ``backbone``; tinycd: ``_backbone``).
ENCODER_PREFIXES: tuple[str, ...] = ("encoder.", "backbone.", "_backbone.")

#: Layers of a timm ViT that get LoRA adapters by default: the attention input (q, k, v in one
#: linear layer) and output projections, as in Hu et al. (2021), who adapt attention weights only.
DEFAULT_LORA_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj")

#: Feature-map levels of the smp encoder contract: map ``i`` has stride ``2**i``.
_MAX_LEVEL = 5


@dataclass(frozen=True)
class AdaptationReport:
    """What :func:`apply_adaptation` did, for the training record.

    Attributes
    ----------
    mode, trainable_stages
        The mode applied (``trainable_stages`` only meaningful for ``"partial"``).
    stages
        Names of the encoder stages, shallowest first (``"stride 4"``, ``"block 11"``); empty
        unless the mode needed them.
    trainable_parameters, total_parameters
        Parameter counts of the whole network after adaptation (LoRA adapters included).
    encoder_trainable, encoder_total
        The same for the encoder alone.
    frozen_modules
        Names of the largest submodules whose parameters are all frozen: they are kept in eval mode.
    lora_layers
        Number of layers that received LoRA adapters.
    """

    mode: str
    trainable_stages: int | None = None
    stages: tuple[str, ...] = ()
    trainable_parameters: int = 0
    total_parameters: int = 0
    encoder_trainable: int = 0
    encoder_total: int = 0
    frozen_modules: tuple[str, ...] = field(default=(), repr=False)
    lora_layers: int = 0

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["stages"] = list(self.stages)
        values["frozen_modules"] = list(self.frozen_modules)
        values["trainable_fraction"] = (
            round(self.trainable_parameters / self.total_parameters, 6) if self.total_parameters else None
        )
        return values


# ---------------------------------------------------------------------------------------------
# Finding the encoder and its stages
# ---------------------------------------------------------------------------------------------


def _vit_pyramid_class() -> type[nn.Module]:
    from deltacd.models.encoders.vit_pyramid import ViTPyramidEncoder

    return ViTPyramidEncoder


def _contract_encoder(model: nn.Module, *, mode: str, model_name: str) -> nn.Module:
    """``model.encoder`` when it follows smp's multi-scale contract; an :class:`InputError` otherwise."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module) or not hasattr(encoder, "out_channels"):
        raise InputError(
            f"adaptation.mode: {mode!r} needs a model whose encoder gives multi-scale features (siamese-unet); "
            f"model {model_name!r} has none; use mode 'frozen' or 'full'"
        )
    return encoder


def _is_vit(encoder: nn.Module) -> bool:
    return isinstance(encoder, _vit_pyramid_class())


def _always_trainable(model: nn.Module) -> tuple[str, ...]:
    """Prefixes of encoder parts that are randomly initialised even with pretrained weights (a ViT's pyramid)."""
    encoder = getattr(model, "encoder", None)
    return ("encoder.pyramid.",) if encoder is not None and _is_vit(encoder) else ()


def encoder_stages(encoder: nn.Module) -> list[tuple[str, list[str]]]:
    """The stages of a multi-scale encoder, shallowest first, as ``(label, parameter names)``.

    Parameter names are relative to ``encoder``. CNNs: one stage per feature-map stride, a
    parameter in the stage of the shallowest map that depends on it (see the module notes);
    labels ``"stride 2"`` ... ``"stride 32"``. ViT pyramids: one stage per transformer block,
    labels ``"block 0"`` ...; the final LayerNorm belongs to the last block's stage and the
    pyramid to none (it always trains). Parameters in no stage are not listed.

    Cost: one forward and up to five backward passes of a ``[1, C, 2s, 2s]`` random input
    (``s`` the encoder's output stride), in eval mode (BatchNorm statistics are not touched).
    """
    if _is_vit(encoder):
        blocks = encoder.model.blocks
        stages = [(f"block {i}", [f"model.blocks.{i}.{n}" for n, _ in block.named_parameters()]) for i, block in enumerate(blocks)]
        norm = getattr(encoder.model, "norm", None)
        if stages and isinstance(norm, nn.Module):
            stages[-1][1].extend(f"model.norm.{n}" for n, _ in norm.named_parameters())
        return stages
    named = [(n, p) for n, p in encoder.named_parameters()]
    if not named:
        return []
    stride = int(getattr(encoder, "output_stride", 2**_MAX_LEVEL))
    first = next(iter(encoder.parameters()))
    probe = torch.randn(1, int(encoder.out_channels[0]), 2 * stride, 2 * stride, device=first.device, dtype=first.dtype)
    training = encoder.training
    flags = [p.requires_grad for _, p in named]
    level_of: dict[str, int] = {}
    try:
        encoder.eval()
        for _, p in named:
            p.requires_grad_(True)
        with torch.enable_grad():
            features = encoder(probe)
            for level in range(len(features) - 1, 0, -1):  # deepest first: shallower levels overwrite
                feature = features[level]
                if feature.numel() == 0 or not feature.requires_grad:
                    continue
                grads = torch.autograd.grad(feature.sum(), [p for _, p in named], allow_unused=True, retain_graph=True)
                for (name, _), grad in zip(named, grads, strict=True):
                    if grad is not None:
                        level_of[name] = level
    finally:
        for (_, p), flag in zip(named, flags, strict=True):
            p.requires_grad_(flag)
        encoder.train(training)
    levels = sorted(set(level_of.values()))
    return [(f"stride {2**level}", [n for n, _ in named if level_of.get(n) == level]) for level in levels]


def frozen_modules(model: nn.Module, prefixes: Sequence[str] = ENCODER_PREFIXES) -> list[str]:
    """Names of the largest submodules under ``prefixes`` that have parameters, all frozen."""
    found: list[str] = []
    for name, module in model.named_modules():
        if not name or not f"{name}.".startswith(tuple(prefixes)):
            continue
        if any(name.startswith(f"{parent}.") for parent in found):
            continue
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(name)
    return found


def keep_frozen_in_eval(model: nn.Module, names: Sequence[str]) -> None:
    """Put the modules ``names`` of ``model`` in eval mode (missing names, e.g. merged LoRA layers, are skipped)."""
    for name in names:
        try:
            model.get_submodule(name).eval()
        except AttributeError:
            continue


# ---------------------------------------------------------------------------------------------
# Applying a mode
# ---------------------------------------------------------------------------------------------


def _inject_lora(encoder: nn.Module, *, rank: int, alpha: int, targets: Sequence[str]) -> int:
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(r=int(rank), lora_alpha=int(alpha), target_modules=list(targets), lora_dropout=0.0, bias="none")
    try:
        inject_adapter_in_model(config, encoder.model)
    except ValueError as exc:  # peft's NoMatchingPeftModuleError is a ValueError
        example = next((n for n, m in encoder.model.named_modules() if isinstance(m, nn.Linear)), "?")
        raise InputError(
            f"adaptation.lora_targets: {list(targets)} match no layer of the ViT ({' '.join(str(exc).split())[:120]}); "
            f"give layer-name suffixes such as 'attn.qkv' (linear layers are named like {example!r})"
        ) from exc
    return sum(isinstance(m, LoraLayer) for m in encoder.model.modules())


def apply_adaptation(
    model: nn.Module,
    *,
    mode: AdaptationMode = "full",
    trainable_stages: int = 1,
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_targets: Sequence[str] | None = None,
    model_name: str = "model",
) -> AdaptationReport:
    """Freeze / adapt ``model`` in place for ``mode`` (see the module notes) and report what trains.

    Parameters
    ----------
    model
        A freshly built registry network (all parameters trainable).
    mode, trainable_stages, lora_rank, lora_alpha, lora_targets
        As :class:`~deltacd.train.config.AdaptationConfig`.
    model_name
        Registry name, for messages.

    Returns
    -------
    AdaptationReport
        Frozen modules are already in eval mode; keep them there with :func:`keep_frozen_in_eval`
        after every ``model.train()``.

    Raises
    ------
    InputError
        Unknown mode; ``"frozen"`` on a model without encoder; ``"partial"`` on a model without
        multi-scale encoder or with fewer stages than ``trainable_stages``; ``"lora"`` on a
        non-ViT encoder, or targets that match no layer.
    """
    if mode not in get_args(AdaptationMode):
        raise InputError(f"adaptation.mode: {mode!r} is not one of {', '.join(get_args(AdaptationMode))}")
    keep = _always_trainable(model)

    def kept(name: str) -> bool:
        return bool(keep) and name.startswith(keep)

    stages: list[str] = []
    lora_layers = 0
    freeze: set[str] = set()
    if mode == "frozen":
        freeze = {n for n, _ in model.named_parameters() if n.startswith(ENCODER_PREFIXES) and not kept(n)}
        if not freeze:
            raise InputError(
                f"adaptation.mode: 'frozen' but model {model_name!r} has no parameters named "
                f"{', '.join(p + '*' for p in ENCODER_PREFIXES)}; use mode 'full'"
            )
    elif mode == "partial":
        encoder = _contract_encoder(model, mode=mode, model_name=model_name)
        found = encoder_stages(encoder)
        stages = [label for label, _ in found]
        if trainable_stages > len(found):
            raise InputError(
                f"adaptation.trainable_stages: {trainable_stages} but the encoder of {model_name!r} has {len(found)} stages "
                f"({', '.join(stages)}); use at most {len(found)}, or mode 'full'"
            )
        train_names = {f"encoder.{n}" for _, names in found[len(found) - trainable_stages :] for n in names}
        freeze = {
            n for n, _ in model.named_parameters()
            if n.startswith("encoder.") and n not in train_names and not kept(n)
        }
    elif mode == "lora":
        encoder = _contract_encoder(model, mode=mode, model_name=model_name)
        if not _is_vit(encoder):
            raise InputError(
                f"adaptation.mode: 'lora' needs a ViT encoder but {model_name!r} has a CNN encoder "
                f"({getattr(encoder, 'spec', '') or type(encoder).__name__}); use mode 'partial' or 'frozen', "
                "or model.kwargs.encoder_spec: timm:vit_* / a torchgeo ViT"
            )
        lora_layers = _inject_lora(
            encoder, rank=lora_rank, alpha=lora_alpha, targets=tuple(lora_targets or DEFAULT_LORA_TARGETS)
        )
        freeze = {n for n, _ in model.named_parameters() if n.startswith("encoder.model.") and ".lora_" not in n}
    for name, parameter in model.named_parameters():
        if name in freeze:
            parameter.requires_grad_(False)
        elif mode == "lora" and ".lora_" in name:
            parameter.requires_grad_(True)
    frozen = frozen_modules(model)
    keep_frozen_in_eval(model, frozen)
    params = list(model.named_parameters())
    encoder_params = [p for n, p in params if n.startswith(ENCODER_PREFIXES)]
    report = AdaptationReport(
        mode=mode,
        trainable_stages=int(trainable_stages) if mode == "partial" else None,
        stages=tuple(stages),
        trainable_parameters=sum(p.numel() for _, p in params if p.requires_grad),
        total_parameters=sum(p.numel() for _, p in params),
        encoder_trainable=sum(p.numel() for p in encoder_params if p.requires_grad),
        encoder_total=sum(p.numel() for p in encoder_params),
        frozen_modules=tuple(frozen),
        lora_layers=lora_layers,
    )
    log.info(
        "adaptation %s: %d of %d parameters train (encoder %d of %d)",
        mode, report.trainable_parameters, report.total_parameters, report.encoder_trainable, report.encoder_total,
    )
    return report


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA adapter of ``model`` into its base layer and put the plain layer back, in place.

    After this the network has exactly the parameter names and shapes of the architecture
    without adapters (``W <- W + (alpha / r) B A``), so it saves and rebuilds as a plain registry
    model. Returns the number of layers merged (0 when there is none).
    """
    if not any(type(m).__module__.startswith("peft.") for m in model.modules()):
        return 0  # importing peft (and transformers with it) takes seconds: only when adapters exist
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
        merged += 1
    return merged


# ---------------------------------------------------------------------------------------------
# Checkpoints and normalisation
# ---------------------------------------------------------------------------------------------


def is_pretrained(model: nn.Module, kwargs: dict[str, Any]) -> bool:
    """Whether the encoder starts from pretrained weights (registry attribute, or smp ``encoder_weights``)."""
    encoder = getattr(model, "encoder", None)
    weights = getattr(encoder, "weights", None)
    if isinstance(weights, str) and getattr(encoder, "spec", ""):
        return weights != "random"
    return kwargs.get("encoder_weights") not in (None, "random")


def encoder_normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` per input band in raw DN that the model's encoder expects, or None if it states none."""
    encoder = getattr(model, "encoder", None)
    method = getattr(encoder, "normalisation_dn", None)
    return method() if callable(method) else None
