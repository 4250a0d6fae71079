"""Map and chart figures of a run's report, each drawn from the run's own outputs at reduced resolution.

Every map figure is laid out the same way, for the screen and for an A4 page:

- 16 inches at 100 dpi: a 1 600 px PNG, shown at the report's full width (about 1 100 CSS px on screen,
  the page's 186 mm on paper), so a map is read at twice the resolution it is shown at; height at most
  13 inches, so that a figure with its caption fits on one A4 page whatever the scene's shape;
- the map panels on the left, a side column on the right with the legend (each entry drawn as the map
  draws it: fill, edge and opacity), a location inset, the CRS and the image credit;
- on each panel a scale bar and a north arrow on white boxes with a halo, readable on dark imagery
  as on light, and coordinate ticks in the map's CRS (metres with thousands separators; the EPSG code
  in the side column). The arrow points to grid north: in the projected CRSs deltacd works in (UTM,
  Lambert-93) grid north is within a degree or two of true north over a scene;
- the location inset draws the scene's footprint in longitude / latitude, on a graticule, with the
  country outlines of Natural Earth's 1:110 million map when the installed ``pyogrio`` ships them (its
  test fixture ``naturalearth_lowres``); deltacd has no basemap and no network, so without them the
  inset is only the footprint on a lon/lat graticule: it says where the scene lies, not what is around it;
- the image credit the sensor asks for (:func:`credit_of`): ``© CNES <year>, Distribution Airbus DS``
  for Pléiades, ``© Airbus DS <year>`` for Pléiades Neo and SPOT 6/7, ``contains modified Copernicus
  Sentinel data <year>`` for Sentinel-2; none when the sensor is unknown (the study's ``credit`` key
  gives one).

Rasters are read at most ``max_size`` pixels wide (from their overviews when they have them: COGs
do), so a 40 000 px scene draws as fast as a crop. PNGs are written with zlib level 1: encoding was
most of the report's time at the default level 6, for files about a third larger.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
from matplotlib_scalebar.scalebar import ScaleBar  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.vrt import WarpedVRT  # noqa: E402

from deltacd.io.grid import Grid  # noqa: E402
from deltacd.outputs.layout import BACKDROPS, DamageOutputs, DetectOutputs  # noqa: E402
from deltacd.outputs.quicklook import stretch  # noqa: E402
from deltacd.report.words import Words, map_text  # noqa: E402

#: Width of every map figure (inches) and its resolution: a 1 600 px PNG (module notes). 12 inches at 133 dpi
#: rather than 16 at 100: the same pixels, with text a third larger against the map (a 10 pt legend is 12 px on
#: screen at the report's width, 6 pt on paper).
FIG_WIDTH = 12.0
DPI = 133
#: Tallest map figure (inches): with its caption it fits an A4 page at the page's width.
MAX_HEIGHT = 9.8
#: Width of the side column (legend, inset, CRS, credit), inches.
SIDE = 3.1
#: PNG encoding: zlib level 1 (module notes).
PNG = {"pil_kwargs": {"compress_level": 1}}


@dataclass(frozen=True)
class MapStyle:
    """What every map of one report shares: its language and the image credit."""

    language: str = "en"
    credit: str | None = None

    def t(self, text: str, **values: Any) -> str:
        return map_text(text, self.language, **values)

    @property
    def words(self) -> Words:
        return Words(self.language)


_DEFAULT = MapStyle()


def _save(fig, path: Path, dpi: int = DPI) -> Path:
    """The figure drawn once and written as an RGB PNG (no alpha channel: a quarter fewer bytes to compress)."""
    from PIL import Image

    fig.set_dpi(dpi)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    Image.fromarray(pixels).save(path, format="png", dpi=(dpi, dpi), **PNG["pil_kwargs"])
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# sensor and credit
# --------------------------------------------------------------------------------------------

#: Sensors known from their product's file names: (pattern, sensor, credit with {year}: English, French).
SENSORS = (
    (r"(^|[_/])(DIM|IMG|RPC)_PNEO|PNEO\d", "Pléiades Neo", ("© Airbus DS {year}", "© Airbus DS {year}")),
    (r"(^|[_/])(DIM|IMG|RPC)_PHR|PHR1[AB]|PLEIADES|PLÉIADES", "Pléiades",
     ("© CNES {year}, Distribution Airbus DS", "© CNES {year}, Distribution Airbus DS")),
    (r"(^|[_/])(DIM|IMG|RPC)_SPOT|SPOT[67]", "SPOT 6/7", ("© Airbus DS {year}", "© Airbus DS {year}")),
    (r"(^|[_/])S2[ABC]_|_MSIL[12]|MSI_L1C|MSIL2A", "Sentinel-2",
     ("contains modified Copernicus Sentinel data {year}", "contient des données Copernicus Sentinel modifiées {year}")),
)


def sensor_of(record: dict[str, Any]) -> str | None:
    """The sensor of a run's images, from their file names (DIMAP product names, Sentinel-2 tile names), or None."""
    names = " ".join(str(f) for date in ("before", "after") for f in ((record.get("inputs") or {}).get(date) or {}).get("files", []))
    upper = names.upper()
    for pattern, sensor, _ in SENSORS:
        if re.search(pattern, upper):
            return sensor
    return None


