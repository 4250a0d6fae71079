"""Plain ViT backbones as multi-scale encoders, through the simple feature pyramid of ViTDet.

Li, Mao, Girshick, He, "Exploring Plain Vision Transformer Backbones for Object Detection",
ECCV 2022, arXiv:2203.16527, Sec. 3 / Fig. 2(c): the maps of strides 4, 8, 16, 32 are all
built from the *last* block's tokens (a stride-16 map), by two 2x2 stride-2 deconvolutions
(with LayerNorm and GELU between them), one deconvolution, identity and 2x2 max pooling.

Differences from ViTDet, with reasons
-------------------------------------
* ViTDet follows each scale with a 1x1 and a 3x3 convolution (LayerNorm after each) to a
  common width of 256 for its detection heads. They are left out: here the maps feed a U-Net
  decoder whose blocks already apply two 3x3 convolutions per scale to the fused features,
  and the extra convolutions would add about 2.4 M parameters to a 5.5 M ViT-Tiny.
  The scale widths are therefore ViTDet's intermediate ones: D/4, D/2, D, D.
* Patch sizes other than 16 (e.g. 14 for DINOv2) give a token map of stride p; it is
  resampled (bilinear) to stride 16 before the pyramid, so the scales stay powers of two.
  The input side must then be a multiple of lcm(p, 32) (224 for p = 14).
* The U-Net decoder expects a stride-2 map too; there is none, so it is an empty
  ``[B, 0, H/2, W/2]`` tensor with 0 channels, the convention of smp's transformer encoders.

Input sizes: the ViT is built with timm's ``dynamic_img_size=True``, which interpolates the
absolute position embeddings to the token grid of each input, so any multiple of
``output_stride`` works (e.g. 256 for a model trained at 224).
"""

from __future__ import annotations

import math

import torch
from timm.layers import LayerNorm2d
from torch import Tensor, nn
from torch.nn import functional as F

from deltacd.errors import InputError
from deltacd.models.encoders.base import Encoder

__all__ = ["SimpleFeaturePyramid", "ViTPyramidEncoder"]


class SimpleFeaturePyramid(nn.Module):
    """Stride-16 map ``[B, D, H/16, W/16]`` -> maps at strides 4, 8, 16, 32 with D/4, D/2, D, D channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 4:
            raise InputError(f"SimpleFeaturePyramid: embedding width {dim} must be a multiple of 4")
        self.channels = [dim // 4, dim // 2, dim, dim]
        self.scales = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                    LayerNorm2d(dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
                ),
                nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        return [scale(x) for scale in self.scales]


class ViTPyramidEncoder(Encoder):
    """A timm ViT (``forward_intermediates`` API) + :class:`SimpleFeaturePyramid`, in smp's encoder convention.

    ``forward(x [B, C, H, W])`` returns ``[x, empty [B, 0, H/2, W/2], f4, f8, f16, f32]`` with
    ``out_channels = [C, 0, D/4, D/2, D, D]``. The last block's tokens go through the ViT's final
    LayerNorm (its pretrained parameters are used) before the pyramid; prefix (class/register)
    tokens are dropped. The classifier head is removed.

    Parameters
    ----------
    model
        A timm ViT built with ``dynamic_img_size=True`` and ``in_chans=C``.
    spec
        The encoder spec, kept as ``self.spec``.
    in_channels
        C.
    """

    def __init__(self, model: nn.Module, *, spec: str, in_channels: int) -> None:
        super().__init__()
        patch = model.patch_embed.patch_size
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        # Keep the last block (and the final norm), drop the head.
        model.prune_intermediate_layers(indices=1, prune_norm=False, prune_head=True)
        self.model = model
        self.patch_size = patch
        dim = int(model.embed_dim)
        self.pyramid = SimpleFeaturePyramid(dim)
        self.out_channels = [in_channels, 0, *self.pyramid.channels]
        self.output_stride = math.lcm(patch, 32)
        self.first_conv = "patch_embed.proj"
        self.spec = spec

    def forward(self, x: Tensor) -> list[Tensor]:
        batch, _, height, width = x.shape
        (tokens,) = self.model.forward_intermediates(
            x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        if self.patch_size != 16:
            tokens = F.interpolate(tokens, size=(height // 16, width // 16), mode="bilinear", align_corners=False)
        empty = torch.empty(batch, 0, height // 2, width // 2, dtype=x.dtype, device=x.device)
        return [x, empty, *self.pyramid(tokens)]
