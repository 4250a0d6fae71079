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


# --------------------------------------------------------------------------------------------
# land cover, the current method's changes, ours, and their agreement; damage against a reference
# --------------------------------------------------------------------------------------------

#: Buildings drawn as polygons up to this many per panel; beyond, burnt into the panel's pixels.
MAX_DRAWN_POLYGONS = 5000
#: Transitions given their own colour on the maps (the largest by area); the others share one.
MAX_TRANSITION_COLOURS = 12
OTHER_COLOUR = "#636363"
#: Colours of our change polygons by kind (study compare step, ``change_kind``, ``counts_as_change``).
KIND_COLOURS = {("transition", True): ("#d7191c", "transition"),
                ("within class", True): ("#fdae61", "within a class, counted as change"),
                ("within class", False): ("#ffd92f", "within a class (counted apart)"),
                ("unknown", False): ("#969696", "outside the land-cover maps")}
#: Agreement of our changes with the current method's (codes of ``post-classification/agreement.tif``).
AGREEMENT_SHOWN = {1: ("#d7301f", "only deltacd"), 2: ("#2b8cbe", "only the current method"), 3: ("#7a0177", "both")}


def _ha(value: float) -> str:
    return f"{value:,.2f} ha" if value < 100 else f"{value:,.0f} ha"


def _categories(ax, values: np.ndarray, colours: list[str], extent, *, alpha: float = 1.0) -> None:
    """A class raster (indices into ``colours``, -1 nothing) drawn with those colours."""
    if not (values >= 0).any():
        return
    cmap = matplotlib.colors.ListedColormap(colours)
    ax.imshow(np.ma.masked_less(values, 0), cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5, extent=extent,
              interpolation="nearest", alpha=alpha)


def _legend_below(ax, entries: list[tuple[str, str]], *, alpha: float = 1.0, edge: str = "0.4", columns: int = 1) -> None:
    """A legend under the map, one filled patch per entry drawn as the map draws it (same colour and opacity)."""
    if not entries:
        return
    handles = [Patch(facecolor=colour, edgecolor=edge, alpha=alpha, label=label) for label, colour in entries]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=columns, fontsize=8, frameon=False)


def _burn(frame: gpd.GeoDataFrame, values: np.ndarray, grid: Grid) -> np.ndarray:
    """Polygons burnt into ``grid`` (all touched, so that small ones stay visible): their value, -1 elsewhere.
    Later rows win where polygons overlap."""
    from rasterio.features import rasterize

    if frame.empty:
        return np.full((grid.height, grid.width), -1, dtype=np.int32)
    shapes = zip(frame.to_crs(grid.crs).geometry.values, (np.asarray(values) + 1).tolist(), strict=True)
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform, fill=0, all_touched=True,
                     dtype="int32") - 1


def _backdrop(ax, run: Path | None, grid: Grid, extent, *, alpha: float = 0.55) -> None:
    """The after image of a run, faded, under a map's layers (nothing when the run has no backdrop)."""
    if run is None or not (run / BACKDROPS[1]).is_file():
        return
    image = rgb(run / BACKDROPS[1], grid)[0]
    ax.imshow(image, extent=extent, cmap="gray" if image.ndim == 2 else None, interpolation="nearest", alpha=alpha)


def _frame(ax, grid: Grid, extent) -> None:
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_facecolor("white")


