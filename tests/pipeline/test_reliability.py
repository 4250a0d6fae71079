"""Results that used to be wrong without a word, and faults that used to end in a traceback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

import deltacd
from conftest import needs, textured_scene, write_geotiff
from deltacd.cli import main
from deltacd.errors import InputError

# --- the output grid does not depend on the order of the dates ---------------------------------

def _coarse_copy(src_path: Path, dst_path: Path, res: float) -> Path:
    """The same scene averaged onto a ``res`` grid whose origin is not a multiple of ``res``."""
    with rasterio.open(src_path) as src:
        left, top = src.bounds.left + 3.7, src.bounds.top - 1.3
        width, height = int(src.width * src.res[0] // res) - 1, int(src.height * src.res[1] // res) - 1
        transform = Affine(res, 0, left, 0, -res, top)
        out = np.zeros((src.count, height, width), dtype="float32")
        reproject(src.read().astype("float32"), out, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs=src.crs, resampling=Resampling.average)
        profile = src.profile | {"width": width, "height": height, "transform": transform, "dtype": "float32"}
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(out)
    return dst_path


def test_a_fine_and_a_coarse_date_give_the_same_grid_and_no_change_in_both_orders(data_dir, tmp_path):
    fine = data_dir / "joplin-georef-unlabeled_xview2deploy" / "pre" / "tile_337-10160.tif"  # 0.6 m, real
    coarse = _coarse_copy(fine, tmp_path / "coarse_10m.tif", 10.0)
    options = dict(coregistration="off", harmonise="none", bands_before="R,G,B", bands_after="R,G,B", min_area_m2=0)
    one = deltacd.detect(fine, coarse, tmp_path / "fine_first", **options)
    two = deltacd.detect(coarse, fine, tmp_path / "coarse_first", **options)
    assert one.record["grid"] == two.record["grid"]
    with rasterio.open(coarse) as src:
        assert one.record["grid"]["transform"] == pytest.approx(list(src.transform)[:6])  # the coarse date's lattice
    for result in (one, two):
        assert result.record["results"]["changed_fraction"] < 0.02


# --- a network runs at the resolution it was trained at -----------------------------------------

def _levir_coarse(data_dir: Path, tmp_path: Path, name: str, factor: int = 3) -> tuple[Path, Path, np.ndarray]:
    from PIL import Image

    from levir import georeference_levir_crop

    levir = data_dir / "levircd_bitcd"
    coords = data_dir / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    paths = []
    for date in ("A", "B"):
        fine = georeference_levir_crop(levir / date / f"{name}.png", tmp_path / f"{name}_{date}.tif", coords)
        paths.append(_coarse_copy_exact(fine, tmp_path / f"{name}_{date}_coarse.tif", factor))
    with Image.open(levir / "label" / f"{name}.png") as im:
        label = np.asarray(im.convert("L")) > 0
    h, w = label.shape[0] // factor, label.shape[1] // factor
    truth = label[: h * factor, : w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3)) >= 0.5
    return paths[0], paths[1], truth


def _coarse_copy_exact(src_path: Path, dst_path: Path, factor: int) -> Path:
    with rasterio.open(src_path) as src:
        shape = (src.count, src.height // factor, src.width // factor)
        data = src.read(out_shape=shape, resampling=Resampling.average)
        profile = src.profile | {"width": shape[2], "height": shape[1], "transform": src.transform * src.transform.scale(factor, factor)}
        interp = src.colorinterp
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = interp
    return dst_path


@pytest.mark.slow
@needs("torch")
def test_a_network_runs_at_its_training_resolution_and_says_so(data_dir, tmp_path):
    model = "tinycd:" + str(data_dir / "checkpoints_tinycd" / "levir_best.pth")
    crops = [_levir_coarse(data_dir, tmp_path, name) for name in ("test_2_0000_0000", "test_55_0256_0000", "test_7_0256_0512")]
    scores = {}
    for rule in ("auto", "grid"):
        tp = fp = fn = 0
        for i, (before, after, truth) in enumerate(crops):
            result = deltacd.detect(before, after, tmp_path / f"out_{rule}_{i}", model=model, crs="EPSG:4326",
                                    coregistration="off", min_area_m2=0, model_resolution=rule, tile_size=256)
            with rasterio.open(result.mask) as src:
                mask = src.read(1) == 1
            tp, fp, fn = tp + (mask & truth).sum(), fp + (mask & ~truth).sum(), fn + (~mask & truth).sum()
            resolution = result.record["model_resolution"]
            assert resolution["trained_m"] == 0.5 and resolution["scene_m"] > 1.5
            assert resolution["run_m"] == (0.5 if rule == "auto" else resolution["scene_m"])
            assert any("trained at 0.5 m" in w for w in result.record["warnings"])
        scores[rule] = 2 * tp / (2 * tp + fp + fn)
    assert scores["auto"] > 0.85 and scores["auto"] > scores["grid"] + 0.2, scores


@needs("torch")
def test_tinycd_checkpoints_know_their_training_resolution(data_dir):
    from deltacd.methods.learned import LearnedModel

    folder = data_dir / "checkpoints_tinycd"
    assert LearnedModel.from_file(f"tinycd:{folder / 'levir_best.pth'}", device="cpu").gsd_m == 0.5
    assert LearnedModel.from_file(f"tinycd:{folder / 'whu_best.pth'}", device="cpu").gsd_m == 0.3


# --- thresholds that flag half the scene ---------------------------------------------------------

@pytest.mark.slow
@needs("torch")
def test_zero_shot_flags_at_most_a_tenth_of_an_unchanged_real_scene(data_dir, tmp_path):
    from levir import georeference_levir_crop

    levir = data_dir / "levircd_bitcd"
    coords = data_dir / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    name = "train_386_0512_0768"  # the crop without any change
    before = georeference_levir_crop(levir / "A" / f"{name}.png", tmp_path / "a.tif", coords)
    after = georeference_levir_crop(levir / "B" / f"{name}.png", tmp_path / "b.tif", coords)
    with rasterio.open(before) as src:
        res = src.res
    result = deltacd.detect(before, after, tmp_path / "out", method="zero-shot", crs="EPSG:4326", resolution=res,
                            coregistration="off", min_area_m2=0)
    assert result.record["results"]["changed_fraction"] <= 0.101
    assert "at most 10 %" in result.record["threshold"]["rule"]


def test_more_than_half_changed_is_a_warning_in_the_console_and_run_json(scene_pair, tmp_path, capsys):
    before, after = scene_pair(change=(0, 0, 200, 256))
    code = main(["detect", str(before), str(after), "-o", str(tmp_path / "out"), "-q", "--threshold", "0.01"])
    err = capsys.readouterr().err
    assert code == 0
    assert "deltacd: warning:" in err and "flagged as changed" in err
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert any("flagged as changed" in w for w in record["warnings"])


# --- settings checked before any work ------------------------------------------------------------

@pytest.mark.parametrize("options,named", [({"tile_size": 7}, "tile_size"), ({"threshold": -1.0}, "threshold"),
                                           pytest.param({"threshold": 2.5, "method": "zero-shot"}, "threshold",
                                                        marks=needs("torch"))])
def test_settings_are_refused_before_any_stage_runs(scene_pair, tmp_path, options, named):
    before, after = scene_pair()
    stages = []
    with pytest.raises(InputError, match=named):
        deltacd.detect(before, after, tmp_path / "out", progress=lambda s, d, t: stages.append(s), **options)
    assert stages == [] and not (tmp_path / "out").exists()


def test_a_scene_smaller_than_a_block_runs_and_says_the_shift_was_not_measured(tmp_path):
    values = textured_scene((20, 20), 4, seed=4)
    before = write_geotiff(tmp_path / "b.tif", values)
    after = write_geotiff(tmp_path / "a.tif", values)
    result = deltacd.detect(before, after, tmp_path / "out", min_area_m2=0)
    assert result.record["coregistration"]["blocks_measured"] == 0
    assert any("smaller than a 32-px block" in w for w in result.record["warnings"])
    json.loads((tmp_path / "out" / "run.json").read_text(), parse_constant=lambda c: pytest.fail(f"run.json has {c}"))


def test_co_registration_reports_progress(scene_pair, tmp_path):
    before, after = scene_pair(shape=(512, 512))
    seen = set()
    deltacd.detect(before, after, tmp_path / "out", progress=lambda stage, done, total: seen.add(stage))
    assert {"co-registration", "sampling", "detect", "polygons and mask"} <= seen


# --- faults: signals, missing extras, downloads -------------------------------------------------

@pytest.mark.slow
def test_sigterm_stops_the_run_like_ctrl_c(scene_pair, tmp_path):
    before, after = scene_pair(shape=(1024, 1024))
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "deltacd.cli", "detect", str(before), str(after), "-o", str(out),
                            "--method", "irmad", "--tile-size", "64", "--batch-size", "1", "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.*.partial/_work")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM
    assert err.strip().count("\n") == 0 and "terminated (SIGTERM)" in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_network_without_the_learning_extras_is_one_line(scene_pair, tmp_path):
    before, after = scene_pair()
    code = (  # a machine without torch: every import of it fails as if it were not installed
        "import sys, importlib.abc\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from deltacd.cli import main\n"
        f"sys.exit(main(['detect', {str(before)!r}, {str(after)!r}, '-o', {str(tmp_path / 'out')!r}, '--method', 'zero-shot']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "pip install 'deltacd[learn]'" in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


def test_rebuilding_a_checkpoint_never_downloads(tmp_path, monkeypatch):
    """A checkpoint whose metadata asks for ImageNet weights is rebuilt from its own weights, offline."""
    torch = pytest.importorskip("torch")

    from deltacd.models.checkpoint import ModelSpec, load_checkpoint, save_checkpoint
    from deltacd.models.registry import build_model

    model = build_model("siamese-unet", in_channels=3, encoder_name="resnet18", encoder_depth=3)
    spec = ModelSpec("siamese-unet", {"in_channels": 3, "encoder_name": "resnet18", "encoder_depth": 3,
                                      "encoder_weights": "imagenet"}, ("R", "G", "B"), (0.0,) * 3, (1.0,) * 3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, spec)

    def no_network(*args, **kwargs):
        raise AssertionError("rebuilding a checkpoint tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    loaded, _ = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_cuda_asked_without_a_gpu_stops_and_auto_falls_back_to_the_cpu(monkeypatch):
    torch = pytest.importorskip("torch")

    from deltacd.errors import ResourceError
    from deltacd.methods.learned import _resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ResourceError, match="no CUDA GPU.*--device auto"):
        _resolve_device("cuda")
    assert _resolve_device("auto").type == "cpu"


# --- usability -----------------------------------------------------------------------------------

def test_verbosity_flags_after_the_verb_and_a_log_in_the_output(scene_pair, tmp_path, capsys):
    before, after = scene_pair()
    assert main(["detect", str(before), str(after), "-o", str(tmp_path / "out"), "-v", "-q"]) == 0
    err = capsys.readouterr().err
    assert "deltacd: " in err  # deltacd's own progress messages
    assert "INFO" not in err and "rasterio" not in err  # other libraries' INFO lines are silent
    log = (tmp_path / "out" / "deltacd.log").read_text()
    assert "co-registration" in log and "INFO" in log


@pytest.mark.slow
def test_a_folder_of_tiles_is_mosaicked(data_dir, tmp_path):
    folder = data_dir / "joplin-georef-unlabeled_xview2deploy"
    result = deltacd.detect(folder / "pre", folder / "post", tmp_path / "out", coregistration="off")
    grid = result.record["grid"]
    assert grid["width"] > 1024  # both pre tiles side by side, not one of them
    assert "2 tiles" in result.record["inputs"]["before"]["files"][0]
    assert "4 tiles" in result.record["inputs"]["after"]["files"][0]


def test_declared_nodata_values_are_no_data(tmp_path):
    values = textured_scene((128, 128), 4, seed=5)
    values[:, :, :32] = 0  # a zero border, untagged
    before = write_geotiff(tmp_path / "b.tif", values)
    after = write_geotiff(tmp_path / "a.tif", values)
    plain = deltacd.detect(before, after, tmp_path / "plain", coregistration="off")
    tagged = deltacd.detect(before, after, tmp_path / "tagged", coregistration="off", nodata_before=0, nodata_after=0)
    assert plain.record["results"]["valid_pixels"] == 128 * 128
    assert tagged.record["results"]["valid_pixels"] == 128 * 96


def test_yaml_keys_may_be_spelt_as_the_flags(scene_pair, tmp_path):
    before, after = scene_pair(change=(60, 80, 40, 50))
    config = tmp_path / "run.yaml"
    config.write_text("min_area: 400\nmorphology: 1\ntile-size: 128\n")
    assert main(["detect", str(before), str(after), "-o", str(tmp_path / "out"), "--config", str(config), "-q"]) == 0
    options = json.loads((tmp_path / "out" / "run.json").read_text())["options"]
    assert options["min_area_m2"] == 400 and options["morphology_radius_px"] == 1 and options["tile_size"] == 128
