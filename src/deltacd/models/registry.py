"""The registry of change-detection networks: name -> class, and building one from plain keyword arguments.

Contract every registered model follows
---------------------------------------

* ``forward(before: Tensor, after: Tensor) -> Tensor``. ``before`` and ``after`` are
  float32 ``[B, C, H, W]``, already normalised, with the same C, equal to the model's
  ``in_channels`` (any band count: 1 panchromatic, 3 RGB, 4 B,G,R,NIR, 13 Sentinel-2).
  The output is change **logits** ``[B, num_classes, H, W]`` at input resolution:
  ``num_classes=1`` for binary change, more for from/to or damage classes. No sigmoid or
  softmax inside; the loss or the caller applies it.
* The constructor takes plain typed keyword arguments (``in_channels: int``,
  ``num_classes: int = 1``, ...; ints, floats, strings, lists, None), so a checkpoint can
  store ``{"name": model.name, "kwargs": {...}}`` and :func:`build_model` rebuilds the model
  from that alone.
* A class attribute ``name: str`` is its registry key.
* A class attribute ``size_multiple: int``: H and W must be multiples of it (1: any size).
  An instance may refine it (e.g. :class:`SiameseUNet` with a shallower encoder); read it
  from the instance when one exists. Inputs that break it, or that have the wrong band
  count or mismatched dates, raise :class:`deltacd.errors.InputError` naming the fix.

Registered: "fc-ef", "fc-siam-conc", "fc-siam-diff" (Daudt et al. 2018,
doi:10.1109/ICIP.2018.8451652), "siamese-unet" (siamese smp/timm encoder + U-Net decoder),
"bit" (Chen et al. 2021, doi:10.1109/TGRS.2021.3095166), the damage networks "damage-classifier"
(chip pair + footprint mask -> ordinal grade; its ``forward`` also takes the mask) and
"building-unet" (buildings from the pre image only; ``after`` ignored), and "tinycd" when
:mod:`deltacd.models.tinycd` is present.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from deltacd.errors import InputError
from deltacd.models.bit import BIT
from deltacd.models.damage import BuildingUNet, SiameseChipClassifier
from deltacd.models.fc import FCEarlyFusion, FCSiamConc, FCSiamDiff
from deltacd.models.siamese_unet import SiameseUNet

#: Every network that follows the change contract above (``forward(before, after)`` -> logits [B, K, H, W]),
#: keyed by its ``name`` class attribute: what change training and ``detect --model`` take.
CHANGE_MODELS: dict[str, type[nn.Module]] = {
    cls.name: cls for cls in (FCEarlyFusion, FCSiamConc, FCSiamDiff, SiameseUNet, BIT, BuildingUNet)
}
#: Every network a checkpoint can name: the change models and the damage chip classifier (its own contract).
MODELS: dict[str, type[nn.Module]] = {**CHANGE_MODELS, SiameseChipClassifier.name: SiameseChipClassifier}

# --- TinyCD ------------------------------------------------------------------------------
# TinyCD lives in deltacd.models.tinycd (written separately). Register it when that module
# exists; a missing module is not an error, but an error *inside* it is raised as usual.
# The key is spelled out (not read from TinyCD.name) so that registration does not depend
# on that class following the `name` convention.
try:
    _tinycd = importlib.import_module("deltacd.models.tinycd")
except ModuleNotFoundError as _err:
    if _err.name != "deltacd.models.tinycd":
        raise
else:
    CHANGE_MODELS["tinycd"] = MODELS["tinycd"] = _tinycd.TinyCD
# ------------------------------------------------------------------------------------------


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Add a change network following the contract above under its ``name``; usable as a class decorator.

    After this, ``deltacd train`` trains it (``model: {name: ...}``), checkpoints name it, and
    ``deltacd detect --model`` runs it, in this process. A name already taken is refused.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise InputError(f"register_model: {cls.__name__} needs a class attribute name (its registry key)")
    if name in MODELS and MODELS[name] is not cls:
        raise InputError(f"register_model: the name {name!r} is taken by {MODELS[name].__name__}; choose another")
    CHANGE_MODELS[name] = MODELS[name] = cls
    return cls


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    Raises :class:`InputError` for an unknown name (listing the available ones), and for
    keyword arguments the constructor does not accept or that are missing (naming them and
    the accepted ones).
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; available models: {', '.join(sorted(MODELS))}") from None
    parameters = {
        key: parameter
        for key, parameter in inspect.signature(cls.__init__).parameters.items()
        if key != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    accepted = ", ".join(parameters)
    unknown = [key for key in kwargs if key not in parameters]
    if unknown:
        raise InputError(
            f"model {name!r} does not accept {', '.join(map(repr, unknown))}; accepted keyword arguments: {accepted}"
        )
    missing = [key for key, p in parameters.items() if p.default is p.empty and key not in kwargs]
    if missing:
        raise InputError(
            f"model {name!r} needs {', '.join(map(repr, missing))}; accepted keyword arguments: {accepted}"
        )
    return cls(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
