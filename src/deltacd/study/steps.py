"""The steps of a study: what each one reads (for its record) and how it runs (the verbs' API functions).

Each step calls the function of its verb with the study's inputs and the step's options, which
carry the verbs' own option names (the CLI flags): ``detect`` -> :func:`deltacd.detect`,
``damage`` -> :func:`deltacd.damage.damage`, ``evaluate`` -> :func:`deltacd.evaluate.evaluate.evaluate`,
``evaluate-damage`` -> :func:`deltacd.evaluate.damage.evaluate_damage`, ``report`` ->
:func:`deltacd.report.html.write_report`. ``compare`` runs the post-classification comparison
(:func:`deltacd.evaluate.compare.compare`) when land-cover maps are given, attributes each change
polygon its from/to classes and counts the agreement with the current method per zone and per
transition (:mod:`deltacd.study.fromto`).
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltacd.config import DetectOptions, build_options
from deltacd.errors import DeltacdError, InputError

if TYPE_CHECKING:  # a type only: the study file's reader imports this module (one-way)
    from deltacd.study.config import StudyConfig

#: The inputs each step reads (its record fingerprints them), and the steps it depends on.
#: Steps that change what they read: refine merges its label files into the reviewed run's store.
WRITES_ITS_INPUTS = frozenset({"refine"})

READS = {
    "detect": (("before", "after", "aoi"), ()),
    "damage": (("before", "after", "aoi", "buildings", "zones"), ()),
    "compare": (("landcover_before", "landcover_after", "current_change", "zones", "reference"), ("detect",)),
    "evaluate": (("reference", "zones"), ("detect",)),
    "evaluate-damage": (("damage_reference", "damage_reference_localisation", "damage_reference_damage", "zones"), ("damage",)),
    "refine": ((), ("detect", "damage")),
    "report": ((), ("detect", "damage", "compare", "evaluate", "evaluate-damage")),
}


def _inputs_options(config: StudyConfig) -> dict[str, Any]:
    """The pair settings every image step shares, from ``inputs`` and the study's CRS."""
    i = config.inputs
    shared = {"bands_before": i.bands_before, "bands_after": i.bands_after, "aoi": i.aoi, "crs": config.crs}
    return {k: v for k, v in shared.items() if v is not None}


def _signature_check(function, options: dict[str, Any]) -> None:
    accepted = set(inspect.signature(function).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted - {'self'}))}")


def option_problems(config: StudyConfig) -> list[DeltacdError]:
    """Every step's options checked by its verb (unknown keys named), before any step runs; one problem per step."""
    where = config.source or "study"
    problems: list[DeltacdError] = []
    for name, options in config.steps.items():
        source = f"{where}: steps.{name}"
        try:
            _check_options(name, options, config, source)
        except DeltacdError as exc:
            text = str(exc)
            problems.append(type(exc)(text if text.startswith(where) else f"{source}: {text}"))
    return problems


def _check_options(name: str, options: dict[str, Any], config: StudyConfig, source: str) -> None:
    if name == "detect":
        build_options(DetectOptions, {**_inputs_options(config), **options}, source=source)
    elif name == "damage":
        from deltacd.damage.options import split_options

        split_options({**_inputs_options(config), **options})
    elif name == "compare":
        from deltacd.study.compare import split_options

        split_options(options, source)
    elif name == "evaluate":
        from deltacd.evaluate.evaluate import EvaluateOptions

        build_options(EvaluateOptions, options, source=source)
    elif name == "evaluate-damage":
        from deltacd.evaluate.damage import evaluate_damage

        _signature_check(evaluate_damage, options)
    elif name == "report":
        from deltacd.report.html import write_report

        _signature_check(write_report, options)
    elif name == "refine":
        from deltacd.review.refine import refine

        _signature_check(refine, options)


