"""SiameseUNet: one shared segmentation-models-pytorch/timm encoder on both dates, fused per scale, U-Net decoder.

The siamese fusion schemes are those of Daudt, Le Saux, Boulch, "Fully Convolutional Siamese
Networks for Change Detection", ICIP 2018, doi:10.1109/ICIP.2018.8451652, applied to a large
(optionally pretrained) encoder, as ``torchgeo.models.FCSiamConc``/``FCSiamDiff`` do. The
U-Net decoder is Ronneberger, Fischer, Brox, "U-Net", MICCAI 2015,
doi:10.1007/978-3-319-24574-4_28, taken from segmentation-models-pytorch.

Why not ``torchgeo.models.FCSiamConc``/``FCSiamDiff``: they take a stacked ``[B, 2, C, H, W]``
input instead of (before, after), use a signed difference (``FCSiamDiff``) instead of
|difference|, fix ``encoder_weights="imagenet"`` as default (a download) and cannot take an
already-built encoder. The smp building blocks they use are reused here directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import initialization as smp_init
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from deltacd.errors import InputError, OfflineError
from deltacd.models.encoders import build_encoder
from deltacd.models.fc import check_pair

Fusion = Literal["diff", "concat", "early"]

#: smp's default U-Net decoder widths, deepest block first; cut to the encoder depth.
_DEFAULT_DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)


def _build_encoder(name: str, in_channels: int, depth: int, weights: str | None) -> nn.Module:
    """``smp.encoders.get_encoder`` with deltacd errors for unknown names and failed downloads."""
    try:
        return smp.encoders.get_encoder(name, in_channels=in_channels, depth=depth, weights=weights)
    except KeyError as err:
        # smp: "Wrong encoder name ..." or "Wrong pretrained weights ..." with the valid options.
        raise InputError(f"SiameseUNet: {err.args[0] if err.args else err}") from err
    except RuntimeError as err:
        # timm, through smp's "tu-" encoders: "Unknown model (...)".
        if "Unknown model" not in str(err):
            raise
        raise InputError(
            f"SiameseUNet: unknown encoder_name {name!r} ({err}); use an smp encoder name such as "
            f"'resnet18', 'efficientnet-b0', 'mobilenet_v2', or 'tu-<timm model name>'"
        ) from err
    except OSError as err:
        # Hugging Face Hub download failures (no network, not in the local cache) are OSErrors.
        if weights is None:
            raise
        raise OfflineError(
            f"SiameseUNet: encoder_weights={weights!r} for {name!r} must be downloaded and the "
            f"download failed ({err}); use encoder_weights=None, or fill the Hugging Face cache "
            f"(HF_HOME) on a connected machine first"
        ) from err


def _widen_first_conv(encoder: nn.Module, in_channels: int) -> None:
    """Widen the encoder's first convolution from ``in_channels`` bands to 2x, its kernel halved per date.

    The rule of smp's ``patch_first_conv`` for 2C bands from C (kernel ``i % C`` times C / 2C),
    without its silent pick of a later layer when the first one takes another band count.
    """
    first = next((m for m in encoder.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels != in_channels or first.groups != 1:
        raise InputError(
            f"SiameseUNet: fusion='early' needs an encoder whose first layer is a plain convolution "
            f"over the {in_channels} bands; this one starts with {first}; use fusion='diff'"
        )
    first.in_channels = 2 * in_channels
    first.weight = nn.Parameter(torch.cat([first.weight.detach()] * 2, dim=1) / 2)


class SiameseUNet(nn.Module):
    """Siamese U-Net: shared encoder on both dates, fusion at every scale, smp U-Net decoder.

    Input: ``before``, ``after`` [B, in_channels, H, W], H and W multiples of
    ``size_multiple`` (the encoder's output stride, 2**encoder_depth: 32 for depth 5).
    Output: change logits [B, num_classes, H, W].

    Encoder features ``f1``, ``f2`` (before, after) of each scale are fused by ``fusion``:

    * ``"diff"``: |f1 - f2|. The output is exactly invariant to swapping the dates.
    * ``"concat"``: cat([f1, f2]) then a 1x1 convolution back to the encoder's channel count,
      so the decoder is the same size as a single-image U-Net's.
    * ``"early"``: no siamese branches: the dates are stacked as one 2C-band image through the
      encoder (FC-EF's scheme, torchgeo's ``unet`` on stacked dates) and the decoder reads its
      features. The encoder's first convolution is widened to 2C bands, each date getting half
      of the (pretrained, band-adapted) kernel, so the network starts by seeing the mean of
      the two dates, as smp's positional rule gives torchgeo's ``unet`` with ImageNet weights.
      It is then invariant to the dates' order; training breaks that (the halves get different
      gradients). Half the encoder work of the siamese schemes. Measured worse than ``"diff"`` on
      LEVIR with the ImageNet Lite0 encoder at small budgets (docs/benchmarks.md, section 10).

    In the siamese schemes both dates go through the encoder as one batch of 2B images, so batch
    normalisation uses the same statistics for both dates in training mode.

    Args:
        in_channels: bands per date.
        num_classes: output channels (1 for binary change).
        encoder_name: an smp encoder name ("resnet18", "efficientnet-b0", "mobilenet_v2", ...)
            or "tu-<timm model name>" for any timm model smp can wrap.
        encoder_weights: None (random initialisation, the default: nothing is downloaded) or
            an smp weight name such as "imagenet" (for "tu-" encoders any non-None value
            loads timm's pretrained weights); a download needs network or a filled cache.
        encoder_depth: encoder stages used, 3 to 5.
        decoder_channels: widths of the decoder blocks, deepest first, one per encoder stage;
            default (256, 128, 64, 32, 16) cut to ``encoder_depth``.
        fusion: "diff", "concat" or "early", see above.
        encoder: an already-built encoder to use instead of ``encoder_name`` (then
            ``encoder_name``, ``encoder_weights`` and ``encoder_depth`` are not used). It must
            follow the smp encoder convention: ``forward(x)`` returns a list of depth+1 maps,
            the first at input resolution (its values are ignored) and map ``i`` at
            ``H / 2**i``; ``out_channels`` lists their channel counts (0 allowed for a missing
            scale, as smp's transformer-style timm encoders report); an optional
            ``output_stride`` int gives the size multiple (default 2**depth). A model built
            this way cannot be rebuilt from its keyword arguments alone.
        encoder_spec: an encoder spec of :func:`deltacd.models.encoders.build_encoder`
            ("efficientnet_lite0:imagenet", "timm:<name>", "torchgeo:<weights name>"), used
            instead of ``encoder_name`` (then ``encoder_depth`` must stay 5). ``encoder_weights``
            is passed as its ``weights``: None (the spec's default), "random", "timm" or
            "local:PATH". To rebuild a trained model from its checkpoint, store
            ``encoder_weights="random"``: the checkpoint's state dict replaces the parameters,
            and the pretrained file is then not needed.
        encoder_bands: names of the input bands (e.g. ["B", "G", "R", "N"]) for
            ``encoder_spec``, so that the pretrained first layer is adapted band by band
            (:mod:`deltacd.models.encoders.weights`); None: smp's positional rule.
    """

    name = "siamese-unet"
    #: For the default depth-5 encoders; instances set their own from the encoder.
    size_multiple: int = 32

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 1,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] | None = None,
        fusion: Fusion = "diff",
        encoder: nn.Module | None = None,
        encoder_spec: str | None = None,
        encoder_bands: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise InputError(
                f"SiameseUNet needs in_channels >= 1 and num_classes >= 1; "
                f"got in_channels={in_channels}, num_classes={num_classes}"
            )
        if fusion not in get_args(Fusion):
            raise InputError(f"SiameseUNet: fusion must be one of {list(get_args(Fusion))}; got {fusion!r}")
        if encoder_spec is not None:
            if encoder is not None:
                raise InputError("SiameseUNet: give encoder or encoder_spec, not both")
            if encoder_depth != 5:
                raise InputError(
                    f"SiameseUNet: encoder_spec encoders have 5 stages; got encoder_depth={encoder_depth}, leave it at 5"
                )
            encoder = build_encoder(encoder_spec, in_channels=in_channels, weights=encoder_weights, bands=encoder_bands)
            add_center_block = False
        elif encoder is None:
            if not 3 <= encoder_depth <= 5:
                raise InputError(f"SiameseUNet: encoder_depth must be 3, 4 or 5; got {encoder_depth}")
            encoder = _build_encoder(encoder_name, in_channels, encoder_depth, encoder_weights)
            # smp's own U-Net adds a center block for VGG encoders; do the same.
            add_center_block = encoder_name.startswith("vgg")
        else:
            add_center_block = False
        channels = [int(c) for c in encoder.out_channels]
        depth = len(channels) - 1
        if decoder_channels is None:
            decoder_channels = _DEFAULT_DECODER_CHANNELS[:depth]
        decoder_channels = [int(c) for c in decoder_channels]
        if len(decoder_channels) != depth:
            raise InputError(
                f"SiameseUNet: decoder_channels needs one width per encoder stage ({depth}); "
                f"got {len(decoder_channels)}: {decoder_channels}"
            )

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.fusion = fusion
        self.size_multiple = int(getattr(encoder, "output_stride", 2**depth))
        self.encoder = encoder
        if fusion == "early":
            _widen_first_conv(encoder, in_channels)
        if fusion == "concat":
            # Scale 0 is never read by the decoder and zero-channel scales carry nothing,
            # so they get no parameters (unused parameters would upset DDP).
            self.fuse = nn.ModuleList(
                nn.Conv2d(2 * c, c, kernel_size=1) if i > 0 and c > 0 else nn.Identity()
                for i, c in enumerate(channels)
            )
        else:
            self.fuse = None
        self.decoder = UnetDecoder(
            encoder_channels=channels,
            decoder_channels=decoder_channels,
            n_blocks=depth,
            add_center_block=add_center_block,
        )
        self.segmentation_head = smp.base.SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)
        # The same initialisation smp's own models give their decoder and head.
        if self.fuse is not None:
            smp_init.initialize_decoder(self.fuse)
        smp_init.initialize_decoder(self.decoder)
        smp_init.initialize_head(self.segmentation_head)

    def forward(self, before: Tensor, after: Tensor) -> Tensor:
        check_pair("SiameseUNet", before, after, self.in_channels, self.size_multiple)
        if self.fusion == "early":
            return self.segmentation_head(self.decoder(self.encoder(torch.cat([before, after], dim=1))))
        batch = before.shape[0]
        features = self.encoder(torch.cat([before, after], dim=0))
        # Scale 0 (the input itself for smp encoders) only gives the decoder its output size.
        fused = [features[0][:batch]]
        for i, feature in enumerate(features[1:], start=1):
            f1, f2 = feature[:batch], feature[batch:]
            if self.fuse is None:
                fused.append((f1 - f2).abs())
            else:
                fused.append(self.fuse[i](torch.cat([f1, f2], dim=1)))
        return self.segmentation_head(self.decoder(fused))
