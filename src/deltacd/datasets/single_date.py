"""Change pairs from single-date labels: STAR (Zheng et al., ICCV 2021, arXiv:2108.07002).

Method
    Zheng, Ma, Zhang & Zhong, "Change is Everywhere: Single-Temporal Supervised Object Change
    Detection in Remote Sensing Imagery", ICCV 2021, arXiv:2108.07002 (extended in
    arXiv:2406.15694). Two *unpaired* images, each labelled at its own date, make a pseudo
    bitemporal pair: an object present at one of the two places and absent from the other is an
    object change. A ``single_date`` source (settings: :class:`~deltacd.datasets.sources.SingleDateSource`):

    1. cuts every image and its single-date label into chips exactly like the other sources
       (``chip_size``, ``stride``; ``min_valid_fraction`` applies to these single-date chips); the
       chips are drawn into train / val / test by spatial blocks (xBD: one block per tile) and
       guarded as usual (:mod:`deltacd.datasets.chips`);
    2. pairs every kept chip i, ``pairs_per_chip`` times, with a partner from the **same source and
       the same split** (never across splits: no val/test place ever reaches a train pair): chip i
       itself for a share ``identity_fraction`` of each split's pairs (``round(share x pairs)``
       pairs, drawn with ``seed``), otherwise a chip j drawn uniformly with ``seed`` among the chips
       whose footprint does not overlap chip i's. An overlapping partner would be a shifted copy of
       the same place, and the label would then call misregistration "change";
    3. writes each pair as an ordinary A/B/label chip, so training needs no change:
       A = image i, B = image j (byte copies of the single-date chips, each keeping its own
       georeferencing), label = mask_i XOR mask_j for object masks (``label_type: mask``), or
       class_i != class_j for land-cover maps (``label_type: classes``, with ``from`` = class_i and
       ``to`` = class_j kept as extra targets). A pixel unlabelled in either chip is ignored.
       Identity pairs have A == B and an all-0 label: identical geometry means no change.

    ``chips.csv`` gives every pair its ``pair_of`` (the two single-date chip ids,
    ``<source>__<scene>__<row>_<col>``; ``scene``/``row_off``/``col_off``/``block`` are those of
    the before chip) and ``manifest.json`` records the source kind ``single_date`` with its STAR
    parameters and pair counts. Normalisation statistics are those of the pairs' two images.

Limits
    * The two images of a pair are two different places. The network learns the appearance and
      disappearance of objects, not what a real revisit adds: misregistration, parallax of tall
      objects between view angles, moved shadows, season and illumination. Only the augmentation
      (:mod:`deltacd.datasets.augment`: photometric jitter per date, sub-pixel shifts) imitates
      part of it, so a STAR model over-reacts to those more than one trained on real pairs.
    * Outside identity pairs the background differs everywhere; "no change" on a real unchanged
      place seen twice (same geometry, other radiometry) is taught only by the identity pairs plus
      photometric augmentation: keep ``identity_fraction`` above 0.
    * Only appearance / disappearance of whole labelled objects is produced: no partial changes
      (extensions, roof repairs), and the change fraction follows the object density
      (about 2p(1 - p) for a share p of object pixels), not the rarity of real change.
    * Pairs are drawn once and written; the paper redraws them at every mini-batch. Raise
      ``pairs_per_chip`` for more variety.
    * Labels must describe their own image date: footprints from another year (e.g. 2020 building
      footprints over 2011 images) carry their own changes as label noise.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from deltacd.datasets.manifest import SPLITS, BandMoments
from deltacd.datasets.sources import (
    _VECTOR_SUFFIXES,
    IMAGE_SUFFIXES,
    OpenedSource,
    Scene,
    SceneWindow,
    SingleDateSource,
    _check_xbd_size,
    _class_codes,
    _find_image,
    _image_info,
    _ImageInfo,
    _label_encoding,
    _read_class_polygons,
    _read_image,
    _safe,
    _VectorClassMap,
)
from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import parse_bands
from deltacd.io.grid import Grid
from deltacd.io.vectors import PolygonMask, read_polygons

log = logging.getLogger(__name__)

__all__ = ["STAR_REFERENCE", "SingleDateScene", "draw_star_partners", "make_star_pairs", "open_single_date"]

#: The method, as written in the manifest.
STAR_REFERENCE = "STAR: Zheng, Ma, Zhang & Zhong, ICCV 2021, arXiv:2108.07002"

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

    def __init__(self, name: str, info: _ImageInfo, labeller: WindowLabeller, *, whole: bool, resources: tuple = ()):
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
                image, valid = _read_image(self.info)
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

    def __init__(self, path: Path, image: _ImageInfo, *, label_type: str, threshold: float | None, ignore: int, what: str):
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
                self.encoding = _label_encoding(_raster_values(ds), path)

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
        found = raw[labelled]
        if found.size and (found.min() < 0 or found.max() > 254 or np.any(found == self.ignore)
                           or (np.issubdtype(found.dtype, np.floating) and np.any(found != np.round(found)))):
            bad = found[(found < 0) | (found > 254) | (found == self.ignore) | (found != np.round(found))][0]
            raise InputError(f"{self.path}: class value {bad} outside 0..254 (or equal to ignore_index {self.ignore}); "
                             "from/to chips are uint8: recode the map, or set its nodata")
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
    band_names, dtype = None, None
    for scene in scenes:
        info = scene.info
        names = declared or info.names
        if len(names) != info.count:
            raise InputError(f"{info.path}: has {info.count} band(s) but bands of source {name} is {','.join(names)}; "
                             "declare one name per band")
        if band_names is None:
            band_names, dtype = names, info.dtype
        elif names != band_names or info.dtype != dtype:
            raise InputError(
                f"{info.path}: bands {','.join(names)} ({info.dtype}) differ from the source's first image "
                f"({','.join(band_names)}, {dtype}); a source's images must share bands and data type"
            )
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
    from deltacd.evaluate.xview2 import rasterize_xbd_labels  # the one xBD reader

    root = Path(cfg.xbd)
    images, labels = root / "images", root / "labels"
    for d in (root, images, labels):
        if not d.is_dir():
            raise MissingInputError(f"{d}: no such folder (xbd of single_date source {name}); give the folder holding images/ and labels/")
    suffix = "_pre_disaster.json"
    ids = sorted(p.name[: -len(suffix)] for p in labels.glob(f"*{suffix}"))
    if cfg.glob is not None:
        patterns = [cfg.glob] if isinstance(cfg.glob, str) else list(cfg.glob)
        ids = [i for i in ids if any(fnmatch.fnmatch(i, p) for p in patterns)]
    if not ids:
        matching = f" matching {cfg.glob!r}" if cfg.glob else ""
        raise InputError(f"{labels}: no *{suffix} label{matching}; give an xBD folder with pre-disaster labels")
    scenes = []
    for tile in ids:
        info = _image_info(_find_image(images, f"{tile}_pre_disaster"))
        json_path = labels / f"{tile}{suffix}"
        _check_xbd_size(json_path, info)

        def labeller(window: Window, valid: np.ndarray, json_path: Path = json_path) -> tuple[np.ndarray, dict]:
            buildings, _ = rasterize_xbd_labels(json_path, shape=valid.shape)  # whole tile: the scene reads it whole
            label = buildings.astype(np.uint8)
            label[~valid] = ignore
            return label, {}

        scenes.append(SingleDateScene(_safe(tile), info, labeller, whole=True))
    return scenes, {"paths": {"xbd": str(root.resolve()), "glob": cfg.glob}, "labels": "xBD pre-disaster building polygons (features.xy)",
                    "rasterisation": "pixel centre inside a polygon"}


def _image_scenes(cfg: SingleDateSource, name: str, ignore: int) -> tuple[list[SingleDateScene], dict[str, Any], dict[int, str]]:
    paths = _image_paths(cfg, name)
    infos = []
    for path in paths:
        with _quiet():
            infos.append(_image_info(path))
    labels = [Path(p) for p in cfg.labels] if isinstance(cfg.labels, list) else Path(cfg.labels)
    description: dict[str, Any] = {"paths": {
        "image": [str(p.resolve()) for p in paths],
        "labels": [str(p.resolve()) for p in labels] if isinstance(labels, list) else str(labels.resolve()),
    }}
    if isinstance(labels, Path) and labels.is_file() and labels.suffix.lower() in _VECTOR_SUFFIXES:
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
        _check_codes(cfg.classes, ignore, name)
    _, classes = _class_codes([], cfg.classes, name)
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

        scenes.append(SingleDateScene(_safe(info.path.stem), info, labeller, whole=_plain(info), resources=(raster,)))
    if cfg.mask_threshold is not None:
        description["mask_threshold"] = cfg.mask_threshold
    elif cfg.label_type == "mask":
        description["label_values"] = sorted({s.resources[0].encoding for s in scenes})
    return scenes, description, classes


def _vector_scenes(cfg: SingleDateSource, name: str, infos: list[_ImageInfo], path: Path, ignore: int,
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
        _check_codes(cfg.classes, ignore, name)
    scenes, overlapping = [], 0
    for info in infos:
        key = info.crs.to_wkt()
        if key not in frames:
            if cfg.label_type == "classes":
                frames[key] = _read_class_polygons(path, info.crs, cfg.class_field, what)
                if not codes:
                    codes, classes = _class_codes([frames[key][cfg.class_field]], cfg.classes, name)
            else:
                frames[key] = read_polygons(path, info.crs, what=what)
        frame = frames[key]
        grid = Grid(info.crs, info.transform, info.width, info.height)
        hits = frame.sindex.query(shapely.box(*grid.bounds), predicate="intersects")
        overlapping += int(len(hits) > 0)
        if len(hits) == 0:
            log.info("%s: no polygon of %s overlaps it (all background)", info.path, path)
        if cfg.label_type == "classes":
            class_map = _VectorClassMap(path, frame, cfg.class_field, codes, ignore)

            def labeller(window: Window, valid: np.ndarray, grid: Grid = grid, class_map=class_map) -> tuple[np.ndarray, dict]:
                values, labelled = class_map.read(grid, window)
                return np.where(labelled & valid, values, ignore).astype(np.uint8), {}
        else:
            mask = PolygonMask(frame.geometry, all_touched=cfg.all_touched)

            def labeller(window: Window, valid: np.ndarray, grid: Grid = grid, mask: PolygonMask = mask) -> tuple[np.ndarray, dict]:
                label = mask.read(grid, window).astype(np.uint8)
                label[~valid] = ignore
                return label, {}

        scenes.append(SingleDateScene(_safe(info.path.stem), info, labeller, whole=_plain(info)))
    if not overlapping:
        bounds = ", ".join(f"{v:.6g}" for v in next(iter(frames.values())).total_bounds)
        raise InputError(
            f"{path}: none of its polygons (bounds {bounds} in {infos[0].crs}) overlaps the {len(infos)} image(s) of "
            f"source {name}; check the file's CRS or give the labels of these images"
        )
    description["n_polygons"] = int(len(next(iter(frames.values()))))
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


def _check_codes(classes: dict[int, str], ignore: int, name: str) -> None:
    bad = [c for c in classes if not 0 <= c <= 254 or c == ignore]
    if bad:
        raise InputError(f"classes of source {name}: code(s) {bad} outside 0..254 or equal to ignore_index {ignore}; recode them")


def _plain(info: _ImageInfo) -> bool:
    """Read whole: Pillow-only files and images without georeferencing (PNG, JPEG)."""
    return info.indexes is None or info.crs is None


# --- pairing ----------------------------------------------------------------------------------


def draw_star_partners(
    places: list[tuple[str, int, int]],
    *,
    chip_size: int,
    pairs_per_chip: int,
    identity_fraction: float,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Partners of every chip of one split: ``pairs_per_chip`` indices into ``places`` per chip.

    Parameters
    ----------
    places
        (scene, row, col) of every chip of the split; two chips overlap when they are in one scene
        less than ``chip_size`` px apart in both directions.
    identity_fraction
        Exactly ``round(identity_fraction * len(places) * pairs_per_chip)`` slots, drawn at random,
        pair a chip with itself.
    rng
        The draw's generator.

    Returns
    -------
    list of list of int
        ``partners[i][k]``: the after chip of the k-th pair of chip i (``i`` for an identity pair).
        Other partners are drawn uniformly among the chips that are not i and do not overlap i,
        distinct for one chip while there are enough; a chip without any such partner is paired
        with itself.
    """
    n = len(places)
    slots = n * pairs_per_chip
    identity = np.zeros(slots, dtype=bool)
    identity[rng.permutation(slots)[: math.floor(slots * identity_fraction + 0.5)]] = True

    def allowed(i: int, j: int) -> bool:
        (si, ri, ci), (sj, rj, cj) = places[i], places[j]
        return j != i and not (si == sj and abs(ri - rj) < chip_size and abs(ci - cj) < chip_size)

    partners = []
    for i in range(n):
        chosen: list[int] = []
        for k in range(pairs_per_chip):
            if identity[i * pairs_per_chip + k]:
                chosen.append(i)
                continue
            j = None
            for _ in range(64):  # rejection: overlapping neighbours are few in a split of many chips
                candidate = int(rng.integers(n))
                if allowed(i, candidate) and candidate not in chosen:
                    j = candidate
                    break
            if j is None:  # few chips: list them
                pool = [c for c in range(n) if allowed(i, c)]
                fresh = [c for c in pool if c not in chosen]
                j = int(rng.choice(fresh or pool)) if pool else i
            chosen.append(j)
        partners.append(chosen)
    return partners


