"""Which automatic threshold for zero-shot scores: Otsu, a two-Gaussian mixture, or a no-change prior.

Every LEVIR-CD crop (11, 0.5 m, building change, 0-20 % changed) and DSIFN-CD crop (10, ~2 m,
land-cover change, 9-65 % changed) of ../shared/data goes through ``deltacd.detect`` with
``method="zero-shot"`` (coregistration off, one 256-px tile per crop, no minimum mapping unit). The
score raster of each run is then thresholded by each rule on that crop's own histogram (as detect
does for a scene), and the masks are scored against the labels: pooled (micro) precision, recall
and F1 per data set, and the share of pixels flagged (median over crops, and the largest).

Usage::

    python benchmarks/zero_shot_threshold.py [--data DIR] [--out benchmarks/results/zero_shot_threshold.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

import deltacd
from deltacd.postprocess.histogram import Histogram
from deltacd.postprocess.threshold import capped_threshold, otsu_threshold
from levir import georeference_levir_crop

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mixture_threshold(hist: Histogram, *, iterations: int = 200) -> float:
    """Threshold between the two components of a Gaussian mixture fitted to the score histogram.

    A two-class mixture (no change, change) is fitted by expectation-maximisation on the binned
    counts, started from Otsu's split; the threshold is the lowest score above the no-change
    mean where the change component's posterior exceeds one half (Bruzzone & Fernández Prieto
    2000, "Automatic analysis of the difference image for unsupervised change detection",
    doi:10.1109/36.843009, fit the same two-Gaussian model to a difference image by EM). Unlike
    Otsu, which tends to split a skewed unimodal histogram near its middle, the mixture lets a
    wide no-change component absorb the long tail of unchanged pixels when no separate change
    mode exists. Counts above the 99.9th percentile are left out, as for :func:`otsu_threshold`.
    """
    if hist.total == 0:
        return float("nan")
    centers, counts = hist.centers, hist.counts.astype(np.float64)
    keep = centers <= hist.quantile(0.999)
    x, n = centers[keep], counts[keep]
    if np.count_nonzero(n) < 2:
        return otsu_threshold(hist)
    split = otsu_threshold(hist)
    low, high = x <= split, x > split
    if not n[low].sum() or not n[high].sum():
        return split
    weight = np.array([n[low].sum(), n[high].sum()]) / n.sum()
    mean = np.array([np.average(x[low], weights=n[low]), np.average(x[high], weights=n[high])])
    floor = (x[-1] - x[0]) / len(x)  # one bin: keeps a component from collapsing onto a spike
    var = np.array([np.average((x[low] - mean[0]) ** 2, weights=n[low]), np.average((x[high] - mean[1]) ** 2, weights=n[high])])
    var = np.maximum(var, floor**2)
    for _ in range(iterations):
        density = weight[:, None] * np.exp(-0.5 * (x[None] - mean[:, None]) ** 2 / var[:, None]) / np.sqrt(2 * np.pi * var[:, None])
        total = density.sum(axis=0) + 1e-300
        resp = density / total * n[None]
        mass = resp.sum(axis=1) + 1e-300
        new_mean = (resp * x[None]).sum(axis=1) / mass
        new_var = np.maximum((resp * (x[None] - new_mean[:, None]) ** 2).sum(axis=1) / mass, floor**2)
        weight, converged = mass / mass.sum(), np.allclose(new_mean, mean, rtol=1e-6, atol=1e-12 + floor * 1e-6)
        mean, var = new_mean, new_var
        if converged:
            break
    order = np.argsort(mean)
    weight, mean, var = weight[order], mean[order], var[order]
    density = weight[:, None] * np.exp(-0.5 * (x[None] - mean[:, None]) ** 2 / var[:, None]) / np.sqrt(2 * np.pi * var[:, None])
    above = (density[1] > density[0]) & (x > mean[0])
    if not above.any():
        return float(hist.edges[np.flatnonzero(keep)[-1] + 1])  # no change component anywhere: nothing above
    return float(x[np.argmax(above)])


def tail_threshold(hist: Histogram, *, k: float = 3.0) -> float:
    """``median + k * 1.4826 * MAD`` of the score histogram: a no-change prior.

    Assumes most of the scene is unchanged, so the bulk of the histogram describes no change and
    change is what lies ``k`` robust standard deviations above its median.
    """
    if hist.total == 0:
        return float("nan")
    median = hist.quantile(0.5)
    centers, counts = hist.centers, hist.counts
    deviation = np.abs(centers - median)
    order = np.argsort(deviation)
    cumulative = np.cumsum(counts[order])
    mad = float(deviation[order][int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))])
    return float(median + k * 1.4826 * mad)


RULES = {
    "otsu": otsu_threshold,
    "mixture": mixture_threshold,
    "median+3MAD": lambda h: tail_threshold(h, k=3.0),
    "median+5MAD": lambda h: tail_threshold(h, k=5.0),
    "otsu, at most 20 % (prior)": lambda h: capped_threshold(h, otsu_threshold(h), 0.2),
    "otsu, at most 10 % (prior; deltacd)": lambda h: capped_threshold(h, otsu_threshold(h), 0.1),
}


def _label(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def _dsifn_geotiff(png: Path, out: Path) -> Path:
    """A DSIFN PNG as an RGB GeoTIFF on an arbitrary 2 m UTM grid (the crops carry no georeference)."""
    with Image.open(png) as im:
        rgb = np.moveaxis(np.asarray(im.convert("RGB")), -1, 0)
    with rasterio.open(out, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8",
                       crs="EPSG:32650", transform=Affine(2.0, 0, 500000.0, 0, -2.0, 3500000.0)) as dst:
        dst.write(rgb)
        dst.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green, rasterio.enums.ColorInterp.blue]
    return out


def scores(data: Path, work: Path) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(data set, crop, score [H, W], label [H, W]) for every crop, through deltacd.detect."""
    cases = []
    levir = data / "levircd_bitcd"
    coords = data / "levircd-spatialinfo_stanet" / "LEVIR_CD_name_coords.json"
    for a in sorted((levir / "A").glob("*.png")):
        before = georeference_levir_crop(a, work / f"levir_{a.stem}_A.tif", coords)
        after = georeference_levir_crop(levir / "B" / a.name, work / f"levir_{a.stem}_B.tif", coords)
        cases.append(("LEVIR-CD", a.stem, before, after, levir / "label" / a.name))
    dsifn = data / "dsifn_changeformer"
    for a in sorted((dsifn / "A").glob("*.png")):
        before = _dsifn_geotiff(a, work / f"dsifn_{a.stem}_A.tif")
        after = _dsifn_geotiff(dsifn / "B" / a.name, work / f"dsifn_{a.stem}_B.tif")
        cases.append(("DSIFN-CD", a.stem, before, after, dsifn / "label" / a.name))
    out = []
    for source, name, before, after, label in cases:
        with rasterio.open(before) as src:
            res, crs = src.res, src.crs.to_string()  # the crop's own grid (LEVIR: EPSG:4326 square degrees)
        result = deltacd.detect(before, after, work / f"run_{source}_{name}", method="zero-shot", coregistration="off",
                                min_area_m2=0, tile_size=256, resolution=res, crs=crs)
        with rasterio.open(result.score) as src:
            score = src.read(1)
        truth = _label(label)
        if score.shape != truth.shape:
            raise SystemExit(f"{name}: score {score.shape} and label {truth.shape} differ; the grid is not the crop's")
        out.append((source, name, score, truth))
    return out


