"""Settings of the five kinds of ground-truth source (the ``sources`` list of a dataset configuration).

Each kind is a frozen, strict pydantic dataclass told apart by its ``kind`` key; :data:`SourceConfig`
is their discriminated union. What each kind reads and how: :mod:`deltacd.datasets.sources`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, StringConstraints
from pydantic.dataclasses import dataclass as pydantic_dataclass

from deltacd.config import STRICT

__all__ = [
    "ChipsSource",
    "LandcoverSource",
    "PolygonsSource",
    "SingleDateSource",
    "SourceConfig",
    "SourceName",
    "SplitName",
    "XbdSource",
]

SplitName = Literal["train", "val", "test"]
SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


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
