"""The encoder base class (smp's contract plus what the weights expect) and the timm and torchvision Swin encoders.

The contract and the normalisation attributes: :mod:`deltacd.models.encoders.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from deltacd.errors import InputError

__all__ = ["Encoder", "TimmEncoder", "TorchvisionSwinEncoder"]

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
