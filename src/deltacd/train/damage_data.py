"""The samples of a damage training run, read window by window from scenes with graded footprints.

Each scene is a :class:`BuildingScene` (a :class:`deltacd.datasets.sources.Scene`, like the scenes
``prepare-dataset`` cuts into chips): an aligned pair and its footprints with grades. For the
classifier, :func:`chip_samples` takes one chip pair of ``chip_m`` metres centred on every graded
building, with its footprint mask; for the segmenters, :func:`crop_samples` takes crops of
``crop_px`` pixels, half of them centred on buildings, with a per-pixel target (background, the
four grades; or building). Pairs are read raw (no radiometric harmonisation), as ``damage`` then
gives them to the network.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
from rasterio.windows import Window

from deltacd.datasets.sources import Scene, SceneWindow
from deltacd.datasets.xbd_tiles import list_tiles, write_xbd_tile
from deltacd.errors import InputError, MissingInputError
from deltacd.io.rasters import open_image
from deltacd.io.vectors import clean_polygons, read_vector
from deltacd.outputs.grades import GRADES, map_grades
from deltacd.postprocess.zonal import FeatureLabels
from deltacd.prepare.align import align_pair
from deltacd.prepare.chip import read_chip
from deltacd.train.config import DamageTrainConfig, XbdDamageSource

__all__ = ["IGNORE", "BuildingScene", "Samples", "chip_samples", "crop_samples", "scenes_of", "split_samples"]

#: Target value of pixels out of the loss and the scores (no data, ungraded buildings).
IGNORE = 255


class BuildingScene(Scene):
    """A pre/post pair with building footprints and their grades: one scene of a damage training run.

    Built from its files (:func:`scenes_of`); :meth:`open` (or ``with scene.open():``) aligns the
    pair and reads the footprints into ``pair`` and ``frame`` (``_grade``: the grade on deltacd's
    scale, -1 ungraded) until :meth:`close`. :meth:`read` gives a window with ``label`` 1 on
    buildings, 0 elsewhere, and ``targets["damage"]`` 0 background, 1-4 the grade + 1 (xView2's
    classes), both :data:`IGNORE` where a date has no data, the damage target also on ungraded
    buildings. Values stay float32 digital numbers.
    """

    def __init__(self, event: str, name: str, before: Path, after: Path, buildings: Path, grade_field: str = "grade",
                 grade_table: str = "deltacd", bands_before: str | None = None, bands_after: str | None = None):
        self.event, self.name = event, name
        self.before, self.after, self.buildings = before, after, buildings
        self.grade_field, self.grade_table = grade_field, grade_table
        self.bands_before, self.bands_after = bands_before, bands_after
        self.pair = self.frame = self._labels = self._grades = None

    @property
    def before_path(self) -> Path:
        return Path(self.before)

    def open(self) -> BuildingScene:
        first = open_image(self.before, bands=self.bands_before, label="before")
        second = open_image(self.after, bands=self.bands_after, label="after")
        pair = align_pair(first, second)
        frame, _ = clean_polygons(read_vector(self.buildings, what="buildings"), self.buildings, what="buildings")
        if self.grade_field not in frame.columns:
            pair.close()
            raise InputError(f"{self.buildings}: no grade field {self.grade_field!r} (fields: "
                             f"{', '.join(map(str, frame.columns[:12]))}); set grade_field")
        grades = map_grades(frame[self.grade_field], self.grade_table, where=f"{self.buildings} field {self.grade_field}")
        self.pair, self.frame = pair, frame.to_crs(pair.grid.crs).assign(_grade=grades)
        grid = pair.grid
        self.height, self.width, self.crs, self.transform = grid.height, grid.width, grid.crs, grid.transform
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, window: Window) -> SceneWindow:
        if self._labels is None:
            self._labels = FeatureLabels(self.frame.geometry)
            self._grades = np.concatenate([[-1], self.frame["_grade"].to_numpy()])
        block = self.pair.read(window)
        ids = self._labels.read(self.pair.grid, window)
        label = (ids > 0).astype(np.uint8)
        grades = self._grades[ids]
        damage = np.where(ids == 0, 0, np.where(grades >= 0, grades + 1, IGNORE)).astype(np.uint8)
        label[~block.valid] = IGNORE
        damage[~block.valid] = IGNORE
        return SceneWindow(block.before, block.after, block.valid, label, {"damage": damage})

    def close(self) -> None:
        if self.pair is not None:
            self.pair.close()
        self.pair = self.frame = self._labels = self._grades = None


@dataclass
class Samples:
    """Training samples in memory: before/after float32 [N, C, H, W], mask [N, 1, H, W] (chips), target, scene index."""

    before: np.ndarray
    after: np.ndarray
    target: np.ndarray
    scene: np.ndarray
    mask: np.ndarray | None = None
    bands: tuple[str, ...] = ()
    resolution_m: float | None = None
    counts: dict[str, Any] = field(default_factory=dict)


def scenes_of(cfg: DamageTrainConfig, work: Path) -> list[BuildingScene]:
    """Every scene of the sources; xBD tiles are written as georeferenced pairs into ``work``."""
    scenes: list[BuildingScene] = []
    for index, source in enumerate(cfg.sources):
        if isinstance(source, XbdDamageSource):
            tiles = [t for t in list_tiles(source.path) if source.glob is None or fnmatch.fnmatch(t, source.glob)]
            if not tiles:
                raise InputError(f"sources[{index}]: no tile of {source.path} matches glob {source.glob!r}")
            for tile in tiles:
                origin = (500000.0 + 1000.0 * len(scenes), 3300000.0)  # apart from each other
                written = write_xbd_tile(source.path, tile, work / f"{index}_{tile}", event=source.event, origin=origin)
                scenes.append(BuildingScene(written.event, tile, written.before, written.after, written.buildings))
        else:
            for path in (source.before, source.after, source.buildings):
                if not Path(path).exists():
                    raise MissingInputError(f"sources[{index}]: {path}: no such file; check the path")
            scenes.append(BuildingScene(source.event or f"source{index}", Path(source.before).stem, source.before,
                                        source.after, source.buildings, source.grade_field, source.grade_table,
                                        source.bands_before, source.bands_after))
    return scenes


def chip_samples(scenes: list[BuildingScene], chip_m: float, progress=None) -> Samples:
    """One chip pair per graded building (``chip_m`` metres, at each scene's resolution)."""
    before, after, masks, target, scene_index, bands, resolution = [], [], [], [], [], None, None
    for s, scene in enumerate(scenes):
        with scene.open():
            pair, frame = scene.pair, scene.frame
            bands = bands or pair.bands
            resolution = resolution or pair.grid.res_m
            size = max(32, 32 * round(chip_m / pair.grid.res_m / 32))
            for geom, grade in zip(frame.geometry.values, frame["_grade"].to_numpy(), strict=True):
                if grade < 0:
                    continue
                b, a, m = read_chip(pair, geom, size)
                if np.isnan(b).all():
                    continue
                before.append(b)
                after.append(a)
                masks.append(m[None])
                target.append(grade)
                scene_index.append(s)
        if progress is not None:
            progress("scenes", s + 1, len(scenes))
    if not target:
        raise InputError("sources: no graded building on the images; check the footprints overlap the pairs and carry grades")
    target = np.array(target, dtype=np.int64)
    return Samples(np.stack(before), np.stack(after), target, np.array(scene_index), np.stack(masks), tuple(bands), resolution,
                   {"buildings_per_grade": {str(g): int((target == g).sum()) for g in GRADES}})


def crop_samples(scenes: list[BuildingScene], crop_px: int, per_scene: int, *, task: str, seed: int, progress=None) -> Samples:
    """Crops of ``crop_px`` pixels, half centred on buildings, with a pixel target (module notes)."""
    rng = np.random.default_rng(seed)
    before, after, target, scene_index, bands, resolution = [], [], [], [], None, None
    for s, scene in enumerate(scenes):
        with scene.open():
            grid = scene.pair.grid
            bands = bands or scene.pair.bands
            resolution = resolution or grid.res_m
            size = min(crop_px, grid.width, grid.height) // 32 * 32
            if size < 32:
                continue
            centres = np.array([(~grid.transform) * (p.x, p.y) for p in scene.frame.geometry.representative_point()])
            for k in range(per_scene):
                if k % 2 == 0 and len(centres):
                    col, row = centres[rng.integers(len(centres))]
                    col, row = int(col) - size // 2, int(row) - size // 2
                else:
                    col, row = rng.integers(0, grid.width - size + 1), rng.integers(0, grid.height - size + 1)
                col = int(np.clip(col, 0, grid.width - size))
                row = int(np.clip(row, 0, grid.height - size))
                window = scene.read(Window(col, row, size, size))
                before.append(window.before)
                after.append(window.after)
                target.append(window.label if task == "building-localisation" else window.targets["damage"])
                scene_index.append(s)
        if progress is not None:
            progress("scenes", s + 1, len(scenes))
    if not target:
        raise InputError(f"sources: no crop of {crop_px} px fits the images; lower crop_px")
    target = np.stack(target)
    return Samples(np.stack(before), np.stack(after), target, np.array(scene_index), None, tuple(bands), resolution,
                   {"pixels_per_class": {str(c): int((target == c).sum()) for c in range(6) if (target == c).any()}})


def split_samples(samples: Samples, scenes: list[BuildingScene], val_fraction: float, seed: int,
                  per_event: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of the training and validation samples: whole scenes held out when there are three or more.

    ``per_event``: a fifth (``val_fraction``) of *each* event's scenes, at least one of every
    event that has two or more, so that validation can be scored event by event.
    """
    rng = np.random.default_rng(seed)
    n = len(samples.target)
    if val_fraction == 0:
        return np.arange(n), np.array([], dtype=int)
    if len(scenes) >= 3:
        events = sorted({sc.event for sc in scenes})
        if per_event and len(events) > 1:
            held = []
            for event in events:
                mine = [i for i, sc in enumerate(scenes) if sc.event == event]
                if len(mine) >= 2:
                    held += list(rng.permutation(mine)[: max(1, round(val_fraction * len(mine)))])
        else:
            held = list(rng.permutation(len(scenes))[: max(1, round(val_fraction * len(scenes)))])
        val = np.isin(samples.scene, held)
        if val.any() and (~val).any():
            return np.flatnonzero(~val), np.flatnonzero(val)
    order = rng.permutation(n)
    cut = max(1, round(val_fraction * n))
    return np.sort(order[cut:]), np.sort(order[:cut])
