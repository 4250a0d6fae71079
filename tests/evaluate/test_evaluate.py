"""``deltacd.evaluate.evaluate``: raster/vector evaluation, cross-checked with scikit-learn on real predictions.

The DSIFN-CD crops with the published predictions of six models (ChangeFormer repository) are
written as small GeoTIFFs and evaluated through the raster path with small windows, so several
windows are accumulated; the scores must equal scikit-learn's on the same pixels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PIL import Image
from rasterio.features import shapes
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy import ndimage

from conftest import LAMBERT93, needs, write_geotiff
from deltacd.errors import InputError, OutputError
from deltacd.evaluate import evaluate as evaluate_module
from deltacd.evaluate.evaluate import evaluate
from deltacd.evaluate.metrics import ConfusionMatrix

try:
    from sklearn import metrics as skm  # the reference implementation (`test` extra)
except ImportError:  # the tests marked @needs("sklearn") skip
    skm = None

DSIFN_MODELS = ["BIT", "ChangeFormerV6", "DTCDSCN", "SiamUnet_conc", "SiamUnet_diff", "Unet"]
#: 2 m pixels (DSIFN is about 2 m) in Lambert-93.
TRANSFORM = Affine(2.0, 0, 574000.0, 0, -2.0, 6280000.0)
FAST = dict(block_size=32, read_size=64, n_boot=200, figures=False)


def _png01(path: Path) -> np.ndarray:
    return (np.array(Image.open(path)) > 0).astype(np.uint8)


@pytest.fixture(scope="module")
def dsifn(data_dir: Path) -> dict[str, np.ndarray]:
    """Label and predictions of the 10 DSIFN crops, side by side: uint8 [256, 2560] each."""
    root = data_dir / "dsifn_changeformer"
    names = sorted(p.name for p in (root / "label").glob("*.png"))
    assert len(names) == 10
    out = {"label": np.concatenate([_png01(root / "label" / n) for n in names], axis=1)}
    for m in DSIFN_MODELS:
        out[m] = np.concatenate([_png01(root / "model_predictions" / f"predict_{m}" / n) for n in names], axis=1)
    return out


@pytest.fixture(scope="module")
def dsifn_tifs(dsifn, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dsifn")
    paths = {"label": write_geotiff(folder / "label.tif", dsifn["label"], transform=TRANSFORM)}
    for m in DSIFN_MODELS:
        paths[m] = write_geotiff(folder / f"{m}.tif", dsifn[m], transform=TRANSFORM, nodata=255)
    return paths


def _sk_scores(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    p, r = pred.ravel(), ref.ravel()
    return {
        "f1": skm.f1_score(r, p),
        "precision": skm.precision_score(r, p),
        "recall": skm.recall_score(r, p),
        "kappa": skm.cohen_kappa_score(r, p),
        "overall_accuracy": skm.accuracy_score(r, p),
        "iou": skm.jaccard_score(r, p),
    }


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


# --------------------------------------------------------------------------------------------
# pixel scores against scikit-learn
# --------------------------------------------------------------------------------------------


@needs("sklearn")
@pytest.mark.parametrize("model", DSIFN_MODELS)
def test_raster_scores_equal_sklearn_on_published_predictions(model, dsifn, dsifn_tifs, tmp_path):
    result = evaluate(dsifn_tifs[model], dsifn_tifs["label"], tmp_path / "out", **FAST)
    expected = _sk_scores(dsifn[model], dsifn["label"])
    pixel = result.metrics["pixel"]
    for name, value in expected.items():
        assert pixel[name] == pytest.approx(value, abs=1e-9), name
    np.testing.assert_array_equal(result.confusion.counts, skm.confusion_matrix(dsifn["label"].ravel(), dsifn[model].ravel()))
    # the intervals hold the point estimate
    for name, ci in result.metrics["pixel_ci"].items():
        assert ci["low"] <= ci["estimate"] <= ci["high"], name
        assert ci["n_blocks"] == (256 // 32) * (2560 // 32)


@needs("sklearn")
def test_nodata_pixels_of_the_prediction_are_left_out(dsifn, tmp_path):
    pred = dsifn["BIT"].copy()
    pred[:40, 300:700] = 255  # deltacd's nodata
    p = write_geotiff(tmp_path / "pred.tif", pred, transform=TRANSFORM, nodata=255)
    r = write_geotiff(tmp_path / "ref.tif", dsifn["label"], transform=TRANSFORM)
    result = evaluate(p, r, tmp_path / "out", **FAST)
    keep = pred != 255
    expected = _sk_scores(pred[keep], dsifn["label"][keep])
    assert result.confusion.n_pixels == int(keep.sum())
    for name, value in expected.items():
        assert result.metrics["pixel"][name] == pytest.approx(value, abs=1e-9), name
    # areas: 2 m pixels = 4 m² = 0.0004 ha
    assert result.metrics["area"]["found_ha"] == pytest.approx(result.confusion.tp * 4e-4)
    assert result.metrics["area"]["missed_ha"] == pytest.approx(result.confusion.fn * 4e-4)


@needs("sklearn")
def test_class_maps_equal_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    ref = ndimage.zoom(rng.integers(0, 3, (16, 20)), 8, order=0)
    pred = np.where(rng.random(ref.shape) < 0.2, rng.integers(0, 3, ref.shape), ref)
    codes = np.array([10, 20, 30], dtype=np.uint8)
    ref_c, pred_c = codes[ref], codes[pred]
    ref_c[:5, :] = 255  # unlabelled
    p = write_geotiff(tmp_path / "pred.tif", pred_c, transform=TRANSFORM)
    r = write_geotiff(tmp_path / "ref.tif", ref_c, transform=TRANSFORM)
    result = evaluate(p, r, tmp_path / "out", classes={10: "water", 20: "forest", 30: "urban"}, **FAST)
    keep = ref_c != 255
    np.testing.assert_array_equal(result.confusion.counts, skm.confusion_matrix(ref[keep], pred[keep]))
    assert result.metrics["pixel"]["kappa"] == pytest.approx(skm.cohen_kappa_score(ref[keep], pred[keep]), abs=1e-9)
    assert result.metrics["pixel"]["f1_forest"] == pytest.approx(skm.f1_score(ref[keep], pred[keep], average=None)[1], abs=1e-9)
    assert result.metrics["objects"] is None  # object scores are for binary change only
    assert result.class_names == ("water", "forest", "urban")


@needs("sklearn")
def test_zero_255_reference_reads_255_as_change(dsifn, tmp_path):
    p = write_geotiff(tmp_path / "pred.tif", dsifn["Unet"], transform=TRANSFORM, nodata=255)
    r = write_geotiff(tmp_path / "ref.tif", (dsifn["label"] * 255).astype(np.uint8), transform=TRANSFORM)
    result = evaluate(p, r, tmp_path / "out", **FAST)
    assert result.metrics["inputs"]["reference"]["coding"].startswith("0/255")
    assert result.metrics["pixel"]["f1"] == pytest.approx(skm.f1_score(dsifn["label"].ravel(), dsifn["Unet"].ravel()), abs=1e-9)


# --------------------------------------------------------------------------------------------
# polygon references and other grids
# --------------------------------------------------------------------------------------------


def _vectorise(mask: np.ndarray, transform: Affine) -> gpd.GeoDataFrame:
    geoms = [shapely.geometry.shape(g) for g, v in shapes(mask, mask=mask > 0, connectivity=4, transform=transform)]
    return gpd.GeoDataFrame({"kind": ["change"] * len(geoms)}, geometry=geoms, crs=LAMBERT93)


def test_polygon_reference_equals_the_raster_it_was_vectorised_from(dsifn, dsifn_tifs, tmp_path):
    polygons = _vectorise(dsifn["label"], TRANSFORM)
    polygons.to_file(tmp_path / "ref.gpkg", driver="GPKG")
    from_raster = evaluate(dsifn_tifs["SiamUnet_diff"], dsifn_tifs["label"], tmp_path / "a", **FAST)
    from_polygons = evaluate(dsifn_tifs["SiamUnet_diff"], tmp_path / "ref.gpkg", tmp_path / "b", **FAST)
    np.testing.assert_array_equal(from_polygons.confusion.counts, from_raster.confusion.counts)
    assert from_polygons.metrics["inputs"]["reference"]["rasterisation"] == "pixel centre"
    # one reference object per polygon, the same objects as the 4-connected components of the raster
    assert from_polygons.objects.n_reference == len(polygons) == from_raster.objects.n_reference
    assert from_polygons.objects.n_found == from_raster.objects.n_found


def test_reference_on_another_crs_gives_near_identical_scores(dsifn, dsifn_tifs, tmp_path):
    label = dsifn["label"]
    height, width = label.shape
    bounds = rasterio.transform.array_bounds(height, width, TRANSFORM)
    dst_transform, w, h = calculate_default_transform(LAMBERT93, "EPSG:4326", width, height, *bounds)
    warped = np.full((h, w), 255, dtype=np.uint8)
    reproject(label, warped, src_transform=TRANSFORM, src_crs=LAMBERT93, dst_transform=dst_transform, dst_crs="EPSG:4326",
              resampling=Resampling.nearest, dst_nodata=255)
    ref_4326 = write_geotiff(tmp_path / "ref_4326.tif", warped, crs="EPSG:4326", transform=dst_transform, nodata=255)
    same = evaluate(dsifn_tifs["BIT"], dsifn_tifs["label"], tmp_path / "a", **FAST)
    other = evaluate(dsifn_tifs["BIT"], ref_4326, tmp_path / "b", **FAST)
    assert other.metrics["inputs"]["reference"]["warped"] is True
    assert other.confusion.n_pixels > 0.97 * same.confusion.n_pixels  # only edge pixels fall outside
    for name in ("f1", "precision", "recall", "kappa"):
        assert other.metrics["pixel"][name] == pytest.approx(same.metrics["pixel"][name], abs=0.005), name


def test_non_overlapping_reference_names_both_files_and_writes_nothing(dsifn, dsifn_tifs, tmp_path):
    far = write_geotiff(tmp_path / "far_away.tif", dsifn["label"], transform=Affine(2.0, 0, 900000.0, 0, -2.0, 6900000.0))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="do not overlap") as err:
        evaluate(dsifn_tifs["BIT"], far, out, **FAST)
    message = str(err.value)
    assert "far_away.tif" in message and "BIT.tif" in message and "\n" not in message
    assert _nothing_written(out)


def test_polygons_elsewhere_do_not_overlap(dsifn_tifs, tmp_path):
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs=LAMBERT93).to_file(tmp_path / "far.gpkg")
    with pytest.raises(InputError, match="do not overlap"):
        evaluate(dsifn_tifs["BIT"], tmp_path / "far.gpkg", tmp_path / "out", **FAST)
    assert _nothing_written(tmp_path / "out")


def test_empty_polygon_file_is_an_input_error(dsifn_tifs, tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match="no polygon"):
        evaluate(dsifn_tifs["BIT"], empty, tmp_path / "out", **FAST)
    assert _nothing_written(tmp_path / "out")


def test_invalid_polygon_is_repaired_with_a_warning(dsifn_tifs, tmp_path):
    x0, y0 = 574000.0, 6280000.0
    bowtie = shapely.Polygon([(x0 + 20, y0 - 20), (x0 + 120, y0 - 120), (x0 + 120, y0 - 20), (x0 + 20, y0 - 120)])
    assert not bowtie.is_valid
    gpd.GeoDataFrame(geometry=[bowtie], crs=LAMBERT93).to_file(tmp_path / "bowtie.gpkg")
    with pytest.warns(UserWarning, match="repaired 1 invalid"):
        result = evaluate(dsifn_tifs["BIT"], tmp_path / "bowtie.gpkg", tmp_path / "out", **FAST)
    # the repaired bow-tie is two triangles (base 100 m, height 50 m): 2 * 2500 m² = 1250 pixels of 4 m²
    assert result.confusion.tp + result.confusion.fn == pytest.approx(1250, rel=0.05)
    assert (tmp_path / "out" / "metrics.json").exists()


def test_unknown_class_codes_are_listed(tmp_path):
    ref = np.zeros((64, 64), np.uint8)
    ref[10:20, 10:20] = 7
    ref[30:40, 30:40] = 9
    p = write_geotiff(tmp_path / "pred.tif", np.zeros((64, 64), np.uint8), transform=TRANSFORM)
    r = write_geotiff(tmp_path / "ref.tif", ref, transform=TRANSFORM)
    with pytest.raises(InputError, match=r"class codes 7, 9 .*declared classes \(0, 1, 2\)"):
        evaluate(p, r, tmp_path / "out", classes=[0, 1, 2], **FAST)
    assert _nothing_written(tmp_path / "out")


def test_binary_reference_with_other_values_is_refused(tmp_path):
    ref = np.zeros((64, 64), np.uint8)
    ref[:10] = 2
    p = write_geotiff(tmp_path / "pred.tif", np.zeros((64, 64), np.uint8), transform=TRANSFORM)
    r = write_geotiff(tmp_path / "ref.tif", ref, transform=TRANSFORM)
    with pytest.raises(InputError, match="holds values 0, 2"):
        evaluate(p, r, tmp_path / "out", **FAST)


def test_existing_output_is_refused_unless_overwrite(dsifn_tifs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputError, match="exists"):
        evaluate(dsifn_tifs["BIT"], dsifn_tifs["label"], out, **FAST)
    evaluate(dsifn_tifs["BIT"], dsifn_tifs["label"], out, overwrite=True, **FAST)
    assert (out / "metrics.json").exists()


# --------------------------------------------------------------------------------------------
# score curves
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(dsifn) -> tuple[np.ndarray, np.ndarray]:
    """A probability-like score correlated with the label: float32 [256, 2560]."""
    rng = np.random.default_rng(1)
    score = ndimage.gaussian_filter(dsifn["label"].astype(np.float32), 3) * 0.8 + rng.random(dsifn["label"].shape) * 0.3
    return score.astype(np.float32), dsifn["label"]


def test_pr_curve_at_the_mask_threshold_gives_the_mask_f1(scored, tmp_path):
    score, label = scored
    t = 0.45
    mask = (score >= t).astype(np.uint8)
    s = write_geotiff(tmp_path / "score.tif", score, transform=TRANSFORM)
    m = write_geotiff(tmp_path / "mask.tif", mask, transform=TRANSFORM, nodata=255)
    r = write_geotiff(tmp_path / "ref.tif", label, transform=TRANSFORM)
    result = evaluate(m, r, tmp_path / "out", score=s, threshold=t, block_size=32, read_size=64, n_boot=50)
    got = result.metrics["score"]
    assert got["mask_rule"] == "score >= threshold"
    assert got["f1_at_mask_threshold"] == pytest.approx(result.confusion.f1, abs=1e-12)
    assert got["recall_at_mask_threshold"] == pytest.approx(result.confusion.recall, abs=1e-12)
    assert got["best_f1"] >= result.confusion.f1
    for name in ("pr_curve.png", "f1_threshold.png", "confusion_matrix.png", "metrics.csv", "objects.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_deltacd_run_json_threshold_is_used_with_its_strict_rule(scored, tmp_path):
    """deltacd's mask is score > threshold; the curve must pass through it exactly."""
    score, label = scored
    t = float(np.float32(np.quantile(score, 0.7)))  # a threshold equal to some scores: > and >= differ
    run = tmp_path / "run"
    run.mkdir()
    write_geotiff(run / "change_score.tif", score, transform=TRANSFORM, nodata=np.nan)
    write_geotiff(run / "change_mask.tif", (score > t).astype(np.uint8), transform=TRANSFORM, nodata=255)
    (run / "run.json").write_text(json.dumps({"threshold": {"value": t, "rule": "test"}}))
    r = write_geotiff(tmp_path / "ref.tif", label, transform=TRANSFORM)
    result = evaluate(run / "change_mask.tif", r, tmp_path / "out", score=run / "change_score.tif", block_size=32, n_boot=50,
                      figures=False)
    got = result.metrics["score"]
    assert got["mask_threshold"] == t and got["mask_rule"] == "score > threshold"
    assert got["f1_at_mask_threshold"] == pytest.approx(result.confusion.f1, abs=1e-12)


