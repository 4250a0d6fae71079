"""The analyst review loop: objects, features, the review store, suggestions and refine."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from PIL import Image
from rasterio.enums import ColorInterp

import deltacd
from conftest import textured_scene, write_geotiff
from deltacd.errors import InputError, MissingInputError
from deltacd.review.features import object_table
from deltacd.review.objects import ReviewRun
from deltacd.review.refine import refine, suggest, write_suggestions
from deltacd.review.store import Answer, ReviewStore

pytest.importorskip("sklearn")

ROOFS = [(40, 40), (40, 180), (170, 60), (180, 190)]  # (row, col) of 36 x 36 px planted roofs
SHADOWS = [(110, 30), (110, 120), (110, 200), (40, 110), (200, 120)]  # 30 x 30 px patches darkened in date 2
SIDE_ROOF, SIDE_SHADOW = 36, 30


@pytest.fixture(scope="module")
def roof_run(tmp_path_factory) -> Path:
    """A 256 px pair where date 2 has four new roofs (a flat bright material) and five shadows (the same ground,
    darker): CVA flags both; the answer is the roofs."""
    folder = tmp_path_factory.mktemp("roofs")
    rng = np.random.default_rng(3)
    before = textured_scene((256, 256), 4, seed=5).astype(np.float64)
    after = before.copy()
    for r, c in ROOFS:
        after[:, r:r + SIDE_ROOF, c:c + SIDE_ROOF] = np.array([2600, 2700, 2800, 2500])[:, None, None]
    for r, c in SHADOWS:
        after[:, r:r + SIDE_SHADOW, c:c + SIDE_SHADOW] *= 0.45
    before += rng.normal(0, 25, before.shape)
    after += rng.normal(0, 25, after.shape)
    b = write_geotiff(folder / "before.tif", np.clip(before, 0, 4095).astype("uint16"))
    a = write_geotiff(folder / "after.tif", np.clip(after, 0, 4095).astype("uint16"))
    deltacd.detect(b, a, folder / "run", bands_before="B,G,R,N", bands_after="B,G,R,N")
    return folder / "run"


def _points(run: Path, where: list[tuple[int, int]], labels: list[int], path: Path, crs: str = "EPSG:4326") -> Path:
    """A label file of points at pixel (row, col) of the run's grid, in ``crs``."""
    with rasterio.open(run / "change_mask.tif") as src:
        xy = [src.xy(r, c) for r, c in where]
        src_crs = src.crs
    frame = gpd.GeoDataFrame({"label": labels}, geometry=[shapely.Point(x, y) for x, y in xy], crs=src_crs).to_crs(crs)
    frame.to_file(path, layer="labels")
    return path


def _share_flagged(mask: np.ndarray, boxes, side: int) -> float:
    return float(np.mean([mask[r:r + side, c:c + side].mean() for r, c in boxes]))


def test_the_classifier_separates_a_planted_roof_from_shadows_after_a_few_labels(roof_run, tmp_path):
    with rasterio.open(roof_run / "change_mask.tif") as src:
        cva = src.read(1) == 1
    assert _share_flagged(cva, SHADOWS, SIDE_SHADOW) > 0.5  # CVA takes the shadows for changes
    # the analyst answers one roof and two shadows (points in WGS84), and one unchanged spot
    labels = _points(roof_run, [(58, 58), (125, 45), (125, 135), (10, 10)], [1, 0, 0, 0], tmp_path / "labels.gpkg")
    result = refine(roof_run, [labels], tmp_path / "refined", reviewer="test")
    with rasterio.open(tmp_path / "refined" / "change_mask.tif") as src:
        refined = src.read(1) == 1
    others_roofs, other_shadows = ROOFS[1:], SHADOWS[2:]
    assert _share_flagged(refined, others_roofs, SIDE_ROOF) > 0.8
    assert _share_flagged(refined, other_shadows, SIDE_SHADOW) < 0.1
    review = result.record["review"]
    assert review["objects_reviewed"] == 4 and review["per_class"] == {"0": 3, "1": 1}
    assert review["feature_importances"] and review["cross_validated"]["accuracy"] is None  # one change answer: no CV
    changes = gpd.read_file(tmp_path / "refined" / "changes.gpkg", layer="changes")
    assert len(changes) >= 3 and changes["probability"].between(0.5, 1.0).all()
    assert {"change_mask.qml", "change_score.qml", "quicklook.png", "run.json", "before.vrt"} <= {
        p.name for p in (tmp_path / "refined").iterdir()}
    # the answers are in the run's store, with the reviewer and the objects' outlines
    history = gpd.read_file(roof_run / "review.gpkg", layer="answers")
    assert len(history) == 4 and set(history["reviewer"]) == {"test"}
    assert history.geometry.geom_type.eq("MultiPolygon").all() and history.crs == "EPSG:2154"


