"""Self-describing model checkpoints: weights in safetensors, everything else in its metadata.

A deltacd checkpoint is one ``.safetensors`` file. The weights are plain tensors (safetensors
cannot carry code, so loading a file from someone else is safe); the header's metadata holds a
JSON :class:`ModelSpec` under the key ``"deltacd"``: the architecture and its constructor
arguments, the bands and their order, the normalisation, the decision threshold chosen on
validation, and a summary of the training data. ``deltacd detect --model FILE`` needs nothing
else.

Checkpoints made by other code load when the architecture is named, ``ARCH:PATH``
(e.g. ``tinycd:levir_best.pth``): see :func:`load_model`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from deltacd.errors import InputError, MissingInputError

FORMAT = "deltacd-model/1"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and run a trained model.

    Attributes
    ----------
    name, kwargs
        Registry name and constructor arguments (``deltacd.models.registry.build_model``).
    bands
        Band names in the order the model takes them (e.g. ``("R", "G", "B")``).
    mean, std
        Normalisation per band, in the input's digital numbers: ``x = (dn - mean) / std``.
    threshold
        Probability above which a pixel is changed (chosen on validation; 0.5 if none).
    task
        ``"binary"`` (1 logit, sigmoid) or ``"multiclass"`` (softmax over ``num_classes``).
    gsd_m
        Ground sampling distance (m) of the training images, or None when unknown; ``detect``
        resamples a pair to it (a network sees objects at the scale it learnt them).
    data, training
        Free-form summaries (data set, sizes, epochs, scores) for the record.
    """

    name: str
    kwargs: dict[str, Any]
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float = 0.5
    task: str = "binary"
    gsd_m: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not (len(self.bands) == len(self.mean) == len(self.std)):
            raise InputError(
                f"model spec: {len(self.bands)} bands but {len(self.mean)} means and {len(self.std)} stds; give one per band"
            )

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)})

    @classmethod
    def from_json(cls, text: str, *, source: str = "checkpoint") -> ModelSpec:
        try:
            values = json.loads(text)
            if values.pop("format", None) != FORMAT:
                raise ValueError(f"format is not {FORMAT}")
            values["bands"] = tuple(values["bands"])
            values["mean"] = tuple(values["mean"])
            values["std"] = tuple(values["std"])
            return cls(**values)
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{source}: unreadable deltacd model description ({exc}); re-save the model with deltacd") from exc


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec) -> Path:
    """Write ``model``'s weights and ``spec`` to ``path`` (.safetensors), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"deltacd": spec.to_json()})
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # safetensors writes 0600 whatever the umask; models are meant to be shared
    tmp.replace(path)
    return path


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of a deltacd checkpoint, without loading the weights."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such model file; check the path")
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size < 100_000_000:
                raise ValueError("bad header size")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: not a deltacd model (.safetensors) ({exc}); for another code's checkpoint name its architecture, "
            "e.g. --model tinycd:PATH"
        ) from exc
    metadata = header.get("__metadata__") or {}
    if "deltacd" not in metadata:
        raise InputError(f"{path}: safetensors file without a deltacd model description; save it with deltacd's save_checkpoint")
    return ModelSpec.from_json(metadata["deltacd"], source=str(path))


def offline_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments that rebuild a model without fetching pretrained weights.

    The weights come from the checkpoint, so an encoder asked for pretrained weights
    (``encoder_weights="imagenet"``, an ``encoder_spec`` with its default weights) is built
    randomly initialised instead: a checkpoint's metadata can never make deltacd download anything.
    """
    kwargs = dict(kwargs)
    if "encoder_spec" in kwargs and kwargs["encoder_spec"] is not None:
        kwargs["encoder_weights"] = "random"
    elif kwargs.get("encoder_weights") is not None:
        kwargs["encoder_weights"] = None
    return kwargs


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model of a deltacd checkpoint and load its weights (strict), in eval mode."""
    from deltacd.models.registry import build_model

    spec = read_spec(path)
    model = build_model(spec.name, **offline_kwargs(spec.kwargs))
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{path}: corrupt model weights ({exc}); re-save or re-download the model") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: weights do not fit a {spec.name} with {spec.kwargs} ({detail}); the file is inconsistent") from exc
    return model.eval(), spec
