"""Learned models through the one tiled engine: loading, band selection, probabilities, TTA, blending, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module
from torch import nn

import deltacd
from conftest import needs
from deltacd.engine.runner import predict_scene
from deltacd.errors import InputError, MissingInputError
from deltacd.io.grid import Grid
from deltacd.io.rasters import open_image
from deltacd.methods.learned import LearnedModel
from deltacd.models.checkpoint import ModelSpec, save_checkpoint
from deltacd.models.registry import build_model
from deltacd.models.tinycd import TinyCD
from deltacd.prepare.align import align_pair
from deltacd.prepare.sampling import PixelSample
from levir import PIXEL_DEG, georeference_levir_crop, levir_crop_transform, parse_levir_name

LEVIR_CROPS = ("test_102_0512_0000.png", "test_55_0256_0000.png")
QUIET = dict(harmonise="none", coregistration="off")


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Two shared cores: one torch thread beside the engine's reader thread avoids oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def levir_tinycd(data_dir: Path) -> LearnedModel:
    return LearnedModel.from_file(f"tinycd:{data_dir / 'checkpoints_tinycd' / 'levir_best.pth'}", device="cpu")


def _write_tif(path: Path, array: np.ndarray, *, res: float = 0.5) -> Path:
    array = array if array.ndim == 3 else array[None]
    with rasterio.open(
        path, "w", driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
        dtype=array.dtype, crs="EPSG:2154", transform=Affine(res, 0, 574000.0, 0, -res, 6280000.0),
    ) as dst:
        dst.write(array)
    return path


def _read(path: Path) -> tuple[np.ndarray, Grid]:
    with rasterio.open(path) as ds:
        return ds.read(1), Grid.of(ds)


class _FirstBandOfAfter(nn.Module):
    """Logit = the model's first band of date 2 (normalised): shows which image band the wrapper fed it."""

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return after[:, :1]


class _Difference(nn.Module):
    """Per-pixel difference of the dates: equivariant to flips."""

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return (after - before).sum(1, keepdim=True)


