"""Paired augmentation of change-detection batches, on any device, built on kornia.augmentation.

One call transforms a batch (before [B, C, H, W] normalised float, after, label [B, H, W] long):

1. **Geometry, shared** by both dates and the label: horizontal / vertical flips, rotations by
   90, 180 or 270 degrees (square chips only), optionally a small affine transform. Labels are
   resampled with nearest neighbour; pixels that the affine transform brings in from outside the
   chip get ``ignore_index`` in the label and 0 (the band mean) in the images.
2. **Misregistration of ``after`` only**: a random translation of up to ``max_shift_px`` pixels
   (bilinear, border padding), so that the model learns to tolerate the residual shift of real
   pairs; the label stays on the ``before`` geometry.
3. **Photometry, independent per date**: brightness offset and contrast gain in normalised units,
   Gaussian noise, optional Gaussian blur. These kornia transforms are band-agnostic, so any band
   count works (unlike RGB ``ColorJitter``); outputs are not clipped.
4. **Date swap** of whole samples. A binary change label is symmetric in time, so swapping
   before/after is a free augmentation; targets that are not (``from``/``to`` land-cover classes,
   xBD ``damage`` which describes the post image) must not be swapped: build the module with
   ``symmetric_target=False``.

Random draws come from torch's generator. With ``seed`` set, each call draws a sub-seed from the
module's own :class:`torch.Generator` and runs kornia under :func:`torch.random.fork_rng`, so
results are reproducible and the global RNG is left alone; without it, the global RNG is used
(``lightning.seed_everything`` then governs).
"""

from __future__ import annotations

from typing import Annotated

import kornia.augmentation as K
import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import nn

from deltacd.config import STRICT
from deltacd.errors import InputError

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


@pydantic_dataclass(frozen=True, config=STRICT)
class AugmentConfig:
    """Settings of :class:`PairAugmentation`; photometric amounts are in normalised units (band std).

    Attributes
    ----------
    enabled
        False: the module returns its inputs unchanged.
    hflip_p, vflip_p, rot90_p
        Probabilities of a horizontal flip, a vertical flip, a rotation by 90/180/270 degrees.
    affine_p, affine_degrees, affine_scale, affine_translate
        Probability and range of a small affine transform (rotation in degrees, scale factor,
        translation as a fraction of the chip side); off by default.
    brightness, contrast, photometric_p
        Offset drawn in [-brightness, brightness], gain in [1 - contrast, 1 + contrast], each
        applied with probability photometric_p, independently per date.
    noise_std, noise_p
        Additive Gaussian noise (std) and its probability, per date.
    blur_p, blur_sigma
        Probability and sigma range (px) of a Gaussian blur, per date; off by default.
    shift_p, max_shift_px
        Probability and maximum size (px, per axis) of the misregistration of ``after``.
    swap_p
        Probability of exchanging the dates of a sample (ignored when the target is not symmetric).
    """

    enabled: bool = True
    hflip_p: Probability = 0.5
    vflip_p: Probability = 0.5
    rot90_p: Probability = 0.5
    affine_p: Probability = 0.0
    affine_degrees: NonNegativeFloat = 10.0
    affine_scale: tuple[PositiveFloat, PositiveFloat] = (0.9, 1.1)
    affine_translate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.05
    brightness: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    contrast: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    photometric_p: Probability = 0.8
    noise_std: NonNegativeFloat = 0.05
    noise_p: Probability = 0.3
    blur_p: Probability = 0.0
    blur_sigma: tuple[PositiveFloat, PositiveFloat] = (0.1, 1.0)
    shift_p: Probability = 0.3
    max_shift_px: NonNegativeFloat = 1.5
    swap_p: Probability = 0.5


