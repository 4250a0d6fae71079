"""A scene in blocks: same outputs as one process, on a local Dask cluster, after a killed worker, after SIGKILL and --resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

import deltacd
from block_methods import Interrupts, KillsItsWorker, SlowCVA
from conftest import needs
from deltacd.batch import detect_batch, read_pairs
from deltacd.cli import main
from deltacd.engine.blocks import plan_blocks
from deltacd.engine.runner import plan_tiles, predict_scene, strip_windows
from deltacd.errors import InputError
from deltacd.io.rasters import open_image
from deltacd.methods.base import ChangeMethod
from deltacd.methods.cva import CVA
from deltacd.prepare.align import align_pair

JOPLIN = "joplin-georef-unlabeled_xview2deploy"
# the pre tile on UTM, the post tile on WGS84 and rotated: date 2 is warped and shifted onto date 1's grid
SETTINGS = {"coregistration": "correct", "block_size": 256}


def _pair(data_dir: Path) -> tuple[Path, Path]:
    folder = data_dir / JOPLIN
    return folder / "pre/tile_337-10160.tif", folder / "post/tile_31500-6161.tif"


def _outputs(folder: Path) -> tuple[np.ndarray, np.ndarray, gpd.GeoDataFrame, dict]:
    with rasterio.open(folder / "change_score.tif") as src:
        score = src.read()
    with rasterio.open(folder / "change_mask.tif") as src:
        mask = src.read()
    record = json.loads((folder / "run.json").read_text())
    return score, mask, gpd.read_file(folder / "changes.gpkg", layer="changes"), record


def assert_same_outputs(folder: Path, reference: Path) -> None:
    score, mask, polygons, record = _outputs(folder)
    score0, mask0, polygons0, record0 = _outputs(reference)
    assert np.array_equal(score, score0, equal_nan=True)
    assert np.array_equal(mask, mask0)
    assert len(polygons) == len(polygons0) > 0
    assert polygons.geometry.geom_equals(polygons0.geometry).all()
    assert record["threshold"] == record0["threshold"]
    assert record["results"] == record0["results"]


@pytest.fixture(scope="module")
def single_run(data_dir, tmp_path_factory) -> Path:
    """The reference: the Joplin pair with CVA in one process, not in blocks."""
    before, after = _pair(data_dir)
    out = tmp_path_factory.mktemp("single") / "out"
    settings = {k: v for k, v in SETTINGS.items() if k != "block_size"}
    deltacd.detect(before, after, out, method="cva", **settings)
    return out


# ---------------------------------------------------------------------- layout and engine (exact cases)


def test_blocks_cover_the_grid_once():
    windows = plan_blocks((1000, 700), 256)
    cover = np.zeros((1000, 700), dtype=int)
    for w in windows:
        cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert (cover == 1).all()
    assert len(windows) == 4 * 3 and windows[-1].height == 1000 - 3 * 256 and windows[-1].width == 700 - 2 * 256
    with pytest.raises(InputError, match="block_size: 100 px is too small"):
        plan_blocks((1000, 700), 100)


class SmoothedDifference(ChangeMethod):
    """|mean_5x5(after) - mean_5x5(before)|: a method with context, so tiles overlap and are blended."""

    name = "smoothed-difference"
    context = 6

    def predict(self, before, after):
        from scipy import ndimage

        diff = (after - before).mean(axis=1)
        return np.abs(ndimage.uniform_filter(diff, size=(1, 5, 5), mode="reflect")).astype(np.float32)


@pytest.mark.parametrize("method", [SmoothedDifference(), CVA()], ids=["overlapping tiles", "per pixel"])
def test_blocks_of_the_engine_give_the_whole_scene_score(scene_pair, method):
    before, after = scene_pair(shape=(300, 430), change=(90, 200, 70, 120))
    with align_pair(open_image(before), open_image(after)) as pair:
        whole = dict(predict_scene(pair, method, tile_size=64, batch_size=3))
        strips = strip_windows(plan_tiles(pair.grid.shape, method, tile_size=64), pair.grid.shape)
        assert list(whole) == strips  # the strips predict_scene yields are the ones strip_windows names
        scene = np.concatenate([whole[w] for w in strips])
        pieced = np.full(pair.grid.shape, -1.0, dtype=np.float32)
        for block in plan_blocks(pair.grid.shape, 256) + [Window(17, 33, 100, 41)]:  # and a block off any lattice
            for window, values in predict_scene(pair, method, tile_size=64, batch_size=3, region=block):
                assert window.col_off == block.col_off and window.width == block.width
                pieced[window.row_off : window.row_off + window.height, window.col_off : window.col_off + window.width] = values
                # bit for bit: the same tiles, blended in the same order, whatever the block
                assert np.array_equal(values, scene[window.row_off : window.row_off + window.height,
                                                    window.col_off : window.col_off + window.width], equal_nan=True)
        assert np.array_equal(pieced, scene, equal_nan=True)


# ---------------------------------------------------------------------- detect in blocks (real data)


@pytest.mark.slow
def test_blocks_in_this_process_give_the_single_process_outputs(data_dir, tmp_path, single_run):
    before, after = _pair(data_dir)
    result = deltacd.detect(before, after, tmp_path / "blocks", method="cva", **SETTINGS)
    assert result.record["blocks"] == {"blocks": 8, "block_size_px": 256, "reused": 0, "computed": 8,
                                       "scheduler": "this process"}
    assert_same_outputs(tmp_path / "blocks", single_run)
    assert not (tmp_path / "blocks" / "_blocks").exists()


@pytest.mark.slow
@needs("dask", "distributed")
def test_two_local_dask_workers_and_a_killed_one_give_the_single_process_outputs(data_dir, tmp_path, single_run):
    before, after = _pair(data_dir)
    marker = tmp_path / "a worker was killed"
    # the first tile any worker scores kills that worker process (SIGKILL): Dask reruns its block elsewhere
    result = deltacd.detect(before, after, tmp_path / "dask", method_instance=KillsItsWorker(marker), workers=2, **SETTINGS)
    assert marker.exists()
    assert result.record["blocks"]["scheduler"].startswith("tcp://127.0.0.1:")
    assert result.record["blocks"]["computed"] == result.record["blocks"]["blocks"] == 8
    assert_same_outputs(tmp_path / "dask", single_run)


@pytest.mark.slow
def test_sigkilled_run_resumes_with_only_the_missing_blocks(data_dir, tmp_path, single_run):
    before, after = _pair(data_dir)
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from block_methods import SlowCVA
        import deltacd
        deltacd.detect({str(before)!r}, {str(after)!r}, {str(out)!r}, method_instance=SlowCVA(delay=0.4), **{SETTINGS!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob(".out.*.partial/_blocks/block_*.tif"))) < 3:
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    completed = len(list(tmp_path.glob(".out.*.partial/_blocks/block_*.tif")))
    assert 3 <= completed < 8 and not out.exists()
    result = deltacd.detect(before, after, out, method_instance=SlowCVA(), resume=True, **SETTINGS)
    blocks = result.record["blocks"]
    assert blocks["reused"] == completed and blocks["reused"] + blocks["computed"] == 8
    assert_same_outputs(out, single_run)
    assert not list(tmp_path.glob(".out.*"))  # the staging folder it resumed was published


@pytest.mark.slow
def test_interrupted_run_keeps_its_blocks_and_other_settings_are_not_resumed(data_dir, tmp_path, single_run):
    before, after = _pair(data_dir)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as caught:
        deltacd.detect(before, after, out, method_instance=Interrupts(tiles=5), **SETTINGS)
    assert "--resume" in caught.value.__notes__[0]
    kept = len(list(tmp_path.glob(".out.*.partial/_blocks/block_*.tif")))
    assert kept >= 2 and not out.exists()
    # another threshold: the pieces do not depend on it, but a resumed run reuses only pieces of the same settings
    result = deltacd.detect(before, after, out, method="cva", resume=True, threshold=3.0, **SETTINGS)
    assert result.record["blocks"]["reused"] == 0
    assert len(list(tmp_path.glob(".out.*"))) == 0
    # and without --resume an interrupted run's staging folder is removed, as ever
    with pytest.raises(KeyboardInterrupt):
        deltacd.detect(before, after, tmp_path / "again", method_instance=Interrupts(tiles=5), **SETTINGS)
    deltacd.detect(before, after, tmp_path / "again", method="cva", **SETTINGS)
    assert_same_outputs(tmp_path / "again", single_run)
    assert not list(tmp_path.glob(".again.*"))


@needs("dask", "distributed")
def test_cli_resume_and_a_scheduler_that_cannot_be_reached(data_dir, tmp_path, capsys):
    before, after = _pair(data_dir)
    code = main(["detect", str(before), str(after), "-o", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9",
                 "--block-size", "256"])
    assert code == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("deltacd: error: scheduler: cannot reach tcp://127.0.0.1:9") and "\n" not in line
    assert not list(tmp_path.iterdir())  # nothing was left behind
    code = main(["detect", str(before), str(after), "-o", str(tmp_path / "out"), "--block-size", "100"])
    assert code == 1 and "block_size" in capsys.readouterr().err


# ---------------------------------------------------------------------- batches


@pytest.mark.slow
@needs("dask", "distributed")
def test_batch_runs_every_pair_and_one_failure_stops_no_other(data_dir, tmp_path, single_run, scene_pair):
    before, after = _pair(data_dir)
    small_before, small_after = scene_pair(change=(40, 60, 50, 60))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"name,before,after\njoplin,{before},{after}\nsmall,{small_before},{small_after}\n"
                     "broken,missing_before.tif,missing_after.tif\n")
    assert [p.name for p in read_pairs(pairs)] == ["joplin", "small", "broken"]
    assert read_pairs(pairs)[2].before == str(tmp_path / "missing_before.tif")  # relative to the CSV
    record = detect_batch(pairs, tmp_path / "batch", workers=2, method="cva", coregistration="correct")
    status = {line["name"]: line for line in record["pairs"]}
    assert status["joplin"]["status"] == status["small"]["status"] == "ran"
    assert status["broken"]["status"] == "failed" and "missing_before.tif" in status["broken"]["error"]
    assert record["failed"] == 1 and json.loads((tmp_path / "batch" / "batch.json").read_text())["failed"] == 1
    assert_same_outputs(tmp_path / "batch" / "joplin", single_run)
    # resumed: complete pairs are skipped, the broken one is tried again
    again = detect_batch(pairs, tmp_path / "batch", resume=True, method="cva", coregistration="correct")
    assert [line["status"] for line in again["pairs"]] == ["skipped (complete)", "skipped (complete)", "failed"]


def test_batch_refuses_a_folder_it_did_not_write_and_bad_rows(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("name,before,after\na,x.tif,y.tif\n")
    with pytest.raises(deltacd.OutputError, match="mine: holds notes.txt, not written by a deltacd batch"):
        detect_batch(pairs, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "a user's file"
    pairs.write_text("name,before,after\na,x.tif,y.tif\na,z.tif,w.tif\n")
    with pytest.raises(InputError, match="line 3: name 'a' is given twice"):
        read_pairs(pairs)
    pairs.write_text("name,before\na,x.tif\n")
    with pytest.raises(InputError, match="expected a CSV with columns name,before,after"):
        read_pairs(pairs)


def test_block_files_are_georeferenced_pieces(data_dir, tmp_path):
    """A block's piece is a GeoTIFF on the scene grid's window: a user (or GDAL) can read one alone."""
    from deltacd.engine.blocks import SceneTask, run_block

    before, after = _pair(data_dir)
    with align_pair(open_image(before), open_image(after)) as pair:
        method = CVA()
        window = plan_blocks(pair.grid.shape, 256)[5]
        run_block(SceneTask(pair, method, 512, None, 4), 5, window, tmp_path)
        with rasterio.open(tmp_path / "block_00005.tif") as piece:
            assert piece.transform == pair.grid.window_transform(window)
            assert (piece.height, piece.width) == (window.height, window.width)
            values = piece.read(1)
        whole = np.concatenate([v for _, v in predict_scene(pair, method)])
        rows, cols = window.toslices()
        assert np.array_equal(values, whole[rows, cols], equal_nan=True)
    assert [p.name for p in tmp_path.iterdir()] == ["block_00005.tif"]  # no partial file left
