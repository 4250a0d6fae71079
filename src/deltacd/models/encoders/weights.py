"""Pretrained encoder weights: reading files safely, renaming keys, fitting the first layer to other bands.

Everything here works on plain state dicts, so that weights from timm, torchgeo, the
EfficientNet-Lite0 package and other code bases go through the same checks.

Reading
-------
:func:`load_state_dict_file` reads ``.safetensors`` with safetensors and anything else with
``torch.load(..., weights_only=True)``: a pickle that holds code or arbitrary objects is
refused, never executed. Containers such as Lightning checkpoints (``{"state_dict": ...}``) or
``{"model": ...}`` are unwrapped.

Renaming (:func:`remap_keys`)
-----------------------------
1. A user ``key_map``, applied first to the keys as they are in the file: a dict of
   ``{old_prefix: new_prefix}`` (longest prefix wins; a whole key is a prefix of itself), or a
   callable ``key -> new key`` (``None`` drops the tensor).
2. The wrapper prefixes other code bases add (``module.`` from DataParallel/DDP, ``backbone.``,
   ``encoder.``, ``model.``) are stripped, repeatedly, from keys the model does not know
   as they are.

First-layer adaptation (:func:`band_mixing`, :func:`adapt_first_conv_weight`)
------------------------------------------------------------------------------
The first layer of a CNN or ViT is linear in the input bands, so a kernel for a new band
list is a linear combination of the pretrained per-band kernels: ``W_new[:, t] = sum_p
A[t, p] * W[:, p]`` with a mixing matrix ``A`` [new bands x pretrained bands]. Normalisation
statistics of each new band are the matching weighted means, ``mean_new[t] = sum_p N[t, p] *
mean[p]`` with ``N`` the rows of ``A`` scaled to sum 1 (the same for ``std``).

With band names (``bands`` given, the weights' bands known; names as in
:func:`deltacd.io.bands.canonical`):

* a band the weights have (same name, or the same colour: Sentinel-2 ``B02/B03/B04/B08``
  answer to ``B/G/R/N`` for Sentinel-2 weights) gets its kernel unchanged, in the data's
  order (an R,G,B-pretrained layer fed B,G,R,N data gets ``[W_B, W_G, W_R, ...]``);
* ``N`` (near infrared) without a pretrained kernel gets the **mean** of the R, G, B kernels,
  and the mean of their mean/std. Why not the red kernel: vegetation is dark in red and
  bright in NIR, so a red kernel would start by reading vegetation backwards; the mean
  kernel treats NIR as one more brightness channel, the neutral starting point that
  fine-tuning then specialises. Why not zeros: that keeps the RGB response intact but makes
  the network blind to NIR at the start, and for good with a frozen encoder; the mean kernel
  lets NIR contribute from the first step.
* ``PAN`` without a pretrained kernel gets the **sum** of the R, G, B kernels (3 x their mean:
  the same thing), and the mean of their mean/std. This is exact for a grey image whose value
  is the same in every band after normalisation: the RGB layer computes ``W_R x + W_G x +
  W_B x = (W_R + W_G + W_B) x``, which is what the PAN layer computes for ``x_PAN = x``. A grey
  image in raw DN (``R = G = B = PAN``) meets that condition exactly when the three bands
  share their mean and std (the ``(dn - 127) / 128`` of EfficientNet-Lite, or per-band
  statistics of a grey scene); with ImageNet's 0.485/0.456/0.406 means it is approximate
  (each band's normalised value differs from PAN's by up to 0.2).
* any other band missing from the weights raises :class:`InputError`.

Without names (``bands=None``), smp's rule (``segmentation_models_pytorch.encoders._utils.
patch_first_conv``): the same band count keeps the layer; one band gets the sum of all
kernels; ``C`` bands from 3 pretrained get kernel ``i % 3`` times ``3 / C``. Weights with other
than 3 bands (Sentinel-2, Landsat) have no positional rule: give ``bands``.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import canonical

log = logging.getLogger(__name__)

__all__ = [
    "COMMON_PREFIXES",
    "KeyMap",
    "WeightsSource",
    "adapt_first_conv_weight",
    "band_mixing",
    "load_into",
    "load_state_dict_file",
    "mix_statistics",
    "parse_weights",
    "remap_keys",
]

#: Rename rule for checkpoint keys: ``{old_prefix: new_prefix}`` or ``key -> new key | None``.
KeyMap = Mapping[str, str] | Callable[[str], "str | None"]

#: Prefixes that wrappers from other code bases put in front of backbone keys.
COMMON_PREFIXES: tuple[str, ...] = ("module.", "backbone.", "encoder.", "model.")

#: Containers in which checkpoints keep their state dict (Lightning, DINO, MMCV, ...).
_CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "module", "net", "teacher")

#: Sentinel-2 band -> colour name, for weights pretrained on Sentinel-2.
SENTINEL2_COLOURS: dict[str, str] = {"B02": "B", "B03": "G", "B04": "R", "B08": "N"}

_RGB = ("R", "G", "B")


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's parameters come from, parsed from the ``weights`` argument.

    kind: ``"default"`` (``weights=None``: the spec's own choice), ``"random"``, ``"timm"``
    (timm's pretrained weights, from the local cache only), ``"local"`` (a file).
    """

    kind: Literal["default", "random", "timm", "local"]
    path: Path | None = None