class _LocalConv(nn.Module):
    """Two 3x3 convolutions: a 5-px receptive field, well inside the wrapper's 32-px context."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(torch.cat([before, after], 1))))


class _Ramp(nn.Module):
    """Difference plus a left-to-right ramp: not equivariant to a horizontal flip."""

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-3.0, 3.0, before.shape[-1], device=before.device)
        return (after - before).sum(1, keepdim=True) + ramp


def _spec(bands: str = "R,G,B", *, mean: float = 0.0, std: float = 1.0, threshold: float = 0.5, name: str = "toy") -> ModelSpec:
    names = tuple(bands.split(","))
    return ModelSpec(name=name, kwargs={}, bands=names, mean=(mean,) * len(names), std=(std,) * len(names), threshold=threshold)


# ------------------------------------------------------------------ real weights, real labels


@pytest.mark.slow
def test_tinycd_through_detect_matches_levir_labels_pixel_for_pixel(levir_tinycd, data_dir, tmp_path):
    levir, coords = data_dir / "levircd_bitcd", data_dir / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    tp = fp = fn = 0
    for name in LEVIR_CROPS:
        a = georeference_levir_crop(levir / "A" / name, tmp_path / f"A_{name}.tif", coords)
        b = georeference_levir_crop(levir / "B" / name, tmp_path / f"B_{name}.tif", coords)
        result = deltacd.detect(
            a, b, tmp_path / f"out_{name}", method_instance=levir_tinycd, min_area_m2=0, tile_size=256,
            crs="EPSG:4326", resolution=PIXEL_DEG, **QUIET,
        )
        mask, grid = _read(result.mask)
        _, crop_grid = _read(a)
        crop_grid.check_same(grid, names=(a.name, "change_mask.tif"))  # pixel to pixel, no resampling
        score, _ = _read(result.score)
        assert np.nanmin(score) >= 0.0 and np.nanmax(score) <= 1.0
        with Image.open(levir / "label" / name) as im:
            truth = np.asarray(im.convert("L")) > 0
        pred = mask == 1
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
        record = json.loads((result.out_dir / "run.json").read_text())
        assert record["threshold"]["value"] == 0.5 and record["method"]["model"] == "tinycd"
        assert record["method"]["bands"] == ["R", "G", "B"] and record["method"]["score_units"] == "change probability"
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.85, f"F1 {f1:.3f} (TP {tp}, FP {fp}, FN {fn})"


def _levir_arrays(data_dir: Path, name: str = LEVIR_CROPS[0], side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    levir = data_dir / "levircd_bitcd"
    pair = [np.asarray(Image.open(levir / d / name).convert("RGB"))[:side, :side] for d in ("A", "B")]
    return tuple(p.transpose(2, 0, 1)[None].astype(np.float32) for p in pair)


@needs("onnx", "onnxruntime")
def test_onnx_runtime_gives_torchs_probabilities_on_real_crops(data_dir):
    checkpoint = f"tinycd:{data_dir / 'checkpoints_tinycd' / 'levir_best.pth'}"
    before, after = _levir_arrays(data_dir)
    by_runtime = {}
    for runtime in ("onnx", "torch"):
        model = LearnedModel.from_file(checkpoint, device="cpu", runtime=runtime)
        model.select_bands(("R", "G", "B"))
        assert model.choose_runtime() == runtime
        by_runtime[runtime] = model.predict(before, after)
    assert np.abs(by_runtime["onnx"] - by_runtime["torch"]).max() < 1e-4
    assert ((by_runtime["onnx"] > 0.5) == (by_runtime["torch"] > 0.5)).mean() > 0.9999
    assert 0.01 < (by_runtime["torch"] > 0.5).mean() < 0.5  # the crop has changes: not a blank map


@pytest.mark.slow
@needs("onnx", "onnxruntime")
def test_onnx_export_is_cached_by_weights_and_reused(data_dir, tmp_path, monkeypatch):
    checkpoint = f"tinycd:{data_dir / 'checkpoints_tinycd' / 'levir_best.pth'}"
    before, after = _levir_arrays(data_dir, side=64)
    monkeypatch.setenv("DELTACD_CACHE_DIR", str(tmp_path / "cache"))

    def fresh() -> LearnedModel:
        model = LearnedModel.from_file(checkpoint, device="cpu", runtime="onnx")
        model.select_bands(("R", "G", "B"))
        assert model.choose_runtime() == "onnx"
        return model

    first = fresh().predict(before, after)
    graphs = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(graphs) == 1 and graphs[0].suffix == ".onnx"  # no temporary folder left beside it

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", no_export)
    np.testing.assert_array_equal(fresh().predict(before, after), first)

    other = LearnedModel.from_file(checkpoint, device="cpu", runtime="onnx")
    with torch.no_grad():
        next(other.model.parameters()).add_(1.0)  # other weights: another graph, exported anew
    other.select_bands(("R", "G", "B"))
    with pytest.raises(InputError, match="cannot be exported"):
        other.choose_runtime()

    monkeypatch.setattr(torch.onnx, "export", export)
    monkeypatch.setenv("DELTACD_CACHE_DIR", "")
    fresh()
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 1  # off: nothing written


def test_levir_crop_is_placed_in_its_tile_row_then_column(data_dir):
    coords = json.loads((data_dir / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json").read_text())
    west, north, *_ = coords["test_2.png"]
    transform = levir_crop_transform("test_2_0000_0512.png", coords)
    assert transform.a == pytest.approx(PIXEL_DEG, rel=1e-9) and transform.e == pytest.approx(-PIXEL_DEG, rel=1e-9)
    assert transform.c == pytest.approx(west + 512 * PIXEL_DEG) and transform.f == pytest.approx(north)
    assert parse_levir_name("val_27_0000_0256.png").tile == "val_27.png"
    with pytest.raises(InputError, match="not a LEVIR-CD crop name"):
        parse_levir_name("tile_0_107.png")


# ------------------------------------------------------------------ deltacd checkpoints


def test_untrained_deltacd_checkpoint_runs_through_detect(scene_pair, tmp_path):
    torch.manual_seed(0)
    model = build_model("fc-siam-diff", in_channels=4)
    spec = ModelSpec("fc-siam-diff", {"in_channels": 4}, ("B", "G", "R", "N"), (1500.0,) * 4, (800.0,) * 4, threshold=0.7)
    path = save_checkpoint(tmp_path / "untrained.safetensors", model, spec)
    method = LearnedModel.from_file(path, device="cpu")
    assert method.size_multiple == 16 and method.bands == ("B", "G", "R", "N")

    # 200 x 232 px: one tile, padded by the engine to 208 x 240 (multiples of 16).
    before, after = scene_pair(shape=(200, 232), change=(50, 60, 40, 40))
    result = deltacd.detect(before, after, tmp_path / "out", method_instance=method, bands_before="B,G,R,N",
                            bands_after="B,G,R,N", tile_size=256, **QUIET)
    score, grid = _read(result.score)
    assert grid.shape == (200, 232) and np.isfinite(score).all()
    assert score.min() >= 0.0 and score.max() <= 1.0 and score.std() > 0
    record = result.record
    assert record["threshold"]["value"] == 0.7  # the checkpoint's threshold, not Otsu's
    assert record["method"]["model"] == "fc-siam-diff" and record["method"]["source"] == str(path)
    assert method.default_harmonise == "none"  # no harmonisation recorded with the training


def test_bands_are_picked_by_name_in_the_models_order(tmp_path):
    rng = np.random.default_rng(0)
    shape = (96, 96)
    levels = {"B": 100, "G": 1000, "R": 2000, "N": 3000}  # distinct levels: the output says which band was read
    image = np.stack([levels[b] + rng.integers(0, 50, shape) for b in "BGRN"]).astype("uint16")
    before = _write_tif(tmp_path / "before.tif", image)
    after = _write_tif(tmp_path / "after.tif", image[:, ::-1].copy())
    method = LearnedModel(_FirstBandOfAfter(), _spec("R,G,B", std=1000.0), device="cpu")
    result = deltacd.detect(before, after, tmp_path / "out", method_instance=method, bands_before="B,G,R,N",
                            bands_after="B,G,R,N", min_area_m2=0, tile_size=64, **QUIET)
    score, _ = _read(result.score)
    expected = 1 / (1 + np.exp(-image[2, ::-1, :].astype(np.float64) / 1000))  # after's R band
    np.testing.assert_allclose(score, expected, atol=1e-5)
    assert method.select_bands(("B", "G", "R", "N")) == (2, 1, 0)
    assert method.select_bands(("blue", "green", "red", "nir")) == (2, 1, 0)  # canonical names match
    s2 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
    assert method.select_bands(s2) == (3, 2, 1)  # Sentinel-2 names: B04, B03, B02 stand for R, G, B
    assert method.select_bands(("R", "G", "B", "B02")) == (0, 1, 2)  # a colour name present wins


def test_checkpoint_bands_missing_from_images_fail_before_writing(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec("tinycd", {"in_channels": 3}, ("R", "G", "B"), (120.0,) * 3, (60.0,) * 3)
    path = save_checkpoint(tmp_path / "rgb_model.safetensors", TinyCD(in_channels=3), spec)
    pan = (np.random.default_rng(0).integers(0, 4000, (64, 64))).astype("uint16")
    before, after = _write_tif(tmp_path / "pan1.tif", pan), _write_tif(tmp_path / "pan2.tif", pan)
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        deltacd.detect(before, after, out, method_instance=LearnedModel.from_file(path, device="cpu"), **QUIET)
    message = str(info.value)
    assert "\n" not in message
    assert "rgb_model.safetensors" in message and "needs bands R,G,B" in message and "images have PAN" in message
    assert not out.exists()
    assert not any(p.name.startswith(".out.") for p in tmp_path.iterdir())  # no staging folder left behind


# ------------------------------------------------------------------ bad model strings and files


def test_corrupt_checkpoints_raise_input_error_naming_the_file(tmp_path, data_dir):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\x00" * 64)
    with pytest.raises(InputError, match="junk.safetensors"):
        LearnedModel.from_file(junk)

    spec = ModelSpec("tinycd", {"in_channels": 3}, ("R", "G", "B"), (0.0,) * 3, (1.0,) * 3)
    good = save_checkpoint(tmp_path / "cut.safetensors", TinyCD(), spec)
    good.write_bytes(good.read_bytes()[:-5000])  # header intact, weights truncated
    with pytest.raises(InputError, match="cut.safetensors"):
        LearnedModel.from_file(good)

    pth = tmp_path / "junk_best.pth"
    pth.write_bytes(b"not a zip nor a pickle" * 20)
    with pytest.raises(InputError, match="junk_best.pth"):
        LearnedModel.from_file(f"tinycd:{pth}")

    # A raw .pth without its architecture: the message says how to name it.
    with pytest.raises(InputError, match="tinycd:PATH"):
        LearnedModel.from_file(data_dir / "checkpoints_tinycd" / "levir_best.pth")
    with pytest.raises(MissingInputError, match="absent.safetensors"):
        LearnedModel.from_file(tmp_path / "absent.safetensors")


def test_unknown_architecture_lists_supported_ones(tmp_path):
    with pytest.raises(InputError, match=r"unknown architecture 'changeformer'.*supported as ARCH:PATH: tinycd"):
        LearnedModel.from_file(f"changeformer:{tmp_path / 'model.pth'}")


def test_unusable_device_is_an_input_error():
    with pytest.raises(InputError, match="device"):
        LearnedModel(_Difference(), _spec(), device="no-such-device")


# ------------------------------------------------------------------ test-time augmentation


def test_tta_equals_plain_output_only_for_flip_equivariant_models():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(2, 3, 32, 48)).astype(np.float32)
    after = rng.normal(size=(2, 3, 32, 48)).astype(np.float32)
    for toy, equivariant in ((_Difference(), True), (_Ramp(), False)):
        plain = LearnedModel(toy, _spec(), device="cpu").predict(before, after)
        tta = LearnedModel(toy, _spec(), device="cpu", tta=True).predict(before, after)
        assert plain.shape == tta.shape == (2, 32, 48) and plain.dtype == tta.dtype == np.float32
        if equivariant:
            np.testing.assert_allclose(tta, plain, atol=1e-6)
        else:
            assert np.abs(tta - plain).max() > 0.1


# ------------------------------------------------------------------ blending across tiles


def test_tiled_run_is_close_to_a_single_tile_run(levir_tinycd, data_dir):
    folder = data_dir / "puertorico-maria_matthinfo"
    pair = align_pair(
        open_image(folder / "Pre_Event_Grids_In_TIFF" / "tile_0_107.tif", label="before"),
        open_image(folder / "Post_Event_Grids_In_TIFF" / "tile_0_107.tif", label="after"),
    )
    assert pair.grid.shape == (512, 512)
    sample = PixelSample(pair.bands, np.zeros((3, 1), np.float32), np.zeros((3, 1), np.float32))

    def run(method: LearnedModel, **tiling) -> np.ndarray:
        method.fit(sample)
        with pair:
            return np.concatenate([score for _, score in predict_scene(pair, method, **tiling)])

    # A model with a small receptive field: tiles overlapping by 2 x context give the single-tile
    # answer up to the tiles' own zero-padded borders, which the blend weights almost silence.
    torch.manual_seed(0)
    local = LearnedModel(_LocalConv(), _spec(mean=128.0, std=64.0), device="cpu")
    local_diff = np.abs(run(local, tile_size=512) - run(local, tile_size=256, overlap=64))
    assert local_diff.max() < 5e-3 and local_diff.mean() < 1e-4

    single = run(levir_tinycd, tile_size=512)
    tiled = run(levir_tinycd, tile_size=256, overlap=64)  # 3 x 3 tiles, blended
    diff = np.abs(single - tiled)
    # TinyCD's instance norms see a different extent per tile, so values move a little (measured:
    # max 0.16, mean 3e-4); the blend keeps seams from showing and decisions agree.
    assert np.isfinite(tiled).all() and diff.mean() < 2e-3 and np.percentile(diff, 99) < 0.02 and diff.max() < 0.25
    assert ((single > 0.5) == (tiled > 0.5)).mean() > 0.999


def test_cli_detect_with_a_named_foreign_checkpoint(data_dir, tmp_path, capsys):
    from deltacd.cli import main

    levir, coords = data_dir / "levircd_bitcd", data_dir / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    name = LEVIR_CROPS[0]
    a = georeference_levir_crop(levir / "A" / name, tmp_path / "A.tif", coords)
    b = georeference_levir_crop(levir / "B" / name, tmp_path / "B.tif", coords)
    checkpoint = data_dir / "checkpoints_tinycd" / "levir_best.pth"
    code = main(["-q", "detect", str(a), str(b), "-o", str(tmp_path / "out"), "--model", f"tinycd:{checkpoint}",
                 "--crs", "EPSG:4326", "--resolution", str(PIXEL_DEG), "--min-area", "0", "--coregistration", "off"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    # A model decides its own input radiometry: harmonise "auto" resolves to "none" for TinyCD.
    assert record["options"]["harmonise"] == "none" and record["radiometry"] == {"rule": "none"}
    assert record["method"]["model"] == "tinycd" and record["threshold"]["value"] == 0.5
    mask, _ = _read(tmp_path / "out" / "change_mask.tif")
    with Image.open(levir / "label" / name) as im:
        truth = np.asarray(im.convert("L")) > 0
    pred = mask == 1
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.85
