"""The training recipe's pieces on synthetic data with known answers: crops, source balance, per-source validation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module
from torch.utils.data import WeightedRandomSampler

from deltacd.datasets.sampling import RandomCrops, source_weights
from deltacd.errors import InputError
from deltacd.evaluate.metrics import ScoreHistogram
from deltacd.train import ChangeDetectionTask


class _Chips(torch.utils.data.Dataset):
    """Chips whose pixel values are their own coordinates: a crop's origin can be read back."""

    def __init__(self, n: int, side: int) -> None:
        self.n, self.side = n, side

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        rows, cols = torch.meshgrid(torch.arange(self.side), torch.arange(self.side), indexing="ij")
        code = (rows * 1000 + cols).float()
        return {"before": torch.stack([code, code + 0.5]), "after": torch.stack([-code, code]),
                "label": ((rows + cols) % 3).long(), "id": f"c{index}", "source": "s"}


def test_a_crop_keeps_both_dates_and_the_label_aligned() -> None:
    torch.manual_seed(0)
    crops = RandomCrops(_Chips(1, 64), 24)
    origins = set()
    for _ in range(20):
        item = crops[0]
        assert item["before"].shape == (2, 24, 24) and item["label"].shape == (24, 24)
        top, left = divmod(int(item["before"][0, 0, 0]), 1000)
        origins.add((top, left))
        rows, cols = torch.meshgrid(torch.arange(top, top + 24), torch.arange(left, left + 24), indexing="ij")
        assert torch.equal(item["before"][0], (rows * 1000 + cols).float())
        assert torch.equal(item["after"][0], -item["before"][0])
        assert torch.equal(item["label"], ((rows + cols) % 3).long())
        assert item["id"] == "c0" and item["source"] == "s"
    assert len(origins) > 10  # a new window each time
    small = RandomCrops(_Chips(1, 16), 24)[0]
    assert small["label"].shape == (16, 16)  # chips no larger than the crop pass whole


def test_balanced_sampler_draws_each_source_at_its_share() -> None:
    sources = ["levir"] * 30 + ["dsifn"] * 90 + ["whu"] * 10
    weights = source_weights(sources)
    assert weights.sum() == pytest.approx(1.0)
    share = {s: weights[np.asarray(sources) == s].sum() for s in set(sources)}
    assert share == pytest.approx({"levir": 1 / 3, "dsifn": 1 / 3, "whu": 1 / 3})
    sampler = WeightedRandomSampler(torch.as_tensor(weights), 30000, replacement=True,
                                    generator=torch.Generator().manual_seed(0))
    drawn = Counter(sources[i] for i in sampler)
    for name in ("levir", "dsifn", "whu"):
        assert drawn[name] / 30000 == pytest.approx(1 / 3, abs=0.015)
    custom = source_weights(sources, {"levir": 3, "dsifn": 1})
    assert custom[np.asarray(sources) == "levir"].sum() == pytest.approx(0.75)
    assert custom[np.asarray(sources) == "whu"].sum() == 0.0
    with pytest.raises(InputError, match="source_shares: osm has no training chip"):
        source_weights(sources, {"osm": 1})


def _hist(scores, labels) -> ScoreHistogram:
    hist = ScoreHistogram()
    hist.update(np.asarray(scores, dtype=np.float32), np.asarray(labels))
    return hist


def test_per_source_validation_averages_each_sources_f1() -> None:
    # source A (many pixels) is separated at 0.6, source B (few pixels) at 0.3: pooled F1
    # follows A, the per-source mean finds the threshold good for both.
    a = _hist([0.9] * 50 + [0.7] * 50 + [0.5] * 400, [1] * 100 + [0] * 400)
    b = _hist([0.4, 0.35, 0.2, 0.1], [1, 1, 0, 0])
    threshold, mean, per_source = ChangeDetectionTask.best_threshold_per_source({"A": a, "B": b})
    # above 0.2 and up to 0.35: B perfect (F1 1), A keeps every change and its 400 false 0.5s (F1 1/3)
    assert 0.2 < threshold <= 0.35
    assert per_source == pytest.approx({"A": 1 / 3, "B": 1.0}) and mean == pytest.approx(2 / 3)
    pooled = ScoreHistogram()
    for scores, labels in (([0.9] * 50 + [0.7] * 50 + [0.5] * 400, [1] * 100 + [0] * 400), ([0.4, 0.35, 0.2, 0.1], [1, 1, 0, 0])):
        pooled.update(np.asarray(scores, dtype=np.float32), np.asarray(labels))
    pooled_threshold, pooled_f1 = ChangeDetectionTask.best_threshold(pooled)
    assert 0.5 < pooled_threshold <= 0.7 and pooled_f1 == pytest.approx(200 / 202)  # A decides, B's changes all missed
    # a source without any changed pixel and none predicted is left out of the mean, not counted as 0
    empty = _hist([0.0, 0.0], [0, 0])
    assert ChangeDetectionTask.best_threshold_per_source({"A": a, "B": b, "C": empty})[1] == pytest.approx(2 / 3)
