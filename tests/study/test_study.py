"""Whole studies from one file: the example studies on real data, resume logic, from/to attribution, report, web map."""

from __future__ import annotations

import json
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import yaml
from affine import Affine
from rasterio.crs import CRS

from conftest import launch_chromium, needs, watched_page, write_geotiff
from deltacd.cli import main
from deltacd.errors import InputError, MissingInputError
from deltacd.evaluate.reference import open_labels
from deltacd.io.grid import Grid
from deltacd.report.html import SECTIONS
from deltacd.study.config import load_study
from deltacd.study.examples import prepare_examples
from deltacd.study.fromto import Classes, attribute_transitions
from deltacd.study.run import run_study

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def example_data(data_dir, tmp_path_factory) -> Path:
    """The example studies' prepared data, and their study files, in a temporary examples folder."""
    root = tmp_path_factory.mktemp("examples")
    prepare_examples(data_dir, root / "data")
    for name in ("coast_landcover_oscd.yaml", "ign_landcover.yaml", "hurricane_damage.yaml", "occitanie_coast_2025.yaml"):
        text = (EXAMPLES / name).read_text().replace("../../shared/data", str(data_dir))
        (root / name).write_text(text)
    return root


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "link", "input", "hr"}

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.errors = [], set(), []

    def handle_starttag(self, tag, attrs):
        self.ids |= {v for k, v in attrs if k == "id"}
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _check_report(path: Path, ran: set[str]) -> str:
    """A well-formed, offline report holding the sections of what ran (``ran``), and no other."""
    text = path.read_text()
    checker = _Checker()
    checker.feed(text)
    assert checker.errors == [] and checker.stack == [], (checker.errors, checker.stack)
    assert checker.ids & set(SECTIONS) == ran
    assert "http://" not in text.replace("http://mrcc.com", "") and "https://" not in text  # opens offline
    return text


@pytest.mark.slow
def test_coastal_study_runs_end_to_end_and_resumes(example_data, capsys):
    study = example_data / "coast_landcover_oscd.yaml"
    assert main(["run", str(study), "-q"]) == 0
    out = example_data / "out" / "coast_landcover_oscd"
    record = json.loads((out / "study.json").read_text())
    assert [s["status"] for s in record["steps"]] == ["ran"] * 4
    text = _check_report(out / "report" / "report.html", {"summary", "maps", "coregistration", "histogram", "transitions",
                                                          "agreement", "accuracy", "warnings", "details"})
    assert "data:image/png;base64," in text and "north-west" in text
    fromto = gpd.read_file(out / "compare" / "changes_fromto.gpkg", layer="changes")
    assert {"from_class", "to_class", "from_share", "transition", "area_ha", "zone"} <= set(fromto.columns)
    assert set(fromto["from_class"]) <= {"water", "vegetation", "bare/built", "unknown"}
    assert {"transition", "within class"} <= set(fromto["change_kind"])  # 896 bare/built -> bare/built: within a class
    assert not fromto.loc[fromto["change_kind"] == "within class", "counts_as_change"].any()
    pcc = gpd.read_file(out / "compare" / "post_classification_changes.gpkg", layer="changes")
    assert (pcc["area_ha"] >= 0.03 - 1e-9).all() and (pcc["from_class"] != pcc["to_class"]).all()  # min_area_m2: 300
    for shown in ("changes_compared.png", "landcover_maps.png", "deltacd&#x27;s changes by from/to class",
                  "changes within a class"):
        assert shown in text.replace("deltacd's", "deltacd&#x27;s"), shown
    assert (out / "detect" / "before.vrt").is_file() and (out / "detect" / "change_mask.qml").is_file()
    # a rerun skips every step; a changed input reruns its step and those after it
    result = run_study(study)
    assert [s.status for s in result.steps] == ["skipped (up to date)"] * 4
    reference = example_data / "data" / "oscd_bordeaux" / "reference.tif"
    os.utime(reference, (time.time(), time.time()))  # touched but equal: still up to date (content hashes)
    assert [s.status for s in run_study(study).steps] == ["skipped (up to date)"] * 4
    import rasterio

    with rasterio.open(reference, "r+") as dst:
        values = dst.read(1)
        values[:5, :5] = 1 - values[:5, :5]
        dst.write(values, 1)
    statuses = {s.name: s.status for s in run_study(study).steps}
    assert statuses == {"detect": "skipped (up to date)", "compare": "ran", "evaluate": "ran", "report": "ran"}


