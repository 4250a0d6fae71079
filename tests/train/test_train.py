"""Training: validated config, rare-change losses, the Lightning task, and the self-describing run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module
L = pytest.importorskip("lightning")
pytest.importorskip("kornia")  # the training runs below augment their batches
load_file = pytest.importorskip("safetensors.torch").load_file

from conftest import textured_scene, write_geotiff
from deltacd.config import build_options
from deltacd.datasets.torch_dataset import ChangeChipDataset
from deltacd.errors import InputError, MissingInputError, OutputError
from deltacd.evaluate.metrics import ScoreHistogram
from deltacd.models.checkpoint import ModelSpec, load_checkpoint, read_spec, save_checkpoint
from deltacd.models.registry import CHANGE_MODELS, build_model
from deltacd.train import ChangeDetectionTask, TrainConfig, load_train_config, train
from deltacd.train.datamodule import ChangeDataModule, subset_indices
from deltacd.train.losses import build_loss, pos_weight_from_balance
from deltacd.train.module import warmup_cosine_schedule

# emitted inside Lightning with this torch version; train() itself filters it
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec.*")]

REPO = Path(__file__).resolve().parents[2]
BANDS = ("B", "G", "R", "N")
SIDE = 32
SPLITS = {"train": 8, "val": 2, "test": 2}


# --- a tiny dataset folder in the layout of `deltacd prepare-dataset` -------------------------


def _chip(rng: np.random.Generator, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One before/after/label chip with a learnable change: bright squares appear in `after`."""
    before = textured_scene((SIDE, SIDE), len(BANDS), seed)
    after = before.copy()
    label = np.zeros((SIDE, SIDE), np.uint8)
    for _ in range(rng.integers(1, 3)):
        r, c = rng.integers(0, SIDE - 10, size=2)
        after[:, r : r + 8, c : c + 8] = 3800
        label[r : r + 8, c : c + 8] = 1
    label[:, :3] = 255  # an unlabelled strip
    return before, after, label


def make_dataset(root: Path, *, splits: dict[str, int] = SPLITS, seed: int = 0) -> Path:
    """Write a dataset folder as `deltacd prepare-dataset` does: A/, B/, label/ chips, chips.csv, manifest.json."""
    rng = np.random.default_rng(seed)
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True)
    rows, train_pixels = [], []
    balance = {split: {"0": 0, "1": 0, "ignored": 0} for split in ("train", "val", "test")}
    for split, n in splits.items():
        for i in range(n):
            chip_id = f"{split}_{i:03d}"
            before, after, label = _chip(rng, seed * 1000 + len(rows))
            write_geotiff(root / "A" / f"{chip_id}.tif", before)
            write_geotiff(root / "B" / f"{chip_id}.tif", after)
            write_geotiff(root / "label" / f"{chip_id}.tif", label)
            rows.append([chip_id, split, 0, "synthetic", f"scene{len(rows)}", 0, 0, chip_id])
            for code, key in ((0, "0"), (1, "1"), (255, "ignored")):
                balance[split][key] += int((label == code).sum())
            if split == "train":
                train_pixels += [before.reshape(len(BANDS), -1), after.reshape(len(BANDS), -1)]
    with open(root / "chips.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "split", "source", "source_name", "scene", "row_off", "col_off", "block"])
        writer.writerows(rows)
    pixels = np.concatenate(train_pixels, axis=1).astype(np.float64)
    manifest = {
        "format": "deltacd-dataset/1",
        "created_utc": "2024-01-01T00:00:00Z",
        "deltacd_version": "test",
        "bands": list(BANDS),
        "dtype": "uint16",
        "chip_size": SIDE,
        "stride": SIDE,
        "ignore_index": 255,
        "label_kind": "binary",
        "classes": {"0": "no change", "1": "change"},
        "normalisation": {
            "mean": {b: float(v) for b, v in zip(BANDS, pixels.mean(axis=1))},
            "std": {b: float(v) for b, v in zip(BANDS, pixels.std(axis=1))},
        },
        "splits": dict(splits),
        "class_balance": balance,
        "sources": [{"kind": "chips", "name": "synthetic", "n_chips": len(rows)}],
        "split_rule": {"kind": "fixed"},
        "extra_targets": [],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "chips")


def _config(dataset: Path, out: Path, **overrides) -> dict:
    values = {
        "dataset": str(dataset),
        "model": {"name": "fc-siam-diff"},
        "out": str(out),
        "epochs": 2,
        "batch_size": 4,
        "num_workers": 0,
        "optimizer": {"lr": 3e-3, "warmup_epochs": 1},
        "augment": {},
        "early_stopping_patience": None,
    }
    values.update(overrides)
    return values


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epochz": 3}, "epochz"),
        ({"model": {"name": "fc-siam-diff", "kwrags": {}}}, "model.kwrags"),
        ({"loss": {"kind": "dice"}}, "loss.kind"),
        ({"loss": {"pos_weight": -2}}, "loss.pos_weight"),
        ({"precision": "64"}, "precision"),
    ],
)
def test_config_error_is_one_line_naming_the_key(dataset, tmp_path, change, named) -> None:
    out = tmp_path / "run"
    with pytest.raises(InputError) as err:
        train(_config(dataset, out, **change), progress=False)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unknown_model_lists_the_available_ones(dataset, tmp_path) -> None:
    with pytest.raises(InputError, match=r"model\.name.*unknown model 'fc-siam-dif'.*fc-siam-diff.*tinycd") as err:
        load_train_config(_config(dataset, tmp_path / "run", model={"name": "fc-siam-dif"}))
    assert "\n" not in str(err.value)


