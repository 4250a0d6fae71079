"""Label rasters and polygons read on a target grid, window by window (references, strata, land cover).

Evaluation and comparison read several label layers on the pixel grid of one map (the
prediction): the reference, optional strata, two land-cover maps. Each layer is one of

* a **raster** (class codes, 0/1 or 0/255 masks). On the target grid it is read directly;
  on any other grid or CRS it is warped onto the target grid through a GDAL ``WarpedVRT`` with
  **nearest** resampling (labels are never interpolated), window by window. Its nodata tag (and
  NaN for float rasters) marks unlabelled pixels, as do pixels outside its footprint. A raster
  without georeferencing is accepted only when its size equals the target grid's; it is then
  read pixel for pixel, with a warning (benchmark labels such as OSCD's are stored that way).
* **polygons** (GeoPackage, GeoJSON, Shapefile...), read with
  :func:`deltacd.io.vectors.read_polygons` (reprojected to the grid CRS; invalid geometries
  repaired with ``make_valid`` and a warning) and rasterised per window with
  :func:`rasterio.features.rasterize`. **Pixel-centre rule** by default: a pixel takes a polygon's
  value when its centre lies inside the polygon (GDAL's default, so polygons vectorised from a
  raster give back exactly its pixels); with ``all_touched=True`` every pixel the polygon touches
  takes it (larger objects, for thin features). Where polygons overlap, the later one wins.
  Without a class field, pixels inside a polygon are 1 (change) and all others 0 (no change);
  with a class field, pixels take the field value and pixels outside every polygon are
  unlabelled.

Raw values become class indices 0..K-1 through a :class:`LabelCoding`, decided once from the
values the whole layer holds (:func:`scan_values`), so every window is decoded the same way.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from deltacd.errors import InputError, MissingInputError
from deltacd.io.grid import Grid
from deltacd.io.vectors import read_polygons

log = logging.getLogger(__name__)

__all__ = [
    "VECTOR_SUFFIXES",
    "LabelCoding",
    "LabelSource",
    "PolygonLabels",
    "RasterLabels",
    "binary_coding",
    "class_coding",
    "normalise_classes",
    "open_labels",
    "read_windows",
    "scan_values",
    "window_side",
]

#: File suffixes read as polygons (anything else is opened as a raster).
VECTOR_SUFFIXES = frozenset({".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite", ".parquet"})

#: More distinct values than this in a label layer means it is not a label layer (a score?).
MAX_DISTINCT_VALUES = 1024

LayerKind = Literal["auto", "raster", "polygons"]


# --------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------


def window_side(block_size: int, read_size: int | None) -> int:
    """Side (px) of the windows read at once: ``read_size``, by default about 2048 px, a multiple of ``block_size``.

    Raises
    ------
    InputError
        ``read_size`` is not a multiple of ``block_size`` (bootstrap blocks must not straddle windows).
    """
    bs = block_size
    rs = read_size or bs * max(1, 2048 // bs)
    if rs % bs:
        raise InputError(f"read_size: got {rs}, expected a multiple of block_size ({bs}); e.g. {bs * max(1, rs // bs)}")
    return rs


def read_windows(grid: Grid, size: int) -> list[Window]:
    """Windows of ``size`` x ``size`` pixels tiling ``grid`` row by row (smaller on the right and bottom edges)."""
    return [
        Window(c, r, min(size, grid.width - c), min(size, grid.height - r))
        for r in range(0, grid.height, size)
        for c in range(0, grid.width, size)
    ]


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


class LabelSource:
    """A label layer on a grid: ``read(window)`` -> (raw values ``[h, w]``, valid bool ``[h, w]``)."""

    path: Path
    what: str
    grid: Grid
    warped: bool = False

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (no-op by default)."""

    def __enter__(self) -> LabelSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _fmt_bounds(b: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in b) + "]"


def _same_grid(a: Grid, b: Grid) -> bool:
    return (
        a.crs == b.crs
        and a.shape == b.shape
        and a.transform.almost_equals(b.transform, precision=1e-6 * min(a.res))
    )