@pytest.mark.slow
def test_ign_and_hurricane_studies_run(example_data):
    ign = run_study(example_data / "ign_landcover.yaml")
    rows = (ign.out_dir / "compare" / "landcover_transitions.csv").read_text().splitlines()
    assert any(",feuillus,culture," in r or "culture -> " in r for r in rows[1:])
    zones = {r.split(",")[0] for r in rows[1:]}
    assert {"south tile", "middle tile", "north tile"} <= zones and "(outside the zones)" not in zones  # zones on the tiles
    assert gpd.read_file(ign.out_dir / "compare" / "post_classification_changes.gpkg", layer="changes")["zone"].isin(
        ["south tile", "middle tile", "north tile"]).all()
    _check_report(ign.out_dir / "report" / "report.html", {"summary", "maps", "transitions", "agreement", "details"})
    damage = run_study(example_data / "hurricane_damage.yaml")
    metrics = json.loads((damage.out_dir / "evaluate-damage" / "damage_metrics.json").read_text())
    assert metrics["buildings"]["matched"] == 108
    text = _check_report(damage.out_dir / "report" / "report.html", {"summary", "histogram", "damage", "warnings", "details"})
    assert "damaged-vs-undamaged F1" in text and "Confusion matrix of grades" in text and "damage_compared.png" in text
    agreement = gpd.read_file(damage.out_dir / "evaluate-damage" / "agreement.gpkg", layer="agreement")
    assert agreement["building_id"].notna().all() and (agreement["building_id"] == agreement["reference_id"]).all()
    assert {"north-east", "south-east", "south-west"} <= set(agreement["zone"])  # no building in the north-west forest
    assert (damage.out_dir / "report" / "webmap" / "index.html").is_file()


@pytest.mark.slow
def test_a_killed_study_resumes_at_the_step_it_was_in(tmp_path, scene_pair):
    before, after = scene_pair(change=(40, 40, 60, 60))
    study = tmp_path / "study.yaml"
    study.write_text(f"name: resume\noutput: out\ninputs: {{before: {before}, after: {after}}}\n"
                     "steps: {detect: {min-area: 0}, report: {webmap: false}}\n")
    first = run_study(study)
    assert [s.status for s in first.steps] == ["ran", "ran"]
    (tmp_path / "out" / "report.step.json").unlink()  # as if killed after detect, during report
    shutil.rmtree(tmp_path / "out" / "report")
    second = run_study(study)
    assert [(s.name, s.status) for s in second.steps] == [("detect", "skipped (up to date)"), ("report", "ran")]
    study.write_text(study.read_text().replace("min-area: 0", "min-area: 50"))  # an option changed
    third = run_study(study)
    assert [s.status for s in third.steps] == ["ran", "ran"] and "options" in third.steps[0].reason


