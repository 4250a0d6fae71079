"""Training datasets for change detection: chips, splits and a manifest, from five kinds of ground truth.

:func:`prepare_dataset` turns ``chips`` folders (LEVIR-CD layout), change ``polygons`` over a
GeoTIFF pair, two ``landcover`` maps, ``xbd`` damage labels, or ``single_date`` labels paired as in
STAR (:mod:`deltacd.datasets.single_date`) into one folder of GeoTIFF chips
with ``chips.csv`` and ``manifest.json`` (bands, normalisation, splits, class balance);
:class:`~deltacd.datasets.torch_dataset.ChangeChipDataset` reads it back for training and
:class:`~deltacd.datasets.augment.PairAugmentation` augments batches of pairs on the GPU. The
torch modules are imported lazily (they need the ``learn`` extra).
"""

from __future__ import annotations

from deltacd.datasets.chips import DatasetConfig, SplitConfig, chip_offsets, load_config, prepare_dataset
from deltacd.datasets.manifest import ChipRecord, DatasetManifest, load_manifest, read_chips
from deltacd.datasets.sources import ChipsSource, LandcoverSource, PolygonsSource, SingleDateSource, XbdSource

__all__ = [
    "AugmentConfig", "ChangeChipDataset", "ChipRecord", "ChipsSource", "DatasetConfig", "DatasetManifest",
    "LandcoverSource", "PairAugmentation", "PolygonsSource", "SingleDateSource", "SplitConfig", "XbdSource", "chip_offsets",
    "load_config", "load_manifest", "prepare_dataset", "read_chips",
]


def __getattr__(name: str):
    # torch and kornia are optional (the ``learn`` extra): import them only when asked for.
    if name == "ChangeChipDataset":
        from deltacd.datasets.torch_dataset import ChangeChipDataset

        return ChangeChipDataset
    if name in ("AugmentConfig", "PairAugmentation"):
        from deltacd.datasets import augment

        return getattr(augment, name)
    raise AttributeError(f"module 'deltacd.datasets' has no attribute {name!r}")
