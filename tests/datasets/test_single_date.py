"""Tests of the single_date source: STAR pairs (Zheng et al. 2021) from xBD pre-disaster polygons,
Joplin building footprints, the Puerto Rico building mask and synthetic land-cover maps."""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from conftest import LAMBERT93, needs, textured_scene, write_geotiff
from deltacd.datasets import SingleDateSource, load_manifest, prepare_dataset, read_chips
from deltacd.datasets.single_date import draw_star_partners, open_single_date
from deltacd.errors import InputError
from deltacd.datasets.xview2 import rasterize_xbd_labels

# xBD PNGs, the JPEG mask and their chips have no georeferencing: opening them is expected to warn.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

REPO = Path(__file__).resolve().parents[2]
ORIGIN = Affine(0.5, 0, 574000.0, 0, -0.5, 6280000.0)
_PLACE = re.compile(r"^(?P<source>.+?)__(?P<scene>.+)__(?P<row>\d{5})_(?P<col>\d{5})$")


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def _place(chip_id: str) -> tuple[str, int, int]:
    """(scene, row, col) of a single-date chip id ``<source>__<scene>__<row>_<col>``."""
    m = _PLACE.match(chip_id)
    assert m, chip_id
    return m["scene"], int(m["row"]), int(m["col"])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".ds"))


def _joplin_mask(data_dir: Path, tile: str) -> np.ndarray:
    """Footprints reprojected to the tile's CRS and burnt on its whole grid (pixel-centre rule)."""
    root = data_dir / "joplin-georef-unlabeled_xview2deploy"
    with rasterio.open(root / "pre" / f"{tile}.tif") as ds:
        crs, transform, shape = ds.crs, ds.transform, (ds.height, ds.width)
    polygons = gpd.read_file(root / "footprints" / "joplin.geojson").to_crs(crs)
    return rasterize(((g, 1) for g in polygons.geometry), out_shape=shape, transform=transform, fill=0, dtype="uint8")


# --- the example configuration: xBD + Joplin + Puerto Rico ------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory, data_dir: Path) -> Path:  # data_dir: the example reads ../shared/data
    out = tmp_path_factory.mktemp("star") / "ds"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # the example's paths are relative to the repository root
        return prepare_dataset(REPO / "examples" / "dataset_single_date.yaml", out)


def test_example_config_builds_star_pairs_and_records_the_parameters(example: Path) -> None:
    manifest = load_manifest(example)
    rows = read_chips(example)
    assert manifest.bands == ("R", "G", "B") and manifest.dtype == "uint8"
    assert {s["kind"] for s in manifest.sources} == {"single_date"}
    assert all(r.pair_of is not None for r in rows)
    for source in manifest.sources:
        star = source["star"]
        assert star["identity_fraction"] == 0.1 and star["pairs_per_chip"] == 2 and "2108.07002" in star["method"]
        assert sum(star["pairs"].values()) == source["n_chips"] == sum(1 for r in rows if r.source_name == source["name"])
        for split, n in star["single_date_chips"].items():
            assert star["pairs"][split] == 2 * n
            assert star["identity_pairs"][split] == int(2 * n * 0.1 + 0.5)  # exactly round(fraction * pairs)
    assert all(manifest.splits[s] > 0 for s in ("train", "val", "test"))
    assert manifest.class_balance["train"]["1"] > 0 and manifest.class_balance["train"]["0"] > 0


@needs("torch")
def test_star_pairs_are_read_by_the_torch_dataset(example: Path) -> None:
    import torch

    from deltacd.datasets import ChangeChipDataset

    item = ChangeChipDataset(example, "train")[0]  # training reads pairs like any chips
    assert item["before"].shape == item["after"].shape == (3, 256, 256) and item["label"].dtype == torch.int64