def test_suggestions_are_a_styled_gpkg_with_an_empty_label(roof_run, tmp_path):
    out = write_suggestions(roof_run, 6, tmp_path / "next.gpkg")
    frame = gpd.read_file(out, layer="suggestions")
    assert len(frame) == 6 and frame["object_id"].is_unique and frame["label"].isna().all()
    info = pyogrio.read_info(out, layer="suggestions")
    assert dict(zip(info["fields"], info["ogr_types"], strict=True))["label"] == "OFTInteger"
    with sqlite3.connect(out) as db:
        style = db.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = 'suggestions'").fetchone()[0]
    assert 'editWidget type="ValueMap"' in style and 'value="1"' in style and 'value="0"' in style
    # filled in, the same file is a label file
    frame["label"] = [1, 0, 0, 0, 0, 0]
    frame.to_file(tmp_path / "filled.gpkg", layer="suggestions")
    assert suggest(roof_run, 3)["object_id"].is_unique


def test_suggestions_never_replace_the_run_s_files_or_a_user_s_style(roof_run, tmp_path):
    from deltacd.errors import OutputError

    with pytest.raises(OutputError, match="inside the run folder"):  # the review store holds the analyst's answers
        write_suggestions(roof_run, 3, roof_run / "review.gpkg", overwrite=True)
    mine = tmp_path / "next.qml"
    mine.write_text("the user's style")
    with pytest.raises(OutputError, match=r"next\.qml: exists"):
        write_suggestions(roof_run, 3, tmp_path / "next.gpkg")
    assert mine.read_text() == "the user's style" and not (tmp_path / "next.gpkg").exists()


def test_a_review_session_answers_and_suggests_click_by_click(roof_run, tmp_path):
    from deltacd.review.session import ReviewSession

    run = tmp_path / "run"
    _copy_run(roof_run, run)
    session = ReviewSession(run, reviewer="web")
    assert session.model is None and session.counts()["reviewed"] == 0
    first = session.next(2)
    assert len(first) == 2 and first.geometry.geom_type.eq("MultiPolygon").all()
    roof = session.object_at(*ReviewRun(run).grid.transform * (60, 60))
    shadow = session.object_at(*ReviewRun(run).grid.transform * (45, 125))
    session.answer(roof, 1)
    session.answer(shadow, 0)
    assert session.model is not None and session.counts()["reviewed"] == 2
    p = session.change_probability()
    assert p.shape == (len(session.table),) and p[session.table.rows([roof])[0]] == 1.0
    assert ReviewStore(run, "EPSG:2154").latest() == {roof: 1, shadow: 0}
    assert not set(session.next(3)["object_id"]) & {roof, shadow}
    with pytest.raises(InputError, match="not an object"):
        session.answer(-5, 1)


def test_the_store_keeps_every_answer_and_the_latest_wins(tmp_path):
    store = ReviewStore(tmp_path, "EPSG:2154")
    square = shapely.box(0, 0, 1, 1)
    store.add([Answer(7, 1, square, "a"), Answer(8, 0, square, "a")])
    store.add([Answer(7, 0, square, "b")])
    assert store.latest() == {7: 0, 8: 0}
    history = gpd.read_file(store.path, layer="answers")
    assert list(history["answer"]) == [1, 0, 0] and list(history["reviewer"]) == ["a", "a", "b"]
    with pytest.raises(InputError, match="answer 2"):
        store.add([Answer(9, 2, square)])
    assert len(gpd.read_file(store.path, layer="answers")) == 3


