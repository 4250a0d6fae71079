"""Building damage: known answers on synthetic pairs, the real xBD / Ida-BD tiles end to end, bad inputs."""

from __future__ import annotations

import csv
import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from affine import Affine

from conftest import needs, textured_scene, write_geotiff
from deltacd.cli import main
from deltacd.damage import damage
from deltacd.evaluate.damage import evaluate_damage, match_buildings
from deltacd.outputs.grades import GRADE_LABELS, load_grade_table, map_grades
from deltacd.damage.xbd import write_xbd_tile
from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.postprocess.zonal import FeatureLabels, ZonalAccumulator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ORIGIN = (574000.0, 6280000.0)


def _box(col, row, w, h, res=0.5):
    x0, y0 = ORIGIN[0] + col * res, ORIGIN[1] - row * res
    return shapely.box(x0, y0 - h * res, x0 + w * res, y0)


@pytest.fixture
def rubble_pair(tmp_path):
    """A 4-band 12-bit pair with three buildings: one turned to rubble, one unchanged, one half over no data."""
    before = textured_scene((256, 256), 4, seed=7)
    after = before.copy()
    rng = np.random.default_rng(3)
    after[:, 40:80, 40:90] = rng.integers(200, 3500, size=(4, 40, 50))  # rubble: high-frequency noise
    after[:, 150:256, 200:256] = 0  # no data in the corner
    b = write_geotiff(tmp_path / "pre.tif", before, nodata=0)
    a = write_geotiff(tmp_path / "post.tif", after, nodata=0)
    buildings = gpd.GeoDataFrame(
        {"nom": ["rubble", "intact", "half"], "ref": [1, 2, 3]},
        geometry=[_box(40, 40, 50, 40), _box(150, 40, 40, 30), _box(180, 200, 60, 30)], crs="EPSG:2154")
    path = tmp_path / "bati.gpkg"
    buildings.to_file(path)
    return b, a, path


def test_a_building_turned_to_rubble_is_damaged_and_an_intact_one_is_not(rubble_pair, tmp_path):
    before, after, buildings = rubble_pair
    result = damage(before, after, tmp_path / "out", buildings=buildings, coregistration="off")
    table = gpd.read_file(result.buildings, layer="buildings").set_index("nom")
    assert table.loc["rubble", "damage_grade"] == 3 and table.loc["rubble", "damage_label"] == "destroyed"
    assert table.loc["intact", "damage_grade"] == 0
    assert table.loc["half", "damage_grade"] == -1 and 0.3 < table.loc["half", "valid_share"] < 0.7
    assert table.loc["rubble", "changed_share"] > 0.9 and table.loc["intact", "changed_share"] < 0.05
    assert list(table["ref"]) == [1, 2, 3]  # the input attributes are kept
    with rasterio.open(result.damage_raster) as src:
        raster = src.read(1)
        assert src.nodata == 255
    assert (raster[40:80, 40:90] == 3).all() and (raster[45:55, 155:185] == 0).all() and (raster[:30, :30] == 255).all()
    rows = list(csv.DictReader(open(result.summary)))
    assert {r["damage_label"]: int(r["buildings"]) for r in rows if r["zone"] == "all"} == {
        "no damage": 1, "minor": 0, "major": 0, "destroyed": 1, "unclassified": 1}
    record = json.loads((result.out_dir / "run.json").read_text())
    assert record["footprints"]["kept"] == 3 and record["method"]["name"] == "change"