def test_score_on_another_grid_is_refused(scored, dsifn_tifs, tmp_path):
    score, _ = scored
    s = write_geotiff(tmp_path / "score.tif", score[:, :1000], transform=TRANSFORM)
    with pytest.raises(InputError, match="different grids"):
        evaluate(dsifn_tifs["BIT"], dsifn_tifs["label"], tmp_path / "out", score=s, **FAST)


# --------------------------------------------------------------------------------------------
# strata and objects
# --------------------------------------------------------------------------------------------


def test_strata_matrices_add_up_and_match_a_direct_count(dsifn, dsifn_tifs, tmp_path):
    strata = np.ones(dsifn["label"].shape, np.uint8)
    strata[:, 1280:] = 2
    strata[:, :100] = 0  # nodata: counted overall, in no stratum
    st = write_geotiff(tmp_path / "strata.tif", strata, transform=TRANSFORM, nodata=0)
    result = evaluate(dsifn_tifs["DTCDSCN"], dsifn_tifs["label"], tmp_path / "out", strata=st, **FAST)
    assert sorted(result.strata) == [1, 2]
    for code in (1, 2):
        sel = strata == code
        direct = ConfusionMatrix.from_arrays(dsifn["DTCDSCN"][sel], dsifn["label"][sel])
        assert result.strata[code] == direct
        ci = result.metrics["strata"][str(code)]["ci"]["f1"]
        assert ci["low"] <= ci["estimate"] <= ci["high"]
    edge = ConfusionMatrix.from_arrays(dsifn["DTCDSCN"][strata == 0], dsifn["label"][strata == 0])
    np.testing.assert_array_equal(result.strata[1].counts + result.strata[2].counts + edge.counts, result.confusion.counts)
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["stratum"] for r in rows if r["level"] == "stratum"} == {"1", "2"}


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Reference: 3 squares; prediction: the first exactly, the second shifted (IoU 0.6), a false square."""
    ref = np.zeros((200, 300), np.uint8)
    pred = np.zeros_like(ref)
    ref[10:30, 10:30] = 1
    ref[100:140, 100:140] = 1
    ref[150:170, 250:270] = 1
    pred[10:30, 10:30] = 1
    pred[100:140, 110:150] = 1  # 40x30 overlap: IoU = 1200 / 2000 = 0.6
    pred[50:60, 200:210] = 1
    return pred, ref


def test_objects_known_answer_and_table(tmp_path):
    pred, ref = _squares()
    p = write_geotiff(tmp_path / "pred.tif", pred, transform=TRANSFORM)
    r = write_geotiff(tmp_path / "ref.tif", ref, transform=TRANSFORM)
    result = evaluate(p, r, tmp_path / "out", **FAST)
    o = result.objects
    assert (o.n_reference, o.n_predicted, o.n_found, o.n_matched) == (3, 3, 2, 2)
    with open(tmp_path / "out" / "objects.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    by_area = {int(r["area_px"]): r for r in rows}
    assert float(by_area[1600]["best_iou"]) == pytest.approx(0.6)
    assert by_area[1600]["found"] == "True" and by_area[400]["found"] in ("True", "False")
    assert float(by_area[1600]["area_m2"]) == pytest.approx(6400.0)
    # centre of the 40 x 40 square: columns/rows 100..139 -> centre at pixel 120
    assert float(by_area[1600]["x"]) == pytest.approx(574000 + 2 * 120)
    overlap = evaluate(p, r, tmp_path / "overlap", object_rule="overlap", overlap_threshold=0.9, **FAST)
    assert overlap.objects.n_found == 1  # the shifted square is only 75 % covered


def test_polygon_object_path_matches_the_whole_grid_path(dsifn, dsifn_tifs, tmp_path, monkeypatch):
    whole = evaluate(dsifn_tifs["ChangeFormerV6"], dsifn_tifs["label"], tmp_path / "a", **FAST)
    monkeypatch.setattr(evaluate_module, "LABEL_WHOLE_GRID_MAX_PIXELS", 0)
    polys = evaluate(dsifn_tifs["ChangeFormerV6"], dsifn_tifs["label"], tmp_path / "b", **FAST)
    assert polys.metrics["objects"]["method"].startswith("polygons")
    for key in ("n_reference", "n_predicted", "n_found", "n_matched"):
        assert polys.metrics["objects"][key] == whole.metrics["objects"][key], key
    areas_whole = np.sort(whole.objects.reference_objects["area_px"])
    areas_polys = np.sort(polys.objects.reference_objects["area_px"])
    np.testing.assert_array_equal(areas_polys, areas_whole)


def test_changes_gpkg_beside_the_mask_gives_the_predicted_objects(tmp_path):
    pred, ref = _squares()
    run = tmp_path / "run"
    run.mkdir()
    m = write_geotiff(run / "change_mask.tif", pred, transform=TRANSFORM, nodata=255)
    # changes.gpkg holds only the first square (as if the others were below the minimum mapping unit)
    gpd.GeoDataFrame(geometry=[shapely.box(574000 + 20, 6280000 - 60, 574000 + 60, 6280000 - 20)], crs=LAMBERT93).to_file(
        run / "changes.gpkg", layer="changes"
    )
    r = write_geotiff(tmp_path / "ref.tif", ref, transform=TRANSFORM)
    result = evaluate(m, r, tmp_path / "out", **FAST)
    assert (result.objects.n_predicted, result.objects.n_matched) == (1, 1)
    assert result.metrics["objects"]["predicted_objects_from"].endswith("changes.gpkg")


@needs("sklearn")
def test_cli_evaluate_reports_f1_with_its_interval(dsifn, dsifn_tifs, tmp_path, capsys):
    from deltacd.cli import main

    code = main(["-q", "evaluate", str(dsifn_tifs["BIT"]), str(dsifn_tifs["label"]), "-o", str(tmp_path / "ev"),
                 "--n-boot", "200", "--no-figures"])
    out = capsys.readouterr().out
    expected = _sk_scores(dsifn["BIT"], dsifn["label"])["f1"]
    assert code == 0 and f"F1 {expected:.3f} (95 % CI" in out
    assert (tmp_path / "ev" / "metrics.json").is_file() and (tmp_path / "ev" / "metrics.csv").is_file()
    assert main(["evaluate", str(dsifn_tifs["BIT"]), str(tmp_path / "missing.gpkg"), "-o", str(tmp_path / "ev2")]) == 1
    assert not (tmp_path / "ev2").exists()
