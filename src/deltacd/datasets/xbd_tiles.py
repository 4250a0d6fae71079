"""xBD-style damage tiles as the files a real study has: a GeoTIFF pair and a footprint layer with grades.

xBD (Gupta et al. 2019, arXiv:1911.09296) and the datasets that follow its conventions (Ida-BD)
ship plain 1024 x 1024 PNGs without georeference, with labels either as

* masks (``masks/<tile>_pre_disaster.png``: 255 building; ``masks/<tile>_post_disaster.png``:
  1 no damage, 2 minor, 3 major, 4 destroyed), as the DAHiTra repository distributes them, or
* JSON polygons (``labels/<tile>_post_disaster.json``, ``features.xy`` in pixel WKT with a
  ``subtype``), as xBD itself does.

:func:`write_xbd_tile` writes one tile as ``before.tif`` / ``after.tif`` (RGB, on a projected CRS
at 0.5 m, the tile's effective resolution), ``buildings.gpkg`` (one polygon per building with
``building_id``, ``grade`` on deltacd's scale and ``subtype``), and the xView2 pixel targets
``localisation.tif`` (1 building) and ``damage_mask.tif`` (0 background, 1-4 as in xView2). Each
tile is placed at its own ``origin`` so that tiles of one study never overlap. From masks, a
building is a 4-connected component of the pre mask and its grade the majority post value in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.features import shapes
from scipy import ndimage
from shapely import wkt as shapely_wkt

from deltacd.outputs.grades import GRADE_TABLES, UNCLASSIFIED
from deltacd.errors import InputError, MissingInputError

#: A projected CRS for tiles that carry none (UTM 15N: Texas, Louisiana, Missouri lie near it).
DEFAULT_CRS = "EPSG:32615"
#: Effective resolution of xBD tiles (pan-sharpened Maxar products), metres.
XBD_RESOLUTION = 0.5


@dataclass(frozen=True)
class XbdTile:
    """One tile written as GeoTIFFs and a footprint layer (see the module notes)."""

    event: str
    tile: str
    before: Path
    after: Path
    buildings: Path
    localisation: Path
    damage_mask: Path


def list_tiles(folder: str | Path) -> list[str]:
    """Tile ids of an xBD-style folder (``images/<tile>_post_disaster.png`` with masks or labels)."""
    folder = Path(folder)
    images = folder / "images"
    if not images.is_dir():
        raise MissingInputError(f"{folder}: no images/ folder; give an xBD-style folder (images/ with masks/ or labels/)")
    tiles = sorted(p.name.removesuffix("_post_disaster.png") for p in images.glob("*_post_disaster.png"))
    if not tiles:
        raise InputError(f"{images}: no *_post_disaster.png image; give an xBD-style folder")
    return tiles


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.moveaxis(np.asarray(im.convert("RGB")), -1, 0)


def _write_rgb(path: Path, rgb: np.ndarray, crs: str, transform: Affine) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8",
                       crs=crs, transform=transform, tiled=True, compress="deflate") as dst:
        dst.write(rgb)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return path


def _write_mask(path: Path, mask: np.ndarray, crs: str, transform: Affine) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0], count=1, dtype="uint8",
                       crs=crs, transform=transform, compress="deflate") as dst:
        dst.write(mask.astype(np.uint8), 1)
    return path


def _from_masks(folder: Path, tile: str, transform: Affine) -> tuple[list, list[int], list[str], np.ndarray, np.ndarray]:
    with Image.open(folder / "masks" / f"{tile}_pre_disaster.png") as im:
        pre = np.asarray(im.convert("L"))
    with Image.open(folder / "masks" / f"{tile}_post_disaster.png") as im:
        post = np.asarray(im.convert("L"))
    labels, n = ndimage.label(pre > 0)
    geoms, grades = [], []
    codes = np.zeros(n + 1, dtype=np.int64)
    for i in range(1, n + 1):
        values = post[labels == i]
        values = values[(values >= 1) & (values <= 4)]
        codes[i] = int(np.bincount(values, minlength=5)[1:].argmax()) + 1 if values.size else 0
    polygons: dict[int, list] = {}
    for geom, value in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=transform):
        polygons.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    subtypes = []
    names = {1: "no-damage", 2: "minor-damage", 3: "major-damage", 4: "destroyed", 0: "un-classified"}
    for i in range(1, n + 1):
        geoms.append(shapely.union_all(polygons[i]) if len(polygons[i]) > 1 else polygons[i][0])
        grades.append(int(codes[i]) - 1 if codes[i] else UNCLASSIFIED)
        subtypes.append(names[int(codes[i])])
    damage = codes[labels].astype(np.uint8)
    return geoms, grades, subtypes, (labels > 0).astype(np.uint8), damage


def _from_json(folder: Path, tile: str, transform: Affine, shape: tuple[int, int]) -> tuple[list, list[int], list[str], np.ndarray, np.ndarray]:
    from deltacd.datasets.xview2 import rasterize_xbd_labels

    path = folder / "labels" / f"{tile}_post_disaster.json"
    if not path.is_file():
        raise MissingInputError(f"{path}: no label file for tile {tile}; give masks/ or labels/ beside images/")
    doc = json.loads(path.read_text())
    geoms, grades, subtypes = [], [], []
    table = GRADE_TABLES["xbd"]
    for feature in doc["features"]["xy"]:
        geom = shapely_wkt.loads(feature["wkt"])
        if geom.is_empty:
            continue
        subtype = (feature.get("properties") or {}).get("subtype", "un-classified")
        geoms.append(shapely.affinity.affine_transform(geom, [transform.a, transform.b, transform.d, transform.e,
                                                              transform.c, transform.f]))
        grades.append(table.get(subtype, UNCLASSIFIED))
        subtypes.append(subtype)
    localisation, damage = rasterize_xbd_labels(path, shape=shape, unclassified="ignore")
    return geoms, grades, subtypes, localisation, damage


def write_xbd_tile(
    folder: str | Path, tile: str, out_dir: str | Path, *, event: str | None = None, origin: tuple[float, float] = (500000.0, 3300000.0),
    crs: str = DEFAULT_CRS, resolution: float = XBD_RESOLUTION,
) -> XbdTile:
    """Write one xBD-style tile as a georeferenced pair, footprints with grades and xView2 targets.

    ``origin`` is the (x, y) of the tile's top-left corner in ``crs``; ``event`` defaults to the
    part of the tile id before its last ``_`` (``hurricane-harvey``).
    """
    folder, out = Path(folder), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before_png = folder / "images" / f"{tile}_pre_disaster.png"
    after_png = folder / "images" / f"{tile}_post_disaster.png"
    for path in (before_png, after_png):
        if not path.is_file():
            raise MissingInputError(f"{path}: missing image of tile {tile}; check the folder")
    pre, post = _rgb(before_png), _rgb(after_png)
    transform = Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1])
    if (folder / "masks").is_dir():
        geoms, grades, subtypes, localisation, damage = _from_masks(folder, tile, transform)
    else:
        geoms, grades, subtypes, localisation, damage = _from_json(folder, tile, transform, pre.shape[1:])
    frame = gpd.GeoDataFrame({"building_id": [f"{tile}-{i}" for i in range(len(geoms))], "grade": grades,
                              "subtype": subtypes}, geometry=geoms, crs=crs)
    buildings = out / "buildings.gpkg"
    frame.to_file(buildings, layer="buildings", driver="GPKG")
    return XbdTile(
        event=event or tile.rsplit("_", 1)[0], tile=tile,
        before=_write_rgb(out / "before.tif", pre, crs, transform),
        after=_write_rgb(out / "after.tif", post, crs, transform),
        buildings=buildings,
        localisation=_write_mask(out / "localisation.tif", localisation, crs, transform),
        damage_mask=_write_mask(out / "damage_mask.tif", damage, crs, transform),
    )
