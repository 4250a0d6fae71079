"""``webmap/index.html``: an interactive map of a run or study that opens offline, in any browser.

Leaflet 1.9 (BSD-2-Clause, from the npm registry, bundled into the package at build time:
``make webmap-assets``) is copied beside the page with ``webmap.js`` / ``webmap.css`` (the page's own
code, in the package beside Leaflet), so nothing is fetched from a CDN or a tile server. The page's
content is ``data.js``: the images' bounds (the images are overviews in Web Mercator, the map's CRS, so
Leaflet places them exactly), and the vector layers: GeoJSON geometries in WGS84 with their attributes
in columns (a third of the size of GeoJSON features; ``webmap.js`` makes the features).

What it shows (each layer in the layer control, each colour in the legend):

- the two images (before, after), with a fade slider and a swipe: a divider dragged across the map
  shows the before image on its left and the after image on its right (the after image's pane is
  clipped with CSS ``clip``);
- the study's zones (``inputs.zones``, named by ``inputs.zone_field``) and AOI as outlines, the zones'
  names written on the map (up to ``PERMANENT_NAMES`` zones; more would hide the map), in a pane above
  the polygons so they are never covered; only a zone's outline takes clicks (its name), so that a click
  inside reaches the polygons below;
- land-cover studies: the land cover of each date (the compare step's ``landcover_overview.tif``, the
  report figures' colours), the current method's changes (``post_classification_changes.gpkg``) and
  deltacd's (``changes_fromto.gpkg``, or the detect run's polygons), both coloured by transition with
  one palette (the same transition has the same colour in both layers; the current method's largest
  transitions get the report figure's colours), and their agreement (both / only deltacd / only the
  current method: ``post-classification/agreement.gpkg``);
- damage: the buildings by deltacd's grade, the reference grade (a layer, and in every building's
  popup, joined by building id from ``evaluate-damage/agreement.gpkg``) and the agreement of grades
  (the colours of ``agreement.qml``, as QGIS shows them); the building id in every popup;
- the uncertainty of a network (when the run has it).

A study with a compare step only (no imagery: the IGN example) gets a map too, its land cover as the
backdrop (:func:`deltacd.report.html.write_report` decides whether to ask for one).

Decisions:

- **Readable popups.** Each field has a label with its unit (:data:`FIELDS`), in English or French
  (``lang``; the page's ``<html lang>`` and number format follow it); the GeoPackage column name
  follows in small grey type, so the analyst finds it in QGIS's attribute table. deltacd's own values
  (grades, agreement, kinds of change) are translated; the study's class names are the user's own.
- **Every transition coloured** (:func:`palette`: tab10, tab20's light shades, then golden-angle hues,
  as many as asked); the legend lists every entry, scrolls when long, and shows the sections of the
  layers on the map only.
- **Geometry by zoom level.** Polygons are sent exact: only collinear vertices are removed (a
  tolerance of ``EXACT_TOLERANCE`` pixel), so a 10 m pixel polygon keeps every corner when zoomed in
  (the former simplification at one pixel made 3-pixel polygons triangles); Leaflet simplifies each
  polygon at every zoom level to ``smoothFactor`` screen pixels (Douglas-Peucker on the projected
  points), so a zoomed-out map draws few vertices. Coordinates keep the digits of a tenth of a pixel.
  A layer keeps its ``MAX_FEATURES`` largest features (the GeoPackages keep everything); a layer of
  more than ``CANVAS_FROM`` features is drawn on a canvas (one element, not one SVG path each) so the
  page stays responsive; smaller ones are SVG paths (crisp, and testable).
- **Fast.** The web map was half (coast) to four fifths (hurricane) of the report step, and PNG
  encoding 80 % of the web map (7 s of 9 s on the coast example, 19 s of 23 s on the hurricane one,
  cProfile). Now the images are no larger
  than the scene (the 602 px Sentinel-2 scene was drawn at 2 048 px: 11 times the pixels, nothing
  more to see; the browser enlarges it, class maps pixelated), sampled rather than averaged at the
  scene's resolution, stretched from a sample of their pixels, and written as JPEG where they cover
  their whole grid (25 times faster to encode than PNG, 4 times smaller), else PNG at zlib level 1
  without ``optimize``; class maps are palette PNGs. The web map takes 0.5-1 s on the examples
  (9 s and 23 s before).

``review=True`` adds the review mode that ``deltacd review`` serves (:mod:`deltacd.review.server`):
``review.js`` and ``review.css`` beside the page; the page then asks every file with its own query
string (the server's token). ``review.js`` uses the globals ``map``, ``layersControl`` and
``overlays`` of ``webmap.js``.
"""