def credit_of(record: dict[str, Any], dates: tuple[str | None, str | None] = (None, None), language: str = "en") -> str | None:
    """The credit line the images' sensor asks for (module notes), with the years of the dates when known."""
    sensor = sensor_of(record)
    if sensor is None:
        return None
    credit = next(c for _, s, c in SENSORS if s == sensor)[1 if language == "fr" else 0]
    years = sorted({m.group(0) for d in dates if d for m in [re.search(r"(19|20)\d\d", str(d))] if m})
    if not years:  # a Sentinel-2 or DIMAP file name carries its acquisition date
        names = " ".join(str(f) for date in ("before", "after") for f in record["inputs"][date].get("files", [])[:1])
        years = sorted({m[:4] for m in re.findall(r"(?:19|20)\d\d[01]\d[0-3]\d", names)})
    return credit.format(year=", ".join(years)).replace("  ", " ").replace(" ,", ",").strip()


def grade_label(grade: Any, language: str = "en") -> str:
    """A damage grade's name (code or English label) in ``language``."""
    from deltacd.outputs.grades import GRADE_LABELS

    try:
        label = GRADE_LABELS[int(grade)]
    except (TypeError, ValueError, KeyError):
        label = str(grade)
    return map_text(label, language)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

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
    """A backdrop (before.vrt / after.vrt) as a stretched image [h, w, 3] (or [h, w]) and its validity; the
    last few read are kept (several maps of a report share the after image on the same grid)."""
    key = (str(path), path.stat().st_mtime_ns if path.exists() else 0, grid.width, grid.height, tuple(grid.transform),
           str(grid.crs))
    if key not in _RGB_CACHE:
        if len(_RGB_CACHE) >= 4:
            _RGB_CACHE.pop(next(iter(_RGB_CACHE)))
        _RGB_CACHE[key] = _rgb(path, grid)
    return _RGB_CACHE[key]


_RGB_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _rgb(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    values = read_on(path, grid)
    valid = np.isfinite(values).all(axis=0)
    image, _, _ = stretch(np.nan_to_num(values), valid)
    return image, valid


# --------------------------------------------------------------------------------------------
# layout and decoration
# --------------------------------------------------------------------------------------------

_HALO = [patheffects.withStroke(linewidth=3, foreground="white")]


#: Margins of a map figure (inches): left (y tick labels), bottom (x tick labels), top (title), between panels.
_LEFT, _BOTTOM, _TOP, _GAP = 0.5, 0.4, 0.4, 0.45
#: The side column's parts (inches): the inset's height, the note's (CRS, credit) under it.
_INSET, _NOTE = 2.5, 0.55
#: Shortest map figure (inches): room in the side column for a legend, the inset and the note.
MIN_HEIGHT = 5.6


class _Side:
    """Where the side column's parts go, in figure fractions: legend, inset, note; ``x`` its left side (inches)."""

    def __init__(self, x: float, height: float):
        left, w = x / FIG_WIDTH, (SIDE - 0.2) / FIG_WIDTH
        self.note = (left, 0.1 / height, w, _NOTE / height)
        inset_bottom = 0.1 + _NOTE + 0.35  # room for the inset's tick labels
        self.inset = (left + 0.45 / FIG_WIDTH, inset_bottom / height, w - 0.5 / FIG_WIDTH, (_INSET - 0.5) / height)
        legend_bottom = (inset_bottom + _INSET) / height
        self.legend = (left, legend_bottom, w, 1 - 0.15 / height - legend_bottom)


def map_figure(panels: int, aspect: float):
    """A figure of ``panels`` maps side by side and the side column: (figure, map axes, side column's places).

    The axes are placed by hand, each the scene's shape (``aspect`` = height / width), the figure as tall as
    the maps need, at most :data:`MAX_HEIGHT` (a tall scene's maps are narrower, and the maps and the side
    column are centred together): a layout engine measured every tick label for the same result, and was
    most of the time of a map."""
    room = FIG_WIDTH - SIDE - _LEFT - _GAP * (panels - 1) - 0.3
    width = room / panels
    height = width * aspect
    if height > MAX_HEIGHT - _BOTTOM - _TOP:
        height = MAX_HEIGHT - _BOTTOM - _TOP
        width = height / aspect
    total = max(MIN_HEIGHT, height + _BOTTOM + _TOP)
    fig = plt.figure(figsize=(FIG_WIDTH, total))
    maps_width = panels * width + _GAP * (panels - 1)
    left = _LEFT + (room - panels * width) / 2  # the maps and the side column centred together
    bottom = _BOTTOM + (total - _BOTTOM - _TOP - height) / 2
    axes = [fig.add_axes(((left + i * (width + _GAP)) / FIG_WIDTH, bottom / total, width / FIG_WIDTH, height / total))
            for i in range(panels)]
    return fig, axes, _Side(left + maps_width + 0.3, total)


def _north_arrow(ax) -> None:
    """A north arrow (grid north) on a white box with a black outline: readable on any backdrop."""
    ax.annotate("N", xy=(0.94, 0.96), xytext=(0.94, 0.85), xycoords="axes fraction", ha="center", va="center",
                fontsize=12, fontweight="bold", path_effects=_HALO,
                arrowprops={"facecolor": "black", "edgecolor": "white", "linewidth": 1.2, "width": 5, "headwidth": 13,
                            "headlength": 10},
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "alpha": 0.9, "edgecolor": "0.2", "linewidth": 0.6})


