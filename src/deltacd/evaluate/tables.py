"""``metrics.csv`` of an evaluation: one row per metric, class and stratum, read from metrics.json.

Columns :data:`CSV_FIELDS`: ``level`` (pixel, stratum, area, object, score), ``metric``, ``class``,
``stratum``, ``value`` and the 95 % interval ``ci_low``, ``ci_high`` where there is one (empty
cells for none). Areas are in hectares.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["CSV_FIELDS", "csv_rows", "write_csv"]

CSV_FIELDS = ("level", "metric", "class", "stratum", "value", "ci_low", "ci_high")


def csv_rows(metrics: dict[str, Any], binary: bool) -> list[dict[str, Any]]:
    """One row per metric / class / stratum (values from metrics.json)."""
    rows: list[dict[str, Any]] = []
    names = metrics["classes"]["names"]

    def add(level, metric, value, cls="", stratum="", ci=None):
        rows.append({
            "level": level, "metric": metric, "class": cls, "stratum": stratum, "value": value,
            "ci_low": None if ci is None else ci.get("low"), "ci_high": None if ci is None else ci.get("high"),
        })

    def pixel_rows(scores: dict[str, Any], cis: dict[str, Any], stratum: str = ""):
        level = "stratum" if stratum else "pixel"
        for m in ("overall_accuracy", "kappa", "macro_f1", "mean_iou"):
            add(level, m, scores[m], "", stratum, cis.get("accuracy" if m == "overall_accuracy" else m))
        for c in names:
            for m in ("precision", "recall", "f1", "iou"):
                if binary:
                    ci = cis.get(m) if c == "change" else None  # binary intervals are those of the change class
                else:
                    ci = cis.get(f"f1_{c}") if m == "f1" else None
                add(level, m, scores[f"{m}_{c}"], c, stratum, ci)
        add(level, "n_pixels", scores["n_pixels"], "", stratum)

    pixel_rows(metrics["pixel"], metrics["pixel_ci"])
    if metrics["area"]:
        for m in ("found_ha", "missed_ha", "false_ha", "reference_ha", "predicted_ha"):
            add("area", m, metrics["area"][m], "change")
    if metrics["area_per_class"]:
        for c, d in metrics["area_per_class"].items():
            for m, v in d.items():
                add("area", m, v, c)
    if metrics["objects"]:
        o = metrics["objects"]
        for m in ("precision", "recall", "f1", "n_reference", "n_predicted", "n_found", "n_matched"):
            add("object", m, o[m], "change")
    if metrics["score"]:
        s = metrics["score"]
        for m in ("best_f1", "best_f1_threshold", "average_precision", "f1_at_mask_threshold", "mask_threshold"):
            if m in s:
                add("score", m, s[m], "change")
    for code, d in (metrics["strata"] or {}).items():
        pixel_rows(d["scores"], d["ci"], stratum=f"{code}" if d["name"] == code else f"{code} {d['name']}")
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
