"""Reading inputs: band names, georeferencing, sensor geometry, and the errors users get."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from conftest import write_geotiff
from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import common_bands, parse_bands
from deltacd.io.grid import Grid
from deltacd.io.rasters import open_image


def test_band_names_are_canonical():
    assert parse_bands("blue,Green,RED,nir") == ("B", "G", "R", "N")
    assert parse_bands(["B2", "B8A", "b12"]) == ("B02", "B8A", "B12")
    assert parse_bands("PAN") == ("PAN",)


def test_band_named_twice_is_refused():
    with pytest.raises(InputError, match="named twice"):
        parse_bands("B,G,R,R")


def test_common_bands_follow_first_date_order():
    assert common_bands(("B", "G", "R", "N"), ("R", "G", "B", "N")) == ("B", "G", "R", "N")
    assert common_bands(("B", "G", "R", "N"), ("R", "G", "B")) == ("B", "G", "R")
    with pytest.raises(InputError, match="share no band"):
        common_bands(("PAN",), ("R", "G", "B"))


def test_rgb_colour_interpretation_names_bands(data_dir):
    image = open_image(data_dir / "joplin-georef-unlabeled_xview2deploy/pre/tile_337-10160.tif")
    assert image.names == ("R", "G", "B")
    assert image.crs == CRS.from_epsg(26915)


def test_sentinel2_band_files_are_named_from_file_names(data_dir):
    image = open_image(data_dir / "oscd_changedetectionrepository/images/paris/imgs_1")
    assert len(image.files) == 13
    assert image.names[:4] == ("B01", "B02", "B03", "B04") and "B8A" in image.names


def test_envi_landsat_opens_with_declared_bands(data_dir):
    image = open_image(
        data_dir / "landsat-taizhou-nanjing_changedetectionrepository/Taizhou/2000TM", bands="B,G,R,N,SWIR1,SWIR2"
    )
    assert image.names == ("B", "G", "R", "N", "SWIR1", "SWIR2")
    assert image.crs == CRS.from_epsg(32651)


def test_pleiades_crop_in_sensor_geometry_is_recognised(data_dir):
    image = open_image(data_dir / "pleiades-unlabeled_picanteo/pre_event_img1.tif")
    assert image.sensor_geometry and image.names == ("PAN",)
    # The crop's RPCs are shifted by its offset in the full image (12114.5, 5511.5 px).
    assert image.files[0].rpc.rpc.samp_off == pytest.approx(19953.77152641625 - 12114.5)


def test_declared_band_count_must_match(tmp_path):
    path = write_geotiff(tmp_path / "three.tif", np.zeros((3, 8, 8), "uint16"))
    with pytest.raises(InputError, match=r"three.tif has 3 band\(s\) but the declared order B,G,R,N has 4"):
        open_image(path, bands="B,G,R,N")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(MissingInputError, match="nope.tif: no such file"):
        open_image(tmp_path / "nope.tif", label="before")


def test_unreadable_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="broken.tif: not a raster GDAL can read") as info:
        open_image(path)
    assert "\n" not in str(info.value)


def test_raster_without_georeferencing_is_refused(data_dir):
    with pytest.raises(InputError, match="no CRS or geotransform and no RPCs"):
        open_image(data_dir / "oscd_changedetectionrepository/train_labels/paris/cm/paris-cm.tif")


def test_grid_scaled_keeps_extent_and_limits_size():
    grid = Grid(CRS.from_epsg(2154), Affine(0.5, 0, 0, 0, -0.5, 1000), 40000, 30000)
    small = grid.scaled(1000)
    assert max(small.shape) <= 1000
    assert small.bounds == pytest.approx(grid.bounds)


def test_grid_pixel_area_in_square_metres():
    projected = Grid(CRS.from_epsg(2154), Affine(0.5, 0, 0, 0, -0.5, 0), 10, 10)
    assert projected.pixel_area_m2 == pytest.approx(0.25)
    # 1e-5 degree at the equator is about 1.11 m on both sides.
    geographic = Grid(CRS.from_epsg(4326), Affine(1e-5, 0, 0, 0, -1e-5, 0.00005), 10, 10)
    assert geographic.pixel_area_m2 == pytest.approx(1.113**2, rel=0.01)


def test_grid_mismatch_names_both_rasters():
    a = Grid(CRS.from_epsg(2154), Affine(0.5, 0, 0, 0, -0.5, 0), 10, 10)
    b = Grid(CRS.from_epsg(2154), Affine(0.3, 0, 0, 0, -0.3, 0), 10, 10)
    with pytest.raises(InputError, match="prediction.tif .* and reference.tif .* are on different grids"):
        a.check_same(b, names=("prediction.tif", "reference.tif"))


def test_jpeg2000_input_reads_like_geotiff(tmp_path):
    import rasterio
    import rasterio.shutil

    from conftest import textured_scene

    tif = write_geotiff(tmp_path / "scene.tif", textured_scene((64, 64), bands=4))
    jp2 = tmp_path / "scene.jp2"
    rasterio.shutil.copy(tif, jp2, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    image = open_image(jp2, bands="B,G,R,N")
    assert image.crs == CRS.from_epsg(2154) and image.names == ("B", "G", "R", "N")
    with rasterio.open(jp2) as a, rasterio.open(tif) as b:
        np.testing.assert_array_equal(a.read(), b.read())  # lossless


def test_the_run_block_cache_is_the_stated_megabytes(monkeypatch):
    """rasterio.Env hands an integer GDAL_CACHEMAX to GDAL as bytes: the cap must be given in bytes."""
    from rasterio.env import get_gdal_config

    from deltacd.io.rasters import GDAL_CACHE_MB, gdal_env

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    with gdal_env():
        assert int(get_gdal_config("GDAL_CACHEMAX")) == GDAL_CACHE_MB * 1024 * 1024
