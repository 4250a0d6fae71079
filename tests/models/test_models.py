"""Tests of the change-detection networks in deltacd.models (all but TinyCD, tested in test_tinycd.py)."""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module
import torch.nn.functional as F
from torch import nn

from deltacd.errors import InputError
from deltacd.models.registry import CHANGE_MODELS, MODELS, build_model, count_parameters, register_model
from deltacd.models.siamese_unet import SiameseUNet

NAMES = ["fc-ef", "fc-siam-conc", "fc-siam-diff", "siamese-unet", "bit"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _side(model: nn.Module, at_least: int = 64) -> int:
    """Smallest valid tile side >= at_least."""
    multiple = model.size_multiple
    return -(-at_least // multiple) * multiple


def _pair(model: nn.Module, in_channels: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    side = _side(model)
    return torch.randn(batch, in_channels, side, side), torch.randn(batch, in_channels, side, side)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def test_registry_holds_the_expected_models() -> None:
    assert set(NAMES) <= set(MODELS)
    for name in NAMES:
        assert MODELS[name].name == name
        assert isinstance(MODELS[name].size_multiple, int)
    if importlib.util.find_spec("deltacd.models.tinycd") is not None:
        assert "tinycd" in MODELS


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 1), (4, 3), (13, 1)])
def test_output_is_logits_at_input_size(name: str, in_channels: int, num_classes: int) -> None:
    model = build_model(name, in_channels=in_channels, num_classes=num_classes).eval()
    before, after = _pair(model, in_channels)
    with torch.no_grad():
        out = model(before, after)
    assert out.shape == (2, num_classes, *before.shape[-2:])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # Logits, not probabilities: no sigmoid/softmax squeezes them into [0, 1].
    assert (out < 0).any()


@pytest.mark.parametrize(
    ("name", "in_channels", "num_classes"),
    [("fc-ef", 1, 1), ("fc-siam-conc", 4, 3), ("fc-siam-diff", 13, 1), ("siamese-unet", 13, 3), ("bit", 4, 1)],
)
def test_gradients_reach_the_first_layer(name: str, in_channels: int, num_classes: int) -> None:
    model = build_model(name, in_channels=in_channels, num_classes=num_classes).train()
    before, after = _pair(model, in_channels)
    out = model(before, after)
    if num_classes == 1:
        loss = F.binary_cross_entropy_with_logits(out, torch.randint(0, 2, out.shape).float())
    else:
        loss = F.cross_entropy(out, torch.randint(0, num_classes, (out.shape[0], *out.shape[2:])))
    loss.backward()
    first = _first_conv(model)
    # Really the input layer: it sees the bands of one date (two dates stacked for FC-EF).
    assert first.in_channels == (2 * in_channels if name == "fc-ef" else in_channels)
    assert first.weight.grad is not None
    assert first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fc-siam-diff", {}),
        ("siamese-unet", {"fusion": "diff"}),
        ("siamese-unet", {"fusion": "diff", "encoder_name": "tu-resnet18"}),
    ],
)
def test_difference_fusion_is_exactly_invariant_to_swapping_dates(name: str, kwargs: dict) -> None:
    model = build_model(name, in_channels=4, num_classes=1, **kwargs).eval()
    before, after = _pair(model, 4)
    with torch.no_grad():
        assert torch.equal(model(before, after), model(after, before))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("fc-ef", {}), ("fc-siam-conc", {}), ("siamese-unet", {"fusion": "concat"}), ("bit", {})],
)
def test_order_dependent_models_change_when_dates_are_swapped(name: str, kwargs: dict) -> None:
    model = build_model(name, in_channels=4, num_classes=1, **kwargs).eval()
    before, after = _pair(model, 4)
    with torch.no_grad():
        forward, swapped = model(before, after), model(after, before)
    assert not torch.allclose(forward, swapped, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"encoder_name": "efficientnet-b0", "fusion": "concat"},
        {"encoder_name": "mobilenet_v2"},
        {"encoder_name": "tu-convnext_atto", "fusion": "concat"},  # timm, first stage at 1/4
    ],
)
def test_siamese_unet_takes_other_encoders(kwargs: dict) -> None:
    model = SiameseUNet(in_channels=4, num_classes=2, **kwargs).eval()
    before, after = _pair(model, 4, batch=1)
    with torch.no_grad():
        assert model(before, after).shape == (1, 2, *before.shape[-2:])


