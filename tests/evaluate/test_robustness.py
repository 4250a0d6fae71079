"""Perturbations of the after image (known statistics) and robustness runs on a synthetic pair with a known change."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import rasterio
from PIL import Image
from scipy import ndimage

from conftest import textured_scene, write_geotiff
from deltacd.errors import InputError, OutputError
from deltacd.evaluate import perturb
from deltacd.evaluate.perturb import PERTURBATIONS, data_range_of, get_perturbation
from deltacd.evaluate.robustness import (
    LabelledPair,
    ScoreRow,
    compare_methods,
    cross_dataset,
    pool_rows,
    reference_on_grid,
    robustness,
)
from deltacd.io.grid import Grid
from deltacd.io.outputs import MARKER
from deltacd.io.rasters import open_image
from deltacd.prepare.align import align_pair
from deltacd.prepare.coregistration import estimate_shift

CHANGE = (40, 50, 30, 30)  # row, col, height, width of the changed box


def rgb8(shape=(96, 128), seed=0) -> np.ndarray:
    """An 8-bit RGB scene with edges and texture, float32 [3, H, W]."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(size=(3, *shape)), (0, 1.5, 1.5))
    base = (base - base.min()) / (base.max() - base.min()) * 200 + 20
    return np.rint(base).astype(np.float32)


def psnr(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    return 10 * math.log10(data_range**2 / float(np.mean((x.astype(np.float64) - y) ** 2)))


def gradient_energy(x: np.ndarray) -> float:
    return float(sum((np.diff(x, axis=a) ** 2).sum() for a in (1, 2)))


def high_frequency_power(x: np.ndarray, cutoff: float) -> float:
    """Power at radial spatial frequencies above ``cutoff`` cycles/pixel, summed over bands."""
    spectrum = np.abs(np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True))) ** 2
    fy = np.fft.fftfreq(x.shape[1])[:, None]
    fx = np.fft.fftfreq(x.shape[2])[None, :]
    return float(spectrum[:, np.hypot(fx, fy) > cutoff].sum())


# --------------------------------------------------------------------------------------------
# perturbations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PERTURBATIONS))
@pytest.mark.parametrize("bands,data_range", [(3, 255.0), (4, 4095.0)])
def test_strength_zero_is_the_identity(name, bands, data_range):
    image = textured_scene((40, 52), bands, seed=2).astype(np.float32)
    if data_range == 255:
        image = np.rint(image / 4095 * 255)
    out = PERTURBATIONS[name](image, 0.0, data_range=data_range, seed=3)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_array_equal(out, image)
    assert out is not image


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_default_strengths_start_at_zero_and_change_the_image(name):
    p = PERTURBATIONS[name]
    assert p.strengths[0] == 0 and list(p.strengths) == sorted(p.strengths) and p.units
    image = rgb8()
    out = p(image, p.strengths[-1], data_range=255, seed=0)
    assert out.shape == image.shape and not np.allclose(out, image)


def test_perturbations_are_deterministic_given_the_seed():
    image = rgb8()
    np.testing.assert_array_equal(perturb.noise(image, 0.02, data_range=255, seed=5), perturb.noise(image, 0.02, data_range=255, seed=5))
    assert not np.array_equal(perturb.noise(image, 0.02, data_range=255, seed=5), perturb.noise(image, 0.02, data_range=255, seed=6))


def test_gain_scales_each_band_mean_monotonically():
    image = rgb8()
    means = [perturb.gain(image, s, seed=1).mean(axis=(1, 2)) for s in (0.0, 0.1, 0.3, 0.5)]
    ratios = np.array(means) / image.mean(axis=(1, 2))
    assert np.all(np.diff(ratios, axis=0) > 0)  # every band brighter at each step
    assert np.all(ratios[-1] >= 1.25 - 1e-6) and np.all(ratios[-1] <= 1.5 + 1e-6)  # 1 + 0.5 w, w in [0.5, 1]
    assert np.ptp(ratios[-1]) > 0  # bands change unequally: a colour cast


def test_offset_adds_a_fraction_of_the_range():
    image = rgb8()
    added = (perturb.offset(image, 0.1, data_range=255, seed=1) - image).mean(axis=(1, 2))
    assert np.all((added >= 0.05 * 255 - 1e-3) & (added <= 0.1 * 255 + 1e-3))


