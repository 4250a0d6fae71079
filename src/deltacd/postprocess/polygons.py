"""From a change score to change polygons: threshold, optional morphology, minimum mapping unit.

The scene is processed in blocks. In each block the score is thresholded, cleaned by a
morphological opening then closing (Soille 2003, "Morphological Image Analysis") when a radius
is given, labelled into 4-connected regions and vectorised with :func:`rasterio.features.shapes`.
Regions that touch an inner block edge are merged with their neighbours across it (shared edge
of non-zero length; 4-connectivity, so corner contacts do not merge), which gives the same
polygons as vectorising the whole scene at once. Polygons smaller than the minimum mapping unit
are dropped; the mask is made from the same labels in the same pass, so mask and polygons hold
exactly the same pixels.
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
    """Thresholded, cleaned mask and score of ``window``; morphology sees ``4 * radius`` px beyond it.

    An opening then a closing chain four erosions and dilations of ``radius``: a pixel's result
    depends on the mask up to ``4 * radius`` away, so that much context makes a block's result
    the whole scene's (with ``radius`` only, blocks of 64 px gave other polygons than one block).
    """
    if radius == 0:
        score = read(window)
        return score > threshold, score  # NaN (no data) compares False
    context = 4 * radius
    padded = Window(window.col_off - context, window.row_off - context, window.width + 2 * context, window.height + 2 * context)
    padded = padded.intersection(grid.full_window)
    score = read(padded)
    mask = score > threshold
    footprint = disk(radius)
    mask = ndimage.binary_closing(ndimage.binary_opening(mask, footprint), footprint)
    r0, c0 = int(window.row_off - padded.row_off), int(window.col_off - padded.col_off)
    h, w = int(window.height), int(window.width)
    return mask[r0 : r0 + h, c0 : c0 + w], score[r0 : r0 + h, c0 : c0 + w]


#: Receives each block's change mask as it is made: ``(window, uint8 [h, w])``, 1 change, 0 none, the nodata value where the score is NaN.
MaskBlock = Callable[[Window, np.ndarray], None]


@dataclass
class ChangeRegions:
    """The change polygons of a scene and the pixels its mask blocks still lack.

    A block's mask is final when the block is done except for the small pieces of regions cut
    by its edges (fewer pixels than the minimum mapping unit on their own): whether they are
    kept depends on their neighbours across the edge, known only once every block is done.
    ``rescued`` lists those that were kept, as ``(window, flat indices of their pixels in the
    window)``, one entry per block that has any; the mask needs them set to 1 (:func:`rescue_pixels`).
    """

    polygons: gpd.GeoDataFrame
    rescued: list[tuple[Window, np.ndarray]]


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
    labels, points, lengths, polygon_of = [], [], [], []
    for i, (geom, value) in enumerate(found):
        labels.append(int(value))
        for ring in geom["coordinates"]:
            points.extend(ring)
            lengths.append(len(ring))
            polygon_of.append(i)
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    # one conversion of every vertex (per-ring arrays cost 2 us a ring, a quarter of a million rings a scene)
    ring_of = np.repeat(np.arange(len(lengths)), lengths)
    rings = shapely.linearrings(np.array(points, dtype=np.float64), indices=ring_of)
    return np.asarray(labels), shapely.polygons(rings, indices=np.asarray(polygon_of))


def _pixels_of(block: _BlockLabels, chosen: np.ndarray) -> dict[int, np.ndarray]:
    """Flat indices in the block of the scored pixels of each label that ``chosen`` [n + 1] marks
    (a closing can take in no-data pixels: the mask keeps those as no data)."""
    if not chosen.any():
        return {}
    pixels = np.flatnonzero(block.inside)
    selected = chosen[block.region] & ~np.isnan(block.score.ravel()[pixels])
    pixels, labels = pixels[selected], block.region[selected]
    order = np.argsort(labels, kind="stable")
    pixels, labels = pixels[order], labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    return dict(zip(labels[starts].tolist(), np.split(pixels, starts[1:]), strict=True))


def change_regions(
    read: ScoreReader,
    grid: Grid,
    threshold: float,
    cleanup: CleanUp = CleanUp(),
    *,
    block_size: int = 2048,
    mask_block: MaskBlock | None = None,
    nodata: int = 255,
    progress: Callable[[int, int], None] | None = None,
) -> ChangeRegions:
    """Change polygons of the whole scene, block by block (:class:`ChangeRegions`).

    With ``mask_block``, each block's mask is handed over as soon as the block is labelled (its
    pixels are the polygons' pixels, ``nodata`` where the score is NaN), so the mask is written
    in the same pass as the polygons and the scene is thresholded and labelled once; only the
    pixels of :attr:`ChangeRegions.rescued` are missing from it.
    """
    closed: list[tuple[shapely.Geometry, int, float, float]] = []
    open_pieces: list[tuple[shapely.Geometry, int, float, float]] = []
    small_open: dict[int, tuple[int, np.ndarray]] = {}  # open piece -> (block, its pixels) when below the MMU alone
    blocks = _blocks(grid, block_size)
    pixel_area = grid.pixel_area_m2
    for done, window in enumerate(blocks, start=1):
        block = _labelled(read, grid, window, threshold, cleanup)
        n, counts, edge = block.n, block.counts, block.edge
        big = counts * pixel_area >= cleanup.min_area_m2
        # Regions below the minimum mapping unit that cannot grow across a block edge are left out
        # of the vectorisation (masked): building a polygon per speck dominated this stage's cost.
        keep = edge | big
        keep[0] = False
        if n:
            sums = np.bincount(block.region, weights=block.region_score, minlength=n + 1)[1:]
            kept = keep[block.region]
            maxima = np.full(n + 1, -np.inf)
            # O(n), unlike ndimage.maximum's sort; on the kept regions' pixels only, the others make no polygon
            np.maximum.at(maxima, block.region[kept], block.region_score[kept])
            maxima = maxima[1:]
            found = shapes(block.labels, mask=block.mask_of(keep), connectivity=4, transform=grid.window_transform(window))
            found_labels, geoms = _polygons(found)
            small_pixels = _pixels_of(block, edge & ~big) if mask_block is not None else {}
            for label, geom in zip(found_labels.tolist(), geoms, strict=True):
                piece = (geom, int(counts[label]), float(sums[label - 1]), float(maxima[label - 1]))
                if edge[label]:
                    if label in small_pixels:
                        small_open[len(open_pieces)] = (done - 1, small_pixels[label])
                    open_pieces.append(piece)
                else:
                    closed.append(piece)
        if mask_block is not None:
            # the regions kept for sure; the small pieces on the block's edges wait for their
            # neighbours across them (ChangeRegions.rescued)
            out = block.mask_of(big)
            out[np.isnan(block.score)] = nodata
            mask_block(window, out)
        if progress is not None:
            progress(done, len(blocks))
    merged, groups = _merge_across_blocks(open_pieces)
    rescued: dict[int, list[np.ndarray]] = {}
    for piece, members in zip(merged, groups, strict=True):
        if piece[1] * pixel_area >= cleanup.min_area_m2:
            for i in members:
                if i in small_open:
                    b, pixels = small_open[i]
                    rescued.setdefault(b, []).append(pixels)
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
    return ChangeRegions(frame, [(blocks[b], np.concatenate(v)) for b, v in sorted(rescued.items())])


def rescue_pixels(
    read: Callable[[Window], np.ndarray], write: MaskBlock, rescued: list[tuple[Window, np.ndarray]],
) -> int:
    """Set to 1 the pixels of :attr:`ChangeRegions.rescued` in a mask written block by block; returns how many.

    Each block's piece is read back and rewritten over the smallest window holding its pixels.
    """
    total = 0
    for window, pixels in rescued:
        width = int(window.width)
        rows, cols = np.divmod(pixels, width)
        top, left = int(rows.min()), int(cols.min())
        part = Window(window.col_off + left, window.row_off + top, int(cols.max()) - left + 1, int(rows.max()) - top + 1)
        values = read(part)
        values[rows - top, cols - left] = 1
        write(part, values)
        total += len(pixels)
    return total


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
