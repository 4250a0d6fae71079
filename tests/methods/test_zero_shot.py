"""Zero-shot change from frozen pretrained features: known answers, band and normalisation choices, a real LEVIR-CD pair."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from PIL import Image

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module

import deltacd
from conftest import textured_scene, write_geotiff
from deltacd.errors import InputError
from deltacd.methods import METHODS, get_method
from deltacd.methods.zero_shot import IMAGENET_PIXEL_STATS, FeatureDistance
from deltacd.prepare.sampling import PixelSample
from levir import PIXEL_DEG, georeference_levir_crop

BGRN = ("B", "G", "R", "N")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite0_cpu() -> FeatureDistance:
    return FeatureDistance(device="cpu")


def _sample(array: np.ndarray, bands=BGRN, after: np.ndarray | None = None) -> PixelSample:
    other = array if after is None else after
    return PixelSample(tuple(bands), array.reshape(array.shape[0], -1).astype(np.float32), other.reshape(other.shape[0], -1).astype(np.float32))


def test_cosine_distance_known_answers() -> None:
    f1 = torch.tensor([[1.0, 0.0], [0.0, 3.0]]).T.reshape(1, 2, 1, 2)  # vectors (1, 0) and (0, 3)
    same = FeatureDistance.cosine_distance(f1, 5 * f1)  # a gain does not change the direction
    orthogonal = FeatureDistance.cosine_distance(f1, f1.flip(1))  # (0, 1) vs (1, 0), (3, 0) vs (0, 3)
    opposite = FeatureDistance.cosine_distance(f1, -f1)
    assert same.tolist() == [[[0.0, 0.0]]]
    assert orthogonal.flatten().tolist() == pytest.approx([1.0, 1.0])
    assert opposite.flatten().tolist() == pytest.approx([2.0, 2.0])


def test_registered_and_options_are_checked() -> None:
    assert METHODS["zero-shot"] is FeatureDistance
    method = get_method("zero-shot", scales=[32, 8], device="cpu")
    assert method.scales == (8, 32) and method.context == 32 and method.size_multiple == 32
    with pytest.raises(InputError, match="scales: 3 is not a feature stride"):
        get_method("zero-shot", scales=[3])
    with pytest.raises(InputError, match="normalisation must be one of auto, encoder, scene"):
        get_method("zero-shot", normalisation="dataset")
    with pytest.raises(InputError, match="not accepted by zero-shot"):
        get_method("zero-shot", encoder_spec="x")


def test_bands_are_picked_by_name(lite0_cpu) -> None:
    scene = textured_scene((64, 64), 4, 1)
    lite0_cpu.fit(_sample(scene))  # B,G,R,N: exactly the weights' R,G,B, in their order
    assert lite0_cpu.bands == ("R", "G", "B") and lite0_cpu._index == (2, 1, 0)
    pan = FeatureDistance(device="cpu")
    pan.fit(_sample(scene[:1], bands=("PAN",)))  # no RGB: the band rule gives PAN the sum of the RGB kernels
    assert pan.bands == ("PAN",) and pan.encoder.out_channels[0] == 1
    score = pan.predict(scene[None, :1].astype(np.float32), scene[None, :1].astype(np.float32))
    assert score.shape == (1, 64, 64) and float(score.max()) == 0.0
    with pytest.raises(InputError, match="zero-shot: .*B11"):
        FeatureDistance(device="cpu").fit(_sample(scene[:2], bands=("B11", "B12")))


def test_normalisation_follows_the_data_units() -> None:
    rng = np.random.default_rng(0)
    eight_bit = rng.integers(0, 256, size=(3, 50, 50)).astype(np.float32)
    method = FeatureDistance(device="cpu")
    method.fit(_sample(eight_bit, bands=("R", "G", "B")))
    assert method.normalisation_used == "encoder"
    assert method.describe()["mean"] == pytest.approx([127.0] * 3) and method.describe()["std"] == pytest.approx([128.0] * 3)
    twelve_bit = textured_scene((50, 50), 4, 2).astype(np.float32)
    method.fit(_sample(twelve_bit))
    assert method.normalisation_used == "scene"
    # the scene's R band, normalised, has the mean and std ImageNet pixels have in Lite0's units ((v - 127/255) / (128/255))
    x = (twelve_bit[2].ravel() - method.describe()["mean"][0]) / method.describe()["std"][0]
    mean, std = IMAGENET_PIXEL_STATS["R"]
    assert x.mean() == pytest.approx((mean - 127 / 255) / (128 / 255), abs=1e-3)
    assert x.std() == pytest.approx(std / (128 / 255), rel=1e-3)
    json.dumps(method.describe())


def test_predict_without_fit_takes_rgb_only() -> None:
    rgb = np.full((1, 3, 32, 32), 100.0, np.float32)
    assert FeatureDistance(device="cpu").predict(rgb, rgb).shape == (1, 32, 32)
    with pytest.raises(InputError, match="call fit\\(sample\\) first"):
        FeatureDistance(device="cpu").predict(np.zeros((1, 4, 32, 32), np.float32), np.zeros((1, 4, 32, 32), np.float32))


def test_inserted_textured_object_scores_higher_inside_than_outside(lite0_cpu) -> None:
    before = textured_scene((192, 192), 4, 3).astype(np.float32)
    after = before.copy()
    rows, cols = np.mgrid[:40, :40]
    after[:, 80:120, 70:110] = np.where((rows // 5 + cols // 5) % 2 == 0, 3600.0, 500.0)  # a tiled roof appears
    lite0_cpu.fit(_sample(before, after=after))
    score = lite0_cpu.predict(before[None], after[None])[0]
    inside = np.zeros(score.shape, bool)
    inside[80:120, 70:110] = True
    away = np.ones(score.shape, bool)
    away[32:168, 22:158] = False  # beyond the stride-32 features' reach of the object
    assert 0.0 <= score.min() and score.max() <= 2.0
    assert np.percentile(score[inside], 10) > np.percentile(score[away], 90)
    assert score[inside].mean() > 3 * score[away].mean()


def test_identical_dates_score_zero_and_give_an_empty_mask(tmp_path) -> None:
    path = write_geotiff(tmp_path / "scene.tif", textured_scene((192, 192), 4, 4))
    result = deltacd.detect(
        path, path, tmp_path / "out", method="zero-shot", method_options={"device": "cpu"}, bands_before="B,G,R,N",
        bands_after="B,G,R,N", min_area_m2=0,
    )
    with rasterio.open(result.score) as src:
        assert np.nanmax(src.read(1)) == 0.0
    with rasterio.open(result.mask) as src:
        assert (src.read(1) == 1).sum() == 0
    assert result.record["results"]["polygons"] == 0
    assert result.record["method"]["normalisation_used"] == "scene"


def test_levir_pair_through_the_cli_finds_the_new_buildings(data_dir, tmp_path, capsys) -> None:
    from deltacd.cli import main

    levir, coords = data_dir / "levircd_bitcd", data_dir / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    name = "test_7_0256_0512.png"
    a = georeference_levir_crop(levir / "A" / name, tmp_path / "A.tif", coords)
    b = georeference_levir_crop(levir / "B" / name, tmp_path / "B.tif", coords)
    out = tmp_path / "out"
    code = main(["-q", "detect", str(a), str(b), "-o", str(out), "--method", "zero-shot", "--option", "device=cpu",
                 "--crs", "EPSG:4326", "--resolution", str(PIXEL_DEG), "--min-area", "0", "--coregistration", "off"])
    assert code == 0, capsys.readouterr().err
    assert {"change_score.tif", "change_mask.tif", "changes.gpkg", "quicklook.png", "run.json"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "run.json").read_text())
    assert record["method"]["name"] == "zero-shot" and record["method"]["normalisation_used"] == "encoder"
    assert record["method"]["bands"] == ["R", "G", "B"] and record["method"]["scales"] == [8, 16, 32]
    with rasterio.open(out / "change_score.tif") as src:
        score = src.read(1)
    with rasterio.open(out / "change_mask.tif") as src:
        pred = src.read(1) == 1
    with Image.open(levir / "label" / name) as im:
        truth = np.asarray(im.convert("L")) > 0
    assert 0.0 <= np.nanmin(score) and np.nanmax(score) <= 2.0
    assert score[truth].mean() > score[~truth].mean()
    f1 = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    print(f"zero-shot F1 on LEVIR {name}: {f1:.3f}")
    assert f1 > 0.2, f"F1 {f1:.3f}"
