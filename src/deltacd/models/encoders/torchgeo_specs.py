"""``torchgeo:<weights>`` specs: the architecture, bands and normalisation of a torchgeo pretrained weight."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deltacd.errors import InputError, MissingDependencyError, OfflineError
from deltacd.models.encoders.base import Encoder, TorchvisionSwinEncoder
from deltacd.models.encoders.pretrained import close_matches, finish_encoder, load_pretrained
from deltacd.models.encoders.timm_specs import create_timm, wrap_timm
from deltacd.models.encoders.weights import SENTINEL2_COLOURS, KeyMap, WeightsSource, load_state_dict_file

__all__ = ["build_torchgeo"]


def _torchgeo_names() -> list[str]:
    import torchgeo.models as tgm

    names: set[str] = set()
    for model in tgm.list_models():
        try:
            names.update(str(w) for w in tgm.get_model_weights(model))
        except KeyError:  # models listed without a weights enum
            continue
    return sorted(names)


def _torchgeo_builder_name(weight: Any) -> str:
    import torchgeo.models as tgm

    for name in tgm.list_models():
        try:
            if tgm.get_model_weights(name) is type(weight):
                return name
        except KeyError:  # models listed without a weights enum (torchgeo 0.8: dofa_huge_patch14_224)
            continue
    raise InputError(f"torchgeo weights {weight}: no torchgeo model uses them")


def _normalisation_from_transforms(
    transforms: Any, channels: int
) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
    """Compose the Normalize steps of torchgeo weight transforms into ``(input_scale, mean, std)``.

    Each ``Normalize(m, s)`` maps ``x -> (x - m) / s``; their composition is ``x -> a x + b`` per
    band. A leading ``Normalize(0, s)`` with one value is a pure scale and becomes
    ``input_scale = 1/s``; the rest becomes ``mean = -b/a``, ``std = 1/a``.
    """
    modules = list(transforms.modules()) if isinstance(transforms, nn.Module) else [transforms]
    steps: list[tuple[Tensor, Tensor]] = []
    for module in modules:
        flags = getattr(module, "flags", None)
        mean = getattr(module, "mean", None) if not isinstance(flags, dict) else flags.get("mean")
        std = getattr(module, "std", None) if not isinstance(flags, dict) else flags.get("std")
        if mean is None or std is None or isinstance(module, nn.Sequential):
            continue
        mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
        steps.append(
            (
                mean_t.expand(channels) if mean_t.numel() == 1 else mean_t,
                std_t.expand(channels) if std_t.numel() == 1 else std_t,
            )
        )
    input_scale = 1.0
    if steps and steps[0][0].abs().max() == 0 and bool((steps[0][1] == steps[0][1][0]).all()):
        input_scale = 1.0 / float(steps[0][1][0])
        steps = steps[1:]
    a = torch.ones(channels, dtype=torch.float64)
    b = torch.zeros(channels, dtype=torch.float64)
    for mean_t, std_t in steps:
        a, b = a / std_t, (b - mean_t) / std_t
    return input_scale, tuple(float(v) + 0.0 for v in -b / a), tuple(float(v) for v in 1.0 / a)  # + 0.0: no -0.0


def _torchgeo_cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def build_torchgeo(
    name: str,
    *,
    spec: str,
    in_channels: int,
    source: WeightsSource,
    bands: tuple[str, ...] | None,
    key_map: KeyMap | None,
) -> Encoder:
    try:
        import torchgeo.models as tgm
    except ImportError:  # torchgeo's weights are an option for research, not a dependency of the product
        raise MissingDependencyError(f"encoder {spec!r}: torchgeo is not installed; pip install torchgeo") from None
    import torchvision

    try:
        weight = tgm.get_weight(name)
    except (ValueError, KeyError) as err:
        raise InputError(
            f"encoder {spec!r}: torchgeo has no weights {name!r}; {close_matches(name, _torchgeo_names())}"
        ) from err
    builder = _torchgeo_builder_name(weight)
    meta = dict(weight.meta)
    pretrained_channels = int(meta.get("in_chans", 3))
    if builder.startswith("resnet") or builder.startswith("vit_"):
        kwargs = {"img_size": meta["img_size"]} if builder.startswith("vit_") and "img_size" in meta else {}
        encoder = wrap_timm(create_timm(builder, in_channels, **kwargs), spec=spec, in_channels=in_channels)
        module: nn.Module = encoder.model
    elif builder in ("swin_v2_t", "swin_v2_b"):
        encoder = TorchvisionSwinEncoder(getattr(torchvision.models, builder), spec=spec, in_channels=in_channels)
        module = encoder
    else:
        raise InputError(
            f"encoder {spec!r}: torchgeo weights for {builder} cannot serve as a U-Net encoder here; "
            "use ResNet*_Weights, ViT*_Weights or Swin_V2_*_Weights"
        )
    if source.kind == "random":
        return finish_encoder(encoder, spec=spec, weights="random", bands=bands)
    if source.kind == "timm":
        raise InputError(f"encoder {spec!r}: weights='timm' is for timm specs; use None, 'random' or 'local:PATH'")
    if source.kind == "default":
        path = _torchgeo_cache_file(weight.url)
        if not path.is_file():
            raise OfflineError(
                f"torchgeo weights {name} are not on this machine; download {weight.url} on a connected machine "
                f"and put it at {path} (or pass weights='local:/path/{path.name}')"
            )
    else:
        assert source.path is not None
        path = source.path
    pretrained_bands = meta.get("bands")
    if pretrained_bands is not None and len(pretrained_bands) != pretrained_channels:
        pretrained_bands = None
    input_scale, mean, std = _normalisation_from_transforms(weight.transforms, pretrained_channels)
    colours = SENTINEL2_COLOURS if "SENTINEL2" in weight.name else None
    load_pretrained(
        encoder,
        module,
        load_state_dict_file(path),
        source=str(path),
        in_channels=in_channels,
        bands=bands,
        pretrained_bands=pretrained_bands,
        mean=mean,
        std=std,
        input_scale=input_scale,
        colours=colours,
        key_map=key_map,
    )
    return finish_encoder(encoder, spec=spec, weights=str(path), bands=bands)