def parse_weights(weights: str | None, *, spec: str) -> WeightsSource:
    """Parse ``None``, ``"random"``, ``"timm"`` or ``"local:PATH"``; anything else is an :class:`InputError`."""
    if weights is None:
        return WeightsSource("default")
    if weights in ("random", "timm"):
        return WeightsSource(weights)  # type: ignore[arg-type]
    kind, sep, path = weights.partition(":")
    if kind == "local" and sep and path:
        return WeightsSource("local", Path(path).expanduser())
    raise InputError(
        f"encoder {spec!r}: weights={weights!r} is not understood; use None (the spec's default), 'random', "
        "'timm' (timm specs) or 'local:/path/to/state_dict.pth'"
    )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _unwrap(obj: Any, source: str) -> dict[str, Tensor]:
    """The tensor dict inside a checkpoint container."""
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise InputError(
        f"{source}: no state dict (a mapping of names to tensors) found, got {type(obj).__name__}; "
        "save one with torch.save(model.state_dict(), path)"
    )


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file, on the CPU, without running pickled code.

    Raises
    ------
    MissingInputError
        ``path`` does not exist.
    InputError
        The file holds objects other than tensors and plain containers (``torch.load`` with
        ``weights_only=True`` refuses them), or no tensors at all.
    """
    file = Path(path)
    if not file.is_file():
        raise MissingInputError(f"encoder weights file {file} does not exist; check the path after 'local:'")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError
            raise InputError(f"{file}: not a readable safetensors file ({err}); re-save the weights") from err
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"{file}: cannot be read as plain tensors with torch.load(weights_only=True) ({first_line}); "
            "re-save only the tensors: torch.save(model.state_dict(), path) or safetensors.torch.save_file"
        ) from err
    return _unwrap(obj, str(file))


# ---------------------------------------------------------------------------------------------
# Renaming
# ---------------------------------------------------------------------------------------------


def _apply_key_map(state_dict: Mapping[str, Tensor], key_map: KeyMap) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    if callable(key_map):
        for key, value in state_dict.items():
            new = key_map(key)
            if new is not None:
                out[new] = value
        return out
    prefixes = sorted(key_map, key=len, reverse=True)
    for key, value in state_dict.items():
        old = next((p for p in prefixes if key.startswith(p)), None)
        out[key if old is None else key_map[old] + key[len(old) :]] = value
    return out


def remap_keys(
    state_dict: Mapping[str, Tensor],
    target_keys: Sequence[str] | set[str],
    *,
    key_map: KeyMap | None = None,
) -> dict[str, Tensor]:
    """Rename ``state_dict`` keys towards ``target_keys``: ``key_map`` first, then common prefixes stripped.

    A key is stripped of :data:`COMMON_PREFIXES` (repeatedly, e.g. ``module.backbone.``) only
    when it is not a target key as it is; if no stripped form is a target either, the fully
    stripped form is kept (and reported as unexpected later). When two keys map to the same
    name, the one that needed less stripping wins.
    """
    targets = set(target_keys)
    mapped = _apply_key_map(state_dict, key_map) if key_map is not None else dict(state_dict)
    out: dict[str, Tensor] = {}
    depth: dict[str, int] = {}
    for key, value in mapped.items():
        candidates = [key]
        current = key
        while True:
            prefix = next((p for p in COMMON_PREFIXES if current.startswith(p)), None)
            if prefix is None:
                break
            current = current[len(prefix) :]
            candidates.append(current)
        found = next((i for i, c in enumerate(candidates) if c in targets), None)
        level = found if found is not None else len(candidates) - 1
        name = candidates[level]
        if name not in out or level < depth[name]:
            out[name], depth[name] = value, level
    return out


# ---------------------------------------------------------------------------------------------
# First layer
# ---------------------------------------------------------------------------------------------


def band_mixing(
    in_channels: int,
    pretrained_channels: int,
    *,
    bands: Sequence[str] | None,
    pretrained_bands: Sequence[str] | None,
    colours: Mapping[str, str] | None = None,
    source: str = "encoder",
) -> Tensor:
    """Mixing matrix ``A`` [in_channels, pretrained_channels] of the first-layer rule (module docstring).

    Parameters
    ----------
    in_channels
        Bands of the data.
    pretrained_channels
        Bands the weights were trained on.
    bands
        Names of the data's bands, in order, or None for the positional (smp) rule.
    pretrained_bands
        Names of the weights' bands, or None when unknown (then the positional rule).
    colours
        Extra names the weights' bands answer to, e.g. :data:`SENTINEL2_COLOURS`.
    source
        Named in error messages.

    Raises
    ------
    InputError
        ``bands`` does not have ``in_channels`` names; a band has no kernel by name; no names
        and the weights are not 3-band.
    """
    if bands is not None and len(bands) != in_channels:
        raise InputError(
            f"{source}: bands={list(bands)} names {len(bands)} bands but in_channels={in_channels}; give one name per band"
        )
    mix = torch.zeros(in_channels, pretrained_channels, dtype=torch.float64)
    if bands is not None and pretrained_bands is not None:
        if len(pretrained_bands) != pretrained_channels:
            raise InputError(
                f"{source}: the weights list {len(pretrained_bands)} bands {list(pretrained_bands)} but their first "
                f"layer takes {pretrained_channels}; the weights' band list is wrong"
            )
        colours = {canonical(k): canonical(v) for k, v in (colours or {}).items()}
        names = [canonical(b) for b in pretrained_bands]
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            index.setdefault(name, i)
        for i, name in enumerate(names):
            if name in colours:
                index.setdefault(colours[name], i)
        for t, band in enumerate(canonical(b) for b in bands):
            if band in index:
                mix[t, index[band]] = 1.0
            elif band in ("N", "PAN") and all(c in index for c in _RGB):
                for c in _RGB:
                    # NIR: mean of the RGB kernels; PAN: their sum (see the module docstring).
                    mix[t, index[c]] = 1.0 / 3.0 if band == "N" else 1.0
            else:
                raise InputError(
                    f"{source}: band {band!r} has no kernel in weights pretrained on {','.join(pretrained_bands)}, "
                    f"and only N and PAN can be derived (from R,G,B); drop the band or use weights='random'"
                )
        return mix
    if in_channels == pretrained_channels:
        return torch.eye(in_channels, dtype=torch.float64)
    if pretrained_channels != 3:
        raise InputError(
            f"{source}: the weights take {pretrained_channels} bands"
            f"{' (' + ','.join(pretrained_bands) + ')' if pretrained_bands else ''} and the data has {in_channels}; "
            "without band names there is no rule: pass bands=[...] naming the data's bands"
        )
    if in_channels == 1:
        mix[0, :] = 1.0
        return mix
    for t in range(in_channels):
        mix[t, t % pretrained_channels] = pretrained_channels / in_channels
    return mix


def adapt_first_conv_weight(weight: Tensor, mix: Tensor) -> Tensor:
    """``W_new[:, t] = sum_p mix[t, p] * weight[:, p]``: [O, P, *k] -> [O, T, *k], same dtype."""
    out = torch.einsum("tp,op...->ot...", mix.to(torch.float64), weight.to(torch.float64))
    return out.to(weight.dtype).contiguous()


def mix_statistics(values: Sequence[float], mix: Tensor) -> tuple[float, ...]:
    """Per-band statistics under ``mix``: each new band gets the mean of the statistics of the bands it draws on."""
    weights = mix.abs()
    weights = weights / weights.sum(dim=1, keepdim=True)
    return tuple(float(v) for v in weights @ torch.tensor(list(values), dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Loading into a module
# ---------------------------------------------------------------------------------------------


def _resample_pos_embed(value: Tensor, target: Tensor, module: nn.Module) -> Tensor:
    """Bicubic resampling of a ViT's absolute position embedding to ``target``'s token count (timm helper)."""
    from timm.layers import resample_abs_pos_embed

    prefix = int(getattr(module, "num_prefix_tokens", 1))
    if getattr(module, "no_embed_class", False):
        prefix = 0
    grid = int(math.isqrt(target.shape[1] - prefix))
    return resample_abs_pos_embed(value, new_size=[grid, grid], num_prefix_tokens=prefix)


def load_into(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    first_conv: str | None,
    mix: Tensor | None = None,
    key_map: KeyMap | None = None,
) -> list[str]:
    """Load ``state_dict`` into ``module`` after renaming, first-layer adaptation and checks.

    Parameters
    ----------
    module
        The encoder's network, already cut to the layers it uses (no classifier head).
    state_dict
        Tensors as read from the file.
    source
        Names the weights in messages (a file path, "timm resnet18", ...).
    first_conv
        Key prefix of the first layer (``"conv1"``, ``"patch_embed.proj"``); its weight is
        mixed with ``mix`` when given.
    mix
        Band mixing matrix from :func:`band_mixing`.
    key_map
        See :func:`remap_keys`.

    Returns
    -------
    list[str]
        Tensors of the file that the module does not use (classifier heads, projection heads,
        layers after the last feature stage), also logged.

    Raises
    ------
    InputError
        A tensor's shape differs (the first one is named with both shapes), or the module has
        parameters/buffers that the file does not provide after renaming.
    """
    expected = module.state_dict()
    sd = remap_keys(state_dict, expected.keys(), key_map=key_map)
    conv_key = f"{first_conv}.weight" if first_conv else None
    if conv_key and mix is not None and conv_key in sd and sd[conv_key].ndim >= 2:
        if sd[conv_key].shape[1] != mix.shape[1]:
            raise InputError(
                f"{source}: {conv_key} takes {sd[conv_key].shape[1]} bands but the weights' band list has "
                f"{mix.shape[1]}; the weights do not belong to this spec"
            )
        sd[conv_key] = adapt_first_conv_weight(sd[conv_key], mix)
    if "pos_embed" in sd and "pos_embed" in expected and sd["pos_embed"].shape != expected["pos_embed"].shape:
        sd["pos_embed"] = _resample_pos_embed(sd["pos_embed"], expected["pos_embed"], module)
    for key, tensor in expected.items():
        if key in sd and tuple(sd[key].shape) != tuple(tensor.shape):
            raise InputError(
                f"{source}: {key} has shape {tuple(sd[key].shape)} in the weights but {tuple(tensor.shape)} in the "
                "encoder; the weights are for another architecture or size"
            )
    # BatchNorm's step counter is bookkeeping, absent from some exports; never worth failing for.
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        sample = next(iter(sd), "<none>")
        raise InputError(
            f"{source}: {len(missing)} of {len(expected)} encoder tensors are not in the weights after key-mapping, "
            f"first {missing[0]!r} (the weights have e.g. {sample!r}); pass a key_map renaming the weights' keys"
        )
    unused = [k for k in sd if k not in expected]
    if unused:
        log.info(
            "%s: %d tensors not used by the encoder (heads / later layers), e.g. %s", source, len(unused), unused[:3]
        )
    result = module.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
    assert not result.unexpected_keys  # filtered above
    return unused
