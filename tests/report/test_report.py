"""The report handed over: its language, its opening, its tables' definitions, its sections, its maps, its pages."""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import launch_chromium, needs, textured_scene, write_geotiff
from deltacd.cli import main
from deltacd.errors import InputError
from deltacd.report.html import SECTIONS, _table, _warnings
from deltacd.report.words import EN, FR, MAP_FR, NNBSP, Words
from deltacd.study.config import load_study
from deltacd.study.run import run_study

FRENCH_HEADINGS = ("Résumé", "Question posée", "Données", "Méthode", "Lecture des résultats", "Cartes", "Précision")
ENGLISH_HEADINGS = ("Summary", "Question", "Data", "Method", "Reading of the results", "Maps", "Accuracy")
DESCRIPTION = "Quels changements entre les deux dates sur la parcelle d'essai ?"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A small detect + evaluate + report study (English by default), run once: its study file.

    The reference marks a block the images do not change and misses the one they do, so the F1 is near 0
    and the reading must say what that means."""
    root = tmp_path_factory.mktemp("report")
    before = textured_scene((256, 256), 4, 0)
    after = before.astype("float64")
    after[:, 40:100, 40:100] = 3900 - after[:, 40:100, 40:100] * 0.5
    write_geotiff(root / "before.tif", before)
    write_geotiff(root / "after.tif", np.clip(after, 0, 4095).astype(before.dtype))
    reference = np.zeros((256, 256), dtype=np.uint8)
    reference[150:220, 150:220] = 1
    reference[40:50, 40:100] = 1
    write_geotiff(root / "reference.tif", reference)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "Essai", "description": DESCRIPTION, "output": "out",
        "inputs": {"before": "before.tif", "after": "after.tif", "reference": "reference.tif",
                   "date_before": "2023-06-15", "date_after": "2025-06-20"},
        "steps": {"detect": {"min_area_m2": 0}, "evaluate": {"n_boot": 20, "block_size": 64}, "report": {"webmap": False}},
    }, allow_unicode=True))
    run_study(path)
    return path


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids |= {v for k, v in attrs if k == "id"}


def _sections(text: str) -> set[str]:
    parser = _Ids()
    parser.feed(text)
    return parser.ids & set(SECTIONS)


def _headings(text: str) -> list[str]:
    return [re.sub("<[^>]+>", "", h) for h in re.findall(r"<h[23]>(.*?)</h[23]>", text)]


def test_english_is_the_default_and_the_report_opens_with_the_question_and_a_reading(study):
    text = (study.parent / "out" / "report" / "report.html").read_text()
    headings = _headings(text)
    assert all(h in headings for h in ENGLISH_HEADINGS), headings
    assert '<html lang="en">' in text
    assert DESCRIPTION.replace("'", "&#x27;") in text  # the study's description is the question
    # the reading says what a low F1 and a low kappa mean, as caveats
    assert re.search(r'class="caveat">An F1 under 0.3 means that most detected changes are not confirmed', text)
    assert "not usable without a review" in text and "Kappa " in text
    assert "2023-06-15" in text and "EPSG:2154" in text


def test_the_french_report_contains_the_french_headings(study, tmp_path):
    assert main(["report", str(study.parent / "out"), "-o", str(tmp_path / "fr"), "--lang", "fr", "--no-webmap", "-q"]) == 0
    text = (tmp_path / "fr" / "report.html").read_text()
    headings = _headings(text)
    assert all(h in headings for h in FRENCH_HEADINGS), headings
    assert not any(h in headings for h in ("Summary", "Maps", "Accuracy"))
    assert '<html lang="fr">' in text
    assert "Un F1 inférieur à 0,3 signifie que la plupart des changements détectés ne sont pas confirmés" in text
    assert "précision utilisateur" in text and f"IC 95{NNBSP}%" in text and "Question posée" in text
    assert f"(IC 95{NNBSP}% de " in text and "\u00a0: " in text  # French spacing before : and %


def test_the_study_language_is_the_default_and_run_lang_overrides_it(study, tmp_path, capsys):
    values = yaml.safe_load(study.read_text())
    french = study.parent / "french.yaml"
    credit = "© CNES 2023, 2025, Distribution Airbus DS"
    french.write_text(yaml.safe_dump({**values, "language": "fr", "output": "out_fr", "credit": credit}, allow_unicode=True))
    assert load_study(french).language == "fr"
    assert main(["run", str(french), "-q"]) == 0
    text = (study.parent / "out_fr" / "report" / "report.html").read_text()
    assert "Lecture des résultats" in text and f"Images\u00a0: {credit}" in text  # the study's credit
    # deltacd report on that study folder writes French without being told; --lang en overrides
    assert main(["report", str(study.parent / "out_fr"), "-o", str(tmp_path / "again"), "--no-webmap", "-q"]) == 0
    assert "Lecture des résultats" in (tmp_path / "again" / "report.html").read_text()
    assert main(["run", str(french), "--lang", "en", "-q"]) == 0
    statuses = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith(("detect", "report"))]
    assert ["detect", "skipped"] in statuses and ["report", "ran"] in statuses  # only the report is rewritten
    assert "Reading of the results" in (study.parent / "out_fr" / "report" / "report.html").read_text()


def test_a_bad_language_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(InputError) as info:
        load_study({"name": "x", "output": str(tmp_path), "language": "de", "inputs": {}, "steps": {"report": {}}})
    message = str(info.value)
    assert "\n" not in message and "language" in message and "'en'" in message and "'fr'" in message
    with pytest.raises(InputError, match="'de' is not a report language; use one of en, fr"):
        Words("de")
    with pytest.raises(SystemExit):  # argparse names the allowed values
        main(["report", str(tmp_path), "--lang", "de"])


def test_only_the_sections_of_what_ran_and_no_placeholder(study):
    text = (study.parent / "out" / "report" / "report.html").read_text()
    sections = _sections(text)
    assert {"summary", "maps", "histogram", "accuracy", "details"} <= sections
    assert not sections & {"transitions", "agreement", "damage", "uncertainty"}
    assert "no compare step" not in text and "was not run" not in text and 'class="none">no ' not in text


def test_every_column_is_defined(study):
    text = (study.parent / "out" / "report" / "report.html").read_text()
    tables = text.count("<table><thead>")
    assert tables >= 2 and text.count('<dl class="defs"') == tables  # every plain table has its definitions
    for language in ("en", "fr"):
        words = Words(language)
        html = _table([{"zone": "all", "neither_ha": "12.5", "only_ours_ha": "1", "only_current_ha": "2", "both_ha": "3",
                        "ours_ha": "4", "current_ha": "5", "agreement_of_changes": "0.1"}], words)
        for column in ("neither_ha", "agreement_of_changes", "only_current_ha"):
            assert f"<code>{column}</code></dt><dd>" in html
        assert ("stable for both" if language == "en" else "stable pour les deux") in html


def test_numbers_follow_the_language():
    fr, en = Words("fr"), Words("en")
    assert fr.ha(12345.6) == f"12{NNBSP}346" and en.ha(12345.6) == "12,346"
    assert fr.ha(12.345) == "12,35" and en.ha(12.345) == "12.35"
    assert fr.number(0.0869) == "0,0869" and en.number(0.0869) == "0.0869"
    assert fr.percent(0.1447) == f"14,5{NNBSP}%" and fr.cell("1265") == f"1{NNBSP}265"
    assert set(EN) == set(FR)  # every sentence has its French, with the same blanks to fill
    assert all(set(re.findall(r"{(\w+)}", EN[k])) == set(re.findall(r"{(\w+)}", FR[k])) for k in EN)
    assert all(set(re.findall(r"{(\w+)}", k)) == set(re.findall(r"{(\w+)}", v)) for k, v in MAP_FR.items())


def test_library_deprecations_are_not_the_analysts_warnings():
    from deltacd.io.runlog import is_ours

    here = Path(__file__).resolve()
    package = Path(__import__("deltacd").__file__).parent / "io" / "rasters.py"
    deprecation = warnings.WarningMessage("Use `@` matmul instead of `*` mul operator", DeprecationWarning, str(package), 1)
    ours = warnings.WarningMessage("band B01: pseudo-invariant pixels correlate poorly", UserWarning, str(package), 1)
    assert not is_ours(deprecation) and is_ours(ours)
    assert not is_ours(warnings.WarningMessage("x", UserWarning, str(here), 1))  # not from deltacd's code
    records = {"detect": {"warnings": ["Use `@` matmul instead of `*` mul operator for matrix multiplication",
                                       "band B01: pseudo-invariant pixels correlate poorly"]}}
    assert _warnings(records, Words("en")) == ["detect: band B01: pseudo-invariant pixels correlate poorly"]


def test_maps_are_full_width_with_credit_coordinates_and_inset(study):
    from PIL import Image

    from deltacd.report.maps import credit_of, sensor_of

    figures = study.parent / "out" / "report" / "figures"
    width, height = Image.open(figures / "changes_map.png").size
    assert 1500 <= width <= 1700 and height <= width  # a 1 600 px map, no taller than wide: one A4 page
    record = {"inputs": {"before": {"files": ["/d/IMG_PHR1A_MS_202306151030_ORT_R1C1.TIF"]},
                         "after": {"files": ["/d/DIM_PHR1B_MS_202506201032_ORT.XML"]}}}
    assert sensor_of(record) == "Pléiades"
    assert credit_of(record, ("2023-06-15", "2025-06-20")) == "© CNES 2023, 2025, Distribution Airbus DS"
    assert credit_of({"inputs": {"before": {"files": ["a.tif"]}, "after": {"files": ["b.tif"]}}}) is None


def _image_objects_per_page(pdf: bytes) -> list[set[str]]:
    """The image XObjects each page of a Chromium (Skia) PDF draws: page -> its /Resources -> /XObject names' objects."""
    objects = dict(re.findall(rb"(?s)\n(\d+) 0 obj\s*(.*?)\bendobj", pdf))

    def resolve(text: bytes) -> bytes:
        ref = re.fullmatch(rb"\s*(\d+) 0 R\s*", text)
        return objects.get(ref.group(1), b"") if ref else text

    pages = []
    for body in objects.values():
        if not re.search(rb"/Type\s*/Page\b", body):
            continue
        resources = re.search(rb"/Resources\s*(\d+ 0 R|<<.*>>)", body, re.DOTALL)
        found = set()
        if resources:
            xobjects = re.search(rb"/XObject\s*(\d+ 0 R|<<[^>]*>>)", resolve(resources.group(1)), re.DOTALL)
            if xobjects:
                for ref in re.findall(rb"(\d+) 0 R", resolve(xobjects.group(1))):
                    if re.search(rb"/Subtype\s*/Image", objects.get(ref, b"")[:400]):
                        found.add(ref.decode())
        pages.append(found)
    return pages


