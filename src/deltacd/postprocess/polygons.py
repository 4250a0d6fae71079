"""From a change score to change polygons: threshold, optional morphology, minimum mapping unit.

The scene is processed in blocks. In each block the score is thresholded, cleaned by a
morphological opening then closing (Soille 2003, "Morphological Image Analysis") when a radius
is given, labelled into 4-connected regions and vectorised with :func:`rasterio.features.shapes`.
Regions that touch an inner block edge are merged with their neighbours across it (shared edge
of non-zero length; 4-connectivity, so corner contacts do not merge), which gives the same
polygons as vectorising the whole scene at once. Polygons smaller than the minimum mapping unit
are dropped; the final mask is the rasterised polygons, so mask and polygons always agree.
No library vectorises a raster larger than memory with merging across blocks, hence this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from scipy import ndimage
from skimage.morphology import disk

from deltacd.io.grid import Grid

log = logging.getLogger(__name__)

#: Reads a window of the change score: float32 [h, w], NaN where no data.
ScoreReader = Callable[[Window], np.ndarray]


@dataclass(frozen=True)
class CleanUp:
    """Post-processing of the thresholded score.

    Attributes
    ----------
    min_area_m2
        Minimum mapping unit: polygons smaller than this (square metres) are dropped.
    morphology_radius_px
        Radius of the disk used for an opening then a closing (0: no morphology).
    """

    min_area_m2: float = 12.0
    morphology_radius_px: int = 0


def _block_mask(read: ScoreReader, grid: Grid, window: Window, threshold: float, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Thresholded, cleaned mask and score of ``window``; morphology sees ``radius`` px beyond it."""
    if radius == 0:
        score = read(window)
        return score > threshold, score  # NaN (no data) compares False
    padded = Window(window.col_off - radius, window.row_off - radius, window.width + 2 * radius, window.height + 2 * radius)
    padded = padded.intersection(grid.full_window)
    score = read(padded)
    mask = score > threshold
    footprint = disk(radius)
    mask = ndimage.binary_closing(ndimage.binary_opening(mask, footprint), footprint)
    r0, c0 = int(window.row_off - padded.row_off), int(window.col_off - padded.col_off)
    h, w = int(window.height), int(window.width)
    return mask[r0 : r0 + h, c0 : c0 + w], score[r0 : r0 + h, c0 : c0 + w]


@dataclass
class ChangeRegions:
    """The change polygons of a scene and which labelled regions of each block they keep.

    ``kept_edge[b]`` holds the labels, in block ``b``, of the pieces of regions cut by block edges
    that the minimum mapping unit kept once merged; regions inside a block are kept by their own
    area. :func:`change_mask_blocks` uses it to write the mask from the labels, so mask and
    polygons hold exactly the same pixels without rasterising the polygons back.
    """

    polygons: gpd.GeoDataFrame
    blocks: list[Window]
    kept_edge: dict[int, np.ndarray]
    threshold: float
    cleanup: CleanUp


def _blocks(grid: Grid, block_size: int) -> list[Window]:
    return [
        Window(c, r, min(block_size, grid.width - c), min(block_size, grid.height - r))
        for r in range(0, grid.height, block_size)
        for c in range(0, grid.width, block_size)
    ]


@dataclass
class _BlockLabels:
    """The 4-connected regions of one block's cleaned mask.

    ``labels`` [h, w] int32 (0 outside); ``score`` [h, w] the block's score; ``inside`` [h, w]
    bool, ``labels > 0``; ``region`` and ``region_score``: the label and score of each inside
    pixel (score NaN -> 0); ``counts`` and ``edge`` [n + 1]: pixels per label and whether it
    touches an inner block edge (index 0 unused).
    Per-pixel work is done on the inside pixels only (a few % of the block) wherever it can be.
    """

    labels: np.ndarray
    score: np.ndarray
    inside: np.ndarray
    region: np.ndarray
    region_score: np.ndarray
    counts: np.ndarray
    edge: np.ndarray

    @property
    def n(self) -> int:
        return len(self.counts) - 1

    def mask_of(self, keep: np.ndarray) -> np.ndarray:
        """uint8 [h, w]: 1 on the pixels whose label ``keep`` [n + 1] marks."""
        out = np.zeros(self.labels.shape, dtype=np.uint8)
        out[self.inside] = keep[self.region]
        return out


