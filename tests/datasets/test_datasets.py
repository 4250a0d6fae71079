"""Tests of deltacd.datasets: prepare_dataset on real and synthetic ground truth, the torch Dataset
and the paired augmentation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes

from conftest import LAMBERT93, needs, textured_scene, write_geotiff
from deltacd.datasets import DatasetConfig, chip_offsets, load_manifest, prepare_dataset, read_chips
from deltacd.errors import InputError, MissingInputError, OutputError
from deltacd.datasets.xview2 import XBD_SUBTYPES

try:
    import torch
except ImportError:  # a core install (no `learn` extra): the tests marked @needs("torch") skip
    torch = None

# LEVIR, DSIFN and xBD are plain PNGs: opening them (and their chips) is expected to warn.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

REPO = Path(__file__).resolve().parents[2]
ORIGIN = Affine(0.5, 0, 574000.0, 0, -0.5, 6280000.0)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def _mosaic(root: Path, folder: str, shape: tuple[int, int], fill: int = 254) -> np.ndarray:
    """Reassemble the single-band chips of ``folder`` at their offsets (``fill`` where no chip)."""
    out = np.full(shape, fill, dtype=np.int32)
    for r in read_chips(root):
        chip = _read(root / folder / f"{r.id}.tif")[0]
        out[r.row_off : r.row_off + chip.shape[0], r.col_off : r.col_off + chip.shape[1]] = chip
    return out


def _pixel_box(r0: int, c0: int, r1: int, c1: int, transform: Affine = ORIGIN) -> shapely.Polygon:
    """Polygon of pixel rows r0..r1-1 and columns c0..c1-1 in map coordinates."""
    x0, y0 = transform * (c0, r0)
    x1, y1 = transform * (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


# --- real chips folders -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def levir(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("levir") / "ds"
    config = {
        "sources": [{"kind": "chips", "path": str(data_dir / "levircd_bitcd")}],
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 3},
    }
    return prepare_dataset(config, out)


def test_levir_chips_source_writes_every_crop_with_binary_labels(levir: Path, data_dir: Path) -> None:
    rows = read_chips(levir)
    assert len(rows) == 11
    manifest = load_manifest(levir)
    assert manifest.bands == ("R", "G", "B")
    assert manifest.dtype == "uint8"
    assert sum(manifest.splits.values()) == 11 and all(manifest.splits[s] > 0 for s in ("train", "val", "test"))
    src = data_dir / "levircd_bitcd"
    for r in rows:
        label = _read(levir / "label" / f"{r.id}.tif")[0]
        assert set(np.unique(label)) <= {0, 1}
        with rasterio.open(src / "label" / f"{r.scene}.png") as ds:
            np.testing.assert_array_equal(label, (ds.read(1) == 255).astype(np.uint8))
        with rasterio.open(src / "A" / f"{r.scene}.png") as ds:
            np.testing.assert_array_equal(_read(levir / "A" / f"{r.id}.tif"), ds.read())  # raw values kept
    assert manifest.raw["sources"][0]["label_values"] == "0/255"
    assert manifest.class_balance["train"]["1"] > 0


def test_levir_normalisation_is_that_of_the_train_chips_of_both_dates(levir: Path) -> None:
    manifest = load_manifest(levir)
    train = manifest.chips("train")
    pixels = np.concatenate(
        [_read(levir / d / f"{r.id}.tif").reshape(3, -1).astype(np.float64) for r in train for d in ("A", "B")], axis=1
    )
    mean, std = manifest.normalisation()
    np.testing.assert_allclose(mean, pixels.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(std, pixels.std(axis=1), rtol=1e-10)
    everything = np.concatenate(
        [_read(levir / "A" / f"{r.id}.tif").reshape(3, -1) for r in manifest.chips()], axis=1
    ).astype(np.float64)
    assert not np.allclose(mean, everything.mean(axis=1), rtol=1e-6)  # val/test chips are left out


def test_forced_split_sends_levir_test_crops_to_test(data_dir: Path, tmp_path: Path) -> None:
    folder = str(data_dir / "levircd_bitcd")
    config = {
        "sources": [
            {"kind": "chips", "path": folder, "glob": ["train_*", "val_*"], "name": "levir"},
            {"kind": "chips", "path": folder, "glob": "test_*", "split": "test", "name": "levir-test"},
        ],
        "split": {"val_fraction": 0.25, "test_fraction": 0.0},
    }
    rows = read_chips(prepare_dataset(config, tmp_path / "ds"))
    assert {r.scene for r in rows if r.split == "test"} == {r.scene for r in rows if r.scene.startswith("test_")}
    assert len([r for r in rows if r.split == "test"]) == 7
    assert {r.split for r in rows if not r.scene.startswith("test_")} == {"train", "val"}


@pytest.mark.realdata  # its example config reads ../shared/data
def test_example_config_builds_levir_dsifn_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # its paths are relative to the repository root
    root = prepare_dataset(REPO / "examples" / "dataset_levir_dsifn.yaml", tmp_path / "ds")
    rows = read_chips(root)
    test = {(r.source_name, r.scene) for r in rows if r.split == "test"}
    assert ("dsifn-test", "8_3") in test and ("dsifn-test", "9_3") in test
    assert not any(name == "dsifn" for name, _ in test)
    assert load_manifest(root).splits == {"train": 9, "val": 3, "test": 9}


def test_dsifn_labels_keep_the_changed_fraction(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "dsifn_changeformer"
    calls: list[tuple[int, int]] = []
    root = prepare_dataset({"sources": [{"kind": "chips", "path": str(src)}]}, tmp_path / "ds", progress=lambda d, t: calls.append((d, t)))
    rows = read_chips(root)
    assert len(rows) == 10
    assert calls[-1] == (10, 10) and len(calls) == 10
    for r in rows[:3]:
        with rasterio.open(src / "label" / f"{r.scene}.png") as ds:
            expected = (ds.read(1) > 0).mean()
        assert _read(root / "label" / f"{r.id}.tif").mean() == pytest.approx(expected)


# --- xBD --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xbd(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("xbd") / "ds"
    config = {
        "sources": [{"kind": "xbd", "path": str(data_dir / "xbd_matthinfo" / "tier3")}],
        "chip_size": 512,
        "min_valid_fraction": 0.0,
        "split": {"val_fraction": 0.34, "test_fraction": 0.0},
    }
    return prepare_dataset(config, out)


def test_xbd_damage_chips_hold_the_json_classes_and_label_is_damaged(xbd: Path, data_dir: Path) -> None:
    labels = data_dir / "xbd_matthinfo" / "tier3" / "labels"
    manifest = load_manifest(xbd)
    assert manifest.extra_targets == ("damage",)
    assert manifest.target_classes["damage"][4] == "destroyed"
    rows = read_chips(xbd)
    assert len(rows) == 12  # 3 tiles of 1024 px, 4 chips each
    for tile in sorted({r.scene for r in rows}):
        doc = json.loads((labels / f"{tile}_post_disaster.json").read_text())
        subtypes = {f["properties"]["subtype"] for f in doc["features"]["xy"]}
        expected = {XBD_SUBTYPES.get(s, 1) for s in subtypes} | {0}  # un-classified counts as no-damage
        found: set[int] = set()
        for r in (r for r in rows if r.scene == tile):
            damage = _read(xbd / "damage" / f"{r.id}.tif")[0]
            label = _read(xbd / "label" / f"{r.id}.tif")[0]
            found |= set(np.unique(damage).tolist())
            np.testing.assert_array_equal(label, np.isin(damage, (2, 3, 4)).astype(np.uint8))
        assert found == expected
    balance = manifest.raw["target_balance"]["damage"]
    assert sum(int(balance[s].get("4", 0)) for s in balance) > 0


def test_xbd_unclassified_buildings_can_be_ignored(data_dir: Path, tmp_path: Path) -> None:
    source = {"kind": "xbd", "path": str(data_dir / "xbd_matthinfo" / "tier3"), "glob": "*_00000000",
              "unclassified": "ignore", "split": "train"}
    root = prepare_dataset({"sources": [source], "chip_size": 1024}, tmp_path / "ds")
    (row,) = read_chips(root)
    damage = _read(root / "damage" / f"{row.id}.tif")[0]
    label = _read(root / "label" / f"{row.id}.tif")[0]
    assert (damage == 255).sum() > 100  # tile 0 has 7 un-classified buildings
    np.testing.assert_array_equal(damage == 255, label == 255)


@needs("torch")
def test_change_chip_dataset_items_have_documented_shapes_and_types(xbd: Path, levir: Path) -> None:
    from deltacd.datasets import ChangeChipDataset

    train = ChangeChipDataset(levir, "train")
    item = train[0]
    assert item["before"].shape == (3, 256, 256) and item["before"].dtype == torch.float32
    assert item["after"].shape == (3, 256, 256) and item["after"].dtype == torch.float32
    assert item["label"].shape == (256, 256) and item["label"].dtype == torch.int64
    assert isinstance(item["id"], str) and item["id"] in {r.id for r in read_chips(levir) if r.split == "train"}
    assert float(item["before"].max()) > 1.5  # raw digital numbers, not normalised
    assert len(train) + len(ChangeChipDataset(levir, "val")) + len(ChangeChipDataset(levir, "test")) == 11
    damage = ChangeChipDataset(xbd, "all", target="damage")[0]["label"]
    assert damage.shape == (512, 512) and int(damage.max()) <= 4
    with pytest.raises(InputError, match="target"):
        ChangeChipDataset(levir, "train", target="damage")


# --- georeferenced pairs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def puerto_rico(data_dir: Path, tmp_path_factory) -> dict:
    """The real Puerto Rico pair and change polygons vectorised from its building mask."""
    root = data_dir / "puertorico-maria_matthinfo"
    with rasterio.open(root / "Pre_Event_Grids_In_TIFF_mask" / "tile_0_107_mask.tif") as ds:
        mask, transform, crs = ds.read(1), ds.transform, ds.crs
    geoms = [shapely.geometry.shape(g) for g, v in shapes(mask, mask=mask == 1, transform=transform) if v == 1]
    path = tmp_path_factory.mktemp("pr") / "changes.gpkg"
    gpd.GeoDataFrame(geometry=geoms, crs=crs).to_file(path)
    return {
        "before": str(root / "Pre_Event_Grids_In_TIFF" / "tile_0_107.tif"),
        "after": str(root / "Post_Event_Grids_In_TIFF" / "tile_0_107.tif"),
        "polygons": str(path),
        "mask": mask,
        "transform": transform,
    }


def test_polygons_source_labels_are_the_rasterised_polygons(puerto_rico: dict, tmp_path: Path) -> None:
    source = {k: puerto_rico[k] for k in ("before", "after", "polygons")}
    config = {"sources": [{"kind": "polygons", **source}], "chip_size": 128, "split": {"seed": 1}}
    root = prepare_dataset(config, tmp_path / "ds")
    assert len(read_chips(root)) == 16
    np.testing.assert_array_equal(_mosaic(root, "label", (512, 512)), puerto_rico["mask"])
    first = read_chips(root)[5]
    with rasterio.open(root / "A" / f"{first.id}.tif") as ds:
        assert ds.crs.to_epsg() == 32619
        assert ds.transform.almost_equals(puerto_rico["transform"] * Affine.translation(first.col_off, first.row_off))
        assert ds.descriptions == ("R", "G", "B")
    manifest = load_manifest(root)
    assert manifest.raw["sources"][0]["crs"] == "EPSG:32619"
    assert manifest.raw["sources"][0]["rasterisation"] == "pixel centre inside a polygon"


def test_spatial_block_split_keeps_train_chips_away_from_val_and_test(puerto_rico: dict, tmp_path: Path) -> None:
    source = {k: puerto_rico[k] for k in ("before", "after", "polygons")}
    config = {
        "sources": [{"kind": "polygons", **source}],
        "chip_size": 64,
        "split": {"block_size": 128, "val_fraction": 0.25, "test_fraction": 0.25, "seed": 0},
    }
    root = prepare_dataset(config, tmp_path / "ds")
    rows = read_chips(root)
    manifest = load_manifest(root)
    assert all(manifest.splits[s] > 0 for s in ("train", "val", "test"))
    assert manifest.raw["split_rule"]["dropped_by_guard"] == 64 - len(rows) > 0
    for a in rows:
        for b in rows:
            if a.split != b.split:  # footprints neither overlap nor touch
                assert abs(a.row_off - b.row_off) > 64 or abs(a.col_off - b.col_off) > 64, (a, b)
    blocks: dict[str, set[str]] = {}
    for r in rows:
        blocks.setdefault(r.block, set()).add(r.split)
    assert all(len(s) == 1 for s in blocks.values())


def test_nodata_at_either_date_is_ignored_and_mostly_empty_chips_dropped(tmp_path: Path) -> None:
    before = textured_scene((256, 256), 4, seed=0)
    after = textured_scene((256, 256), 4, seed=1)
    after[:, :, :64] = 0  # no data in the left quarter of date 2
    b = write_geotiff(tmp_path / "b.tif", before, nodata=0)
    a = write_geotiff(tmp_path / "a.tif", after, nodata=0)
    gpd.GeoDataFrame(geometry=[_pixel_box(140, 150, 180, 200)], crs=LAMBERT93).to_file(tmp_path / "p.gpkg")
    config = {
        "sources": [{"kind": "polygons", "before": str(b), "after": str(a), "polygons": str(tmp_path / "p.gpkg"),
                     "bands_before": "B,G,R,N", "bands_after": "B,G,R,N"}],
        "chip_size": 128,
        "min_valid_fraction": 0.6,
    }
    root = prepare_dataset(config, tmp_path / "ds")
    rows = read_chips(root)
    assert sorted(r.col_off for r in rows) == [128, 128]  # the left chips are half no-data: dropped
    config["min_valid_fraction"] = 0.0
    root = prepare_dataset(config, tmp_path / "ds", overwrite=True)
    label = _mosaic(root, "label", (256, 256))
    assert np.all(label[:, :64] == 255) and np.all(label[:, 64:] != 255)
    assert np.all(label[140:180, 150:200] == 1) and label.sum(where=label == 1) == 40 * 50
    with rasterio.open(root / "B" / f"{read_chips(root)[0].id}.tif") as ds:
        assert ds.nodata == 0 and ds.dtypes[0] == "uint16"
    assert load_manifest(root).class_balance["train"]["ignored"] + sum(
        load_manifest(root).class_balance[s]["ignored"] for s in ("val", "test")) == 256 * 64


def test_landcover_maps_give_change_where_classes_differ(tmp_path: Path) -> None:
    b = write_geotiff(tmp_path / "b.tif", textured_scene((256, 256), 4, seed=0))
    a = write_geotiff(tmp_path / "a.tif", textured_scene((256, 256), 4, seed=2))
    cover = np.ones((256, 256), np.uint8)
    cover[:, 128:] = 2
    cover[:16] = 0  # unlabelled rows of the first map (nodata)
    write_geotiff(tmp_path / "lc_before.tif", cover, nodata=0)
    urban = shapely.union_all([_pixel_box(0, 128, 240, 256), _pixel_box(64, 32, 128, 96)])
    forest = _pixel_box(0, 0, 240, 128).difference(_pixel_box(64, 32, 128, 96))
    gpd.GeoDataFrame({"cover": ["urban", "forest"]}, geometry=[urban, forest], crs=LAMBERT93).to_file(tmp_path / "lc_after.gpkg")
    config = {
        "sources": [{
            "kind": "landcover", "before": str(b), "after": str(a), "bands_before": "B,G,R,N", "bands_after": "B,G,R,N",
            "map_before": str(tmp_path / "lc_before.tif"), "map_after": str(tmp_path / "lc_after.gpkg"),
            "class_field": "cover", "classes": {1: "forest", 2: "urban"},
        }],
        "chip_size": 128,
        "min_valid_fraction": 0.0,
    }
    root = prepare_dataset(config, tmp_path / "ds")
    expected = np.zeros((256, 256), np.int32)
    expected[64:128, 32:96] = 1
    expected[:16] = 255
    expected[240:] = 255  # no polygon of the second map there
    np.testing.assert_array_equal(_mosaic(root, "label", (256, 256)), expected)
    from_ = _mosaic(root, "from", (256, 256))
    to = _mosaic(root, "to", (256, 256))
    assert np.all(from_[:16] == 255) and np.all(from_[16:, :128] == 1) and np.all(from_[16:, 128:] == 2)
    assert np.all(to[240:] == 255) and np.all(to[64:128, 32:96] == 2) and np.all(to[:64, :128] == 1)
    manifest = load_manifest(root)
    assert manifest.extra_targets == ("from", "to")
    assert manifest.target_classes["to"] == {1: "forest", 2: "urban"}
    transitions = {(t["from_name"], t["to_name"]): t["pixels"] for t in manifest.raw["transitions"]}
    assert transitions[("forest", "urban")] == 64 * 64
    assert set(transitions) == {("forest", "forest"), ("forest", "urban"), ("urban", "urban")}


# --- bad inputs -------------------------------------------------------------------------------


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".ds"))


@pytest.mark.parametrize(
    "case", ["missing folder", "label size", "different bands", "unknown key", "nested key", "empty train", "image twice"]
)
def test_bad_inputs_raise_one_line_errors_and_write_nothing(case: str, data_dir: Path, tmp_path: Path) -> None:
    levir = {"kind": "chips", "path": str(data_dir / "levircd_bitcd")}
    error: type[Exception] = InputError
    if case == "missing folder":
        config, error = {"sources": [{"kind": "chips", "path": str(tmp_path / "nope")}]}, MissingInputError
    elif case == "label size":
        rgb = np.zeros((64, 64, 3), np.uint8)
        _png(tmp_path / "src" / "A" / "x.png", rgb)
        _png(tmp_path / "src" / "B" / "x.png", rgb)
        _png(tmp_path / "src" / "label" / "x.png", np.zeros((32, 32), np.uint8))
        config = {"sources": [{"kind": "chips", "path": str(tmp_path / "src")}], "chip_size": 32}
    elif case == "different bands":
        config = {"sources": [levir, {"kind": "chips", "path": str(data_dir / "dsifn_changeformer"), "bands": "R,G,N"}]}
    elif case == "unknown key":
        config = {"sources": [levir], "chip_sise": 128}
    elif case == "nested key":
        config = {"sources": [{**levir, "globb": "test_*"}]}
    elif case == "empty train":  # every chip in val/test: no statistics to normalise with
        config = {"sources": [{**levir, "glob": "test_*", "split": "test"}]}
    else:  # one crop in two sources would sit in two splits
        config = {"sources": [{**levir, "glob": "test_*", "split": "test"}, {**levir, "name": "again"}]}
    with pytest.raises(error) as info:
        prepare_dataset(config, tmp_path / "ds")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ds").exists()
    assert _leftovers(tmp_path) == []


def test_existing_output_is_refused_unless_overwrite(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    config = {"sources": [{"kind": "chips", "path": str(data_dir / "levircd_bitcd"), "glob": "train_*"}],
              "split": {"val_fraction": 0.0, "test_fraction": 0.0}}
    with pytest.raises(OutputError, match="exists"):
        prepare_dataset(config, out)
    with pytest.raises(OutputError, match="not a deltacd output folder"):  # never deletes a folder that is not a dataset
        prepare_dataset(config, out, overwrite=True)
    assert os.listdir(out) == ["keep.txt"]
    (out / "keep.txt").unlink()
    prepare_dataset(config, out, overwrite=True)
    assert load_manifest(out).splits["train"] == 3
    assert _leftovers(tmp_path) == []


def test_config_validation_and_chip_layout() -> None:
    assert chip_offsets(600, 256, 256) == [0, 256, 344]
    assert chip_offsets(512, 256, 128) == [0, 128, 256]
    assert chip_offsets(100, 256, 256) == []
    with pytest.raises(InputError, match="val_fraction"):
        bad_split = {"val_fraction": 0.6, "test_fraction": 0.5}
        prepare_dataset({"sources": [{"kind": "chips", "path": "."}], "split": bad_split}, "/nonexistent/x")
    with pytest.raises(InputError, match="kind"):
        prepare_dataset({"sources": [{"kind": "rasters", "path": "."}]}, "/nonexistent/x")
    assert DatasetConfig(sources=[{"kind": "chips", "path": "."}]).chip_size == 256


# --- augmentation -----------------------------------------------------------------------------


@pytest.fixture(autouse=False)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


OFF = dict(hflip_p=0.0, vflip_p=0.0, rot90_p=0.0, photometric_p=0.0, noise_p=0.0, shift_p=0.0, swap_p=0.0)


def _pattern(batch: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An asymmetric ramp (no flip or rotation maps it onto itself), its date-2 copy + 1, its label."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ramp = (rows * 3 + cols * cols * 0.1).float()
    before = ramp.expand(batch, 2, size, size).clone()
    after = before + 1
    label = (ramp > ramp.median()).long().expand(batch, size, size).clone()
    label[:, 0, :5] = 255
    return before, after, label


@needs("torch", "kornia")
@pytest.mark.usefixtures("one_thread")
def test_augmentation_flips_dates_and_label_together() -> None:
    from deltacd.datasets import AugmentConfig, PairAugmentation

    before, after, label = _pattern()
    b, a, lab = PairAugmentation(AugmentConfig(**{**OFF, "hflip_p": 1.0}), seed=0)(before, after, label)
    assert torch.equal(b, before.flip(-1)) and torch.equal(a, after.flip(-1)) and torch.equal(lab, label.flip(-1))
    aug = PairAugmentation(AugmentConfig(**{**OFF, "hflip_p": 0.5, "vflip_p": 0.5, "rot90_p": 0.7}), seed=1)
    b, a, lab = aug(before, after, label)
    assert not torch.equal(b, before)
    assert torch.allclose(a - b, torch.ones_like(b), atol=1e-4)  # the same transform for both dates
    threshold = before[0, 0].flatten().median()
    expected = (b[:, 0] > threshold).long()
    known = lab != 255
    assert torch.equal(lab[known], expected[known]) and int((lab == 255).sum()) == 4 * 5


@needs("torch", "kornia")
@pytest.mark.usefixtures("one_thread")
def test_augmentation_affine_keeps_labels_in_the_allowed_set() -> None:
    from deltacd.datasets import AugmentConfig, PairAugmentation

    before, after, label = _pattern(size=48)
    config = AugmentConfig(**{**OFF, "affine_p": 1.0, "affine_degrees": 10.0, "affine_scale": (0.85, 0.9)})
    b, a, lab = PairAugmentation(config, seed=2)(before, after, label)
    assert lab.dtype == torch.int64 and b.shape == before.shape
    assert set(torch.unique(lab).tolist()) <= {0, 1, 255}
    assert bool((lab[:, 0, 0] == 255).all())  # corners padded by the zoom-out are ignored


@needs("torch", "kornia")
@pytest.mark.usefixtures("one_thread")
def test_augmentation_swap_and_misregistration() -> None:
    from deltacd.datasets import AugmentConfig, PairAugmentation

    before, after, label = _pattern()
    b, a, lab = PairAugmentation(AugmentConfig(**{**OFF, "swap_p": 1.0}), seed=0)(before, after, label)
    assert torch.equal(b, after) and torch.equal(a, before) and torch.equal(lab, label)
    b, a, lab = PairAugmentation(AugmentConfig(**{**OFF, "swap_p": 1.0}), symmetric_target=False, seed=0)(before, after, label)
    assert torch.equal(b, before)  # from/to or damage targets: never swapped
    b, a, lab = PairAugmentation(AugmentConfig(**{**OFF, "shift_p": 1.0, "max_shift_px": 1.5}), seed=0)(before, after, label)
    assert torch.equal(b, before) and torch.equal(lab, label)
    moved = (a - after).abs().amax(dim=(1, 2, 3))
    assert bool((moved > 0.01).all()) and float((a - after).abs().mean()) < 3 * 3.3  # at most ~1.5 px of a 3/px ramp


@needs("torch", "kornia")
@pytest.mark.usefixtures("one_thread")
def test_augmentation_is_reproducible_with_a_seed_and_photometry_is_per_date() -> None:
    from deltacd.datasets import AugmentConfig, PairAugmentation

    before, after, label = _pattern()
    config = AugmentConfig(**{**OFF, "photometric_p": 1.0, "noise_p": 1.0, "hflip_p": 0.5})
    first = PairAugmentation(config, seed=7)(before, after, label)
    again = PairAugmentation(config, seed=7)(before, after, label)
    other = PairAugmentation(config, seed=8)(before, after, label)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[0], other[0])
    b, a, _ = first
    assert not torch.allclose(a - b, torch.ones_like(b), atol=1e-3)  # dates got different photometry
    aug = PairAugmentation(config, seed=7).eval()
    assert all(torch.equal(x, y) for x, y in zip(aug(before, after, label), (before, after, label)))