@pytest.mark.slow
@needs("playwright")
def test_the_print_to_pdf_has_no_page_cut_through_a_figure(study, tmp_path):
    """Printed from Chromium on A4: more than one page, the French headings, every figure and table with
    break-inside: avoid and no taller than a page, and no image drawn on two pages (a figure cut by a page
    break is drawn, clipped, on both)."""
    from playwright.sync_api import sync_playwright

    assert main(["report", str(study.parent / "out"), "-o", str(tmp_path / "fr"), "--lang", "fr", "--no-webmap", "-q"]) == 0
    page_path = tmp_path / "fr" / "report.html"
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 703, "height": 1009})  # A4 less the @page margins, in CSS px
        page.goto(page_path.as_uri())
        page.emulate_media(media="print")
        boxes = page.evaluate("""() => [...document.querySelectorAll('figure, table')].map(e => ({
            tag: e.tagName, height: e.getBoundingClientRect().height, width: e.getBoundingClientRect().width,
            avoid: getComputedStyle(e).breakInside}))""")
        hidden = page.evaluate("() => getComputedStyle(document.querySelector('nav')).display")
        pdf = page.pdf(path=str(tmp_path / "report.pdf"), format="A4")
        browser.close()
    content_height = (297 - 14 - 16) / 25.4 * 96
    assert boxes and all(b["avoid"] == "avoid" for b in boxes), boxes
    figures = [b for b in boxes if b["tag"] == "FIGURE"]
    assert figures and all(b["height"] < content_height for b in figures), figures
    assert hidden == "none"
    pages = _image_objects_per_page(pdf)
    assert len(pages) > 1
    drawn = [ref for images in pages for ref in images]
    assert drawn and len(drawn) == len(set(drawn)), pages  # no image on two pages
    text = page_path.read_text()
    assert all(h in _headings(text) for h in FRENCH_HEADINGS)
