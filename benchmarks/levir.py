"""Georeference LEVIR-CD crops: a plain PNG of a 1024-px tile's 256-px crop -> an RGB GeoTIFF in EPSG:4326.

LEVIR-CD (Chen & Shi, Remote Sensing 2020, doi:10.3390/rs12101662) is distributed as PNGs without
georeferencing. STANet's ``LEVIR_CD_name_coords.json`` gives, for each 1024 x 1024 tile
(``test_2.png``), ``[lon_upper_left, lat_upper_left, lon_lower_right, lat_lower_right]`` in WGS84:
the outer corners of the tile. Every tile spans exactly 360 / 2**16 degrees in longitude and in
latitude, so a pixel is 360 / 2**26 degrees (about 5.36e-6 deg, 0.52 m E-W x 0.59 m N-S in Texas)
on both axes: the grid is square in degrees and EPSG:4326 needs no resampling (:data:`PIXEL_DEG`).

Crops from BIT_CD's samples are named ``<split>_<tile>_<off1>_<off2>.png``. We read ``off1`` as the
row offset and ``off2`` as the column offset of the crop in its tile (numpy's ``[row, col]``
order). Checked on the only tile with two crops here: in the after (B) images an east-west
street leaves the right edge of ``test_2_0000_0000`` at rows ~179-191 and enters the left edge
of ``test_2_0000_0512`` at rows ~177-190 (same width, same rows), consistent with the two crops
sharing rows 0-255 and lying 512 columns apart; the other order would stack them 512 rows apart
with nothing in common. This is evidence, not proof: no full tile is available to compare with,
and no two crops of neighbouring tiles touch.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp

from deltacd.errors import InputError, MissingInputError, OutputError

__all__ = ["PIXEL_DEG", "TILE_SIZE", "LevirCrop", "georeference_levir_crop", "levir_crop_transform", "parse_levir_name"]

#: Side of an original LEVIR-CD tile, pixels.
TILE_SIZE = 1024
#: Pixel size of every LEVIR-CD tile in STANet's coordinates, degrees (both axes).
PIXEL_DEG = 360.0 / 2**26

_NAME = re.compile(r"^(?P<split>train|val|test)_(?P<tile>\d+)_(?P<row>\d+)_(?P<col>\d+)$")


@dataclass(frozen=True)
class LevirCrop:
    """Where a crop lies: its tile (``"test_2.png"``, the key of the coordinates file) and pixel offsets."""

    tile: str
    row_off: int
    col_off: int


def parse_levir_name(name: str | Path) -> LevirCrop:
    """Parse ``<split>_<tile>_<row_off>_<col_off>[.png]`` (see the module notes for the offset order).

    Raises
    ------
    InputError
        The name does not follow that pattern or an offset lies outside the tile.
    """
    stem = Path(name).stem
    match = _NAME.match(stem)
    if not match:
        raise InputError(
            f"{name}: not a LEVIR-CD crop name; expected <split>_<tile>_<row offset>_<col offset>.png, e.g. test_2_0000_0512.png"
        )
    row, col = int(match["row"]), int(match["col"])
    if row >= TILE_SIZE or col >= TILE_SIZE:
        raise InputError(f"{name}: crop offset ({row}, {col}) lies outside a {TILE_SIZE}-px LEVIR-CD tile")
    return LevirCrop(f"{match['split']}_{match['tile']}.png", row, col)


def levir_crop_transform(name: str | Path, coords: dict[str, list[float]]) -> Affine:
    """EPSG:4326 affine transform of a crop from its tile's bounds and its offsets.

    Raises
    ------
    InputError
        The tile is not in ``coords`` or its bounds are not a 1024-px tile of square pixels.
    """
    crop = parse_levir_name(name)
    if crop.tile not in coords:
        raise InputError(f"{name}: tile {crop.tile} not in the LEVIR-CD coordinates file; give STANet's LEVIR_CD_name_coords.json")
    west, north, east, south = (float(v) for v in coords[crop.tile])
    xres, yres = (east - west) / TILE_SIZE, (north - south) / TILE_SIZE
    if not (xres > 0 and yres > 0 and np.isclose(xres, yres, rtol=1e-6)):
        raise InputError(
            f"{crop.tile}: bounds {coords[crop.tile]} are not [lon_ul, lat_ul, lon_lr, lat_lr] of a square-pixel "
            f"{TILE_SIZE}-px tile; check the coordinates file"
        )
    return Affine(xres, 0.0, west + crop.col_off * xres, 0.0, -yres, north - crop.row_off * yres)


def georeference_levir_crop(
    png: str | Path, out_tif: str | Path, coords_json: str | Path | dict, *, overwrite: bool = False
) -> Path:
    """Write a LEVIR-CD crop PNG as a GeoTIFF on its own pixel grid in EPSG:4326.

    Parameters
    ----------
    png
        RGB (or RGBA / palette, converted to RGB) PNG named ``<split>_<tile>_<row>_<col>.png``.
    out_tif
        Output GeoTIFF: uint8, 3 bands, colour interpretation red, green, blue (so deltacd names
        the bands R, G, B), no nodata, DEFLATE-compressed. Written to a temporary name, then renamed.
    coords_json
        STANet's ``LEVIR_CD_name_coords.json`` (path or the loaded dict).
    overwrite
        Replace an existing ``out_tif``.

    Returns
    -------
    Path
        ``out_tif``.
    """
    png, out_tif = Path(png), Path(out_tif)
    if not png.is_file():
        raise MissingInputError(f"{png}: no such LEVIR-CD crop; check the path")
    if out_tif.exists() and not overwrite:
        raise OutputError(f"{out_tif}: exists; pass overwrite=True or choose another file")
    coords = coords_json if isinstance(coords_json, dict) else _read_coords(Path(coords_json))
    transform = levir_crop_transform(png.name, coords)
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB")).transpose(2, 0, 1)  # [3, H, W] uint8
    crop = parse_levir_name(png.name)
    if crop.row_off + rgb.shape[1] > TILE_SIZE or crop.col_off + rgb.shape[2] > TILE_SIZE:
        raise InputError(f"{png}: a {rgb.shape[1]}x{rgb.shape[2]} crop at ({crop.row_off}, {crop.col_off}) overruns its tile")
    tmp = out_tif.with_name(f".{out_tif.name}.{os.getpid()}.tmp")
    profile = dict(
        driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8", crs="EPSG:4326",
        transform=transform, compress="deflate", photometric="RGB",
    )
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(rgb)
            dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            dst.update_tags(source=png.name, levir_tile=crop.tile, row_off=crop.row_off, col_off=crop.col_off)
        os.replace(tmp, out_tif)
    finally:
        tmp.unlink(missing_ok=True)
    return out_tif


def _read_coords(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        raise MissingInputError(f"{path}: LEVIR-CD coordinates file not found; give STANet's LEVIR_CD_name_coords.json")
    try:
        coords = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON coordinates file ({exc})") from exc
    if not isinstance(coords, dict):
        raise InputError(f"{path}: expected a JSON object tile name -> [lon_ul, lat_ul, lon_lr, lat_lr]")
    return coords
