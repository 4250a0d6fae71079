"""Map and chart figures of a run's report, each drawn from the run's own outputs at reduced resolution.

Maps carry what a printed map needs: a scale bar (matplotlib-scalebar), a north arrow, a legend,
the CRS and the date of each image. Rasters are read at most ``max_size`` pixels wide (from their
overviews when they have them: COGs do), so a 40 000 px scene draws as fast as a crop.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib_scalebar.scalebar import ScaleBar  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.vrt import WarpedVRT  # noqa: E402

from deltacd.io.grid import Grid  # noqa: E402
from deltacd.outputs.layout import BACKDROPS, DamageOutputs, DetectOutputs  # noqa: E402
from deltacd.outputs.quicklook import stretch  # noqa: E402


def small_grid(path: Path, max_size: int) -> Grid:
    """The grid of a run's raster, coarsened so that its longer side is at most ``max_size``."""
    with rasterio.open(path) as src:
        return Grid.of(src).scaled(max_size)


def read_on(path: Path, grid: Grid, *, resampling: Resampling = Resampling.average, band: int | None = None) -> np.ndarray:
    """``path`` read on ``grid`` (reprojected and averaged or sampled): float32 [bands, h, w], NaN outside."""
    with rasterio.open(path) as src, WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                                                height=grid.height, resampling=resampling, add_alpha=src.nodata is None,
                                                nodata=src.nodata) as vrt:
        indexes = [band] if band else list(range(1, src.count + 1))
        values = vrt.read(indexes, out_dtype="float32")
        valid = vrt.read_masks(indexes[0]) > 0
    values[:, ~valid] = np.nan
    return values


def rgb(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """A backdrop (before.vrt / after.vrt) as a stretched image [h, w, 3] (or [h, w]) and its validity."""
    values = read_on(path, grid)
    valid = np.isfinite(values).all(axis=0)
    image, _, _ = stretch(np.nan_to_num(values), valid)
    return image, valid


def _north_arrow(ax) -> None:
    ax.annotate("N", xy=(0.95, 0.95), xytext=(0.95, 0.83), xycoords="axes fraction", ha="center", va="center",
                fontsize=11, fontweight="bold", arrowprops={"facecolor": "black", "width": 4, "headwidth": 10},
                bbox={"boxstyle": "circle,pad=0.15", "facecolor": "white", "alpha": 0.7, "edgecolor": "none"})


def decorate(ax, grid: Grid, title: str) -> None:
    """Title, scale bar (in metres), north arrow and the CRS on a map axis."""
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")  # geopandas labels the axes with the CRS's; the CRS is written on the map
    ax.set_ylabel("")
    metres = grid.res_m / grid.res[0]  # metres per CRS unit
    ax.add_artist(ScaleBar(metres, units="m", location="lower left", box_alpha=0.7, font_properties={"size": 8}))
    _north_arrow(ax)
    ax.text(0.99, 0.01, grid.crs.to_string(), transform=ax.transAxes, ha="right", va="bottom", fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})


def _extent(grid: Grid) -> tuple[float, float, float, float]:
    left, bottom, right, top = grid.bounds
    return left, right, bottom, top


