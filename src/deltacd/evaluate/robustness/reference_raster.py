"""The change reference of a robustness or transfer study, as labels on the output grid."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT

from deltacd.errors import InputError, MissingInputError
from deltacd.evaluate.robustness.rows import Reference
from deltacd.io.grid import Grid

__all__ = ["reference_on_grid"]


def reference_on_grid(reference: Reference, grid: Grid, *, ignore_value: int | None = 255) -> tuple[np.ndarray, np.ndarray]:
    """The reference as change labels on ``grid``, and which pixels count.

    Parameters
    ----------
    reference
        A raster (band 1: 0 = no change, any other value = change) or an array ``[H, W]`` of
        ``grid``'s shape with the same convention. A georeferenced raster on another grid is
        resampled onto ``grid`` (nearest neighbour); a raster without georeferencing must have
        ``grid``'s shape (its pixels are taken to be the grid's).
    ignore_value
        Reference value that is not counted (unlabelled); the raster's nodata and pixels outside
        its footprint are not counted either. ``None``: every value counts.

    Returns
    -------
    labels : np.ndarray
        uint8 [H, W], 1 = change, 0 = no change.
    counted : np.ndarray
        bool [H, W], True where the reference has a label.

    Raises
    ------
    InputError
        Wrong shape, unreadable file, or no labelled pixel at all.
    """
    name = "reference array" if isinstance(reference, np.ndarray) else str(reference)
    if isinstance(reference, np.ndarray):
        values = np.asarray(reference)
        if values.ndim == 3 and values.shape[0] == 1:
            values = values[0]
        if values.shape != grid.shape:
            raise InputError(f"reference array: shape {values.shape}, expected the output grid's {grid.shape} (rows, cols)")
        inside = np.ones(grid.shape, dtype=bool)
    else:
        values, inside = _read_reference(Path(reference), grid)
    counted = inside & (values != ignore_value if ignore_value is not None else True)
    counted &= np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else True
    if not counted.any():
        hint = f"; if {ignore_value} means change, pass ignore_value=None" if ignore_value is not None else ""
        raise InputError(f"{name}: no labelled pixel on the output grid (all nodata, outside or equal to {ignore_value}){hint}")
    labels = ((values != 0) & counted).astype(np.uint8)
    return labels, counted


def _read_reference(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():
        raise MissingInputError(f"{path}: no such reference file; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                georeferenced = ds.crs is not None and not ds.transform.is_identity
                if not georeferenced:
                    if (ds.height, ds.width) != grid.shape:
                        raise InputError(
                            f"{path}: not georeferenced and {ds.height}x{ds.width} px (rows x cols), while the output grid is "
                            f"{grid.height}x{grid.width}; georeference it or give it on the output grid"
                        )
                    return ds.read(1), ds.read_masks(1) > 0
                own = Grid.of(ds)
                try:
                    own.check_same(grid)
                    return ds.read(1), ds.read_masks(1) > 0
                except InputError:
                    pass
                options = {"crs": grid.crs, "transform": grid.transform, "width": grid.width, "height": grid.height,
                           "resampling": Resampling.nearest}
                options.update({"add_alpha": True} if ds.nodata is None else {"nodata": ds.nodata})
                with WarpedVRT(ds, **options) as vrt:
                    return vrt.read(1), vrt.read_masks(1) > 0
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a raster GDAL can read ({exc}); give the reference as a GeoTIFF") from exc
