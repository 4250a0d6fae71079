"""Scenes: one image pair on one pixel grid with its labels, and the opened source that holds them.

Every source opens as an :class:`OpenedSource`: a list of :class:`Scene` that
:mod:`deltacd.datasets.chips` cuts into chips, window by window (:class:`SceneWindow`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from deltacd.datasets.sources.images import ImageInfo, read_image
from deltacd.prepare.align import AlignedPair

__all__ = ["AlignedScene", "ImagePairScene", "Labeller", "OpenedSource", "Scene", "SceneWindow", "safe_name"]


@dataclass(frozen=True)
class SceneWindow:
    """One window of a scene.

    Attributes
    ----------
    before, after : np.ndarray
        [C, h, w] in the source's data type and digital numbers, bands in the dataset's order.
    valid : np.ndarray
        bool [h, w]: both dates have data.
    label : np.ndarray
        uint8 [h, w]: 0 no change, 1 change, ``ignore_index`` unlabelled or no data.
    targets : dict[str, np.ndarray]
        Extra uint8 [h, w] targets (``from``, ``to``, ``damage``), ``ignore_index`` where unknown.
    """

    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    label: np.ndarray
    targets: dict[str, np.ndarray]


class Scene:
    """One image pair on one pixel grid with its labels, read window by window.

    Attributes
    ----------
    name : str
        Used in chip ids (file stem or tile id).
    height, width : int
        Size in pixels.
    crs, transform
        Georeferencing, or None for plain images.
    """

    name: str
    height: int
    width: int
    crs: CRS | None = None
    transform: Affine | None = None
    block: str | None = None  # split block of an image scene (default: its name)

    def read(self, window: Window) -> SceneWindow:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def before_path(self) -> Path:  # pragma: no cover - interface
        """The file of the first date (to tell scenes apart)."""
        raise NotImplementedError

    def window_transform(self, window: Window) -> Affine | None:
        if self.transform is None:
            return None
        return window_transform(window, self.transform)

    def close(self) -> None:
        """Release files and cached arrays."""


Labeller = Callable[[tuple[int, int], np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]


class ImagePairScene(Scene):
    """Two small images read whole on first use (PNG and JPEG cannot be read by window cheaply).

    ``labeller(shape, valid)`` returns the label and the extra targets of the whole image.
    """

    def __init__(self, name: str, before: ImageInfo, after: ImageInfo, labeller: Labeller):
        self.name = name
        self.before_info, self.after_info = before, after
        self.height, self.width = before.height, before.width
        self.crs, self.transform = before.crs, before.transform
        self.labeller = labeller
        self.order: list[int] = list(range(before.count))  # dataset band i = file band order[i]
        self._cache: SceneWindow | None = None

    @property
    def before_path(self) -> Path:
        return self.before_info.path

    def read(self, window: Window) -> SceneWindow:
        if self._cache is None:
            before, valid_b = read_image(self.before_info)
            after, valid_a = read_image(self.after_info)
            valid = valid_b & valid_a
            label, targets = self.labeller((self.height, self.width), valid)
            self._cache = SceneWindow(before[self.order], after[self.order], valid, label, targets)
        s = window.toslices()
        c = self._cache
        return SceneWindow(c.before[:, s[0], s[1]], c.after[:, s[0], s[1]], c.valid[s], c.label[s],
                           {k: v[s] for k, v in c.targets.items()})

    def close(self) -> None:
        self._cache = None


class AlignedScene(Scene):
    """A georeferenced pair read through :class:`AlignedPair`, window by window."""

    def __init__(
        self,
        name: str,
        pair: AlignedPair,
        dtype: str,
        labeller: Callable[[Window, np.ndarray], tuple[np.ndarray, dict]],
        *,
        resources: tuple = (),
    ):
        self.name, self.pair, self.dtype, self.labeller = name, pair, dtype, labeller
        self.resources = resources  # other open files (land-cover rasters), closed with the scene
        self.height, self.width = pair.grid.height, pair.grid.width
        self.crs, self.transform = pair.grid.crs, pair.grid.transform

    @property
    def before_path(self) -> Path:
        return self.pair.before.files[0].path

    def read(self, window: Window) -> SceneWindow:
        pw = self.pair.read(window)
        label, targets = self.labeller(window, pw.valid)
        return SceneWindow(_to_dtype(pw.before, self.dtype), _to_dtype(pw.after, self.dtype), pw.valid, label, targets)

    def close(self) -> None:
        self.pair.close()
        for resource in self.resources:
            resource.close()



@dataclass
class OpenedSource:
    """A source checked and opened: its scenes, bands and what its labels mean.

    Attributes
    ----------
    index, name, kind
        Position in the configuration, short name, kind.
    bands, dtype, nodata
        Band names (dataset order), data type and nodata value of the images.
    scenes
        Image pairs to cut into chips.
    image_blocks
        True when every scene is its own split block (chips and xBD images).
    forced_split
        The split every chip goes to, or None.
    targets
        Extra targets written (``("from", "to")``, ``("damage",)`` or none).
    target_classes
        Class code -> name per extra target.
    description
        JSON summary for the manifest.
    pairer
        Called after the split draw with (kept chips, temporary folder, targets, chip size) to
        replace this source's chips (``single_date``: single-date chips -> STAR pairs); None for
        sources whose chips are final.
    """

    index: int
    name: str
    kind: str
    bands: tuple[str, ...]
    dtype: str
    nodata: float | None
    scenes: list[Scene]
    image_blocks: bool
    forced_split: str | None
    targets: tuple[str, ...] = ()
    target_classes: dict[str, dict[int, str]] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)
    pairer: Callable[..., list] | None = None

    def reorder(self, bands: tuple[str, ...]) -> None:
        """Read the bands in the order ``bands`` (same names as :attr:`bands`)."""
        if bands == self.bands:
            return
        positions = [self.bands.index(b) for b in bands]
        for scene in self.scenes:
            if isinstance(scene, ImagePairScene) or hasattr(scene, "order"):  # image and single-date scenes
                scene.order = [scene.order[p] for p in positions]
            elif isinstance(scene, AlignedScene):
                scene.pair = scene.pair.replace(bands=bands)
        self.bands = bands

    def close(self) -> None:
        for scene in self.scenes:
            scene.close()



def _to_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 digital numbers back to the source type (exact when the pair was not resampled)."""
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        return np.clip(np.rint(values), info.min, info.max).astype(kind)
    return values.astype(kind)


def safe_name(name: str) -> str:
    """A name usable in file names and chip ids."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "scene"