from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from deltacd.errors import InputError
from deltacd.io.grid import Grid
from deltacd.outputs.layout import DamageOutputs, DetectOutputs
from deltacd.outputs.quicklook import stretch
from deltacd.report import maps
from deltacd.report.words import LANGUAGES, WEBMAP

MAX_FEATURES = 20_000
#: Layers of more features than this are drawn on a canvas rather than as SVG paths.
CANVAS_FROM = 5_000
#: Zones named on the map (permanent labels) up to this many.
PERMANENT_NAMES = 60
#: Simplification tolerance sent to the browser, in pixels of the run: removes collinear vertices only.
EXACT_TOLERANCE = 0.05
#: Leaflet's own simplification at each zoom level, in screen pixels.
SMOOTH_FACTOR = 1.0
#: zlib level of the PNG images (1: fastest; 6 made files 10-15 % smaller at 4-6 times the time).
PNG_LEVEL = 1
#: JPEG quality of the images that cover their whole grid.
JPEG_QUALITY = 90
MERCATOR = CRS.from_epsg(3857)
WGS84 = CRS.from_epsg(4326)

#: Popup label (English, French) and format of each field the layers show.
FIELDS: dict[str, tuple[str, str, str]] = {
    "name": ("Name", "Nom", "text"),
    "change_id": ("Change no.", "N° du changement", "text"),
    "transition": ("Transition", "Transition", "text"),
    "from_class": ("Class before", "Classe avant", "text"),
    "to_class": ("Class after", "Classe après", "text"),
    "from_share": ("Share of the polygon in the class before", "Part du polygone dans la classe avant", "pct"),
    "to_share": ("Share of the polygon in the class after", "Part du polygone dans la classe après", "pct"),
    "change_kind": ("Kind of change", "Nature du changement", "text"),
    "counts_as_change": ("Counted as a change", "Compté comme changement", "bool"),
    "meaning": ("Agreement with the current method", "Accord avec la méthode actuelle", "text"),
    "zone": ("Zone", "Zone", "text"),
    "area_ha": ("Area (ha)", "Surface (ha)", "num2"),
    "area_m2": ("Area (m²)", "Surface (m²)", "int"),
    "pixels": ("Pixels", "Pixels", "int"),
    "mean_score": ("Mean change score", "Score de changement moyen", "num2"),
    "max_score": ("Highest change score", "Score de changement maximal", "num2"),
    "building_id": ("Building id", "Identifiant du bâtiment", "text"),
    "damage_label": ("Damage grade (deltacd)", "Degré de dommage (deltacd)", "text"),
    "our_label": ("Damage grade (deltacd)", "Degré de dommage (deltacd)", "text"),
    "reference_label": ("Reference grade", "Degré de dommage de référence", "text"),
    "agreement_label": ("Agreement of grades", "Accord des degrés", "text"),
    "reference_id": ("Building id in the reference", "Identifiant dans la référence", "text"),
    "in_ours": ("Graded by deltacd", "Évalué par deltacd", "bool"),
    "p_no_damage": ("Probability: no damage", "Probabilité : aucun dommage", "pct"),
    "p_minor": ("Probability: minor", "Probabilité : léger", "pct"),
    "p_major": ("Probability: major", "Probabilité : important", "pct"),
    "p_destroyed": ("Probability: destroyed", "Probabilité : détruit", "pct"),
    "changed_share": ("Changed share of the footprint", "Part changée de l'emprise", "pct"),
    "ring_changed_share": ("Changed share around the building", "Part changée autour du bâtiment", "pct"),
    "valid_share": ("Share of valid pixels", "Part de pixels valides", "pct"),
    "change_score": ("Change score (mean)", "Score de changement (moyen)", "num2"),
    "change_score_p90": ("Change score (90th percentile)", "Score de changement (90e centile)", "num2"),
    "ring_change_score": ("Change score around the building", "Score de changement autour du bâtiment", "num2"),
}