def test_pairs_are_drawn_within_one_split_and_one_source(example: Path) -> None:
    rows = read_chips(example)
    assert rows, "the example built no pairs"  # the checks below loop over them
    assert any(r.pair_of[0] != r.pair_of[1] for r in rows)  # and some pairs join two different chips
    befores: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        befores.setdefault((r.split, r.source_name), set()).add(r.pair_of[0])
    for r in rows:
        before, after = r.pair_of
        assert r.id.startswith(before + "__p")
        assert _place(before) == (r.scene, r.row_off, r.col_off)
        assert after in befores[(r.split, r.source_name)], (r.id, r.split)  # the partner is a chip of the same split
        if after != before:  # and never a shifted copy of the same place
            (s0, r0, c0), (s1, r1, c1) = _place(before), _place(after)
            assert s0 != s1 or abs(r0 - r1) >= 256 or abs(c0 - c1) >= 256
    splits_of = {}
    for (split, source), ids in befores.items():
        for i in ids:
            assert splits_of.setdefault(i, split) == split  # each single-date chip sits in one split


def test_labels_are_the_xor_of_the_two_single_date_masks(example: Path, data_dir: Path) -> None:
    from PIL import Image

    masks: dict[str, np.ndarray] = {}
    for json_path in sorted((data_dir / "xbd_matthinfo" / "tier3" / "labels").glob("*_pre_disaster.json")):
        masks[json_path.name[: -len("_pre_disaster.json")]] = rasterize_xbd_labels(json_path, shape=(1024, 1024))[0]
    for tile in ("tile_337-10160", "tile_1361-10160"):
        masks[tile] = _joplin_mask(data_dir, tile)
    jpeg = data_dir / "puertorico-maria_matthinfo" / "Pre_Event_Grids_In_TIFF_mask" / "tile_0_107_mask.jpg"
    masks["tile_0_107"] = (np.asarray(Image.open(jpeg))[..., 0] > 127).astype(np.uint8)

    def window(chip_id: str) -> np.ndarray:
        scene, row, col = _place(chip_id)
        return masks[scene][row : row + 256, col : col + 256]

    rows = read_chips(example)
    changed = 0
    for r in rows:
        label = _read(example / "label" / f"{r.id}.tif")[0]
        np.testing.assert_array_equal(label, window(r.pair_of[0]) ^ window(r.pair_of[1]), err_msg=r.id)
        changed += int(label.sum())
    assert changed == sum(load_manifest(example).class_balance[s]["1"] for s in ("train", "val", "test")) > 0
    assert {r.source_name for r in rows} == {"xbd-pre", "joplin", "puerto-rico"}


def test_identity_pairs_have_equal_dates_and_no_change(example: Path) -> None:
    rows = read_chips(example)
    identity = [r for r in rows if r.pair_of[0] == r.pair_of[1]]
    others = [r for r in rows if r.pair_of[0] != r.pair_of[1]]
    assert identity and others
    for r in identity:
        np.testing.assert_array_equal(_read(example / "A" / f"{r.id}.tif"), _read(example / "B" / f"{r.id}.tif"))
        assert not _read(example / "label" / f"{r.id}.tif").any()
    r = next(r for r in others if r.source_name == "joplin")
    with rasterio.open(example / "A" / f"{r.id}.tif") as a, rasterio.open(example / "B" / f"{r.id}.tif") as b:
        assert a.crs.to_epsg() == b.crs.to_epsg() == 26915
        assert a.transform != b.transform  # B is the other place, with its own georeferencing
        assert not np.array_equal(a.read(), b.read())


# --- real single-date labels ------------------------------------------------------------------


def test_joplin_footprints_are_rasterised_on_the_tile_grid_window_by_window(data_dir: Path) -> None:
    root = data_dir / "joplin-georef-unlabeled_xview2deploy"
    cfg = SingleDateSource(image=root / "pre" / "tile_1361-10160.tif", labels=root / "footprints" / "joplin.geojson")
    source = open_single_date(cfg, 0, 255)
    (scene,) = source.scenes
    try:
        mosaic = np.zeros((1024, 1024), np.uint8)
        for row in range(0, 1024, 256):
            for col in range(0, 1024, 384):  # windows of two widths, clipped at the edge
                w = Window(col, row, min(384, 1024 - col), 256)
                sw = scene.read(w)
                assert sw.before.shape == (3, 256, w.width) and sw.before.dtype == np.uint8
                mosaic[row : row + 256, col : col + w.width] = sw.label
    finally:
        source.close()
    expected = _joplin_mask(data_dir, "tile_1361-10160")
    np.testing.assert_array_equal(mosaic, expected)
    assert 0.05 < expected.mean() < 0.3  # a residential tile: buildings are present
    assert source.description["n_polygons"] == 2823 and source.bands == ("R", "G", "B")


