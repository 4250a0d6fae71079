"""Losses for binary change with rare positives, all ignoring unlabelled pixels (255).

Changed pixels are typically 1-10 % of a VHR chip, so plain cross-entropy learns "no change
everywhere". Three remedies, chosen by :class:`~deltacd.train.config.LossConfig`:

* ``"bce_dice"`` -- cross-entropy (optionally with ``pos_weight``) plus a soft Dice term
  (Milletari et al. 2016, arXiv:1606.04797), which scores overlap and is insensitive to the class
  ratio; the usual choice for change detection.
* ``"focal"`` -- focal loss (Lin et al. 2017, arXiv:1708.02002): cross-entropy down-weighted on
  pixels already classified with confidence, so the many easy unchanged pixels stop dominating.
* ``"bce"`` -- cross-entropy with ``pos_weight`` alone.

Dice and focal come from ``segmentation_models_pytorch.losses``; cross-entropy is
``torch.nn.BCEWithLogitsLoss``. Every loss takes logits ``[B, 1, H, W]`` (float) and labels
``[B, H, W]`` (int64, 0 = unchanged, 1 = changed, ``ignore_index`` = unlabelled) and returns a
scalar. Pixels equal to ``ignore_index`` contribute nothing, neither to the value nor to the
gradient; a batch with no labelled pixel gives 0 (with a gradient of zeros).

The weights of rare classes come from the training labels: :func:`pos_weight_from_balance`
(change: negatives over positives) and :func:`class_weights` (damage grades: inverse frequencies).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import Tensor, nn
from torch.nn import functional as F

from deltacd.errors import InputError

__all__ = ["BCEDiceLoss", "FocalChangeLoss", "MaskedBCELoss", "build_loss", "class_weights", "pos_weight_from_balance"]


def _check(logits: Tensor, target: Tensor) -> Tensor:
    """Logits ``[B, 1, H, W]`` -> ``[B, H, W]`` (float32, the loss is computed in full precision)."""
    if logits.ndim != 4 or logits.shape[1] != 1 or logits.shape[0:1] + logits.shape[2:] != target.shape:
        raise InputError(
            f"loss: logits {tuple(logits.shape)} and labels {tuple(target.shape)} do not match; "
            "expected logits [B, 1, H, W] and labels [B, H, W]"
        )
    return logits[:, 0].float()


class MaskedBCELoss(nn.Module):
    """Binary cross-entropy with logits over the labelled pixels, mean over those pixels.

    Parameters
    ----------
    pos_weight
        Weight of the changed class (e.g. unchanged / changed pixel ratio), see
        :func:`pos_weight_from_balance`.
    ignore_index
        Label value of unlabelled pixels.
    """

    def __init__(self, *, pos_weight: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        x = _check(logits, target)
        keep = target != self.ignore_index
        if not keep.any():
            return x.sum() * 0.0
        per_pixel = F.binary_cross_entropy_with_logits(x[keep], target[keep].float(), pos_weight=self.pos_weight)
        return per_pixel


class BCEDiceLoss(nn.Module):
    """``BCE(pos_weight) + dice_weight * Dice`` over the labelled pixels.

    The Dice term is smp's binary ``DiceLoss`` computed over the whole batch (so a chip without
    change does not make it undefined); it zeroes unlabelled pixels in both prediction and target.
    """

    def __init__(self, *, pos_weight: float = 1.0, dice_weight: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        self.bce = MaskedBCELoss(pos_weight=pos_weight, ignore_index=ignore_index)
        self.dice = DiceLoss("binary", from_logits=True, ignore_index=ignore_index)
        self.dice_weight = float(dice_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = self.bce(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits.float(), target.unsqueeze(1))
        return loss


class FocalChangeLoss(nn.Module):
    """smp's binary ``FocalLoss`` with ``alpha = pos_weight / (1 + pos_weight)`` (``None`` when 1).

    ``alpha`` weighs changed pixels and ``1 - alpha`` unchanged ones, so their ratio is
    ``pos_weight``, as in :class:`MaskedBCELoss`.
    """

    def __init__(self, *, pos_weight: float = 1.0, gamma: float = 2.0, ignore_index: int = 255) -> None:
        super().__init__()
        alpha = None if pos_weight == 1.0 else pos_weight / (1.0 + pos_weight)
        self.focal = FocalLoss("binary", alpha=alpha, gamma=gamma, ignore_index=ignore_index)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        x = _check(logits, target)
        if not (target != self.ignore_index).any():
            return x.sum() * 0.0  # smp would return the NaN mean of nothing
        return self.focal(x, target)


def pos_weight_from_balance(class_balance: dict[str, Any], *, source: str = "manifest") -> float:
    """``unchanged / changed`` labelled pixels from a manifest's ``class_balance``.

    Accepts the shapes ``prepare-dataset`` may write: pixel counts per class (``{"unchanged": n0,
    "changed": n1}``, ``{"0": n0, "1": n1}``), optionally per split (``{"train": {...}}``, the
    training split is used), or fractions (``{"changed_fraction": f}`` / ``{"positive_fraction": f}``).

    Raises
    ------
    InputError
        No usable counts, or no changed pixel (pos_weight would be infinite).
    """
    balance: Any = class_balance
    if isinstance(balance, dict) and isinstance(balance.get("train"), dict):
        balance = balance["train"]
    if not isinstance(balance, dict):
        raise InputError(f"{source}: class_balance {class_balance!r} is not a mapping; set loss.pos_weight to a number")
    fraction = next((balance[k] for k in ("changed_fraction", "positive_fraction", "change_fraction") if k in balance), None)
    pos = next((balance[k] for k in ("changed", "change", "positive", "1", 1, "changed_pixels") if k in balance), None)
    neg = next((balance[k] for k in ("unchanged", "no_change", "negative", "0", 0, "unchanged_pixels") if k in balance), None)
    try:
        if pos is not None and neg is not None:
            pos, neg = float(pos), float(neg)
            if pos > 0:
                return neg / pos
        elif fraction is not None and 0 < float(fraction) < 1:
            return (1.0 - float(fraction)) / float(fraction)
    except (TypeError, ValueError):
        pass
    raise InputError(
        f"{source}: class_balance {class_balance!r} gives no changed/unchanged pixel counts; set loss.pos_weight to a number"
    )


def class_weights(target: np.ndarray, classes: int, *, ignore: int = 255, cap: float = 10.0) -> np.ndarray:
    """Weights inverse to each class's frequency (mean 1 over the present classes, capped at ``cap``)."""
    counts = np.bincount(target[target != ignore].ravel().astype(np.int64), minlength=classes)[:classes].astype(np.float64)
    present = counts > 0
    weights = np.zeros(classes)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return np.minimum(weights, cap) / max(np.minimum(weights, cap)[present].mean(), 1e-12)


def build_loss(
    kind: str, *, pos_weight: float = 1.0, dice_weight: float = 1.0, gamma: float = 2.0, ignore_index: int = 255
) -> nn.Module:
    """The loss module for ``kind`` in ``"bce_dice"``, ``"focal"``, ``"bce"``."""
    if kind == "bce_dice":
        return BCEDiceLoss(pos_weight=pos_weight, dice_weight=dice_weight, ignore_index=ignore_index)
    if kind == "focal":
        return FocalChangeLoss(pos_weight=pos_weight, gamma=gamma, ignore_index=ignore_index)
    if kind == "bce":
        return MaskedBCELoss(pos_weight=pos_weight, ignore_index=ignore_index)
    raise InputError(f"loss.kind: got {kind!r}, expected one of bce_dice, focal, bce")