def _writer(folder: Path, start: int, count: int) -> subprocess.Popen:
    """A process adding ``count`` answers to the store of ``folder``, one transaction each."""
    code = ("import shapely; from deltacd.review.store import Answer, ReviewStore\n"
            f"store = ReviewStore({str(folder)!r}, 'EPSG:2154')\n"
            f"for i in range({start}, {start + count}):\n"
            f"    store.add([Answer(i, i % 2, shapely.box(i, 0, i + 1, 1), 'w{start}')])\n")
    return subprocess.Popen([sys.executable, "-c", code])


def test_two_writers_and_a_killed_one_leave_a_valid_store(tmp_path):
    writers = [_writer(tmp_path, s, 40) for s in (0, 1000)]
    assert [w.wait(60) for w in writers] == [0, 0]
    store = ReviewStore(tmp_path, "EPSG:2154")
    assert len(store.latest()) == 80
    child = _writer(tmp_path, 5000, 100000)  # killed with SIGKILL in the middle of its answers
    deadline = time.time() + 30
    while len(store.latest()) < 120 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    frame = gpd.read_file(store.path, layer="answers")
    assert len(frame) >= 120 and frame["object_id"].is_unique
    assert store.latest()[0] == 0 and store.latest()[1001] == 1


@pytest.mark.parametrize(("case", "message"), [
    ("outside", "fall outside the run's scene"),
    ("no_crs", "has no CRS"),
    ("bad_value", r"outside \{0, 1\}"),
    ("one_class", "review at least one change and one no-change object"),
    ("no_field", "no field 'label'"),
])
def test_bad_labels_are_one_line_and_leave_the_store_untouched(roof_run, tmp_path, case, message):
    store = roof_run / "review.gpkg"
    before = store.read_bytes() if store.exists() else None
    path = tmp_path / "labels.gpkg"
    if case == "outside":
        gpd.GeoDataFrame({"label": [1, 0]}, geometry=[shapely.Point(2.35, 48.85), shapely.Point(2.36, 48.86)],
                         crs="EPSG:4326").to_file(path)
    elif case == "no_crs":
        with pytest.warns(UserWarning, match="crs"):
            gpd.GeoDataFrame({"label": [1]}, geometry=[shapely.Point(574010, 6279990)]).to_file(path)
    elif case == "bad_value":
        _points(roof_run, [(58, 58), (125, 45)], [2, 0], path)
    elif case == "one_class":
        _points(Path(roof_run), [(58, 58)], [1], path)
        fresh = tmp_path / "run_copy"
        _copy_run(roof_run, fresh)
        roof_run, store, before = fresh, fresh / "review.gpkg", None
    else:
        gpd.GeoDataFrame({"answer": [1]}, geometry=[shapely.Point(574010, 6279990)], crs="EPSG:2154").to_file(path)
    with pytest.raises(InputError, match=message) as error:
        refine(roof_run, [path], tmp_path / "out")
    assert "\n" not in str(error.value) and (str(path) in str(error.value) or case == "one_class")
    assert not (tmp_path / "out").exists()
    assert (store.read_bytes() if store.exists() else None) == before


def _copy_run(run: Path, to: Path) -> None:
    to.mkdir()
    for item in run.iterdir():
        if item.is_file() and not item.name.startswith("review"):
            (to / item.name).write_bytes(item.read_bytes())


def test_refine_without_any_answer_says_how_to_give_some(roof_run, tmp_path):
    _copy_run(roof_run, tmp_path / "run")
    with pytest.raises(InputError, match="no object reviewed yet; give --labels"):
        refine(tmp_path / "run", [], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "review.gpkg").exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(MissingInputError, match="no such run folder"):
        suggest(tmp_path / "nowhere", 5)
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a deltacd run"):
        refine(tmp_path / "plain", [], tmp_path / "out")


