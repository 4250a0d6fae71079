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
import pytest
import shapely
import yaml
from affine import Affine

from conftest import needs, write_geotiff
from deltacd.cli import main
from deltacd.errors import InputError, MissingInputError
from deltacd.evaluate.reference import open_labels
from deltacd.io.grid import Grid
from deltacd.report.html import SECTIONS
from deltacd.study.config import load_study
from deltacd.study.examples import prepare_examples
from deltacd.study.fromto import Classes, attribute_transitions
from deltacd.study.run import run_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def _check_report(path: Path) -> str:
    text = path.read_text()
    checker = _Checker()
    checker.feed(text)
    assert checker.errors == [] and checker.stack == [], (checker.errors, checker.stack)
    assert {key for key, _ in SECTIONS} <= checker.ids
    assert "http://" not in text.replace("http://mrcc.com", "") and "https://" not in text  # opens offline
    return text


@pytest.mark.slow
def test_coastal_study_runs_end_to_end_and_resumes(example_data, capsys):
    study = example_data / "coast_landcover_oscd.yaml"
    assert main(["run", str(study), "-q"]) == 0
    out = example_data / "out" / "coast_landcover_oscd"
    record = json.loads((out / "study.json").read_text())
    assert [s["status"] for s in record["steps"]] == ["ran"] * 4
    text = _check_report(out / "report" / "report.html")
    assert "data:image/png;base64," in text and "north-west" in text
    fromto = gpd.read_file(out / "compare" / "changes_fromto.gpkg", layer="changes")
    assert {"from_class", "to_class", "from_share", "transition", "area_ha", "zone"} <= set(fromto.columns)
    assert set(fromto["from_class"]) <= {"water", "vegetation", "bare/built", "unknown"}
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
    _check_report(ign.out_dir / "report" / "report.html")
    damage = run_study(example_data / "hurricane_damage.yaml")
    metrics = json.loads((damage.out_dir / "evaluate-damage" / "damage_metrics.json").read_text())
    assert metrics["buildings"]["matched"] == 108
    text = _check_report(damage.out_dir / "report" / "report.html")
    assert "damaged-vs-undamaged F1" in text
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
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                                          "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
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
