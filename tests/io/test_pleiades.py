"""Pléiades as delivered: OSSIM ``ossimPleiadesModel`` .geom sidecars and DIMAP products (DIM_*.XML, RPC_*.XML).

Real data: ``pleiades-ventoux_shareloc`` (CNES shareloc test data), crops of Pléiades 1B primary products
in sensor geometry: ``left_image.tif`` (PAN, 500x500 at pixel 5000, 5000 of its product), ``lowres_color_image.tif``
(MS, 145x145 at 1240, 1240), each with its ``.geom``, and ``RPC_PHR1B_P_..._690908101-001.XML``, the DIMAP RPC
file of the left image's product. The crops carry their offset in the product as a pixel-unit TIFF transform.
No full DIMAP product ships with the data: the tests write a minimal ``DIM_*.XML`` around a copy of the left image.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import RPCTransformer

from deltacd.errors import InputError
from deltacd.io import dimap
from deltacd.io.ossim import read_geom
from deltacd.io.rasters import open_image

FOLDER = "pleiades-ventoux_shareloc"
PRODUCT_ID = "PHR1B_P_201308051042194_SEN_690908101-001"
RPC_XML = f"RPC_{PRODUCT_ID}.XML"
#: Ground pixel size of the PAN product (meters_per_pixel_x/y of left_image.geom: 0.506 / 0.504 m).
PIXEL_M = 0.504
#: Pixels (row, col) of the 500x500 left crop where both routes are compared.
PIXELS = [(0, 0), (0, 499), (250, 250), (499, 0), (499, 499), (123, 377)]


def _dim_xml(raster: str, *, rows: int, cols: int, bands: int, display: tuple[str, ...] = ("P",),
             measured: tuple[str, ...] = (), rpc: str | None = RPC_XML) -> str:
    """A minimal DIMAP v2 product document, as Airbus writes them (only the elements GDAL and deltacd read)."""
    channels = "".join(f"<{c}>{b}</{c}>" for c, b in zip(("RED_CHANNEL", "GREEN_CHANNEL", "BLUE_CHANNEL", "ALPHA_CHANNEL"),
                                                         display))
    radiance = "".join(f"<Band_Radiance><BAND_ID>{b}</BAND_ID><GAIN>10</GAIN></Band_Radiance>" for b in measured)
    model = (f"<Geoposition><Geoposition_Models><Rational_Function_Model><Component><COMPONENT_TITLE>RPC Model"
             f'</COMPONENT_TITLE><COMPONENT_PATH href="{rpc}"/></Component></Rational_Function_Model>'
             f"</Geoposition_Models></Geoposition>") if rpc else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Dimap_Document><Metadata_Identification>'
        '<METADATA_FORMAT version="2.0">DIMAP</METADATA_FORMAT><METADATA_PROFILE>PHR_SENSOR</METADATA_PROFILE>'
        f"</Metadata_Identification>{model}<Raster_Data><Data_Access><DATA_FILE_FORMAT>image/tiff</DATA_FILE_FORMAT>"
        f'<Data_Files><Data_File tile_R="1" tile_C="1"><DATA_FILE_PATH href="{raster}"/></Data_File></Data_Files>'
        f"</Data_Access><Raster_Dimensions><NROWS>{rows}</NROWS><NCOLS>{cols}</NCOLS><NBANDS>{bands}</NBANDS>"
        f"</Raster_Dimensions><Raster_Display><Band_Display_Order>{channels}</Band_Display_Order></Raster_Display>"
        "</Raster_Data><Radiometric_Data><Radiometric_Calibration><Instrument_Calibration><Band_Measurement_List>"
        f"{radiance}</Band_Measurement_List></Instrument_Calibration></Radiometric_Calibration></Radiometric_Data>"
        "</Dimap_Document>\n"
    )


def _product(folder: Path, data: Path, *, raster: str = f"IMG_{PRODUCT_ID}_R1C1.TIF", rpc_component: bool = True,
             rpc_file: bool = True) -> Path:
    """A product folder: DIM_*.XML naming a copy of the left crop and (beside it) the shipped RPC_*.XML."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "left_image.tif", folder / raster)
    if rpc_file:
        shutil.copyfile(data / RPC_XML, folder / RPC_XML)
    dim = folder / f"DIM_{PRODUCT_ID}.XML"
    dim.write_text(_dim_xml(raster, rows=500, cols=500, bands=1, rpc=RPC_XML if rpc_component else None))
    return dim


