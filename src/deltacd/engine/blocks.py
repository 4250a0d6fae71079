"""A scene in blocks: each block a task that reads its window, runs the method and writes its piece.

Above the tiled engine (:func:`~deltacd.engine.runner.predict_scene`), a scene can be cut into
square blocks of ``block_size`` pixels. Each block is one task: it runs the scene's tiles that
touch it (so its pixels get exactly the score of a whole-scene run, see ``region`` in
:func:`predict_scene`) and writes ``block_NNNNN.tif`` under a temporary name renamed when the
piece is complete. That gives two things a whole-scene run cannot:

* **Scale-out**: the tasks go to a Dask cluster (``dask.distributed``): ``scheduler`` the address
  of a running one (``tcp://HOST:8786``), or ``workers`` N for a local cluster of N processes on
  this machine. Dask reruns the task of a worker that died on another one (up to
  ``distributed.scheduler.allowed-failures`` times, 3 by default).
* **Resume**: a block whose piece exists is not run again, so a run killed at any point and
  started again redoes only the blocks that were not complete. ``plan.json`` beside the pieces
  records what they were computed from (inputs, settings, grid, fitted method); pieces made
  from anything else are discarded.

The scene-wide steps (histogram and threshold, polygons merged across block edges, the COGs)
run afterwards on the assembled score, exactly as after a whole-scene run: the pieces are
read back in the strips a whole-scene run yields (:func:`strip_windows`), so the histogram,
the threshold and every output are the same.

With a remote scheduler the workers read the inputs and write the pieces at the paths this
process sees: inputs and output folder must be on storage every worker mounts at the same path.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from deltacd.engine.runner import EngineStats, plan_tiles, predict_scene, strip_windows
from deltacd.errors import DeltacdError, InputError
from deltacd.io.rasters import gdal_env
from deltacd.io.records import dumps
from deltacd.methods.base import ChangeMethod
from deltacd.prepare.align import AlignedPair

log = logging.getLogger(__name__)

#: 4 096 px blocks: 16.8 Mpx, about 20 s of CVA on one core, a 64 MiB float32 piece; a 40 000 px
#: scene is 100 blocks, enough to keep tens of workers busy and to lose little when one dies.
DEFAULT_BLOCK_SIZE = 4096
PLAN = "plan.json"


def plan_blocks(shape: tuple[int, int], block_size: int = DEFAULT_BLOCK_SIZE) -> list[Window]:
    """Blocks of ``block_size`` px covering a grid of ``shape`` (height, width), row by row; edge blocks are smaller."""
    if block_size < 256:
        raise InputError(f"block_size: {block_size} px is too small; use at least 256 (default {DEFAULT_BLOCK_SIZE})")
    height, width = shape
    return [Window(c, r, min(block_size, width - c), min(block_size, height - r))
            for r in range(0, height, block_size) for c in range(0, width, block_size)]


def block_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"block_{index:05d}.tif"


@dataclass(frozen=True)
class SceneTask:
    """What every block of a scene shares (sent once to each worker): the pair, the fitted method, the tiling."""

    pair: AlignedPair
    method: ChangeMethod
    tile_size: int | None
    overlap: int | None
    batch_size: int
    threads: int | None = None  # engine threads inside one block (default: one per core)

    @property
    def channels(self) -> int:
        return int(getattr(self.method, "channels", 1))


def run_block(task: SceneTask, index: int, window: Window, folder: str | Path) -> dict[str, Any]:
    """Score one block and write its piece; nothing to do when the piece exists (an earlier attempt finished it).

    Returns the engine's figures for the block (tiles, seconds in the method and waiting for reads).
    """
    path = block_path(Path(folder), index)
    if path.exists():
        return {"index": index, "tiles": 0, "method_s": 0.0, "read_wait_s": 0.0, "reused": True}
    # a name of its own per attempt: a retry never writes into the file of an attempt that died
    partial = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.partial.tif")
    stats = EngineStats()
    pair = task.pair.replace()  # its own file handles, closed with the block
    grid = pair.grid
    try:
        with gdal_env(), pair, rasterio.open(
            partial, "w", driver="GTiff", width=int(window.width), height=int(window.height), count=task.channels,
            dtype="float32", nodata=float("nan"), crs=grid.crs, transform=grid.window_transform(window),
            tiled=True, blockxsize=256, blockysize=256, bigtiff="if_safer",
        ) as piece:
            for strip, values in predict_scene(pair, task.method, tile_size=task.tile_size, overlap=task.overlap,
                                               batch_size=task.batch_size, stats=stats, threads=task.threads, region=window):
                at = Window(strip.col_off - window.col_off, strip.row_off - window.row_off, strip.width, strip.height)
                piece.write(values.reshape(task.channels, int(strip.height), int(strip.width)), window=at)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"index": index, "tiles": stats.tiles, "method_s": stats.method_s, "read_wait_s": stats.read_wait_s, "reused": False}


def open_block_folder(folder: Path, plan: dict[str, Any]) -> int:
    """Make ``folder`` hold pieces of ``plan`` only; returns how many complete pieces it keeps.

    Pieces computed from another plan (other inputs, settings or fitted method) are removed,
    as are pieces and partial files a killed attempt left: they are this run's staging files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / PLAN
    wanted = dumps(plan)
    same = record.is_file() and record.read_text() == wanted
    for leftover in folder.glob(".block_*.partial.tif"):
        leftover.unlink()
    if not same:
        pieces = list(folder.glob("block_*.tif"))
        if pieces:
            log.warning("%d block(s) in %s were computed from other inputs or settings; they are computed again",
                        len(pieces), folder)
        for piece in pieces:
            piece.unlink()
        tmp = record.with_suffix(".tmp")
        tmp.write_text(wanted)
        os.replace(tmp, record)
    return len(list(folder.glob("block_*.tif")))


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``dask.distributed`` client on ``scheduler`` (an address) or on a local cluster of ``workers`` processes.

    Raises
    ------
    InputError
        dask.distributed is not installed, or the scheduler cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("workers/scheduler: Dask is not installed; pip install 'deltacd[scale]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"scheduler: cannot reach {scheduler} ({exc}); start one with `dask scheduler` "
                             "and workers with `dask worker ADDRESS`, or use --workers N for a local cluster") from None
        try:
            yield client
        finally:
            client.close()
        return
    try:  # one thread per worker process: the engine runs its own threads inside each block
        cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    except RuntimeError as exc:  # the worker processes import the caller's __main__ and died there
        raise InputError(f"workers: the local Dask workers failed to start ({exc}); in a Python script, call deltacd "
                         "under `if __name__ == \"__main__\":`, since each worker process imports the script") from None
    with cluster, Client(cluster) as client:
        yield client