#: deltacd's own values shown in French (grades, agreement, kinds of change); the study's class names stay.
VALUES_FR = {"no damage": "aucun dommage", "minor": "léger", "major": "important", "destroyed": "détruit",
             "unclassified": "non classé", "same grade": "même degré", "ours more severe": "deltacd plus sévère",
             "ours less severe": "deltacd moins sévère", "only ours": "deltacd seul", "only reference": "référence seule",
             "only deltacd": "deltacd seul", "only the current method": "méthode actuelle seule", "both": "les deux",
             "transition": "transition", "within class": "au sein d'une classe",
             "unknown": "hors des cartes d'occupation du sol"}

#: Colours of the agreement of grades (``evaluate-damage/agreement.qml``: the same as in QGIS).
GRADE_AGREEMENT = {0: ("#1a9641", "same grade"), 1: ("#d7191c", "ours more severe"), 2: ("#2c7bb6", "ours less severe"),
                   3: ("#fdae61", "only ours"), 4: ("#7b3294", "only reference"), 5: ("#bdbdbd", "unclassified")}
ZONE_COLOUR, AOI_COLOUR = "#ffffff", "#ffd400"

_PAGE = """<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="leaflet.css"><link rel="stylesheet" href="webmap.css">{head}</head>
<body><div id="map"></div>
<script src="leaflet.js"></script><script src="data.js"></script><script src="webmap.js" data-query="{query}"></script>{body}
</body></html>
"""


def palette(n: int) -> list[str]:
    """``n`` distinct colours for classes or transitions, however many (the report figures' palette:
    tab10, tab20's light shades without greys, then golden-angle hues)."""
    return maps.palette_of(n)


def web_grid(grid: Grid, max_size: int) -> Grid:
    """The Web Mercator grid of the map's images: ``grid``'s extent, ``max_size`` px on its longer side."""
    left, bottom, right, top = transform_bounds(grid.crs, MERCATOR, *grid.bounds, densify_pts=21)
    res = max(right - left, top - bottom) / max_size
    return Grid.from_bounds(MERCATOR, (left, bottom, right, top), res)


def latlng_bounds(grid: Grid) -> list[list[float]]:
    """``grid``'s extent as Leaflet's bounds: ``[[south, west], [north, east]]`` in WGS84."""
    west, south, east, north = transform_bounds(grid.crs, WGS84, *grid.bounds)
    return [[south, west], [north, east]]


# --- images ----------------------------------------------------------------------------------------

def _png(values: np.ndarray, valid: np.ndarray, path: Path) -> None:
    alpha = (valid * 255).astype(np.uint8)
    rgb = (np.clip(values, 0, 1) * 255).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(path, compress_level=PNG_LEVEL)


def _image(source: Path, grid: Grid, name: str, out: Path, *, native: bool) -> str | None:
    """An image (before / after) on ``grid``, stretched 2-98 %: JPEG where it covers the whole grid (a
    photograph: 25 times faster to encode than a PNG and 4 times smaller), else PNG with transparency
    outside it; returns its file name, None when it has nothing on ``grid``. ``native``: ``grid`` is about the
    scene's resolution, so it is sampled (nearest, 7 times faster); else averaged."""
    values = maps.read_on(source, grid, resampling=Resampling.nearest if native else Resampling.average)
    valid = np.isfinite(values).all(axis=0)
    if not valid.any():
        return None
    step = max(1, int(math.sqrt(valid.size / 250_000)))  # the limits from a quarter of a million pixels
    sample = values[:, ::step, ::step][:, valid[::step, ::step]]
    low, high = np.percentile(sample, 2, axis=1), np.percentile(sample, 98, axis=1)
    image, _, _ = stretch(np.nan_to_num(values), valid, low, high)
    if valid.all():
        rgb = (image * 255).astype(np.uint8)
        Image.fromarray(rgb, mode="RGB" if rgb.ndim == 3 else "L").save(out / f"{name}.jpg", quality=JPEG_QUALITY)
        return f"{name}.jpg"
    _png(image, valid, out / f"{name}.png")
    return f"{name}.png"


