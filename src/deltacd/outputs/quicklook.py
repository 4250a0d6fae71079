"""quicklook.png: before | after | change polygons drawn over after, read at reduced resolution."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from scipy import ndimage  # noqa: E402

from deltacd.io.bands import RGB, SENTINEL2_EQUIVALENT  # noqa: E402
from deltacd.io.grid import Grid  # noqa: E402

#: Longer side of the quicklook's coarse view, pixels.
QUICKLOOK_SIZE = 1024


class ChangeEdges:
    """The cells of the quicklook's coarse grid that hold a pixel on the edge of a change.

    Filled block by block from the change mask as it is written (:meth:`add`): a pixel is on an
    edge when it is changed and one of its 4 neighbours is not, so these are the pixels the
    polygons' outlines run along, and their cells are what burning the outlines at the
    quicklook's scale marks. Vectorised on the mask blocks, where rasterising the polygons'
    boundaries turned every vertex into Python tuples (1.7 s for the 34 000 polygons of a
    10 000 px IR-MAD run, and gigabytes held at 40 000 px). Only an outline lying exactly on a
    mask block's edge, which the block cannot see across, is left to the neighbouring cells.
    """

    def __init__(self, grid: Grid, max_size: int = QUICKLOOK_SIZE):
        self.grid = grid
        self.coarse_size = max_size
        self.coarse = grid.decimated(max_size)
        self.factor = round(self.coarse.res[0] / grid.res[0])  # pixels per cell side
        self.cells = np.zeros(self.coarse.shape, dtype=bool)

    def add(self, window: Window, mask: np.ndarray) -> None:
        """Mark the cells of ``mask`` [h, w] (1 = change), the mask of ``window`` of the full grid."""
        changed = mask == 1
        if not changed.any():
            return
        padded = np.pad(changed, 1, mode="edge")  # beyond the block: as the block's own edge pixel
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        self._mark(window, *np.nonzero(changed & ~inner))

    def add_pixels(self, window: Window, pixels: np.ndarray) -> None:
        """Mark the cells of ``pixels``, flat indices in ``window`` (pieces of a change too small to have an inside)."""
        self._mark(window, *np.divmod(pixels, int(window.width)))

    def _mark(self, window: Window, rows: np.ndarray, cols: np.ndarray) -> None:
        self.cells[(rows + int(window.row_off)) // self.factor, (cols + int(window.col_off)) // self.factor] = True


def display_bands(bands: tuple[str, ...]) -> list[int]:
    """Indexes of the bands to show: R,G,B; else N,R,G (false colour); the same with Sentinel-2 names
    (B04,B03,B02; B08,B04,B03); else the first band."""
    for wanted in (RGB, ("N", "R", "G")):
        for names in (wanted, tuple(SENTINEL2_EQUIVALENT[b] for b in wanted)):
            if all(b in bands for b in names):
                return [bands.index(b) for b in names]
    return [0]


def stretch(values: np.ndarray, valid: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None):
    """2-98 % linear stretch of [C, h, w] to [h, w, C] in 0..1; returns the image and the limits used."""
    if low is None:
        sample = values[:, valid] if valid.any() else values.reshape(len(values), -1)
        low, high = np.percentile(sample, 2, axis=1), np.percentile(sample, 98, axis=1)
    span = np.where(high > low, high - low, 1.0)
    image = np.clip((values - low[:, None, None]) / span[:, None, None], 0, 1)
    image[:, ~valid] = 1.0  # nodata shown white
    image = np.moveaxis(image, 0, -1)
    return (image[..., 0] if image.shape[-1] == 1 else image), low, high


def write_quicklook(pair, edges: ChangeEdges, path: str | Path, *, polygons: int, title: str = "") -> Path:
    """Draw before | after | the outlines of the changes (``edges``, :class:`ChangeEdges`) over after;
    ``polygons``: how many changes, for the panel's title."""

    # The outlines are shown as one image of the quicklook's own cells: the same picture at this
    # scale as drawing each polygon, where a scene's hundreds of thousands of pixel-staircase
    # polygons made matplotlib take gigabytes (2.75 GB peak at 40 000 px) and seconds.
    def changes(ax, grid) -> None:
        if not edges.cells.any():
            return
        burnt = ndimage.binary_dilation(edges.cells)  # 2 px, so that the figure's own downsampling keeps every outline
        left, bottom, right, top = grid.bounds
        ax.imshow(np.ma.masked_equal(burnt, 0), cmap=ListedColormap(["red"]), extent=(left, right, bottom, top),
                  interpolation="nearest")

    return _three_panels(pair, path, f"changes ({polygons} polygons)", changes, max_size=edges.coarse_size, title=title)


def write_damage_quicklook(pair, buildings: gpd.GeoDataFrame, path: str | Path, *, max_size: int = QUICKLOOK_SIZE, title: str = "") -> Path:
    """Draw pre | post | buildings coloured by damage grade over post, with a legend."""
    from matplotlib.patches import Patch

    from deltacd.outputs.grades import GRADE_COLOURS, GRADE_LABELS

    def grades(ax, grid) -> None:
        for grade, colour in GRADE_COLOURS.items():
            chosen = buildings[buildings["damage_grade"] == grade]
            if not chosen.empty:
                chosen.plot(ax=ax, facecolor=colour, edgecolor="black", linewidth=0.3, alpha=0.85)
        counts = buildings["damage_grade"].value_counts()
        ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=f"{GRADE_LABELS[g]} ({int(counts.get(g, 0))})")
                           for g, c in GRADE_COLOURS.items()], loc="lower right", fontsize=8, framealpha=0.85)

    return _three_panels(pair, path, f"damage ({len(buildings)} buildings)", grades, max_size=max_size, title=title,
                         labels=("pre-event", "post-event"))


def _three_panels(pair, path, third: str, draw, *, max_size: int, title: str, labels=("before", "after")) -> Path:
    grid = pair.grid.decimated(max_size)
    block = pair.read_overview(grid)
    show = display_bands(pair.bands)
    before, low, high = stretch(block.before[show], block.valid)
    after, _, _ = stretch(block.after[show], block.valid, low, high)
    left, bottom, right, top = grid.bounds
    extent = (left, right, bottom, top)
    aspect = grid.height / grid.width
    fig, axes = plt.subplots(1, 3, figsize=(15, 5 * aspect + 0.8), constrained_layout=True)
    cmap = "gray" if before.ndim == 2 else None
    for ax, image, label in zip(axes, (before, after, after), (*labels, third), strict=True):
        ax.imshow(image, extent=extent, cmap=cmap, interpolation="nearest")
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
    draw(axes[2], grid)
    axes[2].set_xlim(left, right)
    axes[2].set_ylim(bottom, top)
    axes[2].set_xlabel("")
    axes[2].set_ylabel("")
    if title:
        fig.suptitle(title)
    path = Path(path)
    # zlib level 3, not PIL's 6: the same pixels, 0.08 s instead of 0.21 s and 1.1 MB instead of 1.8 MB
    # for a 5 000 px scene's quicklook (level 6 does worse on these noisy images)
    fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return path