def _ground(image, pixels=PIXELS) -> np.ndarray:
    """(lon, lat) of pixel centres through the image's (crop-shifted) RPCs, at the model's mean height."""
    rpc = image.files[0].rpc.rpc
    rows, cols = zip(*pixels)
    with RPCTransformer(rpc) as transformer:  # zs: heights above the ellipsoid (RPC_HEIGHT would add to them)
        lon, lat = transformer.xy(rows, cols, zs=[rpc.height_off] * len(rows))
    return np.column_stack([lon, lat])


def _metres(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Ground distance between (lon, lat) rows, locally flat (a few metres at 44 N)."""
    lat = math.radians(float(np.mean(a[:, 1])))
    dx = (a[:, 0] - b[:, 0]) * 111_320.0 * math.cos(lat)
    dy = (a[:, 1] - b[:, 1]) * 110_540.0
    return np.hypot(dx, dy)


@pytest.fixture
def data(data_dir) -> Path:
    return data_dir / FOLDER


def test_pleiades_geom_sidecars_are_read(data):
    left = read_geom(data / "left_image.geom")
    assert left.model == "ossimPleiadesModel" and left.bands == ("P",) and left.size == (39182, 41801)
    assert left.rpc.samp_off == 19207.5 and left.rpc.line_off == 21109.5
    colour = read_geom(data / "lowres_color_image.geom")
    assert colour.bands == ("B2", "B1", "B0", "B3") and colour.size == (9796, 10451)


def test_the_dimap_rpc_file_is_the_geom_model(data):
    """RPC_*.XML (1-based pixels) and the .geom (0-based) hold one model: offsets differ by exactly 1."""
    xml, geom = dimap.read_rpc_xml(data / RPC_XML), read_geom(data / "left_image.geom").rpc
    assert (geom.samp_off, geom.line_off) == (19207.5, 21109.5)
    for name in ("samp_off", "line_off", "lat_off", "long_off", "height_off", "lat_scale", "long_scale", "height_scale", "samp_scale", "line_scale"):
        assert getattr(xml, name) == pytest.approx(getattr(geom, name), rel=1e-12), name
    for name in ("samp_num_coeff", "samp_den_coeff", "line_num_coeff", "line_den_coeff"):
        np.testing.assert_allclose(getattr(xml, name), getattr(geom, name), rtol=1e-12, atol=1e-18, err_msg=name)


def test_left_crop_opens_through_its_geom_shifted_to_the_crop(data):
    image = open_image(data / "left_image.tif")
    assert image.sensor_geometry and image.names == ("PAN",)
    assert (image.files[0].rpc.rpc.samp_off, image.files[0].rpc.rpc.line_off) == (19207.5 - 5000, 21109.5 - 5000)


def test_multispectral_crop_opens_with_the_product_band_order(data):
    """lowres_color_image.tif: 4 bands in the product's file order B2 B1 B0 B3 (its .geom band_name_list), i.e.
    red, green, blue, NIR. The data agree: band 3 has the highest dark level (1st percentile), the path radiance
    that scattering adds most to blue, and the most compressed range."""
    image = open_image(data / "lowres_color_image.tif")
    assert image.sensor_geometry and image.names == ("R", "G", "B", "N")
    assert image.files[0].rpc.rpc.samp_off == pytest.approx(4801.5 - 1240)
    with image.files[0].open() as src:
        dark = [np.percentile(src.read(b), 1) / gain for b, gain in zip((1, 2, 3), (11.32, 10.47, 10.46))]
    assert int(np.argmax(dark)) == 2  # band 3 is blue


@pytest.mark.parametrize("route", ["DIM_*.XML", "product folder", "GDAL without RPC component", "raster named by DIM"])
def test_geom_and_dimap_routes_give_the_same_ground_positions(data, tmp_path, route):
    """The left crop through its .geom and through the DIMAP product (its RPC_*.XML) lands on the same ground."""
    if route == "DIM_*.XML":
        source = _product(tmp_path / "product", data)
    elif route == "product folder":
        source = _product(tmp_path / "product", data).parent
    elif route == "GDAL without RPC component":  # GDAL reads no RPCs: deltacd reads RPC_<id>.XML beside the DIM
        source = _product(tmp_path / "product", data, rpc_component=False)
    else:  # a raster not named IMG_*: GDAL does not tie it to the product, deltacd follows the DIM listing it
        source = _product(tmp_path / "product", data, raster="left_copy.tif").parent / "left_copy.tif"
    via_dimap = open_image(source)
    assert via_dimap.sensor_geometry and via_dimap.names == ("PAN",)
    via_geom = open_image(data / "left_image.tif")
    distance = _metres(_ground(via_geom), _ground(via_dimap))
    assert distance.max() < PIXEL_M, distance
    assert distance.max() < 0.01  # one model, one offset convention: the same point, not just within a pixel


def _direct_model(path: Path, cols, rows, height: float) -> np.ndarray:
    """(lon, lat) from the RPC file's Direct_Model (image -> ground), at DIMAP pixel coordinates."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    model = next(e for e in root.iter() if e.tag == "Direct_Model")

    def value(tag, parent=root):
        return float(next(e for e in parent.iter() if e.tag == tag).text)

    def poly(name, x, y, z):  # the RPC00B monomial order, x: column, y: row
        c = [value(f"{name}_{i}", model) for i in range(1, 21)]
        t = [1, x, y, z, x * y, x * z, y * z, x * x, y * y, z * z, x * y * z, x**3, x * y * y, x * z * z, x * x * y,
             y**3, y * z * z, x * x * z, y * y * z, z**3]
        return sum(ci * ti for ci, ti in zip(c, t))

    x = (np.asarray(cols, float) - value("SAMP_OFF")) / value("SAMP_SCALE")
    y = (np.asarray(rows, float) - value("LINE_OFF")) / value("LINE_SCALE")
    z = (height - value("HEIGHT_OFF")) / value("HEIGHT_SCALE")
    lon = poly("SAMP_NUM_COEFF", x, y, z) / poly("SAMP_DEN_COEFF", x, y, z) * value("LONG_SCALE") + value("LONG_OFF")
    lat = poly("LINE_NUM_COEFF", x, y, z) / poly("LINE_DEN_COEFF", x, y, z) * value("LAT_SCALE") + value("LAT_OFF")
    return np.column_stack([lon, lat])


def test_the_crop_offset_and_pixel_convention_match_the_direct_model(data):
    """An independent check of the offsets: the RPC file's Direct_Model (image -> ground, 1-based pixels of the full
    product) puts the crop's pixel centres where the crop-shifted .geom model does (GDAL's RPC transformer).
    Forgetting the 1-based convention costs 1.4 px here; forgetting the crop offset, kilometres."""
    image = open_image(data / "left_image.tif")
    rows, cols = (np.array(v) for v in zip(*PIXELS))
    ours = _ground(image)
    height = image.files[0].rpc.rpc.height_off
    direct = _direct_model(data / RPC_XML, cols + 5000 + 1, rows + 5000 + 1, height)
    assert _metres(ours, direct).max() < 0.05 * PIXEL_M
    zero_based = _direct_model(data / RPC_XML, cols + 5000, rows + 5000, height)
    assert _metres(ours, zero_based).min() > PIXEL_M


def test_gdal_reads_the_dimap_product_itself(data, tmp_path):
    """GDAL's DIMAP driver opens the DIM_*.XML and its RPC_*.XML (minus 1 on the offsets): deltacd keeps its reading."""
    import rasterio

    dim = _product(tmp_path / "product", data)
    with rasterio.open(dim) as ds:
        assert ds.driver == "DIMAP" and ds.rpcs is not None
        assert (ds.rpcs.samp_off, ds.rpcs.line_off) == pytest.approx((19207.5, 21109.5))
        assert ds.descriptions == (None,)  # no band names: deltacd adds them from Band_Display_Order


def test_orthorectified_routes_share_one_grid(data, tmp_path):
    from deltacd.prepare.align import target_crs
    from deltacd.prepare.orthorectify import orthorectify

    via_geom = open_image(data / "left_image.tif", label="before")
    via_dimap = open_image(_product(tmp_path / "product", data), label="after")
    crs = target_crs(via_geom)
    assert crs.to_epsg() == 32631  # Mont Ventoux, 5.3 E
    a, b = orthorectify(via_geom, tmp_path / "a", crs=crs), orthorectify(via_dimap, tmp_path / "b", crs=crs)
    ta, tb = a.files[0].transform, b.files[0].transform
    assert (a.files[0].width, a.files[0].height) == (b.files[0].width, b.files[0].height)
    assert abs(ta.c - tb.c) < 0.01 and abs(ta.f - tb.f) < 0.01 and ta.a == pytest.approx(tb.a)


def test_dimap_band_order_is_read_from_the_product(data, tmp_path):
    """Band_Display_Order gives the file order (B2 B1 B0 B3 -> R,G,B,N), not the Band_Measurement_List (B0..B3
    whatever the file order); without a display order, no names are guessed."""
    shutil.copyfile(data / "lowres_color_image.tif", tmp_path / "IMG_MS.TIF")
    shutil.copyfile(data / RPC_XML, tmp_path / RPC_XML)
    dim = tmp_path / "DIM_MS.XML"
    dim.write_text(_dim_xml("IMG_MS.TIF", rows=145, cols=145, bands=4, display=("B2", "B1", "B0", "B3"),
                            measured=("B0", "B1", "B2", "B3")))
    assert open_image(dim).names == ("R", "G", "B", "N")
    dim.write_text(_dim_xml("IMG_MS.TIF", rows=145, cols=145, bands=4, display=(), measured=("B0", "B1", "B2", "B3")))
    assert open_image(dim).names == ("1", "2", "3", "4")
    assert open_image(dim, bands="B,G,R,N").names == ("B", "G", "R", "N")  # a declared order still wins


def test_a_folder_with_two_products_names_them(data, tmp_path):
    _product(tmp_path / "delivery" / "IMG_P_001", data)
    _product(tmp_path / "delivery" / "IMG_P_002", data)
    with pytest.raises(InputError, match=r"holds 2 DIMAP products .*IMG_P_001/DIM_.*IMG_P_002/DIM_"):
        open_image(tmp_path / "delivery")


def test_the_rpc_file_given_as_the_image_is_refused(data, tmp_path):
    dim = _product(tmp_path / "product", data)
    with pytest.raises(InputError, match=rf"is the RPC model of a DIMAP product, not an image; give {dim.name}"):
        open_image(dim.parent / RPC_XML)


def test_missing_georeference_names_the_files_looked_for(data, tmp_path):
    shutil.copyfile(data / "left_image.tif", tmp_path / "crop.tif")
    with pytest.raises(InputError) as info:
        open_image(tmp_path / "crop.tif", label="before")
    message = str(info.value)
    assert "a geotransform but no CRS and no RPCs (before image)" in message
    assert "none in crop.tif (RPC tags, crop.RPB, crop_RPC.TXT)" in message
    assert "no crop.geom" in message and "no RPC_*.XML or DIM_*.XML beside it" in message
    assert "gdal_edit" not in message and "\n" not in message
    # An RPC file beside it that no DIM_*.XML ties to the crop is named, and not used.
    shutil.copyfile(data / RPC_XML, tmp_path / RPC_XML)
    with pytest.raises(InputError, match=rf"{RPC_XML} beside it, but no DIM_\*\.XML beside it lists crop.tif"):
        open_image(tmp_path / "crop.tif")


def test_a_dimap_product_without_its_rpc_file_says_so(data, tmp_path):
    dim = _product(tmp_path / "product", data, rpc_file=False)
    with pytest.raises(InputError, match=rf"DIMAP product without RPCs .*no RPC_{PRODUCT_ID}.XML beside it"):
        open_image(dim)


def test_detect_runs_on_the_multispectral_crop(data, tmp_path, capsys):
    from deltacd.cli import main

    image = data / "lowres_color_image.tif"
    assert main(["detect", str(image), str(image), "-o", str(tmp_path / "out")]) == 0
    assert "outputs in" in capsys.readouterr().out


def test_detect_runs_on_the_left_crop_through_geom_and_dimap(data, tmp_path):
    from deltacd.cli import main

    dim = _product(tmp_path / "product", data)
    assert main(["detect", str(data / "left_image.tif"), str(dim.parent), "-o", str(tmp_path / "out")]) == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["inputs"]["after"]["files"] == [str(dim)] and record["inputs"]["after"]["bands"] == ["PAN"]
    coreg = record["coregistration"]  # the two routes put the crop on the same ground: no shift to measure
    assert abs(coreg["dx"]) < 0.05 and abs(coreg["dy"]) < 0.05
