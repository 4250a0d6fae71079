"""The manifest of a prepared dataset (``manifest.json`` + ``chips.csv``) and the statistics it holds.

A dataset folder written by :func:`deltacd.datasets.prepare_dataset` describes itself::

    A/<id>.tif, B/<id>.tif     before / after chips, raw data type and values (GeoTIFF)
    label/<id>.tif             uint8: 0 no change, 1 change, ignore_index unlabelled / no data
    from/, to/, damage/        optional extra targets (uint8, same ignore value)
    chips.csv                  id, split, source, source_name, scene, row_off, col_off, block
                               (+ pair_of: "<before chip>;<after chip>" when a single_date source
                               paired single-date chips, see deltacd.datasets.single_date)
    manifest.json              bands, dtype, normalisation, splits, class balance, sources, split rule

:func:`load_manifest` reads it back for the training code; the normalisation (per band, in raw
digital numbers, over the train chips of both dates) is what a checkpoint then carries.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deltacd.errors import InputError, MissingInputError

FORMAT = "deltacd-dataset/1"
MANIFEST = "manifest.json"
CHIPS_CSV = "chips.csv"
CSV_COLUMNS = ("id", "split", "source", "source_name", "scene", "row_off", "col_off", "block")
#: Optional last column of ``chips.csv``: the two single-date chips a STAR pair was made of.
PAIR_COLUMN = "pair_of"
SPLITS = ("train", "val", "test")


@dataclass
class BandMoments:
    """Per-band pixel count, mean and sum of squared deviations, merged chip by chip.

    The pairwise update of Chan, Golub & LeVeque (The American Statistician 37(3), 1983,
    doi:10.1080/00031305.1983.10483115) keeps float64 accuracy over billions of pixels.

    Attributes
    ----------
    count : int
        Pixels per band.
    mean, m2 : np.ndarray
        float64 [C]: mean and sum of squared deviations from it.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, bands: int) -> BandMoments:
        return cls(0, np.zeros(bands), np.zeros(bands))

    @classmethod
    def of(cls, values: np.ndarray) -> BandMoments:
        """Moments of ``values`` [C, N] (any numeric type)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[1] == 0:
            return cls.empty(values.shape[0])
        mean = values.mean(axis=1)
        return cls(values.shape[1], mean, ((values - mean[:, None]) ** 2).sum(axis=1))

    def merge(self, other: BandMoments) -> BandMoments:
        """Moments of the union of both pixel sets."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / n
        return BandMoments(n, mean, m2)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band (ddof = 0)."""
        return np.sqrt(self.m2 / max(self.count, 1))


@dataclass(frozen=True)
class ChipRecord:
    """One row of ``chips.csv``.

    ``pair_of`` is (before, after) single-date chip ids for a STAR pair, None for other chips;
    ``scene``, ``row_off``, ``col_off`` and ``block`` are then those of the before chip.
    """

    id: str
    split: str
    source: int
    source_name: str
    scene: str
    row_off: int
    col_off: int
    block: str
    pair_of: tuple[str, str] | None = None


@dataclass(frozen=True)
class DatasetManifest:
    """A prepared dataset, as read from its ``manifest.json``.

    Attributes
    ----------
    root : Path
        The dataset folder.
    bands : tuple of str
        Band names, in the order of the A/B chips.
    dtype : str
        Data type of the A/B chips (raw values of the sources).
    chip_size, stride, ignore_index : int
        Chip side (px), step between chips (px), label value of ignored pixels.
    label_kind : str
        ``"binary"``: 0 no change, 1 change.
    classes : dict[int, str]
        Label code -> name.
    mean, std : dict[str, float]
        Normalisation per band in raw digital numbers (train chips, both dates): ``x = (dn - mean) / std``.
    splits : dict[str, int]
        Chips per split.
    class_balance : dict[str, dict[str, int]]
        Per split: pixels per label code (as a string) and ``"ignored"``.
    extra_targets : tuple of str
        Extra target folders (``from``, ``to``, ``damage``).
    target_classes : dict[str, dict[int, str]]
        Code -> name for each extra target.
    sources, split_rule : list, dict
        What the chips were cut from and how they were split.
    raw : dict
        The whole JSON document.
    """

    root: Path
    bands: tuple[str, ...]
    dtype: str
    chip_size: int
    stride: int
    ignore_index: int
    label_kind: str
    classes: dict[int, str]
    mean: dict[str, float]
    std: dict[str, float]
    splits: dict[str, int]
    class_balance: dict[str, dict[str, int]]
    extra_targets: tuple[str, ...]
    target_classes: dict[str, dict[int, str]]
    sources: list[dict[str, Any]]
    split_rule: dict[str, Any]
    created_utc: str
    deltacd_version: str
    format: str = FORMAT
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def resolution_m(self) -> float | None:
        """Ground sampling distance of the chips in metres, when every source states the same one."""
        value = self.raw.get("resolution_m")
        return None if value is None else float(value)

    def normalisation(self, bands: tuple[str, ...] | list[str] | None = None) -> tuple[list[float], list[float]]:
        """(mean, std) lists in the order of ``bands`` (default: the dataset's)."""
        bands = tuple(bands or self.bands)
        missing = [b for b in bands if b not in self.mean]
        if missing:
            raise InputError(
                f"{self.root / MANIFEST}: no statistics for band(s) {', '.join(missing)}; "
                f"the dataset has {','.join(self.bands)}"
            )
        return [self.mean[b] for b in bands], [self.std[b] for b in bands]

    def chips(self, split: str | None = None) -> list[ChipRecord]:
        """Rows of ``chips.csv``, all or those of one split."""
        return [r for r in read_chips(self.root) if split in (None, "all") or r.split == split]


def load_manifest(path: str | Path) -> DatasetManifest:
    """Read a dataset folder's manifest (``path`` is the folder or its ``manifest.json``).

    Raises
    ------
    MissingInputError
        No manifest at ``path``.
    InputError
        The file is not a deltacd dataset manifest, or of an unknown format version.
    """
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    if not file.is_file():
        raise MissingInputError(f"{file}: no dataset manifest; give a folder written by deltacd prepare-dataset")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{file}: unreadable manifest ({exc}); prepare the dataset again") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{file}: format {found!r}, expected {FORMAT!r}; prepare the dataset with this deltacd version")
    try:
        norm = doc["normalisation"]
        return DatasetManifest(
            root=file.parent,
            bands=tuple(doc["bands"]),
            dtype=doc["dtype"],
            chip_size=int(doc["chip_size"]),
            stride=int(doc["stride"]),
            ignore_index=int(doc["ignore_index"]),
            label_kind=doc["label_kind"],
            classes={int(k): v for k, v in doc["classes"].items()},
            mean={k: float(v) for k, v in norm["mean"].items()},
            std={k: float(v) for k, v in norm["std"].items()},
            splits={k: int(v) for k, v in doc["splits"].items()},
            class_balance=doc["class_balance"],
            extra_targets=tuple(doc.get("extra_targets", [])),
            target_classes={t: {int(k): v for k, v in c.items()} for t, c in doc.get("target_classes", {}).items()},
            sources=doc["sources"],
            split_rule=doc["split_rule"],
            created_utc=doc["created_utc"],
            deltacd_version=doc["deltacd_version"],
            format=doc["format"],
            raw=doc,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{file}: incomplete manifest ({type(exc).__name__}: {exc}); prepare the dataset again") from exc


def read_chips(root: str | Path) -> list[ChipRecord]:
    """All rows of ``<root>/chips.csv``."""
    file = Path(root) / CHIPS_CSV
    if not file.is_file():
        raise MissingInputError(f"{file}: no chip list; give a folder written by deltacd prepare-dataset")
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) not in (CSV_COLUMNS, (*CSV_COLUMNS, PAIR_COLUMN)):
            raise InputError(f"{file}: columns {reader.fieldnames}, expected {', '.join(CSV_COLUMNS)}; prepare the dataset again")
        return [
            ChipRecord(r["id"], r["split"], int(r["source"]), r["source_name"], r["scene"], int(r["row_off"]),
                       int(r["col_off"]), r["block"], _pair(r.get(PAIR_COLUMN)))
            for r in reader
        ]


def _pair(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    before, _, after = text.partition(";")
    return before, after


def write_chips(path: Path, records: list[ChipRecord]) -> None:
    """Write ``chips.csv``."""
    paired = any(r.pair_of is not None for r in records)  # the column only where there are pairs
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow((*CSV_COLUMNS, PAIR_COLUMN) if paired else CSV_COLUMNS)
        for r in records:
            row = [r.id, r.split, r.source, r.source_name, r.scene, r.row_off, r.col_off, r.block]
            writer.writerow([*row, ";".join(r.pair_of) if r.pair_of else ""] if paired else row)
