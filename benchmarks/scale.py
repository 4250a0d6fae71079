"""Peak memory and throughput of ``deltacd detect`` as the scene grows (4-band uint16 pairs).

The test scenes are mosaics of real data: the 10 m B,G,R,NIR bands of the OSCD Rennes pair
(Sentinel-2 L1C, uint16, both dates), mirror-tiled to N x N pixels and written as 4-band
uint16 tiled GeoTIFFs on a 0.5 m Lambert-93 grid, like a Pléiades ortho-image pair. Each run is
a fresh process, so its peak resident memory (``ru_maxrss``) is that run's alone.

Prints, per size: peak memory, end-to-end time and megapixels per second, the time spent inside
the method itself, and their ratio (the pipeline's overhead: reading, alignment, statistics,
writing, polygons, COG conversion, quicklook).

    python benchmarks/scale.py --sizes 5000 10000 20000 --method cva
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CITY = DATA / "oscd_changedetectionrepository/images/rennes"
BANDS = ("B02", "B03", "B04", "B08")  # B, G, R, NIR


def source_tiles() -> tuple[np.ndarray, np.ndarray]:
    """Both dates' B,G,R,NIR at 10 m on their native grid: uint16 [4, h, w] each."""
    out = []
    for folder in ("imgs_1", "imgs_2"):
        layers = []
        for band in BANDS:
            with rasterio.open(next((CITY / folder).glob(f"*_{band}.tif"))) as src:
                layers.append(src.read(1))
        out.append(np.stack(layers))
    h = min(a.shape[1] for a in out)
    w = min(a.shape[2] for a in out)
    return out[0][:, :h, :w], out[1][:, :h, :w]


def write_mosaic(path: Path, tile: np.ndarray, size: int, rows_per_write: int = 512) -> None:
    """Mirror-tile ``tile`` [4, h, w] to size x size, strip by strip (never the whole scene in memory)."""
    _, h, w = tile.shape
    cols = np.arange(size) % (2 * w)
    cols = np.where(cols < w, cols, 2 * w - 1 - cols)
    profile = dict(driver="GTiff", width=size, height=size, count=4, dtype="uint16", crs="EPSG:2154",
                   transform=Affine(0.5, 0, 574000.0, 0, -0.5, 6290000.0), tiled=True, blockxsize=512,
                   blockysize=512, bigtiff="yes", nodata=None)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for top in range(0, size, rows_per_write):
            n = min(rows_per_write, size - top)
            rows = np.arange(top, top + n) % (2 * h)
            rows = np.where(rows < h, rows, 2 * h - 1 - rows)
            dst.write(tile[:, rows][:, :, cols], window=Window(0, top, size, n))
        dst.colorinterp = [rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.green,
                           rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.undefined]
    tmp.replace(path)


def child(before: str, after: str, out: str, method: str) -> None:
    """Run one detect in this (fresh) process and print its record and peak memory as JSON."""
    import deltacd

    result = deltacd.detect(before, after, out, method=method, overwrite=True,
                            bands_before="B,G,R,N", bands_after="B,G,R,N")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": peak_kib / 1024, "timings": result.record["timings_s"],
                      "pixels": result.record["grid"]["width"] * result.record["grid"]["height"],
                      "polygons": result.record["results"]["polygons"]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--method", default="cva")
    parser.add_argument("--work", default=str(Path(__file__).resolve().parent / "_work" / "scale"))
    parser.add_argument("--keep", action="store_true", help="keep the mosaics for another run")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    first, second = source_tiles()
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, "
          f"python {platform.python_version()}; method {args.method}; source tile {first.shape[2]}x{first.shape[1]} px; "
          f"load average {__import__('os').getloadavg()[0]:.2f} at start")
    header = f"{'size':>7s} {'MP':>6s} {'peak MiB':>9s} {'total s':>8s} {'MP/s':>6s} {'method s':>9s} {'total/method':>12s} {'polygons':>8s}"
    print(header)
    rows = []
    for size in args.sizes:
        before, after = work / f"before_{size}.tif", work / f"after_{size}.tif"
        for path, tile in ((before, first), (after, second)):
            if not path.exists():
                write_mosaic(path, tile, size)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--child", str(before), str(after),
                               str(work / f"out_{size}"), args.method], capture_output=True, text=True)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return 1
        wall = time.perf_counter() - started
        record = json.loads(done.stdout.strip().splitlines()[-1])
        t = record["timings"]
        mp = record["pixels"] / 1e6
        method_s = t["method_inside_predict"]
        rows.append((size, record, wall))
        print(f"{size:7d} {mp:6.0f} {record['peak_mib']:9.0f} {t['total']:8.1f} {mp / t['total']:6.2f} "
              f"{method_s:9.1f} {t['total'] / method_s:12.1f} {record['polygons']:8d}")
    print("\nstage timings (s):")
    stages = [k for k in rows[0][1]["timings"] if k not in ("total",)]
    print(f"{'size':>7s} " + " ".join(f"{s[:12]:>12s}" for s in stages))
    for size, record, _ in rows:
        print(f"{size:7d} " + " ".join(f"{record['timings'].get(s, 0):12.1f}" for s in stages))
    if not args.keep:
        for path in work.glob("*.tif"):
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