def test_siamese_unet_size_multiple_follows_encoder_depth() -> None:
    model = SiameseUNet(in_channels=3, encoder_depth=4).eval()
    assert model.size_multiple == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 48), torch.randn(1, 3, 48, 48)).shape == (1, 1, 48, 48)


class _TinyEncoder(nn.Module):
    """A stand-in for a foundation-model encoder: smp's convention, depth 3."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out_channels = [in_channels, 8, 16, 24]
        self.stages = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1) for c_in, c_out in itertools.pairwise(self.out_channels)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features


@pytest.mark.parametrize("fusion", ["diff", "concat", "early"])
def test_siamese_unet_accepts_a_built_encoder(fusion: str) -> None:
    encoder = _TinyEncoder(4)
    model = SiameseUNet(in_channels=4, num_classes=1, encoder=encoder, fusion=fusion)
    assert model.encoder is encoder
    assert model.size_multiple == 8  # 2**depth, as the encoder has no output_stride
    out = model(torch.randn(2, 4, 40, 40), torch.randn(2, 4, 40, 40))
    assert out.shape == (2, 1, 40, 40)
    out.mean().backward()
    assert encoder.stages[0].weight.grad is not None


def test_early_fusion_splits_the_first_kernel_over_the_dates() -> None:
    """Same image on both dates: the widened first layer gives what the encoder's own kernel gives on it."""
    encoder = _TinyEncoder(4)
    kernel, bias = encoder.stages[0].weight.detach().clone(), encoder.stages[0].bias.detach().clone()
    model = SiameseUNet(in_channels=4, encoder=encoder, fusion="early")
    wide = model.encoder.stages[0]
    assert wide.in_channels == 8
    image = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        expected = F.conv2d(image, kernel, bias, stride=2, padding=1)
        assert torch.allclose(wide(torch.cat([image, image], dim=1)), expected, atol=1e-5)
        assert model(image, image).shape == (1, 1, 16, 16)
        # equal halves: at the start the dates' order does not matter; different halves (training) break it
        other = torch.randn(1, 4, 16, 16)
        assert torch.allclose(model(image, other), model(other, image), atol=1e-5)
        wide.weight[:, :4] += 0.1
        assert not torch.allclose(model(image, other), model(other, image), atol=1e-3)


def test_early_fusion_keeps_the_pretrained_kernel_of_a_spec_encoder() -> None:
    plain = SiameseUNet(in_channels=3, encoder_spec="efficientnet_lite0:imagenet", fusion="diff")
    early = SiameseUNet(in_channels=3, encoder_spec="efficientnet_lite0:imagenet", fusion="early")
    kernel, wide = _first_conv(plain).weight, _first_conv(early).weight
    assert wide.shape[1] == 6
    assert torch.equal(wide[:, :3], kernel / 2) and torch.equal(wide[:, 3:], kernel / 2)


@pytest.mark.parametrize("name", NAMES)
def test_model_rebuilds_from_json_kwargs(name: str) -> None:
    """What a checkpoint stores, {"name", "kwargs"} through JSON, rebuilds the same model."""
    spec = json.loads(json.dumps({"name": name, "kwargs": {"in_channels": 4, "num_classes": 2}}))
    model = build_model(spec["name"], **spec["kwargs"]).eval()
    rebuilt = build_model(spec["name"], **spec["kwargs"]).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    before, after = _pair(model, 4, batch=1)
    with torch.no_grad():
        assert torch.equal(model(before, after), rebuilt(before, after))


