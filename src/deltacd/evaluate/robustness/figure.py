"""The robustness figure: one panel per perturbation, a score against strength, one line per method."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deltacd.evaluate.robustness.rows import ScoreRow

__all__ = ["plot_robustness"]


def plot_robustness(rows: Sequence[ScoreRow], path: str | Path, *, metric: str = "f1", title: str = "") -> Path:
    """One panel per perturbation: ``metric`` against strength, one line per method.

    A dotted horizontal line marks each method's unperturbed score.
    """
    perts = list(dict.fromkeys(r.perturbation for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    ncols = min(3, len(perts))
    nrows = math.ceil(len(perts) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + (0.5 if title else 0)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, pert in zip(axes.flat, perts, strict=False):
        units = next(r.units for r in rows if r.perturbation == pert)
        for m in methods:
            mine = sorted((r for r in rows if r.perturbation == pert and r.method == m), key=lambda r: r.strength)
            if not mine:
                continue
            xs = [r.strength for r in mine]
            ys = [r.score(metric) for r in mine]
            ax.plot(xs, ys, marker="o", ms=4, color=colours[m], label=m)
            base = [r.score(metric) for r in mine if r.strength == 0]
            if base:
                ax.axhline(base[0], color=colours[m], ls=":", lw=0.8)
        ax.set_title(pert)
        ax.set_xlabel(units)
        ax.set_ylabel(metric.upper() if metric in ("f1", "iou") else metric)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(perts):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
