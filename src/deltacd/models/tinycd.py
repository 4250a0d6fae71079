"""TinyCD: a small siamese change-detection network that loads the authors' LEVIR-CD / WHU-CD weights.

Our own implementation of the model in Codegoni, Lombardi, Ferrari, "TINYCD: A (Not So) Deep
Learning Model For Change Detection", arXiv:2207.13159 (2022). Sub-module attribute names follow
the authors' ``ChangeClassifier`` (GitHub AndreaCodegoni/Tiny_model_4_CD, ``models/``) so that
their published state dicts (``levir_best.pth``, ``whu_best.pth``) load with
``load_state_dict(sd, strict=True)``: every key matched, none left over.

Architecture
------------
* ``_backbone``: torchvision ``efficientnet_b4(weights=None).features[0:4]`` (stem + first three
  MBConv stages), shared by both dates. Feature maps for an input of ``H x W``: 48 ch at
  ``H/2``, 24 ch at ``H/2``, 32 ch at ``H/4``, 56 ch at ``H/8`` (each ``/`` rounds up).
* ``_first_mix`` and ``_mixing_mask[0:2]``: "mix and attention" blocks. The before/after channels
  are interleaved (``b0, a0, b1, a1, ...``) and a grouped 3x3 conv sees one band pair per group,
  then a pixel-wise MLP squeezes the result to a 1-channel spatial mask (full, 1/2, 1/4 res).
* ``_mixing_mask[2]``: the same pair mixing on the deepest features, kept at 56 channels.
* ``_up``: three decoder steps; bilinear upsampling (``align_corners=True``) to the next finer
  mask's size, multiplication by that mask, then a depthwise-separable conv with PReLU and
  InstanceNorm.
* ``_classify``: pixel-wise MLP 32 -> 16 -> 8 -> 1.

Tensors
-------
Inputs ``before`` and ``after``: float32 ``[B, C, H, W]``, already normalised (for the pretrained
RGB weights see :data:`TINYCD_IMAGENET_NORMALISATION`; :func:`normalise_rgb8` applies it).
Output: float32 change **logits** ``[B, 1, H, W]``. The authors end the network with a
``Sigmoid`` that has no parameters; it is left out here (so that training can use
``BCEWithLogitsLoss``, which is numerically safer) and ``torch.sigmoid(logits)`` gives exactly
their change probability. Their evaluation thresholds the probability at 0.5, i.e. ``logits > 0``.
``H`` and ``W`` may be any size of at least :data:`MIN_SIDE` pixels; they need not be multiples
of 8 or 32 because every decoder step upsamples to the size of the skip mask it multiplies.

Size
----
285,128 parameters with ``in_channels=3`` (269,362 of them in the EfficientNet-B4 stages, 15,766 in
the mixing / decoder / head layers; the paper quotes ~0.28 M); the float32 checkpoint is about
1.3 MB.

Licence
-------
The authors' code and weights are released "for non-commercial and research purposes only".
This module is our own implementation written from the paper and from reading their code (no
code copied); it is distributed under deltacd's licence. The *weights* keep the authors' terms:
anyone who loads ``levir_best.pth`` or ``whu_best.pth`` is bound by them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from deltacd.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

__all__ = [
    "MIN_SIDE",
    "TINYCD_IMAGENET_NORMALISATION",
    "TinyCD",
    "adapt_first_conv",
    "load_tinycd_checkpoint",
    "normalise_rgb8",
]

#: Normalisation the authors' checkpoints were trained with: 8-bit RGB -> ``ToTensor`` (divide by
#: 255) -> ImageNet ``Normalize``; per band ``x = (dn / scale - mean) / std``, bands in this order.
TINYCD_IMAGENET_NORMALISATION: dict[str, Any] = {
    "bands": ("R", "G", "B"),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "scale": 255.0,
}

#: Smallest accepted height / width. The deepest features are ``ceil(side / 8)`` pixels wide and
#: InstanceNorm needs more than one pixel per channel, so 16 (-> 2 x 2 at the deepest level) is
#: the smallest round size that always works.
MIN_SIDE = 16

#: Number of input bands the authors' weights (and torchvision's stem) were built for.
_PRETRAINED_BANDS = 3

_CHECKPOINT_HINT = "pass a checkpoint saved by AndreaCodegoni/Tiny_model_4_CD or by deltacd"


# --------------------------------------------------------------------------------------------
# Building blocks. Attribute names (``_linears``, ``_convmix``, ``_mixing``, ``_linear``,
# ``_convolution``) are the authors'; they are what makes the checkpoint keys match.
# --------------------------------------------------------------------------------------------


class _PixelwiseMLP(nn.Module):
    """Stack of 1x1 convolutions, each followed by PReLU except optionally the last.

    Parameters
    ----------
    widths
        Channel counts ``[c0, c1, ..., cn]``; layer ``i`` maps ``c_i -> c_{i+1}``.
    last_activation
        If False the last 1x1 conv is left linear (used for the logits head, where the authors
        had a parameter-free Sigmoid).

    Shapes: ``[B, c0, H, W] -> [B, cn, H, W]``.
    """

    def __init__(self, widths: Sequence[int], *, last_activation: bool = True) -> None:
        super().__init__()
        n = len(widths) - 1
        layers: list[nn.Module] = []
        for i in range(n):
            conv = nn.Conv2d(widths[i], widths[i + 1], kernel_size=1, bias=True)
            # Each layer is its own Sequential so that keys read ``_linears.<i>.0.weight`` (conv)
            # and ``_linears.<i>.1.weight`` (PReLU slope), as in the checkpoints.
            if i < n - 1 or last_activation:
                layers.append(nn.Sequential(conv, nn.PReLU()))
            else:
                layers.append(nn.Sequential(conv))
        self._linears = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self._linears(x)


def _interleave(x: Tensor, y: Tensor) -> Tensor:
    """``[B, C, H, W]`` x2 -> ``[B, 2C, H, W]`` ordered ``x0, y0, x1, y1, ...``.

    The interleaving puts each before/after band pair into the same group of the grouped conv
    that follows; the order (before first) matters because the learnt kernels are not symmetric.
    """
    return torch.stack((x, y), dim=2).flatten(1, 2)


class _PairMixer(nn.Module):
    """Grouped 3x3 conv over interleaved before/after channels, then PReLU and InstanceNorm.

    Shapes: two ``[B, C, H, W]`` -> ``[B, C, H, W]`` (one group per band pair).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self._convmix = nn.Sequential(
            nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1, groups=channels),
            nn.PReLU(),
            # affine=False, no running stats: the same per-image normalisation in train and eval.
            nn.InstanceNorm2d(channels),
        )

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        return self._convmix(_interleave(before, after))