def _coordinates(ax, grid: Grid, words: Words, *, left: bool = True) -> None:
    """Tick labels in the map's CRS: metres with thousands separators (degrees with 3 decimals when geographic)."""
    geographic = grid.crs is not None and grid.crs.is_geographic
    form = FuncFormatter(lambda v, _: words.number(v, 6) + "°" if geographic else words.integer(v))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(4))
        axis.set_major_formatter(form)
    ax.tick_params(labelsize=7.5, length=3, pad=2)
    ax.tick_params(axis="y", labelrotation=90)
    for label in ax.get_yticklabels():
        label.set_va("center")
    if not left:
        ax.tick_params(axis="y", labelleft=False)


def decorate(ax, grid: Grid, title: str, style: MapStyle = _DEFAULT, *, left: bool = True) -> None:
    """Title, coordinate ticks, scale bar (metres) and north arrow on a map axis (the CRS is in the side column)."""
    ax.set_title(title, fontsize=10.5)
    ax.set_xlabel("")  # geopandas labels the axes with the CRS's; the CRS is written in the side column
    ax.set_ylabel("")
    _coordinates(ax, grid, style.words, left=left)
    metres = grid.res_m / grid.res[0]  # metres per CRS unit
    ax.add_artist(ScaleBar(metres, units="m", location="lower left", box_color="white", box_alpha=0.9, color="black",
                           frameon=True, font_properties={"size": 9}, border_pad=0.5))
    _north_arrow(ax)