def test_gamma_keeps_black_and_full_scale_and_darkens_midtones():
    image = np.array([[[0.0, 1000.0, 2048.0, 4095.0]]], np.float32)
    out = perturb.gamma(image, 0.5, data_range=4095)
    assert out[0, 0, 0] == 0 and out[0, 0, 3] == pytest.approx(4095, rel=1e-6)
    assert out[0, 0, 1] < 1000 and out[0, 0, 2] < 2048


def test_haze_reduces_contrast_and_brightens():
    image = rgb8()
    out = perturb.haze(image, 0.3, data_range=255)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0.7 * image.std(axis=(1, 2)), rtol=1e-4)
    assert np.all(out.mean(axis=(1, 2)) > image.mean(axis=(1, 2)))


@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.05])
def test_noise_adds_the_expected_variance(sigma):
    image = rgb8((128, 128))
    diff = perturb.noise(image, sigma, data_range=4095, seed=0) - image
    assert abs(float(diff.mean())) < 0.05 * sigma * 4095
    assert float(diff.std()) == pytest.approx(sigma * 4095, rel=0.03)


def test_blur_lowers_the_gradient_energy_monotonically():
    image = rgb8()
    energies = [gradient_energy(perturb.blur(image, s)) for s in (0.0, 0.5, 1.0, 2.0, 3.0)]
    assert all(b < a for a, b in zip(energies, energies[1:], strict=False))


def test_coarsen_removes_high_frequencies_and_keeps_the_mean():
    image = np.random.default_rng(0).normal(100, 10, size=(2, 120, 96)).astype(np.float32)  # white: every frequency
    factors = (1, 1.5, 2, 3, 4)
    powers = [high_frequency_power(perturb.coarsen(image, f), 0.1) for f in factors]
    assert all(b < a for a, b in zip(powers, powers[1:], strict=False))
    for f in factors[1:]:  # above the coarse grid's Nyquist frequency 1 / (2 f) almost nothing is left
        nyquist = 0.5 / f
        assert high_frequency_power(perturb.coarsen(image, f), nyquist) < 0.03 * high_frequency_power(image, nyquist)
    out = perturb.coarsen(image, 2.5)  # non-integer factor: area-weighted, mean kept
    assert out.shape == image.shape
    assert out.mean() == pytest.approx(image.mean(), rel=0.01)
    with pytest.raises(InputError, match="coarsen"):
        perturb.coarsen(image, 0.5)


@pytest.mark.parametrize("bands,data_range", [(3, 255.0), (1, 255.0), (4, 4095.0)])
def test_jpeg_psnr_falls_as_quality_falls(bands, data_range):
    image = rgb8()[:1] if bands == 1 else rgb8()
    if bands == 4:
        image = np.concatenate([image, image[:1]]) * (4095 / 255)
    values = [psnr(image, perturb.jpeg(image, s, data_range=data_range), data_range) for s in (5, 25, 50, 75, 95)]
    assert all(b < a for a, b in zip(values, values[1:], strict=False))
    assert values[0] > 30


@pytest.mark.parametrize("strength,angle", [(0.5, 45.0), (1.0, 0.0), (2.0, 45.0), (3.0, 90.0)])
def test_shift_moves_the_scene_by_the_requested_subpixel_amount(tmp_path, strength, angle):
    scene = textured_scene((256, 256), 3, seed=1)
    moved = perturb.shift(scene.astype(np.float32), strength, angle_deg=angle)
    before = write_geotiff(tmp_path / "before.tif", scene)
    after = write_geotiff(tmp_path / "after.tif", moved)
    with align_pair(open_image(before), open_image(after)) as pair:
        report = estimate_shift(pair, block_size=128)
    dx, dy = strength * math.cos(math.radians(angle)), strength * math.sin(math.radians(angle))
    assert report.dx == pytest.approx(dx, abs=0.08)
    assert report.dy == pytest.approx(dy, abs=0.08)


def test_bad_strength_and_shape_are_one_line_input_errors():
    with pytest.raises(InputError, match=r"haze: strength 1\.5 outside") as err:
        perturb.haze(rgb8(), 1.5)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"\[C, H, W\]"):
        perturb.blur(np.zeros((8, 8)), 1.0)


def test_unknown_perturbation_lists_the_available_ones():
    with pytest.raises(InputError) as err:
        get_perturbation("fog")
    message = str(err.value)
    assert "'fog'" in message and "\n" not in message
    assert all(name in message for name in PERTURBATIONS)