def test_footprints_are_repaired_counted_and_summarised_per_zone(rubble_pair, tmp_path):
    before, after, _ = rubble_pair
    bowtie = shapely.Polygon([(574020, 6279980), (574045, 6279960), (574045, 6279980), (574020, 6279960)])  # self-crossing
    frame = gpd.GeoDataFrame({"id": ["a", "b", "c"]}, geometry=[bowtie, shapely.Polygon(), _box(150, 40, 40, 30)],
                             crs="EPSG:2154").to_crs("EPSG:4326")  # any CRS
    path = tmp_path / "osm.geojson"
    frame.to_file(path)
    zones = gpd.GeoDataFrame({"commune": ["Ouest", "Est"]},
                             geometry=[shapely.box(573900, 6279800, 574064, 6280100), shapely.box(574064, 6279800, 574300, 6280100)],
                             crs="EPSG:2154")
    zones.to_file(tmp_path / "communes.gpkg")
    result = damage(before, after, tmp_path / "out", buildings=path, id_field="id", coregistration="off",
                    zones=tmp_path / "communes.gpkg", zone_field="commune")
    counts = result.record["footprints"]
    assert counts["read"] == 3 and counts["repaired"] == 1 and counts["dropped_empty"] == 1 and counts["kept"] == 2
    rows = list(csv.DictReader(open(result.summary)))
    zones_seen = {r["zone"] for r in rows}
    assert {"all", "Ouest", "Est"} <= zones_seen
    table = gpd.read_file(result.buildings, layer="buildings")
    assert sorted(table["building_id"]) == ["a", "c"]


@pytest.mark.slow
def test_real_hurricane_tile_end_to_end_through_the_cli(data_dir, tmp_path, capsys):
    tile = write_xbd_tile(data_dir / "xbd-hurricanes-idabd_dahitra" / "IdaBD", "AOI1-tile_2-3", tmp_path / "tile")
    reference = gpd.read_file(tile.buildings)
    assert len(reference) == 48
    out = tmp_path / "out"
    assert main(["damage", str(tile.before), str(tile.after), "-o", str(out), "--buildings", str(tile.buildings), "-q",
                 "--zones", str(tile.buildings), "--zone-field", "subtype"]) == 0
    table = gpd.read_file(out / "buildings.gpkg", layer="buildings")
    assert len(table) == 48 and set(table["damage_grade"]) <= {-1, 0, 1, 2, 3}
    assert table["damage_grade"].dtype.kind == "i" and set(table["damage_label"]) <= set(GRADE_LABELS.values())
    assert {"grade", "subtype", "building_id", "change_score", "ring_changed_share", "valid_share"} <= set(table.columns)
    assert (out / "quicklook.png").stat().st_size > 20_000
    ev = tmp_path / "ev"
    assert main(["evaluate-damage", str(out), str(tile.buildings), "-o", str(ev), "--reference-field", "grade",
                 "--reference-masks", f"{tile.localisation},{tile.damage_mask}", "--n-boot", "50", "-q"]) == 0
    metrics = json.loads((ev / "damage_metrics.json").read_text())
    assert metrics["buildings"]["matched"] == 48
    assert metrics["xview2"]["localization_f1"] > 0.95  # the reference footprints were graded
    assert sum(map(sum, metrics["confusion"]["counts"])) == metrics["buildings"]["graded_on_both"]
    for name in ("agreement.gpkg", "agreement.tif", "agreement.png", "per_grade.csv", "confusion.csv", "confusion.png"):
        assert (ev / name).exists(), name


def test_a_reference_with_other_ids_and_shifted_footprints_still_joins(tmp_path):
    ours = gpd.GeoDataFrame({"building_id": ["0", "1", "2"]},
                            geometry=[_box(0, 0, 20, 20), _box(40, 0, 20, 20), _box(80, 0, 20, 20)], crs="EPSG:2154")
    theirs = gpd.GeoDataFrame({"gid": [907, 12, 5]},
                              geometry=[shapely.affinity.translate(g, 1.5, -1.0) for g in ours.geometry.values[::-1]], crs="EPSG:2154")
    match = match_buildings(ours, theirs, min_iou=0.25)
    assert match.tolist() == [2, 1, 0]
    ours_id = match_buildings(ours.assign(k=["a", "b", "c"]), theirs.assign(k=["c", "x", "a"]), min_iou=0.25, ours_id="k",
                              reference_id="k")
    assert ours_id.tolist() == [2, -1, 0]


