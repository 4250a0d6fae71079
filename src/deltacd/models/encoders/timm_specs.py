"""``timm:<name>`` specs: timm CNNs through ``forward_intermediates``, plain ViTs through the simple feature pyramid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from deltacd.errors import InputError, OfflineError
from deltacd.models.encoders.base import Encoder, TimmEncoder
from deltacd.models.encoders.pretrained import close_matches, finish_encoder, load_pretrained
from deltacd.models.encoders.vit_pyramid import ViTPyramidEncoder
from deltacd.models.encoders.weights import KeyMap, WeightsSource, load_state_dict_file

__all__ = ["build_timm", "create_timm", "wrap_timm"]


def create_timm(name: str, in_channels: int, **kwargs: Any) -> nn.Module:
    """timm model without head; ViT-family constructors also get ``dynamic_img_size=True``."""
    try:
        return timm.create_model(
            name, pretrained=False, in_chans=in_channels, num_classes=0, dynamic_img_size=True, **kwargs
        )
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
    return timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=0, **kwargs)


def wrap_timm(model: nn.Module, *, spec: str, in_channels: int) -> Encoder:
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
        raise InputError(
            f"encoder {spec!r}: this timm model has no forward_intermediates API; choose another timm model"
        )
    reductions = {int(f["reduction"]) for f in model.feature_info}
    if len(reductions) == 1 and hasattr(model, "patch_embed"):
        return ViTPyramidEncoder(model, spec=spec, in_channels=in_channels)
    return TimmEncoder(model, spec=spec, in_channels=in_channels)


def _timm_cache_file(name: str) -> Path | None:
    """timm's pretrained file for ``name`` if it is already in the local HF or torch.hub cache; never downloads."""
    cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
    if cfg is None:
        return None
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    url = cfg.get("url")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if path.is_file() and path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
            return path
    return None


def _timm_offline_error(name: str) -> OfflineError:
    return OfflineError(
        f"timm weights for {name} are not on this machine; download them on a connected machine "
        f"(timm.create_model({name!r}, pretrained=True); torch.save(model.state_dict(), '{name}.pth')) "
        f"and pass weights='local:/path/{name}.pth'"
    )


def build_timm(
    name: str,
    *,
    spec: str,
    in_channels: int,
    source: WeightsSource,
    bands: tuple[str, ...] | None,
    key_map: KeyMap | None,
) -> Encoder:
    if not timm.is_model(name):
        raise InputError(f"encoder {spec!r}: timm has no model {name!r}; {close_matches(name, timm.list_models())}")
    model = create_timm(name, in_channels)
    encoder = wrap_timm(model, spec=spec, in_channels=in_channels)
    if source.kind in ("default", "random"):
        return finish_encoder(encoder, spec=spec, weights="random", bands=bands)
    if source.kind == "timm":
        path = _timm_cache_file(name)
        if path is None:
            raise _timm_offline_error(name)
        where = f"timm cache {path}"
    else:
        assert source.path is not None
        path, where = source.path, str(source.path)
    cfg = model.pretrained_cfg
    load_pretrained(
        encoder,
        encoder.model,
        load_state_dict_file(path),
        source=where,
        in_channels=in_channels,
        bands=bands,
        pretrained_bands=None,
        # timm's mean/std are in units of 8-bit values / 255; local files are assumed to follow them.
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        input_scale=1.0 / 255.0,
        key_map=key_map,
    )
    return finish_encoder(encoder, spec=spec, weights=where, bands=bands)
