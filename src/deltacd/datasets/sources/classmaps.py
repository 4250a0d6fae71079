"""Land-cover class maps (vector or raster) read on a pair's grid, and the coding of their classes.

Used by ``landcover`` sources (one map per date) and by ``single_date`` sources with
``label_type: classes``. Class codes are 0..254 (the from/to chips are uint8).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.io.vectors import read_polygons

__all__ = [
    "VECTOR_SUFFIXES",
    "RasterClassMap",
    "VectorClassMap",
    "check_class_codes",
    "check_class_values",
    "class_codes",
    "is_vector",
    "read_class_polygons",
]

#: Suffixes of vector files (a folder is read as a vector data set too).
VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite"}


def check_class_codes(classes: dict[int, str], ignore: int, name: str) -> None:
    """Declared class codes must fit the uint8 from/to chips and differ from ``ignore``."""
    bad = [c for c in classes if not 0 <= c <= 254 or c == ignore]
    if bad:
        raise InputError(f"classes of source {name}: code(s) {bad} outside 0..254 or equal to ignore_index {ignore}; recode them")


def check_class_values(found: np.ndarray, ignore: int, path: Path) -> None:
    """Labelled values of a class raster must be integer codes 0..254 other than ``ignore``."""
    if found.size and (found.min() < 0 or found.max() > 254 or np.any(found == ignore)
                       or (np.issubdtype(found.dtype, np.floating) and np.any(found != np.round(found)))):
        bad = found[(found < 0) | (found > 254) | (found == ignore) | (found != np.round(found))][0]
        raise InputError(f"{path}: class value {bad} outside 0..254 (or equal to ignore_index {ignore}); "
                         "from/to chips are uint8: recode the map, or set its nodata")


def is_vector(path: Path) -> bool:
    """A vector file (by suffix) or a folder (a vector data set such as a Shapefile folder)."""
    return path.suffix.lower() in VECTOR_SUFFIXES or path.is_dir()


def read_class_polygons(path: Path, crs: CRS, class_field: str | None, what: str):
    """Polygons of a vector class map in ``crs``, without those whose ``class_field`` is empty."""
    frame = read_polygons(path, crs, what=what)
    if class_field is None or class_field not in frame.columns:
        columns = [c for c in frame.columns if c != frame.geometry.name]
        found = f"no attribute {class_field!r}" if class_field else "class_field is not set"
        raise InputError(f"{path}: {found} ({what}); set class_field to one of {', '.join(map(str, columns)) or '(none)'}")
    frame = frame[frame[class_field].notna()]
    return frame


def class_codes(value_lists: list, classes: dict[int, str] | None, name: str) -> tuple[dict[Any, int], dict[int, str]]:
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


class VectorClassMap:
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


class RasterClassMap:
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
        options = {"crs": grid.crs, "transform": grid.transform, "width": grid.width, "height": grid.height,
                   "resampling": Resampling.nearest}
        if self._ds.nodata is None:
            options["add_alpha"] = True
        else:
            options["nodata"] = self._ds.nodata
        self._vrt = WarpedVRT(self._ds, **options)

    def read(self, grid: Grid, window: Window) -> tuple[np.ndarray, np.ndarray]:
        values = self._vrt.read(1, window=window)
        labelled = self._vrt.read_masks(1, window=window) > 0
        check_class_values(values[labelled], self.ignore, self.path)
        return values.astype(np.uint8), labelled

    def close(self) -> None:
        self._vrt.close()
        self._ds.close()