def test_puerto_rico_tif_mask_pairs_are_the_xor_of_the_mask(data_dir: Path, tmp_path: Path) -> None:
    root = data_dir / "puertorico-maria_matthinfo"
    mask_path = root / "Pre_Event_Grids_In_TIFF_mask" / "tile_0_107_mask.tif"
    source = {"kind": "single_date", "image": str(root / "Pre_Event_Grids_In_TIFF" / "tile_0_107.tif"),
              "labels": str(mask_path), "identity_fraction": 0.0, "pairs_per_chip": 3}
    out = prepare_dataset({"sources": [source], "split": {"val_fraction": 0.0, "test_fraction": 0.0}}, tmp_path / "ds")
    mask = _read(mask_path)[0]
    rows = read_chips(out)
    assert len(rows) == 12  # 4 chips x 3 partners: each chip with the three others
    for r in rows:
        (_, r0, c0), (_, r1, c1) = _place(r.pair_of[0]), _place(r.pair_of[1])
        assert (r0, c0) != (r1, c1)
        expected = mask[r0 : r0 + 256, c0 : c0 + 256] ^ mask[r1 : r1 + 256, c1 : c1 + 256]
        np.testing.assert_array_equal(_read(out / "label" / f"{r.id}.tif")[0], expected)
    assert {r.pair_of[1] for r in rows if r.pair_of[0] == rows[0].pair_of[0]} == {r.pair_of[0] for r in rows} - {rows[0].pair_of[0]}
    assert load_manifest(out).raw["sources"][0]["label_values"] == ["0/1"]


# --- land-cover maps --------------------------------------------------------------------------


