"""Throughput of ``deltacd detect`` against a plain-tools pipeline and the physical floor, side by side.

Scenes: 4-band uint16 pairs of N x N pixels made of real data (the 10 m B,G,R,NIR bands of the
OSCD Rennes pair, mirror-tiled, on a 0.5 m Lambert-93 grid, as ``benchmarks/scale.py``). Two
layouts: **aligned** (both dates on one grid) and **misaligned** (date 2 on a grid shifted by
0.37 x 0.61 pixel, so it must be resampled). Each pipeline runs in a fresh process, so that its
peak resident memory, CPU time and bytes read (``/proc/self/io`` rchar) are its own:

* ``deltacd (before)``: the code of the commit given by ``--before`` (a git worktree), defaults;
* ``deltacd``: this checkout, defaults (co-registration measured, PIF harmonisation, Otsu, 12 m2 MMU);
* ``plain tools``: what a user writes with the same libraries on whole arrays: date 2 warped to
  date 1's grid (rasterio.warp.reproject with every thread, as ``gdalwarp -multi``), CVA with
  numexpr, Otsu (scikit-image), the minimum mapping unit by scipy labelling, polygons with
  rasterio.features.shapes on the whole mask (as ``gdal_polygonize``), COGs with GDAL's COG
  driver (as ``gdal_translate -of COG``), a decimated matplotlib quicklook. No co-registration,
  no harmonisation: less work than deltacd does;
* ``deltacd blocks`` / ``deltacd dask 1`` / ``deltacd dask 2``: this checkout in 4 096 px blocks,
  in one process or on a local Dask cluster of 1 or 2 worker processes (aligned layout only);
* ``floor``: reading both inputs once (from the page cache), one numpy CVA pass, writing the
  score uncompressed: what no pipeline can beat.

Usage::

    python benchmarks/throughput.py --sizes 5000 10000 --layouts aligned misaligned --methods cva irmad \\
        [--before <commit>] [--out benchmarks/results/throughput]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from deltacd.io.rasters import GDAL_CACHE_MB  # noqa: E402
from scale import source_tiles, write_mosaic  # noqa: E402

CHILD = r'''
import json, os, resource, sys, time
kind, before, after, out, method = sys.argv[1:6]
started = time.perf_counter()
stages = {}
if kind.startswith("deltacd"):
    import deltacd
    scale = {"deltacd blocks": {"block_size": 4096}, "deltacd dask 1": {"workers": 1, "block_size": 4096},
             "deltacd dask 2": {"workers": 2, "block_size": 4096}}.get(kind, {})
    result = deltacd.detect(before, after, out, method=method, **scale)
    stages = result.record["timings_s"]
    polygons = result.record["results"]["polygons"]
elif kind == "plain":
    sys.path.insert(0, os.environ["BENCH_DIR"])
    from throughput import plain_pipeline
    stages, polygons = plain_pipeline(before, after, out, method)
else:
    sys.path.insert(0, os.environ["BENCH_DIR"])
    from throughput import floor
    stages, polygons = floor(before, after, out)
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # Dask's worker processes, once they have ended
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime + workers.ru_utime + workers.ru_stime,
                  "peak_mib": max(usage.ru_maxrss, workers.ru_maxrss) / 1024,
                  "read_mb": int(io["rchar"]) / 1e6, "stages": stages, "polygons": polygons}))
'''


def _read_all(path: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read().astype(np.float32), src.profile


def plain_pipeline(before: str, after: str, out: str, method: str) -> tuple[dict, int]:
    """The plain-tools pipeline (module notes), on whole arrays; returns stage times and the polygon count."""
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numexpr as ne
    import rasterio.shutil
    import shapely
    from rasterio.enums import Resampling
    from rasterio.features import shapes
    from rasterio.warp import reproject
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    stages, t = {}, time.perf_counter()
    out = Path(out)
    out.mkdir()
    a, profile = _read_all(before)
    with rasterio.open(after) as src:
        if src.transform == profile["transform"] and src.shape == a.shape[1:]:
            b = src.read().astype(np.float32)
        else:  # gdalwarp -multi onto date 1's grid
            b = np.zeros_like(a)
            reproject(src.read().astype(np.float32), b, src_transform=src.transform, src_crs=src.crs,
                      dst_transform=profile["transform"], dst_crs=profile["crs"], resampling=Resampling.bilinear,
                      num_threads=os.cpu_count())
    stages["read_warp"], t = time.perf_counter() - t, time.perf_counter()
    if method == "cva":
        scale = np.median(np.abs(a - np.median(a.reshape(4, -1)[:, ::97], axis=1)[:, None, None]).reshape(4, -1)[:, ::97], axis=1) * 1.4826
        b0, b1, b2, b3 = (b[i] for i in range(4))
        a0, a1, a2, a3 = (a[i] for i in range(4))
        s0, s1, s2, s3 = (float(v) for v in scale)
        score = ne.evaluate("sqrt(((b0-a0)/s0)**2 + ((b1-a1)/s1)**2 + ((b2-a2)/s2)**2 + ((b3-a3)/s3)**2)")
    else:  # the IR-MAD statistic with deltacd's fitted transform is not a plain tool: standardised differences
        d = (b - a).reshape(4, -1)
        d = (d - d.mean(axis=1, keepdims=True)) / d.std(axis=1, keepdims=True)
        score = (d ** 2).sum(axis=0).reshape(a.shape[1:]).astype(np.float32)
    del a, b
    threshold = float(threshold_otsu(score[::4, ::4]))
    stages["method"], t = time.perf_counter() - t, time.perf_counter()
    mask = score > threshold
    labels, n = ndimage.label(mask)
    counts = np.bincount(labels.ravel())
    keep = counts * 0.25 >= 12.0
    keep[0] = False
    mask = keep[labels]
    stages["mmu"], t = time.perf_counter() - t, time.perf_counter()
    polygons = [shapely.geometry.shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                                                            transform=profile["transform"])]
    gpd.GeoDataFrame(geometry=polygons, crs=profile["crs"]).to_file(out / "changes.gpkg", layer="changes")
    stages["polygons"], t = time.perf_counter() - t, time.perf_counter()
    for name, array, dtype in (("change_score", score, "float32"), ("change_mask", mask.astype(np.uint8), "uint8")):
        tmp = out / f"{name}.tmp.tif"
        with rasterio.open(tmp, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype=dtype,
                           crs=profile["crs"], transform=profile["transform"], tiled=True, bigtiff="if_safer") as dst:
            dst.write(array, 1)
        rasterio.shutil.copy(tmp, out / f"{name}.tif", driver="COG", compress="DEFLATE", num_threads="ALL_CPUS")
        tmp.unlink()
    stages["cog"], t = time.perf_counter() - t, time.perf_counter()
    with rasterio.open(after) as src:
        factor = max(1, max(src.width, src.height) // 900)
        small = src.read([3, 2, 1], out_shape=(3, src.height // factor, src.width // factor), resampling=Resampling.average)
    image = np.moveaxis(np.clip(small / np.percentile(small, 98), 0, 1), 0, -1)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(image)
    ax.imshow(np.ma.masked_where(~mask[::factor, ::factor], mask[::factor, ::factor]), cmap="autumn", alpha=0.6)
    fig.savefig(out / "quicklook.png", dpi=100)
    plt.close(fig)
    stages["quicklook"] = time.perf_counter() - t
    return stages, len(polygons)


def floor(before: str, after: str, out: str) -> tuple[dict, int]:
    """Read both inputs once, one numpy CVA pass, write the score uncompressed."""
    t = time.perf_counter()
    a, profile = _read_all(before)
    b, _ = _read_all(after)
    stages = {"read": time.perf_counter() - t}
    t = time.perf_counter()
    d = b - a
    del a, b
    score = np.sqrt(np.einsum("chw,chw->hw", d, d))
    stages["method"] = time.perf_counter() - t
    t = time.perf_counter()
    Path(out).mkdir()
    with rasterio.open(Path(out) / "score.tif", "w", driver="GTiff", width=score.shape[1], height=score.shape[0], count=1,
                       dtype="float32", crs=profile["crs"], transform=profile["transform"], bigtiff="if_safer") as dst:
        dst.write(score.astype(np.float32), 1)
    stages["write"] = time.perf_counter() - t
    return stages, 0


LEVIR = ROOT.parent / "shared" / "data" / "levircd_bitcd"
TINYCD = ROOT.parent / "shared" / "data" / "checkpoints_tinycd" / "levir_best.pth"


def learned_pair(folder: Path, size: int) -> tuple[Path, Path]:
    """A size x size RGB uint8 pair at 0.5 m: a real LEVIR-CD test crop (256 px) mirror-tiled."""
    from PIL import Image

    paths = []
    for side in ("A", "B"):
        with Image.open(LEVIR / side / "test_2_0000_0000.png") as im:
            tile = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        reps = np.arange(size) % (2 * tile.shape[1])
        reps = np.where(reps < tile.shape[1], reps, 2 * tile.shape[1] - 1 - reps)
        path = folder / f"levir_{size}_{side}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:2154",
                           transform=Affine(0.5, 0, 574000.0, 0, -0.5, 6290000.0), tiled=True) as dst:
            dst.write(tile[:, reps][:, :, reps])
        paths.append(path)
    return paths[0], paths[1]


def bare_network(runtime: str, a: np.ndarray, b: np.ndarray):
    """Seconds of ``LearnedModel.predict`` alone over the engine's tiles of ``a``, ``b`` [C, H, W], in its batches.

    A model of its own, cold as the pipeline's is (one reused after the pipeline would run on the
    memory the pipeline's first tiles paged in). Returns (seconds, the engine's tile layout).
    """
    from deltacd.config import DetectOptions
    from deltacd.engine.runner import plan_tiles
    from deltacd.methods.learned import LearnedModel

    model = LearnedModel.from_file(f"tinycd:{TINYCD}", device="cpu", runtime=runtime)
    model.select_bands(("R", "G", "B"))
    model.choose_runtime()  # the ONNX export is the pipeline's overhead, not the network's
    layout = plan_tiles(a.shape[1:], model)
    size = DetectOptions().batch_size  # the engine's batches: up to batch_size tiles of one row
    batches = [[(r, c) for c in layout.cols[i:i + size]] for r in layout.rows for i in range(0, len(layout.cols), size)]
    t = time.perf_counter()
    for group in batches:
        cut = [(slice(None), slice(r, r + layout.height), slice(c, c + layout.width)) for r, c in group]
        model.predict(np.stack([a[k] for k in cut]), np.stack([b[k] for k in cut]))
    return time.perf_counter() - t, layout


def learned_rows(work: Path, size: int) -> list[dict]:
    """TinyCD through ``deltacd.detect`` against the bare network on the same tiles, per runtime.

    The bare network is :func:`bare_network` (normalisation, forward pass, sigmoid on the engine's
    tiles cut from arrays in memory). Everything else in the pipeline time (reading, co-registration, blending, threshold,
    polygons, COGs, quicklook, ONNX export) is the pipeline's overhead. ONNX Runtime is timed
    twice: the first run exports the graph into an empty cache, later runs reuse it.
    """
    import deltacd
    from deltacd.methods.learned import LearnedModel

    before, after = learned_pair(work, size)
    a, _ = _read_all(str(before))
    b, _ = _read_all(str(after))
    os.environ["DELTACD_CACHE_DIR"] = str(_fresh(work / "onnx_cache"))
    rows = []
    for runtime, cache in (("onnx", "first run, exported"), ("onnx", "cached export"), ("torch", "-")):
        model = LearnedModel.from_file(f"tinycd:{TINYCD}", device="cpu", runtime=runtime)
        out = _fresh(work / f"learned_{runtime}")
        t = time.perf_counter()
        result = deltacd.detect(before, after, out, method_instance=model)
        pipeline = time.perf_counter() - t
        shutil.rmtree(out)
        bare, layout = bare_network(runtime, a, b)
        tiles = len(layout.rows) * len(layout.cols)
        rows.append({"runtime": result.record["method"].get("runtime", runtime), "onnx_export": cache, "size": size,
                     "tiles": tiles, "tile": layout.height, "overlap": layout.overlap, "pipeline_s": pipeline,
                     "bare_s": bare, "stages": result.record["timings_s"]})
        print(f"TinyCD {size} px {rows[-1]['runtime']:12s} ({cache}) pipeline {pipeline:6.1f} s  bare network {bare:6.1f} s  "
              f"ratio {pipeline / bare:.2f}  ({tiles} tiles of {layout.height} px, overlap {layout.overlap})", flush=True)
    return rows


def _fresh(out: Path) -> Path:
    """An output folder this run will create and remove; one already there is not ours to delete."""
    if out.exists():
        raise SystemExit(f"{out} already exists (a killed benchmark's output, or yours): remove it or give another --work")
    return out


def make_pair(folder: Path, size: int, layout: str, tiles: tuple[np.ndarray, np.ndarray]) -> tuple[Path, Path]:
    before, after = folder / f"{size}_before.tif", folder / f"{size}_{layout}_after.tif"
    if not before.exists():
        write_mosaic(before, tiles[0], size)
    if not after.exists():
        write_mosaic(after, tiles[1], size)
        if layout == "misaligned":
            with rasterio.open(after, "r+") as dst:
                t = dst.transform
                dst.transform = Affine(t.a, 0, t.c + 0.37 * t.a, 0, t.e, t.f + 0.61 * t.e)
    return before, after


def run(kind: str, before: Path, after: Path, out: Path, method: str, before_src: Path | None) -> dict:
    env = dict(os.environ, BENCH_DIR=str(ROOT / "benchmarks"))
    if not kind.startswith("deltacd") or kind == "deltacd (before)":
        # the plain pipeline and the old code get the 512 MB cache the old code chose; deltacd its own default
        env.setdefault("GDAL_CACHEMAX", "512")
    if kind == "deltacd (before)":
        env["PYTHONPATH"] = str(before_src)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(before), str(after), str(out), method],
                          capture_output=True, text=True, env=env)
    if done.returncode:  # e.g. the plain pipeline holding whole arrays runs out of memory at 20 000 px
        reason = "killed (out of memory)" if done.returncode in (-9, 137) else f"failed (exit {done.returncode})"
        print(f"{kind}: {reason}: {done.stderr[-500:]}", file=sys.stderr)
        return {"wall": time.perf_counter() - started, "cpu": float("nan"), "peak_mib": float("nan"),
                "read_mb": float("nan"), "stages": {}, "polygons": reason}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[5000, 10000], help="scene sides in px (none: only --learned)")
    parser.add_argument("--layouts", nargs="+", default=["aligned", "misaligned"])
    parser.add_argument("--methods", nargs="+", default=["cva", "irmad"])
    parser.add_argument("--pipelines", nargs="+", default=["deltacd (before)", "deltacd", "plain", "floor"],
                        help="among: 'deltacd (before)', deltacd, plain, floor, 'deltacd blocks' (4096 px blocks, one "
                             "process), 'deltacd dask 1', 'deltacd dask 2' (local Dask cluster of 1 or 2 workers)")
    parser.add_argument("--learned", type=int, default=0, metavar="PX",
                        help="also time TinyCD through detect against the bare network on a PX x PX pair (0: skip)")
    parser.add_argument("--before", help="git commit of the 'before' row (default: none, the row is left out)")
    parser.add_argument("--work", type=Path, help="folder for the scenes (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput")
    args = parser.parse_args()
    pipelines = [p for p in args.pipelines if p != "deltacd (before)" or args.before]
    work = args.work or Path(tempfile.mkdtemp(prefix="deltacd-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    before_src = None
    if args.before:
        tree = work / "before"
        if not tree.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", str(tree), args.before], check=True, capture_output=True)
        before_src = tree / "src"
    tiles = source_tiles()
    rows = []
    load = os.getloadavg()[0]
    for size in args.sizes:
        for layout in args.layouts:
            before, after = make_pair(work, size, layout, tiles)
            for method in args.methods:
                for kind in pipelines:
                    if kind == "floor" and (method != "cva" or layout != "aligned"):
                        continue
                    if kind in ("deltacd blocks", "deltacd dask 1", "deltacd dask 2") and layout != "aligned":
                        continue  # the scale-out rows: one layout is enough to show the overhead
                    out = _fresh(work / f"out_{size}_{layout}_{method}_{kind.replace(' ', '_').replace('(', '').replace(')', '')}")
                    result = run(kind, before, after, out, method, before_src)
                    rows.append({"size": size, "layout": layout, "method": method, "pipeline": kind, **result})
                    print(f"{size:6d} {layout:10s} {method:6s} {kind:18s} wall {result['wall']:7.1f} s  cpu {result['cpu']:7.1f} s  "
                          f"peak {result['peak_mib']:6.0f} MiB  read {result['read_mb']:7.0f} MB  polygons {result['polygons']}",
                          flush=True)
                    if out.exists():  # a failed row (out of memory) may have written nothing
                        shutil.rmtree(out)
    learned = learned_rows(work, args.learned) if args.learned else []
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps({"rows": rows, "learned": learned, "load_at_start": load,
                                                          "machine": platform.platform(), "cpus": os.cpu_count()}, indent=1))
    lines = [f"Throughput ({platform.platform()}, {os.cpu_count()} CPUs, load {load:.1f} at start; GDAL_CACHEMAX 512 MB for "
             f"plain, floor and before, deltacd's own default ({os.environ.get('GDAL_CACHEMAX', GDAL_CACHE_MB)} MB) for deltacd)", "",
             "| size | layout | method | pipeline | wall s | x plain | x floor | CPU s | peak MiB | read MB | polygons |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        # a killed plain row (out of memory) has no wall time to compare with
        plain = next((x["wall"] for x in rows if isinstance(x["polygons"], int) and (x["size"], x["layout"], x["method"], x["pipeline"]) ==
                      (r["size"], r["layout"], r["method"], "plain")), None)
        base = next((x["wall"] for x in rows if (x["size"], x["pipeline"]) == (r["size"], "floor")), None)
        lines.append(f"| {r['size']} | {r['layout']} | {r['method']} | {r['pipeline']} | {r['wall']:.1f} | "
                     f"{r['wall'] / plain:.2f} | " if plain else f"| {r['size']} | {r['layout']} | {r['method']} | {r['pipeline']} | {r['wall']:.1f} | - | ")
        lines[-1] += (f"{r['wall'] / base:.1f} | " if base else "- | ") + \
            f"{r['cpu']:.1f} | {r['peak_mib']:.0f} | {r['read_mb']:.0f} | {r['polygons']} |"
    lines += ["", "Per-stage seconds:", ""]
    for r in rows:
        lines.append(f"- {r['size']} {r['layout']} {r['method']} {r['pipeline']}: "
                     + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items() if isinstance(v, (int, float))))
    if learned:
        lines += ["", "TinyCD (authors' LEVIR-CD weights), CPU: deltacd detect vs the bare network on the same tiles", "",
                  "| pair px | runtime | ONNX export | tiles | pipeline s | bare network s | pipeline / bare |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['runtime']} | {r['onnx_export']} | {r['tiles']} x {r['tile']} px | {r['pipeline_s']:.1f} | "
                  f"{r['bare_s']:.1f} | "
                  f"{r['pipeline_s'] / r['bare_s']:.2f} |" for r in learned]
        lines += [f"- TinyCD {r['runtime']} ({r['onnx_export']}) stages: " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()
                                                              if isinstance(v, (int, float))) for r in learned]
    text = "\n".join(lines)
    (args.out / "throughput.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
