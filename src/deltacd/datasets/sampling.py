"""What a training step sees: sources drawn at their share, random crops of the chips.

Both answer a defect of small mixed training sets (3 LEVIR + 6 DSIFN crops): with a plain
shuffle the source with most chips dominates the gradient, and whole chips are always seen
at the same offsets, so a handful of chips give few distinct samples.

* :func:`source_weights` gives each chip the probability that makes every source drawn at its
  share (equal shares by default, whatever the chip counts); the draw itself is torch's
  ``WeightedRandomSampler`` (with replacement), seeded.
* :class:`RandomCrops` cuts one random window of ``size`` px out of each training chip, the same
  window in both dates and the label (validation and test see whole chips).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deltacd.errors import InputError

__all__ = ["RandomCrops", "source_weights"]


def source_weights(sources: Sequence[str], shares: Mapping[str, float] | None = None) -> np.ndarray:
    """Per-chip draw probabilities such that each source is drawn at its share.

    Parameters
    ----------
    sources
        Source name of each chip, in dataset order.
    shares
        Source name -> relative share (normalised to sum 1 over the sources present); None:
        equal shares. Sources absent from ``shares`` get none.

    Returns
    -------
    np.ndarray
        float64 [n], summing to 1: a chip of source ``s`` has ``share(s) / count(s)``.

    Raises
    ------
    InputError
        ``shares`` names a source that has no chip, or gives every present source 0.
    """
    counts = Counter(sources)
    if shares is None:
        shares = dict.fromkeys(counts, 1.0)
    unknown = sorted(set(shares) - set(counts))
    if unknown:
        raise InputError(f"source_shares: {', '.join(unknown)} has no training chip; use {', '.join(sorted(counts))}")
    total = sum(float(shares.get(s, 0.0)) for s in counts)
    if total <= 0:
        raise InputError("source_shares: every share is 0; give at least one source a positive share")
    weights = np.array([float(shares.get(s, 0.0)) / total / counts[s] for s in sources], dtype=np.float64)
    return weights


class RandomCrops(Dataset):
    """Items of ``dataset`` cut to a random ``size`` x ``size`` window, the same for every array.

    The window is drawn with torch's generator (seeded by Lightning's ``seed_everything``,
    per loader worker), so each epoch sees other offsets. Chips no larger than ``size`` pass
    unchanged.
    """

    def __init__(self, dataset: Dataset, size: int) -> None:
        if size < 16:
            raise InputError(f"crop_size: {size} px is too small; use at least 16")
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        height, width = item["label"].shape[-2:]
        if height <= self.size and width <= self.size:
            return item
        top = int(torch.randint(0, max(1, height - self.size + 1), ()).item())
        left = int(torch.randint(0, max(1, width - self.size + 1), ()).item())
        window = (slice(top, top + self.size), slice(left, left + self.size))
        return {k: v[(..., *window)] if isinstance(v, torch.Tensor) else v for k, v in item.items()}