def change_maps(run: Path, path: Path, *, dates: tuple[str | None, str | None] = (None, None), max_size: int = 1400,
                polygons: gpd.GeoDataFrame | None = None, legend_field: str | None = None) -> Path:
    """Before | after | changes over after, with legends, scale bars, north arrows, CRS and dates."""
    outputs = DetectOutputs(run)
    grid = small_grid(outputs.mask, max_size)
    extent = _extent(grid)
    aspect = grid.height / grid.width
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6 * aspect + 1.0), constrained_layout=True)
    backdrops = [run / name for name in BACKDROPS]
    images = [rgb(p, grid)[0] if p.is_file() else None for p in backdrops]
    for ax, image, label, date in zip(axes[:2], images, ("before", "after"), dates, strict=True):
        if image is not None:
            ax.imshow(image, extent=extent, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        decorate(ax, grid, f"{label}" + (f" ({date})" if date else ""))
    ax = axes[2]
    if images[1] is not None:
        ax.imshow(images[1], extent=extent, cmap="gray" if images[1].ndim == 2 else None, interpolation="nearest", alpha=0.6)
    mask = read_on(outputs.mask, grid, resampling=Resampling.mode)[0]
    overlay = np.ma.masked_where(~(mask == 1), np.ones_like(mask))
    ax.imshow(overlay, extent=extent, cmap=matplotlib.colors.ListedColormap(["#e31a1c"]), interpolation="nearest", alpha=0.8)
    handles = [Patch(facecolor="#e31a1c", label="change")]
    frame = polygons if polygons is not None else gpd.read_file(outputs.polygons, layer=outputs.layer)
    if legend_field and legend_field in frame.columns and not frame.empty:
        top = frame.groupby(legend_field)["area_ha"].sum().sort_values(ascending=False).index[:6]
        colours = plt.get_cmap("tab10").colors
        handles = []
        for value, colour in zip(top, colours, strict=False):
            frame[frame[legend_field] == value].boundary.plot(ax=ax, color=colour, linewidth=0.9)
            handles.append(Patch(facecolor="none", edgecolor=colour, label=str(value)))
    elif not frame.empty:
        frame.boundary.plot(ax=ax, color="#800026", linewidth=0.5)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.85)
    decorate(ax, grid, f"changes ({len(frame)} polygons)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def damage_map(run: Path, path: Path, *, date: str | None = None, max_size: int = 1400) -> Path:
    """Buildings coloured by damage grade over the post-event image, with legend, scale bar, north arrow, CRS."""
    from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS

    outputs = DamageOutputs(run)
    grid = small_grid(outputs.damage, max_size)
    extent = _extent(grid)
    fig, ax = plt.subplots(figsize=(9, 9 * grid.height / grid.width + 0.6), constrained_layout=True)
    if (run / BACKDROPS[1]).is_file():
        image = rgb(run / BACKDROPS[1], grid)[0]
        ax.imshow(image, extent=extent, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    buildings = gpd.read_file(outputs.buildings, layer=outputs.layer)
    counts = buildings["damage_grade"].value_counts()
    for grade, colour in GRADE_COLOURS.items():
        part = buildings[buildings["damage_grade"] == grade]
        if not part.empty:
            part.plot(ax=ax, facecolor=colour, edgecolor="black", linewidth=0.3, alpha=0.85)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=f"{GRADE_LABELS[g]} ({int(counts.get(g, 0))})")
                       for g, c in GRADE_COLOURS.items()], loc="upper left", fontsize=8, framealpha=0.85)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    decorate(ax, grid, "damage per building" + (f" (post-event image {date})" if date else ""))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def raster_map(raster: Path, path: Path, *, title: str, label: str, cmap: str = "magma", max_size: int = 1000) -> Path:
    """A continuous raster (score, uncertainty) with a colour bar, scale bar, north arrow and CRS."""
    grid = small_grid(raster, max_size)
    values = read_on(raster, grid)[0]
    finite = values[np.isfinite(values)]
    high = float(np.percentile(finite, 99)) if finite.size else 1.0
    fig, ax = plt.subplots(figsize=(8, 8 * grid.height / grid.width + 0.6), constrained_layout=True)
    shown = ax.imshow(np.ma.masked_invalid(values), extent=_extent(grid), cmap=cmap, vmin=0, vmax=high, interpolation="nearest")
    fig.colorbar(shown, ax=ax, label=label, shrink=0.8)
    decorate(ax, grid, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def histogram_figure(record: dict[str, Any], path: Path) -> Path | None:
    """The scene's score histogram (log counts) with the threshold and its rule."""
    hist = record.get("score_histogram") or {}
    if not hist.get("counts"):
        return None
    edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
    threshold = record["threshold"]["value"]
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0")
    ax.set_yscale("log")
    ax.axvline(threshold, color="#c44e52", linewidth=1.5, label=f"threshold {threshold:.3g} ({record['threshold']['rule']})")
    ax.set_xlim(edges[0], float(np.percentile(np.repeat(edges[:-1], np.minimum(counts, 10_000)), 99.9)) if counts.sum() else None)
    ax.set_xlabel(record.get("method", {}).get("score_units", "change score"))
    ax.set_ylabel("pixels")
    ax.legend(fontsize=8)
    ax.set_title("change score over the scene")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def coregistration_figure(record: dict[str, Any], grid: dict[str, Any], path: Path) -> Path | None:
    """The shift measured in each block (arrows, magnified) and the global shift."""
    report = record.get("coregistration")
    if not report or not report.get("blocks"):
        return None
    blocks = report["blocks"]
    rows, cols = np.array([b["row"] for b in blocks]), np.array([b["col"] for b in blocks])
    dx, dy = np.array([b["dx"] for b in blocks]), np.array([b["dy"] for b in blocks])
    used = np.array([b["used"] for b in blocks])
    fig, ax = plt.subplots(figsize=(6.5, 6.5 * grid["height"] / grid["width"] + 0.8), constrained_layout=True)
    scale = max(1e-6, np.percentile(np.hypot(dx, dy), 90)) / (0.08 * max(grid["width"], grid["height"]))
    for mask, colour, label in ((used, "#2ca02c", "agrees (used)"), (~used, "#d62728", "left out")):
        if mask.any():
            ax.quiver(cols[mask], rows[mask], dx[mask], -dy[mask], color=colour, angles="xy", scale_units="xy",
                      scale=scale, width=0.004, label=f"{label}: {int(mask.sum())} blocks")
    ax.set_xlim(0, grid["width"])
    ax.set_ylim(grid["height"], 0)
    ax.set_aspect("equal")
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    state = "corrected" if report.get("corrected") else "measured, not corrected"
    ax.set_title(f"residual shift dx {report['dx']:+.2f} px, dy {report['dy']:+.2f} px "
                 f"({math.hypot(report['dx_m'], report['dy_m']):.2f} m), {state}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_figure(labels: list[str], values: list[float], path: Path, *, xlabel: str, title: str) -> Path | None:
    """Horizontal bars, largest on top (areas per transition, buildings per grade)."""
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.4), constrained_layout=True)
    ax.barh(range(len(labels))[::-1], values, color="#4c72b0")
    ax.set_yticks(range(len(labels))[::-1], labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def agreement_figure(rows: list[dict[str, str]], path: Path, *, key: str = "zone", title: str) -> Path | None:
    """Stacked bars of change area per zone (or transition): only ours, only the current method, both."""
    rows = [r for r in rows if r.get(key) != "all"][:15] if any(r.get(key) != "all" for r in rows) else rows[:15]
    if not rows:
        return None
    labels = [r[key] if key in r else f"{r['from_class']} -> {r['to_class']}" for r in rows]
    parts = [("only_ours_ha", "#d7191c", "only ours"), ("both_ha", "#7b3294", "both"), ("only_current_ha", "#2c7bb6", "only the current method")]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.6), constrained_layout=True)
    left = np.zeros(len(rows))
    for field, colour, label in parts:
        values = np.array([float(r[field]) for r in rows])
        ax.barh(range(len(rows))[::-1], values, left=left, color=colour, label=label)
        left += values
    ax.set_yticks(range(len(rows))[::-1], labels, fontsize=8)
    ax.set_xlabel("change area (ha)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