def _lonlat_footprint(grid: Grid) -> np.ndarray:
    """The scene's outline in lon/lat (its edges densified, so a rotated UTM box stays a true outline)."""
    from rasterio.warp import transform

    left, bottom, right, top = grid.bounds
    t = np.linspace(0, 1, 9)
    xs = np.concatenate([left + (right - left) * t, np.full(9, right), right - (right - left) * t, np.full(9, left)])
    ys = np.concatenate([np.full(9, bottom), bottom + (top - bottom) * t, np.full(9, top), top - (top - bottom) * t])
    lon, lat = transform(grid.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    return np.column_stack([lon, lat])


@functools.lru_cache(maxsize=1)
def _countries() -> gpd.GeoDataFrame | None:
    """Natural Earth's 1:110 million countries, when the installed pyogrio ships them (module notes)."""
    try:
        import pyogrio

        path = Path(pyogrio.__file__).parent / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp"
        return gpd.read_file(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - an optional backdrop: the inset goes on without it
        return None


@functools.lru_cache(maxsize=8)
def _land(west: float, south: float, east: float, north: float) -> gpd.GeoSeries | None:
    """The countries' outlines cut to the inset's box (cut once per box: every map of a report shares it)."""
    countries = _countries()
    if countries is None:
        return None
    import shapely

    near = countries.cx[west:east, south:north]
    return gpd.GeoSeries(shapely.clip_by_rect(near.geometry.values, west, south, east, north), crs=countries.crs)


def location_inset(ax, grid: Grid, style: MapStyle = _DEFAULT) -> None:
    """The scene's footprint in lon/lat on a graticule, 8° x 6° around it, with country outlines when available."""
    try:
        outline = _lonlat_footprint(grid)
    except Exception:  # noqa: BLE001 - a CRS without a transformation to WGS 84: no inset
        ax.set_axis_off()
        return
    lon, lat = outline[:, 0].mean(), outline[:, 1].mean()
    half_lon, half_lat = 4.0, 3.0
    land = _land(round(lon - half_lon, 3), round(lat - half_lat, 3), round(lon + half_lon, 3), round(lat + half_lat, 3))
    if land is not None:
        draw_polygons(ax, land.values, facecolor="#f2efe6", edgecolor="#888888", linewidth=0.5, zorder=0)
        ax.set_facecolor("#dbe9f6")  # sea
    ax.plot(outline[:, 0], outline[:, 1], color="#d7191c", linewidth=1.2)
    ax.plot([lon], [lat], marker="s", markersize=7, markerfacecolor="none", markeredgecolor="#d7191c", markeredgewidth=1.6)
    ax.set_xlim(lon - half_lon, lon + half_lon)
    ax.set_ylim(lat - half_lat, lat + half_lat)
    ax.set_aspect(1 / max(0.2, math.cos(math.radians(lat))))
    ax.xaxis.set_major_locator(MaxNLocator(3, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.grid(True, color="0.6", linewidth=0.4, linestyle=":")
    words = style.words
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{words.number(abs(v), 3)}°{'E' if v >= 0 else 'W'}"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{words.number(abs(v), 3)}°{'N' if v >= 0 else 'S'}"))
    ax.tick_params(labelsize=6.5)
    ax.set_title(style.t("Location (lon/lat, WGS 84)") + f"\n{words.number(abs(lat), 4)}°{'N' if lat >= 0 else 'S'} "
                 f"{words.number(abs(lon), 4)}°{'E' if lon >= 0 else 'W'}", fontsize=7.5)


def side_column(fig, side: _Side, grid: Grid, style: MapStyle, handles: list, *, title: str | None = None,
                columns: int = 1) -> None:
    """The side column: legend (``handles``), the location inset, the CRS and the image credit."""
    if handles:
        legend_ax = fig.add_axes(side.legend)
        legend_ax.set_axis_off()
        for handle in handles:  # long labels wrapped to the column
            handle.set_label(_wrap(handle.get_label(), 34 if columns == 1 else 16))
        legend_ax.legend(handles=handles, loc="upper left", fontsize=9, title=title or style.t("Legend"), title_fontsize=10,
                         frameon=False, ncol=columns, alignment="left", borderaxespad=0, labelspacing=0.4)
    inset = fig.add_axes(side.inset)
    location_inset(inset, grid, style)
    note = fig.add_axes(side.note)
    note.set_axis_off()
    crs = grid.crs.to_string() if grid.crs is not None else "?"
    geographic = grid.crs is not None and grid.crs.is_geographic
    text = style.t("coordinates in degrees, {crs}" if geographic else "coordinates in metres, {crs}", crs=crs)
    if style.credit:
        text += "\n" + _wrap(style.t("Images: {credit}", credit=style.credit), 42)
    note.text(0, 1, text, ha="left", va="top", fontsize=7.5, transform=note.transAxes)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _extent(grid: Grid) -> tuple[float, float, float, float]:
    left, bottom, right, top = grid.bounds
    return left, right, bottom, top


def _show(ax, image: np.ndarray, extent, *, alpha: float = 1.0) -> None:
    ax.imshow(image, extent=extent, cmap="gray" if image.ndim == 2 else None, interpolation="nearest", alpha=alpha)


def _paths(geometries) -> list:
    """Matplotlib paths of (multi)polygons, holes included: one per polygon part."""
    import shapely
    from matplotlib.path import Path as MplPath

    paths = []
    for geometry in shapely.get_parts(np.asarray(geometries, dtype=object)):
        if geometry is None or geometry.is_empty or geometry.geom_type != "Polygon":
            continue
        rings = [np.asarray(geometry.exterior.coords)[:, :2]] + [np.asarray(r.coords)[:, :2] for r in geometry.interiors]
        paths.append(MplPath.make_compound_path(*[MplPath(r, closed=True) for r in rings]))
    return paths


def draw_polygons(ax, geometries, *, facecolor="none", edgecolor="none", linewidth: float = 0.0, alpha: float | None = None,
                  zorder: float = 2) -> None:
    """Polygons as one collection. Decision: not GeoSeries.plot, which redraws the whole figure after each call
    (``plt.draw``): a map of five layers was drawn five times over."""
    from matplotlib.collections import PathCollection

    paths = _paths(geometries)
    if not paths:
        return
    collection = PathCollection(paths, facecolors=facecolor, edgecolors=edgecolor, linewidths=linewidth, alpha=alpha,
                                zorder=zorder)
    collection.set_transform(ax.transData)
    ax.add_collection(collection, autolim=False)


def draw_outlines(ax, geometries, *, color, linewidth: float, zorder: float = 2) -> None:
    """Polygon outlines (every ring) as one line collection."""
    import shapely
    from matplotlib.collections import LineCollection

    rings = shapely.get_rings(shapely.get_parts(np.asarray(geometries, dtype=object)))
    segments = [shapely.get_coordinates(r) for r in rings if r is not None]
    if segments:
        ax.add_collection(LineCollection(segments, colors=color, linewidths=linewidth, zorder=zorder), autolim=False)


# --------------------------------------------------------------------------------------------
# maps of a detect or damage run
# --------------------------------------------------------------------------------------------

#: The change mask's fill and the change polygons' outline, as drawn and as the legend shows them.
CHANGE_FILL, CHANGE_EDGE, CHANGE_ALPHA = "#e31a1c", "#67000d", 0.55


def change_maps(run: Path, path: Path, *, dates: tuple[str | None, str | None] = (None, None), max_size: int = 1400,
                polygons: gpd.GeoDataFrame | None = None, legend_field: str | None = None,
                style: MapStyle = _DEFAULT) -> Path:
    """The changes over the after image (a full-width map), and before | after beside each other in a second
    file (``<name>_images.png``, returned as :func:`images_path`), each with legend, inset, coordinates and credit."""
    outputs = DetectOutputs(run)
    grid = small_grid(outputs.mask, max_size)
    extent = _extent(grid)
    aspect = grid.height / grid.width
    backdrops = [run / name for name in BACKDROPS]
    images = [rgb(p, grid)[0] if p.is_file() else None for p in backdrops]
    # the changes
    fig, (ax,), side = map_figure(1, aspect)
    if images[1] is not None:
        _show(ax, images[1], extent)
    mask = read_on(outputs.mask, grid, resampling=Resampling.mode)[0]
    overlay = np.ma.masked_where(~(mask == 1), np.ones_like(mask))
    ax.imshow(overlay, extent=extent, cmap=matplotlib.colors.ListedColormap([CHANGE_FILL]), interpolation="nearest",
              alpha=CHANGE_ALPHA)
    frame = polygons if polygons is not None else gpd.read_file(outputs.polygons, layer=outputs.layer)
    handles: list = []
    if legend_field and legend_field in frame.columns and not frame.empty:
        top = frame.groupby(legend_field)["area_ha"].sum().sort_values(ascending=False).index[:6]
        colours = plt.get_cmap("tab10").colors
        for value, colour in zip(top, colours, strict=False):
            draw_outlines(ax, frame[frame[legend_field] == value].to_crs(grid.crs).geometry.values, color=colour, linewidth=0.9)
            handles.append(Patch(facecolor="none", edgecolor=colour, linewidth=0.9, label=str(value)))
    else:
        if not frame.empty:
            draw_outlines(ax, frame.to_crs(grid.crs).geometry.values, color=CHANGE_EDGE, linewidth=0.6)
        handles.append(Patch(facecolor=matplotlib.colors.to_rgba(CHANGE_FILL, CHANGE_ALPHA), edgecolor=CHANGE_EDGE,
                             linewidth=0.6, label=style.t("change")))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    when = f" ({dates[0]} → {dates[1]})" if all(dates) else ""
    decorate(ax, grid, style.t("changes ({n} polygons)", n=style.words.integer(len(frame))) + when, style)
    side_column(fig, side, grid, style, handles)
    _save(fig, path)
    # before | after
    if any(image is not None for image in images):
        fig, axes, side = map_figure(2, aspect)
        for i, (ax, image, label, date) in enumerate(zip(axes, images, ("before", "after"), dates, strict=True)):
            if image is not None:
                _show(ax, image, extent)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            decorate(ax, grid, style.t(label) + (f" ({date})" if date else ""), style, left=i == 0)
        side_column(fig, side, grid, style, [])
        _save(fig, images_path(path))
    return path


def images_path(path: Path) -> Path:
    """Where :func:`change_maps` writes the before | after figure beside the changes map ``path``."""
    return path.with_name(f"{path.stem}_images.png")


def damage_map(run: Path, path: Path, *, date: str | None = None, max_size: int = 1400, style: MapStyle = _DEFAULT) -> Path:
    """Buildings coloured by damage grade over the post-event image, with legend, scale bar, north arrow, inset."""
    from deltacd.outputs.grades import GRADE_COLOURS

    outputs = DamageOutputs(run)
    grid = small_grid(outputs.damage, max_size)
    extent = _extent(grid)
    fig, (ax,), side = map_figure(1, grid.height / grid.width)
    if (run / BACKDROPS[1]).is_file():
        _show(ax, rgb(run / BACKDROPS[1], grid)[0], extent)
    buildings = gpd.read_file(outputs.buildings, layer=outputs.layer)
    counts = buildings["damage_grade"].value_counts()
    for grade, colour in GRADE_COLOURS.items():
        part = buildings[buildings["damage_grade"] == grade]
        if not part.empty:
            draw_polygons(ax, part.to_crs(grid.crs).geometry.values, facecolor=matplotlib.colors.to_rgba(colour, 0.85),
                          edgecolor="black", linewidth=0.4)
    handles = [Patch(facecolor=matplotlib.colors.to_rgba(c, 0.85), edgecolor="black", linewidth=0.4,
                     label=f"{grade_label(g, style.language)} ({style.words.integer(counts.get(g, 0))})")
               for g, c in GRADE_COLOURS.items() if counts.get(g, 0)]
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    decorate(ax, grid, style.t("damage per building") + (f" ({style.t('post-event image {date}', date=date)})" if date else ""),
             style)
    side_column(fig, side, grid, style, handles)
    return _save(fig, path)


def raster_map(raster: Path, path: Path, *, title: str, label: str, cmap: str = "magma", max_size: int = 1000,
               style: MapStyle = _DEFAULT) -> Path:
    """A continuous raster (score, uncertainty) with a colour bar, scale bar, north arrow, inset."""
    grid = small_grid(raster, max_size)
    values = read_on(raster, grid)[0]
    finite = values[np.isfinite(values)]
    high = float(np.percentile(finite, 99)) if finite.size else 1.0
    fig, (ax,), side = map_figure(1, grid.height / grid.width)
    shown = ax.imshow(np.ma.masked_invalid(values), extent=_extent(grid), cmap=cmap, vmin=0, vmax=high, interpolation="nearest")
    words = style.words
    fig.colorbar(shown, ax=ax, label=label, shrink=0.8, format=FuncFormatter(lambda v, _: words.number(v)))
    decorate(ax, grid, title, style)
    side_column(fig, side, grid, style, [])
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# charts
# --------------------------------------------------------------------------------------------

def histogram_figure(record: dict[str, Any], path: Path, language: str = "en") -> Path | None:
    """The scene's score histogram (log counts) with the threshold and its rule."""
    hist = record.get("score_histogram") or {}
    if not hist.get("counts"):
        return None
    edges, counts = np.asarray(hist["edges"], dtype=float), np.asarray(hist["counts"], dtype=float)
    threshold = record["threshold"]["value"]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.15, top=0.9)  # fixed: a layout engine measures every log tick
    ax.stairs(counts, edges, fill=True, color="#4c72b0")
    ax.set_yscale("log")
    # plain labels (1, 100, 10 000): matplotlib's 10^k labels go through its mathtext parser, half this chart's time
    words = Words(language)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: words.integer(v) if v >= 1 else words.number(v)))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.axvline(threshold, color="#c44e52", linewidth=1.5, label=map_text("threshold {value} ({rule})", language,
                                                                           value=words.number(threshold),
                                                                           rule=record["threshold"]["rule"]))
    if counts.sum():  # from the first score with pixels to the 99.9th percentile (from the cumulative counts)
        cumulative = np.cumsum(counts) / counts.sum()
        right = float(edges[min(len(edges) - 1, int(np.searchsorted(cumulative, 0.999)) + 1)])
        left = float(edges[int(np.argmax(counts > 0))])
        ax.set_xlim(min(left, threshold), max(right, threshold * 1.05 if threshold > 0 else right))
    ax.set_xlabel(record.get("method", {}).get("score_units", "change score"))
    ax.set_ylabel(map_text("pixels", language))
    ax.legend(fontsize=9)
    ax.set_title(map_text("change score over the scene", language))
    return _save(fig, path)