class RasterLabels(LabelSource):
    """One band of a label raster read on ``grid`` (directly, or warped with nearest resampling).

    Parameters
    ----------
    path
        The raster.
    grid
        The target grid.
    what
        What the layer is, for messages (``"reference"``, ``"land-cover map (before)"``).
    grid_name
        The file that defines ``grid``, for messages.
    band
        Band to read (1-based).

    Raises
    ------
    MissingInputError
        The file does not exist.
    InputError
        It is not a readable raster, has no georeferencing and another size than the grid, or
        does not overlap the grid (the message names both files).
    """

    def __init__(self, path: str | Path, grid: Grid, *, what: str, grid_name: str, band: int = 1) -> None:
        self.path, self.grid, self.what, self.band = Path(path), grid, what, band
        if not self.path.exists():
            raise MissingInputError(f"{self.path}: no such {what} file; check the path")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self._ds = rasterio.open(self.path)
            except RasterioIOError as exc:
                raise InputError(f"{self.path}: cannot read the {what} as a raster ({exc}); give a GeoTIFF or polygons") from exc
        ds = self._ds
        self._vrt: WarpedVRT | None = None
        try:
            if band > ds.count:
                raise InputError(f"{self.path}: {what} has {ds.count} band(s), band {band} asked for; give a single-band label raster")
            self.dtype = np.dtype(ds.dtypes[band - 1])
            if ds.crs is None:
                if (ds.height, ds.width) != grid.shape:
                    raise InputError(
                        f"{self.path}: {what} has no georeferencing and its size {ds.width}x{ds.height} differs from "
                        f"{grid_name} ({grid.width}x{grid.height}); georeference it (e.g. gdal_translate -a_srs ... -a_ullr ...)"
                    )
                warnings.warn(
                    f"{self.path}: {what} has no georeferencing; read pixel for pixel on the grid of {grid_name} (same size)",
                    stacklevel=3,
                )
                return
            own = Grid.of(ds)
            own_bounds = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
            if not _overlap(own_bounds, tuple(grid.bounds)):
                raise InputError(
                    f"{self.path} ({what}, {ds.crs.to_string()}, bounds {_fmt_bounds(ds.bounds)}) and {grid_name} "
                    f"({grid.crs.to_string()}, bounds {_fmt_bounds(grid.bounds)}) do not overlap; give a {what} of the same area"
                )
            if _same_grid(own, grid):
                return
            options: dict[str, Any] = dict(
                crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height, resampling=Resampling.nearest
            )
            if ds.nodata is None:
                options["add_alpha"] = True  # marks pixels outside the footprint as unlabelled
            else:
                options["nodata"] = ds.nodata
            self._vrt = WarpedVRT(ds, **options)
            self.warped = True
            log.info("%s: %s warped onto the grid of %s (nearest)", self.path, what, grid_name)
        except BaseException:
            self.close()
            raise

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        src = self._vrt if self._vrt is not None else self._ds
        values = src.read(self.band, window=window)
        valid = src.read_masks(self.band, window=window) > 0
        if values.dtype.kind == "f":
            valid &= np.isfinite(values)
        return values, valid

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "type": "raster", "warped": self.warped, "resampling": "nearest" if self.warped else None}

    def close(self) -> None:
        for handle in (self._vrt, getattr(self, "_ds", None)):
            if handle is not None and not handle.closed:
                handle.close()