def test_data_range_is_guessed_from_type_and_values():
    assert data_range_of(np.array([7, 200], np.uint8)) == 255
    assert data_range_of(np.array([100, 3000], np.uint16)) == 4095
    assert data_range_of(np.array([100.0, 3000.0], np.float32), "uint16") == 4095
    assert data_range_of(np.array([0.1, 0.8], np.float32)) == pytest.approx(0.8)


# --------------------------------------------------------------------------------------------
# robustness runs
# --------------------------------------------------------------------------------------------


@pytest.fixture
def known_change(tmp_path):
    """before.tif, after.tif (a box changed), reference.tif (the box), all on one 128x128 grid."""

    def make(name="pair", seed=0):
        before = textured_scene((128, 128), 4, seed=seed)
        after = before.astype(np.float64)
        r, c, h, w = CHANGE
        after[:, r : r + h, c : c + w] = 3900 - after[:, r : r + h, c : c + w] * 0.5
        reference = np.zeros((128, 128), np.uint8)
        reference[r : r + h, c : c + w] = 1
        reference[:4] = 255  # unlabelled rows, not counted
        b = write_geotiff(tmp_path / f"{name}_before.tif", before)
        a = write_geotiff(tmp_path / f"{name}_after.tif", after.astype(np.uint16))
        ref = write_geotiff(tmp_path / f"{name}_reference.tif", reference)
        return b, a, ref

    return make


FAST = {"min_area_m2": 0, "sample_pixels": 20_000}


def test_robustness_scores_a_known_change_and_writes_its_outputs(tmp_path, known_change):
    before, after, reference = known_change()
    result = robustness(
        before, after, reference, tmp_path / "out", method="cva", perturbations=["shift", "noise"],
        strengths={"shift": [2.0], "noise": [0.02]}, detect_options=FAST,
    )
    assert {p.name for p in result.out_dir.iterdir()} == {"robustness.csv", "robustness.json", "robustness.png", MARKER}
    with result.csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["perturbation"], float(r["strength"])) for r in rows] == [("shift", 0), ("shift", 2), ("noise", 0), ("noise", 0.02)]
    for column in ("units", "f1", "precision", "recall", "iou", "changed_fraction", "threshold"):
        assert all(r[column] != "" for r in rows), column
    base = result.rows[0]
    assert base.f1 > 0.97 and base.score("iou") > 0.95
    assert base.tp + base.fp + base.fn + base.tn == 124 * 128  # the 4 unlabelled rows are not counted
    assert result.rows[1].f1 < base.f1  # a 2 px misregistration costs accuracy at the box edges
    record = json.loads(result.json.read_text())
    assert record["settings"]["perturbations"]["shift"]["strengths"] == [0.0, 2.0]
    assert record["settings"]["pairs"][0]["data_range"] == 4095
    assert len(record["rows"]) == 4
    with Image.open(result.png) as png:
        assert png.width > 300


def test_output_grid_is_the_input_grid_and_keep_runs_keeps_masks(tmp_path, known_change):
    before, after, reference = known_change()
    result = robustness(before, after, reference, tmp_path / "out", perturbations="blur", strengths=[1.0],
                        detect_options=FAST, keep_runs=True)
    masks = sorted((result.out_dir / "runs").glob("*/change_mask.tif"))
    assert len(masks) == 2  # strength 0 and 1
    with rasterio.open(before) as src, rasterio.open(masks[1]) as out:
        Grid.of(src).check_same(Grid.of(out))


def test_options_pass_through_to_detect_and_methods_share_the_panels(tmp_path, known_change):
    before, after, reference = known_change()
    result = compare_methods(
        before, after, reference, tmp_path / "out", methods=["cva", "irmad"], perturbations=["gain"], strengths=[0.5],
        detect_options={**FAST, "harmonise": "none"}, keep_runs=True,
    )
    record = json.loads(result.json.read_text())
    assert record["settings"]["detect_options"]["harmonise"] == "none"
    runs = sorted((result.out_dir / "runs").glob("*/run.json"))
    assert len(runs) == 4
    for run in runs:
        options = json.loads(run.read_text())["options"]
        assert options["harmonise"] == "none" and options["min_area_m2"] == 0
    assert [r.method for r in result.rows] == ["cva", "cva", "irmad", "irmad"]
    table = result.table()
    assert table.splitlines()[0].split()[-2:] == ["cva", "irmad"] and len(table.splitlines()) == 3


