"""TinyCD: the authors' checkpoints load with every key matched, reach their accuracy, and bad input fails clearly."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")  # the `learn` extra; a core install skips this module

from deltacd.errors import InputError, MissingInputError
from deltacd.models.tinycd import (
    MIN_SIDE,
    TINYCD_IMAGENET_NORMALISATION,
    TinyCD,
    adapt_first_conv,
    load_tinycd_checkpoint,
    normalise_rgb8,
)

CHECKPOINTS = ("levir_best.pth", "whu_best.pth")


@pytest.fixture(scope="module")
def ckpt_dir(data_dir: Path) -> Path:
    return data_dir / "checkpoints_tinycd"


@pytest.fixture(scope="module")
def levir_dir(data_dir: Path) -> Path:
    return data_dir / "levircd_bitcd"


@pytest.fixture(scope="module")
def levir_model(ckpt_dir: Path) -> TinyCD:
    return load_tinycd_checkpoint(ckpt_dir / "levir_best.pth")


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)  # [3, H, W] uint8


def _pair(levir_dir: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        normalise_rgb8(_rgb(levir_dir / "A" / name)).unsqueeze(0),
        normalise_rgb8(_rgb(levir_dir / "B" / name)).unsqueeze(0),
    )


# ------------------------------------------------------------------ checkpoints load strictly


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_authors_checkpoint_loads_with_every_key_matched(ckpt_dir: Path, name: str) -> None:
    raw = torch.load(ckpt_dir / name, map_location="cpu", weights_only=True)
    result = TinyCD().load_state_dict(raw, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []

    model = load_tinycd_checkpoint(ckpt_dir / name)
    assert not model.training
    loaded = model.state_dict()
    assert len(loaded) == len(raw) == 279
    for key, value in raw.items():
        # whu_best.pth names the deepest mixing conv with an extra "_mixing." level (same tensors).
        ours = key.replace("_mixing_mask.2._mixing._convmix.", "_mixing_mask.2._convmix.")
        assert torch.equal(loaded[ours], value), key


def test_the_two_checkpoints_hold_different_weights(ckpt_dir: Path) -> None:
    levir = load_tinycd_checkpoint(ckpt_dir / "levir_best.pth").state_dict()
    whu = load_tinycd_checkpoint(ckpt_dir / "whu_best.pth").state_dict()
    assert not torch.equal(levir["_classify._linears.2.0.weight"], whu["_classify._linears.2.0.weight"])
    assert not torch.equal(levir["_mixing_mask.2._convmix.0.weight"], whu["_mixing_mask.2._convmix.0.weight"])


# ------------------------------------------------------------------ accuracy on real data


@pytest.mark.slow
def test_levir_micro_f1_matches_authors_code(levir_model: TinyCD, levir_dir: Path) -> None:
    names = sorted(p.name for p in (levir_dir / "label").glob("test_*.png"))
    assert len(names) == 7
    tp = fp = fn = 0
    with torch.inference_mode():
        for name in names:
            before, after = _pair(levir_dir, name)
            pred = (torch.sigmoid(levir_model(before, after)) > 0.5)[0, 0].numpy()
            with Image.open(levir_dir / "label" / name) as im:
                truth = np.asarray(im.convert("L")) > 0
            tp += int((pred & truth).sum())
            fp += int((pred & ~truth).sum())
            fn += int((~pred & truth).sum())
    f1 = 2 * tp / (2 * tp + fp + fn)
    # The authors' code gives 0.937 on these crops; ours measured 0.9373.
    assert f1 >= 0.927, f"micro F1 {f1:.4f} (TP {tp}, FP {fp}, FN {fn})"
    assert tp / (tp + fp) > 0.9 and tp / (tp + fn) > 0.9


def test_forward_returns_logits_not_probabilities(levir_model: TinyCD, levir_dir: Path) -> None:
    before, after = _pair(levir_dir, "test_2_0000_0000.png")
    with torch.inference_mode():
        logits = levir_model(before, after)
    assert logits.shape == (1, 1, 256, 256) and logits.dtype == torch.float32
    # A sigmoid output would lie in (0, 1); confident logits lie well outside it on both sides.
    assert logits.min() < -1 and logits.max() > 1


def test_pretrained_model_accepts_sizes_that_are_not_multiples_of_32(levir_model: TinyCD, levir_dir: Path) -> None:
    before, after = _pair(levir_dir, "test_2_0000_0000.png")
    with torch.inference_mode():
        full = levir_model(before, after)
        crop = levir_model(before[..., :77, :150], after[..., :77, :150])
    assert crop.shape == (1, 1, 77, 150)
    # Same scene, smaller window: the decisions mostly agree with the full-tile ones.
    agree = ((crop > 0) == (full[..., :77, :150] > 0)).float().mean()
    assert agree > 0.8


# ------------------------------------------------------------------ other band counts


@pytest.mark.parametrize("in_channels", [1, 4])
@pytest.mark.parametrize("size", [(256, 256), (250, 190)])
def test_other_band_counts_give_logits_of_input_size(in_channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = TinyCD(in_channels=in_channels).eval()
    x = torch.randn(2, in_channels, *size)
    y = torch.randn(2, in_channels, *size)
    with torch.inference_mode():
        out = model(x, y)
    assert out.shape == (2, 1, *size)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_other_band_count_trains_from_scratch() -> None:
    torch.manual_seed(0)
    model = TinyCD(in_channels=4).train()
    x, y = torch.randn(2, 4, 64, 64), torch.randn(2, 4, 64, 64)
    target = torch.zeros(2, 1, 64, 64)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x, y), target)
    loss.backward()
    stem = model._backbone[0][0].weight
    assert stem.shape == (48, 4, 3, 3) and stem.grad is not None and stem.grad.abs().sum() > 0


def test_adapt_first_conv_to_six_bands_reproduces_rgb_on_duplicated_bands(
    levir_model: TinyCD, levir_dir: Path
) -> None:
    # With the cyclic 3/C rule, bands R,G,B,R,G,B give exactly the 3-band responses.
    six = TinyCD(in_channels=6)
    six.load_state_dict(adapt_first_conv(levir_model.state_dict(), 6), strict=True)
    six.eval()
    before, after = _pair(levir_dir, "test_55_0256_0000.png")
    with torch.inference_mode():
        rgb = levir_model(before, after)
        dup = six(torch.cat([before, before], 1), torch.cat([after, after], 1))
    assert torch.allclose(rgb, dup, atol=1e-3), (rgb - dup).abs().max()


def test_adapt_first_conv_rules(levir_model: TinyCD) -> None:
    sd = levir_model.state_dict()
    stem = sd["_backbone.0.0.weight"]
    four = adapt_first_conv(sd, 4)
    assert four["_backbone.0.0.weight"].shape == (48, 4, 3, 3)
    assert torch.allclose(four["_backbone.0.0.weight"][:, 3], stem[:, 0] * 0.75)
    assert torch.allclose(four["_backbone.0.0.weight"][:, 1], stem[:, 1] * 0.75)
    assert four["_first_mix._mixing._convmix.0.weight"].shape == (4, 2, 3, 3)
    assert four["_first_mix._linear._linears.0.0.weight"].shape == (10, 4, 1, 1)
    TinyCD(in_channels=4).load_state_dict(four, strict=True)  # raises if any key or shape is off

    one = adapt_first_conv(sd, 1)
    assert torch.allclose(one["_backbone.0.0.weight"], stem.sum(1, keepdim=True))
    TinyCD(in_channels=1).load_state_dict(one, strict=True)

    same = adapt_first_conv(sd, 3)
    assert all(torch.equal(same[k], v) for k, v in sd.items())
    assert torch.equal(sd["_backbone.0.0.weight"], stem)  # input left untouched

    with pytest.raises(InputError, match="has 4 input bands, expected 3"):
        adapt_first_conv(four, 2)


# ------------------------------------------------------------------ input checks


def test_too_small_or_mismatched_inputs_raise_input_error() -> None:
    model = TinyCD().eval()
    small = torch.zeros(1, 3, MIN_SIDE - 1, 64)
    with pytest.raises(InputError, match=f"at least {MIN_SIDE}x{MIN_SIDE}"):
        model(small, small)
    with pytest.raises(InputError, match="same shape"):
        model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 48))
    with pytest.raises(InputError, match="in_channels=4"):
        model(torch.zeros(1, 4, 32, 32), torch.zeros(1, 4, 32, 32))
    with torch.inference_mode():  # the smallest accepted size works
        assert model(torch.zeros(1, 3, MIN_SIDE, MIN_SIDE), torch.ones(1, 3, MIN_SIDE, MIN_SIDE)).shape == (
            1,
            1,
            MIN_SIDE,
            MIN_SIDE,
        )


def test_normalisation_constant_and_helper() -> None:
    norm = TINYCD_IMAGENET_NORMALISATION
    assert norm["bands"] == ("R", "G", "B") and norm["scale"] == 255.0
    assert norm["mean"] == (0.485, 0.456, 0.406) and norm["std"] == (0.229, 0.224, 0.225)
    dn = np.full((3, 2, 2), 255, dtype=np.uint8)
    x = normalise_rgb8(dn)
    assert x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))
    with pytest.raises(InputError, match=r"\[3, H, W\]"):
        normalise_rgb8(np.zeros((4, 8, 8)))


# ------------------------------------------------------------------ bad checkpoints


def test_corrupt_checkpoint_raises_input_error_naming_file(tmp_path: Path) -> None:
    bad = tmp_path / "junk_best.pth"
    bad.write_bytes(b"\x00\x01not a zip nor a pickle" * 50)
    with pytest.raises(InputError) as info:
        load_tinycd_checkpoint(bad)
    message = str(info.value)
    assert "junk_best.pth" in message and "\n" not in message
    assert "Tiny_model_4_CD" in message


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    # weights_only=True must refuse pickled non-tensor objects instead of unpickling them.
    path = tmp_path / "objects.pth"
    torch.save({"when": datetime.date(2020, 1, 1)}, path)
    with pytest.raises(InputError, match="objects.pth.*weights-only"):
        load_tinycd_checkpoint(path)


def test_state_dict_of_another_model_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "other_model.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).state_dict(), path)
    with pytest.raises(InputError) as info:
        load_tinycd_checkpoint(path)
    message = str(info.value)
    assert message.startswith("other_model.pth: not a TinyCD state dict")
    assert "missing keys: _backbone." in message and "unexpected keys: 0.bias, 0.weight" in message
    assert "\n" not in message


def test_tinycd_state_dict_with_wrong_shape_raises_input_error(tmp_path: Path, levir_model: TinyCD) -> None:
    sd = levir_model.state_dict()
    sd["_up.0._convolution.3.weight"] = torch.zeros(65, 56, 1, 1)
    path = tmp_path / "resized.pth"
    torch.save(sd, path)
    with pytest.raises(InputError, match="resized.pth: TinyCD state dict with wrong tensor shapes.*_up.0"):
        load_tinycd_checkpoint(path)


def test_non_dict_checkpoint_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(InputError, match="list.pth: holds a list"):
        load_tinycd_checkpoint(path)


def test_missing_checkpoint_raises_missing_input_error(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="nowhere.pth"):
        load_tinycd_checkpoint(tmp_path / "nowhere.pth")


def test_four_band_state_dict_saved_by_deltacd_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = TinyCD(in_channels=4)
    path = tmp_path / "four_band.pth"
    torch.save(model.state_dict(), path)
    loaded = load_tinycd_checkpoint(path)
    assert loaded.in_channels == 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
