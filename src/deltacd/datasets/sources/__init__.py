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
    :func:`deltacd.datasets.xview2.rasterize_xbd_labels`. Label = damaged building (minor, major
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

Modules: ``config`` (the settings of the five kinds), ``scenes`` (scenes and the opened source),
``images`` and ``classmaps`` (image files and land-cover maps, shared by the kinds), and one
reader per kind: ``chips_folder``, ``georeferenced`` (``polygons``, ``landcover``), ``xbd``,
``single_date``.
"""

from __future__ import annotations

import logging
from typing import Any

from deltacd.datasets.sources.chips_folder import open_chips
from deltacd.datasets.sources.config import (
    ChipsSource,
    LandcoverSource,
    PolygonsSource,
    SingleDateSource,
    SourceConfig,
    SourceName,
    SplitName,
    XbdSource,
)
from deltacd.datasets.sources.georeferenced import open_landcover, open_polygons
from deltacd.datasets.sources.images import IMAGE_SUFFIXES
from deltacd.datasets.sources.scenes import AlignedScene, ImagePairScene, Labeller, OpenedSource, Scene, SceneWindow
from deltacd.datasets.sources.single_date import open_single_date
from deltacd.datasets.sources.xbd import DAMAGE_CLASSES, open_xbd

log = logging.getLogger(__name__)

__all__ = [
    "DAMAGE_CLASSES",
    "IMAGE_SUFFIXES",
    "AlignedScene",
    "ChipsSource",
    "ImagePairScene",
    "Labeller",
    "LandcoverSource",
    "OpenedSource",
    "PolygonsSource",
    "Scene",
    "SceneWindow",
    "SingleDateSource",
    "SourceConfig",
    "SourceName",
    "SplitName",
    "XbdSource",
    "open_source",
]

_OPENERS = {"chips": open_chips, "polygons": open_polygons, "landcover": open_landcover, "xbd": open_xbd,
            "single_date": open_single_date}


def open_source(config: Any, index: int, *, ignore_index: int) -> OpenedSource:
    """Check one source's files and open it.

    Raises
    ------
    MissingInputError
        A named file or folder does not exist.
    InputError
        Files are unreadable, sizes or bands disagree, or label values are not understood.
    """
    source = _OPENERS[config.kind](config, index, ignore_index)
    log.info("source %s (%s): %d scene(s), bands %s, %s", source.name, source.kind, len(source.scenes),
             ",".join(source.bands), source.dtype)
    return source