def _ramp_image(source: Path, grid: Grid, name: str, out: Path) -> None:
    import matplotlib

    values = maps.read_on(source, grid)[0]
    valid = np.isfinite(values)
    high = float(np.nanpercentile(values, 99)) if valid.any() else 1.0
    coloured = matplotlib.colormaps["inferno"](np.clip(np.nan_to_num(values) / max(high, 1e-9), 0, 1))[..., :3]
    _png(coloured, valid, out / f"{name}.png")


def _class_image(source: Path, band: int, grid: Grid, colours: list[str], path: Path) -> np.ndarray:
    """Band ``band`` of a class raster (index into ``colours``, NaN / 255 none) as a palette PNG; returns the
    classes present."""
    values = maps.read_on(source, grid, resampling=Resampling.nearest, band=band)[0]
    index = np.where(np.isfinite(values) & (values >= 0) & (values < len(colours)), values, 255).astype(np.uint8)
    rgb = [int(c[i:i + 2], 16) for c in colours for i in (1, 3, 5)]
    image = Image.fromarray(index, mode="P")
    image.putpalette(rgb + [0, 0, 0] * (256 - len(colours)))
    image.save(path, compress_level=PNG_LEVEL, transparency=255)
    return np.unique(index[index != 255])


# --- vector layers ---------------------------------------------------------------------------------

def _digits(res_m: float) -> int:
    """Decimals of WGS84 degrees that keep a tenth of a pixel of ``res_m`` metres."""
    return int(min(8, max(5, math.ceil(math.log10(111_000 / max(res_m / 10, 1e-3))))))


def _features(frame: gpd.GeoDataFrame, keep: list[str], tolerance: float, digits: int) -> tuple[str, int]:
    """``frame`` as JSON text (its ``keep`` columns, and GeoJSON geometries), at most ``MAX_FEATURES`` (the
    largest), exact but for collinear vertices (``tolerance``, in the frame's CRS); and how many it had."""
    total = len(frame)
    if total > MAX_FEATURES:
        order = np.argsort(-frame.geometry.area.to_numpy(), kind="stable")[:MAX_FEATURES]
        frame = frame.iloc[np.sort(order)]
    geometry = frame.geometry
    if tolerance > 0 and frame.crs is not None and frame.crs.is_projected:
        geometry = geometry.simplify(tolerance, preserve_topology=False)  # collinear vertices only: nothing moves
    geometry = gpd.GeoSeries(geometry, crs=frame.crs).to_crs(WGS84).values
    geometry = shapely.transform(np.asarray(geometry), lambda xy: np.round(xy, digits))
    texts = shapely.to_geojson(geometry)
    kept = np.asarray([t is not None for t in texts], dtype=bool)
    columns = {}
    for column in (c for c in keep if c in frame.columns):
        values = frame[column][kept]
        if values.dtype.kind == "f":
            values = values.round(4)
        columns[column] = values.astype(object).where(values.notna(), None).tolist()
    # columnar (webmap.js makes the features): a third of the size of GeoJSON features, and 4 times faster
    return ('{"columns":' + json.dumps(columns, separators=(",", ":"), ensure_ascii=False, default=str)
            + ',"geometries":[' + ",".join(t for t in texts if t is not None) + "]}"), total


def _read(path: Path, layer: str | None = None) -> gpd.GeoDataFrame | None:
    if not path.is_file():
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GeoPackage timestamps of QGIS's layer_styles
        frame = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    return frame if not frame.empty and frame.crs is not None else None