def test_grade_tables_map_other_studies(tmp_path):
    assert map_grades([0, 1, 2, 3, 4, 5], "ems98", where="x").tolist() == [0, 1, 1, 2, 2, 3]
    assert map_grades(["No visible damage", "Possibly damaged", "Damaged", "Destroyed"], "copernicus", where="x").tolist() == [0, 1, 2, 3]
    assert map_grades(["un-classified", "destroyed", None], "xbd", where="x").tolist() == [-1, 3, -1]
    table = tmp_path / "table.yaml"
    table.write_text("faible: 1\nfort: 2\nruine: 3\nintact: 0\n")
    assert map_grades(["Fort", "ruine", "intact"], table, where="x").tolist() == [2, 3, 0]
    with pytest.raises(InputError, match="value\\(s\\) moyen not in the grade table"):
        map_grades(["moyen"], table, where="etude.gpkg field degat")
    with pytest.raises(InputError, match="maps to 7"):
        load_grade_table({"x": 7})


def test_zonal_statistics_are_exact_on_a_known_raster():
    grid = Grid("EPSG:2154", Affine(1, 0, 0, 0, -1, 100), 100, 100)
    polygons = gpd.GeoSeries([shapely.box(0, 90, 10, 100), shapely.box(50, 50, 60, 60)], crs="EPSG:2154")
    labels = FeatureLabels(polygons).read(grid, grid.full_window)
    assert (labels == 1).sum() == 100 and (labels == 2).sum() == 100
    score = np.zeros((100, 100), dtype=np.float32)
    score[0:10, 0:4] = 5.0  # 40 % of building 1 above the threshold
    score[0, 0] = np.nan  # one invalid pixel
    acc = ZonalAccumulator(2, low=0.0, high=10.0, threshold=1.0)
    for top in range(0, 100, 30):  # strip by strip
        acc.add(labels[top:top + 30], score[top:top + 30])
    stats = acc.result()
    assert stats.pixels.tolist() == [100, 100] and stats.valid.tolist() == [99, 100]
    assert stats.share_above[0] == pytest.approx(39 / 99) and stats.share_above[1] == 0
    assert stats.median[1] == pytest.approx(0.039, abs=0.04) and stats.p90[0] == pytest.approx(5.0, abs=0.08)


@pytest.mark.parametrize("case,named", [
    ("miss", "no footprint lies on the image pair"),
    ("empty", "holds no polygon"),
    ("no buildings", "--buildings"),
    ("change model", "a model trained for 'binary'"),
    ("bad shares", "share_thresholds"),
])
def test_bad_damage_inputs_are_one_line(rubble_pair, tmp_path, capsys, case, named):
    before, after, buildings = rubble_pair
    args = ["damage", str(before), str(after), "-o", str(tmp_path / "out"), "-q"]
    if case == "miss":
        far = gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:2154")
        far.to_file(tmp_path / "far.gpkg")
        args += ["--buildings", str(tmp_path / "far.gpkg")]
    elif case == "empty":
        gpd.GeoDataFrame(geometry=[shapely.Point(574010, 6279990)], crs="EPSG:2154").to_file(tmp_path / "points.gpkg")
        args += ["--buildings", str(tmp_path / "points.gpkg")]
    elif case == "change model":
        pytest.importorskip("torch")  # a model needs the `learn` extra
        from deltacd.models.checkpoint import ModelSpec, save_checkpoint
        from deltacd.models.registry import build_model

        save_checkpoint(tmp_path / "cd.safetensors", build_model("fc-siam-diff", in_channels=4),
                        ModelSpec("fc-siam-diff", {"in_channels": 4}, ("B", "G", "R", "N"), (0.0,) * 4, (1.0,) * 4))
        args += ["--buildings", str(buildings), "--method", "classifier", "--model", str(tmp_path / "cd.safetensors")]
    elif case == "bad shares":
        args += ["--buildings", str(buildings), "--share-thresholds", "0.5,0.2,0.9"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "out").exists()


