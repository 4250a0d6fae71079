"""``single_date`` sources: images of ONE date with object masks or land-cover maps, opened as scenes.

Object masks (building footprints, raster masks, xBD pre-disaster polygons) or land-cover maps are
read on each image's own grid and cut into single-date chips like the other sources; after the
split draw the source's ``pairer`` turns them into STAR change pairs (:mod:`deltacd.datasets.star`).
The method and its limits: :mod:`deltacd.datasets.single_date`.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from deltacd.datasets.sources.classmaps import (
    VECTOR_SUFFIXES,
    VectorClassMap,
    check_class_codes,
    check_class_values,
    class_codes,
    read_class_polygons,
)
from deltacd.datasets.sources.config import SingleDateSource
from deltacd.datasets.sources.images import (
    IMAGE_SUFFIXES,
    ImageInfo,
    check_bands,
    find_image,
    image_info,
    label_encoding,
    read_image,
)
from deltacd.datasets.sources.scenes import OpenedSource, Scene, SceneWindow, safe_name
from deltacd.datasets.sources.xbd import check_xbd_size, xbd_tile_ids
from deltacd.datasets.star import STAR_REFERENCE, make_star_pairs
from deltacd.datasets.xview2 import rasterize_xbd_labels
from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import parse_bands
from deltacd.io.grid import Grid
from deltacd.io.vectors import PolygonMask, read_polygons

log = logging.getLogger(__name__)

__all__ = ["SingleDateScene", "open_single_date"]

WindowLabeller = Callable[[Window, np.ndarray], tuple[np.ndarray, dict[str, np.ndarray]]]


# --- scenes -----------------------------------------------------------------------------------


class SingleDateScene(Scene):
    """One image of one date and its label, read window by window (or whole, for plain images).

    :meth:`read` returns the image as both ``before`` and ``after`` (the single-date chip) and
    the single-date label: 0/1 objects for masks, class codes for land-cover maps,
    ``ignore_index`` where unlabelled or without data.

    Parameters
    ----------
    name
        Scene name used in chip ids.
    info
        The image file.
    labeller
        ``labeller(window, valid)`` -> (uint8 label [h, w], extra targets).
    whole
        Read the image (and label) whole on first use: PNG/JPEG and images without
        georeferencing, which GDAL cannot read by window cheaply.
    resources
        Label rasters closed with the scene.
    """

    def __init__(self, name: str, info: ImageInfo, labeller: WindowLabeller, *, whole: bool, resources: tuple = ()):
        self.name, self.info, self.labeller, self.whole = name, info, labeller, whole
        self.resources = resources
        self.height, self.width = info.height, info.width
        self.crs, self.transform = info.crs, info.transform
        self.order: list[int] = list(range(info.count))  # dataset band i = kept file band order[i]
        self._ds = None
        self._cache: tuple | None = None

    @property
    def before_path(self) -> Path:
        return self.info.path

    @property
    def grid(self) -> Grid | None:
        """The image grid (None for plain images)."""
        if self.crs is None or self.transform is None:
            return None
        return Grid(self.crs, self.transform, self.width, self.height)

    def read(self, window: Window) -> SceneWindow:
        if self.whole:
            if self._cache is None:
                image, valid = read_image(self.info)
                label, targets = self.labeller(Window(0, 0, self.width, self.height), valid)
                self._cache = (image, valid, label, targets)
            image, valid, label, targets = self._cache
            rows, cols = window.toslices()
            image = image[self.order][:, rows, cols]
            valid, label = valid[rows, cols], label[rows, cols]
            targets = {k: v[rows, cols] for k, v in targets.items()}
        else:
            if self._ds is None:
                self._ds = rasterio.open(self.info.path)
            image = self._ds.read([self.info.indexes[o] for o in self.order], window=window)
            valid = self._ds.dataset_mask(window=window) > 0
            label, targets = self.labeller(window, valid)
        return SceneWindow(image, image, valid, label, targets)

    def close(self) -> None:
        self._cache = None
        if self._ds is not None:
            self._ds.close()
            self._ds = None
        for resource in self.resources:
            resource.close()


class _RasterLabel:
    """A label raster on the grid of its image, read by window (opened on first use)."""

    def __init__(self, path: Path, image: ImageInfo, *, label_type: str, threshold: float | None, ignore: int, what: str):
        self.path, self.label_type, self.threshold, self.ignore = path, label_type, threshold, ignore
        self._ds = None
        with _quiet(), _open_raster(path, what) as ds:
            if (ds.width, ds.height) != (image.width, image.height):
                raise InputError(
                    f"{path}: {ds.width}x{ds.height} px but its image {image.path} is {image.width}x{image.height}; "
                    "a label raster must cover its image pixel for pixel (gdalwarp it onto the image grid)"
                )
            georef = ds.crs is not None and not ds.transform.is_identity
            if georef and image.crs is not None and (
                CRS.from_user_input(ds.crs) != image.crs or not ds.transform.almost_equals(image.transform, precision=1e-6)
            ):
                raise InputError(
                    f"{path}: not on the grid of its image {image.path} ({ds.crs}, {tuple(ds.transform)[:6]} vs "
                    f"{image.crs}, {tuple(image.transform)[:6]}); gdalwarp it onto the image grid"
                )
            if not georef and image.crs is not None:
                log.info("%s: no georeferencing; taken to lie on the grid of %s (same size)", path, image.path)
            self.encoding = None
            if label_type == "mask" and threshold is None:
                self.encoding = label_encoding(_raster_values(ds), path)

    def read(self, window: Window) -> np.ndarray:
        """uint8 [h, w]: 0/1 objects or class codes, ``ignore`` where unlabelled (nodata)."""
        if self._ds is None:
            with _quiet():
                self._ds = rasterio.open(self.path)
        raw = self._ds.read(1, window=window)
        labelled = self._ds.read_masks(1, window=window) > 0
        if self.label_type == "mask":
            if self.threshold is not None:
                objects = raw > self.threshold
            elif self.encoding == "0/255":
                objects = raw == 255
            else:
                objects = raw == 1
                if self.encoding == "0/1, 255 unlabelled":
                    labelled &= raw != 255
            return np.where(labelled, objects.astype(np.uint8), np.uint8(self.ignore)).astype(np.uint8)
        check_class_values(raw[labelled], self.ignore, self.path)
        return np.where(labelled, raw, self.ignore).astype(np.uint8)

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


def _raster_values(ds, limit: int = 16) -> set[float]:
    """Distinct labelled values of band 1, read block by block (stops after ``limit`` values)."""
    values: set[int] = set()
    for _, window in ds.block_windows(1):
        raw = ds.read(1, window=window)
        values |= set(np.unique(raw[ds.read_masks(1, window=window) > 0]).tolist())
        if len(values) > limit:
            break
    return values


def _open_raster(path: Path, what: str):
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a raster GDAL can read ({exc}); give the {what} as a GeoTIFF or PNG") from exc


@contextmanager
def _quiet() -> Iterator[None]:
    """Plain PNG images and masks have no georeferencing: that is expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


