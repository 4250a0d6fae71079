"""End to end: detect() and the CLI on synthetic pairs with known answers and on real data."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio

import deltacd
from conftest import needs
from deltacd.cli import main
from deltacd.errors import InputError, OutputError

try:
    from rio_cogeo.cogeo import cog_validate  # the `test` extra
except ImportError:  # the test marked @needs("rio_cogeo") skips
    cog_validate = None


def _no_leftovers(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".partial") or p.name.endswith(".replaced")]


@pytest.mark.parametrize("method", ["cva", "irmad"])
def test_injected_change_is_found(scene_pair, tmp_path, method):
    before, after = scene_pair(change=(60, 80, 40, 50), shape=(256, 256))
    result = deltacd.detect(before, after, tmp_path / "out", method=method)
    with rasterio.open(result.mask) as src:
        mask = src.read(1)
    truth = np.zeros_like(mask, dtype=bool)
    truth[60:100, 80:130] = True
    found = (mask == 1) & truth
    assert found.sum() / truth.sum() > 0.9  # recall
    assert found.sum() / (mask == 1).sum() > 0.9  # precision
    polygons = gpd.read_file(result.polygons, layer="changes")
    biggest = polygons.sort_values("area_m2").iloc[-1]
    assert biggest["area_m2"] == pytest.approx(40 * 50 * 0.25, rel=0.1)
    assert result.record["results"]["changed_pixels"] == int((mask == 1).sum())


@pytest.mark.parametrize("method", ["cva", "irmad"])
def test_no_change_gives_an_empty_mask(scene_pair, tmp_path, method):
    before, _ = scene_pair()
    result = deltacd.detect(before, before, tmp_path / "out", method=method, min_area_m2=0)
    with rasterio.open(result.mask) as src:
        assert (src.read(1) == 1).sum() == 0
    assert len(gpd.read_file(result.polygons, layer="changes")) == 0
    assert result.record["results"]["polygons"] == 0


@needs("rio_cogeo")
def test_outputs_are_georeferenced_cogs_with_overviews(scene_pair, tmp_path):
    before, after = scene_pair(change=(300, 300, 100, 100), shape=(1200, 1100), bands=4)
    result = deltacd.detect(before, after, tmp_path / "out")
    with rasterio.open(before) as src:
        crs, transform = src.crs, src.transform
    for path, dtype, nodata in ((result.score, "float32", None), (result.mask, "uint8", 255)):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
        with rasterio.open(path) as src:
            assert src.crs == crs and src.transform.almost_equals(transform)
            assert src.dtypes[0] == dtype
            assert src.overviews(1), f"{path.name} has no overviews"
            if nodata is None:
                assert np.isnan(src.nodata)
            else:
                assert src.nodata == nodata
    polygons = gpd.read_file(result.polygons, layer="changes")
    assert polygons.crs == crs
    assert {"area_m2", "pixels", "mean_score", "max_score"} <= set(polygons.columns)
    assert result.quicklook.stat().st_size > 10_000
    record = json.loads((result.out_dir / "run.json").read_text())
    assert record["deltacd_version"] == deltacd.__version__
    assert record["options"]["method"] == "cva"
    assert record["coregistration"]["blocks_measured"] > 0
    assert record["timings_s"]["predict"] >= 0 and record["timings_s"]["total"] > 0
    assert record["threshold"]["rule"] == "Otsu, at least 1"


def test_joplin_pre_utm_against_post_wgs84(data_dir, tmp_path):
    folder = data_dir / "joplin-georef-unlabeled_xview2deploy"
    result = deltacd.detect(folder / "pre/tile_337-10160.tif", folder / "post/tile_31500-6161.tif", tmp_path / "out",
                            method="cva", coregistration="correct")
    with rasterio.open(result.score) as src:
        assert src.crs.to_epsg() == 26915
        score = src.read(1)
    # The rotated post tile leaves nodata wedges on the UTM grid; the tornado track changed a lot.
    assert 0.01 < np.isnan(score).mean() < 0.1
    assert 0.1 < result.record["results"]["changed_fraction"] < 0.9
    assert result.record["coregistration"]["corrected"] is True


def test_existing_output_is_refused_then_replaced_with_overwrite(scene_pair, tmp_path):
    before, after = scene_pair()
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me until a run succeeds")
    with pytest.raises(OutputError, match="out: output folder exists; pass --overwrite"):
        deltacd.detect(before, after, out)
    with pytest.raises(OutputError, match="not a deltacd output folder"):  # a user's folder is never replaced
        deltacd.detect(before, after, out, overwrite=True)
    assert (out / "old.txt").read_text() == "keep me until a run succeeds"
    (out / "old.txt").unlink()
    first = deltacd.detect(before, after, out, overwrite=True)  # an empty folder may be replaced
    stamp = first.record["created_utc"]
    second = deltacd.detect(before, after, out, overwrite=True, method="irmad")  # and a deltacd output
    assert second.record["options"]["method"] == "irmad" and stamp
    assert (out / "change_mask.tif").exists()
    assert _no_leftovers(tmp_path)


def test_failed_run_leaves_nothing_behind(scene_pair, tmp_path):
    before, after = scene_pair()
    out = tmp_path / "out"
    with pytest.raises(InputError, match="declared order B,G,R has 3"):
        deltacd.detect(before, after, out, bands_before="B,G,R")
    assert not out.exists() and _no_leftovers(tmp_path)


def test_unwritable_output_location_is_refused(scene_pair, tmp_path):
    before, after = scene_pair()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write in .*a_file"):
        deltacd.detect(before, after, blocker / "out")


def test_unknown_option_is_named(scene_pair, tmp_path):
    before, after = scene_pair()
    with pytest.raises(InputError, match="unknown setting\\(s\\) treshold"):
        deltacd.detect(before, after, tmp_path / "out", treshold=3)
    with pytest.raises(InputError, match="setting harmonise: .*got 'magic'"):
        deltacd.detect(before, after, tmp_path / "out", harmonise="magic")


# --- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["detect", "--help"], ["demo", "--help"], ["methods", "--help"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: deltacd" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_code_1(tmp_path, capsys):
    code = main(["detect", str(tmp_path / "missing.tif"), str(tmp_path / "other.tif"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and err.startswith("deltacd: error: ") and "missing.tif: no such file" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_runs_sentinel2_band_folders_with_a_config_file(data_dir, tmp_path, capsys):
    city = data_dir / "oscd_changedetectionrepository/images/rennes"
    config = tmp_path / "run.yaml"
    config.write_text("method: irmad\nmethod_options:\n  chi2_quantile: 0.999\nmin_area_m2: 500\n")
    code = main(["-q", "detect", str(city / "imgs_1"), str(city / "imgs_2"), "-o", str(tmp_path / "out"),
                 "--config", str(config), "--coregistration", "off"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert len(record["bands"]) == 13
    assert record["method"]["chi2_quantile"] == 0.999
    assert record["options"]["min_area_m2"] == 500
    assert gpd.read_file(tmp_path / "out/changes.gpkg", layer="changes")["area_m2"].min() >= 500
    assert "outputs in" in capsys.readouterr().out


def test_cli_config_with_a_typo_is_refused(tmp_path, scene_pair, capsys):
    before, after = scene_pair()
    config = tmp_path / "bad.yaml"
    config.write_text("metod: cva\n")
    code = main(["detect", str(before), str(after), "-o", str(tmp_path / "out"), "--config", str(config)])
    assert code == 1 and "unknown setting(s) metod" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_on_the_bundled_pleiades_pair(tmp_path):
    from deltacd.demo import run_demo

    result = run_demo(tmp_path / "demo")
    record = result.record
    assert record["inputs"]["before"]["crs"] == "sensor geometry (RPC)"
    assert record["grid"]["crs"] == "EPSG:32637"
    # The dates are offset by about 10 px east and 29 px north after RPC orthorectification at constant height.
    coreg = record["coregistration"]
    assert coreg["corrected"] and abs(coreg["dx"] - 10) < 2 and abs(coreg["dy"] + 29) < 2
    assert 0.02 < record["results"]["changed_fraction"] < 0.3
    assert record["results"]["polygons"] > 10


def test_outputs_open_styled_in_qgis(scene_pair, tmp_path):
    import sqlite3

    before, after = scene_pair(change=(60, 80, 40, 50))
    result = deltacd.detect(before, after, tmp_path / "out", bands_before="B,G,R,N", bands_after="B,G,R,N")
    for name in ("change_mask.qml", "change_score.qml", "changes.qml", "before.vrt", "after.vrt"):
        assert (result.out_dir / name).is_file(), name
    assert 'paletteEntry value="1" label="change"' in (result.out_dir / "change_mask.qml").read_text()
    with sqlite3.connect(result.polygons) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200  # GeoPackage 1.2
        styles = db.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall()
    assert styles == [("changes", 1)]
    with rasterio.open(result.out_dir / "after.vrt") as vrt, rasterio.open(after) as src:
        assert vrt.count == 3 and vrt.crs == src.crs and vrt.shape == src.shape  # R,G,B of the 4 bands, on its own pixels
        assert np.array_equal(vrt.read(1), src.read(3))  # the red band first


@pytest.mark.slow
@needs("torch")
def test_a_network_writes_its_uncertainty(data_dir, tmp_path):
    from levir import georeference_levir_crop

    levir = data_dir / "levircd_bitcd"
    coords = data_dir / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    a = georeference_levir_crop(levir / "A" / "test_2_0000_0000.png", tmp_path / "a.tif", coords)
    b = georeference_levir_crop(levir / "B" / "test_2_0000_0000.png", tmp_path / "b.tif", coords)
    result = deltacd.detect(a, b, tmp_path / "out", model="tinycd:" + str(data_dir / "checkpoints_tinycd" / "levir_best.pth"),
                            uncertainty=True, crs="EPSG:4326", coregistration="off", tile_size=256)
    with rasterio.open(result.out_dir / "change_uncertainty.tif") as src, rasterio.open(result.score) as score:
        entropy, probability = src.read(1), score.read(1)
    assert 0 <= np.nanmin(entropy) and np.nanmax(entropy) <= 1.0 + 1e-6
    unsure = np.abs(probability - 0.5) < 0.1
    assert entropy[unsure].mean() > 0.9 > entropy[~unsure].mean()  # highest where the probability is near 0.5
    assert result.record["method"]["uncertainty"] is True and result.record["method"]["tta"] is True


def test_quicklook_outlines_mark_the_cells_of_a_change_s_edge_pixels():
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from deltacd.io.grid import Grid
    from deltacd.outputs.quicklook import ChangeEdges

    grid = Grid(CRS.from_epsg(2154), Affine(0.5, 0, 0, 0, -0.5, 0), 100, 100)
    edges = ChangeEdges(grid, max_size=10)  # cells of 10 x 10 px
    mask = np.zeros((100, 100), np.uint8)
    mask[20:50, 30:60] = 1  # a 30 x 30 px change: its edge pixels lie in cells rows 2-4, columns 3-5
    mask[0:5, 0:5] = 255  # no data is no change
    for top, height in ((0, 40), (40, 60)):  # in two blocks, cut across the change
        edges.add(Window(0, top, 100, height), mask[top:top + height])
    ring = np.zeros((10, 10), bool)
    ring[2:5, 3:6] = True
    ring[3, 4] = False  # the change's inside: no outline there
    np.testing.assert_array_equal(edges.cells, ring)
    edges.add_pixels(Window(0, 40, 100, 60), np.array([55 * 100 + 95]))  # row 95, column 95
    assert edges.cells[9, 9] and edges.cells.sum() == ring.sum() + 1


def test_blas_runs_on_one_thread_during_a_run_and_is_restored_after(scene_pair, tmp_path, monkeypatch):
    """The co-registration (numpy's BLAS through skimage) beside the engine's threads gets one BLAS thread."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import deltacd.pipeline as pipeline

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    seen = []
    measure = pipeline.estimate_shift

    def recording(*args, **kwargs):
        seen.extend(blas_threads())
        return measure(*args, **kwargs)

    monkeypatch.setattr(pipeline, "estimate_shift", recording)
    before, after = scene_pair(change=(60, 80, 40, 50), shape=(256, 256))
    with threadpool_limits(limits=2, user_api="blas"):  # what a 2-core machine has by default
        deltacd.detect(before, after, tmp_path / "out", method="irmad")
        assert blas_threads() and set(blas_threads()) == {2}  # restored
    assert seen and set(seen) == {1}