def test_several_pairs_pool_the_counts(tmp_path, known_change):
    pairs = [LabelledPair(n, *known_change(n, seed=i), source=s) for i, (n, s) in enumerate([("a", "one"), ("b", "one"), ("c", "two")])]
    result = cross_dataset("cva", pairs, tmp_path / "cross", detect_options=FAST)
    assert [r.source for r in result.rows] == ["one", "two"]
    assert result.rows[0].pairs == 2
    one = [r for r in result.pair_rows if r.source == "one"]
    assert result.rows[0].tp == sum(r.tp for r in one) and result.rows[0].fp == sum(r.fp for r in one)
    assert result.csv.exists() and (result.out_dir / "cross_dataset_pairs.csv").exists()
    assert "one" in result.table()


def test_pool_rows_gives_the_micro_average():
    common = dict(method="m", perturbation="p", strength=1.0, units="u", changed_pixels=0, valid_pixels=10, seconds=1.0)
    rows = [ScoreRow(pair="a", tp=8, fp=2, fn=0, tn=90, threshold=1.0, **common),
            ScoreRow(pair="b", tp=0, fp=0, fn=10, tn=90, threshold=3.0, **common)]
    (pooled,) = pool_rows(rows)
    assert pooled.f1 == pytest.approx(2 * 8 / (2 * 8 + 2 + 10))  # not the mean of the per-pair F1s
    assert pooled.pairs == 2 and pooled.threshold == 2.0 and pooled.pair == "pooled"


def test_unknown_perturbation_is_refused_before_any_run(tmp_path, known_change):
    before, after, reference = known_change()
    with pytest.raises(InputError) as err:
        robustness(before, after, reference, tmp_path / "out", perturbations=["shift", "fog"])
    assert "fog" in str(err.value) and "jpeg" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_existing_output_folder_is_refused(tmp_path, known_change):
    before, after, reference = known_change()
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="overwrite"):
        robustness(before, after, reference, tmp_path / "out", perturbations="shift", strengths=[1.0])


def test_bad_options_are_refused_with_detects_message(tmp_path, known_change):
    before, after, reference = known_change()
    with pytest.raises(InputError, match="harmonize"):
        robustness(before, after, reference, tmp_path / "out", detect_options={"harmonize": "none"})
    with pytest.raises(InputError, match="method"):
        robustness(before, after, reference, tmp_path / "out", detect_options={"method": "irmad"})


def test_reference_must_fit_the_grid_and_have_labels(tmp_path, known_change):
    before, _, _ = known_change()
    with rasterio.open(before) as src:
        grid = Grid.of(src)
    with pytest.raises(InputError, match=r"shape \(10, 10\)"):
        reference_on_grid(np.zeros((10, 10), np.uint8), grid)
    with pytest.raises(InputError, match="ignore_value=None"):
        reference_on_grid(np.full(grid.shape, 255, np.uint8), grid)
    labels, counted = reference_on_grid(np.full(grid.shape, 255, np.uint8), grid, ignore_value=None)
    assert labels.all() and counted.all()


def test_inputs_larger_than_max_pixels_are_refused_with_the_fix(tmp_path, known_change):
    before, after, reference = known_change()
    with pytest.raises(InputError, match=r"128x128 px .* exceeds max_pixels=1000 .* AOI") as err:
        robustness(before, after, reference, tmp_path / "out", perturbations="blur", max_pixels=1000)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_robustness_runs_two_methods_and_prints_the_table(tmp_path, known_change, capsys):
    from deltacd.cli import main

    before, after, reference = known_change()
    config = tmp_path / "detect.yaml"
    config.write_text("min_area_m2: 0\nsample_pixels: 20000\n")
    out = tmp_path / "cli"
    code = main(["-q", "robustness", str(before), str(after), str(reference), "-o", str(out), "--methods", "cva,irmad",
                 "--perturbations", "gain", "--strengths", "0.5", "--config", str(config)])
    assert code == 0
    with (out / "robustness.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["method"], float(r["strength"])) for r in rows) == [("cva", 0), ("cva", 0.5), ("irmad", 0), ("irmad", 0.5)]
    assert float(next(r for r in rows if r["method"] == "cva" and float(r["strength"]) == 0)["f1"]) > 0.97
    assert "gain" in capsys.readouterr().out


def test_cli_robustness_bad_strengths_is_one_line_and_writes_nothing(tmp_path, known_change, capsys):
    from deltacd.cli import main

    before, after, reference = known_change()
    code = main(["-q", "robustness", str(before), str(after), str(reference), "-o", str(tmp_path / "x"), "--strengths", "a,b"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("deltacd: error: --strengths") and "\n" not in err
    assert not (tmp_path / "x").exists()
