"""The co-registration measure on 1 and on all of numpy's BLAS threads, alone and beside a busy core.

Why: ``detect()`` holds BLAS to one thread (``deltacd.outputs.run.one_blas_thread``) because
the measure runs beside the engine's threads. This prints, side by side in one process, the
wall and CPU seconds of :func:`~deltacd.prepare.coregistration.estimate_shift` on the benchmark's
5 000 px pair (``throughput.py``'s), with 1 BLAS thread and with the default count, alone and
with one other thread computing numpy work that releases the GIL (as the engine's does).

    python benchmarks/blas_threads.py --work /tmp/tpw   # the pair is made there if missing
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deltacd.io.rasters import gdal_env, open_image  # noqa: E402
from deltacd.prepare.align import align_pair  # noqa: E402
from deltacd.prepare.coregistration import estimate_shift  # noqa: E402
from scale import source_tiles  # noqa: E402
from throughput import make_pair  # noqa: E402


def busy(stop: threading.Event) -> None:
    """numpy work that releases the GIL, as the engine's CVA windows do."""
    a = np.random.default_rng(0).random((4, 1024, 1024), dtype=np.float32)
    while not stop.is_set():
        np.sqrt(np.einsum("chw,chw->hw", a, a))


def timed(pair, threads: int, neighbour: bool) -> tuple[float, float]:
    stop = threading.Event()
    other = threading.Thread(target=busy, args=(stop,), daemon=True)
    if neighbour:
        other.start()
    with threadpool_limits(limits=threads, user_api="blas"):
        wall, cpu = time.perf_counter(), time.process_time()
        estimate_shift(pair)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    if neighbour:
        other.join()
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder of the 5 000 px pair (made if missing)")
    parser.add_argument("--size", type=int, default=5000)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    before, after = make_pair(args.work, args.size, "aligned", source_tiles())
    default = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start; estimate_shift on the {args.size} px pair; "
          "process CPU, the busy thread's included where there is one\n")
    print("| BLAS threads | beside | wall s | process CPU s |\n|---|---|---|---|")
    with gdal_env():
        pair = align_pair(open_image(before), open_image(after))
        estimate_shift(pair)  # warm: the decimated read is cached
        for neighbour in (False, True):
            for threads in (1, default):
                wall, cpu = timed(pair, threads, neighbour)
                print(f"| {threads} | {'a busy numpy thread' if neighbour else 'nothing'} | {wall:.2f} | {cpu:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