def test_objects_cover_the_scene_and_stay_within_their_block(roof_run):
    with ReviewRun(roof_run) as run:
        table = object_table(run)
        ids = run.read_ids(run.grid.full_window)
        assert (ids >= 0).all() and set(np.unique(ids)) == set(table.ids.tolist())
        assert table.pixels.sum() == ids.size and 100 < len(table) < 2000
        outlines = run.polygons(table.ids[:5], table.boxes[:5])
        assert np.allclose(outlines.area.to_numpy() / run.grid.pixel_area_m2, table.pixels[:5])
        # the object under an object's inner point is that object
        inner = outlines.geometry.representative_point()
        assert (run.objects_at(np.c_[inner.x, inner.y]) == table.ids[:5]).all()


# --- the loop on real data: a LEVIR-CD crop ----------------------------------------------------------

def _rgb_geotiff(png: Path, path: Path) -> Path:
    values = np.array(Image.open(png).convert("RGB")).transpose(2, 0, 1)
    return write_geotiff(path, values, colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue])


def test_ten_reviews_beat_cva_on_a_levir_crop(data_dir, tmp_path):
    levir = data_dir / "levircd_bitcd"
    name = "test_102_0512_0000.png"
    before = _rgb_geotiff(levir / "A" / name, tmp_path / "a.tif")
    after = _rgb_geotiff(levir / "B" / name, tmp_path / "b.tif")
    truth = np.array(Image.open(levir / "label" / name).convert("L")) > 127
    run = tmp_path / "run"
    deltacd.detect(before, after, run, min_area_m2=0)
    with rasterio.open(run / "change_mask.tif") as src:
        cva = src.read(1) == 1
        transform = src.transform
    labelled = []
    for round_ in range(2):  # the analyst answers 5 suggested objects, twice: the majority of their pixels
        frame = suggest(run, 5, seed=round_)
        for _, row in frame.iterrows():
            inside = rasterio.features.geometry_mask([row.geometry], truth.shape, transform, invert=True)
            frame.loc[_, "label"] = int(truth[inside].mean() >= 0.5)
            labelled.append(inside)
        if round_ == 0:  # answered in the web map: each answer goes to the store at once
            ReviewStore(run, "EPSG:2154").add(Answer(int(r.object_id), int(r.label), r.geometry, "web", "web")
                                             for r in frame.itertuples())
        else:  # answered in QGIS: a label file
            frame.to_file(tmp_path / "round1.gpkg", layer="suggestions")
            result = refine(run, [tmp_path / "round1.gpkg"], tmp_path / "refined1")
    assert result.record["review"]["objects_reviewed"] == 10
    with rasterio.open(tmp_path / "refined1" / "change_mask.tif") as src:
        refined = src.read(1) == 1
    unreviewed = ~np.any(labelled, axis=0)

    def f1(mask: np.ndarray) -> float:
        tp = np.sum(mask & truth & unreviewed)
        return 2 * tp / (np.sum(mask & unreviewed) + np.sum(truth & unreviewed))

    assert f1(refined) > f1(cva) + 0.2
    assert json.loads((tmp_path / "refined1" / "run.json").read_text())["review"]["objects_reviewed"] == 10


# --- damage runs: the buildings are the objects, the answers are grades --------------------------------

