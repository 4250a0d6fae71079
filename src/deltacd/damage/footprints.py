"""Building footprints for damage assessment: read any vector layer, repair, reproject, buffer.

Footprints come from BD TOPO, OpenStreetMap or an earlier study: any format GDAL reads, any CRS,
with their attributes (kept in ``buildings.gpkg``). Invalid geometries are repaired
(``shapely.make_valid``), empty and non-polygonal ones dropped and counted, and every footprint
gets a ``building_id`` (the layer's own id field when given, else its row number). An optional
buffer (metres) absorbs footprints shifted by a metre or two against the imagery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from rasterio.crs import CRS

from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.io.vectors import clean_polygons, read_vector

ID = "building_id"


@dataclass(frozen=True)
class Footprints:
    """The buildings of a run, in the grid's CRS.

    Attributes
    ----------
    frame : geopandas.GeoDataFrame
        One row per building: the input attributes, ``building_id`` (unique) and the geometry
        (buffered when asked); index 0..n-1 (the building's label in rasters).
    counts : dict
        ``read``, ``repaired``, ``dropped_empty``, ``outside`` (footprints that miss the grid,
        kept as unclassified), ``kept``.
    """

    frame: gpd.GeoDataFrame
    counts: dict[str, int]


def read_footprints(
    path: str | Path, grid: Grid, *, id_field: str | None = None, buffer_m: float = 0.0, what: str = "buildings"
) -> Footprints:
    """Footprints of ``path`` reprojected to ``grid.crs``, cleaned and counted (module notes).

    Raises
    ------
    MissingInputError
        The file does not exist.
    InputError
        Unreadable, no CRS, no polygon, ``id_field`` missing or not unique, or every footprint
        misses the grid.
    """
    frame, counts = clean_polygons(read_vector(path, what=what), path, what=what)
    return footprints_from_frame(frame, grid, counts=counts, source=str(path), id_field=id_field, buffer_m=buffer_m)


def footprints_from_frame(
    frame: gpd.GeoDataFrame, grid: Grid, *, counts: dict[str, int] | None = None, source: str = "buildings",
    id_field: str | None = None, buffer_m: float = 0.0,
) -> Footprints:
    """As :func:`read_footprints`, for polygons already read (e.g. vectorised by a localisation network)."""
    counts = dict(counts or {"read": len(frame), "repaired": 0, "dropped_empty": 0})
    frame = frame.to_crs(CRS.from_user_input(grid.crs)).reset_index(drop=True)
    if id_field is not None:
        if id_field not in frame.columns:
            raise InputError(f"{source}: no field {id_field!r} (fields: {', '.join(map(str, frame.columns[:12]))}); check --id-field")
        if frame[id_field].duplicated().any():
            raise InputError(f"{source}: field {id_field!r} repeats values; give a field with one value per building")
        frame[ID] = frame[id_field].astype(str)
    elif ID not in frame.columns:
        frame[ID] = np.arange(len(frame)).astype(str)
    if buffer_m:
        units = grid.res[0] / grid.res_m  # CRS units per metre
        frame = frame.set_geometry(frame.geometry.buffer(buffer_m * units))
    extent = shapely.box(*grid.bounds)
    inside = frame.geometry.intersects(extent).to_numpy()
    if not inside.any():
        left, bottom, right, top = frame.total_bounds
        raise InputError(
            f"{source}: no footprint lies on the image pair (footprints cover [{left:.6g}, {bottom:.6g}, {right:.6g}, "
            f"{top:.6g}] in {grid.crs.to_string()}, the pair {[round(v, 6) for v in grid.bounds]}); give buildings of the same area"
        )
    counts["outside"] = int((~inside).sum())
    counts["kept"] = len(frame)
    return Footprints(frame, counts)


def rings(frame: gpd.GeoDataFrame, width: float) -> gpd.GeoSeries:
    """The ring of ``width`` (CRS units) around each footprint, without the footprints themselves."""
    if width <= 0:
        return gpd.GeoSeries([shapely.Polygon()] * len(frame), crs=frame.crs)
    everything = shapely.union_all(frame.geometry.values)
    return gpd.GeoSeries(shapely.difference(frame.geometry.buffer(width).values, everything), crs=frame.crs)