# --- opening ----------------------------------------------------------------------------------


def open_single_date(cfg: SingleDateSource, index: int, ignore: int) -> OpenedSource:
    """Check a ``single_date`` source and open its images as :class:`SingleDateScene` s.

    The returned source's ``pairer`` turns its chips into STAR pairs after the split draw
    (:func:`make_star_pairs`).

    Raises
    ------
    MissingInputError
        An image, label file or folder does not exist.
    InputError
        Contradictory settings, a label raster of another size or grid than its image, polygons
        that overlap none of the images, unreadable files or label values.
    """
    name = cfg.name or f"single_date{index}"
    if cfg.xbd is not None:
        if cfg.image is not None or cfg.labels is not None:
            raise InputError(f"source {name}: xbd is set together with image/labels; give either an xBD folder or image + labels")
        if cfg.label_type != "mask":
            raise InputError(f"source {name}: label_type {cfg.label_type!r} with xbd; "
                             "xBD pre-disaster labels are building masks, use 'mask'")
        scenes, description = _xbd_scenes(cfg, name, ignore)
        classes: dict[int, str] = {}
    else:
        if cfg.image is None or cfg.labels is None:
            missing = "image" if cfg.image is None else "labels"
            raise InputError(f"source {name}: {missing} is not set; give image + labels (or xbd: an xBD folder)")
        scenes, description, classes = _image_scenes(cfg, name, ignore)

    declared = parse_bands(cfg.bands, setting=f"bands of source {name}") if cfg.bands else None
    first = None
    for scene in scenes:
        first = check_bands(scene.info, declared, first, name)
    band_names, dtype = first or (None, None)
    description["label_type"] = cfg.label_type
    description["star"] = {
        "method": STAR_REFERENCE,
        "identity_fraction": cfg.identity_fraction,
        "pairs_per_chip": cfg.pairs_per_chip,
        "seed": cfg.seed,
        "pairing": "within the source and the split; partner drawn uniformly among the chips whose footprint "
                   "does not overlap the before chip; identity pairs: round(identity_fraction * pairs) per split",
        "label_rule": ("object at exactly one date: mask_before XOR mask_after" if cfg.label_type == "mask"
                       else "class_before != class_after; from = class_before, to = class_after"),
    }
    targets = ("from", "to") if cfg.label_type == "classes" else ()
    source = OpenedSource(
        index, name, "single_date", band_names, dtype, scenes[0].info.nodata, list(scenes),
        image_blocks=cfg.xbd is not None, forced_split=cfg.split, targets=targets,
        target_classes={t: dict(classes) for t in targets}, description=description,
    )
    source.pairer = lambda kept, tmp, *, targets, chip_size: make_star_pairs(
        source, cfg, kept, tmp, targets=targets, chip_size=chip_size, ignore=ignore
    )
    return source


