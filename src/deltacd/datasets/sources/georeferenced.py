"""``polygons`` and ``landcover`` sources: a GeoTIFF pair aligned on one grid and its labels.

``polygons``
    A pair aligned with :func:`deltacd.prepare.align.align_pair` and a vector file of change
    polygons, rasterised on the pair's grid window by window with the pixel-centre rule (GDAL's: a
    pixel is change when its centre lies inside a polygon; ``all_touched`` marks every pixel a
    polygon touches). Everything else inside the pair's footprint (and ``aoi``) is no-change.
``landcover``
    A pair and one land-cover map per date, each a raster (integer class codes, resampled onto the
    pair grid with nearest neighbour) or a vector file with a class attribute (``class_field``).
    Label = 1 where the two classes differ; ``from``/``to`` targets keep the codes. Pixels
    unlabelled in either map (raster nodata, outside the map, no polygon) are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from deltacd.datasets.sources.classmaps import (
    RasterClassMap,
    VectorClassMap,
    check_class_codes,
    class_codes,
    is_vector,
    read_class_polygons,
)
from deltacd.datasets.sources.config import LandcoverSource, PolygonsSource
from deltacd.datasets.sources.scenes import AlignedScene, OpenedSource, safe_name
from deltacd.errors import InputError, MissingInputError
from deltacd.io.rasters import open_image
from deltacd.io.vectors import PolygonMask, read_polygons
from deltacd.prepare.align import AlignedPair, align_pair

__all__ = ["open_landcover", "open_polygons"]


def _open_pair(cfg: PolygonsSource | LandcoverSource, name: str) -> tuple[AlignedPair, str, float | None]:
    before = open_image(cfg.before, bands=cfg.bands_before, label=f"before image of source {name}")
    after = open_image(cfg.after, bands=cfg.bands_after, label=f"after image of source {name}")
    dtypes = {f.dtype for f in before.files} | {f.dtype for f in after.files}
    if len(dtypes) != 1:
        raise InputError(
            f"{cfg.before} and {cfg.after}: data types {', '.join(sorted(dtypes))} differ (source {name}); "
            "chips keep the raw values, so give both dates in one type (gdal_translate -ot)"
        )
    pair = align_pair(before, after, crs=cfg.crs, resolution=cfg.resolution, aoi=cfg.aoi)
    return pair, dtypes.pop(), before.files[0].nodata


def _pair_description(cfg: PolygonsSource | LandcoverSource, pair: AlignedPair, **paths: Any) -> dict[str, Any]:
    described = {"before": str(Path(cfg.before).resolve()), "after": str(Path(cfg.after).resolve())}
    described.update({k: (str(Path(v).resolve()) if v is not None else None) for k, v in paths.items()})
    if cfg.aoi is not None:
        described["aoi"] = str(Path(cfg.aoi).resolve())
    return {"paths": described, "crs": pair.grid.crs.to_string(), "res": pair.grid.res[0],
            "size": [pair.grid.width, pair.grid.height]}


def open_polygons(cfg: PolygonsSource, index: int, ignore: int) -> OpenedSource:
    """Check a ``polygons`` source and open its pair with change polygons rasterised by window."""
    name = cfg.name or f"polygons{index}"
    if not Path(cfg.polygons).exists():
        raise MissingInputError(f"{cfg.polygons}: no such file (change polygons of source {name}); check the path")
    pair, dtype, nodata = _open_pair(cfg, name)
    frame = read_polygons(cfg.polygons, pair.grid.crs, what=f"change polygons of source {name}")
    mask = PolygonMask(frame.geometry, all_touched=cfg.all_touched)

    def labeller(window: Window, valid: np.ndarray) -> tuple[np.ndarray, dict]:
        label = mask.read(pair.grid, window).astype(np.uint8)
        label[~valid] = ignore
        return label, {}

    scene = AlignedScene(safe_name(Path(cfg.before).stem), pair, dtype, labeller)
    desc = _pair_description(cfg, pair, polygons=cfg.polygons)
    desc["n_polygons"] = len(frame)
    desc["rasterisation"] = "all touched pixels" if cfg.all_touched else "pixel centre inside a polygon"
    return OpenedSource(index, name, "polygons", pair.bands, dtype, nodata, [scene], image_blocks=False,
                        forced_split=cfg.split, description=desc)


def open_landcover(cfg: LandcoverSource, index: int, ignore: int) -> OpenedSource:
    """Check a ``landcover`` source and open its pair with the two class maps (label: the classes differ)."""
    name = cfg.name or f"landcover{index}"
    for role in ("map_before", "map_after"):
        if not Path(getattr(cfg, role)).exists():
            raise MissingInputError(f"{getattr(cfg, role)}: no such file ({role} of source {name}); check the path")
    if cfg.classes is not None:
        check_class_codes(cfg.classes, ignore, name)
    pair, dtype, nodata = _open_pair(cfg, name)
    grid = pair.grid
    vectors = {role: is_vector(Path(getattr(cfg, role))) for role in ("map_before", "map_after")}
    frames = {}
    for role, vector in vectors.items():
        if vector:
            frames[role] = read_class_polygons(Path(getattr(cfg, role)), grid.crs, cfg.class_field, f"{role} of source {name}")
    codes, classes = class_codes([f[cfg.class_field] for f in frames.values()], cfg.classes, name)
    maps = {}
    for role in ("map_before", "map_after"):
        path = Path(getattr(cfg, role))
        if role in frames:
            maps[role] = VectorClassMap(path, frames[role], cfg.class_field, codes, ignore)
        else:
            maps[role] = RasterClassMap(path, grid, ignore)

    def labeller(window: Window, valid: np.ndarray) -> tuple[np.ndarray, dict]:
        c_from, ok_from = maps["map_before"].read(grid, window)
        c_to, ok_to = maps["map_after"].read(grid, window)
        ok_from &= valid
        ok_to &= valid
        both = ok_from & ok_to
        label = np.where(both, (c_from != c_to).astype(np.uint8), np.uint8(ignore)).astype(np.uint8)
        return label, {
            "from": np.where(ok_from, c_from, ignore).astype(np.uint8),
            "to": np.where(ok_to, c_to, ignore).astype(np.uint8),
        }

    scene = AlignedScene(safe_name(Path(cfg.before).stem), pair, dtype, labeller, resources=tuple(maps.values()))
    desc = _pair_description(cfg, pair, map_before=cfg.map_before, map_after=cfg.map_after)
    desc["class_field"] = cfg.class_field
    return OpenedSource(
        index, name, "landcover", pair.bands, dtype, nodata, [scene], image_blocks=False, forced_split=cfg.split,
        targets=("from", "to"), target_classes={"from": dict(classes), "to": dict(classes)}, description=desc,
    )
