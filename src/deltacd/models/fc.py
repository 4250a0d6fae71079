"""The three fully convolutional change-detection networks FC-EF, FC-Siam-conc and FC-Siam-diff.

Daudt, Le Saux, Boulch, "Fully Convolutional Siamese Networks for Change Detection",
ICIP 2018, doi:10.1109/ICIP.2018.8451652.

All three share the paper's small 4-level U-Net: an encoder of conv-BN-ReLU-dropout blocks
with 16, 32, 64, 128 channels (2, 2, 3, 3 convolutions per level, 2x2 max-pooling after
each level), and a decoder that upsamples with stride-2 transposed convolutions and
concatenates a skip connection at each level. They differ only in how the two dates enter:

* FC-EF ("early fusion") stacks both dates as one 2C-band image;
* FC-Siam-conc runs both dates through one shared encoder and concatenates both dates'
  features at every skip connection;
* FC-Siam-diff runs both dates through one shared encoder and passes |f_before - f_after|
  at every skip connection.

Why written by hand instead of wrapping ``torchgeo.models.FCSiamConc``/``FCSiamDiff``:
torchgeo keeps the fusion schemes but swaps the paper's encoder for a
segmentation-models-pytorch encoder (ResNet-34 by default, about 20x more parameters), so it
is a siamese U-Net over a big backbone. :mod:`deltacd.models.siamese_unet` already covers
that case (with any smp/timm encoder); the paper's own ~1.3-1.5 M-parameter networks are
the useful complement: they train from scratch in minutes on a few hundred labelled tiles,
need no pretrained weights (so work offline and for any band count), and are the baselines
most change-detection papers report. torchgeo 0.8 also has no FC-EF.

Deliberate differences from the authors' code (github.com/rcdaudt/fully_convolutional_change_detection):

* The output is logits; the authors end with ``LogSoftmax``. Callers apply the loss.
* The decoder's stride-1 ``ConvTranspose2d`` layers are written as ``Conv2d``: a stride-1,
  padding-1, 3x3 transposed convolution is a 3x3 convolution with a flipped kernel, with
  the same parameter count, so only the parameter layout differs.
* Height and width must be multiples of 16 (``size_multiple``). The authors replicate-pad
  upsampled maps to fit odd sizes; requiring multiples keeps the pooling grid aligned with
  the tile, so predictions do not depend on where a tile edge falls and there is no
  replicated strip at the bottom/right edge. The tiled engine chooses multiples anyway.
* Both dates go through the shared encoder as one batch of 2B images. In training mode,
  batch normalisation then uses the same statistics for both dates (the authors run the
  dates one after the other, normalising each date with its own batch statistics), so a
  feature difference is not shifted by per-date statistics and train and eval behave alike.
* FC-Siam-diff starts its decoder from |pooled deepest features before - after|. The authors'
  code starts it from the *after* image's deepest features alone, which makes the network
  depend on the order of the dates; with the difference everywhere the output is exactly
  invariant to swapping the dates (the point of the diff variant).
  FC-Siam-conc keeps the authors' choice (decoder starts from the after image).

This module also holds :func:`check_pair`, the input check shared by every model in
:mod:`deltacd.models` (it lives here because this module imports nothing else from the
package; the registry imports the models, so it cannot host it without an import cycle).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deltacd.errors import InputError

#: Encoder channels per level and convolutions per level, as in the paper.
_LEVEL_CHANNELS: tuple[int, ...] = (16, 32, 64, 128)
_LEVEL_DEPTHS: tuple[int, ...] = (2, 2, 3, 3)


def check_pair(model_label: str, before: Tensor, after: Tensor, in_channels: int, size_multiple: int) -> None:
    """Raise :class:`InputError` unless ``before``/``after`` fit a model's input contract.

    Both must be 4-D ``[B, in_channels, H, W]`` tensors of the same shape, with H and W
    multiples of ``size_multiple`` (1 means any size). ``model_label`` names the model in
    the message.
    """
    for label, tensor in (("before", before), ("after", after)):
        if tensor.ndim != 4:
            raise InputError(
                f"{model_label} expects {label} as a [batch, bands, height, width] tensor; "
                f"got {tensor.ndim} dimensions with shape {tuple(tensor.shape)}"
            )
    if before.shape != after.shape:
        raise InputError(
            f"{model_label} needs before and after of the same shape; got {tuple(before.shape)} "
            f"and {tuple(after.shape)} — resample both dates onto one grid first"
        )
    bands = before.shape[1]
    if bands != in_channels:
        raise InputError(
            f"{model_label} was built for {in_channels} bands (in_channels={in_channels}); "
            f"got {bands} — select the same bands used for training, or rebuild the model "
            f"with in_channels={bands}"
        )
    height, width = before.shape[-2:]
    if height % size_multiple or width % size_multiple:
        padded_h = -(-height // size_multiple) * size_multiple
        padded_w = -(-width // size_multiple) * size_multiple
        raise InputError(
            f"{model_label} needs height and width divisible by {size_multiple}; got "
            f"{height}x{width} — pad the tile to {padded_h}x{padded_w}"
        )


def _conv_bn_relu_dropout(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """One 3x3 conv-BN-ReLU-Dropout2d unit, the building block of both encoder and decoder."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(p=dropout),
    )


class _Encoder(nn.Module):
    """The paper's 4-level encoder: [B, C, H, W] -> 4 skip maps and the pooled deepest map.

    Skip ``i`` has ``_LEVEL_CHANNELS[i]`` channels at ``H / 2**i``; the pooled map has 128
    channels at ``H / 16``.
    """

    def __init__(self, in_channels: int, dropout: float) -> None:
        super().__init__()
        levels = []
        previous = in_channels
        for channels, depth in zip(_LEVEL_CHANNELS, _LEVEL_DEPTHS, strict=True):
            units = [_conv_bn_relu_dropout(previous if i == 0 else channels, channels, dropout) for i in range(depth)]
            levels.append(nn.Sequential(*units))
            previous = channels
        self.levels = nn.ModuleList(levels)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        return skips, x