def test_missing_dataset_folder_is_a_missing_input(tmp_path) -> None:
    with pytest.raises(MissingInputError, match="dataset: folder .*nowhere does not exist") as err:
        train(_config(tmp_path / "nowhere", tmp_path / "run"), progress=False)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_yaml_config_with_a_typo_names_the_file_and_key(dataset, tmp_path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**_config(dataset, tmp_path / "run"), "batchsize": 4}))
    with pytest.raises(InputError, match=r"train\.yaml: unknown setting\(s\) batchsize"):
        load_train_config(path)


def test_band_count_in_model_kwargs_must_match_the_dataset(dataset, tmp_path) -> None:
    with pytest.raises(InputError, match="in_channels: got 3 but the dataset has 4 bands"):
        load_train_config(_config(dataset, tmp_path / "run", model={"name": "fc-siam-diff", "kwargs": {"in_channels": 3}}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_one_line_error(dataset, tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(InputError, match="accelerator='gpu'.*accelerator: auto") as err:
        train(_config(dataset, out, accelerator="gpu"), progress=False)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_example_config_is_valid() -> None:
    values = yaml.safe_load((REPO / "examples" / "train_small.yaml").read_text())
    config = build_options(TrainConfig, values, source="train_small.yaml")  # the dataset need not exist here
    assert config.model.name == "fc-siam-diff"


# --- losses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bce_dice", "focal", "bce"])
def test_ignored_pixels_do_not_contribute_to_the_loss(kind) -> None:
    torch.manual_seed(0)
    loss = build_loss(kind, pos_weight=3.0)
    label = torch.randint(0, 2, (2, 16, 16))
    label[:, :5] = 255
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    value = loss(logits, label)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert torch.all(logits.grad[:, 0][label == 255] == 0)
    assert torch.any(logits.grad[:, 0][label != 255] != 0)
    changed = logits.detach().clone()
    changed[:, 0][label == 255] = torch.randn(int((label == 255).sum())) * 50
    assert torch.allclose(loss(changed, label), value.detach())


@pytest.mark.parametrize("kind", ["bce_dice", "focal", "bce"])
def test_all_ignored_batch_gives_zero_loss(kind) -> None:
    loss = build_loss(kind)
    value = loss(torch.randn(1, 1, 8, 8), torch.full((1, 8, 8), 255))
    assert value.item() == 0.0


def test_pos_weight_weighs_changed_pixels() -> None:
    logits = torch.zeros(1, 1, 4, 4)
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 0, 0] = 1
    plain, weighted = build_loss("bce", pos_weight=1.0)(logits, label), build_loss("bce", pos_weight=5.0)(logits, label)
    # BCE at logit 0 is log 2 per pixel; the one changed pixel counts 5 times
    assert plain.item() == pytest.approx(np.log(2))
    assert weighted.item() == pytest.approx(np.log(2) * (15 + 5) / 16)


def test_pos_weight_auto_is_negatives_over_positives(dataset) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    counts = {"unchanged": 0, "changed": 0}
    with open(dataset / "chips.csv") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "train":
                with rasterio.open(dataset / "label" / f"{row['id']}.tif") as src:
                    label = src.read(1)
                counts["unchanged"] += int((label == 0).sum())
                counts["changed"] += int((label == 1).sum())
    expected = counts["unchanged"] / counts["changed"]
    assert pos_weight_from_balance(manifest["class_balance"]) == pytest.approx(expected)
    assert pos_weight_from_balance({"0": 90, "1": 10}) == pytest.approx(9.0)
    assert pos_weight_from_balance({"changed_fraction": 0.2}) == pytest.approx(4.0)
    with pytest.raises(InputError, match="set loss.pos_weight to a number"):
        pos_weight_from_balance({"unchanged": 10, "changed": 0})


# --- task -------------------------------------------------------------------------------------


def _task(**kwargs) -> ChangeDetectionTask:
    options = {"model": "fc-siam-diff", "bands": BANDS, "mean": (1000.0,) * 4, "std": (500.0,) * 4}
    options.update(kwargs)
    return ChangeDetectionTask(**options)


def test_schedule_warms_up_then_decays() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=4, total_steps=20, min_lr_ratio=0.01)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-4)  # warm-up starts at lr / 100
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:5]))  # rises for 4 steps
    assert lrs[4] == pytest.approx(1e-2)  # peak
    assert all(a > b for a, b in zip(lrs[4:20], lrs[5:21]))  # then decays
    assert lrs[20] == pytest.approx(1e-4)  # to min_lr_ratio * lr
    assert lrs[12] == pytest.approx(1e-4 + (1e-2 - 1e-4) / 2)  # cosine: half-way at mid-decay


