"""Few-label benchmark (benchmarks/fewlabel): config validation, nested draws, summary maths, a tiny real run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")  # the benchmark trains networks: the `learn` extra; a core install skips this module
pytest.importorskip("lightning")

from conftest import needs
from deltacd.errors import InputError, OutputError
from deltacd.io.outputs import MARKER
from fewlabel.protocol import (
    OUTPUTS,
    draw_chips,
    draw_single_date_chips,
    load_few_label_config,
    run_few_label,
    summarise,
)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, data_dir: Path) -> Path:
    """3 LEVIR train crops + 1 val + 1 test crop and 1 DSIFN test crop, cut into 64 px chips (real data)."""
    from deltacd.datasets import prepare_dataset

    levir, dsifn = data_dir / "levircd_bitcd", data_dir / "dsifn_changeformer"
    config = {
        "chip_size": 64,
        "stride": 192,  # 2 x 2 chips per 256 px crop: few, spread out
        "split": {"val_fraction": 0.0, "test_fraction": 0.0},
        "sources": [
            {"kind": "chips", "name": "levir-train", "path": str(levir), "glob": "train_*", "split": "train"},
            {"kind": "chips", "name": "levir-val", "path": str(levir), "glob": "val_*", "split": "val"},
            {"kind": "chips", "name": "levir-test", "path": str(levir), "glob": "test_1*", "split": "test"},
            {"kind": "chips", "name": "dsifn-test", "path": str(dsifn), "glob": "8_3", "split": "test"},
        ],
    }
    return prepare_dataset(config, tmp_path_factory.mktemp("few_label") / "dataset")


def _config(dataset: Path, **changes) -> dict:
    values = {
        "dataset": str(dataset),
        "arms": [{"name": "scratch", "kind": "scratch"}],
        "sizes": [1, "all"],
        "seeds": [0],
    }
    values.update(changes)
    return values


# --- configuration ----------------------------------------------------------------------------


def test_config_defaults_and_arm_models(tiny_dataset):
    cfg = load_few_label_config(_config(tiny_dataset, arms=[{"name": "s", "kind": "scratch"}, {"name": "i", "kind": "imagenet"}]))
    assert cfg.sizes == [1, "all"] and cfg.steps == 300
    scratch, imagenet = (a.model_config() for a in cfg.arms)
    assert scratch["name"] == imagenet["name"] == "siamese-unet"
    assert scratch["kwargs"]["encoder_weights"] == "random" and "encoder_weights" not in imagenet["kwargs"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"stepz": 10}, "unknown setting(s) stepz"),
        ({"arms": [{"name": "a", "kind": "pretrained"}]}, "arms[a]: setting kind"),
        ({"arms": [{"name": "a", "kind": "scratch", "colour": 1}]}, "arms[a]: unknown setting(s) colour"),
        ({"sizes": [0, 2]}, "setting sizes"),
        ({"sizes": ["most"]}, "setting sizes"),
        ({"sizes": [2, 2]}, "distinct"),
        ({"arms": [{"name": "a", "kind": "single_date"}]}, "needs dataset"),
        ({"arms": [{"name": "a", "kind": "tinycd"}]}, "needs tinycd_checkpoint"),
        ({"arms": [{"name": "a", "kind": "scratch"}, {"name": "a", "kind": "imagenet"}]}, "used twice"),
        ({"arms": [{"name": "a", "kind": "zero_shot", "lr": 0.1}]}, "trains nothing"),
    ],
)
def test_config_errors_are_one_line_input_errors(tiny_dataset, tmp_path, changes, expected):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(_config(tiny_dataset, **changes)))
    with pytest.raises(InputError) as info:
        load_few_label_config(path)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert str(path) in message


# --- draws ------------------------------------------------------------------------------------


def test_draw_is_deterministic_nested_and_shared():
    pool = [f"chip{i}" for i in range(20)]
    for seed in (0, 1, 7):
        draws = [draw_chips(pool, n, seed=seed) for n in (1, 2, 4, 8)]
        assert draws == [draw_chips(pool, n, seed=seed) for n in (1, 2, 4, 8)]  # same on a rerun
        for small, large in zip(draws, draws[1:]):
            assert large[: len(small)] == small  # nested
        assert len(set(draws[-1])) == 8
    assert draw_chips(pool, 4, seed=0) != draw_chips(pool, 4, seed=1)
    assert sorted(draw_chips(pool, "all", seed=3)) == sorted(pool)
    assert sorted(draw_chips(pool, 50, seed=3)) == sorted(pool)  # larger than the pool: all of it


def test_single_date_draw_gives_real_pairs_from_two_chips():
    pairs = [("a", "b"), ("a", "a"), ("c", "d"), ("b", "c"), ("d", "d"), ("e", "a")]
    for seed in range(5):
        chips = [draw_single_date_chips(pairs, n, seed=seed)[0] for n in (1, 2, 3, "all")]
        for small, large in zip(chips, chips[1:]):
            assert large[: len(small)] == small
        assert sorted(chips[-1]) == ["a", "b", "c", "d", "e"]
        two, used = draw_single_date_chips(pairs, 2, seed=seed)
        assert any(pairs[i][0] != pairs[i][1] for i in used)  # at least one real STAR pair
        assert all(set(pairs[i]) <= set(two) for i in used)
    one, used = draw_single_date_chips(pairs, 1, seed=0)
    assert all(pairs[i] == (one[0], one[0]) for i in used)  # one chip: only its identity pair


# --- summary maths ----------------------------------------------------------------------------


def test_summary_mean_std_min_max_over_seeds():
    rows = [
        {"arm": "a", "kind": "scratch", "size": "2", "n_chips": 2, "seed": s, "group": "G", "f1": f, "iou": f / 2,
         "precision": 0.5, "recall": 0.5, "train_s": 10.0}
        for s, f in ((0, 0.2), (1, 0.4), (2, 0.9))
    ]
    rows.append({"arm": "z", "kind": "zero_shot", "size": "0", "n_chips": 0, "seed": None, "group": "G", "f1": 0.3,
                 "iou": 0.1, "precision": 0.2, "recall": 0.6, "train_s": 0.0})
    rows.append({**rows[0], "seed": 3, "f1": math.nan, "iou": math.nan, "precision": math.nan, "recall": math.nan})  # no run: ignored
    summary = {(s["arm"], s["group"]): s for s in summarise(rows)}
    a = summary[("a", "G")]
    assert a["n_seeds"] == 3
    assert a["f1_mean"] == pytest.approx(0.5)
    assert a["f1_std"] == pytest.approx(math.sqrt(((0.3) ** 2 + 0.1**2 + 0.4**2) / 2))  # sample std, ddof 1
    assert (a["f1_min"], a["f1_max"]) == (0.2, 0.9)
    assert a["iou_mean"] == pytest.approx(0.25)
    z = summary[("z", "G")]
    assert z["n_seeds"] == 1 and z["f1_mean"] == 0.3 and math.isnan(z["f1_std"])


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_writes_every_output(tiny_dataset, tmp_path):
    import torch

    torch.set_num_threads(1)
    values = _config(
        tiny_dataset,
        arms=[{"name": "scratch", "kind": "scratch"}, {"name": "zero-shot", "kind": "zero_shot"}],
        sizes=[1], steps=2, eval_every=1, warmup_steps=0, batch_size=2, device="cpu", threads=1,
        test_groups={"LEVIR": ["levir-test"], "DSIFN": ["dsifn-test"]}, work_dir=str(tmp_path / "work"),
    )
    out = tmp_path / "bench"
    result = run_few_label(values, out)
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER) == sorted(OUTPUTS)
    done = tmp_path / "work" / "runs" / "scratch__n1__s0" / "result.json"
    assert done.is_file() and not (done.parent / "train" / "model.safetensors").exists()  # weights dropped once scored
    with (out / "few_label.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["arm"], r["size"], r["group"]) for r in rows} == {
        ("scratch", "1", "LEVIR"), ("scratch", "1", "DSIFN"), ("zero-shot", "0", "LEVIR"), ("zero-shot", "0", "DSIFN"),
    }
    for r in rows:
        assert 0.0 <= float(r["f1"]) <= 1.0
        assert int(r["tp"]) + int(r["fn"]) > 0  # the test chips hold change
    scratch = [r for r in rows if r["arm"] == "scratch"]
    assert all(int(r["steps"]) == 2 and r["n_chips"] == "1" for r in scratch)
    with (out / "few_label_summary.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert "| scratch | scratch | 1 |" in (out / "few_label.md").read_text()
    record = json.loads((out / "few_label.json").read_text())
    assert record["machine"]["torch"] == torch.__version__ and record["config"]["steps"] == 2
    assert (out / "few_label.png").read_bytes()[:4] == b"\x89PNG"
    assert len(result.rows) == 4

    with pytest.raises(OutputError):
        run_few_label(values, out)  # refuses an existing folder unless overwrite

    stamp = done.stat().st_mtime_ns
    again = run_few_label(values, out, overwrite=True)  # same settings: the finished run is reused, not retrained
    assert done.stat().st_mtime_ns == stamp
    assert [r["f1"] for r in again.rows] == [r["f1"] for r in result.rows]


def test_cli_refuses_an_existing_output_folder_in_one_line(tiny_dataset, tmp_path, capsys):
    from few_label import main

    config = tmp_path / "few.yaml"
    config.write_text(f"dataset: {tiny_dataset}\narms: [{{name: zs, kind: zero_shot}}]\n")
    out = tmp_path / "exists"
    out.mkdir()
    assert main(["-q", str(config), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("deltacd: error:") and "--overwrite" in err and "\n" not in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("balance", "expected"), [({"0": 300, "1": 100}, 3.0), ({"0": 0, "1": 4096}, 1.0), ({"0": 4096, "1": 0}, 1.0)])
def test_auto_pos_weight_falls_back_to_one_when_a_class_is_absent(tiny_dataset, balance, expected):
    from fewlabel.protocol import _pos_weight

    cfg = load_few_label_config(_config(tiny_dataset))
    assert _pos_weight(cfg, {**balance, "ignored": 0}) == expected


@pytest.mark.slow
@needs("torchgeo")
def test_peer_benchmark_trains_torchgeo_and_deltacd_on_the_same_chips(tiny_dataset, tmp_path):
    """`python benchmarks/few_label.py` with torchgeo arms: torchgeo's ChangeDetectionTask beside deltacd's recipe, same
    chips, steps and scoring."""
    import yaml

    from few_label import main

    values = _config(
        tiny_dataset,
        arms=[{"name": "deltacd", "kind": "recipe", "train": {"start": "scratch"}},
              {"name": "torchgeo-fcsiamdiff", "kind": "torchgeo", "model": {"name": "fcsiamdiff", "kwargs": {"backbone": "resnet18"}}},
              {"name": "torchgeo-unet", "kind": "torchgeo", "model": {"name": "unet", "kwargs": {"backbone": "resnet18"}}}],
        sizes=[1], steps=2, eval_every=1, warmup_steps=0, batch_size=2, device="cpu", threads=1,
        test_groups={"LEVIR": ["levir-test"]}, work_dir=str(tmp_path / "work"), keep_models=True,
    )
    config = tmp_path / "peers.yaml"
    config.write_text(yaml.safe_dump(values))
    out = tmp_path / "peers"
    assert main(["-q", str(config), "-o", str(out)]) == 0
    with (out / "few_label.csv").open() as handle:
        rows = {r["arm"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"deltacd", "torchgeo-fcsiamdiff", "torchgeo-unet"}
    for r in rows.values():
        assert r["steps"] == "2" and r["n_chips"] == "1" and 0.0 <= float(r["f1"]) <= 1.0
        assert int(r["tp"]) + int(r["fn"]) == int(rows["deltacd"]["tp"]) + int(rows["deltacd"]["fn"])  # same test pixels
    assert float(rows["torchgeo-unet"]["threshold"]) == 0.5 and float(rows["deltacd"]["threshold"]) != 0.5
    table = (out / "few_label.md").read_text()
    assert "| torchgeo-fcsiamdiff | torchgeo | 1 |" in table and "| deltacd | recipe | 1 |" in table
    used = yaml.safe_load((tmp_path / "work" / "runs" / "deltacd__n1__s0" / "train" / "config_used.yaml").read_text())
    assert used["start"] == "scratch" and used["balance_sources"] is True and used["validation"] == "per_source"
    assert used["model"]["kwargs"]["encoder_weights"] == "random"


def test_peer_arm_errors_are_one_line(tiny_dataset):
    with pytest.raises(InputError, match=r"arms\[tg\].model: torchgeo model 'bit'; use one of fcsiamdiff"):
        load_few_label_config(_config(tiny_dataset, arms=[{"name": "tg", "kind": "torchgeo", "model": {"name": "bit"}}]))
    with pytest.raises(InputError, match=r"arms\[r\].train: out cannot be set here"):
        load_few_label_config(_config(tiny_dataset, arms=[{"name": "r", "kind": "recipe", "train": {"out": "x"}}]))
