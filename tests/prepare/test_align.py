"""Both dates on one grid: CRS, resolution, footprint intersection, masks, AOI, sensor geometry."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from conftest import write_geotiff
from deltacd.errors import InputError
from deltacd.io.rasters import open_image
from deltacd.prepare.align import align_pair, target_crs
from deltacd.prepare.orthorectify import orthorectify

JOPLIN = "joplin-georef-unlabeled_xview2deploy"


def test_joplin_utm_and_wgs84_tiles_end_up_on_one_grid(data_dir):
    before = open_image(data_dir / JOPLIN / "pre/tile_337-10160.tif", label="before")  # EPSG:26915, 0.6 m
    after = open_image(data_dir / JOPLIN / "post/tile_31500-6161.tif", label="after")  # EPSG:4326, 6e-6 deg
    with align_pair(before, after) as pair:
        grid = pair.grid
        assert grid.crs == CRS.from_epsg(26915)
        # Coarser of the two: the post tile's 6e-6 degrees is about 0.603 m here.
        assert grid.res[0] == pytest.approx(0.603, abs=0.002)
        # The grid lies inside both footprints: the intersection, on the pre tile's own lattice.
        assert grid.bounds.left >= 366642.6 - 1e-6 and grid.bounds.right <= 367257.0 + 1e-6
        window = pair.read(grid.full_window)
        assert window.before.shape == (3, grid.height, grid.width) == window.after.shape
        assert window.before.dtype == np.float32
        # Both dates hold real data over most of the overlap (post tile is rotated into UTM: edges masked).
        assert 0.9 < window.valid.mean() < 1.0
        assert window.after[:, window.valid].std() > 10


def test_puerto_rico_pair_on_the_same_grid_is_read_without_resampling(data_dir):
    import rasterio

    folder = data_dir / "puertorico-maria_matthinfo"
    before = open_image(folder / "Pre_Event_Grids_In_TIFF/tile_0_107.tif")
    after = open_image(folder / "Post_Event_Grids_In_TIFF/tile_0_107.tif")
    with align_pair(before, after) as pair:
        assert pair.grid.shape == (512, 512)
        window = pair.read(pair.grid.full_window)
        with rasterio.open(folder / "Pre_Event_Grids_In_TIFF/tile_0_107.tif") as src:
            np.testing.assert_array_equal(window.before, src.read().astype("float32"))
        assert window.valid.all()


def test_oscd_13_bands_at_10_20_60_m_are_stacked_on_one_grid(data_dir):
    city = data_dir / "oscd_changedetectionrepository/images/rennes"
    with align_pair(open_image(city / "imgs_1"), open_image(city / "imgs_2")) as pair:
        assert len(pair.bands) == 13
        assert pair.grid.crs.is_projected  # EPSG:4326 inputs go to their UTM zone
        assert pair.grid.crs.to_epsg() == 32630
        window = pair.read(pair.grid.full_window)
        # The 60 m band B01 is upsampled: smooth, yet present everywhere the 10 m bands are.
        b01, b02 = pair.bands.index("B01"), pair.bands.index("B02")
        assert np.isfinite(window.before[b01][window.valid]).all()
        grad = lambda a: np.abs(np.diff(a, axis=1))[window.valid[:, 1:]].mean()  # noqa: E731
        assert grad(window.before[b01]) < grad(window.before[b02])


def test_landsat_envi_pair_aligns(data_dir):
    folder = data_dir / "landsat-taizhou-nanjing_changedetectionrepository/Nanjing"
    before = open_image(folder / "LT51200382000124BJC00_Nanjing")
    after = open_image(folder / "LT51200382002193BJC00_Nanjing")
    with align_pair(before, after) as pair:
        assert pair.grid.shape == (800, 800) and pair.grid.res == (30.0, 30.0)
        assert len(pair.bands) == 6


def test_declared_band_orders_are_matched_by_name(tmp_path):
    bgrn = np.stack([np.full((16, 16), v, "uint16") for v in (10, 20, 30, 40)])
    rgbn = bgrn[[2, 1, 0, 3]]
    b = write_geotiff(tmp_path / "b.tif", bgrn)
    a = write_geotiff(tmp_path / "a.tif", rgbn)
    with align_pair(open_image(b, bands="B,G,R,N"), open_image(a, bands="R,G,B,N")) as pair:
        window = pair.read(pair.grid.full_window)
        np.testing.assert_array_equal(window.before, window.after)


def test_nodata_of_either_date_is_invalid(tmp_path):
    before = np.full((1, 20, 20), 100, "uint16")
    after = before.copy()
    before[0, :5] = 0
    after[0, :, :3] = 0
    b = write_geotiff(tmp_path / "b.tif", before, nodata=0)
    a = write_geotiff(tmp_path / "a.tif", after, nodata=0)
    with align_pair(open_image(b), open_image(a)) as pair:
        valid = pair.read(pair.grid.full_window).valid
    assert not valid[:5].any() and not valid[:, :3].any()
    assert valid[5:, 3:].all()


def test_rasters_that_do_not_overlap_are_refused(tmp_path):
    data = np.ones((1, 10, 10), "uint16")
    b = write_geotiff(tmp_path / "west.tif", data)
    a = write_geotiff(tmp_path / "east.tif", data, transform=Affine(0.5, 0, 600000.0, 0, -0.5, 6280000.0))
    with pytest.raises(InputError, match="west.tif and .*east.tif do not overlap"):
        align_pair(open_image(b), open_image(a))


def test_unknown_output_crs_is_a_one_line_input_error(tmp_path):
    data = np.ones((1, 10, 10), "uint16")
    b = write_geotiff(tmp_path / "b.tif", data)
    with pytest.raises(InputError, match=r"^crs 'EPSG:999999': not a CRS PROJ knows .*EPSG:2154") as info:
        align_pair(open_image(b), open_image(b), crs="EPSG:999999")
    assert "\n" not in str(info.value)

def test_aoi_clips_the_grid_and_masks_outside(tmp_path):
    data = np.ones((1, 100, 100), "uint16")
    b = write_geotiff(tmp_path / "b.tif", data)
    a = write_geotiff(tmp_path / "a.tif", data)
    # A triangle over the north-west quarter (grid: x 574000..574050, y 6279950..6280000).
    triangle = shapely.Polygon([(574000, 6280000), (574025, 6280000), (574000, 6279975)])
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[triangle], crs="EPSG:2154").to_crs(4326).to_file(aoi)
    with align_pair(open_image(b), open_image(a), aoi=aoi) as pair:
        assert pair.grid.shape == (50, 50)
        valid = pair.read(pair.grid.full_window).valid
    assert valid[0, 0] and not valid[-1, -1]
    assert valid.mean() == pytest.approx(0.5, abs=0.05)


def test_aoi_that_misses_the_images_is_refused(tmp_path):
    data = np.ones((1, 10, 10), "uint16")
    b = write_geotiff(tmp_path / "b.tif", data)
    aoi = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(1.0, 43.0, 1.01, 43.01)], crs="EPSG:4326").to_file(aoi)
    with pytest.raises(InputError, match="the AOI .* misses the overlap of the images"):
        align_pair(open_image(b), open_image(b), aoi=aoi)


def test_empty_aoi_is_refused(tmp_path):
    data = np.ones((1, 10, 10), "uint16")
    b = write_geotiff(tmp_path / "b.tif", data)
    aoi = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[shapely.Point(574001, 6279999)], crs="EPSG:2154").to_file(aoi)
    with pytest.raises(InputError, match="points.geojson: AOI holds no polygon"):
        align_pair(open_image(b), open_image(b), aoi=aoi)


def test_sensor_geometry_must_be_orthorectified_first(data_dir):
    image = open_image(data_dir / "pleiades-unlabeled_picanteo/pre_event_img1.tif")
    with pytest.raises(InputError, match="sensor geometry .*orthorectify it first"):
        align_pair(image, image)


def test_pleiades_rpc_crops_are_orthorectified_onto_one_utm_grid(data_dir, tmp_path):
    folder = data_dir / "pleiades-unlabeled_picanteo"
    before = open_image(folder / "pre_event_img1.tif", label="before")
    after = open_image(folder / "post_event_img1.tif", label="after")
    crs = target_crs(before)
    assert crs.to_epsg() == 32637  # Kahramanmaras, 36.9 E
    before, after = orthorectify(before, tmp_path, crs=crs), orthorectify(after, tmp_path, crs=crs)
    with align_pair(before, after) as pair:
        assert pair.grid.res[0] == pytest.approx(0.535, abs=0.01)  # PAN resampled product, ~0.5 m
        window = pair.read(pair.grid.full_window)
        assert window.valid.mean() > 0.9
        # Real image content, not a warp of a few pixels: plenty of distinct values.
        assert len(np.unique(window.before[0][window.valid])) > 1000


@pytest.mark.parametrize(("shape", "factor"), [((2, 36, 48), 4), ((2, 37, 53), 4), ((1, 1030, 7), 9)])
def test_decimated_read_is_the_exact_cell_mean(tmp_path, shape, factor):
    """The coarse views (co-registration, quicklook) average factor x factor cells, partial ones at the edges."""
    from deltacd.prepare.align import _block_mean

    values = np.random.default_rng(0).integers(0, 4096, shape, dtype="uint16")
    path = write_geotiff(tmp_path / "a.tif", values)
    expected = np.empty((shape[0], -(-shape[1] // factor), -(-shape[2] // factor)))
    for r in range(expected.shape[1]):
        for c in range(expected.shape[2]):
            expected[:, r, c] = values[:, r * factor:(r + 1) * factor, c * factor:(c + 1) * factor].mean(axis=(1, 2))
    image = open_image(path)
    with image.files[0].open() as src:
        got = _block_mean(src, image.files[0], list(range(1, shape[0] + 1)), Window(0, 0, shape[2], shape[1]), factor)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("nodata", [None, 0])
def test_a_grid_shifted_by_a_fraction_of_a_pixel_reads_as_gdal_warps_it(tmp_path, nodata):
    """Date 2 on a shifted grid is warped in memory window by window: GDAL WarpedVRT's values and validity."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from deltacd.prepare.align import _FileReader

    values = np.random.default_rng(1).integers(1, 4096, (3, 300, 260), dtype="uint16")
    if nodata is not None:
        values[:, 100:110, 50:70] = nodata
    before = write_geotiff(tmp_path / "before.tif", np.ones((3, 300, 260), "uint16"))
    after = write_geotiff(tmp_path / "after.tif", values, nodata=nodata,
                          transform=Affine(0.5, 0, 574000.0 + 0.37 * 0.5, 0, -0.5, 6280000.0 - 0.61 * 0.5))
    with align_pair(open_image(before), open_image(after)) as pair:
        grid = pair.grid
    image = open_image(after)
    reader = _FileReader(image.files[0], grid)
    reader.open()
    assert reader._translated
    with rasterio.open(after) as src:
        options = {"add_alpha": True} if nodata is None else {"nodata": nodata}
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=Resampling.bilinear, **options) as vrt:
            for window in [Window(0, 0, 64, 64), Window(40, 90, 64, 64), Window(grid.width - 50, grid.height - 40, 50, 40),
                           Window(0, 0, grid.width, grid.height)]:
                data, valid = reader.read([1, 2, 3], window)
                np.testing.assert_array_equal(data, vrt.read([1, 2, 3], window=window, out_dtype="float32"))
                np.testing.assert_array_equal(valid, np.all(vrt.read_masks([1, 2, 3], window=window) > 0, axis=0))
    assert reader._read_translated([1, 2, 3], Window(40, 90, 64, 64)) is not None  # an inner window takes the fast path
    reader.close()
