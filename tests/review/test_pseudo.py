"""Pseudo-labels from the confident extremes of a run's score (deltacd.review.pseudo) and refine's hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import deltacd
from conftest import textured_scene, write_geotiff
from deltacd.cli import main
from deltacd.review.features import ObjectTable
from deltacd.review.pseudo import pseudo_labels, pseudo_model, pseudo_probability

pytest.importorskip("sklearn")

THRESHOLD = 2.0


def _table(seed: int = 0) -> tuple[ObjectTable, np.ndarray]:
    """300 objects, 40 of them planted changes: their score ratio lies in 0.8..3 (the others' in 0..1.2, so a
    threshold alone errs between 0.8 and 1.2) and their band difference is high (the others' near 0)."""
    rng = np.random.default_rng(seed)
    n, changed = 300, np.zeros(300, bool)
    changed[rng.choice(n, 40, replace=False)] = True
    ratio = np.where(changed, rng.uniform(0.8, 3.0, n), rng.uniform(0.0, 1.2, n))
    diff = np.where(changed, rng.normal(5.0, 0.5, n), rng.normal(0.0, 0.5, n))
    noise = rng.normal(0.0, 1.0, n)
    features = np.c_[ratio * THRESHOLD, ratio, diff, noise].astype(np.float32)
    table = ObjectTable(ids=np.arange(100, 100 + n, dtype=np.int64), features=features,
                        names=["score_mean", "score_ratio", "band_R_diff", "log_pixels"],
                        pixels=np.full(n, 50, np.int64), x=rng.uniform(0, 1000, n), y=rng.uniform(0, 1000, n),
                        boxes=np.zeros((n, 4), np.int32))
    return table, changed


def test_the_extremes_of_the_score_are_the_pseudo_labels():
    table, changed = _table()
    labels = pseudo_labels(table, THRESHOLD, share=0.1, low_share=0.1)
    ids = np.array(list(labels))
    rows = table.rows(ids)
    values = np.array(list(labels.values()))
    assert (values == 1).sum() == 30 and (values == 0).sum() == 30  # 10 % of 300 at each end
    assert changed[rows[values == 1]].all() and not changed[rows[values == 0]].any()  # the extremes are right
    ratio = table.column("score_ratio")
    assert ratio[rows[values == 1]].min() >= np.sort(ratio)[-30] and ratio[rows[values == 0]].max() <= np.sort(ratio)[29]
    # a reviewed object is never pseudo-labelled
    top = int(table.ids[np.argmax(ratio)])
    assert top not in pseudo_labels(table, THRESHOLD, share=0.1, low_share=0.1, exclude=[top])


def test_pseudo_labels_recover_the_planted_changes_better_than_the_threshold():
    table, changed = _table()  # 13 % of the objects change: a share of 10 % at the top holds only changes
    mapped = pseudo_probability(table, THRESHOLD, share=0.1) >= 0.5
    threshold_map = table.column("score_ratio") >= 1.0
    assert (threshold_map == changed).mean() < 0.9  # the threshold errs on the objects near it
    assert mapped[changed].mean() >= 0.85 and (mapped == changed).mean() > (threshold_map == changed).mean() + 0.04
    # trained on the other features only, the classifier maps every planted change and nothing else
    assert np.array_equal(pseudo_probability(table, THRESHOLD, share=0.1, groups=["bands"]) >= 0.5, changed)
    # as few no-change labels as change ones: the forest splits the gap halfway and maps far too much change
    even = pseudo_probability(table, THRESHOLD, share=0.1, low_share=0.1) >= 0.5
    assert (even & ~changed).sum() > 2 * (mapped & ~changed).sum()


def test_too_few_objects_above_the_threshold_give_no_pseudo_label():
    table, _ = _table()
    assert pseudo_labels(table, 100 * THRESHOLD) == {}  # nothing above the threshold: no change label
    model, labels = pseudo_model(table, 100 * THRESHOLD)
    assert model is None and labels == {}


def test_real_answers_win_over_pseudo_labels():
    table, _ = _table()
    ratio = table.column("score_ratio")
    top = int(table.ids[np.argmax(ratio)])
    model, labels = pseudo_model(table, THRESHOLD, {top: 0}, weight=0.3)  # the analyst says the top object is no change
    assert model is not None and top not in labels and model.reviewed == len(labels) + 1
    model, labels = pseudo_model(table, THRESHOLD, {top: 0})  # weight 1: the same forest as train() on the union
    assert model is not None and labels[int(table.ids[np.argsort(ratio)[-2]])] == 1


# --- refine and deltacd refine --pseudo-labels ------------------------------------------------------

ROOFS = [(40, 40), (40, 180), (170, 60), (180, 190)]


@pytest.fixture(scope="module")
def roof_run(tmp_path_factory) -> Path:
    """A 256 px pair where date 2 has four new bright roofs."""
    folder = tmp_path_factory.mktemp("pseudo_roofs")
    rng = np.random.default_rng(3)
    before = textured_scene((256, 256), 4, seed=5).astype(np.float64)
    after = before.copy()
    for r, c in ROOFS:
        after[:, r:r + 36, c:c + 36] = np.array([2600, 2700, 2800, 2500])[:, None, None]
    before += rng.normal(0, 25, before.shape)
    after += rng.normal(0, 25, after.shape)
    b = write_geotiff(folder / "before.tif", np.clip(before, 0, 4095).astype("uint16"))
    a = write_geotiff(folder / "after.tif", np.clip(after, 0, 4095).astype("uint16"))
    deltacd.detect(b, a, folder / "run", bands_before="B,G,R,N", bands_after="B,G,R,N")
    return folder / "run"


def test_refine_without_labels_needs_pseudo_labels(roof_run, tmp_path, capsys):
    import rasterio

    assert main(["refine", str(roof_run), "-o", str(tmp_path / "plain"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no object reviewed yet; give --labels" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "plain").exists() and not (roof_run / "review.gpkg").exists()

    assert main(["refine", str(roof_run), "--pseudo-labels", "-o", str(tmp_path / "pseudo"), "-q"]) == 0
    assert "0 reviewed objects and" in capsys.readouterr().out
    record = json.loads((tmp_path / "pseudo" / "run.json").read_text())
    review = record["review"]
    assert review["objects_reviewed"] == 0 and review["pseudo_labels"]["change"] >= 5
    assert review["pseudo_labels"]["no_change"] >= 5
    with rasterio.open(tmp_path / "pseudo" / "change_mask.tif") as src:
        mask = src.read(1) == 1
    assert np.mean([mask[r + 6:r + 30, c + 6:c + 30].mean() for r, c in ROOFS]) > 0.8  # the roofs are mapped
    assert mask.mean() < 0.5


def _copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for item in run.iterdir():
        if item.is_file() and not item.name.startswith("review"):
            (to / item.name).write_bytes(item.read_bytes())
    return to


def _points(run: Path, where: list[tuple[int, int]], labels: list[int], path: Path) -> Path:
    import geopandas as gpd
    import rasterio
    import shapely

    with rasterio.open(run / "change_mask.tif") as src:
        frame = gpd.GeoDataFrame({"label": labels}, geometry=[shapely.Point(*src.xy(r, c)) for r, c in where], crs=src.crs)
    frame.to_file(path, layer="labels")
    return path


def test_pseudo_labels_fill_in_only_while_the_answers_hold_one_class(roof_run, tmp_path):
    from deltacd.review.refine import refine

    run = _copy_run(roof_run, tmp_path / "run")
    result = refine(run, [_points(run, [(10, 10)], [0], tmp_path / "one.gpkg")], tmp_path / "one", pseudo_labels=True)
    review = result.record["review"]
    assert review["objects_reviewed"] == 1 and review["pseudo_labels"]["change"] >= 5
    # a roof answered as change: the answers now train the classifier alone
    result = refine(run, [_points(run, [(58, 58)], [1], tmp_path / "two.gpkg")], tmp_path / "two", pseudo_labels=True)
    review = result.record["review"]
    assert review["objects_reviewed"] == 2 and "pseudo_labels" not in review
