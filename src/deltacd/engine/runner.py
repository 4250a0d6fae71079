"""The tiled engine: every method, unsupervised or learned, runs through :func:`predict_scene`.

Tiles overlap and are blended with :func:`~deltacd.engine.tiling.blend_weights`; they are
processed row of tiles by row of tiles, accumulating into a buffer one tile high and one scene
wide. When a row of tiles is done, the rows no later tile touches are final and are yielded, so
memory grows with the scene width, not its area. Reading runs one tile ahead in a background
thread (GDAL and numpy release the GIL), and tiles are predicted in batches.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from deltacd.engine.tiling import blend_weights, tile_offsets
from deltacd.errors import InputError
from deltacd.methods.base import ChangeMethod
from deltacd.prepare.align import AlignedPair, PairWindow

Progress = Callable[[int, int], None]


@dataclass
class EngineStats:
    """Where the engine's time went: filled in by :func:`predict_scene` when given one."""

    tiles: int = 0
    method_s: float = 0.0  # inside method.predict
    read_wait_s: float = 0.0  # waiting for the reader thread (reading not hidden behind compute)
    blocks: dict | None = None  # when the scene ran in blocks (deltacd.engine.blocks): how many, how many reused


@dataclass(frozen=True)
class TileLayout:
    """Tile size, overlap and offsets for one scene and one method."""

    height: int
    width: int
    overlap: int
    rows: list[int]
    cols: list[int]
    padded: tuple[int, int]  # (h, w) handed to the method: a multiple of its size_multiple

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)