def coregistration_figure(record: dict[str, Any], grid: dict[str, Any], path: Path, language: str = "en") -> Path | None:
    """The shift measured in each block (arrows, magnified) and the global shift."""
    report = record.get("coregistration")
    if not report or not report.get("blocks"):
        return None
    blocks = report["blocks"]
    rows, cols = np.array([b["row"] for b in blocks]), np.array([b["col"] for b in blocks])
    dx, dy = np.array([b["dx"] for b in blocks]), np.array([b["dy"] for b in blocks])
    used = np.array([b["used"] for b in blocks])
    aspect = grid["height"] / grid["width"]
    fig, ax = plt.subplots(figsize=(6.5, min(6.5, 6.5 * aspect + 0.8)), layout="constrained")
    scale = max(1e-6, np.percentile(np.hypot(dx, dy), 90)) / (0.08 * max(grid["width"], grid["height"]))
    for mask, colour, label in ((used, "#2ca02c", "agrees (used)"), (~used, "#d62728", "left out")):
        if mask.any():
            ax.quiver(cols[mask], rows[mask], dx[mask], -dy[mask], color=colour, angles="xy", scale_units="xy",
                      scale=scale, width=0.004, label=map_text("{label}: {n} blocks", language,
                                                               label=map_text(label, language), n=int(mask.sum())))
    ax.set_xlim(0, grid["width"])
    ax.set_ylim(grid["height"], 0)
    ax.set_aspect("equal")
    ax.set_xlabel(map_text("column (px)", language))
    ax.set_ylabel(map_text("row (px)", language))
    state = map_text("corrected" if report.get("corrected") else "measured, not corrected", language)
    words = Words(language)
    ax.set_title(map_text("residual shift dx {dx} px, dy {dy} px ({m} m), {state}", language, dx=words.number(report["dx"], 2),
                          dy=words.number(report["dy"], 2), m=words.number(math.hypot(report["dx_m"], report["dy_m"]), 3),
                          state=state), fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def bar_figure(labels: list[str], values: list[float], path: Path, *, xlabel: str, title: str) -> Path | None:
    """Horizontal bars, largest on top (areas per transition, buildings per grade)."""
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(labels) + 1.4), layout="constrained")
    ax.barh(range(len(labels))[::-1], values, color="#4c72b0")
    ax.set_yticks(range(len(labels))[::-1], labels, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def agreement_figure(rows: list[dict[str, str]], path: Path, *, key: str = "zone", title: str, language: str = "en") -> Path | None:
    """Stacked bars of change area per zone (or transition): only ours, only the current method, both."""
    rows = [r for r in rows if r.get(key) != "all"][:15] if any(r.get(key) != "all" for r in rows) else rows[:15]
    if not rows:
        return None
    labels = [r[key] if key in r else f"{r['from_class']} -> {r['to_class']}" for r in rows]
    parts = [("only_ours_ha", "#d7191c", "only deltacd"), ("both_ha", "#7b3294", "both"),
             ("only_current_ha", "#2c7bb6", "only the current method")]
    fig, ax = plt.subplots(figsize=(9, 0.36 * len(rows) + 1.6), layout="constrained")
    left = np.zeros(len(rows))
    for field, colour, label in parts:
        values = np.array([float(r[field]) for r in rows])
        ax.barh(range(len(rows))[::-1], values, left=left, color=colour, label=map_text(label, language))
        left += values
    ax.set_yticks(range(len(rows))[::-1], labels, fontsize=9)
    ax.set_xlabel(map_text("change area (ha)", language))
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


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
#: Opacity of the backdrop under class layers (the layers themselves are opaque).
BACKDROP_ALPHA = 0.55


def _ha(value: float, words: Words | None = None) -> str:
    return f"{(words or Words('en')).ha(value)} ha"


def _categories(ax, values: np.ndarray, colours: list[str], extent, *, alpha: float = 1.0) -> None:
    """A class raster (indices into ``colours``, -1 nothing) drawn with those colours."""
    if not (values >= 0).any():
        return
    cmap = matplotlib.colors.ListedColormap(colours)
    ax.imshow(np.ma.masked_less(values, 0), cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5, extent=extent,
              interpolation="nearest", alpha=alpha)


def _raster_handles(entries: list[tuple[str, str]], *, alpha: float = 1.0) -> list:
    """Legend entries of a class raster, as it is drawn: a fill of the class's colour, no outline."""
    return [Patch(facecolor=matplotlib.colors.to_rgba(colour, alpha), edgecolor="none", label=label)
            for label, colour in entries]


def _burn(frame: gpd.GeoDataFrame, values: np.ndarray, grid: Grid) -> np.ndarray:
    """Polygons burnt into ``grid`` (all touched, so that small ones stay visible): their value, -1 elsewhere.
    Later rows win where polygons overlap."""
    from rasterio.features import rasterize

    if frame.empty:
        return np.full((grid.height, grid.width), -1, dtype=np.int32)
    shapes = zip(frame.to_crs(grid.crs).geometry.values, (np.asarray(values) + 1).tolist(), strict=True)
    return rasterize(shapes, out_shape=(grid.height, grid.width), transform=grid.transform, fill=0, all_touched=True,
                     dtype="int32") - 1


def _backdrop(ax, image: np.ndarray | None, extent, *, alpha: float = BACKDROP_ALPHA) -> None:
    """The after image, faded, under a map's layers (nothing when the run has no backdrop)."""
    if image is not None:
        _show(ax, image, extent, alpha=alpha)


def _after_image(run: Path | None, grid: Grid) -> np.ndarray | None:
    if run is None or not (run / BACKDROPS[1]).is_file():
        return None
    return rgb(run / BACKDROPS[1], grid)[0]


def _frame(ax, grid: Grid, extent) -> None:
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_facecolor("white")


def landcover_maps(overview: Path, path: Path, *, dates: tuple[str | None, str | None] = (None, None),
                   style: MapStyle = _DEFAULT) -> Path:
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
    fig, axes, side = map_figure(2, grid.height / grid.width)
    for i, (ax, band, label, date) in enumerate(zip(axes, values, ("before", "after"), dates, strict=True)):
        _categories(ax, band, colours, extent)
        _frame(ax, grid, extent)
        decorate(ax, grid, style.t("land cover {label}", label=style.t(label)) + (f" ({date})" if date else ""), style,
                 left=i == 0)
    counts = np.bincount(values[values >= 0].ravel(), minlength=len(names))
    total = max(1, int(counts.sum()))
    entries = [(f"{names[c]} ({style.words.percent(counts[c] / total)})", colours[c]) for c in present]
    side_column(fig, side, grid, style, _raster_handles(entries), columns=1 if len(entries) <= 12 else 2)
    return _save(fig, path)


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
                    max_size: int = 1400, style: MapStyle = _DEFAULT) -> Path | None:
    """The current method's changes by transition (``path``); with a detect step also deltacd's changes by kind
    (``<name>_ours.png``) and where the two agree (``<name>_agreement.png``), each a full-width map on the
    same grid. Returns ``path``; :func:`comparison_paths` lists the files written."""
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
    aspect = grid.height / grid.width
    words = style.words
    image = _after_image(detect, grid)
    # the current method: its change polygons, by transition
    pcc = gpd.read_file(pcc_path, layer="changes")
    fig, (ax,), side = map_figure(1, aspect)
    _backdrop(ax, image, extent)
    areas = pcc.groupby("transition")["area_ha"].sum().sort_values(ascending=False)
    top = list(areas.index[:MAX_TRANSITION_COLOURS])
    colours = palette_of(len(top)) + [OTHER_COLOUR]
    index = np.array([top.index(t) if t in top else len(top) for t in pcc["transition"]], dtype=np.int32)
    order = np.argsort(-pcc["area_ha"].to_numpy(), kind="stable")  # small polygons last: drawn on top
    _categories(ax, _burn(pcc.iloc[order], index[order], grid), colours, extent)
    entries = [(f"{t} ({_ha(areas[t], words)})", colours[i]) for i, t in enumerate(top)]
    if len(areas) > len(top):
        entries.append((style.t("{n} other transitions ({area})", n=len(areas) - len(top),
                                area=_ha(float(areas.iloc[len(top):].sum()), words)), OTHER_COLOUR))
    _frame(ax, grid, extent)
    decorate(ax, grid, style.t("current method: post-classification changes ({n} polygons)", n=words.integer(len(pcc))), style)
    side_column(fig, side, grid, style, _raster_handles(entries))
    _save(fig, path)
    if detect is None or not ours_path.is_file():
        return path
    ours = gpd.read_file(ours_path, layer="changes")
    fig, (ax,), side = map_figure(1, aspect)
    _backdrop(ax, image, extent)
    keys = list(KIND_COLOURS)
    codes = np.array([keys.index((k, bool(c))) if (k, bool(c)) in KIND_COLOURS else 0
                      for k, c in zip(ours["change_kind"], ours["counts_as_change"], strict=True)], dtype=np.int32)
    _categories(ax, _burn(ours, codes, grid), [c for c, _ in KIND_COLOURS.values()], extent)
    entries = []
    for code, (colour, label) in enumerate(KIND_COLOURS.values()):
        part = ours[codes == code]
        if len(part):
            entries.append((style.t("{label}: {n} polygons, {area}", label=style.t(label), n=words.integer(len(part)),
                                    area=_ha(float(part["area_ha"].sum()), words)), colour))
    _frame(ax, grid, extent)
    decorate(ax, grid, style.t("deltacd: changes ({n} polygons)", n=words.integer(len(ours)))
             + (f", {dates[0]} → {dates[1]}" if all(dates) else ""), style)
    side_column(fig, side, grid, style, _raster_handles(entries))
    _save(fig, comparison_paths(path)[1])
    fig, (ax,), side = map_figure(1, aspect)
    _backdrop(ax, image, extent)
    entries = []
    if agreement_path.is_file():
        codes = read_on(agreement_path, grid, resampling=Resampling.mode)[0]
        shown = np.where(np.isin(codes, list(AGREEMENT_SHOWN)), codes - 1, -1).astype(np.int32)
        _categories(ax, shown, [c for c, _ in AGREEMENT_SHOWN.values()], extent)
        summary = _agreement_areas(compare)
        for code, (colour, label) in AGREEMENT_SHOWN.items():
            area = summary.get(code)
            entries.append((style.t(label) + (f" ({_ha(area, words)})" if area is not None else ""), colour))
    _frame(ax, grid, extent)
    decorate(ax, grid, style.t("agreement of the changes"), style)
    side_column(fig, side, grid, style, _raster_handles(entries))
    _save(fig, comparison_paths(path)[2])
    return path


