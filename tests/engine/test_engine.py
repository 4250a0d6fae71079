"""The tiled engine and the block-wise vectoriser give the same answer as whole-scene processing."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage

from deltacd.engine.runner import plan_tiles, predict_scene
from deltacd.engine.tiling import blend_weights, tile_offsets
from deltacd.io.grid import Grid
from deltacd.io.rasters import open_image
from deltacd.methods.base import ChangeMethod
from deltacd.postprocess.polygons import CleanUp, change_regions, rasterise_changes, rescue_pixels, vectorise_changes
from deltacd.prepare.align import align_pair


class LocalMean(ChangeMethod):
    """A method with spatial context: 9x9 mean of |after - before| (border effects on tile edges)."""

    name = "local-mean"
    context = 8
    size_multiple = 8

    def predict(self, before, after):
        diff = np.abs(after - before).mean(axis=1)
        return np.stack([ndimage.uniform_filter(d, 9, mode="reflect") for d in diff]).astype(np.float32)


@pytest.mark.parametrize("length,size,overlap", [(10, 4, 1), (1000, 256, 64), (256, 256, 32), (100, 256, 0), (513, 128, 0)])
def test_tiles_cover_the_axis_with_the_requested_overlap(length, size, overlap):
    offsets = tile_offsets(length, size, overlap)
    covered = np.zeros(length, bool)
    for o in offsets:
        covered[o : o + size] = True
    assert covered.all()
    assert offsets[0] == 0 and offsets[-1] + min(size, length) == length
    assert all(b - a <= size - overlap for a, b in zip(offsets, offsets[1:]))


def test_blend_weights_ramp_to_one_inside():
    w = blend_weights(64, 64, 16)
    assert w[32, 32] == 1.0 and w[0, 0] < 0.01 and w.min() > 0


def test_tiles_are_padded_to_the_method_multiple():
    layout = plan_tiles((100, 70), LocalMean(), tile_size=64)
    assert layout.padded[0] % 8 == 0 and layout.padded[1] % 8 == 0
    assert layout.overlap == 16


def _pair(data_dir):
    folder = data_dir / "puertorico-maria_matthinfo"
    return align_pair(open_image(folder / "Pre_Event_Grids_In_TIFF/tile_0_107.tif"),
                      open_image(folder / "Post_Event_Grids_In_TIFF/tile_0_107.tif"))


def test_per_pixel_method_is_exact_whatever_the_tiling(data_dir):
    from deltacd.methods.cva import CVA

    with _pair(data_dir) as pair:
        method = CVA()
        method.scale = np.ones(3, np.float32)
        whole = np.concatenate([s for _, s in predict_scene(pair, method, tile_size=512)])
        tiled = np.concatenate([s for _, s in predict_scene(pair, method, tile_size=96, overlap=16, batch_size=3)])
        block = pair.read(pair.grid.full_window)
    np.testing.assert_allclose(tiled, whole, rtol=1e-6)
    expected = np.sqrt(((block.after - block.before) ** 2).sum(axis=0))
    np.testing.assert_allclose(whole, expected, rtol=1e-5)


def test_overlap_and_blending_hide_tile_borders(data_dir):
    with _pair(data_dir) as pair:
        whole = np.concatenate([s for _, s in predict_scene(pair, LocalMean(), tile_size=512)])
        blended = np.concatenate([s for _, s in predict_scene(pair, LocalMean(), tile_size=128, overlap=32)])
        seams = np.concatenate([s for _, s in predict_scene(pair, LocalMean(), tile_size=128, overlap=0)])
    assert np.abs(blended - whole).max() < 0.05 * np.abs(seams - whole).max()


def test_strips_are_yielded_in_order_and_cover_the_scene(data_dir):
    with _pair(data_dir) as pair:
        windows = [w for w, _ in predict_scene(pair, LocalMean(), tile_size=128, overlap=32)]
    rows = [(int(w.row_off), int(w.height)) for w in windows]
    assert rows[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert rows[-1][0] + rows[-1][1] == 512


def _whole_scene_polygons(mask, transform):
    labels, _ = ndimage.label(mask)
    return sorted(
        round(shape_area, 6)
        for shape_area in (
            __import__("shapely").geometry.shape(g).area
            for g, v in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4, transform=transform)
        )
    )


def test_block_vectorisation_merges_regions_cut_by_block_edges():
    rng = np.random.default_rng(5)
    score = ndimage.gaussian_filter(rng.normal(size=(300, 260)), 4).astype(np.float32)
    grid = Grid(CRS.from_epsg(2154), Affine(0.5, 0, 574000, 0, -0.5, 6280000), 260, 300)
    read = lambda w: score[int(w.row_off): int(w.row_off + w.height), int(w.col_off): int(w.col_off + w.width)]  # noqa: E731
    polygons = vectorise_changes(read, grid, 0.0, CleanUp(min_area_m2=0), block_size=64)
    expected = _whole_scene_polygons(score > 0, grid.transform)
    assert sorted(np.round(polygons.geometry.area, 6)) == expected
    assert polygons["pixels"].sum() == int((score > 0).sum())
    # The polygons rasterise back to exactly the thresholded pixels.
    np.testing.assert_array_equal(rasterise_changes(polygons, grid, grid.full_window), (score > 0).astype(np.uint8))
    # Mean score of each polygon is the mean over its pixels.
    biggest = polygons.iloc[0]
    inside = rasterise_changes(polygons.iloc[[0]], grid, grid.full_window).astype(bool)
    assert biggest["mean_score"] == pytest.approx(score[inside].mean(), rel=1e-5)


def test_minimum_mapping_unit_and_morphology_remove_specks():
    score = np.zeros((100, 100), np.float32)
    score[10:30, 10:30] = 1.0  # 400 px = 100 m2 at 0.5 m
    score[60, 60] = 1.0  # a 1-pixel speck
    score[80:82, 10:12] = 1.0  # 4 px = 1 m2
    grid = Grid(CRS.from_epsg(2154), Affine(0.5, 0, 0, 0, -0.5, 0), 100, 100)
    read = lambda w: score[int(w.row_off): int(w.row_off + w.height), int(w.col_off): int(w.col_off + w.width)]  # noqa: E731
    by_area = vectorise_changes(read, grid, 0.5, CleanUp(min_area_m2=2.0), block_size=32)
    assert list(by_area["area_m2"]) == [100.0]
    by_morphology = vectorise_changes(read, grid, 0.5, CleanUp(min_area_m2=0, morphology_radius_px=1), block_size=32)
    # Opening with a radius-1 disk removes the speck and the 2x2 square, and only the corners of the big one.
    assert len(by_morphology) == 1 and by_morphology["area_m2"].iloc[0] == pytest.approx(99.0)
    window = Window(0, 0, 100, 100)
    assert rasterise_changes(by_area, grid, window)[60, 60] == 0


@pytest.mark.parametrize("radius", [0, 1])
def test_mask_blocks_and_rescued_pixels_hold_exactly_the_polygons_pixels(radius):
    """The mask handed over block by block, completed with the pieces kept by the merge across blocks,
    is the polygons' pixels after the minimum mapping unit; NaN scores are no data (also where a
    closing takes them into a change)."""
    rng = np.random.default_rng(7)
    score = ndimage.gaussian_filter(rng.normal(size=(300, 260)), 2).astype(np.float32)
    score[:20, :30] = np.nan
    grid = Grid(CRS.from_epsg(2154), Affine(0.5, 0, 574000, 0, -0.5, 6280000), 260, 300)
    read = lambda w: score[int(w.row_off): int(w.row_off + w.height), int(w.col_off): int(w.col_off + w.width)]  # noqa: E731
    mask = np.full(score.shape, 7, dtype=np.uint8)

    def write(window, values):
        mask[int(window.row_off): int(window.row_off + window.height), int(window.col_off): int(window.col_off + window.width)] = values

    cleanup = CleanUp(min_area_m2=5.0, morphology_radius_px=radius)  # 20 px: many pieces cut by the 64 px blocks are smaller
    regions = change_regions(read, grid, 0.3, cleanup, block_size=64, mask_block=write, nodata=255)
    assert regions.rescued, "the case must have pieces that wait for the merge"
    rescued = rescue_pixels(lambda w: mask[int(w.row_off): int(w.row_off + w.height),
                                           int(w.col_off): int(w.col_off + w.width)].copy(), write, regions.rescued)
    expected = rasterise_changes(regions.polygons, grid, grid.full_window)
    expected[np.isnan(score)] = 255
    np.testing.assert_array_equal(mask, expected)
    assert rescued == sum(len(p) for _, p in regions.rescued) > 0
    # the same polygons as without a mask, and as one block over the whole scene
    alone = vectorise_changes(read, grid, 0.3, cleanup, block_size=64)
    whole = vectorise_changes(read, grid, 0.3, cleanup, block_size=512)
    assert sorted(regions.polygons["pixels"]) == sorted(alone["pixels"]) == sorted(whole["pixels"])
