"""The catalogue of bad inputs: each through the CLI gives one line naming the file or setting.

For every case: the exit code, exactly one line on stderr that names what is wrong, no traceback,
nothing left beside the output folder, and the previous output (replaced only by a successful
run) intact.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

import deltacd
from conftest import textured_scene, write_geotiff
from deltacd.cli import main
from deltacd.io.outputs import MARKER


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A good pair, a previous output of it, and the bad inputs of the catalogue."""
    root = tmp_path_factory.mktemp("catalogue")
    before = write_geotiff(root / "before.tif", textured_scene((256, 256), 4, seed=0))
    after_values = textured_scene((256, 256), 4, seed=0)
    after_values[:, 60:100, 80:130] = 3000
    after = write_geotiff(root / "after.tif", after_values)
    write_geotiff(root / "far.tif", textured_scene((64, 64), 4, seed=1),
                  transform=Affine(0.5, 0, 700000.0, 0, -0.5, 6000000.0))
    truncated = write_geotiff(root / "big.tif", textured_scene((1024, 1024), 4, seed=2))
    data = truncated.read_bytes()
    truncated = root / "truncated.tif"
    truncated.write_bytes(data[: len(data) // 10])  # cut inside the rows the pair overlaps
    aoi_far = root / "aoi_far.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:2154").to_file(aoi_far)
    gpd.GeoDataFrame(geometry=[shapely.box(574010, 6279900, 574060, 6279950)], crs="EPSG:2154").to_file(root / "inside.gpkg")
    aoi_empty = root / "aoi_empty.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.LineString([(574000, 6279900), (574100, 6279950)])], crs="EPSG:2154").to_file(aoi_empty)
    config_unknown = root / "unknown.yaml"
    config_unknown.write_text("min_area: 4\ntile_sise: 256\n")
    not_a_model = root / "model.safetensors"
    not_a_model.write_bytes(b"not a model")
    old = root / "old"
    deltacd.detect(before, after, old)
    return root


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


CASES = [
    # (name, arguments after BEFORE AFTER -o OLD --overwrite; {before}/{after}/{root} are filled in, what the line must name)
    ("missing before", ["{root}/nope.tif", "{after}"], "nope.tif"),
    ("threshold below the score range", ["{before}", "{after}", "--threshold", "-1"], "threshold"),
    ("threshold nan", ["{before}", "{after}", "--threshold", "nan"], "threshold"),
    ("threshold inf", ["{before}", "{after}", "--threshold", "inf"], "threshold"),
    ("tile size too small", ["{before}", "{after}", "--tile-size", "7"], "tile_size"),
    ("tile size beyond memory", ["{before}", "{after}", "--tile-size", "300000"], "tile_size"),
    ("unknown crs", ["{before}", "{after}", "--crs", "EPSG:99999"], "crs"),
    ("resolution in the wrong units", ["{before}", "{after}", "--resolution", "0.000005"], "resolution"),
    ("no overlap", ["{before}", "{root}/far.tif"], "do not overlap"),
    ("band count", ["{before}", "{after}", "--bands-before", "B,G,R"], "before.tif"),
    ("band named twice", ["{before}", "{after}", "--bands-after", "B,G,G,N"], "bands of after"),
    ("aoi misses the pair", ["{before}", "{after}", "--aoi", "{root}/aoi_far.gpkg"], "AOI"),
    ("aoi without polygons", ["{before}", "{after}", "--aoi", "{root}/aoi_empty.gpkg"], "aoi_empty.gpkg"),
    ("truncated file", ["{root}/truncated.tif", "{after}"], "truncated.tif"),
    ("unknown config key", ["{before}", "{after}", "--config", "{root}/unknown.yaml"], "tile_sise"),
    ("missing model", ["{before}", "{after}", "--model", "{root}/none.safetensors"], "none.safetensors"),
    ("not a model", ["{before}", "{after}", "--model", "{root}/model.safetensors"], "model.safetensors"),
    ("unknown model architecture", ["{before}", "{after}", "--model", "resnet:{root}/model.safetensors"], "resnet"),
    ("unknown method", ["{before}", "{after}", "--method", "magic"], "magic"),
    ("unknown method option", ["{before}", "{after}", "--method", "irmad", "--option", "speed=2"], "speed"),
    ("bad model resolution", ["{before}", "{after}", "--model-resolution", "-1"], "model_resolution"),
]


@pytest.mark.parametrize("name,arguments,named", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_keeps_the_old_output(workspace, capsys, name, arguments, named):
    if "--model" in arguments:  # a model needs the `learn` extra: without it the line names the extra instead
        pytest.importorskip("torch")
    root = workspace
    old = root / "old"
    before_state = _snapshot(old)
    filled = [a.format(root=root, before=root / "before.tif", after=root / "after.tif") for a in arguments]
    code = main(["detect", *filled, "-o", str(old), "--overwrite", "-q"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("deltacd: error: "), err
    assert named in err, err
    assert "Traceback" not in err
    assert _snapshot(old) == before_state  # the previous output is untouched
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_argument_errors_are_one_line_too(workspace, capsys):
    with pytest.raises(SystemExit) as info:
        main(["detect", "a.tif", "b.tif", "-o", "x", "--nodata-before", "abc"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "--nodata-before" in err


def test_existing_output_without_overwrite_is_one_line(workspace, capsys):
    root = workspace
    code = main(["detect", str(root / "before.tif"), str(root / "after.tif"), "-o", str(root / "old")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "output folder exists" in err and "--overwrite" in err


def test_a_full_disk_is_named(workspace, capsys, monkeypatch):
    from deltacd.io import writers

    def full(self, window, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.RasterWriter, "write", full)
    root = workspace
    old = root / "old"
    state = _snapshot(old)
    code = main(["detect", str(root / "before.tif"), str(root / "after.tif"), "-o", str(old), "--overwrite", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"no space left on {root}" in err, err
    assert _snapshot(old) == state


def test_the_run_record_is_strict_json(workspace):
    text = (workspace / "old" / "run.json").read_text()

    def refuse(constant):
        raise AssertionError(f"run.json holds {constant}")

    record = json.loads(text, parse_constant=refuse)
    assert record["threshold"]["rule"] == "Otsu, at least 1"
    assert record["versions"]["gdal"] and record["versions"]["rasterio"]
    assert isinstance(record["command"], list) and isinstance(record["warnings"], list)
    assert json.loads((workspace / "old" / MARKER).read_text())["kind"] == "detect"


def test_a_model_file_from_elsewhere_is_never_run_as_code(workspace, tmp_path):
    """A pickled checkpoint that would run code on load: refused by weights_only=True, one line."""
    torch = pytest.importorskip("torch")
    import pickle

    class Exploit:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").write_text, ("executed",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"state": Exploit()}, hostile, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    root = workspace
    code = main(["detect", str(root / "before.tif"), str(root / "after.tif"), "-o", str(tmp_path / "out"), "-q",
                 "--model", f"tinycd:{hostile}"])
    assert code == 1
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def test_float_inputs_with_nan_and_no_nodata_tag_treat_nan_as_nodata(tmp_path):
    values = textured_scene((128, 128), 3, seed=3).astype("float32")
    values[:, :20, :] = np.nan
    values[:, 20:30, :] = np.inf
    before = write_geotiff(tmp_path / "b.tif", values)
    after = write_geotiff(tmp_path / "a.tif", values)
    result = deltacd.detect(before, after, tmp_path / "out", coregistration="off")
    import rasterio

    with rasterio.open(result.mask) as src:
        mask = src.read(1)
    assert (mask[:30] == 255).all() and (mask[30:] != 255).all()
    assert result.record["results"]["valid_pixels"] == 98 * 128


OTHER_VERBS = [
    ("evaluate: missing reference", ["evaluate", "{old}/change_mask.tif", "{root}/none.gpkg", "-o", "{out}"], "none.gpkg"),
    ("evaluate: reference field missing", ["evaluate", "{old}/change_mask.tif", "{root}/inside.gpkg", "-o", "{out}",
                                           "--reference-field", "grade"], "grade"),
    ("compare: polygons without a class field", ["compare", "{old}/change_mask.tif", "{root}/aoi_far.gpkg",
                                                 "{root}/aoi_far.gpkg", "-o", "{out}"], "class_field"),
    ("prepare-dataset: unknown key", ["prepare-dataset", "{root}/unknown.yaml", "{out}"], "tile_sise"),
    ("train: missing config", ["train", "{root}/none.yaml"], "none.yaml"),
    ("robustness: unknown perturbation", ["robustness", "{root}/before.tif", "{root}/after.tif", "{old}/change_mask.tif",
                                          "-o", "{out}", "--perturbations", "earthquake"], "earthquake"),
]


@pytest.mark.parametrize("name,arguments,named", OTHER_VERBS, ids=[c[0] for c in OTHER_VERBS])
def test_every_verb_reports_bad_input_on_one_line(workspace, tmp_path, capsys, name, arguments, named):
    filled = [a.format(root=workspace, old=workspace / "old", out=tmp_path / "out") for a in arguments]
    code = main([*filled, "-q"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("deltacd: error: "), err
    assert named in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
