"""Put both dates on one grid and read them window by window.

The common grid is decided once (:func:`common_grid`, :mod:`deltacd.prepare.pair_grid`): the CRS
of the first date (or the UTM zone of the scene when that CRS is geographic or the image is in
sensor geometry), one resolution (given, or the coarser of the two dates), the intersection of
the footprints, optionally clipped to an AOI. Every file is then read through a GDAL ``WarpedVRT`` onto that grid, one window at a
time, so the scene is never loaded whole and nothing is resampled on disk. A file that already
lies on the grid is read directly, without warping.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from deltacd.errors import InputError
from deltacd.io.bands import common_bands
from deltacd.io.grid import Grid
from deltacd.io.rasters import BandFile, DateImage
from deltacd.io.vectors import PolygonMask, read_polygons
from deltacd.prepare.pair_grid import common_grid, target_crs, utm_crs_for

log = logging.getLogger(__name__)

__all__ = ["AfterTransform", "AlignedPair", "PairWindow", "align_pair", "common_grid", "target_crs", "utm_crs_for"]

#: A per-window transform of the after-image values, [C, h, w] -> [C, h, w] (radiometric harmonisation).
AfterTransform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PairWindow:
    """Both dates over one window of the common grid.

    Attributes
    ----------
    before, after : np.ndarray
        float32 [C, h, w], the common bands in the pair's band order, in the input's digital
        numbers (after harmonisation for ``after`` when the pair has a harmoniser).
    valid : np.ndarray
        bool [h, w]: True where both dates have data (nodata, masks, footprints and AOI combined).
    """

    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray


def _same_pixel_size(f: BandFile, g: Grid) -> bool:
    """Whether the file is georeferenced in the grid's CRS with the grid's pixel width and height."""
    t = f.transform
    return (t is not None and f.crs == g.crs
            and math.isclose(t.a, g.transform.a, rel_tol=1e-9) and math.isclose(t.e, g.transform.e, rel_tol=1e-9))


def _offset_on_grid(f: BandFile, g: Grid) -> tuple[int, int] | None:
    """(col, row) of the grid origin in the file when the grid's pixels are the file's own pixels."""
    if not _same_pixel_size(f, g):
        return None
    t = f.transform
    col, row = (g.transform.c - t.c) / t.a, (g.transform.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    col, row = round(col), round(row)
    if col < 0 or row < 0 or col + g.width > f.width or row + g.height > f.height:
        return None
    return col, row


def _translated_on_grid(f: BandFile, g: Grid, src) -> bool:
    """Whether the grid's pixels are the file's shifted by a fraction of a pixel, and the file's
    validity is its nodata value or all valid (no mask band to warp), integer values."""
    if not _same_pixel_size(f, g) or f.transform.b or f.transform.d or g.transform.b or g.transform.d:
        return False
    kind = np.dtype(f.dtype)
    if kind.kind not in "ui":
        return False
    if f.nodata is not None:  # a nodata value the file's type can hold
        info = np.iinfo(kind)
        return float(f.nodata).is_integer() and info.min <= f.nodata <= info.max
    return all(MaskFlags.all_valid in flags for flags in src.mask_flag_enums)


#: Source pixels read beyond a window's footprint for a translated read: the bilinear kernel's reach, and one more.
_TRANSLATED_MARGIN = 2


@dataclass
class _FileReader:
    """Reads bands of one file onto a grid.

    Three ways, fastest first: directly when the grid's pixels are the file's own; for a grid
    shifted by a fraction of a pixel (same CRS and pixel size: the common "date 2 on a shifted
    grid"), the window's source pixels plus a 2 px margin read directly and warped in memory by
    GDAL's own bilinear kernel; through a WarpedVRT otherwise (another CRS or pixel size). The
    in-memory warp gives the WarpedVRT's values and validity bit for bit (tested) and reads only
    the window's source pixels, where per-thread WarpedVRTs re-read their source blocks and
    warped every band twice, once for the values and once for the mask.
    """

    file: BandFile
    grid: Grid
    _ds: object = field(default=None, repr=False)
    _vrt: object = field(default=None, repr=False)
    _offset: tuple[int, int] | None = field(default=None, repr=False)
    _translated: bool = field(default=False, repr=False)

    def open(self) -> None:
        self._ds = self.file.open()
        f, g = self.file, self.grid
        self._offset = _offset_on_grid(f, g)
        if self._offset is not None:
            return
        self._translated = _translated_on_grid(f, g, self._ds)
        coarser = min(g.res) > 1.5 * f.resolution_in(g.crs)
        options = dict(
            crs=g.crs, transform=g.transform, width=g.width, height=g.height,
            resampling=Resampling.average if coarser else Resampling.bilinear,
        )
        if f.nodata is None:
            options["add_alpha"] = True  # marks pixels outside the footprint
        else:
            options["nodata"] = f.nodata
            if f.nodata_given:
                options["src_nodata"] = f.nodata  # the user's value, not the file's tag
        self._vrt = WarpedVRT(self._ds, **options)

    def read(self, indexes: list[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
        """float32 [len(indexes), h, w] values and bool [h, w] validity.

        Non-finite values (NaN, inf in float rasters without a nodata tag) are no data.

        Raises
        ------
        InputError
            The file cannot be read there (truncated or corrupt), naming it.
        """
        try:
            if self._offset is not None:
                col, row = self._offset
                src_win = Window(window.col_off + col, window.row_off + row, window.width, window.height)
                data = self._ds.read(indexes, window=src_win, out_dtype="float32")
                if self.file.nodata_given:
                    valid = np.all(data != np.float32(self.file.nodata), axis=0)
                else:
                    valid = np.all(self._ds.read_masks(indexes, window=src_win) > 0, axis=0)
            elif self._translated and (translated := self._read_translated(indexes, window)) is not None:
                data, valid = translated
            else:
                data = self._vrt.read(indexes, window=window, out_dtype="float32")
                valid = np.all(self._vrt.read_masks(indexes, window=window) > 0, axis=0)
        except RasterioIOError as exc:
            detail = " ".join(str(exc.__cause__ or exc).split())[:160]  # GDAL's own message, when chained
            raise InputError(
                f"{self.file.path}: cannot be read at rows {int(window.row_off)}-{int(window.row_off + window.height)} "
                f"of the grid ({detail}); the file is truncated or corrupt, copy it again"
            ) from None
        if np.issubdtype(np.dtype(self.file.dtype), np.floating):
            valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def _read_translated(self, indexes: list[int], window: Window) -> tuple[np.ndarray, np.ndarray] | None:
        """The translated read of a window whose source pixels (and margin) lie inside the file; None at
        the file's edges, which go through the WarpedVRT (its coverage rule there is GDAL's own)."""
        f, ds = self.file, self._ds
        h, w = int(window.height), int(window.width)
        footprint = from_bounds(*self.grid.window_bounds(window), transform=ds.transform)
        col, row = math.floor(footprint.col_off) - _TRANSLATED_MARGIN, math.floor(footprint.row_off) - _TRANSLATED_MARGIN
        source = Window(col, row, math.ceil(footprint.col_off + footprint.width) + _TRANSLATED_MARGIN - col,
                        math.ceil(footprint.row_off + footprint.height) + _TRANSLATED_MARGIN - row)
        if col < 0 or row < 0 or source.col_off + source.width > ds.width or source.row_off + source.height > ds.height:
            return None
        values = ds.read(indexes, window=source)
        # warped in the file's type, so the values are rounded as a WarpedVRT of the file rounds them
        out = np.zeros((len(indexes), h, w), dtype=values.dtype)
        warp = dict(src_transform=ds.window_transform(source), src_crs=f.crs, dst_transform=self.grid.window_transform(window),
                    dst_crs=self.grid.crs, resampling=Resampling.bilinear)
        if f.nodata is None:  # every source pixel valid (no mask band: see _translated_on_grid)
            reproject(values, out, **warp)
            return out.astype(np.float32), np.ones((h, w), dtype=bool)
        nodata = np.asarray(f.nodata).astype(values.dtype)
        out[:] = nodata
        reproject(values, out, src_nodata=nodata, dst_nodata=nodata, **warp)
        return out.astype(np.float32), np.all(out != nodata, axis=0)

    def close(self) -> None:
        for handle in (self._vrt, self._ds):
            if handle is not None:
                handle.close()
        self._vrt = self._ds = None


class AlignedPair:
    """Two dates on one :class:`Grid`, read window by window.

    Use as a context manager, or call :meth:`close`. ``read(window)`` returns a
    :class:`PairWindow` with the common bands in ``self.bands`` order.

    Parameters
    ----------
    before, after
        The two dates.
    grid
        The common grid (see :func:`common_grid`).
    bands
        Band names to read, present at both dates.
    aoi
        Optional polygons; pixels outside are invalid.
    after_shift
        (dx, dy) in grid pixels: date 2 is sampled at (col + dx, row + dy), which corrects a
        co-registration offset with a single resampling.
    after_transform
        Optional radiometric harmonisation applied to date 2 values after reading.
    """

    def __init__(
        self,
        before: DateImage,
        after: DateImage,
        grid: Grid,
        bands: Sequence[str],
        *,
        aoi: PolygonMask | None = None,
        after_shift: tuple[float, float] = (0.0, 0.0),
        after_transform: AfterTransform | None = None,
    ):
        self.before, self.after, self.grid = before, after, grid
        self.bands = tuple(bands)
        self.aoi = aoi
        self.after_shift = after_shift
        self.after_transform = after_transform
        # one set of open files per thread: rasterio datasets must not be shared between threads
        self._local = threading.local()
        self._all_readers: list[dict[tuple[str, int, Grid], _FileReader]] = []
        self._lock = threading.Lock()

    @property
    def _readers(self) -> dict[tuple[str, int, Grid], _FileReader]:
        readers = getattr(self._local, "readers", None)
        if readers is None:
            readers = self._local.readers = {}  # (date, file index, grid)
            with self._lock:
                self._all_readers.append(readers)
        return readers

    def __getstate__(self) -> dict:
        """Picklable (for worker processes): the settings, without the open files."""
        state = dict(self.__dict__)
        for key in ("_local", "_all_readers", "_lock"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local, self._all_readers, self._lock = threading.local(), [], threading.Lock()

    def replace(self, **changes) -> AlignedPair:
        """A new pair with some settings changed (``after_shift``, ``after_transform``, ``bands``)."""
        settings = dict(
            before=self.before, after=self.after, grid=self.grid, bands=self.bands, aoi=self.aoi,
            after_shift=self.after_shift, after_transform=self.after_transform,
        )
        settings.update(changes)
        return AlignedPair(**settings)

    def on_grid(self, grid: Grid) -> AlignedPair:
        """The same pair read on another grid over the same area (a network's resolution); the shift of date 2 is kept."""
        dx, dy = self.after_shift
        return self.replace(grid=grid, after_shift=(dx * self.grid.res[0] / grid.res[0], dy * self.grid.res[1] / grid.res[1]))

    def __enter__(self) -> AlignedPair:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for readers in self._all_readers:
                for reader in readers.values():
                    reader.close()
                readers.clear()

    def _read_date(self, date: str, grid: Grid, window: Window) -> tuple[np.ndarray, np.ndarray]:
        image = self.before if date == "before" else self.after
        per_file: dict[int, list[tuple[int, int]]] = {}
        for position, name in enumerate(self.bands):
            file_index, band_index = image.bands[image.names.index(name)]
            per_file.setdefault(file_index, []).append((position, band_index))
        out = np.empty((len(self.bands), int(window.height), int(window.width)), dtype=np.float32)
        valid = np.ones(out.shape[1:], dtype=bool)
        for file_index, items in per_file.items():
            key = (date, file_index, grid)
            reader = self._readers.get(key)
            if reader is None:
                reader = self._readers[key] = _FileReader(image.files[file_index], grid)
                reader.open()
            data, ok = reader.read([b for _, b in items], window)
            out[[p for p, _ in items]] = data
            valid &= ok
        return out, valid

    def read_overview(self, grid: Grid) -> PairWindow:
        """Both dates over the whole of ``grid``, a coarse view of the pair's grid (:meth:`Grid.scaled`).

        Each file is read once, decimated by GDAL to about the coarse resolution (averaging, or
        its overviews when it has some), and that small array is resampled onto ``grid`` in
        memory; reading the scene through a warped view at full resolution cost ten times more
        (the coarse co-registration pass and the quicklook). The shift and harmonisation of
        date 2 apply as in :meth:`read`.
        """
        before, valid_before = _read_date_overview(self.before, self.bands, grid)
        dx, dy = self.after_shift
        shifted = grid.translated(dx * self.grid.res[0] / grid.res[0], dy * self.grid.res[1] / grid.res[1]) if (dx or dy) else grid
        after, valid_after = _read_date_overview(self.after, self.bands, shifted)
        if self.after_transform is not None:
            after = self.after_transform(after)
        valid = valid_before & valid_after
        if self.aoi is not None:
            valid &= self.aoi.read(grid, grid.full_window)
        return PairWindow(before, after, valid)

    def read(self, window: Window, *, grid: Grid | None = None) -> PairWindow:
        """Read ``window`` of the common grid (or of ``grid``, a coarser view from :meth:`Grid.scaled`)."""
        grid = grid or self.grid
        before, valid_before = self._read_date("before", grid, window)
        dx, dy = self.after_shift
        after_grid = grid.translated(dx * self.grid.res[0] / grid.res[0], dy * self.grid.res[1] / grid.res[1]) if (dx or dy) else grid
        after, valid_after = self._read_date("after", after_grid, window)
        if self.after_transform is not None:
            after = self.after_transform(after)
        valid = valid_before & valid_after
        if self.aoi is not None:
            valid &= self.aoi.read(grid, window)
        return PairWindow(before, after, valid)


#: Decimated reads of whole files and their resampling onto a coarse grid, kept for the next
#: coarse view of the same file (the quicklook reads the scene the co-registration's coarse pass
#: read, on the same grid; the resampling alone cost 0.4 s a date at 10 000 px): key -> float32 [bands, h, w].
_OVERVIEWS: dict[tuple, np.ndarray] = {}


def _remember(key: tuple, view: np.ndarray) -> np.ndarray:
    _OVERVIEWS[key] = view
    while len(_OVERVIEWS) > 8:  # a few coarse views: the co-registration's, the quicklook's, of both dates
        _OVERVIEWS.pop(next(iter(_OVERVIEWS)))
    return view


def _outer(window: Window) -> Window:
    """The smallest whole-pixel window holding ``window``."""
    col, row = math.floor(window.col_off), math.floor(window.row_off)
    return Window(col, row, math.ceil(window.col_off + window.width) - col, math.ceil(window.row_off + window.height) - row)


def _cell_sums(data: np.ndarray, factor: int, dtype: type) -> np.ndarray:
    """Exact sums of the ``factor`` x ``factor`` cells of ``data`` [bands, h, w] (cut cells at the bottom and
    right edges hold fewer pixels): [bands, ceil(h / f), ceil(w / f)] of ``dtype``.

    The rows of a cell are added first, ``factor`` adds of whole contiguous rows into the
    accumulator, then its columns the same way: 2x faster than a ``sum`` over an axis of a
    reshaped view (which casts through buffers) and 10x faster than masking every pixel.
    """
    bands, h, w = data.shape
    rows, cols = h // factor, w // factor
    by_rows = np.zeros((bands, -(-h // factor), w), dtype=dtype)
    body, whole = data[:, : rows * factor].reshape(bands, rows, factor, w), by_rows[:, :rows]
    for k in range(factor):
        np.add(whole, body[:, :, k], out=whole)
    if rows < by_rows.shape[1]:
        by_rows[:, -1] = data[:, rows * factor:].sum(axis=1, dtype=dtype)
    out = np.zeros((bands, by_rows.shape[1], -(-w // factor)), dtype=dtype)
    cells, whole = by_rows[:, :, : cols * factor].reshape(bands, by_rows.shape[1], cols, factor), out[:, :, :cols]
    for k in range(factor):
        np.add(whole, cells[..., k], out=whole)
    if cols < out.shape[2]:
        out[:, :, -1] = by_rows[:, :, cols * factor:].sum(axis=2, dtype=dtype)
    return out


def _block_mean(src, file: BandFile, indexes: list[int], window: Window, factor: int) -> np.ndarray:
    """``window`` of ``src`` averaged over ``factor`` x ``factor`` pixels: float32 [bands, ceil(h / f), ceil(w / f)], NaN where no data.

    Read in full-width strips with every band at once: one pass over the file's blocks. GDAL's own
    decimated read (``out_shape`` with averaging) went band by band and so read a pixel-interleaved
    file once per band (6.7 GB read for a 10 000 px pair).
    """
    h, w = int(window.height), int(window.width)
    rows_out, cols_out = math.ceil(h / factor), math.ceil(w / factor)
    out = np.empty((len(indexes), rows_out, cols_out), dtype=np.float32)
    floating = np.issubdtype(np.dtype(file.dtype), np.floating)
    # no mask to read: integer data whose masks are all valid (no nodata, no alpha), the common case
    all_valid = not (file.nodata_given or floating) and all(
        MaskFlags.all_valid in src.mask_flag_enums[i - 1] for i in indexes)
    step = factor * max(1, 512 // factor)
    # a cell of <= 256 x 256 unsigned 16-bit values sums below 2**32; anything else in 64 bits
    small = np.dtype(file.dtype).kind == "u" and np.dtype(file.dtype).itemsize <= 2 and factor <= 256
    accumulator = np.uint32 if small else np.int64
    for top in range(0, h, step):
        rows = min(step, h - top)
        strip = Window(window.col_off, window.row_off + top, w, rows)
        data = src.read(indexes, window=strip)
        pad_r, pad_c = (-rows) % factor, (-w) % factor
        shape = ((rows + pad_r) // factor, factor, (w + pad_c) // factor, factor)
        if all_valid:
            sums = _cell_sums(data, factor, accumulator)
            if not (pad_r or pad_c):
                values = sums.astype(np.float32) / (factor * factor)
            else:  # cells cut by the window's last row or column hold fewer pixels
                counts = np.full(shape[::2], factor * factor)
                counts[-1, :] = (factor - pad_r) * factor
                counts[:, -1] = (factor - pad_c) * factor
                counts[-1, -1] = (factor - pad_r) * (factor - pad_c)
                values = sums / counts
        else:
            if file.nodata_given:
                ok = np.all(data != np.asarray(file.nodata, dtype=data.dtype), axis=0)
            else:
                ok = np.all(src.read_masks(indexes, window=strip) > 0, axis=0)
            if floating:
                ok &= np.isfinite(data).all(axis=0)
            data = np.pad(np.where(ok, data, 0), ((0, 0), (0, pad_r), (0, pad_c)))
            counts = np.pad(ok, ((0, pad_r), (0, pad_c))).reshape(shape).sum(axis=(1, 3))
            sums = data.reshape(len(indexes), *shape).sum(axis=(2, 4), dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                values = np.where(counts > 0, sums / counts, np.nan)
        out[:, top // factor: top // factor + shape[0]] = values
    return out


def _read_date_overview(image: DateImage, bands: Sequence[str], grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """One date's ``bands`` on the whole coarse ``grid``: each file decimated once, then resampled in memory."""
    out = np.full((len(bands), grid.height, grid.width), np.nan, dtype=np.float32)
    valid = np.ones(grid.shape, dtype=bool)
    per_file: dict[int, list[tuple[int, int]]] = {}
    for position, name in enumerate(bands):
        file_index, band_index = image.bands[image.names.index(name)]
        per_file.setdefault(file_index, []).append((position, band_index))
    for file_index, items in per_file.items():
        file = image.files[file_index]
        with file.open() as src:
            left, bottom, right, top = transform_bounds(grid.crs, file.crs, *grid.bounds, densify_pts=21)
            window = _outer(from_bounds(left, bottom, right, top, transform=src.transform)).intersection(
                Window(0, 0, src.width, src.height))
            native = file.resolution_in(grid.crs)
            factor = max(1, int(min(grid.res) / native))
            indexes = [b for _, b in items]
            stat = os.stat(file.path) if os.path.exists(file.path) else None  # a file rewritten in place is read again
            key = (str(file.path), stat and (stat.st_mtime_ns, stat.st_size), file.vrt, tuple(window.flatten()), factor,
                   tuple(indexes), file.nodata)
            on_grid = key + (grid.crs.to_wkt(), tuple(grid.transform), grid.shape)
            target = _OVERVIEWS.get(on_grid)
            if target is None:
                data = _OVERVIEWS.get(key)
                if data is None:
                    data = _remember(key, _block_mean(src, file, indexes, window, factor))
                source = src.window_transform(window) * Affine.scale(factor, factor)
                if data.shape[1:] == grid.shape and file.crs == grid.crs and source.almost_equals(grid.transform, 1e-9):
                    target = data  # the cells are the grid's (Grid.decimated of the file's own grid): nothing to resample
                else:
                    target = np.full((len(indexes), grid.height, grid.width), np.nan, dtype=np.float32)
                    reproject(data, target, src_transform=source, src_crs=file.crs, dst_transform=grid.transform,
                              dst_crs=grid.crs, src_nodata=np.nan, dst_nodata=np.nan, resampling=Resampling.bilinear)
                _remember(on_grid, target)
        out[[p for p, _ in items]] = target
        valid &= np.isfinite(target).all(axis=0)
    return out, valid


def align_pair(
    before: DateImage,
    after: DateImage,
    *,
    crs: str | CRS | None = None,
    resolution: float | tuple[float, float] | None = None,
    aoi: str | Path | None = None,
) -> AlignedPair:
    """Both dates on one grid over their common footprint, with their common bands.

    See :func:`common_grid` for how the grid is chosen. ``aoi`` is a vector file (any CRS).
    """
    bands = common_bands(before.names, after.names)
    mask = None
    if aoi is not None:
        mask = PolygonMask(read_polygons(aoi, target_crs(before, crs), what="AOI").geometry)
    grid = common_grid(before, after, crs=crs, resolution=resolution, aoi=mask)
    log.info("common grid %s, %dx%d px at %g, bands %s", grid.crs.to_string(), grid.width, grid.height, grid.res[0], bands)
    return AlignedPair(before, after, grid, bands, aoi=mask)