def test_a_grade_field_that_does_not_exist_is_named(rubble_pair, tmp_path):
    before, after, buildings = rubble_pair
    result = damage(before, after, tmp_path / "out", buildings=buildings, coregistration="off")
    with pytest.raises(InputError, match="no grade field 'degat'"):
        evaluate_damage(result.out_dir, buildings, tmp_path / "ev", reference_field="degat")
    with pytest.raises(InputError, match="value\\(s\\) half, intact, rubble not in the grade table"):
        evaluate_damage(result.out_dir, buildings, tmp_path / "ev", reference_field="nom")
    assert not (tmp_path / "ev").exists()


@pytest.mark.slow
@needs("torch", "lightning")
def test_trained_methods_run_end_to_end_on_real_tiles(data_dir, tmp_path):
    from deltacd.damage.train import train_damage

    folder = data_dir / "xbd-hurricanes-idabd_dahitra" / "xbd" / "train"
    source = [{"kind": "xbd", "path": str(folder), "glob": "hurricane-harvey_0000000[01]", "event": "harvey"}]
    tile = write_xbd_tile(data_dir / "xbd-hurricanes-idabd_dahitra" / "IdaBD", "AOI1-tile_1-3", tmp_path / "ida")
    models = {}
    for task, extra in (("damage-classifier", {"batch_size": 8}), ("damage-segmentation", {"batch_size": 2, "crop_px": 128,
                                                                                          "crops_per_scene": 4}),
                        ("building-localisation", {"batch_size": 2, "crop_px": 128, "crops_per_scene": 4})):
        result = train_damage({"task": task, "sources": source, "out": str(tmp_path / task), "steps": 3, "eval_every": 3,
                               "num_threads": 1, **extra}, progress=False)
        record = json.loads((result.out_dir / "train_record.json").read_text())
        assert record["spec"]["gsd_m"] == 0.5 and record["data"]["events"] == ["harvey"]
        models[task] = result.checkpoint
    for method, model in (("classifier", models["damage-classifier"]), ("segmentation", models["damage-segmentation"])):
        out = damage(tile.before, tile.after, tmp_path / f"out_{method}", buildings=tile.buildings, model=str(model),
                     coregistration="off")
        table = gpd.read_file(out.buildings, layer="buildings")
        assert out.record["method"]["name"] == method and len(table) == 104
        probabilities = table[["p_no_damage", "p_minor", "p_major", "p_destroyed"]].to_numpy()
        graded = table["damage_grade"].to_numpy() >= 0
        assert np.allclose(probabilities[graded].sum(axis=1), 1.0, atol=1e-3)
        assert (np.argmax(probabilities[graded], axis=1) == table["damage_grade"].to_numpy()[graded]).mean() > 0.9
    with rasterio.open(tile.before) as src:  # a quarter of the tile keeps the untrained localiser's speckle small
        left, top = src.bounds.left, src.bounds.top
    gpd.GeoDataFrame(geometry=[shapely.box(left, top - 128, left + 128, top)], crs=src.crs).to_file(tmp_path / "aoi.gpkg")
    found = damage(tile.before, tile.after, tmp_path / "out_localised", localisation_model=str(models["building-localisation"]),
                   coregistration="off", aoi=tmp_path / "aoi.gpkg", min_building_m2=20)
    assert found.record["footprints"]["source"] == "localisation model"
    assert found.record["results"]["buildings"] == found.record["footprints"]["kept"] > 0
    with pytest.raises(InputError, match="trained for 'damage-classifier', not 'damage-segmentation'"):
        damage(tile.before, tile.after, tmp_path / "wrong", buildings=tile.buildings, method="segmentation",
               model=str(models["damage-classifier"]))
