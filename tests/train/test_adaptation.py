"""Adaptation modes of pretrained encoders: exactly the documented parameters train, frozen statistics stay, LoRA merges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module
load_file = pytest.importorskip("safetensors.torch").load_file

from deltacd.config import build_options
from deltacd.errors import InputError
from deltacd.methods.learned import LearnedModel
from deltacd.models.checkpoint import ModelSpec, load_checkpoint, offline_kwargs, read_spec, save_checkpoint
from deltacd.models.encoders import build_encoder
from deltacd.models.registry import build_model
from deltacd.train import ChangeDetectionTask, TrainConfig, train
from deltacd.train.adaptation import encoder_stages, merge_lora
from deltacd.train.config import resolve_adaptation
from test_train import BANDS, SIDE, make_dataset

# emitted inside Lightning with this torch version; train() itself filters it
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec.*"),
    pytest.mark.filterwarnings("ignore:adaptation.mode .* with a randomly initialised encoder"),
]

LITE0 = {"encoder_spec": "efficientnet_lite0:imagenet"}
VIT = {"encoder_spec": "timm:vit_tiny_patch16_224"}  # random weights: no pretrained ViT is shipped offline
HEAD = ("decoder.", "segmentation_head.", "fuse.")


def _task(model_kwargs: dict, adaptation: dict | None = None, **kwargs) -> ChangeDetectionTask:
    options = {
        "model": "siamese-unet", "model_kwargs": model_kwargs, "bands": BANDS, "mean": (1000.0,) * 4, "std": (500.0,) * 4,
        "adaptation": adaptation,
    }
    options.update(kwargs)
    return ChangeDetectionTask(**options)


def _trainable(task: ChangeDetectionTask) -> set[str]:
    return {n for n, p in task.model.named_parameters() if p.requires_grad}


def _batch(seed: int = 0, n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    before = 300 + 2500 * torch.rand(n, 4, SIDE, SIDE, generator=g)
    after = before.clone()
    after[:, :, 8:20, 8:20] = 3800
    label = torch.zeros(n, SIDE, SIDE, dtype=torch.long)
    label[:, 8:20, 8:20] = 1
    return {"before": before, "after": after, "label": label}


def _bn_statistics(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k or "num_batches" in k}


def _train_step(task: ChangeDetectionTask) -> None:
    task.train()
    optimizer = torch.optim.SGD([p for p in task.model.parameters() if p.requires_grad], lr=0.1)
    batch = _batch()
    loss = task.criterion(task(batch["before"], batch["after"]), batch["label"])
    loss.backward()
    optimizer.step()


# --- frozen ----------------------------------------------------------------------------------


def test_frozen_encoder_gets_no_gradient_and_keeps_its_batchnorm_statistics() -> None:
    task = _task(LITE0, {"mode": "frozen"})
    trainable = _trainable(task)
    assert trainable and all(n.startswith(HEAD) for n in trainable)
    assert {n for n, _ in task.model.named_parameters() if n.startswith(HEAD)} == trainable
    report = task.adaptation_report
    assert report.encoder_trainable == 0 and report.encoder_total > 2_000_000
    assert report.trainable_parameters == sum(p.numel() for n, p in task.model.named_parameters() if n in trainable)
    stats = _bn_statistics(task.model.encoder)
    assert stats  # Lite0 has BatchNorm layers
    head_before = task.model.segmentation_head[0].weight.detach().clone()
    _train_step(task)
    assert task.training and not task.model.encoder.training  # task.train() left the encoder in eval
    for key, value in _bn_statistics(task.model.encoder).items():
        assert torch.equal(value, stats[key]), key
    assert not torch.equal(task.model.segmentation_head[0].weight, head_before)  # the head did train


def test_frozen_vit_keeps_its_random_pyramid_trainable() -> None:
    task = _task(VIT, {"mode": "frozen"})
    trainable = _trainable(task)
    assert not any(n.startswith("encoder.model.") for n in trainable)
    assert {n for n in trainable if n.startswith("encoder.")} == {
        n for n, _ in task.model.named_parameters() if n.startswith("encoder.pyramid.")
    }


def test_freeze_encoder_is_the_old_spelling_of_frozen(tmp_path) -> None:
    old = build_options(TrainConfig, {"dataset": tmp_path, "model": {"name": "fc-siam-diff"}, "out": tmp_path / "o",
                                      "freeze_encoder": True})
    assert resolve_adaptation(old).mode == "frozen"
    both = build_options(TrainConfig, {"dataset": tmp_path, "model": {"name": "fc-siam-diff"}, "out": tmp_path / "o",
                                       "freeze_encoder": True, "adaptation": {"mode": "lora"}})
    with pytest.raises(InputError, match="freeze_encoder: true contradicts adaptation.mode 'lora'"):
        resolve_adaptation(both)
    with pytest.raises(InputError, match=r"adaptation.*mode"):
        build_options(TrainConfig, {"dataset": tmp_path, "model": {"name": "fc-siam-diff"}, "out": tmp_path / "o",
                                    "adaptation": {"mode": "half"}})


# --- partial ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "stages", "deepest"),
    [
        (LITE0, 1, ("encoder.model.blocks.5.", "encoder.model.blocks.6.")),  # the stride-32 stage
        ({"encoder_name": "resnet18"}, 1, ("encoder.layer4.",)),  # an smp encoder
        ({"encoder_name": "resnet18"}, 2, ("encoder.layer3.", "encoder.layer4.")),
    ],
)
def test_partial_trains_only_the_deepest_stages_and_the_decoder(kwargs, stages, deepest) -> None:
    task = _task(kwargs, {"mode": "partial", "trainable_stages": stages})
    names = {n for n, _ in task.model.named_parameters()}
    expected = {n for n in names if n.startswith(HEAD + deepest)}
    assert _trainable(task) == expected
    assert task.adaptation_report.stages[-1] == "stride 32" and len(task.adaptation_report.stages) == 5
    stats = _bn_statistics(task.model.encoder)
    _train_step(task)
    changed = {k for k, v in _bn_statistics(task.model.encoder).items() if not torch.equal(v, stats[k])}
    # only the trained stages' BatchNorm layers follow the batches; the frozen stages stay in eval
    assert changed and all(f"encoder.{k}".startswith(deepest) for k in changed)


def test_partial_vit_trains_the_last_blocks_its_norm_and_the_pyramid() -> None:
    task = _task(VIT, {"mode": "partial", "trainable_stages": 2})
    encoder_trainable = {n for n in _trainable(task) if n.startswith("encoder.model.")}
    assert {n.split(".")[3] for n in encoder_trainable if ".blocks." in n} == {"10", "11"}
    assert {n for n in encoder_trainable if ".blocks." not in n} == {"encoder.model.norm.weight", "encoder.model.norm.bias"}
    assert all(p.requires_grad for n, p in task.model.named_parameters() if n.startswith("encoder.pyramid."))


def test_cnn_stages_are_found_from_the_feature_maps() -> None:
    encoder = build_encoder("timm:resnet18", in_channels=3)
    stages = dict(encoder_stages(encoder))
    assert list(stages) == ["stride 2", "stride 4", "stride 8", "stride 16", "stride 32"]
    assert {n.split(".")[1] for n in stages["stride 32"]} == {"layer4"}
    assert set(stages["stride 2"]) == {"model.conv1.weight", "model.bn1.weight", "model.bn1.bias"}
    assert all(p.requires_grad for p in encoder.parameters()) and encoder.training  # the probe restores both


def test_partial_needs_a_multiscale_encoder_and_enough_stages() -> None:
    with pytest.raises(InputError, match="'partial' needs a model whose encoder gives multi-scale features") as err:
        ChangeDetectionTask(model="fc-siam-diff", bands=BANDS, mean=(0.0,) * 4, std=(1.0,) * 4, adaptation={"mode": "partial"})
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="trainable_stages: 6 but the encoder .* has 5 stages"):
        _task({"encoder_name": "resnet18"}, {"mode": "partial", "trainable_stages": 6})


# --- LoRA ------------------------------------------------------------------------------------


def test_lora_trains_only_adapters_pyramid_and_head() -> None:
    task = _task(VIT, {"mode": "lora", "lora_rank": 4, "lora_alpha": 8})
    trainable = _trainable(task)
    lora = {n for n in trainable if ".lora_" in n}
    assert len(lora) == 12 * 2 * 2  # 12 blocks x (qkv, proj) x (A, B)
    assert trainable - lora == {n for n, _ in task.model.named_parameters() if n.startswith(HEAD + ("encoder.pyramid.",))}
    assert task.adaptation_report.lora_layers == 24
    qkv_a = task.model.get_parameter("encoder.model.blocks.0.attn.qkv.lora_A.default.weight")
    assert qkv_a.shape == (4, 192)


def test_merged_lora_model_rebuilds_from_its_checkpoint_and_reproduces_the_adapted_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    task = _task(VIT, {"mode": "lora"})
    with torch.no_grad():
        for name, parameter in task.model.named_parameters():
            if ".lora_B." in name:  # B starts at zero; give the adapters an effect to merge
                parameter.normal_(0.0, 0.05)
    model = task.model.eval()
    x = torch.randn(2, 4, SIDE, SIDE), torch.randn(2, 4, SIDE, SIDE)
    with torch.no_grad():
        adapted = model(*x)
        model_without = _task(VIT, {"mode": "full"}).model.eval()
        model_without.load_state_dict({k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if ".lora_" not in k})
        assert not torch.allclose(model_without(*x), adapted, atol=1e-4)  # the adapters matter
    assert merge_lora(model) == 24
    assert not any(".lora_" in k or "base_layer" in k for k in model.state_dict())
    kwargs = offline_kwargs(task.model_kwargs)
    assert kwargs["encoder_weights"] == "random"
    spec = ModelSpec("siamese-unet", kwargs, BANDS, (1000.0,) * 4, (500.0,) * 4)
    path = save_checkpoint(tmp_path / "lora.safetensors", model, spec)
    rebuilt, _ = load_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(model(*x), adapted, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(rebuilt(*x), adapted, atol=1e-5, rtol=1e-4)


def test_lora_on_a_cnn_is_a_one_line_input_error() -> None:
    with pytest.raises(InputError, match="'lora' needs a ViT encoder.*use mode 'partial' or 'frozen'") as err:
        _task(LITE0, {"mode": "lora"})
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="lora_targets: \\['nope'\\] match no layer"):
        _task(VIT, {"mode": "lora", "lora_targets": ["nope"]})


# --- normalisation ---------------------------------------------------------------------------


def test_encoder_normalisation_is_the_weights_own_mapped_to_the_bands() -> None:
    task = _task(LITE0, normalisation="encoder")
    mean, std = task.normalisation_dn()
    assert mean == pytest.approx([127.0] * 4) and std == pytest.approx([128.0] * 4)  # (dn - 127) / 128, N included
    assert task.model_kwargs["encoder_bands"] == list(BANDS)  # first layer adapted by band name
    with pytest.raises(InputError, match="normalisation: 'encoder' but the encoder .* states no normalisation"):
        _task({"encoder_spec": "timm:resnet18"}, normalisation="encoder")


def test_checkpoint_kwargs_never_need_the_pretrained_file() -> None:
    assert offline_kwargs({"encoder_spec": "efficientnet_lite0:imagenet", "encoder_weights": None})["encoder_weights"] == "random"
    assert offline_kwargs({"encoder_name": "resnet18", "encoder_weights": "imagenet"})["encoder_weights"] is None
    assert offline_kwargs({"dropout": 0.1}) == {"dropout": 0.1}


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "chips")


def _config(dataset: Path, out: Path, **overrides) -> dict:
    values = {
        "dataset": str(dataset), "out": str(out), "epochs": 1, "batch_size": 4, "num_workers": 0, "augment": None,
        "early_stopping_patience": None, "optimizer": {"lr": 3e-3, "warmup_epochs": 0},
    }
    values.update(overrides)
    return values


def test_frozen_training_run_saves_a_model_that_detect_loads(dataset, tmp_path) -> None:
    config = _config(dataset, tmp_path / "frozen", model={"name": "siamese-unet", "kwargs": LITE0}, adaptation={"mode": "frozen"})
    result = train(config, progress=False)
    spec = read_spec(result.checkpoint)
    assert spec.kwargs["encoder_weights"] == "random" and spec.kwargs["encoder_bands"] == list(BANDS)
    adaptation = spec.training["adaptation"]
    assert adaptation["mode"] == "frozen" and adaptation["encoder_trainable"] == 0
    assert 0 < adaptation["trainable_parameters"] < adaptation["total_parameters"] == adaptation["saved_parameters"]
    record = json.loads((result.out_dir / "train_record.json").read_text())
    assert record["training"]["adaptation"]["trainable_parameters"] == adaptation["trainable_parameters"]
    # the frozen encoder, BatchNorm statistics included, is exactly the pretrained one
    pretrained = build_encoder("efficientnet_lite0:imagenet", in_channels=4, bands=list(BANDS)).state_dict()
    saved = load_file(str(result.checkpoint))
    for key, value in pretrained.items():
        assert torch.equal(saved[f"encoder.{key}"], value), key
    method = LearnedModel.from_file(result.checkpoint, device="cpu")
    before, after = _batch(3)["before"].numpy(), _batch(3)["after"].numpy()
    prob = method.predict(before, after)
    assert prob.shape == (2, SIDE, SIDE) and 0 <= prob.min() and prob.max() <= 1
    with torch.no_grad():
        expected = torch.sigmoid(result.model(method._to_tensor(before), method._to_tensor(after))[:, 0]).numpy()
    assert prob == pytest.approx(expected, abs=1e-6)


def test_lora_training_run_saves_a_plain_merged_model(dataset, tmp_path) -> None:
    config = _config(dataset, tmp_path / "lora", model={"name": "siamese-unet", "kwargs": VIT}, adaptation={"mode": "lora"})
    result = train(config, progress=False)
    saved = load_file(str(result.checkpoint))
    assert not any(".lora_" in k or "base_layer" in k for k in saved)
    spec = read_spec(result.checkpoint)
    assert spec.training["adaptation"]["lora_layers_merged"] == 24
    assert spec.training["adaptation"]["trainable_parameters"] < spec.training["adaptation"]["total_parameters"]
    model, _ = load_checkpoint(result.checkpoint)
    x = torch.randn(1, 4, SIDE, SIDE), torch.randn(1, 4, SIDE, SIDE)
    with torch.no_grad():
        assert torch.equal(model(*x), result.model.eval()(*x))
    assert set(saved) == set(build_model("siamese-unet", **spec.kwargs).state_dict())
