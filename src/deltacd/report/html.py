"""``report``: one self-contained ``report.html`` for a run or a study, with its figures beside it.

The report is what a team hands over to the people who fund or use a study, in English or French
(``language``, :mod:`deltacd.report.words`). It opens with a summary that a reader can stop after:
the question (the study's ``description``), the data (images, dates, sensor, resolution, CRS,
reference), the method, and a short reading of the results written from the numbers, with their
caveats (an F1 under 0.3 or a kappa under 0.4 says what it means). Then come the sections of
what ran, and only those: maps (full width, legend as drawn, north arrow and scale bar on a white
halo, coordinates, image credit, location inset), co-registration, the score histogram with the
threshold, areas per transition and per zone, the agreement with the current method, the accuracy
with its confidence intervals, damage per building, the uncertainty of a network, deltacd's
warnings, and the run's technical details last. Every table is followed by the definition of each
of its columns (visible on screen and on paper).

Figures are PNG files in ``figures/`` and are also embedded (base64) in the HTML, which therefore
opens offline, on its own, in any browser. A print stylesheet lays the report on A4 pages: printing
to PDF from the browser keeps every figure and table on one page, hides the navigation and writes
links out. With ``webmap`` an interactive map is written to ``webmap/index.html``
(:mod:`deltacd.report.webmap`).

The report reads only the outputs of the run (``run.json``, the COGs at overview resolution, the
GeoPackages, the CSV and JSON tables) and the study file, never the full-resolution scene.
"""

from __future__ import annotations

import base64
import html
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deltacd._version import __version__
from deltacd.errors import InputError
from deltacd.io.outputs import staged_output
from deltacd.outputs.layout import RUN_RECORD, DamageOutputs, DetectOutputs, run_kind
from deltacd.report import maps
from deltacd.report.words import Words, check_language

#: The sections a report can hold, in order; a report holds those of the steps that ran (``summary`` always).
SECTIONS = ("summary", "maps", "coregistration", "histogram", "transitions", "agreement", "accuracy", "damage",
            "uncertainty", "warnings", "details")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f1f1}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:1em 0}figure img{width:100%;height:auto;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}