def test_validation_threshold_is_the_f1_best_edge_never_zero() -> None:
    hist = ScoreHistogram()
    hist.update(np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.1]), np.array([1, 1, 1, 0, 0, 0]))
    threshold, f1 = ChangeDetectionTask.best_threshold(hist)
    assert threshold == pytest.approx(0.301) and f1 == pytest.approx(1.0)
    flat = ScoreHistogram()
    flat.update(np.zeros(4), np.array([1, 0, 0, 0]))  # untrained: every score 0
    threshold, _ = ChangeDetectionTask.best_threshold(flat)
    assert threshold > 0


def test_normalisation_uses_the_manifest_statistics() -> None:
    task = _task(mean=(100.0, 200.0, 300.0, 400.0), std=(10.0, 20.0, 30.0, 40.0))
    dn = torch.tensor([110.0, 240.0, 270.0, 400.0]).view(1, 4, 1, 1)
    assert torch.allclose(task.normalise(dn).flatten(), torch.tensor([1.0, 2.0, -1.0, 0.0]))
    assert "mean" in task.state_dict() and "std" in task.state_dict()


def test_freeze_encoder_freezes_only_the_encoder() -> None:
    task = _task(freeze_encoder=True)
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable and all(not n.startswith("encoder.") for n in trainable)
    assert any(n.startswith("encoder.") for n, _ in task.model.named_parameters())


def test_fine_tuning_starts_from_the_checkpoint_weights(tmp_path) -> None:
    torch.manual_seed(1)
    model = build_model("fc-siam-diff", in_channels=4, dropout=0.1)
    spec = ModelSpec("fc-siam-diff", {"in_channels": 4, "num_classes": 1, "dropout": 0.1}, BANDS, (0.0,) * 4, (1.0,) * 4)
    path = save_checkpoint(tmp_path / "start.safetensors", model, spec)
    task = _task(init_from=str(path))
    assert task.model_kwargs["dropout"] == 0.1  # the checkpoint's kwargs are the defaults
    for key, value in model.state_dict().items():
        assert torch.equal(task.model.state_dict()[key], value), key
    with pytest.raises(InputError, match="is a 'fc-siam-diff' model but model.name is 'fc-ef'"):
        _task(model="fc-ef", init_from=str(path))


def test_init_from_tinycd_weights_loads_with_three_bands(data_dir) -> None:
    from deltacd.models.tinycd import adapt_first_conv, load_tinycd_checkpoint

    path = data_dir / "checkpoints_tinycd" / "levir_best.pth"
    reference = load_tinycd_checkpoint(path).state_dict()
    rgb = _task(model="tinycd", bands=("R", "G", "B"), mean=(0.0,) * 3, std=(1.0,) * 3, init_from=f"tinycd:{path}")
    assert rgb.model.in_channels == 3
    for key, value in reference.items():
        assert torch.equal(rgb.model.state_dict()[key], value), key
    four = _task(model="tinycd", init_from=f"tinycd:{path}")  # B,G,R,N: RGB kernels adapted
    adapted = adapt_first_conv(reference, 4)
    stem = "_backbone.0.0.weight"
    assert four.model.state_dict()[stem].shape[1] == 4
    assert torch.equal(four.model.state_dict()[stem], adapted[stem])