def test_from_to_attribution_on_a_hand_made_case(tmp_path):
    grid = Grid("EPSG:2154", Affine(1, 0, 0, 0, -1, 100), 100, 100)
    lc1 = np.full((100, 100), 2, dtype=np.uint8)  # culture everywhere at date 1
    lc2 = lc1.copy()
    lc2[0:10, 0:10] = 1  # batiment in the north-west corner at date 2
    lc2[50:60, 50:60] = 3  # 70 % route, 30 % culture in the second polygon
    lc2[57:60, 50:60] = 2
    write_geotiff(tmp_path / "lc1.tif", lc1, crs="EPSG:2154", transform=grid.transform)
    write_geotiff(tmp_path / "lc2.tif", lc2, crs="EPSG:2154", transform=grid.transform)
    changes = gpd.GeoDataFrame({"area_m2": [100.0, 100.0]}, geometry=[shapely.box(0, 90, 10, 100), shapely.box(50, 40, 60, 50)],
                               crs="EPSG:2154")
    zones = gpd.GeoDataFrame({"commune": ["Ouest", "Est"]}, geometry=[shapely.box(0, 0, 30, 100), shapely.box(30, 0, 100, 100)],
                             crs="EPSG:2154")
    classes = Classes((1, 2, 3), ("batiment", "culture", "route"))
    before = open_labels(tmp_path / "lc1.tif", grid, what="lc1", grid_name="grid")
    after = open_labels(tmp_path / "lc2.tif", grid, what="lc2", grid_name="grid")
    out = attribute_transitions(changes, grid, before, after, classes, zones=zones, zone_field="commune", rows=7)
    assert list(out["transition"]) == ["culture -> batiment", "culture -> route"]
    assert out["to_share"].tolist() == [1.0, 0.7] and out["from_share"].tolist() == [1.0, 1.0]
    assert list(out["zone"]) == ["Ouest", "Est"] and out["area_ha"].tolist() == [0.01, 0.01]


def test_study_file_errors_name_the_key(tmp_path, example_data):
    base = "name: x\noutput: out\ninputs: {before: a.tif, after: b.tif}\n"
    cases = {
        "unknown key": (base + "steps: {detect: {}}\ncolour: red\n", InputError, "colour"),
        "unknown step": (base + "steps: {detekt: {}}\n", InputError, "detekt"),
        "compare without maps": (base.replace("a.tif", str(example_data / "data/ida/before.tif")).replace(
            "b.tif", str(example_data / "data/ida/after.tif")) + "steps: {detect: {}, compare: {}}\n", InputError, "landcover_before"),
        "missing input": (base + "steps: {detect: {}}\n", MissingInputError, "inputs.before"),
        "unknown option": (base.replace("a.tif", str(example_data / "data/ida/before.tif")).replace(
            "b.tif", str(example_data / "data/ida/after.tif")) + "steps: {detect: {colour: 1}}\n", InputError, "colour"),
        "zones without field": (base + "steps: {detect: {}}\n").replace("after: b.tif}", "after: b.tif, zones: z.gpkg}"),
    }
    cases["zones without field"] = (cases["zones without field"], InputError, "zone_field")
    for name, (text, error, named) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        with pytest.raises(error, match=named):
            run_study(path)
        assert not (tmp_path / "out").exists(), name