def _study_inputs(parts: dict[str, Any]) -> dict[str, Any]:
    """The study's inputs, or {} for a lone run: from the study file (``study.json``'s ``study_file``: during a
    run, ``study.json`` has no ``config`` yet), else from ``study.json``'s ``config``; paths resolved beside the
    study file; dates and zone field also from the steps' records."""
    study = parts.get("study") or {}
    inputs: dict[str, Any] = {}
    base = Path(study["study_file"]).parent if study.get("study_file") else None
    if study.get("study_file"):
        import yaml

        try:
            values = yaml.safe_load(Path(study["study_file"]).read_text(encoding="utf-8"))
            inputs = dict(values.get("inputs") or {}) if isinstance(values, dict) else {}
        except (OSError, ValueError, yaml.YAMLError):  # a moved or edited study file: the map goes on without it
            inputs = {}
    if not inputs:
        inputs = dict((study.get("config") or {}).get("inputs") or {})
    for record in (study.get("records") or {}).values():
        fields = ((record or {}).get("record") or {}).get("settings", {}).get("fields") or {}
        for key in ("date_before", "date_after", "zone_field"):
            if inputs.get(key) is None and fields.get(key) is not None:
                inputs[key] = fields[key]
    for key in ("zones", "aoi"):
        if inputs.get(key) and isinstance(inputs[key], str):
            path = Path(inputs[key]).expanduser()
            inputs[key] = str(path if path.is_absolute() or base is None else base / path)
    return inputs


class _Page:
    """The layers, images and legend of one page, in one language."""

    def __init__(self, lang: str, tolerance: float, digits: int):
        self.lang, self.tolerance, self.digits = lang, tolerance, digits
        self.text = WEBMAP[lang]
        self.layers: list[dict[str, Any]] = []
        self.legend: list[dict[str, Any]] = []
        self.features: list[str] = []

    def value(self, text: Any) -> Any:
        return VALUES_FR.get(text, text) if self.lang == "fr" and isinstance(text, str) else text

    def translate(self, frame: gpd.GeoDataFrame, *columns: str) -> None:
        for column in columns:
            if column in frame.columns and self.lang != "en":
                frame[column] = frame[column].map(self.value)

    def add(self, name: str, label: str, frame: gpd.GeoDataFrame, popup: list[str], *, field: str = "_none",
            colours: dict[str, str] | None = None, colour: str = "#999999", weight: float = 1.5, fill: float = 0.3,
            visible: bool = True, outline: str | None = None, names: str | None = None, pane: str | None = None,
            interactive: bool = True, dash: dict[str, Any] | None = None) -> None:
        keep = list(dict.fromkeys([*popup, field, *([dash["field"]] if dash else []), *([names] if names else [])]))
        text, total = _features(frame, keep, self.tolerance, self.digits)
        shown = min(total, MAX_FEATURES)
        if total > shown:
            label = f"{label} ({self.text['top'].format(n=f'{shown:,}', total=f'{total:,}')})"
        self.features.append(text)
        self.layers.append({"name": name, "label": label, "field": field, "colours": colours or {}, "colour": colour,
                            "weight": weight, "fill": fill, "visible": visible, "outline": outline, "names": names,
                            "pane": pane, "interactive": interactive, "dash": dash, "popup": popup,
                            "canvas": shown > CANVAS_FROM, "smooth": SMOOTH_FACTOR,
                            "features": f"@@FEATURES{len(self.features) - 1}@@"})

    def section(self, title: str, layers: list[str], entries: list[dict[str, Any]], note: str | None = None) -> None:
        if entries:
            self.legend.append({"title": title, "layers": layers, "entries": entries, "note": note})


def _dated(label: str, date: str) -> str:
    return f"{label} – {date}" if date else label


def _outlines(page: _Page, inputs: dict[str, Any]) -> list[Any]:
    """The zones and AOI of the study as outlines with their names; returns their bounds (WGS84) to show."""
    entries, bounds = [], []
    zones = inputs.get("zones") and _read(Path(inputs["zones"]))
    if zones is not None:
        field = inputs.get("zone_field")
        zones = zones.assign(name=zones[field].astype(str) if field in zones.columns else None)
        title = page.text["zones"] + (f" ({field})" if field else "")
        page.add("zones", title, zones, ["name"], colour=ZONE_COLOUR, weight=2, fill=0, names="name", pane="outlines")
        entries.append({"label": title, "colour": "#8c8c8c", "edge": ZONE_COLOUR})
    aoi = inputs.get("aoi") and _read(Path(inputs["aoi"]))
    if aoi is not None:
        page.add("aoi", page.text["aoi"], aoi, [], colour=AOI_COLOUR, weight=3, fill=0, pane="outlines", interactive=False)
        entries.append({"label": page.text["aoi"], "colour": "#8c8c8c", "edge": AOI_COLOUR})
        west, south, east, north = aoi.to_crs(WGS84).total_bounds
        bounds = [[float(south), float(west)], [float(north), float(east)]]
    page.section(page.text["outlines"], ["zones", "aoi"], entries)
    return bounds


