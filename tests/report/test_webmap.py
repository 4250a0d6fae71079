"""The web map (deltacd.report.webmap) in a real browser, on the example studies with imagery (issue 26, point 6).

Each study runs once (module fixtures); its web map is opened in Chromium: the agreement layer is in the layer
control and toggles, a building's popup shows the reference grade with a readable label, the zones are drawn and
named, the swipe clips the after image, ``lang="fr"`` gives French labels. The palette test needs no data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from conftest import CHROMIUM, launch_chromium, needs, watched_page
from deltacd.errors import InputError
from deltacd.report.webmap import FIELDS, palette, write_webmap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_palette_gives_as_many_distinct_colours_as_asked():
    for n in (1, 8, 12, 30, 100):
        colours = palette(n)
        assert len(colours) == n and len(set(colours)) == n
        assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in palette(30)]
    closest = min(sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) ** 0.5 for i, p in enumerate(rgb) for q in rgb[i + 1:])
    assert closest > 20  # distinct to the eye, not only as strings


def test_every_field_has_an_english_and_a_french_label():
    for field, (en, fr, kind) in FIELDS.items():
        assert en and fr and kind in {"text", "int", "num1", "num2", "num3", "pct", "bool"}, field
    assert FIELDS["area_m2"][0] == "Area (m²)" and FIELDS["from_class"][0] == "Class before"


# --------------------------------------------------------------------------------------------
# the example studies, in Chromium
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def example_data(data_dir, tmp_path_factory) -> Path:
    """The example studies' prepared data, and their study files, in a temporary examples folder."""
    from deltacd.study.examples import prepare_examples

    root = tmp_path_factory.mktemp("webmap-examples")
    prepare_examples(data_dir, root / "data")
    for name in ("coast_landcover_oscd.yaml", "hurricane_damage.yaml"):
        (root / name).write_text((EXAMPLES / name).read_text().replace("../../shared/data", str(data_dir)))
    return root


def _study(example_data: Path, name: str) -> Path:
    from deltacd.study.run import run_study

    out = example_data / "out" / name
    run_study(example_data / f"{name}.yaml", out_dir=out)
    assert (out / "report" / "webmap" / "index.html").is_file()
    return out


@pytest.fixture(scope="module")
def coast(example_data) -> Path:
    return _study(example_data, "coast_landcover_oscd")


@pytest.fixture(scope="module")
def hurricane(example_data) -> Path:
    return _study(example_data, "hurricane_damage")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


def _open(browser, index: Path):
    """The page, loaded, with no error in its console and nothing asked from the network."""
    page, errors, requests = watched_page(browser, 1200, 850)
    page.goto(index.as_uri())
    page.wait_for_function("window.map && document.querySelector('.leaflet-control-layers')")
    page.wait_for_timeout(300)
    assert errors == []
    assert all(url.startswith(("file://", "data:")) for url in requests)
    return page


def _labels(page) -> list[str]:
    return [t.strip() for t in page.locator(".leaflet-control-layers-overlays label").all_inner_texts()]


def _toggle(page, label: str) -> None:
    page.locator(".leaflet-control-layers-overlays label", has_text=label).locator("input").click()
    page.wait_for_timeout(200)


def _paths(page) -> int:
    return page.locator(".leaflet-overlay-pane path").count()


def _data(index: Path) -> dict:
    text = (index.parent / "data.js").read_text(encoding="utf-8")
    return json.loads(text.removeprefix("window.DELTACD = ").rstrip().removesuffix(";"))


@pytest.mark.slow
@needs("playwright")
def test_the_land_cover_web_map_shows_both_methods_and_their_agreement(coast, browser, tmp_path):
    index = coast / "report" / "webmap" / "index.html"
    page = _open(browser, index)
    labels = _labels(page)
    for wanted in ("Land cover before", "Land cover after", "Changes: current method", "Changes: deltacd", "Agreement", "Zones"):
        assert any(t.startswith(wanted) for t in labels), (wanted, labels)
    agreement = next(t for t in labels if t.startswith("Agreement"))
    shown = _paths(page)
    _toggle(page, agreement)
    with_agreement = _paths(page)
    features = len(_data(index)["layers"][[layer["label"] for layer in _data(index)["layers"]].index(agreement)]["features"]["geometries"])
    assert with_agreement - shown == features > 0  # each polygon of the agreement layer drawn
    page.locator(".legend .section:not(.hidden)", has_text="only deltacd").wait_for()
    page.screenshot(path=str(tmp_path / "coast_agreement.png"))
    _toggle(page, agreement)
    assert _paths(page) == shown  # and gone again
    assert page.locator(".legend .section.hidden", has_text="only deltacd").count() == 1
    # the zones: outlines above the polygons, each named on the map
    assert page.locator(".leaflet-outlines-pane path").count() == 4
    assert sorted(page.locator(".zone-name").all_inner_texts()) == ["north-east", "north-west", "south-east", "south-west"]
    # every transition coloured: no feature of a change layer falls back to the grey of "other"
    for layer in _data(index)["layers"]:
        if layer["field"] == "transition":
            values = set(layer["features"]["columns"]["transition"])
            assert values <= set(layer["colours"]), layer["label"]
    # polygons exact, not simplified to triangles: each keeps its area (3-pixel polygons included)
    ours = next(layer for layer in _data(index)["layers"] if layer["name"] == "ours")
    drawn = gpd.GeoSeries([shapely.from_geojson(json.dumps(g)) for g in ours["features"]["geometries"]], crs=4326)
    written = gpd.read_file(coast / "compare" / "changes_fromto.gpkg", layer="changes")
    assert len(drawn) == len(written)
    ratio = drawn.to_crs(written.crs).area.to_numpy() / written.geometry.area.to_numpy()
    assert ratio.min() > 0.97 and ratio.max() < 1.03
    legend = page.locator(".legend").inner_text()
    assert "water -> bare/built" in legend and "vegetation -> vegetation" in legend
    # a change's popup: readable names with units
    page.locator(".leaflet-overlay-pane path").first.click(force=True)
    popup = page.locator(".leaflet-popup-content").inner_text()
    assert "Class before" in popup and "Class after" in popup and "Area (ha)" in popup
    page.close()