def plan_tiles(shape: tuple[int, int], method: ChangeMethod, *, tile_size: int | None = None, overlap: int | None = None) -> TileLayout:
    """Choose the tiles for a scene of ``shape`` (height, width).

    ``tile_size`` defaults to the method's; ``overlap`` to twice its context (0 for per-pixel methods).
    """
    tile_size = tile_size or method.tile_size
    if tile_size < 16:
        raise InputError(f"tile_size: {tile_size} is too small; use at least 16 (512 is a good default)")
    multiple = method.size_multiple
    size = math.ceil(tile_size / multiple) * multiple
    height, width = min(size, shape[0]), min(size, shape[1])
    if overlap is None:
        overlap = 2 * method.context
    if overlap < 0:
        raise InputError(f"overlap: must be >= 0; got {overlap}")
    overlap = min(overlap, max(0, min(height, width) // 2))
    padded = (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)
    return TileLayout(
        height, width, overlap, tile_offsets(shape[0], height, overlap), tile_offsets(shape[1], width, overlap), padded
    )


def tile_memory_bytes(method: ChangeMethod, *, tile_size: int | None, batch_size: int, bands: int) -> int:
    """Memory one batch of tiles needs: both dates read and stacked (float32), the method's work, score and weights."""
    tile_size = tile_size or method.tile_size
    size = math.ceil(tile_size / method.size_multiple) * method.size_multiple
    pixels = batch_size * size * size
    return pixels * (2 * 2 * bands * 4 + method.work_bytes_per_pixel + 8)


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation (``MemAvailable`` on Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_tile_memory(method: ChangeMethod, *, tile_size: int | None, batch_size: int, bands: int) -> None:
    """Refuse, before any work, a tile size whose batches cannot fit in this machine's free memory."""
    need = tile_memory_bytes(method, tile_size=tile_size, batch_size=batch_size, bands=bands)
    free = available_memory_bytes()
    if free is not None and need > 0.8 * free:
        raise InputError(
            f"tile_size: {tile_size or method.tile_size} px tiles in batches of {batch_size} need about {need / 1e9:.1f} GB with "
            f"{method.name}, more than 80 % of the {free / 1e9:.1f} GB free here; use a smaller --tile-size "
            "(512 is a good default) or --batch-size"
        )


def _pad(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    extra_h, extra_w = shape[0] - array.shape[-2], shape[1] - array.shape[-1]
    if extra_h == 0 and extra_w == 0:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, extra_h), (0, extra_w)]
    return np.pad(array, widths, mode="symmetric")


def predict_scene(
    pair: AlignedPair,
    method: ChangeMethod,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    progress: Progress | None = None,
    stats: EngineStats | None = None,
    threads: int | None = None,
    region: Window | None = None,
) -> Iterator[tuple[Window, np.ndarray]]:
    """Run ``method`` over the whole pair (or ``region`` of its grid) and yield the score in strips.

    Tiles are read by a pool of ``threads`` threads (default: one per core; GDAL and numpy
    release the GIL, and each thread has its own file handles), ahead of the tiles being
    blended. A method that declares itself ``thread_safe`` (per-pixel numpy: CVA, IR-MAD) is
    also run in those threads, one tile at a time; the others (networks, which have their own
    threads) get batches of ``batch_size`` tiles in the calling thread.

    Yields
    ------
    window : rasterio.windows.Window
        Rows of the common grid covered by the strip (full width, or the region's), top to bottom.
    score : np.ndarray
        float32 [window.height, window.width]; NaN where either date has no data. A method with
        ``channels`` K > 1 (per-pixel class probabilities) gives [K, window.height, window.width].

    ``region`` (a block of the scene, :mod:`deltacd.engine.blocks`): only the scene's tiles that
    touch it are run, in the scene's order, and the strips are cut to it. Every pixel then gets
    the same tiles, blended in the same order, as in the run over the whole scene: a score made
    block by block is the whole-scene score (bit for bit for per-pixel methods; networks may
    differ in the last float digits because their batches hold other tiles).

    ``stats``, when given, accumulates the tile count and the time spent in the method and
    waiting for reads.
    """
    stats = stats if stats is not None else EngineStats()
    grid_h, grid_w = pair.grid.shape
    layout = plan_tiles(pair.grid.shape, method, tile_size=tile_size, overlap=overlap)
    th, tw = layout.height, layout.width
    region = region or Window(0, 0, grid_w, grid_h)
    r0, c0 = int(region.row_off), int(region.col_off)
    r1, c1 = r0 + int(region.height), c0 + int(region.width)
    tile_rows = [r for r in layout.rows if r < r1 and r + th > r0]
    tile_cols = [c for c in layout.cols if c < c1 and c + tw > c0]
    left = tile_cols[0]  # grid column of the buffer's first column
    span = tile_cols[-1] + tw - left
    weights = blend_weights(th, tw, layout.overlap)
    channels = int(getattr(method, "channels", 1))
    acc = np.zeros((channels, th, span), dtype=np.float32)
    wsum = np.zeros((th, span), dtype=np.float32)
    valid = np.zeros((th, span), dtype=bool)
    top = tile_rows[0]  # grid row of the buffer's first row
    done = 0

    def emit(rows: int) -> Iterator[tuple[Window, np.ndarray]]:
        first, last = max(top, r0), min(top + rows, r1)
        if first >= last:
            return  # rows of tiles that reach into the region but lie above it
        rows_in = slice(first - top, last - top)
        cols_in = slice(c0 - left, c1 - left)
        score = acc[:, rows_in, cols_in] / np.maximum(wsum[rows_in, cols_in], 1e-12)
        score[:, ~valid[rows_in, cols_in]] = np.nan
        yield Window(c0, first, c1 - c0, last - first), (score[0] if channels == 1 else score)

    tiles = [(r, c) for r in tile_rows for c in tile_cols]
    workers = max(1, threads or os.cpu_count() or 1)
    in_threads = bool(getattr(method, "thread_safe", False))
    lock = threading.Lock()

    def read_and_score(window: Window) -> tuple[PairWindow, np.ndarray | None]:
        block = pair.read(window)
        if not in_threads:
            return block, None
        started = time.perf_counter()
        score = method.predict(_pad(block.before, layout.padded)[None], _pad(block.after, layout.padded)[None])
        with lock:
            stats.method_s += time.perf_counter() - started
        return block, score

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        queue = iter(tiles)

        def refill() -> None:
            while len(pending) < 2 * max(batch_size, workers):
                try:
                    r, c = next(queue)
                except StopIteration:
                    return
                pending.append(((r, c), pool.submit(read_and_score, Window(c, r, tw, th))))

        refill()
        while pending:
            row = pending[0][0][0]
            if row > top:
                # Rows above this tile row are final: no later tile reaches them.
                shift = row - top
                yield from emit(shift)
                acc[:, :-shift] = acc[:, shift:]
                acc[:, -shift:] = 0
                for buffer in (wsum, valid):
                    buffer[:-shift] = buffer[shift:]
                    buffer[-shift:] = 0
                top = row
            batch: list[tuple[int, PairWindow]] = []
            done_scores: list[np.ndarray] = []
            while pending and pending[0][0][0] == row and len(batch) < (1 if in_threads else batch_size):
                (_, c), future = pending.popleft()
                waited = time.perf_counter()
                block, score = future.result()
                stats.read_wait_s += time.perf_counter() - waited
                batch.append((c, block))
                if score is not None:
                    done_scores.append(score)
                refill()
            if in_threads:
                scores = np.concatenate(done_scores)
            else:
                before = np.stack([_pad(b.before, layout.padded) for _, b in batch])
                after = np.stack([_pad(b.after, layout.padded) for _, b in batch])
                started = time.perf_counter()
                scores = method.predict(before, after)
                stats.method_s += time.perf_counter() - started
            if scores.ndim == 3:
                scores = scores[:, None]
            scores = scores[:, :, :th, :tw]
            stats.tiles += len(batch)
            for (c, block), score in zip(batch, scores, strict=True):
                c -= left
                acc[:, :, c : c + tw] += score * weights
                wsum[:, c : c + tw] += weights
                valid[:, c : c + tw] = block.valid
            done += len(batch)
            if progress is not None:
                progress(done, len(tiles))
    yield from emit(tile_rows[-1] + th - top)


def strip_windows(layout: TileLayout, shape: tuple[int, int]) -> list[Window]:
    """The strips :func:`predict_scene` yields over a whole scene of ``shape``: one per row of tiles.

    A row of tiles' strip ends where the next row of tiles starts (the rows no later tile touches).
    """
    height, width = shape
    ends = layout.rows[1:] + [height]
    return [Window(0, start, width, end - start) for start, end in zip([0] + layout.rows[1:], ends, strict=True)]
