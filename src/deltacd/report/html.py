"""``report``: one self-contained ``report.html`` for a run or a study, with its figures beside it.

The report is what a team hands over: a summary of the run and its settings; maps of the images
and the changes (scale bar, north arrow, legend, CRS, date of each image); the co-registration
blocks and shift; the score histogram with the threshold; areas per transition and per zone;
the agreement with the current method; the accuracy with its confidence intervals when a
reference was given; damage counts and the damage map; the uncertainty of a network; and the
warnings of every step. Figures are PNG files in ``figures/`` and are also embedded (base64) in
the HTML, which therefore opens offline, on its own, in any browser. Every section is present;
one that does not apply to the run says so. With ``webmap`` an interactive map is written to
``webmap/index.html`` (:mod:`deltacd.report.webmap`).

The report reads only the outputs of the run (``run.json``, the COGs at overview resolution, the
GeoPackages, the CSV and JSON tables), never the full-resolution scene.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deltacd._version import __version__
from deltacd.errors import InputError
from deltacd.io.outputs import staged_output
from deltacd.outputs.layout import RUN_RECORD, DamageOutputs, DetectOutputs, run_kind
from deltacd.report import maps

SECTIONS = (
    ("summary", "Summary and settings"),
    ("maps", "Maps"),
    ("coregistration", "Co-registration"),
    ("histogram", "Change score and threshold"),
    ("transitions", "Areas per transition and per zone"),
    ("agreement", "Agreement with the current method"),
    ("accuracy", "Accuracy"),
    ("damage", "Damage per building"),
    ("uncertainty", "Uncertainty"),
    ("warnings", "Warnings"),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f1f1f1}img{max-width:100%;border:1px solid #ddd;margin:.4em 0}.none{color:#777;font-style:italic}
.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:.4em .8em;margin:.3em 0}nav a{margin-right:1em}
table.matrix td{text-align:right;font-variant-numeric:tabular-nums}table.matrix td.diag{background:#fff3c4}
table.matrix td.total,table.matrix tr.total td{font-weight:bold;background:#f7f7f7}table.matrix caption{text-align:left;font-weight:bold}
details{margin:.4em 0}summary{cursor:pointer}
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


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None, limit: int = 25) -> str:
    if not rows:
        return '<p class="none">nothing to show</p>'
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows[:limit])
    more = f"<p class='none'>{len(rows) - limit} more rows in the CSV file</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _fmt(value: Any) -> str:
    """A table cell: numbers of 1 000 and more with thousands separators (never 1.111e+04), others to 4 digits."""
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, str) and "." not in value and number.is_integer():
        return f"{int(number):,}" if abs(number) >= 1000 else value
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.4g}"


def _figure(path: Path | None, caption: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} (<code>figures/{path.name}</code>)</figcaption></figure>")


def _none(text: str) -> str:
    return f'<p class="none">{html.escape(text)}</p>'


def _ha(value: float) -> str:
    """Hectares with thousands separators and a precision that suits the size."""
    return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"


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


def _matrix_html(sources: list[str], targets: list[str], matrix, *, caption: str, diagonal: str) -> str:
    """A from/to matrix as a table: rows the class at date 1, columns at date 2, totals, in ha; the diagonal
    (same class at both dates) shaded and named by ``diagonal``."""
    if not sources:
        return _none(f"{caption}: nothing to show")
    head = "".join(f"<th>{html.escape(t)}</th>" for t in targets)
    body = []
    for i, source in enumerate(sources):
        cells = "".join(
            f'<td class="{"diag" if source == target else ""}">{_ha(matrix[i, j]) if matrix[i, j] else ""}</td>'
            for j, target in enumerate(targets))
        body.append(f"<tr><th>{html.escape(source)}</th>{cells}<td class='total'>{_ha(matrix[i].sum())}</td></tr>")
    totals = "".join(f"<td>{_ha(v)}</td>" for v in matrix.sum(axis=0))
    body.append(f"<tr class='total'><th>total</th>{totals}<td>{_ha(matrix.sum())}</td></tr>")
    note = f"<p class='none'>Rows: class at date 1 (from); columns: class at date 2 (to); ha. Shaded: {html.escape(diagonal)}.</p>"
    return (f"<table class='matrix'><caption>{html.escape(caption)}</caption><tr><th>from \\ to</th>{head}<th>total</th></tr>"
            f"{''.join(body)}</table>{note}")


def _matrices(rows: list[dict[str, str]], *, caption: str, diagonal: str, order: list[str], value: str = "area_ha") -> str:
    """The matrix of every zone together, then one per zone (folded)."""
    out = _matrix_html(*fromto_matrix(rows, value=value, order=order), caption=f"{caption}, all zones", diagonal=diagonal)
    zones = [z for z in dict.fromkeys(r["zone"] for r in rows) if z != "all"]
    for zone in zones:
        table = _matrix_html(*fromto_matrix(rows, zone=zone, value=value, order=order), caption=f"{caption}, {zone}",
                             diagonal=diagonal)
        out += f"<details><summary>{html.escape(zone)}</summary>{table}</details>"
    return out


def _class_order(compare: Path) -> list[str]:
    """The land-cover classes in the order of the study (the compare step's overview raster keeps it)."""
    try:
        import rasterio

        with rasterio.open(compare / "landcover_overview.tif") as src:
            return json.loads(src.tags().get("classes", "[]"))
    except Exception:  # an older compare folder: names sorted
        return []


def _summary(parts: dict[str, Any], title: str) -> str:
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
        results = record.get("results", {})
        if step == "detect":
            rows.append({"item": "changes", "value": f"{results['polygons']} polygons, {results['changed_area_ha']:.2f} ha "
                                                     f"({100 * (results['changed_fraction'] or 0):.2f} % of valid pixels)"})
    return f"<p>{html.escape(title)}</p>" + _table(rows, ["item", "value"], limit=100)


def build_sections(parts: dict[str, Any], figures: Path, title: str, max_size: int,
                   dates: tuple[str | None, str | None] = (None, None)) -> dict[str, str]:
    """The HTML of every section (``SECTIONS``), drawing the figures into ``figures``."""
    out = {"summary": _summary(parts, title)}
    detect, damage = parts.get("detect"), parts.get("damage")
    warnings: list[str] = []
    records = {s: _json(parts[s] / RUN_RECORD) for s in ("detect", "damage") if parts.get(s)}
    for step, record in records.items():
        warnings += [f"{step}: {w}" for w in record.get("warnings", [])]
        coreg = record.get("coregistration")
        if coreg and coreg.get("blocks_measured") and not coreg.get("reliable", True):
            warnings.append(f"{step}: co-registration unreliable ({coreg['blocks_used']} of {coreg['blocks_measured']} blocks agree)")
    compare = parts.get("compare")
    if detect:  # the changes by transition and by kind are drawn with the compare step's maps
        path = maps.change_maps(detect, figures / "changes_map.png", dates=dates, max_size=max_size)
        out["maps"] = _figure(path, "before, after and the changes, with the CRS and dates of the images")
        record = records["detect"]
        out["coregistration"] = _figure(maps.coregistration_figure(record, record["grid"], figures / "coregistration.png"),
                                        "shift measured in each block (arrows magnified)") or _none("co-registration was not run")
        out["histogram"] = _figure(maps.histogram_figure(record, figures / "score_histogram.png"), "score histogram and threshold")
        uncertainty = DetectOutputs(detect).uncertainty
        if uncertainty.is_file():
            out["uncertainty"] = _figure(maps.raster_map(uncertainty, figures / "uncertainty.png",
                                                         title="predictive entropy over test-time augmentation",
                                                         label="bits", cmap="inferno"), "where the network is unsure")
        if (record.get("results") or {}).get("changed_fraction", 0) and record["results"]["changed_fraction"] > 0.5:
            warnings.append("detect: more than half of the valid pixels are flagged as changed")
    if damage:
        path = maps.damage_map(damage, figures / "damage_map.png", date=dates[1], max_size=max_size)
        counts = records.get("damage", {}).get("results", {}).get("per_grade", {})
        rows = maps.read_csv(DamageOutputs(damage).summary)
        body = _figure(path, "buildings by damage grade over the post-event image")
        body += _figure(maps.bar_figure(list(counts), list(counts.values()), figures / "damage_counts.png",
                                        xlabel="buildings", title="buildings per damage grade"), "buildings per grade")
        out["damage"] = body + _table(rows, ["zone", "damage_label", "buildings", "footprint_area_m2"], limit=60)
        if "maps" not in out:
            out["maps"] = _figure(path, "damage map")
        if "histogram" not in out:
            out["histogram"] = _figure(maps.histogram_figure(records["damage"], figures / "score_histogram.png"),
                                       "score histogram and threshold")
        if parts.get("evaluate-damage"):
            out["damage"] += _damage_evaluation(damage, parts["evaluate-damage"], figures, dates, max_size)
    if compare:
        out.update(_compare_sections(compare, detect, figures, dates, max_size, out))
    evaluate = parts.get("evaluate")
    metrics = _json(evaluate / "metrics.json") if evaluate else None
    if metrics:
        pixel, intervals = metrics.get("pixel", {}), metrics.get("pixel_ci", {})
        rows = [{"score": name, "value": pixel.get(name), "95 % CI low": (intervals.get(name) or {}).get("low"),
                 "95 % CI high": (intervals.get(name) or {}).get("high")}
                for name in ("f1", "precision", "recall", "iou", "kappa", "overall_accuracy", "macro_f1") if name in pixel]
        body = _table(rows)
        for png in sorted(evaluate.glob("*.png")):
            copy = figures / f"accuracy_{png.name}"
            copy.write_bytes(png.read_bytes())
            body += _figure(copy, png.stem.replace("_", " "))
        out["accuracy"] = body
    out["warnings"] = "".join(f'<div class="warning">{html.escape(w)}</div>' for w in dict.fromkeys(warnings)) or _none("no warning")
    defaults = {"maps": "no map: this run has neither change nor damage outputs", "coregistration": "co-registration was not run",
                "histogram": "no score histogram in this run", "transitions": "no compare step in this run",
                "agreement": "no compare step in this run: no current method to agree with",
                "accuracy": "no reference was given: no accuracy", "damage": "no damage step in this run",
                "uncertainty": "no uncertainty: it is computed for networks run with --uncertainty"}
    return {key: out.get(key) or _none(defaults.get(key, "")) for key, _ in SECTIONS}


def _compare_sections(compare: Path, detect: Path | None, figures: Path, dates, max_size: int,
                      done: dict[str, str]) -> dict[str, str]:
    """The sections drawn from a study's compare step: land-cover maps, the current method's changes, ours by
    kind and their agreement as maps; from/to matrices (all zones, then per zone); agreement per zone and transition."""
    out: dict[str, str] = {}
    order = _class_order(compare)
    study = _json(compare / "compare_study.json") or {}
    landcover = compare / "landcover_overview.tif"
    maps_html = ""
    if landcover.is_file():
        maps_html += _figure(maps.landcover_maps(landcover, figures / "landcover_maps.png", dates=dates),
                             "land cover of each date (the current method's input), at reduced resolution")
    comparison = maps.comparison_maps(compare, figures / "changes_compared.png", detect=detect, dates=dates, max_size=max_size)
    ours = (compare / "transitions.csv").is_file()
    compared = _figure(comparison, "the current method's changes by transition; deltacd's changes by kind; where the two "
                                   "agree" if ours else "the current method's changes (post-classification), by transition")
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
            counted = ("counted apart, not as land-cover change" if setting == "apart" else
                       "counted as change" if setting == "change" else f"counted as change for {', '.join(setting)} only")
            body += (f"<p>Of deltacd's {total['polygons']:,} change polygons ({_ha(total['area_ha'])} ha), "
                     f"{kinds['transition']['polygons']:,} ({_ha(kinds['transition']['area_ha'])} ha) change class between "
                     f"the two land-cover maps (transitions) and {within.get('polygons', 0):,} "
                     f"({_ha(within.get('area_ha', 0))} ha) keep their class: changes within a class (a new roof on a roof, "
                     f"a crop after a crop), {counted} (setting <code>within_class: {html.escape(str(setting))}</code>)"
                     + (f"; {kinds['unknown']['polygons']:,} lie outside the land-cover maps" if kinds.get("unknown", {}).get("polygons")
                        else "") + ".</p>")
        counted_rows = [r for r in rows if r["zone"] == "all" and r.get("counts_as_change", "True") == "True"]
        within_rows = [r for r in rows if r["zone"] == "all" and r.get("change_kind") == "within class"]
        body += _figure(maps.bar_figure([r["transition"] for r in counted_rows[:15]], [float(r["area_ha"]) for r in counted_rows[:15]],
                                        figures / "transitions.png", xlabel="ha", title="deltacd's changes that count as change, "
                                        "per transition"), "areas per transition (changes within a class apart)")
        if within_rows:
            body += _figure(maps.bar_figure([r["transition"] for r in within_rows], [float(r["area_ha"]) for r in within_rows],
                                            figures / "within_class.png", xlabel="ha", title="deltacd's changes within a class"),
                            "changes within a class: the class is the same at both dates")
        body += _matrices(rows, caption="deltacd's changes by from/to class (ha)", diagonal="changes within a class",
                          order=order)
        body += _table([{**r, "area_ha": _ha(float(r["area_ha"]))} for r in rows],
                       ["zone", "transition", "change_kind", "counts_as_change", "polygons", "area_ha"], limit=40)
    if lc_rows:
        changed = [r for r in lc_rows if r["zone"] == "all" and r["changed"] == "True"]
        if not ours:
            body += _figure(maps.bar_figure([r["transition"] for r in changed[:15]], [float(r["area_ha"]) for r in changed[:15]],
                                            figures / "transitions.png", xlabel="ha",
                                            title="land-cover transitions between the two maps"),
                            "areas per transition of the land-cover maps (the current method's changes)")
        pcc = study.get("post_classification_changes") or {}
        if pcc:
            body += (f"<p>The current method (the land-cover maps compared class by class) changes "
                     f"{_ha(sum(float(r['area_ha']) for r in changed))} ha, in {pcc['polygons']:,} polygons "
                     f"(<code>post_classification_changes.gpkg</code>, layer <code>changes</code>).</p>")
        body += _matrices(lc_rows, caption="the land-cover maps' from/to matrix: the current method (ha)",
                          diagonal="unchanged", order=order)
    out["transitions"] = body
    if ours:
        by_zone = maps.read_csv(compare / "agreement_by_zone.csv")
        body = compared + _figure(maps.agreement_figure(by_zone, figures / "agreement_zones.png", title="change area per zone"),
                                  "agreement with the current method per zone") + _table(by_zone)
        if (compare / "agreement_by_transition.csv").is_file():
            by_transition = maps.read_csv(compare / "agreement_by_transition.csv")
            body += _figure(maps.agreement_figure(by_transition, figures / "agreement_transitions.png", key="transition",
                                                  title="change area per transition"), "agreement per transition")
            body += _table(by_transition, limit=20)
        out["agreement"] = body
    elif lc_rows:
        out["agreement"] = _none("no detect step: the land-cover maps are compared with each other only")
    return out


def _damage_evaluation(damage: Path, evaluation: Path, figures: Path, dates, max_size: int) -> str:
    """Our grades against the reference study: the map per building, the confusion matrix, counts per grade and zone."""
    metrics = _json(evaluation / "damage_metrics.json")
    if not metrics:
        return ""
    f1, kappa = metrics["damaged_f1"], metrics["weighted_kappa"]
    ci = f" (95 % CI {f1['ci_low']:.3f} - {f1['ci_high']:.3f})" if f1.get("ci_low") is not None else ""
    b = metrics["buildings"]
    body = (f"<p>Against the reference study: damaged-vs-undamaged F1 {_fmt(f1['value'])}{ci}, weighted kappa "
            f"{_fmt(kappa['value'])}, {b['graded_on_both']:,} buildings graded in both ({b['matched']:,} matched, "
            f"{b['only_ours']:,} only in ours, {b['only_reference']:,} only in the reference; join: {html.escape(metrics['join'])}).</p>")
    body += _figure(maps.damage_comparison_map(damage, evaluation, figures / "damage_compared.png", date=dates[1], max_size=max_size),
                    "the reference study's grade, deltacd's and their agreement, per building (agreement.gpkg: building_id, "
                    "reference_id)")
    confusion = metrics["confusion"]
    grades = confusion["grades"]
    counts = confusion["counts"]
    head = "".join(f"<th>{html.escape(g)}</th>" for g in grades)
    rows = "".join(f"<tr><th>{html.escape(g)}</th>" + "".join(
        f"<td class='{'diag' if i == j else ''}'>{counts[i][j]:,}</td>" for j in range(len(grades)))
        + f"<td class='total'>{sum(counts[i]):,}</td></tr>" for i, g in enumerate(grades))
    totals = "".join(f"<td>{sum(row[j] for row in counts):,}</td>" for j in range(len(grades)))
    body += (f"<table class='matrix'><caption>Confusion matrix of grades (buildings graded in both)</caption>"
             f"<tr><th>reference \\ deltacd</th>{head}<th>total</th></tr>{rows}<tr class='total'><th>total</th>{totals}"
             f"<td>{sum(map(sum, counts)):,}</td></tr></table><p class='none'>Rows: the reference study's grade; columns: "
             "deltacd's; shaded: the same grade.</p>")
    per_grade = maps.read_csv(evaluation / "per_grade.csv")
    body += _table(per_grade, ["grade", "reference_buildings", "our_buildings", "precision", "recall", "f1", "f1_ci_low",
                               "f1_ci_high"], limit=10)
    if (evaluation / "per_zone.csv").is_file():
        per_zone = [r for r in maps.read_csv(evaluation / "per_zone.csv") if r["zone"] != "all"]
        if per_zone:
            grade_names = list(dict.fromkeys(r["grade"] for r in per_zone))
            table = []
            for zone in dict.fromkeys(r["zone"] for r in per_zone):
                row: dict[str, Any] = {"zone": zone}
                for r in (r for r in per_zone if r["zone"] == zone):
                    row[r["grade"]] = f"{int(r['our_buildings']):,} / {int(r['reference_buildings']):,}"
                table.append(row)
            body += "<p>Buildings per zone and grade: deltacd / the reference study.</p>" + _table(table, ["zone", *grade_names],
                                                                                                      limit=200)
    return body


def render(title: str, sections: dict[str, str], webmap: bool) -> str:
    nav = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name in SECTIONS)
    link = '<p>Interactive map: <a href="webmap/index.html">webmap/index.html</a></p>' if webmap else ""
    body = "".join(f'<section id="{key}"><h2>{html.escape(name)}</h2>{sections[key]}</section>' for key, name in SECTIONS)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
            f"<h1>{html.escape(title)}</h1><p>Report written by deltacd {__version__} on {stamp}.</p>{link}<nav>{nav}</nav>"
            f"{body}</body></html>")