@dataclass
class BlockRun:
    """How the blocks of a run went, for run.json."""

    blocks: int
    size: int
    reused: int
    computed: int = 0
    scheduler: str = "this process"

    def describe(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "block_size_px": self.size, "reused": self.reused, "computed": self.computed,
                "scheduler": self.scheduler}


def run_blocks(
    task: SceneTask, windows: Sequence[Window], folder: Path, *, client: Any = None,
    progress: Callable[[int, int], None] | None = None, stats: EngineStats | None = None,
) -> int:
    """Run every block whose piece is missing: here one after another, or as tasks on ``client``. Returns how many ran."""
    todo = [i for i in range(len(windows)) if not block_path(folder, i).exists()]
    done = len(windows) - len(todo)
    if progress is not None:
        progress(done, len(windows))

    def count(figures: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if stats is not None:
            stats.tiles += figures["tiles"]
            stats.method_s += figures["method_s"]
            stats.read_wait_s += figures["read_wait_s"]
        if progress is not None:
            progress(done, len(windows))

    if client is None:
        for i in todo:
            count(run_block(task, i, windows[i], folder))
        return len(todo)
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    shared = client.scatter(task, broadcast=True, hash=False)
    futures = client.map(run_block, [shared] * len(todo), todo, [windows[i] for i in todo], [str(folder)] * len(todo),
                         pure=False, key=[f"deltacd-block-{folder.name}-{i}-{os.getpid()}" for i in todo])
    try:
        for future in as_completed(futures):
            count(future.result())
    except KilledWorker as exc:
        raise DeltacdError(f"a block killed every Dask worker that ran it ({exc}); most often a worker out of memory: "
                           "give workers more memory, or use a smaller --tile-size or --block-size") from None
    finally:
        client.cancel(futures)
    return len(todo)


class BlockReader:
    """Windows of the scene's score read back from its pieces (each piece opened once)."""

    def __init__(self, folder: Path, windows: Sequence[Window], channels: int):
        self.windows = list(windows)
        self.channels = channels
        self._pieces = [rasterio.open(block_path(folder, i)) for i in range(len(self.windows))]

    def read(self, window: Window) -> np.ndarray:
        """The score at ``window`` of the grid: float32 [h, w], or [channels, h, w]."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        out = np.full((self.channels, r1 - r0, c1 - c0), np.nan, dtype=np.float32)
        for block, piece in zip(self.windows, self._pieces, strict=True):
            br0, bc0 = int(block.row_off), int(block.col_off)
            top, bottom = max(r0, br0), min(r1, br0 + int(block.height))
            left, right = max(c0, bc0), min(c1, bc0 + int(block.width))
            if top < bottom and left < right:
                out[:, top - r0 : bottom - r0, left - c0 : right - c0] = piece.read(
                    window=Window(left - bc0, top - br0, right - left, bottom - top))
        return out[0] if self.channels == 1 else out

    def close(self) -> None:
        for piece in self._pieces:
            piece.close()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def predict_in_blocks(
    task: SceneTask, folder: Path, plan: dict[str, Any], *, block_size: int = DEFAULT_BLOCK_SIZE, client: Any = None,
    progress: Callable[[int, int], None] | None = None, stats: EngineStats | None = None,
) -> Iterator[tuple[Window, np.ndarray]]:
    """The score of ``task.pair`` made block by block, yielded in the strips of :func:`predict_scene` (same values).

    ``folder`` holds the pieces; those that match ``plan`` (:func:`open_block_folder`) are kept
    and not computed again. ``stats``, when given, also receives the blocks' record (:class:`BlockRun`).
    """
    shape = task.pair.grid.shape
    windows = plan_blocks(shape, block_size)
    reused = open_block_folder(folder, plan | {"block_size": block_size, "blocks": len(windows)})
    record = BlockRun(len(windows), block_size, reused, scheduler="this process" if client is None else str(client.scheduler.address))
    record.computed = run_blocks(task, windows, folder, client=client, progress=progress, stats=stats)
    if stats is not None:
        stats.blocks = record.describe()
    layout = plan_tiles(shape, task.method, tile_size=task.tile_size, overlap=task.overlap)
    with BlockReader(folder, windows, task.channels) as reader:
        for window in strip_windows(layout, shape):
            yield window, reader.read(window)


__all__ = ["DEFAULT_BLOCK_SIZE", "BlockReader", "BlockRun", "SceneTask", "dask_client", "open_block_folder",
           "plan_blocks", "predict_in_blocks", "run_block", "run_blocks"]

