"""The data of the example studies (``examples/*.yaml``), prepared from the shared real data sets.

``deltacd prepare-examples [--data ../shared/data] [-o examples/data]`` writes (nothing is
downloaded; only what the studies need that the data sets do not carry as georeferenced files):

* ``oscd_bordeaux/``: a land-cover map per date of the OSCD Bordeaux pair (a stand-in for the
  team's land-cover model, :func:`rule_land_cover`), the OSCD change labels georeferenced on the
  B02 grid (``reference.tif``, the labels carry none), and four quarters of the scene as zones;
* ``ign_gers/``: the three 2016 and 2019 "naf" land-cover tiles of the IGN sample, each date
  mosaicked as one VRT (nothing copied), with one zone per tile (its footprint, from the sample's
  ``test_patch_data.geojson``: the sample's ``test_zone_data.shp`` zones lie 20 km south-east of
  the tiles, on the change masks whose images are missing);
* ``ida/``: the Ida-BD tile ``AOI1-tile_2-4`` (hurricane Ida, Louisiana 2021) as a georeferenced
  pair with its building footprints, grades and xView2 masks (:mod:`deltacd.damage.xbd`), and the
  tile's four quarters as zones (``quarters.gpkg``, field ``quarter``), standing in for communes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.vrt import WarpedVRT

from deltacd.damage.xbd import write_xbd_tile
from deltacd.errors import MissingInputError
from deltacd.io.outputs import staged_output
from deltacd.io.rasters import open_image

#: Classes of :func:`rule_land_cover`.
RULE_CLASSES = {1: "water", 2: "vegetation", 3: "bare/built"}
WATER_NDWI, WATER_MAX_BRIGHTNESS, VEGETATION_NDVI = 0.2, 1000.0, 0.35

#: Codes of the IGN "naf" maps. The repository does not say which code is which; 2, 9, 10, 11 and 13
#: were matched to the class frequencies of ``test_patch_data.geojson`` for 2019 on all three tiles
#: (zone_permeable, coupe, feuillus, broussaille, culture); the others follow the list's order,
#: which leaves code 8 unnamed (it is in the 2016 maps only).
IGN_NAF_CLASSES = {0: "no-label", 1: "batiment", 2: "zone_permeable", 3: "zone_impermeable", 4: "piscine", 5: "sol_nu",
                   6: "surface_eau", 7: "coniferes", 8: "code 8 (undocumented)", 9: "coupe", 10: "feuillus",
                   11: "broussaille", 12: "vigne", 13: "culture", 14: "terre_labouree"}


def _read_on(path: Path, profile: dict) -> np.ndarray:
    """Band 1 of ``path`` on the grid of ``profile`` (nearest when the grids differ)."""
    with rasterio.open(path) as src:
        if src.crs == profile["crs"] and src.transform == profile["transform"] and src.shape == (profile["height"], profile["width"]):
            return src.read(1).astype(np.float64)
        with WarpedVRT(src, crs=profile["crs"], transform=profile["transform"], width=profile["width"],
                       height=profile["height"], resampling=Resampling.nearest) as vrt:
            return vrt.read(1).astype(np.float64)


def band_file(folder: Path, band: str) -> Path:
    return next(folder.glob(f"*_{band}.tif"))


def rule_land_cover(folder: Path, profile: dict) -> np.ndarray:
    """A rule-based land-cover map of one Sentinel-2 L1C date: 1 water, 2 vegetation, 3 bare/built, 0 no data.

    NDVI = (B08 - B04) / (B08 + B04), NDWI = (B03 - B08) / (B03 + B08) (McFeeters 1996,
    doi:10.1080/01431169608948714), brightness = mean(B02, B03, B04, B08) in TOA reflectance x 10 000;
    water where NDWI > 0.2 and brightness < 1000, vegetation where NDVI > 0.35, else bare/built.
    Thresholds set once from the NDVI/NDWI distributions of the 14 OSCD images, not tuned on the
    change labels. A stand-in for an agency's land-cover model, in examples and benchmarks only.
    """
    b02, b03, b04, b08 = (_read_on(band_file(folder, b), profile) for b in ("B02", "B03", "B04", "B08"))
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (b08 - b04) / (b08 + b04)
        ndwi = (b03 - b08) / (b03 + b08)
    brightness = (b02 + b03 + b04 + b08) / 4
    water = (ndwi > WATER_NDWI) & (brightness < WATER_MAX_BRIGHTNESS)
    vegetation = ~water & (ndvi > VEGETATION_NDVI)
    lc = np.where(water, 1, np.where(vegetation, 2, 3)).astype(np.uint8)
    lc[(b02 == 0) | (b03 == 0) | (b04 == 0) | (b08 == 0)] = 0
    return lc


def write_raster(path: Path, array: np.ndarray, profile: dict, nodata: int | None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype,
                       crs=profile["crs"], transform=profile["transform"], nodata=nodata) as dst:
        dst.write(array, 1)
    return path


def prepare_oscd(data: Path, out: Path, city: str = "bordeaux") -> Path:
    """Land-cover maps, georeferenced labels and zones of one OSCD city (module notes)."""
    folder = data / "oscd_changedetectionrepository" / "images" / city
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.open(band_file(folder / "imgs_1", "B02")) as src:
        profile = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
        bounds = src.bounds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the labels carry none: they take B02's grid below
        with rasterio.open(data / "oscd_changedetectionrepository" / "train_labels" / city / "cm" / f"{city}-cm.tif") as src:
            label = src.read(1)
    write_raster(out / "reference.tif", np.where(label == 2, 1, 0).astype(np.uint8), profile, None)
    write_raster(out / "landcover_1.tif", rule_land_cover(folder / "imgs_1", profile), profile, 0)
    write_raster(out / "landcover_2.tif", rule_land_cover(folder / "imgs_2", profile), profile, 0)
    write_quarters(out / "quarters.gpkg", bounds, profile["crs"])
    return out


def write_quarters(path: Path, bounds, crs) -> Path:
    """The four quarters of ``bounds`` as zones (field ``quarter``: north-west ... south-east)."""
    cx, cy = (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    quarters = [("north-west", (bounds.left, cy, cx, bounds.top)), ("north-east", (cx, cy, bounds.right, bounds.top)),
                ("south-west", (bounds.left, bounds.bottom, cx, cy)), ("south-east", (cx, bounds.bottom, bounds.right, cy))]
    gpd.GeoDataFrame({"quarter": [q for q, _ in quarters]}, geometry=[shapely.box(*b) for _, b in quarters],
                     crs=crs).to_file(path)
    return path


def prepare_ign(data: Path, out: Path) -> Path:
    """The IGN naf land-cover tiles of each date as one VRT mosaic, and the sample's zones (module notes)."""
    folder = data / "ign-landcover-2016-2019_odeon"
    out.mkdir(parents=True, exist_ok=True)
    for year in ("2016", "2019"):  # one band per tile: the tiles are mosaicked (open_image), the VRT is kept
        image = open_image(folder / "train" / year / "naf", bands="PAN", label=f"naf {year}")
        (out / f"naf_{year}.vrt").write_text(image.files[0].vrt)
    tiles = gpd.read_file(folder / "test_patch_data.geojson")  # one record per tile: its footprint
    tiles = tiles.assign(south=tiles.geometry.bounds["miny"]).sort_values("south", ignore_index=True)
    names = ["south tile", "middle tile", "north tile"] if len(tiles) == 3 else [f"tile {i + 1}" for i in range(len(tiles))]
    gpd.GeoDataFrame({"nom": names}, geometry=tiles.geometry.values, crs=tiles.crs).to_file(out / "zones.gpkg")
    return out


def prepare_ida(data: Path, out: Path, tile: str = "AOI1-tile_2-4") -> Path:
    """One Ida-BD tile as a georeferenced pair with footprints, grades and xView2 masks."""
    written = write_xbd_tile(data / "xbd-hurricanes-idabd_dahitra" / "IdaBD", tile, out, event="ida")
    with rasterio.open(written.before) as src:
        write_quarters(written.before.parent / "quarters.gpkg", src.bounds, src.crs)
    return written.before.parent


def prepare_examples(data: str | Path, out: str | Path) -> Path:
    """Write every example study's data into ``out`` (module notes); ``data`` is the shared data folder."""
    data, out = Path(data), Path(out)
    for name in ("oscd_changedetectionrepository", "ign-landcover-2016-2019_odeon", "xbd-hurricanes-idabd_dahitra"):
        if not (data / name).is_dir():
            raise MissingInputError(f"{data / name}: not found; give --data, the folder holding the shared data sets")
    with staged_output(out, overwrite=True, kind="example-data", inputs=[data]) as staging:
        prepare_oscd(data, staging / "oscd_bordeaux")
        prepare_ign(data, staging / "ign_gers")
        prepare_ida(data, staging / "ida")
    return out
