"""Figures of the evaluation and comparison reports: confusion matrix, PR curve, F1 vs threshold, agreement map, from/to matrix.

Each function draws from numbers already computed (nothing here reads a full-resolution raster:
maps are read at reduced resolution) and writes one PNG with matplotlib's Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from deltacd.metrics import PRCurve  # noqa: E402

__all__ = [
    "AGREEMENT_COLOURS",
    "AGREEMENT_LABELS",
    "DAMAGE_AGREEMENT",
    "DAMAGE_AGREEMENT_COLOURS",
    "agreement_figure",
    "palette",
    "confusion_matrix_figure",
    "f1_threshold_figure",
    "pr_curve_figure",
    "transition_matrix_figure",
]

#: Agreement of two damage studies per building (:mod:`deltacd.evaluate.damage`), and its colours.
DAMAGE_AGREEMENT = {0: "same grade", 1: "ours more severe", 2: "ours less severe", 3: "only ours", 4: "only reference",
                    5: "unclassified"}
DAMAGE_AGREEMENT_COLOURS = {0: "#1a9641", 1: "#d7191c", 2: "#2c7bb6", 3: "#fdae61", 4: "#7b3294", 5: "#bdbdbd"}
#: Colours of agreement codes 0 (neither), 1 (only ours), 2 (only PCC), 3 (both).
AGREEMENT_COLOURS = ("#f2f2f2", "#d7301f", "#2b8cbe", "#7a0177")
AGREEMENT_LABELS = ("no change in either", "change only in ours", "change only in the comparison map", "change in both")


def palette(n: int) -> list[str]:
    """``n`` distinct colours (hex) for classes or transitions, as many as asked: tab10, then tab20's light
    shades (their greys left out: grey means "other" on the maps), then hues spread around the colour wheel
    (golden-angle steps), so no item is left grey."""
    greys = {"#7f7f7f", "#c7c7c7"}
    base = [h for h in (matplotlib.colors.to_hex(c) for c in (*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20").colors[1::2]))
            if h not in greys]
    extra = [matplotlib.colors.to_hex(matplotlib.colors.hsv_to_rgb(((0.13 + i * 0.618034) % 1.0, 0.65, 0.85)))
             for i in range(max(0, n - len(base)))]
    return (base + extra)[:n]


def _save(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _class_matrix_axes(k: int) -> tuple[plt.Figure, plt.Axes]:
    """A figure for a ``k`` x ``k`` matrix of classes, sized for its cells' labels."""
    size = max(3.6, 0.9 * k + 2.2)
    return plt.subplots(figsize=(size + 0.8, size), constrained_layout=True)


