"""Ground truth a change dataset is cut from: five kinds of source, their settings and readers.

``chips``
    A folder in the A/B/label layout of LEVIR-CD, DSIFN-CD, WHU-CD, CDD (``A/x.png``, ``B/x.png``,
    ``label/x.png``; the three folder names are settings). Any format GDAL reads, Pillow as a fallback.
    Label values are detected once per source, over all its label files: values in {0, 1} are kept,
    values in {0, 255} become 0/1 (255 = change), values in {0, 1, 255} are read as 0/1 with
    255 = unlabelled (ignored). Anything else is an error.
``polygons``
    A GeoTIFF pair aligned with :func:`deltacd.prepare.align.align_pair` and a vector file of change
    polygons, rasterised on the pair's grid window by window with the pixel-centre rule (GDAL's: a
    pixel is change when its centre lies inside a polygon; ``all_touched`` marks every pixel a
    polygon touches). Everything else inside the pair's footprint (and ``aoi``) is no-change.
``landcover``
    A GeoTIFF pair and one land-cover map per date, each a raster (integer class codes, resampled
    onto the pair grid with nearest neighbour) or a vector file with a class attribute
    (``class_field``). Label = 1 where the two classes differ; ``from``/``to`` targets keep the
    codes. Pixels unlabelled in either map (raster nodata, outside the map, no polygon) are ignored.
``xbd``
    xBD pre/post PNG images and the post-disaster JSON labels, rasterised by
    :func:`deltacd.evaluate.xview2.rasterize_xbd_labels`. Label = damaged building (minor, major
    or destroyed) versus everything else (background, no-damage and, by default, un-classified,
    which xView2 counts as no-damage); the ``damage`` target keeps the xView2 classes
    0 background, 1 no-damage, 2 minor, 3 major, 4 destroyed. Binary labels are symmetric
    in time, but ``damage`` describes the post image only.
``single_date``
    Images of ONE date with object masks (building footprints, raster masks, xBD pre-disaster
    polygons) or land-cover maps, cut into chips that are then paired with other chips of the same
    split (STAR, Zheng et al., ICCV 2021, arXiv:2108.07002): before = chip i, after = chip j,
    change = objects at exactly one of the two places (or the classes differ). See
    :mod:`deltacd.datasets.single_date` for the method and its limits.

Every source opens as an :class:`OpenedSource`: a list of :class:`Scene` (one image pair on one
pixel grid with its labels) that :mod:`deltacd.datasets.chips` cuts into chips. Pixels where
either date has no data are ignored in every target.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import rasterio
import shapely
from affine import Affine
from pydantic import Field, PositiveFloat, StringConstraints
from pydantic.dataclasses import dataclass as pydantic_dataclass
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from deltacd.config import STRICT
from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import default_names, parse_bands
from deltacd.io.grid import Grid
from deltacd.io.rasters import open_image
from deltacd.io.vectors import PolygonMask, read_polygons
from deltacd.prepare.align import AlignedPair, align_pair

log = logging.getLogger(__name__)

SplitName = Literal["train", "val", "test"]
SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

#: Image formats looked for in a chips folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".jp2", ".gif", ".webp")
_VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite"}

#: xView2 damage classes of the ``damage`` target.
DAMAGE_CLASSES = {0: "background", 1: "no-damage", 2: "minor-damage", 3: "major-damage", 4: "destroyed"}


# --- settings ---------------------------------------------------------------------------------


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class ChipsSource:
    """A folder of co-registered image pairs and change masks (LEVIR-CD / DSIFN / WHU-CD layout).

    Attributes
    ----------
    path
        Folder holding ``before_dir``, ``after_dir`` and ``label_dir``; files are matched by stem
        (``A/x.png``, ``B/x.png``, ``label/x.png``; the label may have another format).
    glob
        Pattern(s) on the file names of ``before_dir`` (``"test_*"``, ``["[0-7]_*"]``); default all.
    before_dir, after_dir, label_dir
        Sub-folder names (CDD uses ``OUT`` for labels, SYSU-CD ``time1``/``time2``).
    bands
        Band names in file order (default: the files' colour interpretation, e.g. R,G,B for PNG).
    block_pattern
        Regular expression on the file stem whose first group names the image's split block, to
        keep neighbouring crops of one tile together (LEVIR-CD crops ``test_2_0000_0512``:
        ``'^([a-z]+_\\d+)_'``). Default: each image is its own block.
    name
        Short name used in chip ids (default ``chips<index>``).
    split
        Put every chip of this source in one split (e.g. a benchmark's official test crops).
    resolution_m
        Ground sampling distance of plain images (PNG chips carry none), in metres: recorded in
        the manifest and in the models trained on it, so ``detect --model`` can run at it.
    """

    kind: Literal["chips"] = "chips"
    path: Path
    glob: str | list[str] | None = None
    before_dir: str = "A"
    after_dir: str = "B"
    label_dir: str = "label"
    bands: str | None = None
    block_pattern: str | None = None
    name: SourceName | None = None
    split: SplitName | None = None
    resolution_m: PositiveFloat | None = None


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class PolygonsSource:
    """A GeoTIFF pair and change polygons (GeoPackage, GeoJSON, Shapefile).

    Attributes
    ----------
    before, after
        The two images (any raster GDAL reads; aligned on one grid as by ``deltacd detect``).
    polygons
        Change polygons, any CRS.
    bands_before, bands_after
        Band order of each image (default: read from the files).
    aoi
        Area that was interpreted; pixels outside are ignored (default: the whole pair footprint).
    crs, resolution
        Grid of the chips (default: the first date's CRS, the coarser resolution).
    all_touched
        False: a pixel is change when its centre is inside a polygon (GDAL rule); True: when touched.
    name, split
        As for :class:`ChipsSource`.
    """

    kind: Literal["polygons"] = "polygons"
    before: Path
    after: Path
    polygons: Path
    bands_before: str | None = None
    bands_after: str | None = None
    aoi: Path | None = None
    crs: str | None = None
    resolution: PositiveFloat | None = None
    all_touched: bool = False
    name: SourceName | None = None
    split: SplitName | None = None


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class LandcoverSource:
    """A GeoTIFF pair and one land-cover map per date (e.g. two OCS GE editions).

    Attributes
    ----------
    before, after, bands_before, bands_after, aoi, crs, resolution
        As for :class:`PolygonsSource`.
    map_before, map_after
        Land-cover map of each date: a raster of integer class codes 0..254 (nodata = unlabelled),
        or a vector file whose ``class_field`` holds the class.
    class_field
        Attribute holding the class in vector maps (integer codes or names).
    classes
        Class code -> name. Vector maps whose class attribute holds names are coded with it;
        without it, names are coded 1, 2, ... in sorted order (written in the manifest).
    name, split
        As for :class:`ChipsSource`.
    """

    kind: Literal["landcover"] = "landcover"
    before: Path
    after: Path
    map_before: Path
    map_after: Path
    class_field: str | None = None
    classes: dict[int, str] | None = None
    bands_before: str | None = None
    bands_after: str | None = None
    aoi: Path | None = None
    crs: str | None = None
    resolution: PositiveFloat | None = None
    name: SourceName | None = None
    split: SplitName | None = None


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class XbdSource:
    """xBD / xView2 tiles: ``images/<id>_pre_disaster.png``, ``images/<id>_post_disaster.png`` and
    ``labels/<id>_post_disaster.json``.

    Attributes
    ----------
    path
        Folder holding ``images/`` and ``labels/`` (e.g. ``xbd/tier3``).
    glob
        Pattern(s) on the tile id (``"joplin-tornado_*"``); default all tiles with a post label.
    unclassified
        ``"no-damage"`` (xView2 convention: un-classified buildings count as no-damage) or
        ``"ignore"`` (their pixels are ignored in ``label`` and ``damage``).
    bands, name, split, resolution_m
        As for :class:`ChipsSource` (xBD tiles: about 0.5 m).
    """

    kind: Literal["xbd"] = "xbd"
    path: Path
    glob: str | list[str] | None = None
    unclassified: Literal["no-damage", "ignore"] = "no-damage"
    bands: str | None = None
    name: SourceName | None = None
    split: SplitName | None = None
    resolution_m: PositiveFloat | None = None


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class SingleDateSource:
    """Images of one date and their object or land-cover labels, turned into STAR change pairs
    (the method and its limits: :mod:`deltacd.datasets.single_date`).

    Attributes
    ----------
    image
        A raster (GeoTIFF, PNG ...), a list of them, or a folder of them (filtered by ``glob``).
        Every image is a scene of its own, read on its own grid.
    labels
        The single-date labels: a vector file of polygons (building footprints; or a land-cover map
        with ``class_field``) in any CRS, rasterised on each image's grid window by window; or label
        rasters of the same size and grid as their image: one file for one image, a list in the
        order of ``image``, or a folder holding ``<image stem><label_suffix>.<ext>``.
    xbd
        Instead of ``image``/``labels``: an xBD folder; its ``images/*_pre_disaster.png`` and the
        building polygons of ``labels/*_pre_disaster.json``.
    glob
        Pattern(s) on the image file names of an ``image`` folder, or on xBD tile ids.
    label_suffix
        Stem suffix of the label files in a ``labels`` folder (``"_mask"``: ``x_mask.tif`` for ``x.tif``).
    label_type
        ``"mask"``: objects versus background, change = object at exactly one of the two places
        (XOR). ``"classes"``: land-cover codes 0..254, change = the classes differ; ``from``/``to``
        targets keep the codes.
    mask_threshold
        Raster masks: None reads 0/1 or 0/255 (or 0/1 with 255 = unlabelled); a number marks an
        object where the value exceeds it (0 for instance-id masks, 127 for JPEG-compressed masks).
    class_field, classes
        As for :class:`LandcoverSource` (vector land-cover maps).
    all_touched
        As for :class:`PolygonsSource`.
    bands
        Band names in file order (default: read from the files).
    identity_fraction
        Share of each split's pairs that pair a chip with itself (label all no-change).
    pairs_per_chip
        Pairs drawn with every chip as the before image.
    seed
        Seed of the partner draw.
    name, split, resolution_m
        As for :class:`ChipsSource`.
    """

    kind: Literal["single_date"] = "single_date"
    image: Path | list[Path] | None = None
    labels: Path | list[Path] | None = None
    xbd: Path | None = None
    glob: str | list[str] | None = None
    label_suffix: str = ""
    label_type: Literal["mask", "classes"] = "mask"
    mask_threshold: Annotated[float, Field(ge=0.0)] | None = None
    class_field: str | None = None
    classes: dict[int, str] | None = None
    all_touched: bool = False
    bands: str | None = None
    identity_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    pairs_per_chip: Annotated[int, Field(ge=1)] = 1
    seed: int = 0
    name: SourceName | None = None
    split: SplitName | None = None
    resolution_m: PositiveFloat | None = None


SourceConfig = Annotated[
    ChipsSource | PolygonsSource | LandcoverSource | XbdSource | SingleDateSource, Field(discriminator="kind")
]


# --- scenes -----------------------------------------------------------------------------------


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

    def __init__(self, name: str, before: _ImageInfo, after: _ImageInfo, labeller: Labeller):
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
            before, valid_b = _read_image(self.before_info)
            after, valid_a = _read_image(self.after_info)
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


def open_source(config: Any, index: int, *, ignore_index: int) -> OpenedSource:
    """Check one source's files and open it.

    Raises
    ------
    MissingInputError
        A named file or folder does not exist.
    InputError
        Files are unreadable, sizes or bands disagree, or label values are not understood.
    """
    from deltacd.datasets.single_date import open_single_date  # imports this module

    openers = {"chips": _open_chips, "polygons": _open_polygons, "landcover": _open_landcover, "xbd": _open_xbd,
               "single_date": open_single_date}
    source = openers[config.kind](config, index, ignore_index)
    log.info("source %s (%s): %d scene(s), bands %s, %s", source.name, source.kind, len(source.scenes),
             ",".join(source.bands), source.dtype)
    return source


# --- chips ------------------------------------------------------------------------------------


def _open_chips(cfg: ChipsSource, index: int, ignore: int) -> OpenedSource:
    name = cfg.name or f"chips{index}"
    root = Path(cfg.path)
    if not root.is_dir():
        raise MissingInputError(
            f"{root}: no such folder (chips source {name}); "
            f"give a folder holding {cfg.before_dir}/, {cfg.after_dir}/ and {cfg.label_dir}/"
        )
    dirs = {}
    for role, sub in (("before", cfg.before_dir), ("after", cfg.after_dir), ("label", cfg.label_dir)):
        d = root / sub
        if not d.is_dir():
            raise MissingInputError(f"{d}: no such folder ({role} images of chips source {name}); set {role}_dir to the folder's name")
        dirs[role] = _images_by_stem(d)
    stems = sorted(dirs["before"])
    if not stems:
        raise InputError(f"{root / cfg.before_dir}: no image ({', '.join(IMAGE_SUFFIXES)}); give the folder of the before images")
    if cfg.glob is not None:
        patterns = [cfg.glob] if isinstance(cfg.glob, str) else list(cfg.glob)
        stems = [s for s in stems if any(fnmatch.fnmatch(dirs["before"][s].name, p) or fnmatch.fnmatch(s, p) for p in patterns)]
        if not stems:
            raise InputError(
                f"{root / cfg.before_dir}: glob {cfg.glob!r} matches none of its {len(dirs['before'])} images; "
                f"fix the pattern"
            )

    declared = parse_bands(cfg.bands, setting=f"bands of source {name}") if cfg.bands else None
    triplets, band_names, dtype, values = [], None, None, set()
    for stem in stems:
        files = []
        for role in ("before", "after", "label"):
            path = dirs[role].get(stem)
            if path is None:
                raise MissingInputError(
                    f"{root / getattr(cfg, role + '_dir')}: no file {stem}.* for {dirs['before'][stem].name}; "
                    "every before image needs an after image and a label with the same name"
                )
            files.append(_image_info(path))
        a, b, lab = files
        for other in (b, lab):
            if (other.height, other.width) != (a.height, a.width):
                raise InputError(
                    f"{other.path}: {other.width}x{other.height} px but {a.path} is {a.width}x{a.height}; "
                    "images and labels of a pair must have the same size"
                )
        if b.count != a.count or b.dtype != a.dtype:
            raise InputError(
                f"{b.path}: {b.count} band(s) of {b.dtype} but {a.path} has {a.count} of {a.dtype}; "
                f"give pairs of the same kind"
            )
        names = declared or a.names
        if len(names) != a.count:
            raise InputError(f"{a.path}: has {a.count} band(s) but bands of source {name} is {','.join(names)}; declare one name per band")
        if band_names is None:
            band_names, dtype = names, a.dtype
        elif names != band_names or a.dtype != dtype:
            raise InputError(
                f"{a.path}: bands {','.join(names)} ({a.dtype}) differ from the source's first image "
                f"({','.join(band_names)}, {dtype}); a source's images must share bands and data type"
            )
        found = np.unique(_read_label(lab))
        values |= {int(v) for v in found}
        triplets.append((stem, a, b, lab))

    encoding = _label_encoding(values, root / cfg.label_dir)
    pattern = None
    if cfg.block_pattern is not None:
        try:
            pattern = re.compile(cfg.block_pattern)
        except re.error as exc:
            raise InputError(f"block_pattern of source {name}: {cfg.block_pattern!r} is not a regular expression ({exc}); fix it") from exc
    scenes = []
    for stem, a, b, lab in triplets:
        scene = ImagePairScene(_safe(stem), a, b, _chips_labeller(lab, encoding, ignore))
        if pattern is not None:
            match = pattern.search(stem)
            if match is None or not match.groups():
                raise InputError(
                    f"block_pattern of source {name}: {cfg.block_pattern!r} does not match {stem!r} with a group; "
                    "give a pattern whose first (...) group names the block"
                )
            scene.block = _safe(match.group(1))
        scenes.append(scene)
    crs = scenes[0].crs
    return OpenedSource(
        index, name, "chips", band_names, dtype, triplets[0][1].nodata, scenes, image_blocks=True, forced_split=cfg.split,
        description={
            "paths": {"folder": str(root.resolve()), "glob": cfg.glob},
            "label_values": encoding,
            **({"crs": crs.to_string(), "res": abs(scenes[0].transform.a)} if crs is not None else {}),
        },
    )


def _label_encoding(values: set[int], folder: Path) -> str:
    if values <= {0, 1}:
        return "0/1"
    if values <= {0, 255}:
        return "0/255"
    if values <= {0, 1, 255}:
        return "0/1, 255 unlabelled"
    raise InputError(
        f"{folder}: label values {sorted(values)[:10]} found; expected 0/1 or 0/255 (change = 1 or 255), "
        "or 0/1 with 255 = unlabelled; recode the labels"
    )


def _chips_labeller(info: _ImageInfo, encoding: str, ignore: int) -> Labeller:
    def labeller(shape: tuple[int, int], valid: np.ndarray) -> tuple[np.ndarray, dict]:
        raw = _read_label(info)
        if encoding == "0/255":
            label = (raw == 255).astype(np.uint8)
        else:
            label = raw.astype(np.uint8)
            label[raw == 255] = ignore
        label[~valid] = ignore
        return label, {}

    return labeller


# --- xBD --------------------------------------------------------------------------------------


def _open_xbd(cfg: XbdSource, index: int, ignore: int) -> OpenedSource:
    from deltacd.evaluate.xview2 import rasterize_xbd_labels  # the one xBD reader

    name = cfg.name or f"xbd{index}"
    root = Path(cfg.path)
    images, labels = root / "images", root / "labels"
    for d in (root, images, labels):
        if not d.is_dir():
            raise MissingInputError(
                f"{d}: no such folder (xbd source {name}); "
                f"give the folder holding images/ and labels/ (e.g. xbd/tier3)"
            )
    suffix = "_post_disaster.json"
    ids = sorted(p.name[: -len(suffix)] for p in labels.glob(f"*{suffix}"))
    if cfg.glob is not None:
        patterns = [cfg.glob] if isinstance(cfg.glob, str) else list(cfg.glob)
        ids = [i for i in ids if any(fnmatch.fnmatch(i, p) for p in patterns)]
    if not ids:
        raise InputError(
            f"{labels}: no *{suffix} label{' matching ' + repr(cfg.glob) if cfg.glob else ''}; "
            f"give an xBD folder with post-disaster labels"
        )
    declared = parse_bands(cfg.bands, setting=f"bands of source {name}") if cfg.bands else None
    scenes, band_names, dtype, nodata = [], None, None, None
    for tile in ids:
        pre = _find_image(images, f"{tile}_pre_disaster")
        post = _find_image(images, f"{tile}_post_disaster")
        a, b = _image_info(pre), _image_info(post)
        if (a.height, a.width, a.count) != (b.height, b.width, b.count):
            raise InputError(
                f"{post}: {b.width}x{b.height}x{b.count} but {pre} is {a.width}x{a.height}x{a.count}; "
                f"give a matching pre/post pair"
            )
        names = declared or a.names
        if len(names) != a.count:
            raise InputError(f"{pre}: has {a.count} band(s) but bands of source {name} is {','.join(names)}; declare one name per band")
        if band_names is None:
            band_names, dtype, nodata = names, a.dtype, a.nodata
        elif names != band_names or a.dtype != dtype:
            raise InputError(f"{pre}: bands {','.join(names)} ({a.dtype}) differ from {','.join(band_names)} ({dtype}) of the first tile")
        json_path = labels / f"{tile}{suffix}"

        def labeller(shape, valid, json_path=json_path):
            mode = "ignore" if cfg.unclassified == "ignore" else "no-damage"
            buildings, damage = rasterize_xbd_labels(json_path, shape=shape, unclassified=mode)
            label = np.isin(damage, (2, 3, 4)).astype(np.uint8)
            damage = damage.copy()
            unknown = ~valid
            if mode == "ignore":
                unknown |= (buildings > 0) & (damage == 0)  # un-classified building pixels
            label[unknown] = ignore
            damage[unknown] = ignore
            return label, {"damage": damage}

        _check_xbd_size(json_path, a)
        scenes.append(ImagePairScene(_safe(tile), a, b, labeller))
    return OpenedSource(
        index, name, "xbd", band_names, dtype, nodata, scenes, image_blocks=True, forced_split=cfg.split,
        targets=("damage",), target_classes={"damage": dict(DAMAGE_CLASSES)},
        description={"paths": {"folder": str(root.resolve()), "glob": cfg.glob}, "unclassified": cfg.unclassified},
    )


def _check_xbd_size(json_path: Path, image: _ImageInfo) -> None:
    import json

    try:
        meta = json.loads(json_path.read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{json_path}: not readable JSON ({exc}); give an xBD label file") from exc
    w, h = meta.get("width"), meta.get("height")
    if w and h and (int(h), int(w)) != (image.height, image.width):
        raise InputError(f"{json_path}: labels for {w}x{h} px but {image.path} is {image.width}x{image.height}; give the matching image")


def _find_image(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise MissingInputError(f"{folder}: no image {stem}.png (or .tif, .jpg); every xBD label needs its pre and post image")


# --- georeferenced pairs ----------------------------------------------------------------------


def _open_pair(cfg: PolygonsSource | LandcoverSource, name: str) -> tuple[AlignedPair, str, float | None]:
    before = open_image(cfg.before, bands=cfg.bands_before, label=f"before image of source {name}")
    after = open_image(cfg.after, bands=cfg.bands_after, label=f"after image of source {name}")
    dtypes = {f.dtype for f in before.files} | {f.dtype for f in after.files}
    if len(dtypes) != 1:
        raise InputError(
            f"{cfg.before} and {cfg.after}: data types {', '.join(sorted(dtypes))} differ (source {name}); "
            "chips keep the raw values, so give both dates in one type (gdal_translate -ot)"
        )
    pair = align_pair(before, after, crs=cfg.crs, resolution=cfg.resolution, aoi=cfg.aoi)
    return pair, dtypes.pop(), before.files[0].nodata


def _pair_description(cfg: PolygonsSource | LandcoverSource, pair: AlignedPair, **paths: Any) -> dict[str, Any]:
    described = {"before": str(Path(cfg.before).resolve()), "after": str(Path(cfg.after).resolve())}
    described.update({k: (str(Path(v).resolve()) if v is not None else None) for k, v in paths.items()})
    if cfg.aoi is not None:
        described["aoi"] = str(Path(cfg.aoi).resolve())
    return {"paths": described, "crs": pair.grid.crs.to_string(), "res": pair.grid.res[0],
            "size": [pair.grid.width, pair.grid.height]}


def _open_polygons(cfg: PolygonsSource, index: int, ignore: int) -> OpenedSource:
    name = cfg.name or f"polygons{index}"
    if not Path(cfg.polygons).exists():
        raise MissingInputError(f"{cfg.polygons}: no such file (change polygons of source {name}); check the path")
    pair, dtype, nodata = _open_pair(cfg, name)
    frame = read_polygons(cfg.polygons, pair.grid.crs, what=f"change polygons of source {name}")
    mask = PolygonMask(frame.geometry, all_touched=cfg.all_touched)

    def labeller(window: Window, valid: np.ndarray) -> tuple[np.ndarray, dict]:
        label = mask.read(pair.grid, window).astype(np.uint8)
        label[~valid] = ignore
        return label, {}

    scene = AlignedScene(_safe(Path(cfg.before).stem), pair, dtype, labeller)
    desc = _pair_description(cfg, pair, polygons=cfg.polygons)
    desc["n_polygons"] = len(frame)
    desc["rasterisation"] = "all touched pixels" if cfg.all_touched else "pixel centre inside a polygon"
    return OpenedSource(index, name, "polygons", pair.bands, dtype, nodata, [scene], image_blocks=False,
                        forced_split=cfg.split, description=desc)


def _open_landcover(cfg: LandcoverSource, index: int, ignore: int) -> OpenedSource:
    name = cfg.name or f"landcover{index}"
    for role in ("map_before", "map_after"):
        if not Path(getattr(cfg, role)).exists():
            raise MissingInputError(f"{getattr(cfg, role)}: no such file ({role} of source {name}); check the path")
    if cfg.classes is not None:
        bad = [c for c in cfg.classes if not 0 <= c <= 254 or c == ignore]
        if bad:
            raise InputError(f"classes of source {name}: code(s) {bad} outside 0..254 or equal to ignore_index {ignore}; recode them")
    pair, dtype, nodata = _open_pair(cfg, name)
    grid = pair.grid
    vectors = {role: _is_vector(Path(getattr(cfg, role))) for role in ("map_before", "map_after")}
    frames = {}
    for role, is_vector in vectors.items():
        if is_vector:
            frames[role] = _read_class_polygons(Path(getattr(cfg, role)), grid.crs, cfg.class_field, f"{role} of source {name}")
    codes, classes = _class_codes([f[cfg.class_field] for f in frames.values()], cfg.classes, name)
    maps = {}
    for role in ("map_before", "map_after"):
        path = Path(getattr(cfg, role))
        if role in frames:
            maps[role] = _VectorClassMap(path, frames[role], cfg.class_field, codes, ignore)
        else:
            maps[role] = _RasterClassMap(path, grid, ignore)

    def labeller(window: Window, valid: np.ndarray) -> tuple[np.ndarray, dict]:
        c_from, ok_from = maps["map_before"].read(grid, window)
        c_to, ok_to = maps["map_after"].read(grid, window)
        ok_from &= valid
        ok_to &= valid
        both = ok_from & ok_to
        label = np.where(both, (c_from != c_to).astype(np.uint8), np.uint8(ignore)).astype(np.uint8)
        return label, {
            "from": np.where(ok_from, c_from, ignore).astype(np.uint8),
            "to": np.where(ok_to, c_to, ignore).astype(np.uint8),
        }

    scene = AlignedScene(_safe(Path(cfg.before).stem), pair, dtype, labeller, resources=tuple(maps.values()))
    desc = _pair_description(cfg, pair, map_before=cfg.map_before, map_after=cfg.map_after)
    desc["class_field"] = cfg.class_field
    return OpenedSource(
        index, name, "landcover", pair.bands, dtype, nodata, [scene], image_blocks=False, forced_split=cfg.split,
        targets=("from", "to"), target_classes={"from": dict(classes), "to": dict(classes)}, description=desc,
    )


def _is_vector(path: Path) -> bool:
    return path.suffix.lower() in _VECTOR_SUFFIXES or path.is_dir()


def _read_class_polygons(path: Path, crs: CRS, class_field: str | None, what: str):
    frame = read_polygons(path, crs, what=what)
    if class_field is None or class_field not in frame.columns:
        columns = [c for c in frame.columns if c != frame.geometry.name]
        found = f"no attribute {class_field!r}" if class_field else "class_field is not set"
        raise InputError(f"{path}: {found} ({what}); set class_field to one of {', '.join(map(str, columns)) or '(none)'}")
    frame = frame[frame[class_field].notna()]
    return frame


def _class_codes(value_lists: list, classes: dict[int, str] | None, name: str) -> tuple[dict[Any, int], dict[int, str]]:
    """Code of every class value found in vector maps, and the code -> name table."""
    values = sorted({v for vs in value_lists for v in vs}, key=str)
    table = dict(classes or {})
    by_name = {n: c for c, n in table.items()}
    codes: dict[Any, int] = {}
    unnamed = []
    for v in values:
        number = _as_int(v)
        if table and number is not None and number in table:
            codes[v] = number
        elif str(v) in by_name:
            codes[v] = by_name[str(v)]
        elif not table and number is not None:
            if not 0 <= number <= 254:
                raise InputError(f"source {name}: class code {number} outside 0..254; from/to chips are uint8, recode the classes")
            codes[v] = number
        elif table:
            raise InputError(
                f"source {name}: class value {v!r} is neither a code nor a name of classes ({', '.join(map(str, table.values()))}); "
                f"add it to classes"
            )
        else:
            unnamed.append(v)
    if unnamed:  # names without a table: number them 1, 2, ... in sorted order
        if len(unnamed) > 254:
            raise InputError(f"source {name}: {len(unnamed)} class names; at most 254 fit the uint8 from/to chips")
        for i, v in enumerate(unnamed, start=1):
            codes[v] = i
            table[i] = str(v)
    return codes, table


def _as_int(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


class _VectorClassMap:
    """Class polygons rasterised by window (pixel-centre rule; where polygons overlap, the last wins)."""

    def __init__(self, path: Path, frame, class_field: str, codes: dict[Any, int], ignore: int):
        self.path = path
        self.geoms = frame.geometry.reset_index(drop=True)
        self.values = np.array([codes[v] for v in frame[class_field]], dtype=np.int32) + 1
        self.sindex = self.geoms.sindex

    def read(self, grid: Grid, window: Window) -> tuple[np.ndarray, np.ndarray]:
        shape = (int(window.height), int(window.width))
        hits = np.sort(self.sindex.query(shapely.box(*grid.window_bounds(window)), predicate="intersects"))
        if len(hits) == 0:
            return np.zeros(shape, np.uint8), np.zeros(shape, bool)
        burnt = rasterize(
            zip(self.geoms.iloc[hits].values, self.values[hits].tolist()), out_shape=shape,
            transform=grid.window_transform(window), fill=0, dtype="int32",
        )
        return np.clip(burnt - 1, 0, 254).astype(np.uint8), burnt > 0

    def close(self) -> None:
        pass


class _RasterClassMap:
    """A class raster resampled onto the grid with nearest neighbour; nodata and outside = unlabelled."""

    def __init__(self, path: Path, grid: Grid, ignore: int):
        self.path, self.ignore = path, ignore
        try:
            self._ds = rasterio.open(path)
        except RasterioIOError as exc:
            raise InputError(f"{path}: not a raster GDAL can read ({exc}); give a class raster or a vector file with class_field") from exc
        if self._ds.crs is None:
            self._ds.close()
            raise InputError(f"{path}: land-cover raster has no CRS; georeference it (gdal_edit.py -a_srs)")
        options = dict(crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height, resampling=Resampling.nearest)
        if self._ds.nodata is None:
            options["add_alpha"] = True
        else:
            options["nodata"] = self._ds.nodata
        self._vrt = WarpedVRT(self._ds, **options)

    def read(self, grid: Grid, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self._vrt.read(1, window=window)
        labelled = self._vrt.read_masks(1, window=window) > 0
        found = values[labelled]
        if found.size and (found.min() < 0 or found.max() > 254 or np.any(found == self.ignore)
                           or (np.issubdtype(found.dtype, np.floating) and np.any(found != np.round(found)))):
            bad = found[(found < 0) | (found > 254) | (found == self.ignore) | (found != np.round(found))][0]
            raise InputError(f"{self.path}: class value {bad} outside 0..254 (or equal to ignore_index {self.ignore}); "
                             "from/to chips are uint8: recode the map, or set its nodata")
        return values.astype(np.uint8), labelled

    def close(self) -> None:
        self._vrt.close()
        self._ds.close()


# --- image files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageInfo:
    """Metadata of one image file; ``indexes`` are the 1-based bands kept (alpha bands dropped)."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    names: tuple[str, ...]
    indexes: tuple[int, ...] | None  # None: read with Pillow
    nodata: float | None = None
    crs: CRS | None = None
    transform: Affine | None = None


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in found:
                raise InputError(f"{folder}: {found[p.stem].name} and {p.name} share the name {p.stem}; keep one image per name")
            found[p.stem] = p
    return found


def _image_info(path: Path) -> _ImageInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                keep = tuple(i + 1 for i, c in enumerate(ds.colorinterp) if c != ColorInterp.alpha) or (1,)
                interp = [ds.colorinterp[i - 1].name for i in keep]
                desc = [ds.descriptions[i - 1] for i in keep]
                georef = ds.crs is not None and not ds.transform.is_identity
                return _ImageInfo(
                    path, ds.width, ds.height, len(keep), ds.dtypes[0], default_names(len(keep), interp, desc), keep,
                    nodata=ds.nodata, crs=CRS.from_user_input(ds.crs) if georef else None,
                    transform=ds.transform if georef else None,
                )
    except RasterioIOError:
        pass
    array = _pillow_read(path)
    count = array.shape[0]
    names = default_names(count, ["red", "green", "blue"][:count] if count >= 3 else ["gray"] * count, [None] * count)
    return _ImageInfo(path, array.shape[2], array.shape[1], count, str(array.dtype), names, None)


def _pillow_read(path: Path) -> np.ndarray:
    try:
        from PIL import Image

        with Image.open(path) as image:
            if image.mode in ("RGBA", "LA"):
                image = image.convert(image.mode[:-1])
            array = np.asarray(image)
    except Exception as exc:  # Pillow raises several types for unreadable files
        raise InputError(f"{path}: not an image GDAL or Pillow can read ({exc}); convert it to PNG or GeoTIFF") from exc
    return np.ascontiguousarray(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0))


def _read_image(info: _ImageInfo) -> tuple[np.ndarray, np.ndarray]:
    """[C, H, W] in the file's type and bool [H, W] validity (GDAL's mask: nodata, alpha, mask band)."""
    if info.indexes is None:
        array = _pillow_read(info.path)
        return array, np.ones(array.shape[1:], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(info.path) as ds:
            return ds.read(list(info.indexes)), ds.dataset_mask() > 0


def _read_label(info: _ImageInfo) -> np.ndarray:
    """The single band of a label image ([H, W]); a multi-band label must repeat one band."""
    array, _ = _read_image(info)
    if array.shape[0] > 1 and not all(np.array_equal(array[0], b) for b in array[1:]):
        raise InputError(f"{info.path}: label with {array.shape[0]} different bands; give a single-band mask (0/1 or 0/255)")
    return array[0]


def _to_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 digital numbers back to the source type (exact when the pair was not resampled)."""
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        return np.clip(np.rint(values), info.min, info.max).astype(kind)
    return values.astype(kind)


def _safe(name: str) -> str:
    """A name usable in file names and chip ids."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "scene"
