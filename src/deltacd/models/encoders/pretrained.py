"""Pretrained weights put into an encoder: first-layer adaptation, loading, the normalisation they expect."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from deltacd.errors import InputError
from deltacd.models.encoders.base import Encoder
from deltacd.models.encoders.weights import KeyMap, band_mixing, load_into, mix_statistics, remap_keys

log = logging.getLogger(__name__)

__all__ = ["close_matches", "finish_encoder", "load_pretrained"]

_RGB = ("R", "G", "B")


def close_matches(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=5, cutoff=0.6)
    return f"close matches: {', '.join(close)}" if close else "no close match"



def load_pretrained(
    encoder: Encoder,
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    in_channels: int,
    bands: tuple[str, ...] | None,
    pretrained_bands: Sequence[str] | None,
    mean: Sequence[float],
    std: Sequence[float],
    input_scale: float,
    colours: Mapping[str, str] | None = None,
    key_map: KeyMap | None = None,
) -> None:
    """Adapt the first layer, load, and record the normalisation on ``encoder``."""
    sd = remap_keys(state_dict, module.state_dict().keys(), key_map=key_map)
    conv_key = f"{encoder.first_conv}.weight"
    if conv_key not in sd:
        raise InputError(
            f"{source}: the weights have no {conv_key!r} (first layer of {encoder.spec}); "
            f"they have e.g. {next(iter(sd), '<none>')!r}; pass a key_map"
        )
    pretrained_channels = int(sd[conv_key].shape[1])
    if pretrained_bands is None and pretrained_channels == 3:
        # ImageNet-style weights (timm, torchvision, most other code bases) take R, G, B in this order.
        pretrained_bands = _RGB
    mix = band_mixing(
        in_channels,
        pretrained_channels,
        bands=bands,
        pretrained_bands=pretrained_bands,
        colours=colours,
        source=source,
    )
    load_into(module, sd, source=source, first_conv=encoder.first_conv, mix=mix)
    if len(mean) == 1:
        mean = tuple(mean) * pretrained_channels
    if len(std) == 1:
        std = tuple(std) * pretrained_channels
    encoder.pretrained_bands = tuple(pretrained_bands) if pretrained_bands else None
    encoder.mean = mix_statistics(mean, mix)
    encoder.std = mix_statistics(std, mix)
    encoder.input_scale = float(input_scale)


def finish_encoder(encoder: Encoder, *, spec: str, weights: str, bands: tuple[str, ...] | None) -> Encoder:
    encoder.spec = spec
    encoder.weights = weights
    encoder.bands = bands
    log.debug("encoder %s (%s): out_channels %s", spec, weights, encoder.out_channels)
    return encoder
