"""Backdrops of a run: ``before.vrt`` and ``after.vrt``, each date's display bands on its own pixels, aligned.

QGIS, the report and the web map need the two images under the change layers. Copying them
would double a scene's size, so each date is written as a small GDAL VRT that points at its own
files (nothing is resampled): the display bands (R, G, B; else N, R, G; else the first band),
with date 2's georeferencing moved by the measured co-registration shift when it was corrected,
so that both backdrops line up with the change map. Images in sensor geometry were orthorectified
into the run's work folder; that orthoimage is kept as ``<date>_ortho.tif`` and the VRT points at it.
rasterio writes no VRT files, hence the XML here.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio.shutil
from pyproj import Transformer

from deltacd.io.rasters import GDAL_TYPES, BandFile, DateImage
from deltacd.outputs.layout import BACKDROPS
from deltacd.outputs.quicklook import display_bands

log = logging.getLogger(__name__)

_INTERP = {"R": "Red", "G": "Green", "B": "Blue"}


def _shifted(file: BandFile, shift_xy: tuple[float, float], grid_crs) -> tuple[float, float]:
    """The origin of ``file`` moved by ``shift_xy`` (map units of ``grid_crs``), expressed in the file's CRS."""
    x0, y0 = file.transform.c, file.transform.f
    if not any(shift_xy):
        return x0, y0
    if file.crs == grid_crs:
        return x0 + shift_xy[0], y0 + shift_xy[1]
    to_grid = Transformer.from_crs(file.crs, grid_crs, always_xy=True)
    back = Transformer.from_crs(grid_crs, file.crs, always_xy=True)
    gx, gy = to_grid.transform(x0, y0)
    return back.transform(gx + shift_xy[0], gy + shift_xy[1])


def write_backdrop(image: DateImage, bands: tuple[str, ...], path: Path, *, shift_xy: tuple[float, float] = (0.0, 0.0),
                   grid_crs=None) -> Path | None:
    """Write ``path`` (a VRT of ``image``'s display bands among ``bands``), or return None when they span unlike files."""
    show = [bands[i] for i in display_bands(tuple(bands))]
    refs = [image.bands[image.names.index(b)] for b in show]
    files = [image.files[f] for f, _ in refs]
    first = files[0]
    if first.transform is None or any((f.width, f.height, f.transform) != (first.width, first.height, first.transform) for f in files):
        log.info("%s: display bands in files of different grids; no backdrop written", image.label)
        return None
    sources = []
    for file in files:
        if file.vrt is not None:  # a mosaic of tiles: its own VRT beside
            mosaic = path.with_name(f"{path.stem}_tiles.vrt")
            mosaic.write_text(file.vrt)
            sources.append(mosaic)
        else:
            sources.append(file.path.resolve())
    x0, y0 = _shifted(first, shift_xy, grid_crs or first.crs)
    t = first.transform
    nodata = f"<NoDataValue>{first.nodata!r}</NoDataValue>" if first.nodata is not None else ""
    def filename(source: Path) -> str:
        # files written beside the VRT (orthoimages, tile mosaics) are named relatively: the folder is renamed when published
        if source.parent.resolve() == path.parent.resolve():
            return f'<SourceFilename relativeToVRT="1">{escape(source.name)}</SourceFilename>'
        return f'<SourceFilename relativeToVRT="0">{escape(str(source))}</SourceFilename>'

    xml_bands = "".join(
        f'<VRTRasterBand dataType="{GDAL_TYPES[file.dtype]}" band="{i}"><ColorInterp>{_INTERP.get(name, "Gray")}</ColorInterp>'
        f'{nodata}<SimpleSource>{filename(source)}'
        f"<SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>"
        for i, (name, (_, band), file, source) in enumerate(zip(show, refs, files, sources, strict=True), start=1)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{first.width}" rasterYSize="{first.height}"><SRS>{escape(first.crs.to_wkt())}</SRS>'
        f"<GeoTransform>{x0!r}, {t.a!r}, 0, {y0!r}, 0, {t.e!r}</GeoTransform>{xml_bands}</VRTDataset>"
    )
    return path


def keep_orthoimage(image: DateImage, folder: Path, label: str) -> DateImage:
    """Move an orthorectified date out of the work folder into ``folder`` (``<label>_ortho.tif``, a COG) and point at it."""
    files = []
    for k, file in enumerate(image.files):
        target = folder / f"{label}_ortho{'' if len(image.files) == 1 else f'_{k}'}.tif"
        rasterio.shutil.copy(file.path, target, driver="COG", compress="DEFLATE")
        files.append(replace(file, path=target))
    return replace(image, files=tuple(files))


def write_backdrops(pair, folder: Path, *, shift_px: tuple[float, float] = (0.0, 0.0), orthorectified: bool = False) -> list[Path]:
    """``before.vrt`` and ``after.vrt`` of an aligned pair in ``folder`` (date 2 moved by ``shift_px`` grid pixels)."""
    before, after = pair.before, pair.after
    if orthorectified:
        before, after = keep_orthoimage(before, folder, "before"), keep_orthoimage(after, folder, "after")
    dx, dy = shift_px
    # date 2's content lies (dx, dy) grid pixels from date 1's: moving its georeferencing back by as much aligns it
    shift_xy = (-dx * pair.grid.res[0], dy * pair.grid.res[1])
    written = [write_backdrop(before, pair.bands, folder / BACKDROPS[0]),
               write_backdrop(after, pair.bands, folder / BACKDROPS[1], shift_xy=shift_xy, grid_crs=pair.grid.crs)]
    return [p for p in written if p is not None]


__all__ = ["keep_orthoimage", "write_backdrop", "write_backdrops"]