def _pixel_box(r0: int, c0: int, r1: int, c1: int) -> shapely.Polygon:
    x0, y0 = ORIGIN * (c0, r0)
    x1, y1 = ORIGIN * (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@pytest.mark.parametrize("form", ["raster", "vector"])
def test_landcover_single_date_maps_give_class_change_and_from_to(form: str, tmp_path: Path) -> None:
    image = write_geotiff(tmp_path / "img.tif", textured_scene((256, 256), 4, seed=3))
    cover = np.full((256, 256), 1, np.uint8)  # 1 forest, 2 urban, 3 water; 0 = unlabelled (nodata)
    cover[:, 128:] = 2
    cover[150:220, 20:90] = 3
    cover[:10, :] = 0
    if form == "raster":
        labels = write_geotiff(tmp_path / "cover.tif", cover, nodata=0)
    else:
        names = {1: "forest", 2: "urban", 3: "water"}
        geoms = {1: _pixel_box(10, 0, 256, 128).difference(_pixel_box(150, 20, 220, 90)),
                 2: _pixel_box(10, 128, 256, 256), 3: _pixel_box(150, 20, 220, 90)}
        labels = tmp_path / "cover.gpkg"
        gpd.GeoDataFrame({"cover": [names[k] for k in geoms]}, geometry=list(geoms.values()), crs=LAMBERT93).to_file(labels)
    source = {"kind": "single_date", "image": str(image), "labels": str(labels), "label_type": "classes",
              "bands": "B,G,R,N", "classes": {1: "forest", 2: "urban", 3: "water"}, "identity_fraction": 0.25,
              **({"class_field": "cover"} if form == "vector" else {})}
    config = {"sources": [source], "chip_size": 64, "min_valid_fraction": 0.0,
              "split": {"val_fraction": 0.0, "test_fraction": 0.0}}
    out = prepare_dataset(config, tmp_path / "ds")
    manifest = load_manifest(out)
    assert manifest.extra_targets == ("from", "to") and manifest.target_classes["to"] == {1: "forest", 2: "urban", 3: "water"}
    truth = np.where(cover == 0, 255, cover)
    rows = read_chips(out)
    assert len(rows) == 16 and sum(r.pair_of[0] == r.pair_of[1] for r in rows) == 4
    for r in rows:
        (_, r0, c0), (_, r1, c1) = _place(r.pair_of[0]), _place(r.pair_of[1])
        c_from, c_to = truth[r0 : r0 + 64, c0 : c0 + 64], truth[r1 : r1 + 64, c1 : c1 + 64]
        np.testing.assert_array_equal(_read(out / "from" / f"{r.id}.tif")[0], c_from)
        np.testing.assert_array_equal(_read(out / "to" / f"{r.id}.tif")[0], c_to)
        expected = np.where((c_from == 255) | (c_to == 255), 255, (c_from != c_to).astype(np.uint8))
        np.testing.assert_array_equal(_read(out / "label" / f"{r.id}.tif")[0], expected)
    transitions = {(t["from_name"], t["to_name"]) for t in manifest.raw["transitions"]}
    assert ("forest", "urban") in transitions or ("urban", "forest") in transitions
    assert manifest.raw["sources"][0]["star"]["label_rule"].startswith("class_before != class_after")


# --- the partner draw -------------------------------------------------------------------------


def test_partner_draw_is_seeded_exact_and_avoids_overlapping_chips() -> None:
    places = [("a", r, c) for r in range(0, 640, 128) for c in range(0, 640, 128)]  # stride 128 < chip 256
    draw = dict(chip_size=256, pairs_per_chip=3, identity_fraction=0.2)
    partners = draw_star_partners(places, rng=np.random.default_rng(5), **draw)
    assert partners == draw_star_partners(places, rng=np.random.default_rng(5), **draw)
    assert partners != draw_star_partners(places, rng=np.random.default_rng(6), **draw)
    assert sum(j == i for i, js in enumerate(partners) for j in js) == round(25 * 3 * 0.2)
    for i, js in enumerate(partners):
        others = [j for j in js if j != i]
        assert len(set(others)) == len(others)  # distinct partners while there are enough
        for j in others:
            assert abs(places[i][1] - places[j][1]) >= 256 or abs(places[i][2] - places[j][2]) >= 256
    assert draw_star_partners([("a", 0, 0)], rng=np.random.default_rng(0), **draw) == [[0, 0, 0]]  # nobody else


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["label size", "no overlap", "identity above 1", "identity below 0", "xbd and image"])
def test_bad_inputs_raise_one_line_errors_and_write_nothing(case: str, data_dir: Path, tmp_path: Path) -> None:
    image = write_geotiff(tmp_path / "img.tif", textured_scene((128, 128), 3, seed=1, dtype="uint8"))
    source: dict = {"kind": "single_date", "image": str(image), "bands": "R,G,B"}
    match = None
    if case == "label size":
        source["labels"] = str(write_geotiff(tmp_path / "mask.tif", np.zeros((100, 128), np.uint8)))
        match = "100 px"
    elif case == "no overlap":  # Joplin footprints (Missouri) over a tile near Toulouse
        source["labels"] = str(data_dir / "joplin-georef-unlabeled_xview2deploy" / "footprints" / "joplin.geojson")
        match = "overlaps"
    elif case.startswith("identity"):
        source["labels"] = str(write_geotiff(tmp_path / "mask.tif", np.zeros((128, 128), np.uint8)))
        source["identity_fraction"] = 1.5 if case == "identity above 1" else -0.1
        match = "identity_fraction"
    else:
        source["xbd"] = str(data_dir / "xbd_matthinfo" / "tier3")
        match = "either"
    with pytest.raises(InputError, match=match) as info:
        prepare_dataset({"sources": [source], "chip_size": 64}, tmp_path / "ds")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ds").exists()
    assert _leftovers(tmp_path) == []
