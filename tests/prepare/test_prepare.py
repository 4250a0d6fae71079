"""Co-registration (known shifts are recovered and removed) and radiometric harmonisation."""

from __future__ import annotations

import numpy as np
import pytest

from deltacd.io.rasters import open_image
from deltacd.prepare.align import align_pair
from deltacd.prepare.coregistration import estimate_shift
from deltacd.prepare.radiometry import LinearHarmoniser, QuantileHarmoniser, fit_harmoniser
from deltacd.prepare.sampling import PixelSample, sample_pixels


@pytest.mark.parametrize("shift", [(0.3, -0.7), (2.25, 1.5), (-3.6, 0.0)])
def test_known_subpixel_shift_is_recovered_within_a_tenth_of_a_pixel(scene_pair, shift):
    before, after = scene_pair(shape=(512, 512), bands=3, shift=shift)
    with align_pair(open_image(before), open_image(after)) as pair:
        report = estimate_shift(pair, block_size=128)
    assert report.dx == pytest.approx(shift[0], abs=0.1)
    assert report.dy == pytest.approx(shift[1], abs=0.1)
    assert report.dx_m == pytest.approx(shift[0] * 0.5, abs=0.05)  # 0.5 m pixels
    assert report.blocks_used >= report.blocks_measured // 2


def test_large_offset_is_found_coarse_to_fine(scene_pair):
    before, after = scene_pair(shape=(1024, 1024), bands=1, shift=(37.0, -21.0))
    with align_pair(open_image(before), open_image(after)) as pair:
        report = estimate_shift(pair, block_size=64, coarse_size=256)
    assert (report.dx, report.dy) == pytest.approx((37.0, -21.0), abs=0.1)


def test_correcting_the_shift_leaves_no_residual(scene_pair):
    before, after = scene_pair(shape=(512, 512), bands=3, shift=(1.4, -0.6))
    with align_pair(open_image(before), open_image(after)) as pair:
        report = estimate_shift(pair, block_size=128)
        corrected = pair.replace(after_shift=(report.dx, report.dy))
        window = corrected.read(corrected.grid.full_window)
        residual = estimate_shift(corrected.replace(), block_size=128)  # measures the raw pair again
        inner = (slice(None), slice(20, -20), slice(20, -20))
        error = np.abs(window.after[inner] - window.before[inner]).mean()
        raw = pair.read(pair.grid.full_window)
        error_raw = np.abs(raw.after[inner] - raw.before[inner]).mean()
    assert residual.dx == pytest.approx(report.dx, abs=1e-6)
    assert error < 0.25 * error_raw


def test_real_pair_shift_is_reported_in_pixels_and_metres(data_dir):
    folder = data_dir / "puertorico-maria_matthinfo"
    with align_pair(open_image(folder / "Pre_Event_Grids_In_TIFF/tile_0_107.tif"),
                    open_image(folder / "Post_Event_Grids_In_TIFF/tile_0_107.tif")) as pair:
        report = estimate_shift(pair)
    # Maxar pre/post tiles of San Juan: date 2 lies about 16 px (4.9 m) north; the east-west offset
    # varies over the tile (parallax of buildings), from about 0 to 9 px, measured block by block.
    assert report.dy == pytest.approx(-16.0, abs=1.0)
    assert 0.0 < report.dx < 9.0
    assert report.blocks_used >= 10
    assert report.dy_m == pytest.approx(report.dy * 0.30517578125)
    assert report.describe()["magnitude_m"] == pytest.approx(np.hypot(report.dx_m, report.dy_m))


def test_pif_harmonisation_recovers_a_linear_gain_and_offset(scene_pair):
    before, after = scene_pair(bands=4, gain=0.8, offset=150.0, change=(30, 30, 60, 60))
    with align_pair(open_image(before), open_image(after)) as pair:
        harmoniser = fit_harmoniser(sample_pixels(pair), "pif")
    assert isinstance(harmoniser, LinearHarmoniser)
    # after = 0.8 before + 150  =>  before = 1.25 after - 187.5, fitted on unchanged pixels only.
    np.testing.assert_allclose(harmoniser.gain, 1.25, rtol=0.02)
    np.testing.assert_allclose(harmoniser.offset, -187.5, atol=25)


def test_histogram_matching_maps_quantiles_onto_date_one():
    rng = np.random.default_rng(0)
    before = rng.gamma(2.0, 300.0, size=(2, 50000)).astype("float32")
    after = (before**0.9 * 3.0).astype("float32")  # non-linear radiometric difference
    harmoniser = fit_harmoniser(PixelSample(("R", "N"), before, after), "histogram")
    assert isinstance(harmoniser, QuantileHarmoniser)
    mapped = harmoniser(after)
    np.testing.assert_allclose(np.percentile(mapped, [10, 50, 90], axis=1), np.percentile(before, [10, 50, 90], axis=1), rtol=0.01)


def test_no_harmonisation_returns_none():
    sample = PixelSample(("PAN",), np.ones((1, 10), "float32"), np.ones((1, 10), "float32"))
    assert fit_harmoniser(sample, "none") is None
