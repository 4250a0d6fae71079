"""Augmentation of training batches, one call for every task: ``before, after, target = augment(before, after, target)``.

* change training: :class:`deltacd.datasets.augment.PairAugmentation` (geometry shared by both
  dates and the label, misregistration, photometry per date, date swap), built from
  ``AugmentConfig`` options by :func:`build_augmentation`; its draws follow torch's global
  generator, which ``lightning.seed_everything`` seeds;
* damage training: :class:`DihedralAugmentation`, geometry only (the damage grade describes the
  post image and a footprint mask must stay on its building), from its own seeded generator.

Both run where the tensors are (on the device) and only in the training step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DihedralAugmentation", "build_augmentation"]


def build_augmentation(options: dict[str, Any] | None, *, ignore_index: int) -> nn.Module | None:
    """``deltacd.datasets.augment.PairAugmentation`` from AugmentConfig options (None: no augmentation)."""
    if options is None:
        return None
    from deltacd.config import build_options
    from deltacd.datasets.augment import AugmentConfig, PairAugmentation

    config = build_options(AugmentConfig, dict(options), source="augment")
    return PairAugmentation(config, symmetric_target=True, ignore_index=ignore_index)


class DihedralAugmentation(nn.Module):
    """The same random quarter turn and horizontal flip of every tensor of a batch (``[B, ..., H, W]``; None passes).

    One draw per batch from a :class:`torch.Generator` seeded with ``seed``: ``k`` quarter turns
    (0-3) then a flip with probability 1/2, so the eight symmetries of the square are equally
    likely. Exact permutations of the pixels: masks and class targets (ignore values included)
    are moved, never resampled.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
        k = int(torch.randint(0, 4, (1,), generator=self.generator))
        flip = bool(torch.randint(0, 2, (1,), generator=self.generator))
        out = []
        for t in tensors:
            if t is None:
                out.append(None)
                continue
            t = torch.rot90(t, k, dims=(-2, -1))
            out.append(torch.flip(t, dims=(-1,)) if flip else t)
        return tuple(out)