def evaluate(cases) -> list[str]:
    lines = ["| data set | rule | precision | recall | F1 | flagged (median crop) | flagged (max crop) | flagged (crop without change) |",
             "|---|---|---|---|---|---|---|---|"]
    for source in ("LEVIR-CD", "DSIFN-CD"):
        for rule, fn in RULES.items():
            tp = fp = fn_ = 0
            flagged, unchanged = [], []
            for s, _, score, truth in cases:
                if s != source:
                    continue
                hist = Histogram()
                hist.update(score)
                mask = np.nan_to_num(score, nan=-np.inf) > fn(hist)
                tp += int((mask & truth).sum())
                fp += int((mask & ~truth).sum())
                fn_ += int((~mask & truth).sum())
                flagged.append(mask.mean())
                if not truth.any():
                    unchanged.append(mask.mean())
            p = tp / max(tp + fp, 1)
            r = tp / max(tp + fn_, 1)
            f1 = 2 * p * r / max(p + r, 1e-12)
            none = f"{max(unchanged):.1%}" if unchanged else "-"
            lines.append(f"| {source} | {rule} | {p:.3f} | {r:.3f} | {f1:.3f} | {np.median(flagged):.1%} | {max(flagged):.1%} | {none} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "zero_shot_threshold.txt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = scores(args.data, Path(tmp))
    load = os.getloadavg()[0]
    lines = [f"zero-shot threshold rules; {platform.platform()}, {os.cpu_count()} CPUs, load {load:.1f}; "
             f"deltacd {deltacd.__version__}", "", *evaluate(cases)]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