def _landcover(page: _Page, parts: dict[str, Any], web: Grid, bounds: list[list[float]], out: Path, dates: list[str],
               backdrop: bool) -> list[dict[str, Any]]:
    """The land cover of each date, the current method's changes, ours, and their agreement; returns the images."""
    t = page.text
    compare = Path(parts["compare"]) if parts.get("compare") else None
    detect = Path(parts["detect"]) if parts.get("detect") else None
    images: list[dict[str, Any]] = []
    overview = compare / "landcover_overview.tif" if compare else None
    if overview is not None and overview.is_file():
        with rasterio.open(overview) as src:
            names = json.loads(src.tags().get("classes", "[]"))
        colours = maps.landcover_colours(names)
        present: set[int] = set()
        for band, key in ((1, "landcover_before"), (2, "landcover_after")):
            present |= {int(c) for c in _class_image(overview, band, web, colours, out / f"{key}.png")}
            date = dates[band - 1]
            images.append({"name": key, "label": _dated(t[key], date), "file": f"{key}.png",
                           "bounds": bounds, "visible": not backdrop and band == 2, "opacity": 0.85 if backdrop else 1.0,
                           "pane": "rasters", "pixelated": True})
        page.section(t["landcover"], ["landcover_before", "landcover_after"],
                     [{"label": names[c], "colour": colours[c]} for c in sorted(present)])
    pcc = _read(compare / "post_classification_changes.gpkg", "changes") if compare else None
    ours = _read(compare / "changes_fromto.gpkg", DetectOutputs.layer) if compare else None
    if ours is None and detect is not None:
        ours = _read(DetectOutputs(detect).polygons, DetectOutputs.layer)
    # one colour per transition in both layers: the current method's by area (its largest get the report
    # figure's colours), then ours not among them
    order: list[str] = []
    for frame in (pcc, ours):
        if frame is not None and "transition" in frame.columns:
            area = frame.geometry.area if "area_ha" not in frame.columns else frame["area_ha"]
            ranked = area.groupby(frame["transition"]).sum().sort_values(ascending=False, kind="stable").index
            order += [str(x) for x in ranked if str(x) not in order]
    colours = dict(zip(order, palette(len(order)), strict=True))
    transition_popup = ["transition", "from_class", "to_class", "area_ha", "zone"]
    if pcc is not None:
        page.add("pcc", t["pcc"], pcc, ["change_id", *transition_popup], field="transition", colours=colours,
                 weight=1.2, fill=0.35, visible=False)
    if ours is not None:
        if "transition" in ours.columns:
            page.translate(ours, "change_kind")
            dash = {"field": "counts_as_change", "value": False} if "counts_as_change" in ours.columns else None
            page.add("ours", t["ours"], ours, ["change_id", *transition_popup, "from_share", "to_share", "change_kind",
                                               "counts_as_change", "area_m2", "mean_score", "max_score"],
                     field="transition", colours=colours, weight=1.5, fill=0.3, dash=dash)
        else:
            page.add("ours", t["ours"], ours, ["change_id", "area_m2", "mean_score", "max_score"], colour="#e31a1c",
                     weight=1.5, fill=0.2)
            page.section(t["ours"], ["ours"], [{"label": t["changes"], "colour": "#e31a1c"}])
    if colours:
        within = ours is not None and "counts_as_change" in ours.columns and not ours["counts_as_change"].astype(bool).all()
        page.section(t["transitions"], ["pcc", "ours"], [{"label": k, "colour": c} for k, c in colours.items()],
                     note=t["within"] if within else None)
    agreement = _read(compare / "post-classification" / "agreement.gpkg", "agreement") if compare else None
    if agreement is not None:
        shown = {str(code): colour for code, (colour, _) in maps.AGREEMENT_SHOWN.items()}
        agreement["meaning"] = [page.value(maps.AGREEMENT_SHOWN.get(int(c), ("", str(c)))[1]) for c in agreement["agreement"]]
        if "area_m2" in agreement.columns:
            agreement["area_ha"] = agreement["area_m2"] / 10_000
        page.add("agreement", t["agreement"], agreement, ["meaning", "area_ha", "pixels"], field="agreement",
                 colours=shown, weight=0.8, fill=0.55, visible=False)
        page.section(t["agreement_title"], ["agreement"],
                     [{"label": page.value(label), "colour": colour} for colour, label in maps.AGREEMENT_SHOWN.values()])
    return images


