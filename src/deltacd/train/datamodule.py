"""The Lightning data module over a ``deltacd prepare-dataset`` folder (train / val / test chips).

Chips are read by :class:`deltacd.datasets.torch_dataset.ChangeChipDataset` as raw digital
numbers; normalisation and augmentation happen in the task, on the device. Everything random
(order of training chips, the few-label subset) follows ``seed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler

from deltacd.datasets.sampling import RandomCrops, source_weights
from deltacd.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["ChangeDataModule", "balanced_sampler", "subset_indices"]


def subset_indices(n: int, keep: int | None, *, seed: int) -> list[int]:
    """Indices of the chips kept for training: all, or the first ``keep`` of a seeded shuffle.

    The shuffle is of the chips in ``chips.csv`` order, so the same ``seed`` and ``keep`` pick the
    same chips on every machine; a larger ``keep`` adds chips to a smaller one's (nested subsets).
    """
    if keep is None or keep >= n:
        return list(range(n))
    return np.random.default_rng(seed).permutation(n)[:keep].tolist()


def balanced_sampler(sources: list[str], shares: dict[str, float] | None = None, *,
                     generator: torch.Generator) -> WeightedRandomSampler:
    """Draws of one epoch (as many as ``sources``, with replacement) that give each source its share.

    ``sources``: the source (or event) name of each sample; ``shares``: name -> share (default
    equal; :func:`~deltacd.datasets.sampling.source_weights`).
    """
    weights = torch.as_tensor(source_weights(sources, shares))
    return WeightedRandomSampler(weights, len(sources), replacement=True, generator=generator)


class ChangeDataModule(L.LightningDataModule):
    """Train / val / test loaders of a dataset folder.

    Parameters
    ----------
    root
        Dataset folder (``manifest.json``, ``chips.csv``, ``A/``, ``B/``, ``label/``).
    batch_size
        Chips per batch.
    num_workers
        Loader processes (0: load in the main process).
    seed
        Seeds the training order and the ``max_train_chips`` subset.
    max_train_chips
        Keep only this many training chips (see :func:`subset_indices`).
    crop_size
        Train on random ``crop_size`` px windows of the chips (:class:`~deltacd.datasets.sampling.RandomCrops`);
        None: whole chips. Validation and test always see whole chips.
    balance_sources
        Draw training chips so that each source gets its share of every epoch (with
        replacement, :func:`~deltacd.datasets.sampling.source_weights`) instead of a shuffle,
        when the training chips come from more than one source.
    source_shares
        Source name -> share for ``balance_sources`` (default: equal).

    Each batch is a dict: ``"before"``, ``"after"`` float32 ``[B, C, H, W]`` (raw DN),
    ``"label"`` int64 ``[B, H, W]``, ``"id"`` list of chip ids.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        batch_size: int = 8,
        num_workers: int = 2,
        seed: int = 0,
        max_train_chips: int | None = None,
        crop_size: int | None = None,
        balance_sources: bool = False,
        source_shares: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.max_train_chips = max_train_chips
        self.crop_size = crop_size
        self.balance_sources = balance_sources
        self.source_shares = source_shares
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, split: str) -> Dataset:
        """The chips of ``split`` (``"train"`` is the ``max_train_chips`` subset), built once."""
        if split not in self.datasets:
            from deltacd.datasets.torch_dataset import ChangeChipDataset

            ds: Dataset = ChangeChipDataset(self.root, split)
            if split == "train":
                ds = Subset(ds, subset_indices(len(ds), self.max_train_chips, seed=self.seed))
                if self.crop_size:
                    ds = RandomCrops(ds, self.crop_size)
            self.datasets[split] = ds
        return self.datasets[split]

    def sizes(self) -> dict[str, int]:
        """Chips per split as used (train after ``max_train_chips``)."""
        return {split: len(self.dataset(split)) for split in ("train", "val", "test")}

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None):
            for split in ("train", "val"):
                if len(self.dataset(split)) == 0:
                    raise InputError(
                        f"dataset: {self.root} has no {split} chips; re-run `deltacd prepare-dataset` with a {split} split"
                    )
        if stage in ("validate", None):
            self.dataset("val")
        if stage in ("test", None):
            self.dataset("test")

    def sources(self, split: str) -> list[str]:
        """Source name of each chip of ``split`` as used (train: the subset), in loader order."""
        from deltacd.datasets.torch_dataset import ChangeChipDataset

        ds = self.dataset(split)
        if isinstance(ds, RandomCrops):
            ds = ds.dataset
        if isinstance(ds, Subset):
            return [ds.dataset.sources[i] for i in ds.indices]  # type: ignore[attr-defined]
        assert isinstance(ds, ChangeChipDataset)
        return list(ds.sources)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        options: dict[str, Any] = {}
        if shuffle:
            generator = torch.Generator().manual_seed(self.seed)
            sources = self.sources(split)
            if self.balance_sources and len(set(sources)) > 1:
                options["sampler"] = balanced_sampler(sources, self.source_shares, generator=generator)
                shuffle = False
            else:
                options["generator"] = generator
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
