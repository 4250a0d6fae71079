"""The files of a run's output folder, named once.

Writers and readers (report, evaluate, study, review) take a file's name from these frozen values,
never from a string of their own, so renaming an output is one change. ``DetectOutputs(folder)``
gives the paths of a ``detect`` run, ``DamageOutputs(folder)`` those of a ``damage`` run;
:func:`run_kind` tells which one a folder holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

#: Every run's record and log, whatever the verb.
RUN_RECORD = "run.json"
QUICKLOOK = "quicklook.png"
SCORE = "change_score.tif"
BACKDROPS = ("before.vrt", "after.vrt")

#: ``change_mask.tif``: 1 change, 0 no change, this value where no pixel was valid.
MASK_NODATA = 255
#: ``damage.tif``: a building's grade 0-3 on its pixels, this value elsewhere.
DAMAGE_NODATA = 255


@dataclass(frozen=True)
class RunOutputs:
    """The files every run writes: ``run.json`` and ``quicklook.png`` in ``folder``."""

    folder: Path

    kind: ClassVar[str] = "run"
    #: Layer name inside the run's main GeoPackage.
    layer: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def record(self) -> Path:
        return self.folder / RUN_RECORD

    @property
    def quicklook(self) -> Path:
        return self.folder / QUICKLOOK

    @property
    def score(self) -> Path:
        """``change_score.tif``: float32 COG, NaN where no data."""
        return self.folder / SCORE

    @property
    def backdrops(self) -> tuple[Path, Path]:
        """``before.vrt``, ``after.vrt``: each date's display bands, aligned (QGIS, report, web map)."""
        return self.folder / BACKDROPS[0], self.folder / BACKDROPS[1]


@dataclass(frozen=True)
class DetectOutputs(RunOutputs):
    """A ``detect`` run: score, mask, optional uncertainty, change polygons."""

    kind: ClassVar[str] = "detect"
    layer: ClassVar[str] = "changes"
    MASK: ClassVar[str] = "change_mask.tif"
    POLYGONS: ClassVar[str] = "changes.gpkg"
    UNCERTAINTY: ClassVar[str] = "change_uncertainty.tif"

    @property
    def mask(self) -> Path:
        """``change_mask.tif``: uint8 COG, 1 change, 0 no change, :data:`MASK_NODATA` no data."""
        return self.folder / self.MASK

    @property
    def polygons(self) -> Path:
        """``changes.gpkg``, layer ``changes``."""
        return self.folder / self.POLYGONS

    @property
    def uncertainty(self) -> Path:
        """``change_uncertainty.tif`` (networks with test-time augmentation only)."""
        return self.folder / self.UNCERTAINTY


@dataclass(frozen=True)
class DamageOutputs(RunOutputs):
    """A ``damage`` run: buildings with their grade, grade raster, score, summary table."""

    kind: ClassVar[str] = "damage"
    layer: ClassVar[str] = "buildings"
    BUILDINGS: ClassVar[str] = "buildings.gpkg"
    DAMAGE: ClassVar[str] = "damage.tif"
    SUMMARY: ClassVar[str] = "summary.csv"

    @property
    def buildings(self) -> Path:
        """``buildings.gpkg``, layer ``buildings``."""
        return self.folder / self.BUILDINGS

    @property
    def damage(self) -> Path:
        """``damage.tif``: uint8 COG, grade 0-3 per building pixel, :data:`DAMAGE_NODATA` elsewhere."""
        return self.folder / self.DAMAGE

    @property
    def summary(self) -> Path:
        """``summary.csv``: counts and areas per grade (and per zone)."""
        return self.folder / self.SUMMARY


def run_kind(folder: str | Path) -> type[DetectOutputs] | type[DamageOutputs] | None:
    """The layout of the run in ``folder`` (by the files it holds), or None when it holds neither."""
    folder = Path(folder)
    if (folder / DamageOutputs.BUILDINGS).is_file():
        return DamageOutputs
    if (folder / DetectOutputs.MASK).is_file():
        return DetectOutputs
    return None


__all__ = ["BACKDROPS", "DAMAGE_NODATA", "MASK_NODATA", "QUICKLOOK", "RUN_RECORD", "SCORE", "DamageOutputs", "DetectOutputs",
           "RunOutputs", "run_kind"]
