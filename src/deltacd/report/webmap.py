"""``webmap/index.html``: an interactive map of a run that opens offline, in any browser.

Leaflet 1.9 (BSD-2-Clause, from the npm registry, bundled into the package at build time:
``make webmap-assets``) is copied beside the page, so nothing is fetched from a CDN or a tile
server. The imagery is the run's own: the two backdrops (and the uncertainty of a network)
rendered as PNG overviews in Web Mercator, the map's CRS, so Leaflet places them exactly. Vector
layers (change polygons with their from/to classes, buildings by damage grade) are GeoJSON in
WGS84 inside ``data.js``, each feature with a popup of its attributes. A slider fades the
post-event image over the pre-event one; a layer control toggles every layer; a legend explains
the colours. Large layers keep their ``MAX_FEATURES`` largest features, simplified to the pixel
size, so the page stays responsive (the GeoPackages keep everything).

``review=True`` adds the review mode that ``deltacd review`` serves (:mod:`deltacd.review.server`):
``review.js`` and ``review.css`` beside the page; the page then asks every file with its own query
string (the server's token).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from deltacd.io.grid import Grid
from deltacd.outputs.layout import DamageOutputs, DetectOutputs
from deltacd.outputs.quicklook import stretch
from deltacd.report import maps

MAX_FEATURES = 20_000
MERCATOR = CRS.from_epsg(3857)
WGS84 = CRS.from_epsg(4326)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="leaflet.css">{head}
<style>html,body,#map{{height:100%;margin:0}}#map{{background:#d9d9d9}}
.legend,.fade{{background:rgba(255,255,255,.92);padding:6px 9px;border-radius:4px;font:12px/1.4 sans-serif}}
.legend i{{display:inline-block;width:12px;height:12px;margin-right:5px;border:1px solid #333;vertical-align:middle}}
.popup td{{padding:0 6px 0 0;font-size:12px}}</style></head>
<body><div id="map"></div>
<script src="leaflet.js"></script><script src="data.js"></script>
<script>
const D = window.DELTACD;
const map = L.map("map");
const overlays = {{}};
const images = {{}};
for (const image of D.images) {{
  images[image.name] = L.imageOverlay(image.file{query}, image.bounds, {{opacity: image.opacity}});
  overlays[image.label] = images[image.name];
  if (image.visible) images[image.name].addTo(map);
}}
function popup(properties) {{
  const rows = Object.entries(properties).map(([k, v]) => `<tr><td><b>${{k}}</b></td><td>${{v}}</td></tr>`).join("");
  return `<table class="popup">${{rows}}</table>`;
}}
for (const layer of D.layers) {{
  const geojson = L.geoJSON(layer.features, {{
    style: f => ({{color: layer.colours[f.properties[layer.field]] || layer.colour, weight: layer.weight,
                  fillColor: layer.colours[f.properties[layer.field]] || layer.colour, fillOpacity: layer.fill}}),
    onEachFeature: (f, l) => l.bindPopup(popup(f.properties)),
  }});
  overlays[layer.label] = geojson;
  geojson.addTo(map);
}}
const layersControl = L.control.layers(null, overlays, {{collapsed: false}}).addTo(map);
L.control.scale({{metric: true, imperial: false}}).addTo(map);
const legend = L.control({{position: "bottomright"}});
legend.onAdd = () => {{
  const div = L.DomUtil.create("div", "legend");
  div.innerHTML = `<b>${{D.title}}</b><br>` + D.legend.map(e => `<i style="background:${{e.colour}}"></i>${{e.label}}`).join("<br>");
  return div;
}};
legend.addTo(map);
if (images.after) {{
  const fade = L.control({{position: "topleft"}});
  fade.onAdd = () => {{
    const div = L.DomUtil.create("div", "fade");
    div.innerHTML = 'before <input id="fade" type="range" min="0" max="100" value="100"> after';
    L.DomEvent.disableClickPropagation(div);
    div.querySelector("input").addEventListener("input", e => images.after.setOpacity(e.target.value / 100));
    return div;
  }};
  fade.addTo(map);
}}
map.fitBounds(D.bounds);
</script>{body}</body></html>
"""


def web_grid(grid: Grid, max_size: int) -> Grid:
    """The Web Mercator grid of the map's images: ``grid``'s extent, ``max_size`` px on its longer side."""
    left, bottom, right, top = transform_bounds(grid.crs, MERCATOR, *grid.bounds, densify_pts=21)
    res = max(right - left, top - bottom) / max_size
    return Grid.from_bounds(MERCATOR, (left, bottom, right, top), res)


def latlng_bounds(grid: Grid) -> list[list[float]]:
    """``grid``'s extent as Leaflet's bounds: ``[[south, west], [north, east]]`` in WGS84."""
    west, south, east, north = transform_bounds(grid.crs, WGS84, *grid.bounds)
    return [[south, west], [north, east]]


def _png(values: np.ndarray, valid: np.ndarray, path: Path, optimize: bool = True) -> None:
    alpha = (valid * 255).astype(np.uint8)
    rgb = (np.clip(values, 0, 1) * 255).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(path, optimize=optimize)


def _image(source: Path, grid: Grid, name: str, out: Path, optimize: bool = True) -> bool:
    values = maps.read_on(source, grid)
    valid = np.isfinite(values).all(axis=0)
    if not valid.any():
        return False
    image, _, _ = stretch(np.nan_to_num(values), valid)
    _png(image, valid, out / f"{name}.png", optimize)
    return True