def record_of(name: str, config: StudyConfig, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The record of step ``name``: fingerprints of its inputs, its options, the records of its upstream steps."""
    from deltacd.io.records import fingerprint

    keys, depends = READS[name]
    inputs = {}
    for key in keys:
        value = getattr(config.inputs, key, None)
        if value is not None:
            inputs[key] = [fingerprint(v) for v in value] if isinstance(value, list) else fingerprint(value)
    others = {"bands_before": config.inputs.bands_before, "bands_after": config.inputs.bands_after, "crs": config.crs,
              "fields": {f.name: getattr(config.inputs, f.name) for f in fields(config.inputs)
                         if f.name.endswith(("_field", "_classes", "_table")) or f.name.startswith("date_")}}
    if name == "refine":  # new answers in the run's review store make the step out of date
        from deltacd.review.store import latest_answers

        inputs["review_store"] = sorted(latest_answers(reviewed_run(config)).items())
        inputs["labels"] = [fingerprint(p) for p in config.steps[name].get("labels", ())]
    if name == "report":  # the report's words: a change of language or description rewrites it
        others = {**others, "language": config.language, "description": config.description, "credit": config.credit}
    return {"step": name, "inputs": inputs, "options": config.steps[name], "settings": others,
            "upstream": {d: upstream[d] for d in depends if d in upstream}}


def reviewed_run(config: StudyConfig) -> Path:
    """The run the analyst reviews: the detect step's, else the damage step's (``deltacd review`` on it)."""
    return config.output_dir / ("detect" if "detect" in config.steps else "damage")


def run_step(name: str, config: StudyConfig, folder: Path, progress=None) -> None:
    """Run step ``name`` into ``folder`` (replaced when it holds an earlier run of the step)."""
    i, options, out = config.inputs, dict(config.steps[name]), config.output_dir
    if name == "detect":
        from deltacd.pipeline import detect

        detect(i.before, i.after, folder, overwrite=True, progress=progress, **{**_inputs_options(config), **options})
    elif name == "damage":
        from deltacd.damage import damage

        extra = {"zones": i.zones, "zone_field": i.zone_field, "id_field": i.building_id_field}
        damage(i.before, i.after, folder, buildings=i.buildings, overwrite=True, progress=progress,
               **{**_inputs_options(config), **{k: v for k, v in extra.items() if v is not None}, **options})
    elif name == "compare":
        from deltacd.study.compare import compare_with_current_method

        compare_with_current_method(config, out / "detect" if "detect" in config.steps else None, folder, **options)
    elif name == "evaluate":
        from deltacd.evaluate.evaluate import evaluate
        from deltacd.outputs.layout import DetectOutputs

        extra = {"strata": i.zones, "strata_field": i.zone_field, "reference_field": i.reference_field}
        run = DetectOutputs(out / "detect")
        evaluate(run.mask, i.reference, folder, score=run.score,
                 overwrite=True, **{**{k: v for k, v in extra.items() if v is not None}, **options})
    elif name == "evaluate-damage":
        from deltacd.evaluate.damage import evaluate_damage

        masks = (i.damage_reference_localisation, i.damage_reference_damage) if i.damage_reference_damage else None
        extra = {"zones": i.zones, "zone_field": i.zone_field}
        evaluate_damage(out / "damage", i.damage_reference, folder, reference_field=i.damage_reference_field,
                        grade_table=i.damage_grade_table, reference_masks=masks, overwrite=True,
                        **{**{k: v for k, v in extra.items() if v is not None}, **options})
    elif name == "refine":
        from deltacd.review.refine import refine

        refine(reviewed_run(config), out_dir=folder, overwrite=True, progress=progress, **options)
    elif name == "report":
        from deltacd.report.html import write_report

        write_report(out, folder, overwrite=True, **{"title": config.name, "dates": (i.date_before, i.date_after),
                                                     "language": config.language, "description": config.description,
                                                     "credit": config.credit, **options})
    else:  # pragma: no cover - the study file is validated
        raise InputError(f"unknown step {name!r}")
