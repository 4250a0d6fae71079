"""CVA and IR-MAD on cases with exact answers; thresholds from scene histograms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from deltacd.errors import InputError
from deltacd.methods import get_method
from deltacd.methods.cva import CVA
from deltacd.methods.irmad import IRMAD
from deltacd.postprocess.histogram import Histogram
from deltacd.postprocess.threshold import chi2_threshold, otsu_threshold
from deltacd.prepare.sampling import PixelSample


def test_cva_magnitude_is_the_scaled_euclidean_norm():
    method = CVA()
    method.scale = np.array([1.0, 2.0], dtype=np.float32)
    before = np.zeros((1, 2, 1, 1), np.float32)
    after = np.array([3.0, 8.0], np.float32).reshape(1, 2, 1, 1)
    assert method.predict(before, after)[0, 0, 0] == pytest.approx(5.0)  # sqrt(3^2 + (8/2)^2)


def test_cva_scale_is_the_robust_spread_of_date_one():
    rng = np.random.default_rng(1)
    x = rng.normal(0, [[1.0], [10.0]], size=(2, 100000)).astype("float32")
    method = CVA()
    method.fit(PixelSample(("R", "N"), x, x))
    np.testing.assert_allclose(method.scale, [1.0, 10.0], rtol=0.02)


def _correlated_dates(n=40000, bands=4, seed=0):
    rng = np.random.default_rng(seed)
    before = rng.normal(size=(bands, n))
    mixing = np.eye(bands) + 0.2 * rng.normal(size=(bands, bands))
    after = 2.0 * (mixing @ before) + 5.0 + 0.3 * rng.normal(size=(bands, n))
    return before, after


def test_irmad_chi2_statistic_of_unchanged_pixels_follows_chi2():
    before, after = _correlated_dates()
    method = IRMAD()
    method.fit(PixelSample(("1", "2", "3", "4"), before.astype("float32"), after.astype("float32")))
    z = method.statistic(before, after)
    # Unchanged Gaussian data: Z ~ chi2(4), mean 4 and 1 % above the 0.99 quantile.
    assert z.mean() == pytest.approx(4.0, rel=0.1)
    assert (z > chi2.ppf(0.99, 4)).mean() == pytest.approx(0.01, abs=0.006)


def test_irmad_is_invariant_to_an_affine_change_of_date_two():
    before, after = _correlated_dates()
    a = IRMAD()
    a.fit(PixelSample(("1", "2", "3", "4"), before, after))
    b = IRMAD()
    b.fit(PixelSample(("1", "2", "3", "4"), before, 3.0 * after - 40.0))
    np.testing.assert_allclose(a.statistic(before, after), b.statistic(before, 3.0 * after - 40.0), rtol=1e-5, atol=1e-6)


def test_irmad_flags_injected_changes_and_few_others():
    before, after = _correlated_dates(seed=2)
    changed = np.zeros(before.shape[1], bool)
    changed[:2000] = True
    after[:, changed] += np.array([[6.0], [-6.0], [4.0], [0.0]])
    method = IRMAD()
    method.fit(PixelSample(("1", "2", "3", "4"), before, after))
    flagged = method.statistic(before, after) > method.auto_threshold(Histogram())
    assert flagged[changed].mean() > 0.95
    assert flagged[~changed].mean() < 0.03


def test_irmad_reweighting_does_not_collapse_on_a_single_band():
    rng = np.random.default_rng(3)
    before = rng.standard_t(3, size=(1, 50000))  # heavy tails, as VHR differences
    after = before + rng.standard_t(3, size=(1, 50000))
    method = IRMAD()
    method.fit(PixelSample(("PAN",), before, after))
    flagged = method.statistic(before, after) > chi2_threshold(0.99, 1)
    assert method.rho[0] < 0.99
    assert flagged.mean() < 0.3


def test_otsu_on_a_bimodal_histogram_splits_the_modes():
    rng = np.random.default_rng(0)
    hist = Histogram()
    for chunk in (rng.normal(1.0, 0.2, 50000), rng.normal(5.0, 0.5, 5000)):
        hist.update(chunk)  # accumulated in pieces, as window by window
    assert 1.8 < otsu_threshold(hist) < 4.0


def test_constant_score_flags_nothing():
    hist = Histogram()
    hist.update(np.full(1000, 3.5))
    threshold = otsu_threshold(hist)
    assert threshold == pytest.approx(3.5, abs=1e-3)
    assert not (np.full(1000, 3.5) > threshold).any()


def test_histogram_grows_its_range_without_losing_counts():
    hist = Histogram(bins=64)
    hist.update(np.array([0.0, 0.1]))
    hist.update(np.array([1000.0, -50.0, np.nan, np.inf]))
    assert hist.total == 4
    assert hist.low <= -50.0 and hist.high > 1000.0


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(InputError, match="unknown method 'foo'; available: cva, irmad"):
        get_method("foo")


def test_unknown_method_option_is_named():
    with pytest.raises(InputError, match="chi2_quantil not accepted by irmad"):
        get_method("irmad", chi2_quantil=0.9)


def test_a_registered_change_method_is_built_by_name_and_a_taken_name_is_refused():
    from deltacd.methods import METHODS, register_method
    from deltacd.methods.base import ChangeMethod

    class Half(ChangeMethod):
        name = "test-half"

        def __init__(self, *, factor: float = 0.5) -> None:
            self.factor = factor

        def predict(self, before, after):
            return (self.factor * (after - before).sum(axis=1)).astype(np.float32)

    class Other(Half):
        name = "test-half"

    try:
        assert register_method(Half) is Half and METHODS["test-half"] is Half
        assert get_method("test-half", factor=2.0).factor == 2.0
        with pytest.raises(InputError, match="factr not accepted by test-half"):
            get_method("test-half", factr=1.0)
        with pytest.raises(InputError, match="name 'test-half' is taken by Half"):
            register_method(Other)
    finally:
        METHODS.pop("test-half", None)
    with pytest.raises(InputError, match="not a method class"):
        register_method(dict)


def test_the_engine_reads_only_attributes_the_base_class_declares():
    from deltacd.methods.base import ChangeMethod

    for attr in ("context", "size_multiple", "tile_size", "work_bytes_per_pixel", "channels", "thread_safe",
                 "score_units", "score_range", "threshold_rule", "default_harmonise"):
        assert hasattr(ChangeMethod, attr), attr
    assert (ChangeMethod.channels, ChangeMethod.thread_safe, ChangeMethod.default_harmonise) == (1, False, "pif")
    assert not hasattr(CVA(), "gsd_m")  # only networks run at a training resolution


def test_damage_methods_register_in_the_same_registry():
    from deltacd.damage.methods import ChangeRules, DamageMethod, build_damage_method
    from deltacd.methods import DAMAGE_METHODS, METHODS, register_method

    assert DAMAGE_METHODS["change"] is ChangeRules and "change" not in METHODS

    @register_method
    class Flat(DamageMethod):
        name = "test-flat"

        def grade(self, context):
            raise NotImplementedError

    try:
        assert DAMAGE_METHODS["test-flat"] is Flat and "test-flat" not in METHODS
        method = build_damage_method("test-flat", model=None, min_valid_share=0.3)
        assert isinstance(method, Flat) and method.min_valid_share == 0.3
        with pytest.raises(InputError, match="the test-flat method uses no model"):
            build_damage_method("test-flat", model="model.safetensors")
    finally:
        DAMAGE_METHODS.pop("test-flat", None)
    assert build_damage_method("auto", model=None, share_thresholds=(0.2, 0.4, 0.6)).share_thresholds == (0.2, 0.4, 0.6)
    with pytest.raises(InputError, match="unknown damage method 'nope'; available: auto, change, classifier, segmentation"):
        build_damage_method("nope", model=None)
    with pytest.raises(InputError, match="needs a trained model .* task: damage-classifier"):
        build_damage_method("classifier", model=None)