def test_unknown_model_name_lists_the_available_ones() -> None:
    with pytest.raises(InputError, match="nope") as caught:
        build_model("nope", in_channels=3)
    for name in NAMES:
        assert name in str(caught.value)


def test_unknown_kwarg_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(InputError, match="'in_chans'") as caught:
        build_model("fc-siam-diff", in_chans=3)
    assert "in_channels" in str(caught.value)
    assert "num_classes" in str(caught.value)


def test_missing_required_kwarg_is_named() -> None:
    with pytest.raises(InputError, match="'in_channels'"):
        build_model("bit", num_classes=2)


def test_bad_constructor_values_raise_input_error() -> None:
    with pytest.raises(InputError, match="fusion"):
        build_model("siamese-unet", in_channels=3, fusion="sum")
    with pytest.raises(InputError, match="encoder"):
        build_model("siamese-unet", in_channels=3, encoder_name="no-such-encoder")
    with pytest.raises(InputError, match="num_heads"):
        build_model("bit", in_channels=3, num_heads=5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_size_names_the_multiple(name: str) -> None:
    model = build_model(name, in_channels=3).eval()
    multiple = model.size_multiple
    assert multiple > 1
    side = _side(model) + 2  # never a multiple of an even number
    padded = -(-side // multiple) * multiple
    x = torch.randn(1, 3, side, side)
    with pytest.raises(InputError, match=rf"divisible by {multiple}\b.*pad the tile to {padded}x{padded}"):
        model(x, x)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_band_count_or_mismatched_dates_raise_input_error(name: str) -> None:
    model = build_model(name, in_channels=4).eval()
    side = _side(model)
    good = torch.randn(1, 4, side, side)
    with pytest.raises(InputError, match="4 bands"):
        model(torch.randn(1, 3, side, side), torch.randn(1, 3, side, side))
    with pytest.raises(InputError, match="same shape"):
        model(good, torch.randn(1, 4, side, 2 * side))
    with pytest.raises(InputError, match="dimensions"):
        model(good[0], good[0])


def test_count_parameters() -> None:
    model = build_model("fc-siam-diff", in_channels=3)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    # The paper's sizes (Daudt et al. 2018, Table 1: 1.35 M, 1.55 M, 1.35 M for RGB pairs).
    assert abs(count_parameters(build_model("fc-ef", in_channels=3)) - 1.35e6) < 0.01e6
    assert abs(count_parameters(build_model("fc-siam-conc", in_channels=3)) - 1.55e6) < 0.01e6
    assert abs(count_parameters(model) - 1.35e6) < 0.01e6
    assert count_parameters(build_model("bit", in_channels=4)) < 4_000_000
    model.encoder.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == sum(p.numel() for p in model.decoder.parameters())


def test_register_model_adds_a_network_and_refuses_a_taken_name() -> None:
    from torch import nn

    class Tiny(nn.Module):
        name = "test-tiny-registered"
        size_multiple = 1

        def __init__(self, in_channels: int = 3, num_classes: int = 1) -> None:
            super().__init__()
            self.head = nn.Conv2d(2 * in_channels, num_classes, 1)

        def forward(self, before, after):
            return self.head(torch.cat([before, after], dim=1))

    try:
        assert register_model(Tiny) is Tiny
        net = build_model("test-tiny-registered", in_channels=4)
        assert net(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)).shape == (1, 1, 8, 8)

        class Impostor(Tiny):
            name = "fc-siam-diff"

        with pytest.raises(InputError, match="the name 'fc-siam-diff' is taken by FCSiamDiff"):
            register_model(Impostor)
        assert MODELS["fc-siam-diff"].__name__ == "FCSiamDiff"
    finally:
        CHANGE_MODELS.pop("test-tiny-registered", None)
        MODELS.pop("test-tiny-registered", None)