def _ramp_image(source: Path, grid: Grid, name: str, out: Path) -> None:
    import matplotlib

    values = maps.read_on(source, grid)[0]
    valid = np.isfinite(values)
    high = float(np.nanpercentile(values, 99)) if valid.any() else 1.0
    coloured = matplotlib.colormaps["inferno"](np.clip(np.nan_to_num(values) / max(high, 1e-9), 0, 1))[..., :3]
    _png(coloured, valid, out / f"{name}.png")


def _features(frame: gpd.GeoDataFrame, keep: list[str], tolerance: float) -> dict[str, Any]:
    if len(frame) > MAX_FEATURES:
        order = np.argsort(-frame.geometry.area.to_numpy())[:MAX_FEATURES]
        frame = frame.iloc[np.sort(order)]
    frame = frame[[c for c in keep if c in frame.columns] + ["geometry"]].copy()
    for column in frame.columns:
        if frame[column].dtype.kind == "f":
            frame[column] = frame[column].round(3)
    frame["geometry"] = frame.geometry.simplify(tolerance, preserve_topology=True)
    return json.loads(frame.to_crs(WGS84).to_json(drop_id=True))


def write_webmap(parts: dict[str, Any], out: Path, *, title: str, max_size: int = 2048, review: bool = False) -> Path:
    """Write ``out/index.html``, ``out/data.js``, the images and Leaflet (module notes; ``review``: with the review
    mode, its images not optimised: a page served from this machine is made at each start); returns the page's path."""
    from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS

    out.mkdir(parents=True, exist_ok=True)
    assets = files("deltacd.report") / "webmap_assets"
    for name in ("leaflet.js", "leaflet.css", "LEAFLET-LICENSE", *(("review.js", "review.css") if review else ())):
        (out / name).write_bytes((assets / name).read_bytes())
    (out / "images").mkdir(exist_ok=True)
    for image in (assets / "images").iterdir():
        (out / "images" / image.name).write_bytes(image.read_bytes())
    run = parts.get("detect") or parts.get("damage")
    mask = DetectOutputs(run).mask
    reference = mask if mask.is_file() else DamageOutputs(run).damage
    with rasterio.open(reference) as src:
        grid = Grid.of(src)
    web = web_grid(grid, max_size)
    bounds = latlng_bounds(web)
    images, layers, legend = [], [], []
    for name, label, visible, opacity in (("before", "before (date 1)", True, 1.0), ("after", "after (date 2)", True, 1.0)):
        if (run / f"{name}.vrt").is_file() and _image(run / f"{name}.vrt", web, name, out, optimize=not review):
            images.append({"name": name, "label": label, "file": f"{name}.png", "bounds": bounds, "visible": visible,
                           "opacity": opacity})
    uncertainty = DetectOutputs(run).uncertainty
    if uncertainty.is_file():
        _ramp_image(uncertainty, web, "uncertainty", out)
        images.append({"name": "uncertainty", "label": "uncertainty (entropy)", "file": "uncertainty.png", "bounds": bounds,
                       "visible": False, "opacity": 0.7})
    tolerance = grid.res[0]
    detect = parts.get("detect")
    if detect:
        fromto = parts.get("compare") and Path(parts["compare"]) / "changes_fromto.gpkg"
        if fromto and fromto.is_file():
            frame = gpd.read_file(fromto, layer=DetectOutputs.layer)
            top = frame.groupby("transition")["area_ha"].sum().sort_values(ascending=False).index[:8]
            palette = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf"]
            colours = dict(zip(top, palette, strict=False))
            layers.append({"label": "changes (by transition)", "field": "transition", "colours": colours, "colour": "#999999",
                           "weight": 1.5, "fill": 0.25, "features": _features(frame, ["transition", "from_class", "from_share",
                                                                                         "to_class", "to_share", "area_ha", "zone",
                                                                                         "mean_score"], tolerance)})
            legend += [{"label": t, "colour": c} for t, c in colours.items()]
        else:
            frame = gpd.read_file(DetectOutputs(detect).polygons, layer=DetectOutputs.layer)
            layers.append({"label": "changes", "field": "_none", "colours": {}, "colour": "#e31a1c", "weight": 1.5, "fill": 0.2,
                           "features": _features(frame.reset_index(), ["change_id", "area_m2", "mean_score", "max_score"], tolerance)})
            legend.append({"label": "change", "colour": "#e31a1c"})
    damage = parts.get("damage")
    if damage:
        frame = gpd.read_file(DamageOutputs(damage).buildings, layer=DamageOutputs.layer)
        colours = {str(g): c for g, c in GRADE_COLOURS.items()}
        frame["damage_grade"] = frame["damage_grade"].astype(str)
        keep = ["building_id", "damage_grade", "damage_label", "p_no_damage", "p_minor", "p_major", "p_destroyed",
                "changed_share", "valid_share", "area_m2"]
        layers.append({"label": "buildings (damage grade)", "field": "damage_grade", "colours": colours, "colour": "#9e9e9e",
                       "weight": 1, "fill": 0.7, "features": _features(frame, keep, tolerance)})
        legend += [{"label": GRADE_LABELS[g], "colour": c} for g, c in GRADE_COLOURS.items()]
    data = {"title": title, "bounds": bounds, "images": images, "layers": layers, "legend": legend}
    (out / "data.js").write_text("window.DELTACD = " + json.dumps(data, separators=(",", ":")) + ";\n", encoding="utf-8")
    page = out / "index.html"
    extra = ({"head": '\n<link rel="stylesheet" href="review.css"><link rel="icon" href="data:,">',
              "body": '<script src="review.js"></script>', "query": " + location.search"} if review
             else {"head": "", "body": "", "query": ""})
    page.write_text(_PAGE.format(title=title, **extra), encoding="utf-8")
    return page


__all__ = ["MAX_FEATURES", "latlng_bounds", "web_grid", "write_webmap"]