def test_a_damage_run_is_refined_from_graded_buildings(tmp_path):
    from deltacd.damage import damage

    rng = np.random.default_rng(4)
    before = textured_scene((256, 256), 4, seed=9)
    after = before.copy()
    boxes = [(r, c) for r in (20, 100, 180) for c in (20, 100, 180)]  # 9 buildings of 40 x 40 px
    rubble = {0, 4, 8}
    for k, (r, c) in enumerate(boxes):
        if k in rubble:
            after[:, r:r + 40, c:c + 40] = rng.integers(200, 3500, size=(4, 40, 40))
    b = write_geotiff(tmp_path / "pre.tif", before)
    a = write_geotiff(tmp_path / "post.tif", after)
    # BD TOPO-like text ids, and a column the analyst's model must not see (a grade from elsewhere)
    footprints = gpd.GeoDataFrame(
        {"ref": list(range(len(boxes))), "cleabs": [f"BATIMENT{k:016d}" for k in range(len(boxes))],
         "grade": [3 if k in rubble else 0 for k in range(len(boxes))]},
        geometry=[shapely.box(574000 + c * 0.5, 6280000 - (r + 40) * 0.5, 574000 + (c + 40) * 0.5, 6280000 - r * 0.5)
                  for r, c in boxes], crs="EPSG:2154")
    footprints.to_file(tmp_path / "bati.gpkg")
    run = damage(b, a, tmp_path / "run", buildings=tmp_path / "bati.gpkg", coregistration="off", id_field="cleabs").out_dir
    # the analyst grades four buildings by their footprints (in WGS84): two destroyed, two intact
    answered = footprints.iloc[[0, 4, 1, 2]].copy()
    answered["label"] = [3, 3, 0, 0]
    answered.to_crs("EPSG:4326").to_file(tmp_path / "grades.gpkg")
    result = refine(run, [tmp_path / "grades.gpkg"], tmp_path / "refined")
    table = gpd.read_file(tmp_path / "refined" / "buildings.gpkg", layer="buildings").set_index("ref")
    assert table.loc[8, "damage_grade"] == 3 and table.loc[8, "p_destroyed"] > 0.5
    assert (table.loc[[3, 5, 6, 7], "damage_grade"] == 0).all()
    assert table["reviewed"].sum() == 4 and result.record["review"]["per_class"]["3"] == 2
    names = object_table(ReviewRun(run)).names  # only what the damage step measured: no footprint column leaks in
    assert "change_score" in names and "grade" not in names and "ref" not in names
    assert {"damage.tif", "summary.csv", "quicklook.png", "run.json"} <= {p.name for p in (tmp_path / "refined").iterdir()}
    with pytest.raises(InputError, match=r"outside \{0, 1, 2, 3\}"):
        answered.assign(label=[4, 3, 0, 0]).to_file(tmp_path / "bad.gpkg")
        refine(run, [tmp_path / "bad.gpkg"], tmp_path / "refined2")
    with pytest.raises(InputError, match="embeddings are features of a detect run's superpixels"):
        refine(run, [], tmp_path / "refined3", embeddings="efficientnet_lite0:imagenet")
    assert not (tmp_path / "refined3").exists()


def test_a_study_refine_step_learns_from_the_runs_review_store_and_reruns_on_new_answers(roof_run, tmp_path):
    from deltacd.study.run import run_study

    inputs = roof_run.parent
    study = {"name": "roofs", "output": str(tmp_path / "study"),
             "inputs": {"before": str(inputs / "before.tif"), "after": str(inputs / "after.tif"),
                        "bands_before": "B,G,R,N", "bands_after": "B,G,R,N"},
             "steps": {"detect": {}}}
    run_study(study)
    detect_run = tmp_path / "study" / "detect"
    labels = _points(detect_run, [(58, 58), (125, 45), (125, 135), (10, 10)], [1, 0, 0, 0], tmp_path / "labels.gpkg")
    study["steps"]["refine"] = {"labels": [str(labels)]}
    result = run_study(study)
    ran = {o.name: o.status for o in result.steps}
    assert ran == {"detect": "skipped (up to date)", "refine": "ran"}
    refined = json.loads((tmp_path / "study" / "refine" / "run.json").read_text())
    assert refined["review"]["objects_reviewed"] == 4
    # unchanged: skipped; one more answer in the run's store (deltacd review): the step runs again
    assert {o.name: o.status for o in run_study(study).steps}["refine"] == "skipped (up to date)"
    more = _points(detect_run, [(185, 70)], [1], tmp_path / "more.gpkg")
    refine(detect_run, [more], tmp_path / "by_hand")
    assert {o.name: o.status for o in run_study(study).steps}["refine"] == "ran"