def make_star_pairs(source: OpenedSource, cfg: SingleDateSource, kept: list, tmp: Path, *, targets: tuple[str, ...],
                    chip_size: int, ignore: int) -> list:
    """Replace the single-date chips of ``source`` in ``kept`` by STAR pairs written in ``tmp``.

    ``kept`` holds the chips written by :mod:`deltacd.datasets.chips` (``A`` and ``B`` both the
    single-date image, ``label`` the single-date mask or class map) with their split; the pairs
    take their place in the list (chip i's split, scene, offsets and block) and the single-date
    chip files are deleted.
    """
    mine = [c for c in kept if c.source is source]
    pairs_of: dict[str, list] = {}
    star = source.description["star"]
    counts: dict[str, dict[str, int]] = {"single_date_chips": {}, "pairs": {}, "identity_pairs": {}, "changed_pixels": {}}
    for split_index, split in enumerate(SPLITS):
        members = sorted((c for c in mine if c.split == split), key=lambda c: c.id)
        if not members:
            continue
        rng = np.random.default_rng([cfg.seed, source.index, split_index])
        partners = draw_star_partners([(c.scene.name, c.row, c.col) for c in members], chip_size=chip_size,
                                      pairs_per_chip=cfg.pairs_per_chip, identity_fraction=cfg.identity_fraction, rng=rng)
        alone = sum(1 for i, js in enumerate(partners) for j in js if j == i)
        expected = math.floor(len(members) * cfg.pairs_per_chip * cfg.identity_fraction + 0.5)
        if alone > expected:
            log.warning("source %s, split %s: %d pair(s) had no partner that does not overlap their chip; "
                        "paired with themselves", source.name, split, alone - expected)
        counts["single_date_chips"][split] = len(members)
        counts["pairs"][split] = len(members) * cfg.pairs_per_chip
        counts["identity_pairs"][split] = alone
        for i, js in enumerate(partners):
            ci = members[i]
            pairs_of[ci.id] = [_write_pair(tmp, f"{ci.id}__p{k}", ci, members[j], targets, cfg.label_type, ignore)
                               for k, j in enumerate(js)]
        counts["changed_pixels"][split] = int(sum(p.balance[1] for c in members for p in pairs_of[c.id]))
    for c in mine:
        for folder in ("A", "B", "label", *targets):
            (tmp / folder / f"{c.id}.tif").unlink(missing_ok=True)
    star.update(counts)
    out: list = []
    placed = False
    for c in kept:
        if c.source is not source:
            out.append(c)
        elif not placed:  # all pairs where the source's chips were, in chip order
            out.extend(p for m in mine for p in pairs_of[m.id])
            placed = True
    log.info("source %s: %s STAR pairs from %s single-date chips", source.name, counts["pairs"], counts["single_date_chips"])
    return out