class PolygonLabels(LabelSource):
    """Polygons rasterised on ``grid`` window by window (see the module notes for the rule).

    Parameters
    ----------
    path
        A vector file.
    grid
        The target grid.
    what, grid_name
        For messages.
    field
        Attribute holding each polygon's class. None: inside = 1, outside = 0, every pixel labelled.
        Integer values are used as codes; text values become codes through ``names`` (name ->
        code) or, without it, 1, 2, ... in sorted order (recorded in :attr:`names`).
    all_touched
        False (default): pixel-centre rule; True: every pixel a polygon touches.
    names
        Text class -> integer code, for text fields.

    Attributes
    ----------
    values : numpy.ndarray of int64 ``[n]``
        Code of each polygon (1 without a field).
    source_rows : numpy.ndarray of int64 ``[n]``
        Row of each polygon in the file (0-based), for tables that point back to it.
    names : dict[int, str] or None
        Code -> text class, when the field holds text.
    """

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        *,
        what: str,
        grid_name: str,
        field: str | None = None,
        all_touched: bool = False,
        names: Mapping[str, int] | None = None,
    ) -> None:
        self.path, self.grid, self.what, self.field, self.all_touched = Path(path), grid, what, field, all_touched
        frame = read_polygons(self.path, grid.crs, what=what)
        bounds = tuple(float(v) for v in frame.total_bounds)
        if not _overlap(bounds, tuple(grid.bounds)):
            raise InputError(
                f"{self.path} ({what}, bounds {_fmt_bounds(bounds)} in {grid.crs.to_string()}) and {grid_name} "
                f"(bounds {_fmt_bounds(grid.bounds)}) do not overlap; give polygons of the same area"
            )
        self.names: dict[int, str] | None = None
        if field is None:
            values = np.ones(len(frame), dtype=np.int64)
        else:
            if field not in frame.columns:
                columns = ", ".join(c for c in frame.columns if c != frame.geometry.name) or "none"
                raise InputError(f"{self.path}: {what} has no field {field!r}; fields: {columns}")
            column = frame[field]
            missing = column.isna()
            if missing.any():
                warnings.warn(f"{self.path}: {int(missing.sum())} polygon(s) without a {field!r} value left out", stacklevel=3)
                frame, column = frame[~missing], column[~missing]
            values, self.names = _codes_of(column, names, where=f"{self.path} field {field!r}")
        self.source_rows = frame.index.to_numpy(dtype=np.int64)
        self.frame = frame.reset_index(drop=True)
        self.values = values
        self._lut = np.concatenate([[0], values]).astype(np.int64)

    @property
    def geometries(self) -> np.ndarray:
        return self.frame.geometry.values

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        shape = (int(window.height), int(window.width))
        hits = self.frame.sindex.query(shapely.box(*self.grid.window_bounds(window)), predicate="intersects")
        if len(hits) == 0:
            index = np.zeros(shape, dtype=np.int32)
        else:
            hits = np.sort(hits)  # file order, so "the later polygon wins" holds whatever the index order
            index = rasterize(
                ((self.frame.geometry.values[i], int(i) + 1) for i in hits),
                out_shape=shape,
                transform=self.grid.window_transform(window),
                fill=0,
                all_touched=self.all_touched,
                dtype="int32",
            )
        if self.field is None:
            return (index > 0).astype(np.uint8), np.ones(shape, dtype=bool)
        return self._lut[index], index > 0

    def value_counts(self) -> dict[int, int]:
        """Codes present (count = number of polygons; polygons are not read per pixel for this)."""
        codes, counts = np.unique(self.values, return_counts=True)
        return {int(c): int(n) for c, n in zip(codes, counts, strict=True)}

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "type": "polygons",
            "field": self.field,
            "polygons": len(self.frame),
            "rasterisation": "all touched" if self.all_touched else "pixel centre",
            "class_names": None if self.names is None else {str(k): v for k, v in self.names.items()},
        }


def _codes_of(column: pd.Series, names: Mapping[str, int] | None, *, where: str) -> tuple[np.ndarray, dict[int, str] | None]:
    """Integer code per polygon from a class column (integers as they are, text through ``names``)."""
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.int64), None
    if pd.api.types.is_numeric_dtype(column):
        v = column.to_numpy(dtype=np.float64)
        if not np.all(v == np.round(v)):
            raise InputError(f"{where}: holds non-integer values (e.g. {v[v != np.round(v)][0]}); give integer class codes or text classes")
        return v.astype(np.int64), None
    text = column.astype(str)
    if names is None:
        mapping = {name: i + 1 for i, name in enumerate(sorted(set(text)))}
    else:
        unknown = sorted(set(text) - set(names))
        if unknown:
            raise InputError(f"{where}: classes {', '.join(unknown)} are not among the declared ones ({', '.join(map(str, names))}); declare them")
        mapping = dict(names)
    return text.map(mapping).to_numpy(dtype=np.int64), {code: name for name, code in mapping.items()}