class PairAugmentation(nn.Module):
    """Augment a batch of image pairs and their labels (see the module docstring).

    Parameters
    ----------
    config
        Settings (default :class:`AugmentConfig()`).
    symmetric_target
        False for targets that change meaning when the dates are exchanged (``from``/``to``,
        ``damage``): date swapping is then disabled.
    ignore_index
        Label value of ignored pixels, also given to pixels padded by the affine transform.
    seed
        Makes the sequence of augmentations reproducible (see the module docstring).

    Notes
    -----
    Runs where the tensors are (call it on the GPU batch, e.g. in ``on_after_batch_transfer``).
    Only in training mode: after ``.eval()`` it returns its inputs unchanged.
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        *,
        symmetric_target: bool = True,
        ignore_index: int = 255,
        seed: int | None = None,
    ):
        super().__init__()
        self.config = config if config is not None else AugmentConfig()
        self.symmetric_target = symmetric_target
        self.ignore_index = ignore_index
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        c = self.config
        flips = []
        if c.hflip_p > 0:
            flips.append(K.RandomHorizontalFlip(p=c.hflip_p))
        if c.vflip_p > 0:
            flips.append(K.RandomVerticalFlip(p=c.vflip_p))
        affine = []
        if c.affine_p > 0:
            affine.append(K.RandomAffine(
                degrees=c.affine_degrees, translate=(c.affine_translate, c.affine_translate), scale=c.affine_scale,
                padding_mode="zeros", p=c.affine_p,
            ))
        rot90 = [K.RandomRotation90(times=(1, 3), resample="nearest", p=c.rot90_p)] if c.rot90_p > 0 else []
        keys = ["input", "input", "mask"]
        # Rotating a non-square chip inside its own frame would crop it: rotations need H == W.
        self.geometry_square = K.AugmentationSequential(*flips, *rot90, *affine, data_keys=keys) if flips or rot90 or affine else None
        self.geometry_other = K.AugmentationSequential(*flips, *affine, data_keys=keys) if flips or affine else None
        photometric = []
        if c.photometric_p > 0 and c.brightness > 0:
            photometric.append(K.RandomBrightness((1 - c.brightness, 1 + c.brightness), clip_output=False, p=c.photometric_p))
        if c.photometric_p > 0 and c.contrast > 0:
            photometric.append(K.RandomContrast((1 - c.contrast, 1 + c.contrast), clip_output=False, p=c.photometric_p))
        if c.noise_p > 0 and c.noise_std > 0:
            photometric.append(K.RandomGaussianNoise(std=c.noise_std, p=c.noise_p))
        if c.blur_p > 0:
            kernel = 2 * int(3 * c.blur_sigma[1] + 0.5) + 1
            photometric.append(K.RandomGaussianBlur((kernel, kernel), c.blur_sigma, p=c.blur_p))
        self.photometric = K.ImageSequential(*photometric) if photometric else None

    def forward(
        self, before: torch.Tensor, after: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented (before, after, label), same shapes, dtypes and device as the inputs.

        Parameters
        ----------
        before, after : torch.Tensor
            float [B, C, H, W], normalised.
        label : torch.Tensor
            int64 [B, H, W]; values 0..ignore_index.
        """
        _check(before, after, label)
        if not (self.config.enabled and self.training):
            return before, after, label
        if self._generator is None:
            return self._augment(before, after, label)
        sub_seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
        devices = [before.device.index or 0] if before.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(sub_seed)
            return self._augment(before, after, label)

    def _augment(self, before: torch.Tensor, after: torch.Tensor, label: torch.Tensor):
        c = self.config
        height, width = before.shape[-2:]
        geometry = self.geometry_square if height == width else self.geometry_other
        if geometry is not None:
            # Labels travel as (value + 1) so that the zeros padded in by the affine transform
            # are told apart from class 0; nearest resampling keeps the codes exact.
            shifted = (label + 1).unsqueeze(1).to(before.dtype)
            before, after, shifted = geometry(before, after, shifted)
            shifted = shifted.squeeze(1).round().long()
            label = torch.where(shifted == 0, torch.full_like(shifted, self.ignore_index), shifted - 1)
        if c.shift_p > 0 and c.max_shift_px > 0:
            shift = K.RandomAffine(
                degrees=0.0, translate=(c.max_shift_px / width, c.max_shift_px / height), padding_mode="border", p=c.shift_p
            )
            after = shift(after)
        if self.photometric is not None:
            before = self.photometric(before)
            after = self.photometric(after)  # a second call: new, independent parameters
        if self.symmetric_target and c.swap_p > 0:
            swap = (torch.rand(before.shape[0]) < c.swap_p).to(before.device).view(-1, 1, 1, 1)
            before, after = torch.where(swap, after, before), torch.where(swap, before, after)
        return before, after, label


def _check(before: torch.Tensor, after: torch.Tensor, label: torch.Tensor) -> None:
    if before.ndim != 4 or before.shape != after.shape:
        raise InputError(
            f"before/after: got shapes {tuple(before.shape)} and {tuple(after.shape)}, expected two equal [B, C, H, W]; "
            "pass batches of pairs"
        )
    if label.shape != (before.shape[0], *before.shape[2:]):
        raise InputError(f"label: got shape {tuple(label.shape)}, expected {(before.shape[0], *before.shape[2:])} ([B, H, W])")
    if label.is_floating_point():
        raise InputError(f"label: got {label.dtype}, expected an integer tensor (int64 class codes)")