figure.chart img{width:auto;max-width:min(100%,820px)}
.none{color:#777;font-style:italic}
.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:.4em .8em;margin:.3em 0}
.caveat{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .8em;margin:.4em 0}
nav{margin:1em 0}nav a{margin-right:1em}
table.matrix td{text-align:right;font-variant-numeric:tabular-nums}table.matrix td.diag{background:#fff3c4}
table.matrix td.total,table.matrix tr.total td{font-weight:bold;background:#f7f7f7}table.matrix caption{text-align:left;font-weight:bold}
dl.defs{font-size:.82em;color:#333;margin:.2em 0 1em;display:grid;grid-template-columns:max-content 1fr;gap:.1em .8em}
dl.defs dt{font-weight:bold}dl.defs dd{margin:0}
details{margin:.4em 0}summary{cursor:pointer}
@page{size:A4;margin:14mm 12mm 16mm 12mm}
@media print{
 body{max-width:none;margin:0;padding:0;font-size:10pt;line-height:1.35}
 nav,.screen-only{display:none}
 h1{font-size:18pt}h2{font-size:14pt;margin-top:1.2em;break-after:avoid;page-break-after:avoid}h3{break-after:avoid}
 figure,table,dl.defs,.caveat,.warning,tr{break-inside:avoid;page-break-inside:avoid}
 figure img{max-height:225mm;width:auto;max-width:100%;object-fit:contain}figure.chart img{max-width:75%;max-height:150mm}
 section{break-before:auto}section#maps,section#details{break-before:page}
 a[href^="webmap"]::after,a[href^="figures"]::after{content:" (" attr(href) ")";font-size:.85em;color:#555}
 details>*{display:block}details>summary{list-style:none;font-weight:bold}
 table{font-size:8.5pt}
}
"""


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_parts(source: Path) -> dict[str, Any]:
    """The run folders a report draws from: a study folder's steps, or one detect / damage run."""
    steps = ("detect", "damage", "compare", "evaluate", "evaluate-damage")
    study = _json(source / "study.json")
    if study is not None:  # the steps done so far, from their records
        study["records"] = {p.name.removesuffix(".step.json"): _json(p) for p in sorted(source.glob("*.step.json"))}
    parts: dict[str, Any] = {"study": study}
    for step in steps:
        folder = source / step
        parts[step] = folder if folder.is_dir() else None
    if study is None:
        record = _json(source / RUN_RECORD)
        if record is None:
            raise InputError(f"{source}: neither a study folder (study.json) nor a detect or damage run (run.json); "
                             "give the output folder of deltacd run, detect or damage")
        parts["damage" if run_kind(source) is DamageOutputs else "detect"] = source
    return parts


def study_file(parts: dict[str, Any]) -> dict[str, Any]:
    """The study's settings: those ``study.json`` recorded at the end of the last run, else the study file as
    written (not validated: the report only shows it; a first run's report is written before study.json is
    complete), else {}."""
    config = (parts.get("study") or {}).get("config")
    if isinstance(config, dict):
        return config
    path = (parts.get("study") or {}).get("study_file")
    if not path:
        return {}
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # a moved or edited study file: the report goes on without it
        return {}
    return values if isinstance(values, dict) else {}


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------

def _e(text: Any) -> str:
    return html.escape(str(text))


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _table(rows: list[dict[str, Any]], words: Words, columns: list[str] | None = None, limit: int = 25,
           file: str | None = None) -> str:
    """A table with the headers in the report's language, followed by the definition of each of its columns.

    Decision: a definitions list under the table rather than ``<abbr title>`` tooltips, because tooltips
    vanish on paper and the report is printed."""
    if not rows:
        return f'<p class="none">{_e(words("nothing"))}</p>'
    columns = columns or list(rows[0])
    labels = [(words.column(c) or (c, ""))[0] for c in columns]
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    body = "".join("<tr>" + "".join(
        f"<td class='num'>{_e(words.cell(r.get(c)))}</td>" if _is_number(r.get(c)) else f"<td>{_e(words.cell(r.get(c)))}</td>"
        for c in columns) + "</tr>" for r in rows[:limit])
    more = (f"<p class='none'>{_e(words('more_rows', n=words.integer(len(rows) - limit), file=file or 'CSV'))}</p>"
            if len(rows) > limit else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}" + _definitions(columns, words)


def _definitions(columns: list[str], words: Words) -> str:
    """The definitions of ``columns`` (those the words know), with the CSV's column name for finding it in the files."""
    items = []
    for column in columns:
        known = words.column(column)
        if known:
            items.append(f"<dt>{_e(known[0])} <code>{_e(column)}</code></dt><dd>{_e(known[1])}</dd>")
    if not items:
        return ""
    return f'<dl class="defs" aria-label="{_e(words("definitions"))}">{"".join(items)}</dl>'


def _figure(path: Path | None, caption: str, words: Words) -> str:
    """A PNG embedded with its caption; a chart (not a map: narrower than 1 400 px) is shown at its own width."""
    if path is None or not path.is_file():
        return ""
    data = path.read_bytes()
    width = int.from_bytes(data[16:20], "big") if data[:8] == b"\x89PNG\r\n\x1a\n" else 0
    kind = ' class="chart"' if 0 < width < 1400 else ""
    data = base64.b64encode(data).decode()
    return (f'<figure{kind}><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)} ({_e(words('fig.file'))} <code>figures/{_e(path.name)}</code>)</figcaption></figure>")


def _none(text: str) -> str:
    return f'<p class="none">{_e(text)}</p>'


def _ha(value: float) -> str:
    """Hectares with thousands separators, in English (kept for callers outside the report)."""
    return Words("en").ha(value)


def fromto_matrix(rows: list[dict[str, str]], *, zone: str = "all", value: str = "area_ha",
                  order: list[str] | None = None) -> tuple[list[str], list[str], Any]:
    """A from/to matrix from long rows (``zone``, ``from_class``, ``to_class``, ``value``): row names (class at
    date 1), column names (class at date 2) and the values; only classes with some area, in ``order``
    (unknown names last)."""
    import numpy as np

    chosen = [r for r in rows if r.get("zone", "all") == zone]
    order = list(order or [])
    rank = {name: i for i, name in enumerate(order)}

    def names(key: str) -> list[str]:
        found = {r[key] for r in chosen if float(r[value] or 0)}
        return sorted(found, key=lambda n: (n not in rank, rank.get(n, 0), n))

    sources, targets = names("from_class"), names("to_class")
    matrix = np.zeros((len(sources), len(targets)))
    for r in chosen:
        if r["from_class"] in sources and r["to_class"] in targets:
            matrix[sources.index(r["from_class"]), targets.index(r["to_class"])] += float(r[value] or 0)
    return sources, targets, matrix


def _matrix_html(sources: list[str], targets: list[str], matrix, *, caption: str, diagonal: str, words: Words) -> str:
    """A from/to matrix as a table: rows the class at date 1, columns at date 2, totals, in ha; the diagonal
    (same class at both dates) shaded and named by ``diagonal``."""
    if not sources:
        return _none(f"{caption}: {words('nothing')}")
    head = "".join(f"<th>{_e(t)}</th>" for t in targets)
    body = []
    for i, source in enumerate(sources):
        cells = "".join(
            f'<td class="{"diag" if source == target else ""}">{words.ha(matrix[i, j]) if matrix[i, j] else ""}</td>'
            for j, target in enumerate(targets))
        body.append(f"<tr><th>{_e(source)}</th>{cells}<td class='total'>{words.ha(matrix[i].sum())}</td></tr>")
    totals = "".join(f"<td>{words.ha(v)}</td>" for v in matrix.sum(axis=0))
    body.append(f"<tr class='total'><th>{_e(words('total'))}</th>{totals}<td>{words.ha(matrix.sum())}</td></tr>")
    note = f"<p class='none'>{_e(words('matrix.note', diagonal=diagonal))}</p>"
    return (f"<table class='matrix'><caption>{_e(caption)}</caption><tr><th>{_e(words('from_to'))}</th>{head}"
            f"<th>{_e(words('total'))}</th></tr>{''.join(body)}</table>{note}")


def _matrices(rows: list[dict[str, str]], *, caption: str, diagonal: str, order: list[str], words: Words,
              value: str = "area_ha") -> str:
    """The matrix of every zone together, then one per zone (folded on screen, all shown in print)."""
    out = _matrix_html(*fromto_matrix(rows, value=value, order=order), caption=words("matrix.all", caption=caption),
                       diagonal=diagonal, words=words)
    zones = [z for z in dict.fromkeys(r["zone"] for r in rows) if z != "all"]
    for zone in zones:
        table = _matrix_html(*fromto_matrix(rows, zone=zone, value=value, order=order), caption=f"{caption}, {zone}",
                             diagonal=diagonal, words=words)
        out += f"<details open><summary>{_e(zone)}</summary>{table}</details>"
    return out


def _class_order(compare: Path) -> list[str]:
    """The land-cover classes in the order of the study (the compare step's overview raster keeps it)."""
    try:
        import rasterio

        with rasterio.open(compare / "landcover_overview.tif") as src:
            return json.loads(src.tags().get("classes", "[]"))
    except (OSError, ValueError):  # an older compare folder: names sorted
        return []


# --------------------------------------------------------------------------------------------
# the opening: question, data, method, reading
# --------------------------------------------------------------------------------------------

def _records(parts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s: r for s in ("detect", "damage") if parts.get(s) and (r := _json(parts[s] / RUN_RECORD))}


def _images(info: dict[str, Any], words: Words) -> str:
    files = info.get("files") or []
    if not files:
        return "?"
    if len(files) == 1:
        return Path(files[0]).name
    return words("files", n=len(files), folder=Path(files[0]).parent.name)


def _name(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(Path(str(v)).name for v in value)
    return Path(str(value)).name


def _data(parts: dict[str, Any], records: dict[str, dict[str, Any]], dates, study: dict[str, Any], words: Words,
          credit: str | None) -> list[str]:
    """Sentences on the data: images and dates, sensor, grid, bands, land-cover maps, zones, reference."""
    lines = []
    inputs = study.get("inputs") if isinstance(study.get("inputs"), dict) else {}
    record = records.get("detect") or records.get("damage")
    unknown = words("date.unknown")
    if record:
        lines.append(words("data.images", before=_images(record["inputs"]["before"], words),
                           after=_images(record["inputs"]["after"], words),
                           date_before=dates[0] or unknown, date_after=dates[1] or unknown))
        sensor = maps.sensor_of(record)
        if sensor:
            lines.append(words("data.sensor", sensor=sensor))
        grid = record["grid"]
        res = abs(float(grid["res"][0]))
        area = (record.get("results") or {}).get("valid_pixels")
        area_ha = (area if area is not None else grid["width"] * grid["height"]) * res * res / 10_000
        lines.append(words("data.grid", width=words.integer(grid["width"]), height=words.integer(grid["height"]),
                           res=words.number(res, 3), crs=grid["crs"], area=words.ha(area_ha)))
        bands = record.get("bands")
        if bands:
            lines.append(words("data.bands", bands=", ".join(map(str, bands))))
    if inputs.get("landcover_before") and inputs.get("landcover_after") and parts.get("compare"):
        lines.append(words("data.landcover", before=_name(inputs["landcover_before"]), after=_name(inputs["landcover_after"])))
    elif inputs.get("current_change") and parts.get("compare"):
        lines.append(words("data.current_change", layer=_name(inputs["current_change"])))
    if inputs.get("zones"):
        lines.append(words("data.zones", zones=_name(inputs["zones"]), field=inputs.get("zone_field") or "?"))
    if inputs.get("buildings") and parts.get("damage"):
        lines.append(words("data.buildings", buildings=_name(inputs["buildings"])))
    if inputs.get("reference") and parts.get("evaluate"):
        lines.append(words("data.reference", reference=_name(inputs["reference"])))
    if inputs.get("damage_reference") and parts.get("evaluate-damage"):
        lines.append(words("data.damage_reference", reference=_name(inputs["damage_reference"]),
                           field=inputs.get("damage_reference_field") or "?"))
    if credit:
        lines.append(words("credit", credit=credit) + ".")
    return lines


def _method(parts: dict[str, Any], records: dict[str, dict[str, Any]], words: Words) -> list[str]:
    lines = []
    record = records.get("detect")
    if record:
        method, threshold = record.get("method", {}), record["threshold"]
        options = record.get("options", {})
        mmu = options.get("min_area_m2")
        text = words("method.detect", name=method.get("name", "?"), units=method.get("score_units", ""),
                     threshold=words.number(threshold["value"], 4), rule=threshold.get("rule", ""),
                     mmu=words("method.mmu", area=words.number(mmu)) if mmu else "")
        coreg = record.get("coregistration") or {}
        if coreg.get("corrected") and coreg.get("dx_m") is not None:
            text += words("method.coreg", shift=words.number((coreg["dx_m"] ** 2 + coreg["dy_m"] ** 2) ** 0.5, 2))
        lines.append(text)
    if records.get("damage"):
        lines.append(words("method.damage", name=records["damage"].get("method", {}).get("name", "?")))
    if parts.get("compare"):
        lines.append(words("method.compare"))
    metrics = _json(parts["evaluate"] / "metrics.json") if parts.get("evaluate") else None
    if metrics:
        n_boot = next((v.get("n_boot") for v in (metrics.get("pixel_ci") or {}).values() if isinstance(v, dict)), None)
        lines.append(words("method.evaluate", n_boot=words.integer(n_boot or 0)))
    damage_metrics = _json(parts["evaluate-damage"] / "damage_metrics.json") if parts.get("evaluate-damage") else None
    if damage_metrics:
        lines.append(words("method.evaluate_damage", join=damage_metrics.get("join", "")))
    return lines


def _kappa_meaning(kappa: float, words: Words) -> str:
    """Landis and Koch's reading of kappa, merged into four plain levels."""
    key = "poor" if kappa < 0.2 else "weak" if kappa < 0.4 else "moderate" if kappa < 0.6 else "good"
    return words(f"read.kappa.{key}")


def _f1_reading(f1: float, words: Words) -> tuple[str, bool]:
    """(sentence, is a caveat) for an F1 score."""
    if f1 < 0.3:
        return words("read.f1.low"), True
    if f1 < 0.6:
        return words("read.f1.mid"), True
    return words("read.f1.high"), False


def _reading(parts: dict[str, Any], records: dict[str, dict[str, Any]], warnings: list[str], words: Words) -> list[tuple[str, bool]]:
    """The results in a few sentences, each with whether it is a caveat (drawn as one), from the numbers only."""
    out: list[tuple[str, bool]] = []
    results = (records.get("detect") or {}).get("results") or {}
    if results.get("changed_area_ha") is not None:
        out.append((words("read.changes", area=words.ha(results["changed_area_ha"]),
                          share=words.percent(results.get("changed_fraction") or 0),
                          polygons=words.integer(results.get("polygons", 0))), False))
    metrics = _json(parts["evaluate"] / "metrics.json") if parts.get("evaluate") else None
    if metrics and metrics.get("pixel", {}).get("f1") is not None:
        pixel, ci = metrics["pixel"], metrics.get("pixel_ci") or {}
        f1 = float(pixel["f1"])
        low, high = (ci.get("f1") or {}).get("low"), (ci.get("f1") or {}).get("high")
        out.append((words("read.f1", f1=words.number(f1), low=words.number(low), high=words.number(high),
                          p=words.number(pixel.get("precision")), r=words.number(pixel.get("recall"))), False))
        out.append(_f1_reading(f1, words))
        precision, recall = pixel.get("precision"), pixel.get("recall")
        if precision is not None and precision < 0.5:
            out.append((words("read.precision.low", p=words.number(precision), n=words.integer(100 * precision)), True))
        if recall is not None and recall < 0.5:
            out.append((words("read.recall.low", r=words.number(recall), n=words.integer(100 * recall)), True))
        if pixel.get("kappa") is not None:
            kappa = float(pixel["kappa"])
            out.append((words("read.kappa", kappa=words.number(kappa), meaning=_kappa_meaning(kappa, words)), kappa < 0.4))
        if low is not None and high is not None and high - low > 0.3:
            out.append((words("read.ci_wide", low=words.number(low), high=words.number(high)), True))
    compare = parts.get("compare")
    if compare and (compare / "agreement_by_zone.csv").is_file():
        total = next((r for r in maps.read_csv(compare / "agreement_by_zone.csv") if r.get("zone") == "all"), None)
        if total:
            agreement = float(total["agreement_of_changes"] or 0)
            out.append((words("read.agreement", both=words.ha(float(total["both_ha"])),
                              only_ours=words.ha(float(total["only_ours_ha"])),
                              only_current=words.ha(float(total["only_current_ha"])),
                              agreement=words.number(agreement)), False))
            if agreement < 0.3:
                out.append((words("read.agreement.low"), True))
    elif compare and (compare / "landcover_transitions.csv").is_file():
        changed = [r for r in maps.read_csv(compare / "landcover_transitions.csv")
                   if r["zone"] == "all" and r["changed"] == "True"]
        out.append((words("read.landcover", area=words.ha(sum(float(r["area_ha"]) for r in changed))), False))
    damage = records.get("damage")
    if damage:
        counts = (damage.get("results") or {}).get("per_grade") or {}
        if counts:
            grades = ", ".join(f"{maps.grade_label(g, words.language)} {words.integer(n)}" for g, n in counts.items())
            out.append((words("read.damage", buildings=words.integer(sum(counts.values())), grades=grades), False))
    damage_metrics = _json(parts["evaluate-damage"] / "damage_metrics.json") if parts.get("evaluate-damage") else None
    if damage_metrics:
        f1, kappa = damage_metrics["damaged_f1"], damage_metrics["weighted_kappa"]
        out.append((words("read.damage_eval", f1=words.number(f1["value"]), low=words.number(f1.get("ci_low")),
                          high=words.number(f1.get("ci_high")), kappa=words.number(kappa["value"])), False))
        out.append(_f1_reading(float(f1["value"]), words))
        if kappa["value"] is not None:
            out.append((words("read.kappa", kappa=words.number(kappa["value"]),
                              meaning=_kappa_meaning(float(kappa["value"]), words)), float(kappa["value"]) < 0.4))
    if warnings:
        out.append((words("read.warnings", n=words.integer(len(warnings))), False))
    return out or [(words("read.none"), False)]


def _summary(parts: dict[str, Any], title: str, words: Words, *, description: str = "", dates=(None, None),
             warnings: list[str] | None = None, credit: str | None = None) -> str:
    """The opening section: question, data, method, reading of the results (module notes)."""
    study = study_file(parts)
    description = description or str(study.get("description") or "").strip()
    records = _records(parts)
    out = f"<h3>{_e(words('question'))}</h3>"
    out += f"<p>{_e(description)}</p>" if description else _none(words("no_description"))
    data = _data(parts, records, dates, study, words, credit)
    if data:
        out += f"<h3>{_e(words('data'))}</h3><ul>" + "".join(f"<li>{_e(line)}</li>" for line in data) + "</ul>"
    method = _method(parts, records, words)
    if method:
        out += f"<h3>{_e(words('method'))}</h3><ul>" + "".join(f"<li>{_e(line)}</li>" for line in method) + "</ul>"
    out += f"<h3>{_e(words('reading'))}</h3>"
    for text, caveat in _reading(parts, records, warnings or [], words):
        out += f'<p class="caveat">{_e(text)}</p>' if caveat else f"<p>{_e(text)}</p>"
    return out


def _details(parts: dict[str, Any], words: Words) -> str:
    """The technical details of the run: steps and their time, files, grid, settings, versions (an appendix)."""
    rows = []
    study = parts.get("study")
    if study:
        rows.append({"item": "study", "value": f"{study.get('name')}" + (f" ({study['study_file']})" if study.get("study_file") else "")})
        for name, record in (study.get("records") or {}).items():
            if record:
                rows.append({"item": f"step {name}", "value": f"{record['seconds']:.1f} s, finished {record['finished_utc']}"})
    for step in ("detect", "damage"):
        folder = parts.get(step)
        record = _json(folder / RUN_RECORD) if folder else None
        if not record:
            continue
        for date in ("before", "after"):
            info = record["inputs"][date]
            files = info["files"]
            shown = ", ".join(files) if len(files) <= 3 else f"{len(files)} files in {Path(files[0]).parent}"
            rows.append({"item": f"{step}: {date}", "value": f"{shown} ({','.join(info['bands'])}, {info['crs']}, {info['dtype']})"})
        grid = record["grid"]
        rows.append({"item": f"{step}: grid", "value": f"{grid['crs']}, {grid['width']} x {grid['height']} px at {grid['res'][0]:g}"})
        method = record.get("method", {})
        rows.append({"item": f"{step}: method", "value": f"{method.get('name')} ({method.get('score_units', '')})"})
        rows.append({"item": f"{step}: threshold", "value": f"{record['threshold']['value']:.4g} ({record['threshold']['rule']})"})
        options = record.get("options", {})
        flat = options if "pair" not in options else {**options.get("pair", {}), **options.get("damage", {})}
        rows.append({"item": f"{step}: settings", "value": ", ".join(f"{k}={v}" for k, v in flat.items() if v not in (None, False))})
        rows.append({"item": f"{step}: run", "value": f"deltacd {record['deltacd_version']}, {record.get('created_utc', '')}, "
                                                      f"{record['timings_s'].get('total', 0):.1f} s"})
    if not rows:
        return ""
    if words.language == "fr":  # the items' words; the values are the run's own (paths, settings as the flags name them)
        names = {"study": "étude", "step": "étape", "before": "avant", "after": "après", "grid": "grille",
                 "method": "méthode", "threshold": "seuil", "settings": "réglages", "run": "exécution"}
        for row in rows:
            row["item"] = re.sub(r"\b(study|step|before|after|grid|method|threshold|settings|run)\b",
                                 lambda m: names[m.group(1)], row["item"])
    rows = [{"item": r["item"], "detail": r["value"]} for r in rows]
    return _table(rows, words, ["item", "detail"], limit=100).replace("<td class='num'>", "<td>")


# --------------------------------------------------------------------------------------------
# warnings
# --------------------------------------------------------------------------------------------

#: Texts of library notices that older run records kept among deltacd's warnings (a library's API deprecation
#: raised from deltacd's code: a note for deltacd's developers, meaningless to the analyst). New records leave
#: them out where they are collected (:func:`deltacd.io.runlog.is_ours`); these drop them from older ones.
_LIBRARY_NOTICES = ("matmul instead of", "deprecat", "futurewarning", "will be removed in")


def _is_library_notice(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _LIBRARY_NOTICES)


def _warnings(records: dict[str, dict[str, Any]], words: Words) -> list[str]:
    warnings: list[str] = []
    for step, record in records.items():
        warnings += [f"{step}: {w}" for w in record.get("warnings", []) if not _is_library_notice(str(w))]
        coreg = record.get("coregistration")
        if coreg and coreg.get("blocks_measured") and not coreg.get("reliable", True):
            warnings.append(words("coreg.unreliable", step=step, used=coreg["blocks_used"], measured=coreg["blocks_measured"]))
    detect = records.get("detect") or {}
    if ((detect.get("results") or {}).get("changed_fraction") or 0) > 0.5:
        warnings.append(words("half_changed"))
    return list(dict.fromkeys(warnings))


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------

def build_sections(parts: dict[str, Any], figures: Path, title: str, max_size: int,
                   dates: tuple[str | None, str | None] = (None, None), *, language: str = "en", description: str = "",
                   credit: str | None = None) -> dict[str, str]:
    """The HTML of the sections of what ran (keys of :data:`SECTIONS`, in order), drawing the figures into ``figures``.

    A section is left out when its step did not run (no placeholder saying so): the reader of a
    damage study does not need to be told there is no land-cover comparison.
    """
    words = Words(language)
    detect, damage = parts.get("detect"), parts.get("damage")
    records = _records(parts)
    warnings = _warnings(records, words)
    credit = credit if credit is not None else next((c for r in records.values() if (c := maps.credit_of(r, dates, language))), None)
    out: dict[str, str] = {"summary": _summary(parts, title, words, description=description, dates=dates,
                                               warnings=warnings, credit=credit)}
    compare = parts.get("compare")
    style = maps.MapStyle(language=language, credit=credit)
    if detect:  # the changes by transition and by kind are drawn with the compare step's maps
        path = maps.change_maps(detect, figures / "changes_map.png", dates=dates, max_size=max_size, style=style)
        out["maps"] = (_figure(path, words("cap.changes_map"), words)
                       + _figure(maps.images_path(path), words("cap.images"), words))
        record = records["detect"]
        coreg = _figure(maps.coregistration_figure(record, record["grid"], figures / "coregistration.png", language),
                        words("cap.coreg"), words)
        if coreg:
            out["coregistration"] = coreg
        histogram = _figure(maps.histogram_figure(record, figures / "score_histogram.png", language), words("cap.histogram"), words)
        if histogram:
            out["histogram"] = histogram
        uncertainty = DetectOutputs(detect).uncertainty
        if uncertainty.is_file():
            out["uncertainty"] = _figure(maps.raster_map(uncertainty, figures / "uncertainty.png",
                                                         title="predictive entropy over test-time augmentation",
                                                         label="bits", cmap="inferno", style=style),
                                         words("cap.uncertainty"), words)
    if damage:
        path = maps.damage_map(damage, figures / "damage_map.png", date=dates[1], max_size=max_size, style=style)
        counts = records.get("damage", {}).get("results", {}).get("per_grade", {})
        rows = maps.read_csv(DamageOutputs(damage).summary)
        body = _figure(path, words("cap.damage_map"), words)
        body += _figure(maps.bar_figure([maps.grade_label(g, language) for g in counts], list(counts.values()),
                                        figures / "damage_counts.png", xlabel=words.column("buildings")[0],
                                        title=words("cap.damage_counts")), words("cap.damage_counts"), words)
        for row in rows:
            row["damage_label"] = maps.grade_label(row.get("damage_label", ""), language)
        out["damage"] = body + _table(rows, words, ["zone", "damage_label", "buildings", "footprint_area_m2"], limit=60,
                                      file="damage/summary.csv")
        if "histogram" not in out:
            histogram = _figure(maps.histogram_figure(records["damage"], figures / "score_histogram.png", language),
                                words("cap.histogram"), words)
            if histogram:
                out["histogram"] = histogram
        if parts.get("evaluate-damage"):
            out["damage"] += _damage_evaluation(damage, parts["evaluate-damage"], figures, dates, max_size, words, style)
    if compare:
        out.update(_compare_sections(compare, detect, figures, dates, max_size, out, words, style))
    evaluate = parts.get("evaluate")
    metrics = _json(evaluate / "metrics.json") if evaluate else None
    if metrics:
        out["accuracy"] = _accuracy(metrics, evaluate, figures, words)
    if warnings:
        out["warnings"] = f"<p>{_e(words('warnings.intro'))}</p>" + "".join(
            f'<div class="warning">{_e(w)}</div>' for w in warnings)
    details = _details(parts, words)
    if details:
        out["details"] = details
    return {key: out[key] for key in SECTIONS if out.get(key)}


def _accuracy(metrics: dict[str, Any], evaluate: Path, figures: Path, words: Words) -> str:
    """The scores with their 95 % interval and what each one says; the evaluation's figures."""
    pixel, intervals = metrics.get("pixel", {}), metrics.get("pixel_ci", {})
    ci_key = {"overall_accuracy": "accuracy"}
    rows = []
    for name in ("f1", "precision", "recall", "iou", "kappa", "overall_accuracy", "macro_f1"):
        if name not in pixel:
            continue
        interval = intervals.get(ci_key.get(name, name)) or {}
        label, meaning = words.metric(name)
        ci = (f"{words.number(interval['low'])} – {words.number(interval['high'])}"
              if interval.get("low") is not None and interval.get("high") is not None else "")
        rows.append({"score": label, "value": words.number(pixel.get(name)), "ci": ci, "meaning": meaning})
    body = _table(rows, words, ["score", "value", "ci", "meaning"], limit=20)
    for png in sorted(evaluate.glob("*.png")):
        copy = figures / f"accuracy_{png.name}"
        copy.write_bytes(png.read_bytes())
        body += _figure(copy, words("cap.accuracy", name=png.stem.replace("_", " ")), words)
    return body


def _compare_sections(compare: Path, detect: Path | None, figures: Path, dates, max_size: int,
                      done: dict[str, str], words: Words, style: maps.MapStyle) -> dict[str, str]:
    """The sections drawn from a study's compare step: land-cover maps, the current method's changes, ours by
    kind and their agreement as maps; from/to matrices (all zones, then per zone); agreement per zone and transition."""
    out: dict[str, str] = {}
    order = _class_order(compare)
    study = _json(compare / "compare_study.json") or {}
    landcover = compare / "landcover_overview.tif"
    maps_html = ""
    if landcover.is_file():
        maps_html += _figure(maps.landcover_maps(landcover, figures / "landcover_maps.png", dates=dates, style=style),
                             words("cap.landcover"), words)
    comparison = maps.comparison_maps(compare, figures / "changes_compared.png", detect=detect, dates=dates,
                                      max_size=max_size, style=style)
    ours = (compare / "transitions.csv").is_file()
    compared = _figure(comparison, words("cap.compared_pcc"), words)
    if comparison is not None and ours:
        _, ours_path, agreement_path = maps.comparison_paths(comparison)
        compared += _figure(ours_path, words("cap.compared_ours"), words) + _figure(agreement_path, words("cap.compared"), words)
    out["maps"] = (done.get("maps") or "") + maps_html + ("" if ours else compared)
    lc_rows = maps.read_csv(compare / "landcover_transitions.csv") if (compare / "landcover_transitions.csv").is_file() else []
    body = ""
    if ours:
        rows = maps.read_csv(compare / "transitions.csv")
        kinds = study.get("change_kinds") or {}
        if kinds:
            total = kinds["all"]
            within = kinds.get("within class", {})
            setting = study.get("within_class", "apart")
            counted = (words("kinds.apart") if setting == "apart" else words("kinds.change") if setting == "change"
                       else words("kinds.some", classes=", ".join(setting)))
            unknown = kinds.get("unknown", {}).get("polygons")
            body += "<p>" + _e(words("kinds", polygons=words.integer(total["polygons"]), area=words.ha(total["area_ha"]),
                                     t_polygons=words.integer(kinds["transition"]["polygons"]),
                                     t_area=words.ha(kinds["transition"]["area_ha"]),
                                     w_polygons=words.integer(within.get("polygons", 0)),
                                     w_area=words.ha(within.get("area_ha", 0)), counted=counted, setting=setting,
                                     unknown=words("kinds.unknown", n=words.integer(unknown)) if unknown else "")) + "</p>"
        counted_rows = [r for r in rows if r["zone"] == "all" and r.get("counts_as_change", "True") == "True"]
        within_rows = [r for r in rows if r["zone"] == "all" and r.get("change_kind") == "within class"]
        body += _figure(maps.bar_figure([r["transition"] for r in counted_rows[:15]], [float(r["area_ha"]) for r in counted_rows[:15]],
                                        figures / "transitions.png", xlabel="ha", title=words("cap.transitions")),
                        words("cap.transitions"), words)
        if within_rows:
            body += _figure(maps.bar_figure([r["transition"] for r in within_rows], [float(r["area_ha"]) for r in within_rows],
                                            figures / "within_class.png", xlabel="ha", title=words("cap.within")),
                            words("cap.within"), words)
        body += _matrices(rows, caption=words("ours_matrix"), diagonal=words("within_class"), order=order, words=words)
        body += _table(rows, words, ["zone", "transition", "change_kind", "counts_as_change", "polygons", "area_ha"],
                       limit=40, file="compare/transitions.csv")
    if lc_rows:
        changed = [r for r in lc_rows if r["zone"] == "all" and r["changed"] == "True"]
        if not ours:
            body += _figure(maps.bar_figure([r["transition"] for r in changed[:15]], [float(r["area_ha"]) for r in changed[:15]],
                                            figures / "transitions.png", xlabel="ha", title=words("cap.transitions_pcc")),
                            words("cap.transitions_pcc"), words)
        pcc = study.get("post_classification_changes") or {}
        if pcc:
            body += "<p>" + _e(words("pcc", area=words.ha(sum(float(r["area_ha"]) for r in changed)),
                                     polygons=words.integer(pcc["polygons"]))) + "</p>"
        body += _matrices(lc_rows, caption=words("lc_matrix"), diagonal=words("unchanged"), order=order, words=words)
    if body:
        out["transitions"] = body
    if ours:
        by_zone = maps.read_csv(compare / "agreement_by_zone.csv")
        body = compared + _figure(maps.agreement_figure(by_zone, figures / "agreement_zones.png", title=words("cap.agreement_zones"),
                                                        language=words.language),
                                  words("cap.agreement_zones"), words) + _table(by_zone, words, file="compare/agreement_by_zone.csv")
        if (compare / "agreement_by_transition.csv").is_file():
            by_transition = maps.read_csv(compare / "agreement_by_transition.csv")
            body += _figure(maps.agreement_figure(by_transition, figures / "agreement_transitions.png", key="transition",
                                                  title=words("cap.agreement_transitions"), language=words.language),
                            words("cap.agreement_transitions"), words)
            body += _table(by_transition, words, limit=20, file="compare/agreement_by_transition.csv")
        out["agreement"] = body
    elif lc_rows:
        out["agreement"] = _none(words("no_detect_agreement"))
    return out


def _damage_evaluation(damage: Path, evaluation: Path, figures: Path, dates, max_size: int, words: Words,
                       style: maps.MapStyle) -> str:
    """Our grades against the reference study: the map per building, the confusion matrix, counts per grade and zone."""
    metrics = _json(evaluation / "damage_metrics.json")
    if not metrics:
        return ""
    language = words.language
    f1, kappa = metrics["damaged_f1"], metrics["weighted_kappa"]
    ci = words("ci", low=words.number(f1["ci_low"]), high=words.number(f1["ci_high"])) if f1.get("ci_low") is not None else ""
    b = metrics["buildings"]
    body = "<p>" + _e(words("damage.against", f1=words.number(f1["value"]), ci=ci, kappa=words.number(kappa["value"]),
                            graded=words.integer(b["graded_on_both"]), matched=words.integer(b["matched"]),
                            only_ours=words.integer(b["only_ours"]), only_reference=words.integer(b["only_reference"]),
                            join=metrics["join"])) + "</p>"
    compared = maps.damage_comparison_map(damage, evaluation, figures / "damage_compared.png", date=dates[1],
                                          max_size=max_size, style=style)
    body += _figure(compared, words("cap.damage_compared"), words)
    if compared is not None:
        body += _figure(compared.with_name(f"{compared.stem}_agreement.png"), words("cap.damage_agreement"), words)
    confusion = metrics["confusion"]
    grades = [maps.grade_label(g, language) for g in confusion["grades"]]
    counts = confusion["counts"]
    head = "".join(f"<th>{_e(g)}</th>" for g in grades)
    rows = "".join(f"<tr><th>{_e(g)}</th>" + "".join(
        f"<td class='{'diag' if i == j else ''}'>{words.integer(counts[i][j])}</td>" for j in range(len(grades)))
        + f"<td class='total'>{words.integer(sum(counts[i]))}</td></tr>" for i, g in enumerate(grades))
    totals = "".join(f"<td>{words.integer(sum(row[j] for row in counts))}</td>" for j in range(len(grades)))
    body += (f"<table class='matrix'><caption>{_e(words('confusion.caption'))}</caption>"
             f"<tr><th>{_e(words('confusion.corner'))}</th>{head}<th>{_e(words('total'))}</th></tr>{rows}"
             f"<tr class='total'><th>{_e(words('total'))}</th>{totals}<td>{words.integer(sum(map(sum, counts)))}</td></tr>"
             f"</table><p class='none'>{_e(words('confusion.note'))}</p>")
    per_grade = maps.read_csv(evaluation / "per_grade.csv")
    for row in per_grade:
        row["grade"] = maps.grade_label(row["grade"], language)
    body += _table(per_grade, words, ["grade", "reference_buildings", "our_buildings", "precision", "recall", "f1",
                                      "f1_ci_low", "f1_ci_high"], limit=10, file="evaluate-damage/per_grade.csv")
    if (evaluation / "per_zone.csv").is_file():
        per_zone = [r for r in maps.read_csv(evaluation / "per_zone.csv") if r["zone"] != "all"]
        if per_zone:
            grade_names = list(dict.fromkeys(r["grade"] for r in per_zone))
            table = []
            for zone in dict.fromkeys(r["zone"] for r in per_zone):
                row: dict[str, Any] = {"zone": zone}
                for r in (r for r in per_zone if r["zone"] == zone):
                    row[maps.grade_label(r["grade"], language)] = (f"{words.integer(r['our_buildings'])} / "
                                                                   f"{words.integer(r['reference_buildings'])}")
                table.append(row)
            body += f"<p>{_e(words('per_zone'))}</p>" + _table(
                table, words, ["zone", *[maps.grade_label(g, language) for g in grade_names]], limit=200,
                file="evaluate-damage/per_zone.csv")
    return body


def render(title: str, sections: dict[str, str], webmap: bool, language: str = "en") -> str:
    """The page: title, contents, then the sections given (those of what ran), in :data:`SECTIONS` order."""
    words = Words(language)
    keys = [key for key in SECTIONS if key in sections]
    nav = "".join(f'<a href="#{key}">{_e(words("section." + key))}</a>' for key in keys)
    link = (f'<p>{_e(words("webmap"))}: <a href="webmap/index.html">webmap/index.html</a></p>' if webmap else "")
    body = "".join(f'<section id="{key}"><h2>{_e(words("section." + key))}</h2>{sections[key]}</section>' for key in keys)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html><html lang="{language}"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
            f"<h1>{_e(title)}</h1><p>{_e(words('written_by', version=__version__, stamp=stamp))}</p>{link}"
            f'<nav aria-label="{_e(words("contents"))}">{nav}</nav>{body}</body></html>')


def write_report(source: str | Path, out_dir: str | Path | None = None, *, title: str | None = None, webmap: bool = True,
                 max_size: int = 1400, dates: tuple[str | None, str | None] | None = None, overwrite: bool = False,
                 language: str | None = None, description: str | None = None, credit: str | None = None) -> Path:
    """Write ``report.html`` (and ``figures/``, ``webmap/``) for the run or study folder ``source`` (module notes).

    ``out_dir`` defaults to ``source/report``; ``dates`` (before, after) are shown on the maps.
    ``language`` is ``en`` or ``fr``; None takes the study file's ``language`` key, else English (so that
    ``deltacd report STUDY_DIR`` writes a French study in French without being told). ``description``
    (the question the study answers) defaults to the study file's; ``credit`` (the image credit on the maps)
    to the one the sensor asks for (:func:`deltacd.report.maps.credit_of`).
    Returns the path of ``report.html``.
    """
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source}: no such run or study folder; give the output folder of deltacd run, detect or damage")
    parts = find_parts(source)
    config = study_file(parts)  # a study folder's settings fill what the caller did not give
    if language is None:
        given = config.get("language")
        language = given if given in ("en", "fr") else "en"
    language = check_language(language, "report language (language: in the study file, or --lang)")
    inputs = config.get("inputs") if isinstance(config.get("inputs"), dict) else {}
    if dates is None and (inputs.get("date_before") or inputs.get("date_after")):
        dates = (inputs.get("date_before"), inputs.get("date_after"))
    if credit is None and config.get("credit"):
        credit = str(config["credit"])
    out = Path(out_dir) if out_dir is not None else source / "report"
    study = parts.get("study") or {}
    report_options = (config.get("steps") or {}).get("report") if isinstance(config.get("steps"), dict) else None
    title = title or (report_options or {}).get("title") or study.get("name") or f"deltacd run {source.name}"
    record = source / RUN_RECORD
    with staged_output(out, overwrite=overwrite, kind="report", inputs=[record] if record.exists() else []) as staging:
        figures = staging / "figures"
        figures.mkdir()
        webmap = webmap and bool(parts.get("detect") or parts.get("damage") or parts.get("compare"))
        with ThreadPoolExecutor(max_workers=1) as pool:  # the web map (GDAL, PIL) beside the figures (matplotlib)
            drawn = None
            if webmap:
                from deltacd.report.webmap import write_webmap

                drawn = pool.submit(write_webmap, parts, staging / "webmap", title=title, lang=language)
            sections = build_sections(parts, figures, title, max_size, tuple(dates) if dates else (None, None),
                                      language=language, description=description or "", credit=credit)
            if drawn is not None:
                drawn.result()
        (staging / "report.html").write_text(render(title, sections, webmap, language), encoding="utf-8")
    return out / "report.html"
