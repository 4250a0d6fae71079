"""QGIS styles for deltacd's outputs: a ``.qml`` beside each raster and vector, and in the GeoPackages.

QGIS applies ``NAME.qml`` beside ``NAME.tif`` when it opens the raster, and the default style of
a GeoPackage layer from the ``layer_styles`` table (the GeoPackage extension QGIS and GDAL read),
so every output opens readable: the change mask transparent / red with a legend, the score and
the uncertainty with a colour ramp, polygons by transition or damage grade, the agreement maps
by category. Each verb passes the styles of its outputs to :func:`write_styles`; the styles are
small QGIS 3 XML documents written here (no library writes QGIS styles without QGIS itself).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio

#: Colours of the agreement codes of ``compare`` (0 neither, 1 only ours, 2 only the other method, 3 both).
PCC_AGREEMENT = {0: ("neither", "#f0f0f0"), 1: ("only ours", "#d7191c"), 2: ("only the current method", "#2c7bb6"),
                 3: ("both", "#7b3294")}


def _rgba(colour: str, alpha: int = 255) -> str:
    colour = colour.lstrip("#")
    return ",".join(str(int(colour[i:i + 2], 16)) for i in (0, 2, 4)) + f",{alpha}"


def paletted_qml(classes: dict[int, tuple[str, str]], *, transparent: Sequence[int] = ()) -> str:
    """A paletted (unique values) raster style: code -> (label, colour); codes in ``transparent`` are see-through."""
    entries = "".join(
        f'<paletteEntry value="{code}" label="{escape(label)}" color="{colour}" alpha="{0 if code in transparent else 255}"/>'
        for code, (label, colour) in sorted(classes.items())
    )
    return (
        '<!DOCTYPE qgis PUBLIC \'http://mrcc.com/qgis.dtd\' \'SYSTEM\'><qgis version="3.28" styleCategories="AllStyleCategories">'
        '<pipe><rasterrenderer type="paletted" opacity="1" band="1" alphaBand="-1"><rasterTransparency/>'
        f'<colorPalette>{entries}</colorPalette></rasterrenderer><brightnesscontrast brightness="0" contrast="0"/>'
        "</pipe><blendMode>0</blendMode></qgis>"
    )


def ramp_qml(low: float, high: float, *, colours: Sequence[str] = ("#000004", "#51127c", "#b73779", "#fc8961", "#fcfdbf"),
             label: str = "") -> str:
    """A single-band pseudocolour style: a colour ramp (magma by default) from ``low`` to ``high``."""
    stops = np.linspace(low, high, len(colours))
    items = "".join(f'<item value="{v:.6g}" label="{v:.3g}" color="{c}" alpha="255"/>' for v, c in zip(stops, colours, strict=True))
    return (
        '<!DOCTYPE qgis PUBLIC \'http://mrcc.com/qgis.dtd\' \'SYSTEM\'><qgis version="3.28" styleCategories="AllStyleCategories">'
        f'<pipe><rasterrenderer type="singlebandpseudocolor" opacity="1" band="1" classificationMin="{low:.6g}" '
        f'classificationMax="{high:.6g}" alphaBand="-1"><rasterTransparency/><rastershader><colorrampshader '
        f'colorRampType="INTERPOLATED" classificationMode="1" clip="0" minimumValue="{low:.6g}" maximumValue="{high:.6g}" '
        f'labelPrecision="3">{items}</colorrampshader></rastershader></rasterrenderer></pipe>'
        f"<customproperties><Option type=\"Map\"><Option name=\"deltacd_legend\" value=\"{escape(label)}\" type=\"QString\"/>"
        "</Option></customproperties></qgis>"
    )


def categorized_qml(field: str, classes: dict, *, geometry: str = "polygon", outline_only: bool = False) -> str:
    """A categorised vector style: ``field`` value -> (label, colour)."""
    symbols, categories = [], []
    for i, (value, (label, colour)) in enumerate(classes.items()):
        fill = "0,0,0,0" if outline_only else _rgba(colour, 200)
        outline = _rgba(colour) if outline_only else "35,35,35,255"
        symbols.append(
            f'<symbol type="fill" name="{i}" alpha="1" clip_to_extent="1"><layer class="SimpleFill" enabled="1" locked="0">'
            f'<Option type="Map"><Option name="color" value="{fill}" type="QString"/>'
            f'<Option name="outline_color" value="{outline}" type="QString"/>'
            f'<Option name="outline_width" value="{0.6 if outline_only else 0.2}" type="QString"/>'
            '<Option name="style" value="solid" type="QString"/></Option></layer></symbol>'
        )
        categories.append(f'<category value="{escape(str(value))}" label="{escape(label)}" symbol="{i}" render="true"/>')
    return (
        '<!DOCTYPE qgis PUBLIC \'http://mrcc.com/qgis.dtd\' \'SYSTEM\'><qgis version="3.28" styleCategories="AllStyleCategories">'
        f'<renderer-v2 type="categorizedSymbol" attr="{escape(field)}" forceraster="0" enableorderby="0">'
        f'<categories>{"".join(categories)}</categories><symbols>{"".join(symbols)}</symbols></renderer-v2></qgis>'
    )


def outline_qml(colour: str = "#e31a1c") -> str:
    """Every polygon drawn as a coloured outline (change polygons without classes)."""
    return categorized_qml("_all", {}, outline_only=True).replace(
        '<renderer-v2 type="categorizedSymbol" attr="_all" forceraster="0" enableorderby="0"><categories></categories><symbols></symbols></renderer-v2>',
        '<renderer-v2 type="singleSymbol" forceraster="0" enableorderby="0"><symbols><symbol type="fill" name="0" alpha="1" '
        'clip_to_extent="1"><layer class="SimpleFill" enabled="1" locked="0"><Option type="Map">'
        '<Option name="color" value="0,0,0,0" type="QString"/>'
        f'<Option name="outline_color" value="{_rgba(colour)}" type="QString"/>'
        '<Option name="outline_width" value="0.6" type="QString"/><Option name="style" value="no" type="QString"/>'
        '</Option></layer></symbol></symbols></renderer-v2>')


def store_style(gpkg: Path, layer: str, qml: str, *, name: str = "deltacd") -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage's ``layer_styles`` table (QGIS applies it on open)."""
    with sqlite3.connect(gpkg) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), "
            "f_table_schema TEXT(256), f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), "
            "styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            "update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"
        )
        geometry = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)).fetchone()
        db.execute("DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?", (layer, name))
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, styleQML, "
            "styleSLD, useAsDefault, description, owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, 'deltacd', '', ?)",
            (layer, geometry[0] if geometry else "geom", name, qml, "written by deltacd", datetime.now(UTC).isoformat()),
        )