def _damage(page: _Page, parts: dict[str, Any]) -> None:
    """Buildings by our grade (the reference grade and the agreement in each popup), by the reference grade, and
    the agreement of grades."""
    from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS

    t = page.text
    buildings = _read(DamageOutputs(Path(parts["damage"])).buildings, DamageOutputs.layer)
    evaluation = Path(parts["evaluate-damage"]) if parts.get("evaluate-damage") else None
    agreement = _read(evaluation / "agreement.gpkg", "agreement") if evaluation else None
    grade_colours = {str(g): c for g, c in GRADE_COLOURS.items()}
    joined = ["reference_label", "agreement_label", "zone"]
    if buildings is not None:
        if agreement is not None and "building_id" in buildings.columns and "building_id" in agreement.columns:
            extra = agreement[agreement.get("in_ours", True).astype(bool)] if "in_ours" in agreement.columns else agreement
            extra = extra.drop_duplicates("building_id").set_index("building_id")
            for column in joined:
                if column in extra.columns and column not in buildings.columns:
                    buildings[column] = buildings["building_id"].map(extra[column])
        page.translate(buildings, "damage_label", "reference_label", "agreement_label")
        popup = ["building_id", "damage_label", "reference_label", "agreement_label", "zone", "p_no_damage", "p_minor",
                 "p_major", "p_destroyed", "changed_share", "valid_share", "change_score", "change_score_p90", "area_m2"]
        page.add("buildings", t["ours_grade"], buildings, popup, field="damage_grade", colours=grade_colours,
                 colour="#9e9e9e", weight=1, fill=0.7, outline="#222222")
    if agreement is not None:
        page.translate(agreement, "our_label", "reference_label", "agreement_label")
        if "reference_id" in agreement.columns and "building_id" in agreement.columns:  # shown where it differs
            agreement["reference_id"] = agreement["reference_id"].where(agreement["reference_id"] != agreement["building_id"])
        popup = ["building_id", "reference_label", "our_label", "agreement_label", "zone", "reference_id"]
        if "reference_grade" in agreement.columns:
            page.add("reference", t["reference_grade"], agreement, popup, field="reference_grade", colours=grade_colours,
                     colour="#9e9e9e", weight=1, fill=0.7, outline="#222222", visible=False)
        page.add("grade_agreement", t["grade_agreement"], agreement, popup, field="agreement",
                 colours={str(k): c for k, (c, _) in GRADE_AGREEMENT.items()}, colour="#bdbdbd", weight=1, fill=0.7,
                 outline="#222222", visible=False)
        present = {int(v) for v in agreement["agreement"].dropna()} if "agreement" in agreement.columns else set()
        page.section(t["grade_agreement_title"], ["grade_agreement"],
                     [{"label": page.value(label), "colour": c} for k, (c, label) in GRADE_AGREEMENT.items() if k in present])
    page.section(t["grades"], ["buildings", "reference"],
                 [{"label": page.value(GRADE_LABELS[g]), "colour": c} for g, c in GRADE_COLOURS.items()])