class _DeepPairMixer(_PairMixer):
    """:class:`_PairMixer` for the deepest level that also reads the WHU checkpoint's key layout.

    ``levir_best.pth`` stores this block as ``_mixing_mask.2._convmix.*`` while ``whu_best.pth``
    (saved from another revision of the authors' code, where the block was wrapped in a mixing
    block whose pixel-wise MLP was empty, i.e. the identity) stores the same three tensors as
    ``_mixing_mask.2._mixing._convmix.*``. Both compute the same function, so the older keys are
    renamed on load; ``state_dict()`` always writes the LEVIR layout.
    """

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # ``nn.Module.load_state_dict`` hands every module its own copy of the caller's dict,
        # so renaming in place does not touch the caller's object.
        old = prefix + "_mixing._convmix."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "_convmix." + key[len(old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _MixAttention(nn.Module):
    """Pair mixing followed by a pixel-wise MLP down to a 1-channel spatial mask.

    Shapes: two ``[B, C, H, W]`` -> ``[B, 1, H, W]``.
    """

    def __init__(self, channels: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self._mixing = _PairMixer(channels)
        self._linear = _PixelwiseMLP([channels, *hidden, 1])

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        return self._linear(self._mixing(before, after))


class _MaskedUp(nn.Module):
    """Decoder step: upsample, multiply by a finer-scale mask, depthwise-separable conv.

    Shapes: ``x [B, nin, h, w]`` and ``mask [B, 1, H, W]`` -> ``[B, nout, H, W]``.
    """

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self._convolution = nn.Sequential(
            nn.Conv2d(nin, nin, kernel_size=3, stride=1, padding=1, groups=nin),
            nn.PReLU(),
            nn.InstanceNorm2d(nin),
            nn.Conv2d(nin, nout, kernel_size=1, stride=1),
            nn.PReLU(),
            nn.InstanceNorm2d(nout),
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # The authors upsample to a fixed size (64, 128, 256 for 256-px tiles), bilinear with
        # align_corners=True. Upsampling to the mask's own size is identical for 256-px tiles and
        # also works for any other size (the encoder rounds odd sizes up, so factors differ from 2).
        x = F.interpolate(x, size=mask.shape[-2:], mode="bilinear", align_corners=True)
        return self._convolution(x * mask)


def _efficientnet_b4_head(in_channels: int) -> nn.ModuleList:
    """Stem and first three MBConv stages of torchvision's EfficientNet-B4, randomly initialised.

    torchvision's own class is used (never downloading weights) so the layer layout and the
    ``_backbone.<stage>.<block>...`` keys are exactly those of the authors' checkpoints.
    """
    features = torchvision.models.efficientnet_b4(weights=None).features
    stages = nn.ModuleList(list(features.children())[:4])
    if in_channels != _PRETRAINED_BANDS:
        old = stages[0][0]
        stages[0][0] = nn.Conv2d(
            in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=False,
        )
    return stages


class TinyCD(nn.Module):
    """TinyCD change detector (arXiv:2207.13159), returning change logits.

    Parameters
    ----------
    in_channels
        Bands per image (3 for the authors' RGB weights; e.g. 4 for B,G,R,NIR or 1 for PAN when
        training from scratch or after :func:`adapt_first_conv`). The stem conv of the backbone,
        the first mixing block and the first layer of its MLP depend on it.

    Notes
    -----
    Layer names follow the authors' ``ChangeClassifier``; see the module docstring. The
    backbone is randomly initialised: load a checkpoint with :func:`load_tinycd_checkpoint` or
    ``load_state_dict``.
    """

    name = "tinycd"
    size_multiple: int = 1  # any size of at least MIN_SIDE: the decoder upsamples to each skip's size

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
            raise InputError(f"TinyCD in_channels={in_channels!r}: must be a positive integer (3 for RGB)")
        self.in_channels = in_channels
        # Attribute creation order = state-dict key order of the authors' checkpoints.
        self._backbone = _efficientnet_b4_head(in_channels)
        self._first_mix = _MixAttention(in_channels, hidden=(10, 5))
        self._mixing_mask = nn.ModuleList(
            [
                _MixAttention(24, hidden=(12, 6)),  # after stage 1: 24 ch at H/2
                _MixAttention(32, hidden=(16, 8)),  # after stage 2: 32 ch at H/4
                _DeepPairMixer(56),  # after stage 3: 56 ch at H/8, kept as features
            ]
        )
        self._up = nn.ModuleList([_MaskedUp(56, 64), _MaskedUp(64, 64), _MaskedUp(64, 32)])
        self._classify = _PixelwiseMLP([32, 16, 8, 1], last_activation=False)

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        """Change logits for a pair of co-registered, normalised images.

        Parameters
        ----------
        before, after
            float32 ``[B, in_channels, H, W]``, same shape, ``H, W >= MIN_SIDE``.

        Returns
        -------
        Tensor
            float32 ``[B, 1, H, W]`` logits; ``torch.sigmoid`` gives the change probability.

        Raises
        ------
        InputError
            Shapes differ, the band count is not ``in_channels`` or a side is below ``MIN_SIDE``.
        """
        self._check_inputs(before, after)
        masks = [self._first_mix(before, after)]  # [B,1,H,W]
        x, y = before, after
        for level, stage in enumerate(self._backbone):
            # Both dates go through the backbone separately (not concatenated on the batch axis)
            # so that BatchNorm statistics in training are per date, as in the authors' code.
            x, y = stage(x), stage(y)
            if level > 0:  # the stem output (level 0) is not mixed
                masks.append(self._mixing_mask[level - 1](x, y))
        # masks: [B,1,H,W], [B,1,H/2,W/2], [B,1,H/4,W/4], then deep features [B,56,H/8,W/8].
        z = masks[-1]
        for up, skip in zip(self._up, reversed(masks[:-1])):
            z = up(z, skip)
        return self._classify(z)

    def _check_inputs(self, before: Tensor, after: Tensor) -> None:
        if before.ndim != 4 or before.shape != after.shape:
            raise InputError(
                f"TinyCD inputs must both be [B, C, H, W] with the same shape; got before "
                f"{tuple(before.shape)} and after {tuple(after.shape)}"
            )
        if before.shape[1] != self.in_channels:
            raise InputError(
                f"TinyCD was built for {self.in_channels} band(s) but the images have "
                f"{before.shape[1]}; build TinyCD(in_channels={before.shape[1]}) or select bands"
            )
        h, w = before.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise InputError(
                f"TinyCD needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels (any size above "
                f"that, no multiple required); got {h}x{w}; use larger tiles"
            )


# --------------------------------------------------------------------------------------------
# Band adaptation
# --------------------------------------------------------------------------------------------

#: Tensors whose input axis is the band axis and that mix bands linearly (conv over all bands).
_BAND_MIXING_KEYS = ("_backbone.0.0.weight", "_first_mix._linear._linears.0.0.weight")
#: Tensors of the grouped pair-mixing conv: one output channel (group) per band.
_PER_BAND_KEYS = ("_first_mix._mixing._convmix.0.weight", "_first_mix._mixing._convmix.0.bias")


def _adapt_band_axis(weight: Tensor, in_channels: int) -> Tensor:
    """Band-mixing kernels ``[O, 3, ...] -> [O, in_channels, ...]`` (segmentation-models-pytorch rule)."""
    src = weight.shape[1]
    if in_channels == 1:
        # One band (e.g. PAN, roughly the mean of R, G, B): summing the kernels keeps the response
        # of a grey input unchanged.
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % src
    return weight[:, index] * (src / in_channels)


def _adapt_group_axis(tensor: Tensor, in_channels: int) -> Tensor:
    """Per-band tensors ``[3, ...] -> [in_channels, ...]``: band i takes group ``i % 3``."""
    src = tensor.shape[0]
    if in_channels == 1:
        # Each group only ever sees its own band pair, so averaging (not summing) keeps the scale.
        return tensor.mean(dim=0, keepdim=True)
    return tensor[torch.arange(in_channels) % src].clone()


def adapt_first_conv(state_dict: Mapping[str, Tensor], in_channels: int) -> dict[str, Tensor]:
    """Convert a 3-band TinyCD state dict to ``in_channels`` bands, as a start for fine-tuning.

    Rule (the one of segmentation-models-pytorch's ``patch_first_conv``), for the layers that
    combine bands linearly, i.e. the backbone stem conv ``_backbone.0.0.weight [48, 3, 3, 3]`` and
    the first MLP layer of the first mixing block ``_first_mix._linear._linears.0.0.weight
    [10, 3, 1, 1]``:

    * ``in_channels >= 2``: band ``i`` gets the RGB kernel ``i % 3`` (R, G, B, R, G, B, ...),
      and all kernels are multiplied by ``3 / in_channels`` so the summed response keeps its
      magnitude;
    * ``in_channels == 1``: the three kernels are summed (a grey input gives the same response).

    The grouped pair-mixing conv of the first block
    (``_first_mix._mixing._convmix.0.weight [3, 2, 3, 3]`` and its bias ``[3]``) has one group
    per band and never mixes bands, so band ``i`` copies group ``i % 3`` unscaled (for one band,
    the mean of the three). All other tensors are independent of the band count and are copied.

    New bands must be normalised like the RGB bands (zero mean, unit variance per band); the
    adapted model still has to be fine-tuned on data with those bands.

    Parameters
    ----------
    state_dict
        A 3-band TinyCD state dict (e.g. from ``levir_best.pth``).
    in_channels
        Target number of bands, ``>= 1``.

    Returns
    -------
    dict[str, Tensor]
        A state dict that ``TinyCD(in_channels).load_state_dict(..., strict=True)`` accepts.

    Raises
    ------
    InputError
        ``in_channels < 1`` or the state dict is not a 3-band TinyCD state dict.
    """
    if not isinstance(in_channels, int) or in_channels < 1:
        raise InputError(f"adapt_first_conv in_channels={in_channels!r}: must be a positive integer")
    for key in (*_BAND_MIXING_KEYS, *_PER_BAND_KEYS):
        if key not in state_dict:
            raise InputError(f"adapt_first_conv: state dict lacks {key!r}; pass a 3-band TinyCD state dict")
    bands = state_dict[_BAND_MIXING_KEYS[0]].shape[1]
    if bands != _PRETRAINED_BANDS:
        raise InputError(
            f"adapt_first_conv: state dict has {bands} input bands, expected {_PRETRAINED_BANDS}; "
            "pass the original RGB state dict"
        )
    out = {k: v.clone() for k, v in state_dict.items()}
    if in_channels == _PRETRAINED_BANDS:
        return out
    for key in _BAND_MIXING_KEYS:
        out[key] = _adapt_band_axis(state_dict[key], in_channels)
    for key in _PER_BAND_KEYS:
        out[key] = _adapt_group_axis(state_dict[key], in_channels)
    return out


# --------------------------------------------------------------------------------------------
# Checkpoints and input preparation
# --------------------------------------------------------------------------------------------


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_summary(keys: Sequence[str], shown: int = 3) -> str:
    head = ", ".join(keys[:shown])
    return head if len(keys) <= shown else f"{head}, ... ({len(keys)} in all)"


def load_tinycd_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> TinyCD:
    """Build a :class:`TinyCD` and load a raw state dict into it with every key matched.

    Parameters
    ----------
    path
        ``.pth`` file holding a TinyCD state dict: the authors' ``levir_best.pth`` /
        ``whu_best.pth`` or ``TinyCD.state_dict()`` saved by deltacd (any band count; it is read
        from the stem conv).
    map_location
        Passed to ``torch.load``.

    Returns
    -------
    TinyCD
        In eval mode. Feed inputs normalised with :data:`TINYCD_IMAGENET_NORMALISATION` when
        using the authors' weights.

    Raises
    ------
    MissingInputError
        ``path`` does not exist.
    InputError
        The file cannot be read as a weights-only PyTorch checkpoint, or it is not a TinyCD state
        dict (missing / unexpected keys, wrong shapes).
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: TinyCD checkpoint not found; check the path")
    try:
        # weights_only=True: a checkpoint from someone else must not be able to run code on load.
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        raise InputError(
            f"{path}: cannot be read as a weights-only PyTorch checkpoint "
            f"({type(exc).__name__}: {_first_line(exc)}); {_CHECKPOINT_HINT}"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors; {_CHECKPOINT_HINT}")

    stem = state.get("_backbone.0.0.weight")
    in_channels = int(stem.shape[1]) if isinstance(stem, Tensor) and stem.ndim == 4 else _PRETRAINED_BANDS
    model = TinyCD(in_channels=in_channels)

    # Compare key sets first (with the WHU-layout alias) so the error can list what is wrong.
    expected = set(model.state_dict())
    given = {k.replace("_mixing_mask.2._mixing._convmix.", "_mixing_mask.2._convmix.") for k in state}
    missing = sorted(expected - given)
    unexpected = sorted(given - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_key_summary(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_summary(unexpected)}")
        raise InputError(f"{path.name}: not a TinyCD state dict ({'; '.join(parts)}); {_CHECKPOINT_HINT} ({path})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # keys matched, so this is a shape mismatch
        detail = " ".join(str(exc).split())
        detail = detail[detail.find("size mismatch") :] if "size mismatch" in detail else detail
        raise InputError(
            f"{path.name}: TinyCD state dict with wrong tensor shapes ({detail[:200]}); {_CHECKPOINT_HINT} ({path})"
        ) from exc
    log.debug("loaded TinyCD checkpoint %s (%d tensors, %d bands)", path, len(state), in_channels)
    return model.eval()


def normalise_rgb8(dn: np.ndarray | Tensor) -> Tensor:
    """Apply :data:`TINYCD_IMAGENET_NORMALISATION` to 8-bit RGB digital numbers.

    Parameters
    ----------
    dn
        ``[3, H, W]`` or ``[B, 3, H, W]``, bands R, G, B, values 0-255 (any numeric dtype).

    Returns
    -------
    Tensor
        float32, same shape: ``(dn / 255 - mean) / std`` per band.
    """
    # np.array copies, so read-only arrays (e.g. from PIL) are fine and the caller's data is untouched.
    x = dn.to(torch.float32) if isinstance(dn, Tensor) else torch.from_numpy(np.array(dn, dtype=np.float32))
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise InputError(f"normalise_rgb8 expects [3, H, W] or [B, 3, H, W] RGB; got shape {tuple(x.shape)}")
    norm = TINYCD_IMAGENET_NORMALISATION
    mean = torch.tensor(norm["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32).view(3, 1, 1)
    return (x / norm["scale"] - mean) / std