def _save_class_matrix(
    fig: plt.Figure, ax: plt.Axes, image: matplotlib.cm.ScalarMappable, names: Sequence[str], path: str | Path, *,
    axes: tuple[str, str], colour: str, title: str,
) -> Path:
    """A class matrix's class names on both axes, ``axes`` (x and y titles), colour bar and title; then saved."""
    k = len(names)
    ax.set_xticks(range(k), names, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    fig.colorbar(image, ax=ax, label=colour)
    ax.set_title(title)
    return _save(fig, path)


def confusion_matrix_figure(counts: np.ndarray, names: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Heatmap of a ``[K, K]`` confusion matrix (rows = reference, columns = prediction).

    Cells show the pixel count and the share of the reference row; the colour is the row share,
    so a good map has a dark diagonal whatever the class sizes.
    """
    c = np.asarray(counts, dtype=np.float64)
    rows = c.sum(axis=1, keepdims=True)
    share = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
    k = c.shape[0]
    fig, ax = _class_matrix_axes(k)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(c[i, j]):,}\n{share[i, j]:.1%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    return _save_class_matrix(fig, ax, image, names, path, axes=("prediction", "reference"),
                              colour="share of the reference class", title=title or "confusion matrix (pixels)")


def pr_curve_figure(
    curve: PRCurve,
    path: str | Path,
    *,
    mask_point: tuple[float, float] | None = None,
    best: tuple[float, float] | None = None,
    title: str = "",
) -> Path:
    """Precision against recall over all thresholds of the score.

    Parameters
    ----------
    curve
        From :meth:`ScoreHistogram.pr_curve`.
    mask_point
        (recall, precision) of the evaluated mask, drawn as a dot.
    best
        (threshold, F1) of the best-F1 threshold, for the legend.
    """
    ok = ~np.isnan(curve.precision) & ~np.isnan(curve.recall)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), constrained_layout=True)
    ax.plot(curve.recall[ok], curve.precision[ok], color="#08519c", lw=1.6, label="score thresholds")
    for f in (0.2, 0.4, 0.6, 0.8):  # iso-F1 lines help reading the trade-off
        r = np.linspace(f / (2 - f) + 1e-9, 1, 200)
        ax.plot(r, f * r / (2 * r - f), color="0.85", lw=0.7, zorder=0)
        ax.annotate(f"F1={f}", (1.0, f / (2 - f)), fontsize=7, color="0.55", ha="right", va="bottom")
    if best is not None and not math.isnan(best[1]):
        i = int(np.argmin(np.abs(curve.thresholds - best[0])))
        ax.plot(curve.recall[i], curve.precision[i], "o", mfc="none", color="#238b45", label=f"best F1 {best[1]:.3f} (t={best[0]:.4g})")
    if mask_point is not None and not any(math.isnan(v) for v in mask_point):
        ax.plot(*mask_point, "o", color="#d7301f", label="evaluated mask")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall (change found)")
    ax.set_ylabel("precision (mapped change that is real)")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "precision-recall curve")
    return _save(fig, path)


def f1_threshold_figure(curve: PRCurve, path: str | Path, *, threshold: float | None = None, title: str = "") -> Path:
    """F1, precision and recall against the score threshold; the mask's threshold as a vertical line."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    t = curve.thresholds
    ax.plot(t, curve.f1, color="#08519c", lw=1.8, label="F1")
    ax.plot(t, curve.precision, color="0.5", lw=1, ls="--", label="precision")
    ax.plot(t, curve.recall, color="0.5", lw=1, ls=":", label="recall")
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="#d7301f", lw=1, label=f"mask threshold {threshold:.4g}")
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("score threshold (change where score >= threshold)")
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    ax.set_title(title or "F1 against threshold")
    return _save(fig, path)


def _read_small(path: str | Path, max_size: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Band 1 at most ``max_size`` px on its longer side (nearest: codes stay codes) and its extent."""
    with rasterio.open(path) as src:
        factor = max(src.width, src.height) / max_size
        shape = (max(1, round(src.height / max(factor, 1))), max(1, round(src.width / max(factor, 1))))
        values = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        left, bottom, right, top = src.bounds
    return values, (left, right, bottom, top)


def agreement_figure(
    agreement: str | Path,
    path: str | Path,
    *,
    names: tuple[str, str] = ("ours", "comparison"),
    shares: Sequence[float] | None = None,
    reference: str | Path | None = None,
    max_size: int = 1000,
    title: str = "",
) -> Path:
    """Quicklook of an agreement raster (0 neither, 1 only ours, 2 only the other, 3 both, 255 nodata).

    Parameters
    ----------
    names
        What the two maps are called in the legend.
    shares
        Share of the valid area of codes 0..3, appended to the legend entries.
    reference
        Optional 0/1 reference raster on the same grid, drawn as black outlines of its change.
    """
    values, extent = _read_small(agreement, max_size)
    shown = np.ma.masked_where(values > 3, values)
    cmap = ListedColormap(AGREEMENT_COLOURS).with_extremes(bad="white")
    aspect = values.shape[0] / values.shape[1]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 8 * aspect) + 1.2), constrained_layout=True)
    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=3.5, extent=extent, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    extra = []
    if reference is not None:
        ref, _ = _read_small(reference, max_size)
        if ref.shape == values.shape and (ref == 1).any():
            ax.contour((ref == 1).astype(float), levels=[0.5], colors="black", linewidths=0.6, extent=extent, origin="upper")
            extra.append(matplotlib.lines.Line2D([], [], color="black", lw=0.8, label="reference change"))
    labels = ("no change in either", f"change only in {names[0]}", f"change only in {names[1]}", "change in both")
    handles = []
    for code, (colour, label) in enumerate(zip(AGREEMENT_COLOURS, labels, strict=True)):
        text = label if shares is None else f"{label} ({shares[code]:.1%})"
        handles.append(Patch(facecolor=colour, edgecolor="0.6", label=text))
    handles += extra
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title or f"agreement of {names[0]} and {names[1]}")
    return _save(fig, path)


def transition_matrix_figure(area_ha: np.ndarray, names: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Heatmap of a from/to matrix in hectares (rows = class at date 1, columns = class at date 2).

    The colour is logarithmic so small transitions stay visible next to the stable classes.
    """
    a = np.asarray(area_ha, dtype=np.float64)
    k = a.shape[0]
    fig, ax = _class_matrix_axes(k)
    positive = a[a > 0]
    vmin = float(positive.min()) if positive.size else 1e-3
    vmax = float(positive.max()) if positive.size else 1.0
    norm = matplotlib.colors.LogNorm(vmin=vmin, vmax=max(vmax, vmin * 1.0001))
    image = ax.imshow(np.where(a > 0, a, np.nan), cmap="YlOrRd", norm=norm)
    for i in range(k):
        for j in range(k):
            dark = a[i, j] > 0 and norm(a[i, j]) > 0.6
            ax.text(j, i, f"{a[i, j]:.3g}", ha="center", va="center", fontsize=8, color="white" if dark else "black",
                    fontweight="bold" if i == j else "normal")
    return _save_class_matrix(fig, ax, image, names, path, axes=("class at date 2", "class at date 1"),
                              colour="area (ha)", title=title or "from/to matrix (ha)")