def write_report(source: str | Path, out_dir: str | Path | None = None, *, title: str | None = None, webmap: bool = True,
                 max_size: int = 1400, dates: tuple[str | None, str | None] | None = None, overwrite: bool = False) -> Path:
    """Write ``report.html`` (and ``figures/``, ``webmap/``) for the run or study folder ``source`` (module notes).

    ``out_dir`` defaults to ``source/report``; ``dates`` (before, after) are shown on the maps.
    Returns the path of ``report.html``.
    """
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source}: no such run or study folder; give the output folder of deltacd run, detect or damage")
    parts = find_parts(source)
    out = Path(out_dir) if out_dir is not None else source / "report"
    study = parts.get("study") or {}
    title = title or study.get("name") or f"deltacd run {source.name}"
    record = source / RUN_RECORD
    with staged_output(out, overwrite=overwrite, kind="report", inputs=[record] if record.exists() else []) as staging:
        figures = staging / "figures"
        figures.mkdir()
        sections = build_sections(parts, figures, title, max_size, tuple(dates) if dates else (None, None))
        webmap = webmap and bool(parts.get("detect") or parts.get("damage"))  # a map needs imagery
        if webmap:
            from deltacd.report.webmap import write_webmap

            write_webmap(parts, staging / "webmap", title=title)
        (staging / "report.html").write_text(render(title, sections, webmap), encoding="utf-8")
    return out / "report.html"