class _Decoder(nn.Module):
    """The paper's 4-level decoder: pooled map + 4 skips -> logits [B, num_classes, H, W].

    ``skip_factor`` is how many encoder maps are concatenated per skip connection: 1 for
    FC-EF and FC-Siam-diff, 2 for FC-Siam-conc.
    """

    def __init__(self, num_classes: int, skip_factor: int, dropout: float) -> None:
        super().__init__()
        # Per level, deepest first: (channels in, after-concat convolution outputs).
        # Level 4: 128 -> 128, 128, 64; level 3: 64 -> 64, 64, 32; level 2: 32 -> 32, 16;
        # level 1: 16 -> 16, then the final 3x3 convolution to num_classes.
        plan: list[tuple[int, tuple[int, ...]]] = [
            (128, (128, 128, 64)),
            (64, (64, 64, 32)),
            (32, (32, 16)),
            (16, (16,)),
        ]
        self.upsample = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for channels, outputs in plan:
            # kernel 3, padding 1, output_padding 1: exact 2x upsampling, as the authors do.
            self.upsample.append(
                nn.ConvTranspose2d(channels, channels, kernel_size=3, stride=2, padding=1, output_padding=1)
            )
            previous = channels + skip_factor * channels
            units = []
            for out in outputs:
                units.append(_conv_bn_relu_dropout(previous, out, dropout))
                previous = out
            self.blocks.append(nn.Sequential(*units))
        # No BN/ReLU/dropout on the last layer: it emits the logits.
        self.head = nn.Conv2d(16, num_classes, kernel_size=3, padding=1)

    def forward(self, bottom: Tensor, skips: list[Tensor]) -> Tensor:
        x = bottom
        for upsample, block, skip in zip(self.upsample, self.blocks, reversed(skips), strict=True):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


class _FCBase(nn.Module):
    """Shared constructor, layers and input check of the three FC networks."""

    name: str = ""
    #: Four 2x2 poolings: height and width must be multiples of 2**4.
    size_multiple: int = 16
    #: Images the encoder sees stacked as one (2: both dates, FC-EF; 1: one date at a time).
    stacked_dates: int = 1
    #: Encoder maps concatenated per skip connection (see :class:`_Decoder`).
    skip_factor: int = 1

    def __init__(self, in_channels: int, num_classes: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise InputError(
                f"{type(self).__name__} needs in_channels >= 1 and num_classes >= 1; "
                f"got in_channels={in_channels}, num_classes={num_classes}"
            )
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"{type(self).__name__} needs 0 <= dropout < 1; got dropout={dropout}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder = _Encoder(self.stacked_dates * in_channels, dropout)
        self.decoder = _Decoder(num_classes, skip_factor=self.skip_factor, dropout=dropout)

    def _check(self, before: Tensor, after: Tensor) -> None:
        check_pair(type(self).__name__, before, after, self.in_channels, self.size_multiple)


class FCEarlyFusion(_FCBase):
    """FC-EF: the two dates stacked as one 2C-band image through a plain 4-level U-Net.

    Daudt, Le Saux, Boulch, ICIP 2018, doi:10.1109/ICIP.2018.8451652.

    Input: ``before``, ``after`` [B, in_channels, H, W], H and W multiples of 16.
    Output: change logits [B, num_classes, H, W]. Depends on the order of the dates.
    """

    name = "fc-ef"
    stacked_dates = 2

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        self._check(before, after)
        skips, bottom = self.encoder(torch.cat([before, after], dim=1))
        return self.decoder(bottom, skips)


class FCSiamConc(_FCBase):
    """FC-Siam-conc: shared encoder on both dates, both dates' features concatenated at each skip.

    Daudt, Le Saux, Boulch, ICIP 2018, doi:10.1109/ICIP.2018.8451652.

    Input: ``before``, ``after`` [B, in_channels, H, W], H and W multiples of 16.
    Output: change logits [B, num_classes, H, W]. Depends on the order of the dates (the
    concatenation order and, as in the authors' code, a decoder that starts from the after
    image's deepest features).
    """

    name = "fc-siam-conc"
    skip_factor = 2

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        self._check(before, after)
        batch = before.shape[0]
        # One encoder pass over both dates: [2B, C, H, W]; first half before, second after.
        skips, bottom = self.encoder(torch.cat([before, after], dim=0))
        fused = [torch.cat([skip[:batch], skip[batch:]], dim=1) for skip in skips]
        return self.decoder(bottom[batch:], fused)


class FCSiamDiff(_FCBase):
    """FC-Siam-diff: shared encoder on both dates, |feature difference| at each skip.

    Daudt, Le Saux, Boulch, ICIP 2018, doi:10.1109/ICIP.2018.8451652.

    Input: ``before``, ``after`` [B, in_channels, H, W], H and W multiples of 16.
    Output: change logits [B, num_classes, H, W], exactly invariant to swapping the dates
    (in eval mode; in training mode dropout draws random masks).
    """

    name = "fc-siam-diff"

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        self._check(before, after)
        batch = before.shape[0]
        skips, bottom = self.encoder(torch.cat([before, after], dim=0))
        fused = [(skip[:batch] - skip[batch:]).abs() for skip in skips]
        return self.decoder((bottom[:batch] - bottom[batch:]).abs(), fused)
