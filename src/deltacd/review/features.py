"""Per-object features, computed block by block from the run's aligned pair and score.

The pair is read exactly as the run read it (:func:`run_pair`): the same files, band names, grid,
co-registration shift and radiometric harmonisation of date 2, all taken from ``run.json``. For
each object (:mod:`deltacd.review.objects`) the features are, in groups (:data:`GROUPS`):

- ``score``: mean, spread and share above the run's threshold of the method's score, its ratio to
  the threshold, the mean score around the object (a box four superpixels wide) and the object's
  contrast to it;
- ``bands``: per band, the mean and spread of both dates and the mean signed and absolute
  difference (date 2 harmonised);
- ``indices``: brightness (mean of the bands) of both dates and its difference; NDVI and NDWI of
  both dates and their differences where the red, green and near-infrared bands are known;
- ``texture``: mean gradient magnitude of the brightness at both dates, their log ratio, and the
  correlation of the two dates' brightness inside the object (1 where the structure is unchanged,
  whatever the light);
- ``shape``: pixel count (log) and compactness (4 pi area / perimeter^2 on the pixel outline).

Every quantity is a sum over an object's pixels accumulated with ``np.bincount`` on each block,
so the cost is a few passes over each block and the memory one block plus one row per object.
A damage run's features are the numeric attributes of its buildings (the score statistics
inside each footprint and in its ring, the run's class probabilities) and their shape.

Which groups pay is measured in ``benchmarks/analyst_loop.py`` (ablation ``--features``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from deltacd.errors import InputError, MissingInputError
from deltacd.io.bands import SENTINEL2_EQUIVALENT
from deltacd.io.rasters import gdal_env, open_image
from deltacd.io.vectors import PolygonMask, read_polygons
from deltacd.prepare.align import AlignedPair
from deltacd.prepare.radiometry import LinearHarmoniser, fit_harmoniser
from deltacd.prepare.sampling import sample_pixels
from deltacd.review.objects import LABELS_NODATA, PER_BLOCK, ReviewRun, cell_sums

log = logging.getLogger(__name__)

#: Feature groups, for ablations: a feature belongs to the first group whose prefix it starts with.
GROUPS = {
    "score": ("score_",),
    "shape": ("log_pixels", "compactness"),
    "texture": ("grad_", "corr"),
    "indices": ("bright_", "ndvi_", "ndwi_"),
    "bands": ("band_",),
    "embeddings": ("emb_",),  # only when asked for: deltacd.review.embeddings
}
#: Version of the feature set: a cache made by another version is recomputed.
FEATURE_VERSION = 3
#: Cache of a run's objects and features, beside its review store.
CACHE = "review_objects.npz"


@dataclass
class ObjectTable:
    """The objects of a run and their features.

    Attributes
    ----------
    ids : int64 [n], sorted
    features : float32 [n, F] (NaN where a feature is undefined: an index without its bands)
    names : list of F feature names
    pixels : int64 [n], pixels per object (buildings: footprint area over pixel area)
    x, y : float64 [n], centroid in the grid's CRS
    boxes : int32 [n, 4], row0, col0, row1, col1 of each object on the grid (buildings: their bounds' pixels)
    """

    ids: np.ndarray
    features: np.ndarray
    names: list[str]
    pixels: np.ndarray
    x: np.ndarray
    y: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, object_ids) -> np.ndarray:
        """Row of each id (ValueError for an id that is not an object)."""
        object_ids = np.asarray(object_ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, object_ids)
        rows = np.minimum(rows, len(self.ids) - 1)
        if len(object_ids) and not np.array_equal(self.ids[rows], object_ids):
            raise ValueError("unknown object ids: " + ", ".join(map(str, object_ids[self.ids[rows] != object_ids][:5])))
        return rows

    def column(self, name: str) -> np.ndarray:
        return self.features[:, self.names.index(name)]

    def select(self, groups: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        """The feature columns of ``groups`` (all when None)."""
        if groups is None:
            return self.features, list(self.names)
        keep = [i for i, name in enumerate(self.names) if group_of(name) in groups]
        return self.features[:, keep], [self.names[i] for i in keep]


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return "other"


# --- the run's pair, as the run read it -----------------------------------------------------------

_TILES = re.compile(r" \(\d+ tiles\)$")


def run_pair(run: ReviewRun) -> AlignedPair:
    """Both dates on the run's grid, co-registered and harmonised as the run did (from ``run.json``).

    Raises
    ------
    MissingInputError
        An input image of the run is gone (moved or deleted since the run).
    """
    record, options = run.record, run.record.get("options") or {}
    options = options.get("pair", options)  # a damage run records the pair's settings apart
    dates = []
    for label in ("before", "after"):
        described = record["inputs"][label]
        if str(described.get("crs", "")).startswith("sensor geometry"):
            files = [run.folder / f"{label}_ortho.tif"]  # the run kept its orthoimage (outputs.backdrop)
        else:
            files = [Path(_TILES.sub("", f)) for f in described["files"]]
        for path in files:
            if not path.exists():
                raise MissingInputError(f"{path}: the {label} image of the run {run.folder} is gone; put it back where the "
                                        "run read it, or run deltacd detect again")
        dates.append(open_image(files if len(files) > 1 else files[0], bands=described.get("bands"), label=label,
                                nodata=options.get(f"nodata_{label}")))
    aoi = None
    if options.get("aoi"):
        aoi = PolygonMask(read_polygons(options["aoi"], run.grid.crs, what="AOI").geometry)
    shift = (0.0, 0.0)
    coreg = record.get("coregistration") or {}
    if coreg.get("corrected"):
        shift = (float(coreg["dx"]), float(coreg["dy"]))
    pair = AlignedPair(dates[0], dates[1], run.grid, record["bands"], aoi=aoi, after_shift=shift)
    radiometry = record.get("radiometry") or {"rule": "none"}
    if radiometry.get("rule") == "pif":
        harmoniser = LinearHarmoniser(np.asarray(radiometry["gain"]), np.asarray(radiometry["offset"]),
                                      int(radiometry.get("invariant_pixels", 0)))
        pair = pair.replace(after_transform=harmoniser)
    elif radiometry.get("rule") == "histogram":  # not recorded in full: fitted again on the same sample
        sample = sample_pixels(pair, max_pixels=options.get("sample_pixels", 200_000), seed=options.get("seed", 0))
        pair = pair.replace(after_transform=fit_harmoniser(sample, "histogram"))
    return pair


# --- features of a detect run's objects -----------------------------------------------------------

def band_row(bands: tuple[str, ...], name: str) -> int | None:
    """Row of band ``name`` (canonical: R, G, B, N) in ``bands``, or of its Sentinel-2 name; None when absent."""
    for candidate in (name, SENTINEL2_EQUIVALENT[name]):
        if candidate in bands:
            return bands.index(candidate)
    return None


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a + b != 0, (a - b) / (a + b), 0.0).astype(np.float32)


def _gradient(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude by central differences (0 on the block's edge): 10 x faster than Sobel's, and the
    classifier only compares the two dates' values."""
    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    np.subtract(image[:, 2:], image[:, :-2], out=gx[:, 1:-1])
    np.subtract(image[2:], image[:-2], out=gy[1:-1])
    return np.sqrt(gx * gx + gy * gy)


class _Sums:
    """Sums over the objects of one block: ``np.bincount`` on their compact index."""

    def __init__(self, local: np.ndarray, ok: np.ndarray):
        self.shape = ok.shape
        self.ok = None if ok.all() else ok  # the usual block is all valid: no mask to apply to each quantity
        flat = self.pick(local)
        counts = np.bincount(flat)
        self.present = np.flatnonzero(counts)
        remap = np.zeros(len(counts), dtype=np.int64)
        remap[self.present] = np.arange(len(self.present))
        self.index = remap[flat]
        self.n = len(self.present)

    def pick(self, values: np.ndarray) -> np.ndarray:
        """The valid pixels of a [h, w] array, flat (a flat array is taken as already picked)."""
        if values.shape != self.shape:
            return values
        return values.ravel() if self.ok is None else values[self.ok]

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.index, weights=self.pick(values), minlength=self.n)

    def mean_std(self, values: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = self.pick(values).astype(np.float64)
        mean = self.sum(flat) / count
        return mean, np.sqrt(np.maximum(self.sum(flat * flat) / count - mean * mean, 0.0))


def _context(score: np.ndarray, size: int, factor: int) -> np.ndarray:
    """Mean of the finite scores in a ``size`` px box around each pixel, on cells of ``factor`` x ``factor`` px (the
    box is 4 superpixels wide: its mean hardly changes within a cell, and the filter runs on factor^2 fewer pixels)."""
    h, w = score.shape
    finite = np.isfinite(score)
    f = max(1, factor)
    rows, cols = -(-h // f), -(-w // f)
    total = np.zeros((rows * f, cols * f), dtype=np.float32)
    weight = np.zeros((rows * f, cols * f), dtype=np.float32)
    total[:h, :w] = np.where(finite, score, 0.0)
    weight[:h, :w] = finite
    total, weight = cell_sums(total, f), cell_sums(weight, f)
    box = max(1, round(size / f))
    total = ndimage.uniform_filter(total, box, mode="constant")
    weight = ndimage.uniform_filter(weight, box, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        coarse = total / weight
    return np.repeat(np.repeat(coarse, f, axis=0), f, axis=1)[:h, :w]


def _block_features(run: ReviewRun, pair: AlignedPair, index: int, window: Window
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Object ids of the block [h, w], the ids of its objects, their boxes and their features."""
    seg = run.segmentation
    score = run.read_score(window)
    data = pair.read(window)
    valid = data.valid & np.isfinite(score)
    ids = seg.cut(data.before, data.after, valid, index)
    ok = ids >= 0
    if not ok.any():
        return ids, np.empty(0, np.int64), np.empty((0, 4), np.int32), {}
    local = np.where(ok, ids - index * PER_BLOCK, 0)
    sums = _Sums(local, ok)
    object_ids = index * PER_BLOCK + sums.present
    slices = ndimage.find_objects(local.astype(np.int32))
    boxes = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in (slices[k - 1] for k in sums.present)],
                     dtype=np.int32) + np.array([window.row_off, window.col_off] * 2, dtype=np.int32)
    out: dict[str, np.ndarray] = {}
    count = sums.sum(np.ones(sums.n and int(ok.sum())))
    rows, cols = np.indices(ids.shape, dtype=np.float32)
    out["_pixels"] = count
    out["_col"] = sums.sum(cols) / count + int(window.col_off) + 0.5
    out["_row"] = sums.sum(rows) / count + int(window.row_off) + 0.5
    threshold = run.threshold
    # score
    mean, std = sums.mean_std(score, count)
    out["score_mean"], out["score_std"] = mean, std
    out["score_above"] = sums.sum((score >= threshold).astype(np.float32)) / count
    out["score_ratio"] = mean / threshold if threshold else mean
    context = sums.sum(_context(score, 4 * int(math.sqrt(seg.area)), seg.factor)) / count
    out["score_context"], out["score_contrast"] = context, mean - context
    # shape
    padded = np.pad(ids, 1, constant_values=-2)
    inner = ((padded[:-2, 1:-1] == ids) & (padded[2:, 1:-1] == ids) & (padded[1:-1, :-2] == ids) & (padded[1:-1, 2:] == ids))
    perimeter = sums.sum((~inner).astype(np.float32))
    out["log_pixels"] = np.log(count)
    out["compactness"] = np.minimum(4 * math.pi * count / np.maximum(perimeter, 1.0) ** 2, 1.5)
    # bands
    before, after = data.before, data.after
    for k, name in enumerate(pair.bands):
        mb, sb = sums.mean_std(before[k], count)
        ma, sa = sums.mean_std(after[k], count)
        diff = sums.pick(after[k]).astype(np.float64) - sums.pick(before[k])
        out[f"band_{name}_before"], out[f"band_{name}_after"] = mb, ma
        out[f"band_{name}_std_before"], out[f"band_{name}_std_after"] = sb, sa
        out[f"band_{name}_diff"] = sums.sum(diff) / count
        out[f"band_{name}_absdiff"] = sums.sum(np.abs(diff)) / count
    # indices
    bright_b, bright_a = before.mean(axis=0), after.mean(axis=0)
    mb, sb = sums.mean_std(bright_b, count)
    ma, sa = sums.mean_std(bright_a, count)
    out["bright_before"], out["bright_after"], out["bright_diff"] = mb, ma, ma - mb
    red, green, nir = (band_row(pair.bands, b) for b in ("R", "G", "N"))
    for name, (p, q) in {"ndvi": (nir, red), "ndwi": (green, nir)}.items():
        if p is None or q is None:
            continue
        vb = sums.sum(_ratio(before[p], before[q])) / count
        va = sums.sum(_ratio(after[p], after[q])) / count
        out[f"{name}_before"], out[f"{name}_after"], out[f"{name}_diff"] = vb, va, va - vb
    # texture
    gb = sums.sum(_gradient(bright_b)) / count
    ga = sums.sum(_gradient(bright_a)) / count
    out["grad_before"], out["grad_after"] = gb, ga
    out["grad_ratio"] = np.log((ga + 1e-3) / (gb + 1e-3))
    cross = sums.sum(sums.pick(bright_b).astype(np.float64) * sums.pick(bright_a)) / count - mb * ma
    with np.errstate(invalid="ignore", divide="ignore"):
        out["corr"] = np.where((sb > 0) & (sa > 0), cross / (sb * sa), 1.0)
    return ids, object_ids, boxes, out


def _feature_names(bands: tuple[str, ...]) -> list[str]:
    names = ["score_mean", "score_std", "score_above", "score_ratio", "score_context", "score_contrast",
             "log_pixels", "compactness"]
    for name in bands:
        names += [f"band_{name}_{s}" for s in ("before", "after", "std_before", "std_after", "diff", "absdiff")]
    names += ["bright_before", "bright_after", "bright_diff"]
    for index in ("ndvi", "ndwi"):
        names += [f"{index}_{s}" for s in ("before", "after", "diff")]
    return names + ["grad_before", "grad_after", "grad_ratio", "corr"]


def detect_objects(run: ReviewRun, labels: Path, *, threads: int = 2,
                   progress: Callable[[int, int], None] | None = None) -> ObjectTable:
    """The superpixels of a detect run and their features (module notes), block by block; their ids are written
    to ``labels`` (an int32 GeoTIFF on the run's grid)."""
    if not run.layout.score.is_file():
        raise InputError(f"{run.layout.score}: missing from the run; run deltacd detect again")
    seg = run.segmentation
    blocks = seg.blocks()
    grid = run.grid
    tile = 256 if min(grid.width, grid.height) >= 256 else 16
    parts = []
    with gdal_env(), run_pair(run) as pair, rasterio.open(
            labels, "w", driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="int32", crs=grid.crs,
            transform=grid.transform, nodata=LABELS_NODATA, tiled=True, blockxsize=tile, blockysize=tile,
            compress="deflate", predictor=2, bigtiff="if_safer") as out:
        names = _feature_names(pair.bands)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            work = pool.map(lambda item: _block_features(run, pair, *item), enumerate(blocks))
            for done, (window, (ids, object_ids, boxes, features)) in enumerate(zip(blocks, work, strict=True), start=1):
                out.write(ids.astype(np.int32), 1, window=window)
                parts.append((object_ids, boxes, features))
                if progress is not None:
                    progress(done, len(blocks))
    ids = np.concatenate([p[0] for p in parts])
    if len(ids) == 0:
        raise InputError(f"{run.layout.score}: no valid pixel in the run's score; nothing to review")
    columns = {name: np.concatenate([p[2].get(name, np.full(len(p[0]), np.nan)) for p in parts]) for name in
               [*names, "_pixels", "_col", "_row"]}
    names = [n for n in names if not np.isnan(columns[n]).all()]
    x, y = grid.transform * (columns["_col"], columns["_row"])
    return ObjectTable(ids, np.stack([columns[n] for n in names], axis=1).astype(np.float32), names,
                       columns["_pixels"].astype(np.int64), np.asarray(x), np.asarray(y),
                       np.concatenate([p[1] for p in parts]))


# --- features of a damage run's buildings ---------------------------------------------------------

#: Attributes of buildings.gpkg that are outputs or identifiers, not features.
#: The fields the damage step measures on each building (its ``building_table``): the only attributes used as
#: features, so a column the footprints brought with them (a reference grade, an id) never leaks into the model.
DAMAGE_FEATURES = ("change_score", "change_score_p90", "changed_share", "ring_change_score", "ring_changed_share",
                   "valid_share", "area_m2", "p_no_damage", "p_minor", "p_major", "p_destroyed")


def damage_objects(run: ReviewRun) -> ObjectTable:
    """A damage run's buildings and what the damage step measured on them (:data:`DAMAGE_FEATURES`) as features."""
    buildings = run.buildings()
    numeric = [c for c in DAMAGE_FEATURES if c in buildings.columns and np.issubdtype(buildings[c].dtype, np.number)]
    geoms = buildings.geometry
    area = geoms.area.to_numpy()
    perimeter = geoms.length.to_numpy()
    features = {c: buildings[c].to_numpy(dtype=np.float64) for c in numeric}
    pixels = np.maximum(area / (run.grid.res[0] * run.grid.res[1]), 1.0)
    features["log_pixels"] = np.log(pixels)
    features["compactness"] = 4 * math.pi * area / np.maximum(perimeter, 1e-9) ** 2
    names = list(features)
    centroids = geoms.representative_point()
    ids = buildings.index.to_numpy(dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    pixels = np.round(pixels).astype(np.int64)
    bounds = geoms.bounds.to_numpy()
    col0, row0 = ~run.grid.transform * (bounds[:, 0], bounds[:, 3])
    col1, row1 = ~run.grid.transform * (bounds[:, 2], bounds[:, 1])
    boxes = np.stack([np.floor(row0), np.floor(col0), np.ceil(row1), np.ceil(col1)], axis=1).astype(np.int32)
    return ObjectTable(ids[order], np.stack([features[n] for n in names], axis=1).astype(np.float32)[order], names,
                       pixels[order], centroids.x.to_numpy()[order], centroids.y.to_numpy()[order], boxes[order])


# --- cache -----------------------------------------------------------------------------------------

def _cache_key(run: ReviewRun) -> str:
    stat = run.layout.record_file.stat()
    parts = {"version": FEATURE_VERSION, "record": [stat.st_size, stat.st_mtime_ns], "kind": run.kind,
             "segmentation": run.segmentation.describe()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


_FIELDS = ("ids", "features", "pixels", "x", "y", "boxes")


def object_table(run: ReviewRun, *, refresh: bool = False, threads: int = 2,
                 progress: Callable[[int, int], None] | None = None) -> ObjectTable:
    """The run's objects and features: read from the cache beside the run (``review_objects.npz`` and the label
    raster ``review_objects.tif``, :attr:`ReviewRun.cache_dir`) when it was made for this run and segmentation,
    else computed and cached there (``refresh``: always computed)."""
    path = run.cache_dir / CACHE
    key = _cache_key(run)
    if not refresh and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as saved:
                labels_ok = run.kind == "damage" or (run.labels.is_file() and _stamp(run.labels) == saved["labels"].tolist())
                if str(saved["key"]) == key and labels_ok:
                    return ObjectTable(**{f: saved[f] for f in _FIELDS}, names=[str(n) for n in saved["names"]])
        except (OSError, ValueError, KeyError) as exc:
            log.info("%s: unreadable cache (%s); computing the objects again", path, exc)
    run.cache_dir.mkdir(parents=True, exist_ok=True)
    stamp: list[int] = []
    if run.kind == "damage":
        table = damage_objects(run)
    else:
        handle, tmp = tempfile.mkstemp(prefix=".review_objects.", suffix=".tif", dir=run.cache_dir)
        os.close(handle)
        try:
            table = detect_objects(run, Path(tmp), threads=threads, progress=progress)
            run.close()  # a label raster open in this thread would be the one replaced
            os.replace(tmp, run.labels)
        finally:
            Path(tmp).unlink(missing_ok=True)
        stamp = _stamp(run.labels)
    handle, tmp = tempfile.mkstemp(prefix=".review_objects.", suffix=".npz", dir=run.cache_dir)
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, key=np.array(key), names=np.array(table.names), labels=np.array(stamp, dtype=np.int64),
                     **{f: getattr(table, f) for f in _FIELDS})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return table


__all__ = ["CACHE", "GROUPS", "ObjectTable", "damage_objects", "detect_objects", "group_of", "object_table", "run_pair"]