def landcover_maps(overview: Path, path: Path, *, dates: tuple[str | None, str | None] = (None, None)) -> Path:
    """The land-cover map of each date (the compare step's ``landcover_overview.tif``), one colour per class."""
    import json

    with rasterio.open(overview) as src:
        grid = Grid.of(src)
        values = src.read().astype(np.int32)
        names = json.loads(src.tags().get("classes", "[]"))
    values[values == 255] = -1
    colours = landcover_colours(names)
    extent = _extent(grid)
    present = sorted({int(v) for v in np.unique(values) if v >= 0})
    aspect = grid.height / grid.width
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.6 * aspect + 0.6 + 0.18 * len(present)), constrained_layout=True)
    for ax, band, label, date in zip(axes, values, ("before", "after"), dates, strict=True):
        _categories(ax, band, colours, extent)
        _frame(ax, grid, extent)
        decorate(ax, grid, f"land cover {label}" + (f" ({date})" if date else ""))
    shares = [(values == c).sum() / max(1, (values >= 0).sum()) for c in present]
    entries = [(f"{names[c]} ({share:.1%})", colours[c]) for c, share in zip(present, shares, strict=True)]
    fig.legend(handles=[Patch(facecolor=c, edgecolor="0.4", label=t) for t, c in entries], loc="outside lower center",
               ncol=min(5, max(1, len(entries))), fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def palette_of(n: int) -> list[str]:
    from deltacd.report.figures import palette

    return palette(n)


#: Usual land-cover colours, by a word in the class name (first match wins; French and English names).
LANDCOVER_HINTS = (
    (("no-label", "no label", "unknown", "nodata", "non class"), "#f0f0f0"),
    (("piscine", "pool"), "#9ecae1"),
    (("eau", "water", "mer", "sea"), "#2171b5"),
    (("bati", "bâti", "built", "building", "construction"), "#d7301f"),
    (("imperm", "route", "road", "bitume", "asphalt"), "#737373"),
    (("permeable", "perméable"), "#bcbddc"),
    (("conif",), "#00441b"),
    (("feuillus", "forest", "forêt", "foret", "tree", "arbre"), "#238b45"),
    (("vegetation", "végétation", "vegetal", "végétal"), "#41ab5d"),
    (("brouss", "shrub", "ligneux", "herba", "grass", "prairie"), "#a1d99b"),
    (("coupe", "clear"), "#8c6d31"),
    (("vigne", "vine"), "#ae017e"),
    (("culture", "crop", "agri"), "#fed976"),
    (("labour", "plough", "tilled"), "#e6ab02"),
    (("sol", "bare", "minera", "nu", "sand", "sable"), "#d9b38c"),
)


def landcover_colours(names: list[str]) -> list[str]:
    """A colour per land-cover class: the usual one when its name says what it is (:data:`LANDCOVER_HINTS`),
    else one of :func:`deltacd.report.figures.palette` not given to another class."""
    chosen: list[str | None] = []
    for name in names:
        words = name.lower()
        chosen.append(next((colour for keys, colour in LANDCOVER_HINTS if any(k in words for k in keys)), None))
    spare = [c for c in palette_of(len(names) + len(LANDCOVER_HINTS)) if c not in chosen]
    return [c if c is not None else spare.pop(0) for c in chosen]


def comparison_maps(compare: Path, path: Path, *, detect: Path | None = None, dates: tuple[str | None, str | None] = (None, None),
                    max_size: int = 1400) -> Path | None:
    """The current method's changes by transition, ours by kind (a transition, a change within a class), and
    where the two agree (only deltacd, only the current method, both), side by side on one grid."""
    pcc_path, ours_path = compare / "post_classification_changes.gpkg", compare / "changes_fromto.gpkg"
    agreement_path = compare / "post-classification" / "agreement.tif"
    if not pcc_path.is_file():
        return None
    if detect is not None and DetectOutputs(detect).mask.is_file():
        grid = small_grid(DetectOutputs(detect).mask, max_size)
    else:
        grid = small_grid(compare / "landcover_overview.tif", max_size)
        detect = None
    extent = _extent(grid)
    panels = 3 if detect is not None and ours_path.is_file() else 1
    aspect = grid.height / grid.width
    width = 5.8 if panels > 1 else 9.0  # inches per panel
    fig, axes = plt.subplots(1, panels, figsize=(width * panels + 0.4, width * aspect + 1.8), constrained_layout=True,
                             squeeze=False)
    axes = axes[0]
    # the current method: its change polygons, by transition
    pcc = gpd.read_file(pcc_path, layer="changes")
    ax = axes[0]
    _backdrop(ax, detect, grid, extent)
    areas = pcc.groupby("transition")["area_ha"].sum().sort_values(ascending=False)
    top = list(areas.index[:MAX_TRANSITION_COLOURS])
    colours = palette_of(len(top)) + [OTHER_COLOUR]
    index = np.array([top.index(t) if t in top else len(top) for t in pcc["transition"]], dtype=np.int32)
    order = np.argsort(-pcc["area_ha"].to_numpy(), kind="stable")  # small polygons last: drawn on top
    _categories(ax, _burn(pcc.iloc[order], index[order], grid), colours, extent)
    entries = [(f"{t} ({_ha(areas[t])})", colours[i]) for i, t in enumerate(top)]
    if len(areas) > len(top):
        entries.append((f"{len(areas) - len(top)} other transitions ({_ha(float(areas.iloc[len(top):].sum()))})", OTHER_COLOUR))
    _frame(ax, grid, extent)
    _legend_below(ax, entries, columns=1 if panels > 1 else 2)
    decorate(ax, grid, f"current method: post-classification changes ({len(pcc):,} polygons)")
    if panels > 1:
        ours = gpd.read_file(ours_path, layer="changes")
        ax = axes[1]
        _backdrop(ax, detect, grid, extent)
        keys = list(KIND_COLOURS)
        codes = np.array([keys.index((k, bool(c))) if (k, bool(c)) in KIND_COLOURS else 0
                          for k, c in zip(ours["change_kind"], ours["counts_as_change"], strict=True)], dtype=np.int32)
        _categories(ax, _burn(ours, codes, grid), [c for c, _ in KIND_COLOURS.values()], extent)
        entries = []
        for code, (colour, label) in enumerate(KIND_COLOURS.values()):
            part = ours[codes == code]
            if len(part):
                entries.append((f"{label}: {len(part):,} polygons, {_ha(float(part['area_ha'].sum()))}", colour))
        _frame(ax, grid, extent)
        _legend_below(ax, entries)
        decorate(ax, grid, f"deltacd: changes ({len(ours):,} polygons)" + (f", {dates[0]} to {dates[1]}" if all(dates) else ""))
        ax = axes[2]
        _backdrop(ax, detect, grid, extent)
        entries = []
        if agreement_path.is_file():
            codes = read_on(agreement_path, grid, resampling=Resampling.mode)[0]
            shown = np.where(np.isin(codes, list(AGREEMENT_SHOWN)), codes - 1, -1).astype(np.int32)
            _categories(ax, shown, [c for c, _ in AGREEMENT_SHOWN.values()], extent)
            summary = _agreement_areas(compare)
            for code, (colour, label) in AGREEMENT_SHOWN.items():
                area = summary.get(code)
                entries.append((label + (f" ({_ha(area)})" if area is not None else ""), colour))
        _frame(ax, grid, extent)
        _legend_below(ax, entries)
        decorate(ax, grid, "agreement of the changes")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _agreement_areas(compare: Path) -> dict[int, float]:
    """Hectares of agreement codes 1-3 from ``post-classification/compare.json``."""
    import json

    try:
        summary = json.loads((compare / "post-classification" / "compare.json").read_text())["agreement"]
    except (OSError, ValueError, KeyError):
        return {}
    return {v["code"]: float(v["area_ha"]) for v in summary.values() if v.get("code") in AGREEMENT_SHOWN}


def _draw_buildings(ax, frame: gpd.GeoDataFrame, values: np.ndarray, colours: list[str], grid: Grid, extent) -> None:
    """Buildings filled by category (``values`` index ``colours``): as polygons with outlines when few, burnt
    into the panel's pixels when many (a commune's tens of thousands)."""
    if frame.empty:
        return
    if len(frame) <= MAX_DRAWN_POLYGONS:
        for value in np.unique(values):
            frame[values == value].plot(ax=ax, facecolor=colours[int(value)], edgecolor="black", linewidth=0.3)
    else:
        _categories(ax, _burn(frame, values, grid), colours, extent)


def damage_comparison_map(run: Path, evaluation: Path, path: Path, *, date: str | None = None, max_size: int = 1400) -> Path | None:
    """The reference study's grade, ours and their agreement per building (evaluate-damage's ``agreement.gpkg``),
    over the post-event image, with legends counting the buildings."""
    from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS

    layer_path = evaluation / "agreement.gpkg"
    if not layer_path.is_file():
        return None
    layer = gpd.read_file(layer_path, layer="agreement")
    raster = DamageOutputs(run).damage
    grid = small_grid(raster, max_size) if raster.is_file() else Grid.from_bounds(layer.crs, tuple(layer.total_bounds),
                                                                                 max(np.ptp(layer.total_bounds[::2]),
                                                                                     np.ptp(layer.total_bounds[1::2])) / max_size)
    layer = layer.to_crs(grid.crs)
    extent = _extent(grid)
    from deltacd.report.figures import DAMAGE_AGREEMENT as AGREEMENT
    from deltacd.report.figures import DAMAGE_AGREEMENT_COLOURS as AGREEMENT_COLOURS

    grades = list(GRADE_COLOURS)
    grade_colours = [GRADE_COLOURS[g] for g in grades]
    aspect = grid.height / grid.width
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6 * aspect + 1.3), constrained_layout=True)
    panels = [("reference study's grade", layer[layer["source"] == "reference"], "reference_grade"),
              ("deltacd's grade", layer[layer["in_ours"].astype(bool)], "our_grade")]
    for ax, (title, part, field) in zip(axes[:2], panels, strict=True):
        _backdrop(ax, run, grid, extent, alpha=0.8)
        index = np.array([grades.index(int(g)) for g in part[field]], dtype=np.int32)
        _draw_buildings(ax, part, index, grade_colours, grid, extent)
        counts = np.bincount(index, minlength=len(grades))
        _frame(ax, grid, extent)
        _legend_below(ax, [(f"{GRADE_LABELS[g]} ({counts[i]:,})", GRADE_COLOURS[g]) for i, g in enumerate(grades) if counts[i]],
                      columns=3)
        decorate(ax, grid, f"{title} ({len(part):,} buildings)")
    ax = axes[2]
    _backdrop(ax, run, grid, extent, alpha=0.8)
    codes = sorted(AGREEMENT_COLOURS)
    index = np.array([codes.index(int(a)) for a in layer["agreement"]], dtype=np.int32)
    _draw_buildings(ax, layer, index, [AGREEMENT_COLOURS[c] for c in codes], grid, extent)
    counts = np.bincount(index, minlength=len(codes))
    _frame(ax, grid, extent)
    _legend_below(ax, [(f"{AGREEMENT[c]} ({counts[i]:,})", AGREEMENT_COLOURS[c]) for i, c in enumerate(codes) if counts[i]],
                  columns=2)
    decorate(ax, grid, "agreement per building" + (f" (post-event image {date})" if date else ""))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