def _labelled(read: ScoreReader, grid: Grid, window: Window, threshold: float, cleanup: CleanUp) -> _BlockLabels:
    """The labelled regions of the block's cleaned mask (:class:`_BlockLabels`)."""
    mask, score = _block_mask(read, grid, window, threshold, cleanup.morphology_radius_px)
    labels, n = ndimage.label(mask, output=np.int32)  # 4-connectivity, as rasterio.features.shapes
    inside = labels > 0
    region, region_score = labels[inside], score[inside]
    region_score[np.isnan(region_score)] = 0.0  # a closing can take in no-data pixels
    counts = np.bincount(region, minlength=n + 1)
    edge = np.zeros(n + 1, dtype=bool)
    h, w = labels.shape
    if window.row_off > 0:
        edge[labels[0]] = True
    if window.row_off + h < grid.height:
        edge[labels[-1]] = True
    if window.col_off > 0:
        edge[labels[:, 0]] = True
    if window.col_off + w < grid.width:
        edge[labels[:, -1]] = True
    edge[0] = False
    return _BlockLabels(labels, score, inside, region, region_score, counts, edge)


def _polygons(found: Iterator[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and shapely polygons of :func:`rasterio.features.shapes`' GeoJSON output.

    Built in one vectorised call per kind (rings, then polygons) rather than one
    ``shapely.geometry.shape`` per polygon, whose per-vertex Python loop cost more than the
    polygonisation itself.
    """
    labels, coords, ring_of, polygon_of = [], [], [], []
    ring = 0
    for i, (geom, value) in enumerate(found):
        labels.append(int(value))
        for points in geom["coordinates"]:
            coords.append(np.asarray(points, dtype=np.float64))
            ring_of.append(np.full(len(points), ring))
            polygon_of.append(i)
            ring += 1
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    rings = shapely.linearrings(np.concatenate(coords), indices=np.concatenate(ring_of))
    return np.asarray(labels), shapely.polygons(rings, indices=np.asarray(polygon_of))


def change_regions(
    read: ScoreReader,
    grid: Grid,
    threshold: float,
    cleanup: CleanUp = CleanUp(),
    *,
    block_size: int = 2048,
    progress: Callable[[int, int], None] | None = None,
) -> ChangeRegions:
    """Change polygons of the whole scene, block by block, with what the mask needs (:class:`ChangeRegions`)."""
    closed: list[tuple[shapely.Geometry, int, float, float]] = []
    open_pieces: list[tuple[shapely.Geometry, int, float, float]] = []
    open_ids: list[tuple[int, int]] = []  # (block, label) of each open piece
    blocks = _blocks(grid, block_size)
    pixel_area = grid.pixel_area_m2
    for done, window in enumerate(blocks, start=1):
        block = _labelled(read, grid, window, threshold, cleanup)
        if block.n:
            n, counts, edge = block.n, block.counts, block.edge
            sums = np.bincount(block.region, weights=block.region_score, minlength=n + 1)[1:]
            maxima = np.full(n + 1, -np.inf)
            np.maximum.at(maxima, block.region, block.region_score)  # O(n), unlike ndimage.maximum's sort
            maxima = maxima[1:]
            # Regions below the minimum mapping unit that cannot grow across a block edge are left out
            # of the vectorisation (masked): building a polygon per speck dominated this stage's cost.
            keep = edge | (counts * pixel_area >= cleanup.min_area_m2)
            keep[0] = False
            found = shapes(block.labels, mask=block.mask_of(keep), connectivity=4, transform=grid.window_transform(window))
            found_labels, geoms = _polygons(found)
            for label, geom in zip(found_labels.tolist(), geoms, strict=True):
                piece = (geom, int(counts[label]), float(sums[label - 1]), float(maxima[label - 1]))
                if edge[label]:
                    open_pieces.append(piece)
                    open_ids.append((done - 1, label))
                else:
                    closed.append(piece)
        if progress is not None:
            progress(done, len(blocks))
    merged, groups = _merge_across_blocks(open_pieces)
    kept_lists: dict[int, list[int]] = {}
    for piece, members in zip(merged, groups, strict=True):
        if piece[1] * pixel_area >= cleanup.min_area_m2:
            for i in members:
                block, label = open_ids[i]
                kept_lists.setdefault(block, []).append(label)
    pieces = closed + merged
    frame = gpd.GeoDataFrame(
        {
            "area_m2": [p[1] * pixel_area for p in pieces],
            "pixels": [p[1] for p in pieces],
            "mean_score": [p[2] / p[1] for p in pieces],
            "max_score": [p[3] for p in pieces],
        },
        geometry=[p[0] for p in pieces],
        crs=grid.crs,
    )
    frame = frame[frame["area_m2"] >= cleanup.min_area_m2]
    frame = frame.sort_values("area_m2", ascending=False, ignore_index=True)
    frame.index.name = "change_id"
    log.info("%d change polygons (%d pieces merged across blocks)", len(frame), len(open_pieces))
    return ChangeRegions(frame, blocks, {b: np.array(sorted(v)) for b, v in kept_lists.items()}, threshold, cleanup)


def vectorise_changes(
    read: ScoreReader,
    grid: Grid,
    threshold: float,
    cleanup: CleanUp = CleanUp(),
    *,
    block_size: int = 2048,
    progress: Callable[[int, int], None] | None = None,
) -> gpd.GeoDataFrame:
    """Change polygons of the whole scene, block by block.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per change polygon, in ``grid.crs``, with ``area_m2``, ``pixels``,
        ``mean_score`` and ``max_score``; sorted by decreasing area.
    """
    return change_regions(read, grid, threshold, cleanup, block_size=block_size, progress=progress).polygons


def change_mask_blocks(
    read: ScoreReader, grid: Grid, regions: ChangeRegions, nodata: int | None = None,
) -> Iterator[tuple[Window, np.ndarray]]:
    """uint8 blocks of the change mask: 1 on the pixels of ``regions``' polygons, 0 elsewhere, and
    ``nodata`` (when given) where the score is NaN.

    The blocks' labels are computed again exactly as :func:`change_regions` computed them and
    mapped through which regions it kept: the same pixels as rasterising the polygons with the
    pixel-centre rule, at the cost of a threshold and a labelling per block.
    """
    pixel_area = grid.pixel_area_m2
    for b, window in enumerate(regions.blocks):
        block = _labelled(read, grid, window, regions.threshold, regions.cleanup)
        keep = ~block.edge & (block.counts * pixel_area >= regions.cleanup.min_area_m2)
        if b in regions.kept_edge:
            keep[regions.kept_edge[b]] = True
        keep[0] = False
        mask = block.mask_of(keep)
        if nodata is not None:
            mask[np.isnan(block.score)] = nodata
        yield window, mask


def _merge_across_blocks(
    pieces: list[tuple[shapely.Geometry, int, float, float]],
) -> tuple[list[tuple[shapely.Geometry, int, float, float]], list[list[int]]]:
    """Union the pieces of regions cut by block edges (pieces sharing an edge belong together); also the members of each."""
    if not pieces:
        return [], []
    geoms = np.array([p[0] for p in pieces])
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    shared = shapely.length(shapely.intersection(geoms[left], geoms[right])) > 0
    parent = np.arange(len(pieces))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(left[shared], right[shared], strict=True):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(root(i), []).append(i)
    merged = []
    for members in groups.values():
        geom = shapely.union_all(geoms[members]) if len(members) > 1 else geoms[members[0]]
        merged.append((
            geom,
            sum(pieces[i][1] for i in members),
            sum(pieces[i][2] for i in members),
            max(pieces[i][3] for i in members),
        ))
    return merged, list(groups.values())


def rasterise_changes(polygons: gpd.GeoDataFrame, grid: Grid, window: Window) -> np.ndarray:
    """uint8 [h, w]: 1 inside a change polygon, 0 elsewhere (pixel-centre rule, so the
    polygons from :func:`vectorise_changes` give back exactly their pixels)."""
    shape = (int(window.height), int(window.width))
    if polygons.empty:
        return np.zeros(shape, dtype=np.uint8)
    hits = polygons.sindex.query(shapely.box(*grid.window_bounds(window)), predicate="intersects")
    if len(hits) == 0:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(
        ((geom, 1) for geom in polygons.geometry.values[hits]),
        out_shape=shape, transform=grid.window_transform(window), fill=0, dtype="uint8",
    )
