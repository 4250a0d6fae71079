"""The GeoTIFF chip files of a prepared dataset (``A/``, ``B/``, ``label/`` and target folders): one writer, one reader.

Plain images (PNG chips) have no georeferencing; their chips are written and read without it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

__all__ = ["read_chip_band", "write_chip"]


def write_chip(path: Path, array: np.ndarray, crs, transform, nodata, descriptions: tuple[str, ...]) -> None:
    """Write ``array`` [C, h, w] as a deflate GeoTIFF, georeferenced when ``crs`` and ``transform`` are given."""
    profile = {"driver": "GTiff", "width": array.shape[2], "height": array.shape[1], "count": array.shape[0],
               "dtype": array.dtype, "compress": "deflate", "nodata": nodata}
    if crs is not None and transform is not None:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)


def read_chip_band(path: Path) -> tuple[np.ndarray, Any, Any]:
    """Band 1 of a chip [h, w], its CRS and transform (None for chips of plain images)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            georef = ds.crs is not None and not ds.transform.is_identity
            return ds.read(1), (ds.crs if georef else None), (ds.transform if georef else None)