def open_labels(
    path: str | Path,
    grid: Grid,
    *,
    what: str,
    grid_name: str,
    kind: LayerKind = "auto",
    field: str | None = None,
    all_touched: bool = False,
    names: Mapping[str, int] | None = None,
) -> LabelSource:
    """Open a label layer on ``grid``: polygons when ``kind="polygons"`` or the suffix is a vector one, else a raster."""
    if kind not in ("auto", "raster", "polygons"):
        raise InputError(f"{what} kind: got {kind!r}, expected 'auto', 'raster' or 'polygons'")
    path = Path(path)
    polygons = kind == "polygons" or (kind == "auto" and path.suffix.lower() in VECTOR_SUFFIXES)
    if polygons:
        return PolygonLabels(path, grid, what=what, grid_name=grid_name, field=field, all_touched=all_touched, names=names)
    if field is not None:
        raise InputError(f"{path}: a field ({field!r}) was given for the {what}, but it is a raster; drop the field or give polygons")
    return RasterLabels(path, grid, what=what, grid_name=grid_name)


# --------------------------------------------------------------------------------------------
# value scan and coding
# --------------------------------------------------------------------------------------------


def scan_values(source: LabelSource, windows: Sequence[Window], *, progress: Callable[[int, int], None] | None = None) -> dict[Any, int]:
    """Pixel count of every distinct value of the labelled pixels, over the whole layer.

    One read of the layer. Polygon layers answer from their attribute table (no read).

    Raises
    ------
    InputError
        More than :data:`MAX_DISTINCT_VALUES` distinct values (a continuous raster, not labels).
    """
    if isinstance(source, PolygonLabels):
        return source.value_counts() if source.field is not None else {0: 1, 1: 1}
    counts: dict[Any, int] = {}
    for done, window in enumerate(windows, start=1):
        values, valid = source.read(window)
        v = values[valid]
        if v.size:
            if v.dtype.kind in "ub" and v.dtype.itemsize <= 2:
                found = np.bincount(v.astype(np.intp, copy=False).ravel())
                keys = np.flatnonzero(found)
                pairs = zip(keys.tolist(), found[keys].tolist(), strict=True)
            else:
                keys, n = np.unique(v, return_counts=True)
                pairs = zip(keys.tolist(), n.tolist(), strict=True)
            for k, n in pairs:
                counts[k] = counts.get(k, 0) + n
            if len(counts) > MAX_DISTINCT_VALUES:
                raise InputError(
                    f"{source.path}: {source.what} holds more than {MAX_DISTINCT_VALUES} distinct values, so it is not a "
                    "label raster (a score?); give a change mask or class codes (threshold a score first)"
                )
        if progress is not None:
            progress(done, len(windows))
    return counts


