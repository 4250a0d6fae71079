"""Orthorectify sensor-geometry images with their RPCs, through GDAL's RPC transformer.

Pléiades primary products and crops of them (as in CNES tutorials) come in sensor geometry with
rational polynomial coefficients instead of a geotransform. Each file is warped once onto a
north-up grid in the output CRS, at its native resolution, and written as a tiled GeoTIFF; GDAL
warps in chunks, so memory stays bounded. Terrain: a constant height (default: the RPC model's
mean height ``HEIGHT_OFF``) or a DEM (``RPC_DEM``, heights above the ellipsoid). With a constant
height, relief displaces pixels by about ``height error x tan(incidence angle)``: the
co-registration check then reports the residual shift between the dates.
"""

from __future__ import annotations

import logging
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from deltacd.io.rasters import WGS84, BandFile, DateImage

log = logging.getLogger(__name__)


def orthorectify(image: DateImage, workdir: str | Path, *, crs: CRS) -> DateImage:
    """Orthorectified copy of a sensor-geometry date, written under ``workdir``.

    Parameters
    ----------
    image
        A date whose files carry RPCs (``image.sensor_geometry``); returned as is otherwise.
    workdir
        Folder for the orthorectified GeoTIFFs (``<label>_ortho_<i>.tif``).
    crs
        Projected CRS of the output.
    """
    if not image.sensor_geometry:
        return image
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for index, f in enumerate(image.files):
        options = f.rpc.transformer_options()
        transform, width, height = calculate_default_transform(WGS84, crs, f.width, f.height, rpcs=f.rpc.rpc, **options)
        out = workdir / f"{image.label}_ortho_{index}.tif"
        nodata = f.nodata if f.nodata is not None else 0
        profile = dict(
            driver="GTiff", width=width, height=height, count=f.count, dtype=f.dtype, crs=crs, transform=transform,
            nodata=nodata, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
        )
        with rasterio.open(f.rpc.vrt_xml) as src, rasterio.open(out, "w", **profile) as dst:
            for band in range(1, f.count + 1):
                reproject(
                    rasterio.band(src, band), rasterio.band(dst, band), rpcs=f.rpc.rpc, src_crs=WGS84, src_nodata=f.nodata,
                    dst_crs=crs, dst_transform=transform, dst_nodata=nodata, resampling=Resampling.bilinear,
                    warp_mem_limit=256, **options,
                )
        log.info("%s orthorectified to %s (%dx%d px)", f.path, out, width, height)
        files.append(BandFile(out, crs, transform, width, height, f.count, f.dtype, nodata))
    return DateImage(image.label, tuple(files), image.names, image.bands)
