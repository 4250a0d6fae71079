"""The grid both dates of a pair are read on: the output CRS, one resolution, the common footprint, the AOI.

The CRS of the first date (or the UTM zone of the scene when that CRS is geographic or the
image is in sensor geometry), one resolution (given, or the coarser of the two dates), the
intersection of the footprints, optionally clipped to an AOI; the pixel lattice of a file
already on that CRS and resolution is kept, so it is read without resampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from affine import Affine
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from rasterio.crs import CRS
from rasterio.errors import CRSError

from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.io.rasters import DateImage
from deltacd.io.vectors import PolygonMask

__all__ = ["common_grid", "target_crs", "utm_crs_for"]

#: A grid more than this many times finer (per axis) than the coarser date is a unit mistake
#: (degrees given for a metric CRS), not a choice: refused before any work.
_MAX_UPSAMPLING = 16


def _units(crs: CRS) -> str:
    return "degrees" if crs.is_geographic else (crs.linear_units or "CRS units")


def _fmt(b: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in b) + "]"


def utm_crs_for(bounds_wgs84: tuple[float, float, float, float]) -> CRS:
    """The WGS84 / UTM zone CRS covering the centre of ``bounds_wgs84`` (lon/lat)."""
    west, south, east, north = bounds_wgs84
    lon, lat = (west + east) / 2, (south + north) / 2
    infos = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    if not infos:
        raise InputError(f"no UTM zone covers lon {lon:.4f}, lat {lat:.4f}; give the output CRS (crs=...)")
    return CRS.from_epsg(int(infos[0].code))


def _date_footprint(image: DateImage, crs: CRS) -> tuple[float, float, float, float]:
    """Area covered by every file of a date (the intersection of the files' footprints)."""
    boxes = np.array([f.footprint(crs) for f in image.files])
    return (boxes[:, 0].max(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].min())


def _date_resolution(image: DateImage, crs: CRS) -> float:
    """Finest native resolution among a date's files, in ``crs`` units."""
    return min(f.resolution_in(crs) for f in image.files)


def target_crs(before: DateImage, crs: str | CRS | None = None) -> CRS:
    """The output CRS: ``crs`` if given, else the first date's CRS when projected, else its UTM zone."""
    if crs is not None:
        try:
            return CRS.from_user_input(crs)
        except CRSError as exc:
            raise InputError(f"crs {crs!r}: not a CRS PROJ knows ({exc}); give one like EPSG:2154 or EPSG:5490") from exc
    if before.crs.is_projected and not before.sensor_geometry:
        return before.crs
    return utm_crs_for(_date_footprint(before, CRS.from_epsg(4326)))


def common_grid(
    before: DateImage,
    after: DateImage,
    *,
    crs: str | CRS | None = None,
    resolution: float | tuple[float, float] | None = None,
    aoi: PolygonMask | None = None,
) -> Grid:
    """The grid both dates are read on.

    Parameters
    ----------
    crs
        Output CRS; default: the first date's CRS when it is projected, otherwise the UTM zone of
        the scene centre (areas in m2 and a metric resolution need a projected grid).
    resolution
        Pixel size in units of ``crs`` (one number for square pixels, or (x, y)); default: the
        coarser of the two dates' native resolutions (the finest band of each date), so that
        neither date is invented at a finer scale.
    aoi
        Polygons (already in ``crs``) to clip the grid to.

    Raises
    ------
    InputError
        The images (or the AOI) do not overlap, or the resolution is not positive.
    """
    for image in (before, after):
        if image.sensor_geometry:
            raise InputError(
                f"{image.files[0].path}: sensor geometry (RPCs); orthorectify it first "
                "(deltacd.prepare.orthorectify.orthorectify, done by deltacd.detect)"
            )
    target = target_crs(before, crs)
    if resolution is None:
        xres = yres = max(_date_resolution(before, target), _date_resolution(after, target))
    else:
        xres, yres = (resolution, resolution) if np.isscalar(resolution) else tuple(resolution)
        if not (xres > 0 and yres > 0):
            raise InputError(f"resolution: must be a positive pixel size in CRS units; got {resolution}")
    res = max(xres, yres)

    fb, fa = _date_footprint(before, target), _date_footprint(after, target)
    bounds = (max(fb[0], fa[0]), max(fb[1], fa[1]), min(fb[2], fa[2]), min(fb[3], fa[3]))
    if bounds[2] - bounds[0] < res or bounds[3] - bounds[1] < res:
        raise InputError(
            f"{before.describe()['files'][0]} and {after.describe()['files'][0]} do not overlap "
            f"(before covers {_fmt(fb)}, after covers {_fmt(fa)} in {target.to_string()}); give two images of the same area"
        )
    if aoi is not None:
        ab = aoi.bounds
        clipped = (max(bounds[0], ab[0]), max(bounds[1], ab[1]), min(bounds[2], ab[2]), min(bounds[3], ab[3]))
        if clipped[2] - clipped[0] < res or clipped[3] - clipped[1] < res:
            raise InputError(
                f"the AOI ({_fmt(ab)}) misses the overlap of the images ({_fmt(bounds)}) in {target.to_string()}; "
                "give an AOI over the images"
            )
        bounds = clipped

    # Keep the pixel lattice of a file already on the target CRS and resolution, so it is read
    # without resampling; otherwise snap to multiples of the resolution. Files of both dates are
    # candidates (date 1 first): with the default resolution, the coarser date's, that is the
    # coarser date, whose pixels are then kept while the finer one is averaged onto them, and the
    # grid is the same whichever date comes first. (Date 1's lattice alone resampled a 10 m date 2
    # off its own pixels under a 0.6 m date 1: 26 % of an unchanged scene came out changed.)
    ox, oy = 0.0, 0.0
    for f in (*before.files, *after.files):
        t = f.transform
        if f.crs == target and math.isclose(abs(t.a), xres, rel_tol=1e-9) and math.isclose(abs(t.e), yres, rel_tol=1e-9):
            ox, oy = t.c, t.f
            break
    left = ox + math.floor((bounds[0] - ox) / xres + 1e-6) * xres
    right = ox + math.ceil((bounds[2] - ox) / xres - 1e-6) * xres
    top = oy + math.ceil((bounds[3] - oy) / yres - 1e-6) * yres
    bottom = oy + math.floor((bounds[1] - oy) / yres + 1e-6) * yres
    # Pixels only partly covered by a footprint are masked later by the readers.
    grid = Grid(target, Affine(xres, 0.0, left, 0.0, -yres, top), round((right - left) / xres), round((top - bottom) / yres))
    native = max(_date_resolution(before, target), _date_resolution(after, target))
    if grid.width * grid.height > _MAX_UPSAMPLING**2 * (right - left) * (top - bottom) / native**2:
        raise InputError(
            f"resolution {xres:g} gives a {grid.width}x{grid.height} px grid, more than {_MAX_UPSAMPLING}x finer than "
            f"the images ({native:.3g} {_units(target)} per pixel); give the resolution in the units of {target.to_string()} "
            f"({_units(target)})"
        )
    return grid