def write_webmap(parts: dict[str, Any], out: Path, *, title: str, max_size: int = 2048, review: bool = False,
                 lang: str = "en") -> Path:
    """Write ``out/index.html``, ``out/data.js``, the images, ``webmap.js`` / ``webmap.css`` and Leaflet (module
    notes); returns the page's path. ``parts``: :func:`deltacd.report.html.find_parts` (the study's record and
    its steps' folders); ``max_size``: the images' longer side at most (never larger than the scene); ``lang``:
    ``"en"`` or ``"fr"``, the labels and number format of the page."""
    if lang not in LANGUAGES:
        raise InputError(f"lang {lang!r} is not a web map language; use one of {', '.join(LANGUAGES)}")
    out.mkdir(parents=True, exist_ok=True)
    assets = files("deltacd.report") / "webmap_assets"
    for name in ("leaflet.js", "leaflet.css", "LEAFLET-LICENSE", "webmap.js", "webmap.css",
                 *(("review.js", "review.css") if review else ())):
        (out / name).write_bytes((assets / name).read_bytes())
    (out / "images").mkdir(exist_ok=True)
    for image in (assets / "images").iterdir():
        (out / "images" / image.name).write_bytes(image.read_bytes())
    run = parts.get("detect") or parts.get("damage")
    run = Path(run) if run else None
    if run is not None:
        mask = DetectOutputs(run).mask
        reference = mask if mask.is_file() else DamageOutputs(run).damage
    elif parts.get("compare") and (Path(parts["compare"]) / "landcover_overview.tif").is_file():
        reference = Path(parts["compare"]) / "landcover_overview.tif"
    else:
        raise InputError("a web map needs a detect or damage run, or a compare step's land-cover maps")
    with rasterio.open(reference) as src:
        grid = Grid.of(src)
    web = web_grid(grid, min(max_size, max(grid.width, grid.height)))  # never larger than the scene (module notes)
    bounds = latlng_bounds(web)
    inputs = _study_inputs(parts)
    dates = [str(inputs.get("date_before") or ""), str(inputs.get("date_after") or "")]
    t = WEBMAP[lang]
    res_m = abs(grid.res[0]) if grid.crs.is_projected else abs(grid.res[0]) * 111_000
    page = _Page(lang, EXACT_TOLERANCE * abs(grid.res[0]), _digits(res_m))
    images: list[dict[str, Any]] = []
    native = max_size >= max(grid.width, grid.height)
    for name, pane in (("before", "before"), ("after", "after")):
        written = run is not None and (run / f"{name}.vrt").is_file() and _image(run / f"{name}.vrt", web, name, out, native=native)
        if written:
            date = dates[0 if name == "before" else 1]
            images.append({"name": name, "label": _dated(t[f"image_{name}"], date), "file": written,
                           "bounds": bounds, "visible": True, "opacity": 1.0, "pane": pane, "pixelated": False})
    if parts.get("compare") or parts.get("detect"):
        images += _landcover(page, parts, web, bounds, out, dates, backdrop=bool(images))
    if run is not None and DetectOutputs(run).uncertainty.is_file():
        _ramp_image(DetectOutputs(run).uncertainty, web, "uncertainty", out)
        images.append({"name": "uncertainty", "label": t["uncertainty"], "file": "uncertainty.png", "bounds": bounds,
                       "visible": False, "opacity": 0.7, "pane": "rasters", "pixelated": False})
    if parts.get("damage"):
        _damage(page, parts)
    aoi = _outlines(page, inputs)
    fit = bounds if not aoi else [[min(bounds[0][0], aoi[0][0]), min(bounds[0][1], aoi[0][1])],
                                  [max(bounds[1][0], aoi[1][0]), max(bounds[1][1], aoi[1][1])]]  # the scene and the AOI
    data = {"title": title, "lang": lang, "bounds": fit, "images": images, "layers": page.layers, "legend": page.legend,
            "fields": {k: {"label": v[0 if lang == "en" else 1], "format": v[2]} for k, v in FIELDS.items()},
            "text": {k: t[k] for k in ("before", "after", "swipe", "swipeHint", "yes", "no")},
            "permanentNames": PERMANENT_NAMES}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    for i, features in enumerate(page.features):
        text = text.replace(f'"@@FEATURES{i}@@"', features, 1)
    (out / "data.js").write_text("window.DELTACD = " + text + ";\n", encoding="utf-8")
    page_path = out / "index.html"
    extra = ({"head": '\n<link rel="stylesheet" href="review.css"><link rel="icon" href="data:,">',
              "body": '<script src="review.js"></script>', "query": "1"} if review
             else {"head": "", "body": "", "query": "0"})
    import html

    page_path.write_text(_PAGE.format(title=html.escape(title), lang=lang, **extra), encoding="utf-8")
    return page_path


__all__ = ["FIELDS", "MAX_FEATURES", "latlng_bounds", "palette", "web_grid", "write_webmap"]