def test_init_from_tinycd_needs_the_tinycd_model(dataset, tmp_path, data_dir) -> None:
    path = data_dir / "checkpoints_tinycd" / "levir_best.pth"
    with pytest.raises(InputError, match="set model.name: tinycd"):
        load_train_config(_config(dataset, tmp_path / "run", init_from=f"tinycd:{path}"))


def test_max_train_chips_is_a_seeded_nested_subset() -> None:
    a, b = subset_indices(100, 10, seed=3), subset_indices(100, 20, seed=3)
    assert len(a) == 10 and len(set(a)) == 10 and b[:10] == a
    assert subset_indices(100, 10, seed=4) != a
    assert subset_indices(5, 10, seed=0) == list(range(5))


@pytest.mark.parametrize("name", sorted(CHANGE_MODELS))
def test_training_and_predict_steps_run_for_every_model(name, dataset) -> None:
    torch.manual_seed(0)
    task = _task(model=name, **_manifest_norm(dataset))
    data = ChangeDataModule(dataset, batch_size=2, num_workers=0, seed=0)
    trainer = L.Trainer(
        fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(task, datamodule=data)
    assert 0 < float(task.threshold) < 1
    (prob,) = trainer.predict(task, dataloaders=data.val_dataloader())
    assert prob.shape == (2, SIDE, SIDE) and prob.dtype == torch.float32
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1


def test_datamodule_reads_a_prepared_dataset(data_dir, tmp_path) -> None:
    from deltacd.datasets import load_manifest, prepare_dataset

    root = prepare_dataset(
        {"sources": [{"kind": "chips", "path": str(data_dir / "levircd_bitcd")}],
         "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 3}},
        tmp_path / "levir",
    )
    config = load_train_config(_config(root, tmp_path / "run", loss={"pos_weight": "auto"}))
    assert config.dataset == root
    data = ChangeDataModule(root, batch_size=2, num_workers=0, seed=0, max_train_chips=3)
    data.setup("fit")
    assert data.sizes()["train"] == 3
    batch = next(iter(data.train_dataloader()))
    assert batch["before"].shape == batch["after"].shape == (2, 3, 256, 256) and batch["before"].dtype == torch.float32
    assert batch["label"].shape == (2, 256, 256) and batch["label"].dtype == torch.int64
    assert set(batch["label"].unique().tolist()) <= {0, 1, 255}
    balance = load_manifest(root).class_balance["train"]
    assert pos_weight_from_balance(load_manifest(root).class_balance) == pytest.approx(balance["0"] / balance["1"])


# --- one real run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fc"
    config = _config(dataset, out, epochs=3, loss={"kind": "bce_dice", "pos_weight": "auto"})
    return train(config, progress=False), config


def test_run_writes_a_self_describing_checkpoint(trained, dataset) -> None:
    result, _ = trained
    out = result.out_dir
    assert {"model.safetensors", "metrics.csv", "config_used.yaml", "train_record.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists() and not list(out.parent.glob(".*partial*"))
    manifest = json.loads((dataset / "manifest.json").read_text())
    spec = read_spec(result.checkpoint)
    assert spec.name == "fc-siam-diff" and spec.task == "binary"
    assert spec.bands == tuple(manifest["bands"])
    assert spec.mean == pytest.approx([manifest["normalisation"]["mean"][b] for b in BANDS])
    assert spec.std == pytest.approx([manifest["normalisation"]["std"][b] for b in BANDS])
    assert 0 < spec.threshold < 1 and spec.threshold == pytest.approx(result.threshold)
    assert spec.data["chips"] == SPLITS
    assert spec.training["epochs_run"] == result.epochs == 3
    assert set(spec.training["test"]) >= {"f1", "iou", "precision", "recall"}
    assert spec.training["loss"]["pos_weight"] == pytest.approx(pos_weight_from_balance(manifest["class_balance"]))
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss_epoch", "val_f1", "val_f1_best", "val_threshold"} <= set(header)


def test_loaded_checkpoint_reproduces_the_trained_model(trained) -> None:
    result, _ = trained
    model, spec = load_checkpoint(result.checkpoint)
    x = torch.randn(2, 4, SIDE, SIDE), torch.randn(2, 4, SIDE, SIDE)
    with torch.no_grad():
        assert torch.equal(model(*x), result.model.eval()(*x))
    assert set(load_file(str(result.checkpoint))) == set(result.model.state_dict())


def test_config_used_reloads_to_the_same_config(trained) -> None:
    result, config = trained
    used = yaml.safe_load((result.out_dir / "config_used.yaml").read_text())
    assert build_options(TrainConfig, used) == build_options(TrainConfig, config)
    record = json.loads((result.out_dir / "train_record.json").read_text())
    assert record["resolved"]["model_kwargs"]["in_channels"] == 4


def test_existing_out_is_refused_then_replaced_with_overwrite(trained) -> None:
    result, config = trained
    before = (result.out_dir / "train_record.json").read_text()
    with pytest.raises(OutputError, match="output folder exists; pass --overwrite"):
        train(config, progress=False)
    assert (result.out_dir / "train_record.json").read_text() == before


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(dataset, tmp_path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a deltacd output folder"):
        train(_config(dataset, out), overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_fine_tuning_run_starts_from_the_saved_model(trained, dataset, tmp_path) -> None:
    result, _ = trained
    start, _ = load_checkpoint(result.checkpoint)
    task = _task(init_from=str(result.checkpoint), **_manifest_norm(dataset))
    batch = ChangeChipDataset(dataset, "val")[0]
    with torch.no_grad():
        loss_start = task.criterion(
            start(task.normalise(batch["before"][None]), task.normalise(batch["after"][None])), batch["label"][None]
        )
        loss_task = task.criterion(task.eval()(batch["before"][None], batch["after"][None]), batch["label"][None])
    assert loss_task.item() == pytest.approx(loss_start.item())
    config = _config(dataset, tmp_path / "tuned", epochs=1, max_train_chips=4, init_from=str(result.checkpoint))
    tuned = train(config, progress=False)
    assert read_spec(tuned.checkpoint).training["init_from"] == str(result.checkpoint)
    assert read_spec(tuned.checkpoint).data["chips"]["train"] == 4
    again = train({**config, "seed": 7}, overwrite=True, progress=False)  # replaces the previous run
    assert read_spec(again.checkpoint).training["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned"]


def _manifest_norm(dataset: Path) -> dict:
    manifest = json.loads((dataset / "manifest.json").read_text())
    norm = manifest["normalisation"]
    return {"mean": [norm["mean"][b] for b in BANDS], "std": [norm["std"][b] for b in BANDS]}


# --- DDP on two CPU processes (gloo) -------------------------------------------------------


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_sums_validation_over_both(dataset, tmp_path) -> None:
    """`devices: 2` on CPUs is DDP with gloo: one published run, reported once, and a validation
    threshold and F1 of the whole validation split (each process sees one of its two chips)."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(_config(dataset, out, accelerator="cpu", devices=2, num_threads=1)))
    # the CLI, not train(): Lightning's DDP launcher re-runs the command line in the second process
    done = subprocess.run([sys.executable, "-m", "deltacd", "train", str(config), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("model in ") == 1 and "FCSiamDiff;" in done.stdout.replace(")", ";")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "ddp.yaml"]  # no staging left
    record = json.loads((out / "train_record.json").read_text())
    assert record["training"]["device"] == "cpu x2" and record["config"]["devices"] == 2

    model, spec = load_checkpoint(out / "model.safetensors")
    mean = torch.tensor(spec.mean)[:, None, None]
    std = torch.tensor(spec.std)[:, None, None]
    hist = ScoreHistogram(ignore_value=255)
    val = ChangeChipDataset(dataset, "val")
    assert len(val) == 2
    with torch.no_grad():
        for chip in val:
            prob = torch.sigmoid(model(((chip["before"] - mean) / std)[None], ((chip["after"] - mean) / std)[None]))
            hist.update(prob[0, 0].numpy(), chip["label"].numpy())
    threshold, f1 = ChangeDetectionTask.best_threshold(hist)
    assert spec.threshold == pytest.approx(threshold, abs=1e-3)
    assert spec.training["best_val_f1"] == pytest.approx(f1, abs=1e-3)