def _write_pair(tmp: Path, pair_id: str, ci, cj, targets: tuple[str, ...], label_type: str, ignore: int):
    """Write one pair's A/B/label (and targets); returns its chip record."""
    from deltacd.datasets.chips import _write_tif  # the one chip writer (chips imports this module lazily)

    shutil.copyfile(tmp / "A" / f"{ci.id}.tif", tmp / "A" / f"{pair_id}.tif")
    shutil.copyfile(tmp / "A" / f"{cj.id}.tif", tmp / "B" / f"{pair_id}.tif")
    li, crs_i, transform_i = _read_label(tmp / "label" / f"{ci.id}.tif")
    lj, crs_j, transform_j = _read_label(tmp / "label" / f"{cj.id}.tif")
    unknown = (li == ignore) | (lj == ignore)
    change = (li ^ lj) if label_type == "mask" else (li != lj).astype(np.uint8)
    label = np.where(unknown, np.uint8(ignore), change).astype(np.uint8)
    _write_tif(tmp / "label" / f"{pair_id}.tif", label[None], crs_i, transform_i, ignore, ("label",))
    target_counts = {}
    for target in targets:
        if label_type == "classes" and target in ("from", "to"):
            values, crs, transform = (li, crs_i, transform_i) if target == "from" else (lj, crs_j, transform_j)
        else:  # a target of another source: unknown here
            values, crs, transform = np.full(label.shape, ignore, dtype=np.uint8), crs_i, transform_i
        _write_tif(tmp / target / f"{pair_id}.tif", values[None], crs, transform, ignore, (target,))
        codes, n = np.unique(values, return_counts=True)
        target_counts[target] = Counter({int(k): int(v) for k, v in zip(codes, n)})
    transitions: Counter = Counter()
    if label_type == "classes":
        both = ~unknown
        codes, n = np.unique(li[both].astype(np.int32) * 256 + lj[both], return_counts=True)
        transitions = Counter({(int(k) // 256, int(k) % 256): int(v) for k, v in zip(codes, n)})
    balance = np.array([np.count_nonzero(label == 0), np.count_nonzero(label == 1), np.count_nonzero(label == ignore)],
                       dtype=np.int64)
    return replace(ci, id=pair_id, moments=_single(ci.moments).merge(_single(cj.moments)), balance=balance,
                   target_counts=target_counts, transitions=transitions, pair_of=(ci.id, cj.id))


def _single(moments: BandMoments) -> BandMoments:
    """Moments of the image alone: the single-date chip counted it as both dates (same pixels twice)."""
    return BandMoments(moments.count // 2, moments.mean, moments.m2 / 2)


def _read_label(path: Path) -> tuple[np.ndarray, Any, Any]:
    with _quiet(), rasterio.open(path) as ds:
        georef = ds.crs is not None and not ds.transform.is_identity
        return ds.read(1), (ds.crs if georef else None), (ds.transform if georef else None)