def _xbd_scenes(cfg: SingleDateSource, name: str, ignore: int) -> tuple[list[SingleDateScene], dict[str, Any]]:
    root = Path(cfg.xbd)
    images, labels = root / "images", root / "labels"
    for d in (root, images, labels):
        if not d.is_dir():
            raise MissingInputError(f"{d}: no such folder (xbd of single_date source {name}); give the folder holding images/ and labels/")
    suffix = "_pre_disaster.json"
    ids = xbd_tile_ids(labels, suffix, cfg.glob)
    scenes = []
    for tile in ids:
        info = image_info(find_image(images, f"{tile}_pre_disaster"))
        json_path = labels / f"{tile}{suffix}"
        check_xbd_size(json_path, info)

        def labeller(window: Window, valid: np.ndarray, json_path: Path = json_path) -> tuple[np.ndarray, dict]:
            buildings, _ = rasterize_xbd_labels(json_path, shape=valid.shape)  # whole tile: the scene reads it whole
            label = buildings.astype(np.uint8)
            label[~valid] = ignore
            return label, {}

        scenes.append(SingleDateScene(safe_name(tile), info, labeller, whole=True))
    return scenes, {"paths": {"xbd": str(root.resolve()), "glob": cfg.glob}, "labels": "xBD pre-disaster building polygons (features.xy)",
                    "rasterisation": "pixel centre inside a polygon"}


def _image_scenes(cfg: SingleDateSource, name: str, ignore: int) -> tuple[list[SingleDateScene], dict[str, Any], dict[int, str]]:
    paths = _image_paths(cfg, name)
    infos = []
    for path in paths:
        with _quiet():
            infos.append(image_info(path))
    labels = [Path(p) for p in cfg.labels] if isinstance(cfg.labels, list) else Path(cfg.labels)
    description: dict[str, Any] = {"paths": {
        "image": [str(p.resolve()) for p in paths],
        "labels": [str(p.resolve()) for p in labels] if isinstance(labels, list) else str(labels.resolve()),
    }}
    if isinstance(labels, Path) and labels.is_file() and labels.suffix.lower() in VECTOR_SUFFIXES:
        scenes, classes = _vector_scenes(cfg, name, infos, labels, ignore, description)
        return scenes, description, classes

    # label rasters: one per image
    if isinstance(labels, list):
        if len(labels) != len(infos):
            raise InputError(f"labels of source {name}: {len(labels)} file(s) for {len(infos)} image(s); "
                             "give one label raster per image, in order")
        files = labels
    elif labels.is_dir():
        files = [_label_file(labels, info.path.stem + cfg.label_suffix, name) for info in infos]
    elif not labels.exists():
        raise MissingInputError(f"{labels}: no such file or folder (labels of source {name}); check the path")
    elif len(infos) != 1:
        raise InputError(f"labels of source {name}: one label raster {labels} for {len(infos)} images; "
                         "give a list or a folder of label rasters")
    else:
        files = [labels]
    if cfg.label_type == "classes" and cfg.classes is not None:
        check_class_codes(cfg.classes, ignore, name)
    _, classes = class_codes([], cfg.classes, name)
    scenes = []
    for info, file in zip(infos, files):
        if not Path(file).is_file():
            raise MissingInputError(f"{file}: no such label raster (source {name}); check the path")
        raster = _RasterLabel(Path(file), info, label_type=cfg.label_type, threshold=cfg.mask_threshold, ignore=ignore,
                              what=f"label raster of source {name}")

        def labeller(window: Window, valid: np.ndarray, raster: _RasterLabel = raster) -> tuple[np.ndarray, dict]:
            label = raster.read(window)
            label[~valid] = ignore
            return label, {}

        scenes.append(SingleDateScene(safe_name(info.path.stem), info, labeller, whole=_plain(info), resources=(raster,)))
    if cfg.mask_threshold is not None:
        description["mask_threshold"] = cfg.mask_threshold
    elif cfg.label_type == "mask":
        description["label_values"] = sorted({s.resources[0].encoding for s in scenes})
    return scenes, description, classes