def _score_range(path: Path) -> tuple[float, float]:
    with rasterio.open(path) as src:
        level = src.overviews(1)
        factor = level[-1] if level else max(1, max(src.width, src.height) // 512)
        values = src.read(1, out_shape=(max(1, src.height // factor), max(1, src.width // factor)))
    values = values[np.isfinite(values)]
    return (0.0, 1.0) if values.size == 0 else (float(np.percentile(values, 1)), float(np.percentile(values, 99)))


#: Style of a raster output: a function of the raster's path (ranges may depend on its values) -> QML.
RasterStyle = Callable[[Path], str]


def write_styles(folder: str | Path, rasters: dict[str, RasterStyle], vectors: dict[tuple[str, str], str]) -> list[Path]:
    """Write ``NAME.qml`` beside each raster of ``rasters`` and each GeoPackage of ``vectors`` (``(file, layer) -> QML``)
    found in ``folder``, and store the vector styles in their GeoPackage; returns the ``.qml`` files written."""
    folder = Path(folder)
    written = []
    for name, style in rasters.items():
        path = folder / name
        if path.is_file():
            written.append(folder / f"{path.stem}.qml")
            written[-1].write_text(style(path))
    for (name, layer), qml in vectors.items():
        path = folder / name
        if path.is_file():
            written.append(folder / f"{path.stem}.qml")
            written[-1].write_text(qml)
            store_style(path, layer, qml)
    return written


def score_ramp(label: str) -> RasterStyle:
    """A magma ramp over the 1st-99th percentiles of the raster's values (read from its overviews)."""
    return lambda path: ramp_qml(*_score_range(path), label=label)


MASK_STYLE = paletted_qml({0: ("no change", "#ffffff"), 1: ("change", "#e31a1c"), 255: ("no data", "#000000")}, transparent=(0, 255))
UNCERTAINTY_STYLE = ramp_qml(0.0, 1.0, colours=("#ffffff", "#fdae61", "#d7191c", "#67001f"), label="predictive entropy (bits)")
PCC_AGREEMENT_STYLE = paletted_qml({**PCC_AGREEMENT, 255: ("no data", "#000000")}, transparent=(0, 255))
