"""``deltacd.evaluate.compare``: post-classification comparison against our change map, on known answers."""

from __future__ import annotations

import csv
import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes

from conftest import LAMBERT93, write_geotiff
from deltacd.errors import InputError
from deltacd.evaluate.compare import compare
from deltacd.evaluate.metrics import ConfusionMatrix

#: 0.5 m pixels: 0.25 m² each, 40 000 pixels per hectare.
TRANSFORM = Affine(0.5, 0, 574000.0, 0, -0.5, 6280000.0)
PX_HA = 0.25 / 1e4
FOREST, CROP, WATER, URBAN = 1, 2, 3, 4
NAMES = {FOREST: "forest", CROP: "crop", WATER: "water", URBAN: "urban"}
FAST = dict(block_size=32, read_size=64, n_boot=50, figures=False)


@pytest.fixture
def scene():
    """Land cover at both dates, our mask and a reference with known transitions ([120, 160] each).

    Date 1: forest left, crop right, water in rows 100..119. Date 2: forest -> urban on 800 px,
    crop -> forest on 800 px (a classification error: no real change), crop -> urban on 100 px.
    Ours: 400 px of the forest -> urban block, a 200 px false alarm on water, nodata on rows
    115..119. Reference: the two urban blocks.
    """
    before = np.full((120, 160), FOREST, np.uint8)
    before[:, 80:] = CROP
    before[100:, :] = WATER
    after = before.copy()
    after[10:30, 10:50] = URBAN  # forest -> urban, 800 px
    after[40:60, 100:140] = FOREST  # crop -> forest, 800 px
    after[70:80, 90:100] = URBAN  # crop -> urban, 100 px
    ours = np.zeros_like(before)
    ours[10:30, 10:30] = 1  # 400 px of forest -> urban
    ours[100:110, 0:20] = 1  # 200 px false alarm on water
    ours[115:, :] = 255  # nodata, 800 px
    reference = np.zeros_like(before)
    reference[10:30, 10:50] = 1
    reference[70:80, 90:100] = 1
    return before, after, ours, reference


def _write(tmp_path, scene):
    before, after, ours, reference = scene
    return (
        write_geotiff(tmp_path / "ours.tif", ours, transform=TRANSFORM, nodata=255),
        write_geotiff(tmp_path / "lc1.tif", before, transform=TRANSFORM, nodata=0),
        write_geotiff(tmp_path / "lc2.tif", after, transform=TRANSFORM, nodata=0),
        write_geotiff(tmp_path / "ref.tif", reference, transform=TRANSFORM),
    )


def _polygons(classes: np.ndarray, transform: Affine, field: str, names: dict | None = None) -> gpd.GeoDataFrame:
    pairs = list(shapes(classes, mask=classes > 0, connectivity=4, transform=transform))
    values = [int(v) for _, v in pairs]
    return gpd.GeoDataFrame(
        {field: [names[v] for v in values] if names else values},
        geometry=[shapely.geometry.shape(g) for g, _ in pairs],
        crs=LAMBERT93,
    )


def _transition(result, a: int, b: int) -> int:
    codes = list(result.class_codes)
    return int(result.transitions[codes.index(a), codes.index(b)])


def test_known_transitions_give_exact_areas_and_agreement(scene, tmp_path):
    ours, lc1, lc2, _ = _write(tmp_path, scene)
    result = compare(ours, lc1, lc2, tmp_path / "out", classes=NAMES, **FAST)
    assert result.class_codes == (FOREST, CROP, WATER, URBAN)
    assert _transition(result, FOREST, URBAN) == 800
    assert _transition(result, CROP, FOREST) == 800
    assert _transition(result, CROP, URBAN) == 100
    assert _transition(result, WATER, WATER) == 20 * 160 - 800  # rows 115.. are our nodata
    assert result.transitions.sum() == 120 * 160 - 800
    # agreement: 0 neither, 1 only ours, 2 only PCC, 3 both
    np.testing.assert_array_equal(result.agreement_pixels, [18400 - 200 - 1300 - 400, 200, 1300, 400])
    summary = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert summary["agreement"]["both"]["area_ha"] == pytest.approx(400 * PX_HA)
    assert summary["change_area_ha"]["pcc"] == pytest.approx(1700 * PX_HA)
    rows = {(r["from_name"], r["to_name"]): r for r in csv.DictReader(open(tmp_path / "out" / "transitions.csv"))}
    assert float(rows[("forest", "urban")]["area_ha"]) == pytest.approx(800 * PX_HA)
    assert float(rows[("forest", "urban")]["ours_share"]) == pytest.approx(0.5)
    assert float(rows[("water", "water")]["ours_change_ha"]) == pytest.approx(200 * PX_HA)
    assert rows[("crop", "forest")]["changed"] == "True"


