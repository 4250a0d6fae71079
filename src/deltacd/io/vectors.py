"""Read vector files (AOI, reference polygons) into the CRS of a grid, and rasterise them by window."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.windows import Window

from deltacd.errors import InputError, MissingInputError
from deltacd.io.grid import Grid

log = logging.getLogger(__name__)


def read_polygons(path: str | Path, crs: CRS, *, what: str = "vector file") -> gpd.GeoDataFrame:
    """Polygons of a vector file (GeoPackage, GeoJSON, Shapefile ...) reprojected to ``crs``.

    Invalid geometries are repaired with :func:`shapely.make_valid` (with a warning); only
    polygonal parts are kept.

    Raises
    ------
    MissingInputError
        The file does not exist.
    InputError
        The file cannot be read, has no CRS, or holds no polygon.
    """
    frame, _ = clean_polygons(read_vector(path, what=what), path, what=what)
    return frame.to_crs(crs)


def read_vector(path: str | Path, *, what: str = "vector file") -> gpd.GeoDataFrame:
    """Every feature of a vector file, with its attributes and CRS (a one-line error otherwise)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such {what}; check the path")
    try:
        frame = gpd.read_file(path, layer=spatial_layer(path))
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(f"{path}: cannot read the {what} ({exc}); give a GeoPackage, GeoJSON or Shapefile") from exc
    if frame.crs is None:
        raise InputError(f"{path}: {what} has no CRS; set one (e.g. ogr2ogr -a_srs EPSG:2154)")
    return frame


def spatial_layer(path: Path) -> str | None:
    """The layer to read: the only one with geometries when a GeoPackage also holds tables (QGIS ``layer_styles``)."""
    if path.suffix.lower() != ".gpkg":
        return None
    try:
        import pyogrio

        layers = [name for name, geometry in pyogrio.list_layers(path) if geometry is not None and name != "layer_styles"]
    except Exception:  # unreadable: gpd.read_file reports it
        return None
    return layers[0] if len(layers) == 1 else None


def clean_polygons(frame: gpd.GeoDataFrame, path: str | Path, *, what: str) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
    """Polygonal features of ``frame``: invalid ones repaired (make_valid), empty or non-polygonal ones dropped.

    Returns the cleaned frame (attributes kept) and the counts ``read``, ``repaired``,
    ``dropped_empty`` (no geometry, or nothing polygonal left).

    Raises
    ------
    InputError
        No polygon is left.
    """
    counts = {"read": len(frame), "repaired": 0, "dropped_empty": 0}
    frame = frame[~shapely.is_missing(frame.geometry.values) & ~frame.geometry.is_empty]
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        counts["repaired"] = int(invalid.sum())
        warnings.warn(f"{path}: repaired {counts['repaired']} invalid geometries with make_valid", stacklevel=3)
        frame = frame.set_geometry(shapely.make_valid(frame.geometry.values))
    frame = frame.set_geometry(frame.geometry.apply(_polygonal_part))
    frame = frame[~frame.geometry.is_empty]
    counts["dropped_empty"] = counts["read"] - len(frame)
    if frame.empty:
        raise InputError(f"{path}: {what} holds no polygon; give polygons (points and lines are not areas)")
    return frame, counts


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry:
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        return shapely.union_all(parts) if parts else shapely.Polygon()
    return shapely.Polygon()


def write_layer(frame: gpd.GeoDataFrame, path: str | Path, layer: str) -> Path:
    """Write ``frame`` as ``layer`` of a GeoPackage in version 1.2 (read by QGIS and GDAL releases from 2018 on)."""
    frame.to_file(path, driver="GPKG", layer=layer, VERSION="1.2")
    return Path(path)


class PolygonMask:
    """Polygons rasterised on demand, window by window (pixel centres inside a polygon are True)."""

    def __init__(self, polygons: gpd.GeoSeries, *, all_touched: bool = False):
        self.polygons = polygons.reset_index(drop=True)
        self.all_touched = all_touched

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(self.polygons.total_bounds)

    def read(self, grid: Grid, window: Window) -> np.ndarray:
        """Boolean [h, w]: True inside the polygons."""
        shape = (int(window.height), int(window.width))
        box = shapely.box(*grid.window_bounds(window))
        hits = self.polygons.sindex.query(box, predicate="intersects")
        if len(hits) == 0:
            return np.zeros(shape, dtype=bool)
        return geometry_mask(
            self.polygons.iloc[hits].values,
            out_shape=shape,
            transform=grid.window_transform(window),
            invert=True,
            all_touched=self.all_touched,
        )
