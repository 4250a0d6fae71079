"""quicklook.png: before | after | change polygons drawn over after, read at reduced resolution."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import shapely  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from rasterio.features import rasterize  # noqa: E402
from scipy import ndimage  # noqa: E402

from deltacd.io.bands import RGB, SENTINEL2_EQUIVALENT  # noqa: E402

#: Polygons burnt per rasterize() call in the quicklook.
_RASTERIZE_CHUNK = 10_000


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


def write_quicklook(pair, polygons: gpd.GeoDataFrame, path: str | Path, *, max_size: int = 1024, title: str = "") -> Path:
    """Draw before | after | changes over after, the scene read at ``max_size`` pixels at most."""

    # The outlines are burnt into the quicklook's own pixels (every pixel a boundary touches) and
    # shown as one image: the same picture at this scale as drawing each polygon, where a scene's
    # hundreds of thousands of pixel-staircase polygons made matplotlib take gigabytes (2.75 GB
    # peak at 40 000 px) and seconds.
    def changes(ax, grid) -> None:
        if polygons.empty:
            return
        burnt = np.zeros(grid.shape, dtype=np.uint8)
        geometries = polygons.geometry.values
        # in chunks: rasterize() holds every shape as Python coordinate tuples at once (+2 GB for the
        # 239 000 polygons of a 40 000 px scene, +0.2 GB in chunks, the same pixels)
        for start in range(0, len(geometries), _RASTERIZE_CHUNK):
            lines = shapely.boundary(geometries[start:start + _RASTERIZE_CHUNK])
            rasterize(((line, 1) for line in lines), out=burnt, transform=grid.transform, all_touched=True)
        burnt = ndimage.binary_dilation(burnt)  # 2 px, so that the figure's own downsampling keeps every outline
        left, bottom, right, top = grid.bounds
        ax.imshow(np.ma.masked_equal(burnt, 0), cmap=ListedColormap(["red"]), extent=(left, right, bottom, top),
                  interpolation="nearest")

    return _three_panels(pair, path, f"changes ({len(polygons)} polygons)", changes, max_size=max_size, title=title)


def write_damage_quicklook(pair, buildings: gpd.GeoDataFrame, path: str | Path, *, max_size: int = 1024, title: str = "") -> Path:
    """Draw pre | post | buildings coloured by damage grade over post, with a legend."""
    from matplotlib.patches import Patch

    from deltacd.damage.grades import GRADE_COLOURS, GRADE_LABELS

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
    grid = pair.grid.scaled(max_size)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