def _vector_scenes(cfg: SingleDateSource, name: str, infos: list[ImageInfo], path: Path, ignore: int,
                   description: dict[str, Any]) -> tuple[list[SingleDateScene], dict[int, str]]:
    what = f"labels of single_date source {name}"
    for info in infos:
        if info.crs is None:
            raise InputError(f"{info.path}: no georeferencing, so the polygons of {path} cannot be placed on it; "
                             "give a georeferenced image or a label raster of the same size")
    frames: dict[str, Any] = {}  # polygons per image CRS (tiles may be in different CRSs)
    codes: dict[Any, int] = {}
    classes: dict[int, str] = {}
    if cfg.label_type == "classes" and cfg.classes is not None:
        check_class_codes(cfg.classes, ignore, name)
    scenes, overlapping = [], 0
    for info in infos:
        key = info.crs.to_wkt()
        if key not in frames:
            if cfg.label_type == "classes":
                frames[key] = read_class_polygons(path, info.crs, cfg.class_field, what)
                if not codes:
                    codes, classes = class_codes([frames[key][cfg.class_field]], cfg.classes, name)
            else:
                frames[key] = read_polygons(path, info.crs, what=what)
        frame = frames[key]
        grid = Grid(info.crs, info.transform, info.width, info.height)
        hits = frame.sindex.query(shapely.box(*grid.bounds), predicate="intersects")
        overlapping += int(len(hits) > 0)
        if len(hits) == 0:
            log.info("%s: no polygon of %s overlaps it (all background)", info.path, path)
        if cfg.label_type == "classes":
            class_map = VectorClassMap(path, frame, cfg.class_field, codes, ignore)

            def labeller(window: Window, valid: np.ndarray, grid: Grid = grid, class_map=class_map) -> tuple[np.ndarray, dict]:
                values, labelled = class_map.read(grid, window)
                return np.where(labelled & valid, values, ignore).astype(np.uint8), {}
        else:
            mask = PolygonMask(frame.geometry, all_touched=cfg.all_touched)

            def labeller(window: Window, valid: np.ndarray, grid: Grid = grid, mask: PolygonMask = mask) -> tuple[np.ndarray, dict]:
                label = mask.read(grid, window).astype(np.uint8)
                label[~valid] = ignore
                return label, {}

        scenes.append(SingleDateScene(safe_name(info.path.stem), info, labeller, whole=_plain(info)))
    if not overlapping:
        bounds = ", ".join(f"{v:.6g}" for v in next(iter(frames.values())).total_bounds)
        raise InputError(
            f"{path}: none of its polygons (bounds {bounds} in {infos[0].crs}) overlaps the {len(infos)} image(s) of "
            f"source {name}; check the file's CRS or give the labels of these images"
        )
    description["n_polygons"] = len(next(iter(frames.values())))
    description["rasterisation"] = "all touched pixels" if cfg.all_touched else "pixel centre inside a polygon"
    if cfg.label_type == "classes":
        description["class_field"] = cfg.class_field
    return scenes, classes


def _image_paths(cfg: SingleDateSource, name: str) -> list[Path]:
    if isinstance(cfg.image, list):
        paths = [Path(p) for p in cfg.image]
        for p in paths:
            if not p.is_file():
                raise MissingInputError(f"{p}: no such image (source {name}); check the path")
        return paths
    root = Path(cfg.image)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise MissingInputError(f"{root}: no such file or folder (image of source {name}); check the path")
    paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if cfg.glob is not None:
        patterns = [cfg.glob] if isinstance(cfg.glob, str) else list(cfg.glob)
        paths = [p for p in paths if any(fnmatch.fnmatch(p.name, g) or fnmatch.fnmatch(p.stem, g) for g in patterns)]
    if not paths:
        raise InputError(f"{root}: no image{' matching ' + repr(cfg.glob) if cfg.glob else ''} ({', '.join(IMAGE_SUFFIXES)}); "
                         f"give the folder of the images of source {name}")
    return paths


def _label_file(folder: Path, stem: str, name: str) -> Path:
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.stem == stem and p.suffix.lower() in IMAGE_SUFFIXES:
            return p
    raise MissingInputError(f"{folder}: no label raster {stem}.tif (or .png ...) for source {name}; name labels <image stem><label_suffix>")


def _plain(info: ImageInfo) -> bool:
    """Read whole: Pillow-only files and images without georeferencing (PNG, JPEG)."""
    return info.indexes is None or info.crs is None