def test_embeddings_see_a_new_roof_as_more_change_than_a_shadow(roof_run):
    """ImageNet features of both dates (EfficientNet-Lite0, weights installed with the package): a flat new roof
    changes what the object looks like more than a shadow over the same ground does; CVA ranks them the other way."""
    from deltacd.review.embeddings import with_embeddings

    run = ReviewRun(roof_run)
    table = with_embeddings(run, object_table(run))
    assert [n for n in table.names if n.startswith("emb_")][:2] == ["emb_cosine", "emb_rms"]
    assert table.features.shape[1] == len(table.names) and np.isfinite(table.select(["embeddings"])[0]).all()

    def median_at(corners, side, name):
        ids = run.read_ids(rasterio.windows.Window(0, 0, 256, 256))
        rows = table.rows(np.unique([ids[r + side // 2, c + side // 2] for r, c in corners]))
        return float(np.median(table.column(name)[rows]))

    assert median_at(ROOFS, SIDE_ROOF, "emb_cosine") > 1.5 * median_at(SHADOWS, SIDE_SHADOW, "emb_cosine")
    cache = sorted(run.cache_dir.glob("review_embeddings_*.npz"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    with_embeddings(run, object_table(run))  # the second call reads the cache
    assert cache[0].stat().st_mtime_ns == stamp


def test_a_base_map_the_reviews_confirm_is_kept_outside_them(roof_run, tmp_path):
    """Answers that agree with CVA (roofs are change, untouched ground is not; no shadow reviewed): the base is at
    least as accurate on the reviews as the forest, so the refined map is the base's own outside the reviews."""
    run = tmp_path / "run"
    _copy_run(roof_run, run)  # the module's run holds other tests' answers in its review store
    where = [(r + 18, c + 18) for r, c in ROOFS[:3]] + [(10, 10), (250, 250), (128, 250)]
    labels = _points(run, where, [1, 1, 1, 0, 0, 0], tmp_path / "labels.gpkg")
    result = refine(run, [labels], tmp_path / "refined")
    assert result.record["review"]["map_outside_reviews"]["map"] == "base run"
    assert result.record["review"]["map_outside_reviews"]["base"] == 1.0
    with rasterio.open(roof_run / "change_mask.tif") as a, rasterio.open(tmp_path / "refined" / "change_mask.tif") as b:
        base, refined = a.read(1), b.read(1)
    ids = ReviewRun(run).read_ids(rasterio.windows.Window(0, 0, 256, 256))
    reviewed = np.isin(ids, np.unique([ids[r, c] for r, c in where]))
    assert np.array_equal(refined[~reviewed], base[~reviewed])
    assert _share_flagged(refined == 1, SHADOWS, SIDE_SHADOW) > 0.5  # the shadows stay: nobody said otherwise


def test_the_guard_compares_balanced_accuracies_on_the_reviews():
    from deltacd.review.classifier import classifier_beats_base
    from deltacd.review.features import ObjectTable

    n = 10
    above = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32)  # the base says change for the first four
    table = ObjectTable(np.arange(n, dtype=np.int64), above[:, None], ["score_above"], np.ones(n, np.int64),
                        np.zeros(n), np.zeros(n), np.zeros((n, 4), np.int32))
    agree = {i: int(above[i]) for i in range(n)}
    assert classifier_beats_base(table, agree, {"balanced_accuracy": 1.0})[0] is False  # a tie keeps the base
    assert classifier_beats_base(table, agree, {"balanced_accuracy": 0.6})[0] is False
    wrong = {i: 1 - int(above[i]) if i in (0, 1, 2, 4, 5) else int(above[i]) for i in range(n)}  # base wrong on 5
    keep, why = classifier_beats_base(table, wrong, {"balanced_accuracy": 0.7})
    assert keep is True and why["base"] < 0.8  # a base the reviews doubt is replaced, even by a weaker estimate
    assert classifier_beats_base(table, agree, {"balanced_accuracy": None})[0] is True


def test_refine_with_embeddings_from_the_command_line(roof_run, tmp_path, capsys):
    from deltacd.cli import main

    run = tmp_path / "run"
    _copy_run(roof_run, run)
    labels = _points(run, [(58, 58), (125, 45), (125, 135), (10, 10)], [1, 0, 0, 0], tmp_path / "labels.gpkg")
    assert main(["refine", str(run), "--labels", str(labels), "--embeddings", "-o", str(tmp_path / "out")]) == 0
    assert "outside the reviews: the" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["review"]["features"] == len(object_table(ReviewRun(run)).names) + 18  # 2 distances + 2 x 8 components
    with rasterio.open(tmp_path / "out" / "change_mask.tif") as src:
        assert _share_flagged(src.read(1) == 1, ROOFS, SIDE_ROOF) > 0.5