@pytest.mark.slow
@needs("playwright")
def test_the_damage_web_map_gives_the_reference_grade_of_each_building(hurricane, browser, tmp_path):
    index = hurricane / "report" / "webmap" / "index.html"
    page = _open(browser, index)
    labels = _labels(page)
    assert any("deltacd" in t and "buildings" in t for t in labels) and any("reference" in t for t in labels)
    assert _paths(page) == 108  # the buildings by our grade; the other layers start hidden
    page.locator(".leaflet-overlay-pane path").nth(10).click(force=True)
    popup = page.locator(".leaflet-popup-content")
    popup.wait_for()
    text = popup.inner_text()
    assert "Reference grade" in text and "Damage grade (deltacd)" in text and "Building id" in text
    assert re.search(r"Reference grade.*\t(no damage|minor|major|destroyed)", text)
    assert re.search(r"AOI1-tile_2-4-\d+", text)  # the building id
    page.screenshot(path=str(tmp_path / "hurricane_popup.png"))
    page.locator(".leaflet-popup-close-button").click()
    # the agreement of grades: a layer that toggles
    agreement = next(t for t in labels if t.startswith("Agreement of grades"))
    _toggle(page, agreement)
    assert _paths(page) == 216
    assert "same grade" in page.locator(".legend").inner_text()
    _toggle(page, agreement)
    assert _paths(page) == 108
    assert page.locator(".zone-name").count() == 4
    page.close()


@pytest.mark.slow
@needs("playwright")
def test_the_swipe_shows_before_on_the_left_and_after_on_the_right(hurricane, browser):
    page = _open(browser, hurricane / "report" / "webmap" / "index.html")
    clip = "map.getPane('after').style.clip"
    assert page.evaluate(clip) == ""
    page.locator("#swipe").check()
    assert page.evaluate(clip).startswith("rect(") and page.locator("#swipe-divider").is_visible()
    handle = page.locator(".swipe-handle").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(300, 400, steps=4)
    page.mouse.up()
    left = float(re.findall(r"([-\d.]+)px", page.evaluate(clip))[3])
    origin = page.evaluate("map.containerPointToLayerPoint([0, 0]).x")
    assert left - origin == pytest.approx(300, abs=2)  # the after image starts at the divider
    # the fade still works beside it
    page.locator("#fade").fill("30")
    assert float(page.evaluate("images.after.options.opacity")) == pytest.approx(0.3)
    page.locator("#swipe").uncheck()
    assert page.evaluate(clip) == "" and not page.locator("#swipe-divider").is_visible()
    page.close()


@pytest.mark.slow
@needs("playwright")
def test_the_web_map_in_french(hurricane, browser, tmp_path):
    from deltacd.report.html import find_parts

    index = write_webmap(find_parts(hurricane), tmp_path / "webmap", title="Dommages", lang="fr")
    page = _open(browser, index)
    assert page.evaluate("document.documentElement.lang") == "fr"
    assert any(t.startswith("Degré de dommage des bâtiments (deltacd)") for t in _labels(page))
    page.locator(".leaflet-overlay-pane path").nth(10).click(force=True)
    text = page.locator(".leaflet-popup-content").inner_text()
    assert "Degré de dommage de référence" in text and "Identifiant du bâtiment" in text
    assert re.search(r"\d,\d\s%", text)  # French numbers: a decimal comma
    assert page.locator("label", has_text="rideau").count() == 1
    page.close()
    with pytest.raises(InputError, match="lang"):
        write_webmap(find_parts(hurricane), tmp_path / "other", title="x", lang="de")