@dataclass(frozen=True)
class LabelCoding:
    """How the raw values of a layer become class indices 0..K-1.

    Attributes
    ----------
    codes : tuple of int
        Raw value of each class index: ``(0, 1)`` or ``(0, 255)`` for binary change, the declared
        class codes otherwise.
    names : tuple of str
        Name of each class.
    description : str
        Human-readable rule, recorded in the outputs (``"0/1 (1 = change)"``...).
    """

    codes: tuple[int, ...]
    names: tuple[str, ...]
    description: str

    @property
    def n_classes(self) -> int:
        return len(self.codes)

    def apply(self, values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class index per pixel (uint8 for K <= 255, else int32) and validity: unknown values are unlabelled.

        Values outside :attr:`codes` (nodata, ``ignore_value``) become invalid; the scan run before
        decoding guarantees that nothing else is dropped here.
        """
        codes = np.asarray(self.codes, dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        pos = np.clip(np.searchsorted(ordered, values), 0, ordered.size - 1)
        known = ordered[pos] == values
        index = order[pos].astype(np.uint8 if self.n_classes <= 255 else np.int32)
        ok = valid & known
        index[~ok] = 0
        return index, ok


BINARY_NAMES = ("no_change", "change")


def _is_whole(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, np.integer, bool)) or (math.isfinite(v) and float(v).is_integer()) for v in values)


def _listing(values: Sequence[Any], limit: int = 12) -> str:
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(values)[:limit])
    return shown + (f" ... ({len(values)} values)" if len(values) > limit else "")


def binary_coding(counts: Mapping[Any, int], *, ignore_value: int | None, where: str) -> LabelCoding:
    """The coding of a binary change layer from the values it holds.

    0/1 (with ``ignore_value`` for unlabelled pixels) is read as 0 = no change, 1 = change; a
    layer holding only 0 and 255 (255 present) is a 0/255 mask, 255 = change, even when
    ``ignore_value`` is 255 (mark unlabelled pixels of such a mask with the file's nodata tag).

    Raises
    ------
    InputError
        Any other set of values (listed in the message).
    """
    present = {v for v, n in counts.items() if n}
    if not _is_whole(list(present)):
        raise InputError(f"{where}: holds non-integer values ({_listing(present)}); give a change mask (0/1 or 0/255), not a score")
    present = {int(v) for v in present}
    ignore = set() if ignore_value is None else {int(ignore_value)}
    if present <= {0, 255} and 255 in present:  # before the 0/1 rule: 255 may also be ignore_value
        return LabelCoding((0, 255), BINARY_NAMES, "0/255 (255 = change)")
    if present <= {0, 1} | ignore:
        return LabelCoding((0, 1), BINARY_NAMES, "0/1 (1 = change)" + (f", {ignore_value} = unlabelled" if ignore_value is not None else ""))
    raise InputError(
        f"{where}: holds values {_listing(present)}, expected a change mask 0/1 (with {ignore_value} = unlabelled) or 0/255; "
        "declare classes= to evaluate class codes"
    )


def normalise_classes(classes: Sequence[int] | Mapping[int, str] | None, *, setting: str = "classes") -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """``classes`` as (codes, names): a list of integer codes or a mapping code -> name."""
    if classes is None:
        return None
    if isinstance(classes, Mapping):
        items = list(classes.items())
    elif isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise InputError(f"{setting}: got {classes!r}, expected a list of integer codes or a mapping code -> name")
    else:
        items = [(c, str(c)) for c in classes]
    codes: list[int] = []
    for code, _ in items:
        if isinstance(code, bool) or not isinstance(code, (int, np.integer)):
            raise InputError(f"{setting}: got class code {code!r}, expected integers (e.g. [0, 1, 2]); map text classes to codes")
        codes.append(int(code))
    if len(set(codes)) != len(codes) or len(codes) < 2:
        raise InputError(f"{setting}: got {codes}, expected at least two distinct class codes")
    return tuple(codes), tuple(str(n) for _, n in items)


def class_coding(
    counts: Mapping[Any, int],
    classes: tuple[tuple[int, ...], tuple[str, ...]],
    *,
    ignore_value: int | None,
    where: str,
) -> LabelCoding:
    """The coding of a class layer with declared ``classes``.

    Raises
    ------
    InputError
        Values other than the declared codes and ``ignore_value`` (listed in the message).
    """
    codes, names = classes
    present = {v for v, n in counts.items() if n}
    if not _is_whole(list(present)):
        raise InputError(f"{where}: holds non-integer values ({_listing(present)}); give integer class codes")
    unknown = {int(v) for v in present} - set(codes) - ({int(ignore_value)} if ignore_value is not None else set())
    if unknown:
        raise InputError(
            f"{where}: holds class codes {_listing(unknown)} that are not among the declared classes ({_listing(codes)}); "
            "declare them in classes= or mark them as nodata"
        )
    return LabelCoding(codes, names, "class codes " + ", ".join(map(str, codes)))

