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


def _file(name: str, doc: str) -> property:
    """A read-only path ``folder / name``, documented with ``doc``."""
    return property(lambda self: self.folder / name, doc=f"``{name}``: {doc}")


@dataclass(frozen=True)
class RunOutputs:
    """The files every run writes in ``folder``."""

    folder: Path

    kind: ClassVar[str] = "run"
    #: Layer name inside the run's main GeoPackage.
    layer: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def out_dir(self) -> Path:
        """The run's folder (the name the results of :func:`deltacd.detect` and :func:`deltacd.damage` give it)."""
        return self.folder

    record_file = _file(RUN_RECORD, "what was done: inputs, settings, measures, timings (strict JSON)")
    quicklook = _file(QUICKLOOK, "a PNG of the result over the after image")
    score = _file(SCORE, "float32 COG, the pixel change score, NaN where no data")

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

    mask = _file(MASK, "uint8 COG, 1 change, 0 no change, 255 (MASK_NODATA) no data")
    polygons = _file(POLYGONS, "the change polygons, layer ``changes``")
    uncertainty = _file(UNCERTAINTY, "networks with test-time augmentation only: predictive entropy (bits)")


@dataclass(frozen=True)
class DamageOutputs(RunOutputs):
    """A ``damage`` run: buildings with their grade, grade raster, score, summary table."""

    kind: ClassVar[str] = "damage"
    layer: ClassVar[str] = "buildings"
    BUILDINGS: ClassVar[str] = "buildings.gpkg"
    DAMAGE: ClassVar[str] = "damage.tif"
    SUMMARY: ClassVar[str] = "summary.csv"

    buildings = _file(BUILDINGS, "the buildings with their grade, layer ``buildings``")
    damage = _file(DAMAGE, "uint8 COG, grade 0-3 per building pixel, 255 (DAMAGE_NODATA) elsewhere")
    damage_raster = damage
    summary = _file(SUMMARY, "counts and areas per grade (and per zone)")


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