def test_agreement_raster_and_polygons(scene, tmp_path):
    before, after, ours_mask, _ = scene
    ours, lc1, lc2, _ = _write(tmp_path, scene)
    result = compare(ours, lc1, lc2, tmp_path / "out", block_size=32, read_size=64, n_boot=50)
    expected = np.where(ours_mask == 255, 255, ours_mask + 2 * (before != after)).astype(np.uint8)
    with rasterio.open(result.agreement) as src:
        assert src.nodata == 255 and src.dtypes[0] == "uint8"
        assert src.crs == LAMBERT93 and src.transform == TRANSFORM
        np.testing.assert_array_equal(src.read(1), expected)
    polygons = gpd.read_file(result.agreement_polygons, layer="agreement")
    assert set(polygons["agreement"]) == {1, 2, 3}
    for code in (1, 2, 3):
        area = polygons.loc[polygons["agreement"] == code].geometry.area.sum()
        assert area == pytest.approx(result.agreement_pixels[code] * 0.25), code
    for name in ("agreement.png", "transitions.png", "transitions.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_scores_against_the_reference_match_a_direct_count(scene, tmp_path):
    before, after, ours_mask, reference = scene
    ours, lc1, lc2, ref = _write(tmp_path, scene)
    result = compare(ours, lc1, lc2, tmp_path / "out", reference=ref, **FAST)
    valid = ours_mask != 255
    direct_ours = ConfusionMatrix.from_arrays(ours_mask[valid], reference[valid])
    direct_pcc = ConfusionMatrix.from_arrays((before != after)[valid], reference[valid])
    assert result.ours_vs_reference == direct_ours
    assert result.pcc_vs_reference == direct_pcc
    assert result.pcc_vs_reference.recall == 1.0  # PCC finds both urban blocks ...
    assert result.pcc_vs_reference.precision == pytest.approx(900 / 1700)  # ... and the crop -> forest error
    summary = result.summary["reference"]
    assert summary["ours"]["f1"] == pytest.approx(direct_ours.f1)
    ci = summary["pcc"]["ci"]["f1"]
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    rows = {(r["from_name"], r["to_name"]): r for r in result.summary["transitions"]}
    assert rows[("2", "1")]["reference_change_share"] == 0.0  # crop -> forest: no real change
    assert rows[("1", "4")]["reference_change_share"] == 1.0


def test_vector_land_cover_gives_the_same_result_as_rasters(scene, tmp_path):
    before, after, _, _ = scene
    ours, lc1, lc2, _ = _write(tmp_path, scene)
    _polygons(before, TRANSFORM, "code").to_file(tmp_path / "lc1.gpkg")
    _polygons(after, TRANSFORM, "code").to_file(tmp_path / "lc2.gpkg")
    rasters = compare(ours, lc1, lc2, tmp_path / "a", **FAST)
    vectors = compare(ours, tmp_path / "lc1.gpkg", tmp_path / "lc2.gpkg", tmp_path / "b", class_field="code", **FAST)
    assert vectors.class_codes == rasters.class_codes
    np.testing.assert_array_equal(vectors.transitions, rasters.transitions)
    np.testing.assert_array_equal(vectors.agreement_pixels, rasters.agreement_pixels)
    assert vectors.summary["inputs"]["landcover_before"]["rasterisation"] == "pixel centre"


def test_text_classes_of_vector_land_cover_share_one_coding(scene, tmp_path):
    before, after, _, _ = scene
    ours, *_ = _write(tmp_path, scene)
    _polygons(before, TRANSFORM, "lc", NAMES).to_file(tmp_path / "lc1.gpkg")
    _polygons(after, TRANSFORM, "lc", NAMES).to_file(tmp_path / "lc2.gpkg")
    result = compare(ours, tmp_path / "lc1.gpkg", tmp_path / "lc2.gpkg", tmp_path / "out", class_field="lc", **FAST)
    # date 1 has no urban: the coding comes from both dates, text classes in sorted order
    assert result.class_names == ("crop", "forest", "urban", "water")
    names = list(result.class_names)
    assert result.transitions[names.index("forest"), names.index("urban")] == 800
    assert result.transitions[names.index("crop"), names.index("forest")] == 800


def test_land_cover_on_a_coarser_grid_is_warped_with_nearest(scene, tmp_path):
    before, after, _, _ = scene
    ours, *_ = _write(tmp_path, scene)
    coarse = Affine(1.0, 0, 574000.0, 0, -1.0, 6280000.0)  # each 1 m pixel covers 2 x 2 of ours
    lc1 = write_geotiff(tmp_path / "lc1_1m.tif", before[::2, ::2], transform=coarse, nodata=0)
    lc2 = write_geotiff(tmp_path / "lc2_1m.tif", after[::2, ::2], transform=coarse, nodata=0)
    result = compare(ours, lc1, lc2, tmp_path / "out", **FAST)
    assert result.summary["inputs"]["landcover_before"]["warped"] is True
    # every block edge of the scene falls on an even row/column, so nearest resampling is exact
    assert _transition(result, FOREST, URBAN) == 800
    assert _transition(result, CROP, URBAN) == 100


def test_undeclared_land_cover_codes_are_listed_and_nothing_is_written(scene, tmp_path):
    ours, lc1, lc2, _ = _write(tmp_path, scene)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"class codes 4 .*declared classes \(1, 2, 3\)"):
        compare(ours, lc1, lc2, out, classes=[FOREST, CROP, WATER], **FAST)
    assert not out.exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_vector_land_cover_needs_a_class_field(scene, tmp_path):
    before, _, _, _ = scene
    ours, lc1, _, _ = _write(tmp_path, scene)
    _polygons(before, TRANSFORM, "code").to_file(tmp_path / "lc2.gpkg")
    with pytest.raises(InputError, match="class_field"):
        compare(ours, lc1, tmp_path / "lc2.gpkg", tmp_path / "out", **FAST)
    with pytest.raises(InputError, match="no field 'klass'; fields: code"):
        compare(ours, lc1, tmp_path / "lc2.gpkg", tmp_path / "out", class_field="klass", **FAST)


def test_cli_compare_prints_the_agreement_and_writes_the_outputs(scene, tmp_path, capsys):
    from deltacd.cli import main

    ours, lc1, lc2, ref = _write(tmp_path, scene)
    code = main(["-q", "compare", str(ours), str(lc1), str(lc2), "-o", str(tmp_path / "cmp"), "--reference", str(ref),
                 "--no-figures"])
    out = capsys.readouterr().out
    assert code == 0 and "agreement (" in out
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    # 400 px flagged by both, 200 px only by us (false alarm on water).
    assert summary["agreement"]["both"]["pixels"] == 400 and summary["agreement"]["only_ours"]["pixels"] == 200