def comparison_paths(path: Path) -> tuple[Path, Path, Path]:
    """The files :func:`comparison_maps` writes: the current method's, deltacd's by kind, the agreement."""
    return path, path.with_name(f"{path.stem}_ours.png"), path.with_name(f"{path.stem}_agreement.png")


def _agreement_areas(compare: Path) -> dict[int, float]:
    """Hectares of agreement codes 1-3 from ``post-classification/compare.json``."""
    import json

    try:
        summary = json.loads((compare / "post-classification" / "compare.json").read_text())["agreement"]
    except (OSError, ValueError, KeyError):
        return {}
    return {v["code"]: float(v["area_ha"]) for v in summary.values() if v.get("code") in AGREEMENT_SHOWN}


#: Outline of the buildings drawn as polygons (and of their legend entries).
BUILDING_EDGE, BUILDING_EDGE_WIDTH = "black", 0.4


def _draw_buildings(ax, frame: gpd.GeoDataFrame, values: np.ndarray, colours: list[str], grid: Grid, extent) -> bool:
    """Buildings filled by category (``values`` index ``colours``): as polygons with outlines when few, burnt
    into the panel's pixels when many (a commune's tens of thousands). True when drawn with outlines."""
    if frame.empty:
        return True
    if len(frame) <= MAX_DRAWN_POLYGONS:
        for value in np.unique(values):
            draw_polygons(ax, frame[values == value].geometry.values, facecolor=colours[int(value)],
                          edgecolor=BUILDING_EDGE, linewidth=BUILDING_EDGE_WIDTH)
        return True
    _categories(ax, _burn(frame, values, grid), colours, extent)
    return False


