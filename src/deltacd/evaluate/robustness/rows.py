"""Rows of a robustness or transfer study: the labelled pairs, the pixel counts of each run, their pooling and table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from deltacd.metrics import metric_from_counts

__all__ = ["CrossDatasetResult", "LabelledPair", "Reference", "RobustnessResult", "ScoreRow", "format_table", "pool_rows"]

#: A change reference: a raster file (0 = no change, non-zero = change, ``ignore_value`` and
#: nodata not counted) or an array on the output grid with the same convention.
Reference = str | Path | np.ndarray

_METRICS = ("f1", "precision", "recall", "iou")


@dataclass(frozen=True)
class LabelledPair:
    """One labelled pair: two dates, a reference, and detect options specific to it.

    Attributes
    ----------
    name
        Short name (a city, a crop), used in tables.
    before, after
        As for :func:`deltacd.detect`: a raster file, a folder of single-band rasters or a list of files.
    reference
        See :data:`Reference`.
    source
        Data set the pair comes from (``"LEVIR-CD"``), for :func:`cross_dataset`.
    options
        Detect options of this pair (``crs``, ``resolution``, ``bands_before`` ...), applied over
        the study's ``detect_options``.
    """

    name: str
    before: str | Path | list
    after: str | Path | list
    reference: Reference
    source: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreRow:
    """Pixel counts of one detect run (or of several pooled) against the reference.

    ``tp``/``fp``/``fn``/``tn`` count pixels labelled in the reference and valid in the output;
    ``changed_pixels``/``valid_pixels`` count the output's changed and valid pixels. Scores are
    computed from the counts, so pooled rows give micro averages.
    """

    method: str
    pair: str
    perturbation: str
    strength: float
    units: str
    tp: int
    fp: int
    fn: int
    tn: int
    changed_pixels: int
    valid_pixels: int
    threshold: float
    seconds: float
    pairs: int = 1
    source: str = ""
    coreg_dx: float = math.nan
    coreg_dy: float = math.nan

    @property
    def counts(self) -> np.ndarray:
        """Confusion matrix [2, 2], rows = reference (0 no change, 1 change), columns = prediction."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]], dtype=np.int64)

    def score(self, metric: str) -> float:
        """``"f1"``, ``"precision"``, ``"recall"`` or ``"iou"`` of the change class (NaN when 0/0)."""
        return float(metric_from_counts(self.counts, metric))

    @property
    def f1(self) -> float:
        return self.score("f1")

    @property
    def changed_fraction(self) -> float:
        return self.changed_pixels / self.valid_pixels if self.valid_pixels else math.nan

    def as_dict(self) -> dict[str, Any]:
        """The CSV/JSON record: identification, scores, then counts."""
        out: dict[str, Any] = {
            "method": self.method, "source": self.source, "pair": self.pair, "perturbation": self.perturbation,
            "strength": self.strength, "units": self.units,
        }
        out.update({m: self.score(m) for m in _METRICS})
        out.update(
            changed_fraction=self.changed_fraction, threshold=self.threshold, tp=self.tp, fp=self.fp, fn=self.fn,
            tn=self.tn, pairs=self.pairs, seconds=round(self.seconds, 2), coreg_dx=self.coreg_dx, coreg_dy=self.coreg_dy,
        )
        return out


@dataclass(frozen=True)
class RobustnessResult:
    """Where the outputs are, and the rows (pooled over the pairs, and per pair)."""

    out_dir: Path
    rows: tuple[ScoreRow, ...]
    pair_rows: tuple[ScoreRow, ...]

    @property
    def csv(self) -> Path:
        return self.out_dir / "robustness.csv"

    @property
    def json(self) -> Path:
        return self.out_dir / "robustness.json"

    @property
    def png(self) -> Path:
        return self.out_dir / "robustness.png"

    def table(self, metric: str = "f1") -> str:
        """A plain-text table: one line per perturbation and strength, one column per method."""
        return format_table(self.rows, metric)


@dataclass(frozen=True)
class CrossDatasetResult:
    """Scores of one model per source (pooled over its pairs) and per pair."""

    out_dir: Path
    rows: tuple[ScoreRow, ...]
    pair_rows: tuple[ScoreRow, ...]

    @property
    def csv(self) -> Path:
        return self.out_dir / "cross_dataset.csv"

    @property
    def json(self) -> Path:
        return self.out_dir / "cross_dataset.json"

    def table(self) -> str:
        lines = [f"{'source':16s} {'pairs':>5s} {'F1':>6s} {'prec':>6s} {'recall':>6s} {'IoU':>6s}"]
        for r in self.rows:
            lines.append(f"{r.source:16s} {r.pairs:5d} {r.score('f1'):6.3f} {r.score('precision'):6.3f} "
                         f"{r.score('recall'):6.3f} {r.score('iou'):6.3f}")
        return "\n".join(lines)


def pool_rows(rows: Sequence[ScoreRow], *, by: tuple[str, ...] = ("method", "perturbation", "strength")) -> list[ScoreRow]:
    """Sum the counts of rows that share the ``by`` fields (micro average); first-seen order.

    The pooled ``threshold`` is the median over the rows, ``seconds`` the sum, ``pairs`` the
    number of rows pooled; fields not in ``by`` and not summed become ``"pooled"`` (strings) or NaN.
    """
    groups: dict[tuple, list[ScoreRow]] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, k) for k in by), []).append(row)
    summed = ("tp", "fp", "fn", "tn", "changed_pixels", "valid_pixels", "seconds", "pairs")
    out = []
    for members in groups.values():
        first = members[0]
        values: dict[str, Any] = {}
        for f in fields(ScoreRow):
            if f.name in by:
                values[f.name] = getattr(first, f.name)
            elif f.name in summed:
                values[f.name] = sum(getattr(m, f.name) for m in members)
            elif f.name == "threshold":
                values[f.name] = float(np.median([m.threshold for m in members]))
            elif f.name in ("units", "source"):
                distinct = {getattr(m, f.name) for m in members}
                values[f.name] = distinct.pop() if len(distinct) == 1 else "pooled"
            elif f.name in ("coreg_dx", "coreg_dy"):
                found = [getattr(m, f.name) for m in members if not math.isnan(getattr(m, f.name))]
                values[f.name] = float(np.median(found)) if found else math.nan
            else:
                values[f.name] = "pooled" if len(members) > 1 else getattr(first, f.name)
        out.append(ScoreRow(**values))
    return out


def format_table(rows: Sequence[ScoreRow], metric: str = "f1") -> str:
    """Plain-text table: one line per perturbation and strength, one ``metric`` column per method."""
    methods = list(dict.fromkeys(r.method for r in rows))
    keys = list(dict.fromkeys((r.perturbation, r.strength, r.units) for r in rows))
    index = {(r.method, r.perturbation, r.strength): r for r in rows}
    width = max(8, *(len(m) for m in methods))
    lines = [f"{'perturbation':12s} {'strength':>8s} {'units':32s} " + " ".join(f"{m:>{width}s}" for m in methods)]
    for pert, strength, units in keys:
        cells = []
        for m in methods:
            row = index.get((m, pert, strength))
            cells.append(f"{row.score(metric):{width}.3f}" if row is not None else " " * (width - 1) + "-")
        lines.append(f"{pert:12s} {strength:8g} {units[:32]:32s} " + " ".join(cells))
    return "\n".join(lines)
