"""A torch ``Dataset`` over a folder written by :func:`deltacd.datasets.prepare_dataset`.

Items are raw digital numbers: normalisation is left to the training module, which applies the
manifest's per-band statistics so that the very same statistics travel in the checkpoint.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from torch.utils.data import Dataset

from deltacd.datasets.manifest import DatasetManifest, load_manifest
from deltacd.errors import InputError, MissingInputError


class ChangeChipDataset(Dataset):
    """Chips of one split of a prepared dataset.

    Parameters
    ----------
    root
        The dataset folder (holding ``manifest.json``).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    target
        Folder the target is read from: ``"label"`` (binary change) or one of the manifest's
        ``extra_targets`` (``"from"``, ``"to"``, ``"damage"``).

    Items are dicts:

    ``before``, ``after``
        float32 tensors [C, H, W], raw digital numbers, bands in ``manifest.bands`` order.
    ``label``
        int64 tensor [H, W]; ``manifest.ignore_index`` (255) marks pixels to ignore.
    ``id``
        The chip id (file stem, row of ``chips.csv``).
    ``source``
        Name of the source the chip was cut from (``chips.csv`` ``source_name``), for sampling
        and validation per source.
    """

    def __init__(self, root: str | Path, split: Literal["train", "val", "test", "all"], *, target: str = "label"):
        self.manifest: DatasetManifest = load_manifest(root)
        self.root = self.manifest.root
        if split not in ("train", "val", "test", "all"):
            raise InputError(f"split: got {split!r}, expected 'train', 'val', 'test' or 'all'")
        allowed = ("label", *self.manifest.extra_targets)
        if target not in allowed:
            raise InputError(f"target: got {target!r}; {self.root} has {', '.join(allowed)}")
        self.split, self.target = split, target
        records = self.manifest.chips(split)
        self.ids = [r.id for r in records]
        self.sources = [r.source_name for r in records]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        chip_id = self.ids[index]
        before = _read(self.root / "A" / f"{chip_id}.tif")
        after = _read(self.root / "B" / f"{chip_id}.tif")
        label = _read(self.root / self.target / f"{chip_id}.tif")[0]
        return {
            "before": torch.from_numpy(before.astype(np.float32, copy=False)),
            "after": torch.from_numpy(after.astype(np.float32, copy=False)),
            "label": torch.from_numpy(label.astype(np.int64)),
            "id": chip_id,
            "source": self.sources[index],
        }

    def __repr__(self) -> str:
        return f"ChangeChipDataset({str(self.root)!r}, {self.split!r}, target={self.target!r}, n={len(self)})"


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MissingInputError(f"{path}: chip listed in chips.csv is missing; prepare the dataset again")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read()