def _building_handles(entries: list[tuple[str, str]], outlined: bool) -> list:
    if not outlined:
        return _raster_handles(entries)
    return [Patch(facecolor=colour, edgecolor=BUILDING_EDGE, linewidth=BUILDING_EDGE_WIDTH, label=label)
            for label, colour in entries]


def damage_comparison_map(run: Path, evaluation: Path, path: Path, *, date: str | None = None, max_size: int = 1400,
                          style: MapStyle = _DEFAULT) -> Path | None:
    """The reference study's grade and ours side by side (``path``), and their agreement per building
    (``<name>_agreement.png``), over the post-event image, with legends counting the buildings."""
    from deltacd.outputs.grades import GRADE_COLOURS

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

    words = style.words
    grades = list(GRADE_COLOURS)
    grade_colours = [GRADE_COLOURS[g] for g in grades]
    aspect = grid.height / grid.width
    image = _after_image(run, grid)
    fig, axes, side = map_figure(2, aspect)
    panels = [("reference study's grade ({n} buildings)", layer[layer["source"] == "reference"], "reference_grade"),
              ("deltacd's grade ({n} buildings)", layer[layer["in_ours"].astype(bool)], "our_grade")]
    totals = np.zeros(len(grades), dtype=int)
    outlined = True
    for i, (ax, (title, part, field)) in enumerate(zip(axes, panels, strict=True)):
        _backdrop(ax, image, extent, alpha=0.8)
        index = np.array([grades.index(int(g)) for g in part[field]], dtype=np.int32)
        outlined &= _draw_buildings(ax, part, index, grade_colours, grid, extent)
        totals += np.bincount(index, minlength=len(grades))
        _frame(ax, grid, extent)
        decorate(ax, grid, style.t(title, n=words.integer(len(part))), style, left=i == 0)
    side_column(fig, side, grid, style, _building_handles(
        [(grade_label(g, style.language), GRADE_COLOURS[g]) for i, g in enumerate(grades) if totals[i]], outlined))
    _save(fig, path)
    fig, (ax,), side = map_figure(1, aspect)
    _backdrop(ax, image, extent, alpha=0.8)
    codes = sorted(AGREEMENT_COLOURS)
    index = np.array([codes.index(int(a)) for a in layer["agreement"]], dtype=np.int32)
    outlined = _draw_buildings(ax, layer, index, [AGREEMENT_COLOURS[c] for c in codes], grid, extent)
    counts = np.bincount(index, minlength=len(codes))
    _frame(ax, grid, extent)
    decorate(ax, grid, style.t("agreement per building") + (f" ({style.t('post-event image {date}', date=date)})" if date else ""),
             style)
    side_column(fig, side, grid, style, _building_handles(
        [(f"{style.t(AGREEMENT[c])} ({words.integer(counts[i])})", AGREEMENT_COLOURS[c]) for i, c in enumerate(codes)
         if counts[i]], outlined))
    _save(fig, path.with_name(f"{path.stem}_agreement.png"))
    return path