def test_the_templates_fail_with_file_not_found_until_pointed_at_data(example_data, capsys):
    assert main(["run", str(example_data / "occitanie_coast_2025.yaml"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file not found" in err and "inputs.before" in err
    assert main(["run", str(EXAMPLES / "fiona_guadeloupe_2022.yaml"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file not found" in err


def _study_files() -> list[Path]:
    return [p for p in sorted(EXAMPLES.glob("*.yaml")) if {"inputs", "steps"} <= set(yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("path", _study_files(), ids=lambda p: p.name)
def test_every_shipped_study_file_is_valid_but_for_its_data(path):
    """Step options spelt as the flags (buffer_m, or the earlier buffer) validate before any file is looked at."""
    try:
        load_study(path)
    except MissingInputError:
        pass  # the templates name the user's files; the examples need prepare-examples


def test_a_study_reports_every_problem_at_once(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("name: x\noutput: out\ninputs: {before: a.tif, after: b.tif, zones: z.gpkg}\n"
                     "steps: {detect: {colour: 1, min-area: 5}, damage: {buffer: 1, ring_m: 2}}\n")
    with pytest.raises(InputError) as info:
        run_study(study)
    message = str(info.value)
    assert "\n" not in message and "problems" in message
    for named in ("damage needs inputs.buildings", "zone_field", "inputs.before:", "a.tif: file not found",
                  "b.tif: file not found", "z.gpkg: file not found", "steps.detect", "colour"):
        assert named in message, named
    assert "buffer" not in message and "min-area" not in message  # earlier spellings are the same settings
    assert not (tmp_path / "out").exists()


def test_earlier_flag_spellings_are_stored_under_the_field_name(tmp_path):
    study = {"name": "x", "output": str(tmp_path / "out"), "inputs": {"before": str(tmp_path), "after": str(tmp_path)},
             "steps": {"detect": {"min-area": 5, "tile-size": 512}}}
    assert load_study(study).steps["detect"] == {"min_area_m2": 5, "tile_size": 512}
    with pytest.raises(InputError, match="min-area and min_area_m2 name the same setting"):
        load_study({**study, "steps": {"detect": {"min-area": 5, "min_area_m2": 6}}})


@pytest.mark.slow
@needs("playwright")
def test_the_web_map_works_in_a_real_browser(example_data, tmp_path):
    from playwright.sync_api import sync_playwright

    page_path = example_data / "out" / "hurricane_damage" / "report" / "webmap" / "index.html"
    if not page_path.is_file():
        run_study(example_data / "hurricane_damage.yaml")
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page, errors, requests = watched_page(browser, 1100, 800)
        page.goto(page_path.as_uri())
        page.wait_for_timeout(1500)
        assert errors == []
        assert all(url.startswith("file://") or url.startswith("data:") for url in requests)  # nothing from the network
        layers = page.locator(".leaflet-control-layers-overlays label").all_inner_texts()
        assert any("before" in t for t in layers) and any("buildings" in t for t in layers)
        assert page.locator(".leaflet-image-layer").count() == 2
        paths = page.locator(".leaflet-overlay-pane path")
        assert paths.count() == 108
        paths.nth(10).click(force=True)
        page.wait_for_timeout(300)
        assert "damage_label" in page.locator(".leaflet-popup-content").inner_text()
        shot = tmp_path / "webmap.png"
        page.screenshot(path=str(shot))
        browser.close()
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20  # imagery and polygons, not a blank page


# --------------------------------------------------------------------------------------------
# issue 26: every problem at once, from/to that means change, run -o, templates, same file twice
# --------------------------------------------------------------------------------------------

def _landcover_study(tmp_path: Path, *, detect: bool = True) -> dict:
    """A hand-made land-cover study on a 100 x 100 grid of 1 m pixels (culture everywhere at date 1).

    Date 2: batiment in the north-west corner (a transition), route on a block of the south-east.
    Ours (with ``detect``): the north-west corner (culture -> batiment), a block that stays culture
    (a change within a class) and a polygon off the land-cover maps' extent (unknown).
    """
    grid = Grid("EPSG:2154", Affine(1, 0, 0, 0, -1, 100), 100, 100)
    lc1 = np.full((100, 100), 2, dtype=np.uint8)
    lc2 = lc1.copy()
    lc2[0:10, 0:10] = 1
    lc2[60:80, 60:90] = 3
    lc2[95:, 95:] = 0  # no data at date 2 in the south-east corner
    write_geotiff(tmp_path / "lc1.tif", lc1, crs="EPSG:2154", transform=grid.transform, nodata=0)
    write_geotiff(tmp_path / "lc2.tif", lc2, crs="EPSG:2154", transform=grid.transform, nodata=0)
    zones = gpd.GeoDataFrame({"commune": ["Ouest", "Est"]}, geometry=[shapely.box(0, 0, 50, 100), shapely.box(50, 0, 100, 100)],
                             crs="EPSG:2154")
    zones.to_file(tmp_path / "zones.gpkg")
    study = {"name": "hand-made", "output": str(tmp_path / "out"),
             "inputs": {"landcover_before": str(tmp_path / "lc1.tif"), "landcover_after": str(tmp_path / "lc2.tif"),
                        "landcover_classes": {1: "batiment", 2: "culture", 3: "route"},
                        "zones": str(tmp_path / "zones.gpkg"), "zone_field": "commune"},
             "steps": {"compare": {"n_boot": 20}}}
    if detect:
        run = tmp_path / "detect"
        run.mkdir(exist_ok=True)
        mask = np.zeros((100, 100), dtype=np.uint8)
        mask[0:10, 0:10] = 1  # culture -> batiment
        mask[20:40, 20:30] = 1  # culture -> culture: within a class
        mask[96:100, 96:100] = 1  # no land cover at date 2
        write_geotiff(run / "change_mask.tif", mask, crs="EPSG:2154", transform=grid.transform, nodata=255)
        changes = gpd.GeoDataFrame({"area_m2": [100.0, 200.0, 16.0]},
                                   geometry=[shapely.box(0, 90, 10, 100), shapely.box(20, 60, 30, 80), shapely.box(96, 0, 100, 4)],
                                   crs="EPSG:2154")
        changes.to_file(run / "changes.gpkg", layer="changes")
    return study


def test_the_from_to_matrix_sums_to_the_changed_area_and_within_class_is_apart(tmp_path):
    from deltacd.report.html import fromto_matrix
    from deltacd.report.maps import read_csv
    from deltacd.study.compare import compare_with_current_method

    config = load_study(_landcover_study(tmp_path))
    summary = compare_with_current_method(config, tmp_path / "detect", tmp_path / "compare", n_boot=20)
    ours = gpd.read_file(tmp_path / "compare" / "changes_fromto.gpkg", layer="changes")
    assert list(ours["change_kind"]) == ["transition", "within class", "unknown"]
    assert list(ours["counts_as_change"]) == [True, False, False]
    kinds = summary["change_kinds"]
    assert kinds["transition"] == {"polygons": 1, "area_ha": 0.01} and kinds["within class"] == {"polygons": 1, "area_ha": 0.02}
    assert kinds["counted_as_change"]["area_ha"] == 0.01  # the change within a class is counted apart
    rows = read_csv(tmp_path / "compare" / "transitions.csv")
    sources, targets, matrix = fromto_matrix(rows)
    assert matrix.sum() == pytest.approx(sum(ours["area_m2"]) / 1e4)  # every change of ours, in ha
    assert matrix[sources.index("culture"), targets.index("culture")] == pytest.approx(0.02)  # the diagonal: within a class
    assert sources == ["culture"] and targets == ["batiment", "culture", "unknown"]  # no class after: unknown
    for zone in ("Ouest", "Est"):  # per zone too, and the zones add up
        assert fromto_matrix(rows, zone=zone)[2].sum() == pytest.approx(ours.loc[ours["zone"] == zone, "area_ha"].sum())
    # the current method's change map, as polygons with from/to, equal to its changed pixels
    pcc = gpd.read_file(tmp_path / "compare" / "post_classification_changes.gpkg", layer="changes")
    assert sorted(pcc["transition"]) == ["culture -> batiment", "culture -> route"]
    assert pcc["area_ha"].sum() == pytest.approx(0.01 + 0.06) and set(pcc["zone"]) == {"Ouest", "Est"}
    lc = read_csv(tmp_path / "compare" / "landcover_transitions.csv")
    changed = [r for r in lc if r["zone"] == "all" and r["changed"] == "True"]
    assert sum(float(r["area_ha"]) for r in changed) == pytest.approx(pcc["area_ha"].sum())
    _, _, lc_matrix = fromto_matrix(lc)
    assert lc_matrix.sum() == pytest.approx((100 * 100 - 25) / 1e4)  # every pixel with a class at both dates
    assert (tmp_path / "compare" / "landcover_overview.tif").is_file()


def test_which_changes_within_a_class_count_is_a_setting(tmp_path):
    from deltacd.study.compare import compare_with_current_method

    config = load_study(_landcover_study(tmp_path))
    for setting, counted in (("change", [True, True, False]), (["culture"], [True, True, False]), (["batiment"], [True, False, False])):
        compare_with_current_method(config, tmp_path / "detect", tmp_path / "compare", n_boot=20, within_class=setting)
        ours = gpd.read_file(tmp_path / "compare" / "changes_fromto.gpkg", layer="changes")
        assert list(ours["counts_as_change"]) == counted, setting
    with pytest.raises(InputError, match="within_class: foret not among the classes"):
        compare_with_current_method(config, tmp_path / "detect", tmp_path / "compare", within_class=["foret"])
    study = _landcover_study(tmp_path)
    study["steps"]["compare"]["within_class"] = "sometimes"
    with pytest.raises(InputError, match="within_class"):
        load_study(study)


def test_the_current_method_polygons_do_not_depend_on_the_blocks(tmp_path):
    from deltacd.study.fromto import transition_polygons

    rng = np.random.default_rng(0)
    grid = Grid(CRS.from_epsg(2154), Affine(1, 0, 0, 0, -1, 90), 90, 90)
    lc1 = rng.integers(1, 4, size=(9, 9)).repeat(10, axis=0).repeat(10, axis=1).astype(np.uint8)
    lc2 = np.where(rng.random((90, 90)) < 0.3, rng.integers(1, 4, size=(90, 90)), lc1).astype(np.uint8)
    write_geotiff(tmp_path / "a.tif", lc1, crs="EPSG:2154", transform=grid.transform)
    write_geotiff(tmp_path / "b.tif", lc2, crs="EPSG:2154", transform=grid.transform)
    classes = Classes((1, 2, 3), ("a", "b", "c"))
    frames = []
    for block in (90, 16, 7):
        before = open_labels(tmp_path / "a.tif", grid, what="a", grid_name="g")
        after = open_labels(tmp_path / "b.tif", grid, what="b", grid_name="g")
        frames.append(transition_polygons(grid, before, after, classes, block_size=block))
    assert frames[0]["area_ha"].sum() == pytest.approx(((lc1 != lc2).sum()) / 1e4)
    for other in frames[1:]:
        assert len(other) == len(frames[0])
        key = ["transition", "area_ha"]
        assert sorted(map(tuple, other[key].to_numpy().tolist())) == sorted(map(tuple, frames[0][key].to_numpy().tolist()))


def test_a_wrong_key_two_missing_files_and_a_bad_grade_are_reported_at_once(tmp_path):
    reference = gpd.GeoDataFrame({"ID": ["a", "b", "c"], "degat": ["Damaged", "Severely damaged", "destroyed"]},
                                 geometry=[shapely.box(i * 20, 0, i * 20 + 10, 10) for i in range(3)], crs="EPSG:2154")
    reference.to_file(tmp_path / "degats.gpkg")
    study = tmp_path / "study.yaml"
    study.write_text("name: x\noutput: out\ncolour: red\n"
                     "inputs: {before: a.tif, after: b.tif, buildings: degats.gpkg, building_id_field: ID,\n"
                     "         damage_reference: degats.gpkg, damage_reference_field: degat, damage_grade_table: copernicus}\n"
                     "steps: {damage: {buffer_m: 1}, evaluate-damage: {}}\n")
    with pytest.raises(InputError) as info:
        run_study(study)
    message = str(info.value)
    assert "\n" not in message and "4 problems" in message, message
    for named in ("unknown key(s) colour", "a.tif: file not found", "b.tif: file not found", "'Severely damaged'",
                  "copernicus (accepted: damaged, destroyed, no visible damage"):
        assert named in message, named
    assert "'Damaged'" not in message and "'destroyed'" not in message  # any case
    assert not (tmp_path / "out").exists()  # before any step


def test_fields_and_land_cover_codes_are_checked_before_any_step(tmp_path):
    study = _landcover_study(tmp_path, detect=False)
    study["inputs"]["zone_field"] = "nom"
    study["inputs"]["landcover_classes"] = {1: "batiment", 2: "culture"}
    with pytest.raises(InputError) as info:
        load_study(study)
    message = str(info.value)
    assert "2 problems" in message and "'nom' is not a field of" in message and "(fields: commune)" in message
    assert "codes 3 of lc2.tif are not in inputs.landcover_classes" in message


def test_run_writes_where_o_says_and_the_land_cover_maps_alone_give_their_change_polygons(tmp_path, capsys):
    study = _landcover_study(tmp_path, detect=False)
    study["inputs"] = {k: Path(v).name if isinstance(v, str) and v.startswith(str(tmp_path)) else v
                       for k, v in study["inputs"].items()}
    study["output"] = "never_written"
    study["steps"]["report"] = {}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    out = tmp_path / "elsewhere" / "study"
    assert main(["run", str(path), "-o", str(out), "-q"]) == 0
    assert str(out) in capsys.readouterr().out
    assert not (tmp_path / "never_written").exists()
    assert json.loads((out / "study.json").read_text())["config"]["output"] == str(out.resolve())
    pcc = gpd.read_file(out / "compare" / "post_classification_changes.gpkg", layer="changes")
    assert {"from_class", "to_class", "transition", "area_ha", "zone"} <= set(pcc.columns) and len(pcc) == 2
    text = _check_report(out / "report" / "report.html", {"summary", "maps", "transitions", "agreement", "details"})
    assert "the land-cover maps&#x27; from/to matrix" in text.lower() or "the land-cover maps' from/to matrix" in text.lower()
    assert "landcover_maps.png" in text and "changes_compared.png" in text
    assert [s.status for s in run_study(path, out_dir=out).steps] == ["skipped (up to date)"] * 2


def test_templates_are_installed_with_the_package(tmp_path, capsys):
    import argparse

    from deltacd.cli import template as verb
    from deltacd.errors import OutputError
    from deltacd.study.template import TEMPLATES, template_text, write_template

    for name, (file, _) in TEMPLATES.items():
        assert template_text(name) == (EXAMPLES / file).read_text(), f"examples/{file} differs from the packaged template"
        path = write_template(name, tmp_path / name)
        with pytest.raises(MissingInputError) as info:
            load_study(path)  # valid but for the user's files, every one of them named
        assert "inputs.before" in str(info.value) and "inputs.after" in str(info.value)
        with pytest.raises(OutputError, match="--overwrite"):
            write_template(name, tmp_path / name)
    with pytest.raises(InputError, match="available: occitanie, fiona"):
        write_template("mayotte", tmp_path)
    parser = argparse.ArgumentParser()
    verb.add_arguments(parser)
    assert verb.run(parser.parse_args(["fiona", str(tmp_path / "cli")])) == 0
    assert "deltacd run" in capsys.readouterr().out and (tmp_path / "cli" / "fiona_guadeloupe_2022.yaml").is_file()
    assert set(verb.NAMES) == set(TEMPLATES)


def test_the_same_file_for_both_dates_is_warned_about(tmp_path, caplog):
    from deltacd.io.rasters import same_file, warn_if_same_file
    from deltacd.study.run import same_dates_warning

    image = write_geotiff(tmp_path / "a.tif", np.zeros((4, 4), dtype=np.uint8))
    os.link(image, tmp_path / "b.tif")
    write_geotiff(tmp_path / "c.tif", np.zeros((4, 4), dtype=np.uint8))
    assert same_file(image, tmp_path / "." / "a.tif") and same_file(image, tmp_path / "b.tif")
    assert same_file([image, tmp_path / "c.tif"], [tmp_path / "c.tif", image])
    assert not same_file(image, tmp_path / "c.tif")
    with caplog.at_level("WARNING", logger="deltacd"):
        assert warn_if_same_file(str(image), str(image)) and not warn_if_same_file(image, tmp_path / "c.tif")
    assert sum("same file" in r.getMessage() for r in caplog.records) == 1
    config = load_study({"name": "x", "output": str(tmp_path / "out"), "inputs": {"before": str(image), "after": str(image)},
                         "steps": {"detect": {}}})
    assert "same file" in same_dates_warning(config)[0]


def test_the_damage_agreement_carries_the_building_ids_and_the_zones(tmp_path):
    from deltacd.evaluate.damage import evaluate_damage
    from deltacd.report.maps import read_csv

    run = tmp_path / "damage"
    run.mkdir()
    boxes = [shapely.box(574000 + i * 20, 6279900, 574010 + i * 20, 6279910) for i in range(4)]
    ours = gpd.GeoDataFrame({"ID": ["BATI1", "BATI2", "BATI3", "BATI4"], "building_id": ["BATI1", "BATI2", "BATI3", "BATI4"],
                             "damage_grade": [0, 2, 3, 1]}, geometry=boxes, crs="EPSG:2154")
    ours.to_file(run / "buildings.gpkg", layer="buildings")
    reference = gpd.GeoDataFrame({"num": [11, 12, 13, 14], "degat": ["Not affected", "Damaged", "Possibly damaged", "Destroyed"]},
                                 geometry=boxes[:3] + [shapely.box(574200, 6279900, 574210, 6279910)], crs="EPSG:2154")
    reference.to_file(tmp_path / "reference.gpkg")
    zones = gpd.GeoDataFrame({"nom": ["Basse-Terre", "Pointe-à-Pitre"]},
                             geometry=[shapely.box(573900, 6279800, 574035, 6280000), shapely.box(574035, 6279800, 574300, 6280000)],
                             crs="EPSG:2154")
    zones.to_file(tmp_path / "zones.gpkg")
    result = evaluate_damage(run, tmp_path / "reference.gpkg", tmp_path / "ev", reference_field="degat", grade_table="copernicus",
                             reference_id_field="num", zones=tmp_path / "zones.gpkg", zone_field="nom", n_boot=20)
    layer = gpd.read_file(result.out_dir / "agreement.gpkg", layer="agreement")
    by_reference = layer.set_index("reference_id", drop=False)
    assert by_reference.loc["11", "building_id"] == "BATI1" and by_reference.loc["13", "our_label"] == "destroyed"
    assert pd.isna(by_reference.loc["14", "building_id"]) and by_reference.loc["14", "agreement_label"] == "only reference"
    assert layer.loc[layer["source"] == "ours", "building_id"].tolist() == ["BATI4"]
    assert dict(zip(layer["building_id"].fillna("-"), layer["zone"], strict=True)) == {
        "BATI1": "Basse-Terre", "BATI2": "Basse-Terre", "BATI3": "Pointe-à-Pitre", "-": "Pointe-à-Pitre",
        "BATI4": "Pointe-à-Pitre"}
    rows = {(r["zone"], r["grade"]): r for r in read_csv(result.out_dir / "per_zone.csv")}
    assert rows[("all", "destroyed")]["our_buildings"] == "1" and rows[("all", "destroyed")]["reference_buildings"] == "1"
    assert rows[("Basse-Terre", "major")] == {"zone": "Basse-Terre", "grade": "major", "reference_buildings": "1",
                                              "our_buildings": "1", "same_grade": "1"}


@pytest.mark.slow  # a whole study, twice
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_study_stopped_by_a_full_disk_resumes_from_its_last_complete_step(example_data, tmp_path):
    import subprocess
    import sys

    disk = tmp_path / "disk"
    disk.mkdir()
    # 12 MB: detect, compare and evaluate fit (about 7 MB), the report (about 14 MB) does not
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs was refused here")
    try:
        command = [sys.executable, "-m", "deltacd", "run", str(example_data / "coast_landcover_oscd.yaml"),
                   "-o", str(disk / "study"), "-q"]
        first = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert first.returncode == 1 and first.stderr.strip().count("\n") == 0, first.stderr
        assert "no space left on" in first.stderr and "Traceback" not in first.stderr
        assert not (disk / "study" / "report").exists() and not list((disk / "study").glob(".*partial"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        second = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr
        steps = {s["name"]: s["status"] for s in json.loads((disk / "study" / "study.json").read_text())["steps"]}
        assert steps == {"detect": "skipped (up to date)", "compare": "skipped (up to date)",
                         "evaluate": "skipped (up to date)", "report": "ran"}
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
