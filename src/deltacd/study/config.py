"""The study file: one validated YAML document that describes a whole study.

Layout (every key is checked; an unknown one is an error that names it; relative paths are
relative to the study file)::

    name: Occitanie coast 2025
    description: Land-cover changes ...  # the question the study answers: the report opens with it
    language: fr                     # of the report: en (default) or fr; deltacd run/report --lang overrides it
    credit: © CNES 2025, Distribution Airbus DS   # the images' credit on the maps (default: from the sensor)
    output: out/occitanie            # the study folder: one subfolder per step
    crs: EPSG:2154                   # output CRS of the change maps (default: the first image's)
    inputs:
      before: pleiades_2023.tif      # date 1, date 2 (files, folders of tiles or of band files)
      after: pleiades_2025.tif
      bands_before: B,G,R,N          # band orders, as the detect flags
      bands_after: R,G,B,N
      date_before: 2023-06-12        # shown in the report
      date_after: 2025-07-02
      aoi: zone.gpkg
      zones: communes.gpkg           # polygons with a name field: areas and agreement per zone
      zone_field: nom
      landcover_before: ocsge_2023.gpkg   # the current method's input: a land-cover map per date ...
      landcover_after: ocsge_2025.gpkg
      landcover_field: code_cs
      landcover_classes: {1: bati, 2: culture}
      current_change: ocsge_changes.gpkg  # ... or its change layer directly
      reference: reference_changes.gpkg   # a change reference for the accuracy
      reference_field: null
      buildings: bdtopo_bati.gpkg         # footprints (damage step)
      damage_reference: ems_grading.gpkg  # an earlier damage study
      damage_reference_field: grade
      damage_grade_table: copernicus
    steps:                           # the steps to run, each with the options of its verb (flag names)
      detect: {method: cva, min_area_m2: 20}
      compare: {}
      evaluate: {n_boot: 500}
      damage: {method: change, buffer_m: 1}
      evaluate-damage: {}
      refine: {labels: [reviewed.gpkg]}  # the analyst's answers (deltacd review) make the map better
      report: {title: ...}

A step's options are its verb's flags without the dashes (``min_area_m2`` or ``min-area-m2`` for
``--min-area-m2``), the earlier flag spellings (``min-area``, ``buffer``) included: they are stored
under the field's name, so the two spellings are one setting (:func:`deltacd.config.canonical_keys`).

Steps run in the order detect, damage, refine, compare, evaluate, evaluate-damage, report, whatever the
order in the file. Before anything runs, the whole file is checked and every problem is reported at
once (one line): unknown keys and bad values anywhere in the file, a step without the input it needs
(compare without land-cover maps or a current change layer, with the key to add), missing input
files, options a step's verb does not accept, and what the files hold
(:mod:`deltacd.study.checks`: the fields named in ``inputs``, the damage reference's grades against
its grade table, the land-cover codes against ``landcover_classes``). ``output`` may be left out
when the folder is given on the command line (``deltacd run STUDY.yaml -o DIR``).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from deltacd.config import DAMAGE_ALIASES, STRICT, DetectOptions, canonical_keys, read_yaml
from deltacd.errors import DeltacdError, InputError, MissingInputError
from deltacd.study.checks import value_problems

#: The steps a study can run, in the order they run.
STEPS = ("detect", "damage", "refine", "compare", "evaluate", "evaluate-damage", "report")

#: Earlier spellings of each step's options (flag names of former versions) -> their field.
STEP_ALIASES = {"detect": DetectOptions.aliases, "damage": {**DetectOptions.aliases, **DAMAGE_ALIASES}}

#: Keys of ``inputs`` that are paths (made absolute against the study file's folder).
PATH_INPUTS = ("before", "after", "aoi", "zones", "landcover_before", "landcover_after", "current_change", "reference",
               "buildings", "damage_reference", "damage_grade_table", "damage_reference_localisation",
               "damage_reference_damage", "model", "localisation_model")


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class StudyInputs:
    """Inputs of a study (see the module notes); the images are needed by the detect and damage steps."""

    before: str | list[str] | None = None
    after: str | list[str] | None = None
    bands_before: str | None = None
    bands_after: str | None = None
    date_before: str | None = None
    date_after: str | None = None
    aoi: str | None = None
    zones: str | None = None
    zone_field: str | None = None
    landcover_before: str | None = None
    landcover_after: str | None = None
    landcover_field: str | None = None
    landcover_classes: dict[int, str] | None = None
    current_change: str | None = None
    current_change_field: str | None = None
    reference: str | None = None
    reference_field: str | None = None
    buildings: str | None = None
    building_id_field: str | None = None
    damage_reference: str | None = None
    damage_reference_field: str | None = None
    damage_grade_table: str = "deltacd"
    damage_reference_localisation: str | None = None
    damage_reference_damage: str | None = None


@pydantic_dataclass(frozen=True, config=STRICT, kw_only=True)
class StudyConfig:
    """A validated study file (module notes). ``source`` is the file it was read from."""

    name: str
    output: str
    inputs: StudyInputs
    steps: dict[str, dict[str, Any]]
    crs: str | None = None
    description: str = ""
    language: Literal["en", "fr"] = "en"
    credit: str | None = None
    source: str | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.output)

    def ordered_steps(self) -> list[str]:
        return [s for s in STEPS if s in self.steps]


def _absolute(value, base: Path):
    if value is None:
        return None
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    text = str(value)
    if text in ("deltacd", "xbd", "ems98", "copernicus"):  # a grade table by name, not a path
        return text
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base / path))


def _validated(cls: type, values: dict[str, Any], source: str, problems: list[DeltacdError], fill: dict[str, Any]):
    """``values`` made into ``cls``, every problem appended to ``problems`` (one per key) instead of raised.

    Unknown keys are named and left out, a bad value is named and left to its default (a required
    one to ``fill``), so that the rest of the file is still checked; None when it cannot be built.
    """
    known = {f.name for f in fields(cls)} - {"source"}
    unknown = sorted(set(values) - known - {"source"})
    if unknown:
        problems.append(InputError(f"{source}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}"))
    values = {k: v for k, v in values.items() if k not in unknown}
    for _ in range(len(known) + 1):
        try:
            return cls(**values)
        except ValidationError as exc:
            bad: dict[str, str] = {}
            for error in exc.errors():
                key = str(error["loc"][0]) if error["loc"] else "?"
                if key not in bad:
                    got = "" if error["type"] == "missing" else f" (got {error.get('input')!r})"
                    bad[key] = f"{error['msg'][0].lower()}{error['msg'][1:]}{got}"
            for key, text in bad.items():
                problems.append(InputError(f"{source}: {key}: {text}"))
            if not set(bad) <= set(values) | set(fill) or "?" in bad:
                return None
            values = {**{k: v for k, v in values.items() if k not in bad}, **{k: fill[k] for k in bad if k in fill}}
    return None


def load_study(source: str | Path | dict[str, Any], *, output: str | Path | None = None) -> StudyConfig:
    """Read and validate a study file (or its content as a dict, paths then relative to the current folder).

    ``output`` replaces the study's ``output`` folder (``deltacd run STUDY.yaml -o DIR``; relative to
    the current folder). Every problem of the file is reported at once, in one error (module notes).

    Raises
    ------
    MissingInputError
        The study file or one of its input files does not exist (named, with its key).
    InputError
        Unknown key (named), bad value, unknown step, a step without the inputs it needs, a
        reference grade its grade table does not know: all of them, in one line.
    """
    if isinstance(source, dict):
        values, base, where = dict(source), Path.cwd(), "study"
    else:
        path = Path(source)
        values = read_yaml(path, what="study file")
        if not isinstance(values, dict):
            raise InputError(f"{path}: a study file is a mapping (name, output, inputs, steps); got {type(values).__name__}")
        base, where = path.resolve().parent, str(path)
        values["source"] = str(path.resolve())
    problems: list[DeltacdError] = []
    inputs = values.get("inputs")
    if not isinstance(inputs, dict):
        problems.append(InputError(f"{where}: inputs: expected a mapping of the study's files (before, after, zones ...)"))
        inputs = {}

    def value(key: str, v):
        if key in PATH_INPUTS:
            return _absolute(v, base)
        return v.isoformat() if isinstance(v, date) else v  # YAML reads 2022-09-22 as a date

    inputs = {str(k).replace("-", "_"): value(str(k).replace("-", "_"), v) for k, v in inputs.items()}
    values["inputs"] = _validated(StudyInputs, inputs, f"{where}: inputs", problems, {}) or StudyInputs()
    if output is not None:
        values["output"] = str(Path(output).expanduser().resolve())
    elif "output" in values:
        values["output"] = _absolute(values["output"], base)
    else:
        problems.append(InputError(f"{where}: output: give the study folder (output: out/my_study), or -o DIR"))
        values["output"] = str(base / "out")
    steps = values.get("steps")
    if not isinstance(steps, dict) or not steps:
        problems.append(InputError(f"{where}: steps: give the steps to run, e.g. steps: {{detect: {{}}, report: {{}}}} "
                                   f"({', '.join(STEPS)})"))
        steps = {}
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        problems.append(InputError(f"{where}: steps: unknown step(s) {', '.join(unknown)}; available: {', '.join(STEPS)}"))
    checked: dict[str, dict[str, Any]] = {}
    for name, options in steps.items():
        if name in unknown:
            continue
        if not isinstance(options or {}, dict):
            problems.append(InputError(f"{where}: steps.{name}: expected a mapping of options, e.g. {name}: {{}}; got {options!r}"))
            continue
        try:
            checked[name] = canonical_keys(options or {}, STEP_ALIASES.get(name, {}), source=f"{where}: steps.{name}")
        except DeltacdError as exc:
            problems.append(exc)
            continue
        for key in ("model", "localisation_model"):
            if key in checked[name]:
                checked[name][key] = _absolute(checked[name][key], base)
        if name == "refine" and "labels" in checked[name]:  # label files, relative to the study file like inputs
            labels = checked[name]["labels"]
            checked[name]["labels"] = [_absolute(p, base) for p in ([labels] if isinstance(labels, str) else labels)]
    values["steps"] = checked
    config = _validated(StudyConfig, values, where, problems, {"name": "study", "output": values["output"]})
    if config is None:
        raise_problems(problems, where)
    check_study(config, where, problems)
    return config


#: What each step needs from ``inputs`` (any one of a tuple), and what to add otherwise.
NEEDS = {
    "damage": ((("buildings",),), "inputs.buildings (footprints), or steps.damage.localisation_model"),
    "compare": ((("landcover_before", "landcover_after"), ("current_change",)),
                "inputs.landcover_before and inputs.landcover_after (the current method's maps), or inputs.current_change"),
    "evaluate": ((("reference",),), "inputs.reference (a change reference)"),
    "evaluate-damage": ((("damage_reference", "damage_reference_field"),), "inputs.damage_reference and inputs.damage_reference_field"),
}


def study_problems(config: StudyConfig, where: str) -> list[DeltacdError]:
    """Every problem of the study's inputs: steps without their inputs, missing files, zones without a name field,
    fields and values the files do not hold (:func:`deltacd.study.checks.value_problems`)."""
    problems: list[DeltacdError] = []
    inputs = config.inputs
    given = {f.name for f in fields(StudyInputs) if getattr(inputs, f.name) is not None}
    for step, (alternatives, hint) in NEEDS.items():
        if step not in config.steps:
            continue
        if step == "damage" and config.steps["damage"].get("localisation_model"):
            continue
        if not any(all(key in given for key in keys) for keys in alternatives):
            problems.append(InputError(f"{where}: step {step} needs {hint}; add it to the study file or drop the step"))
    if "evaluate-damage" in config.steps and "damage" not in config.steps:
        problems.append(InputError(f"{where}: step evaluate-damage grades the damage step's buildings; add steps.damage"))
    if "refine" in config.steps and not {"detect", "damage"} & set(config.steps):
        problems.append(InputError(f"{where}: step refine learns from the answers given on the detect or damage step's "
                                   "run (deltacd review STUDY_OUT/detect); add steps.detect or steps.damage"))
    if "evaluate" in config.steps and "detect" not in config.steps:
        problems.append(InputError(f"{where}: step evaluate scores the detect step's change map; add steps.detect"))
    if ("detect" in config.steps or "damage" in config.steps) and (inputs.before is None or inputs.after is None):
        problems.append(InputError(f"{where}: steps detect and damage need inputs.before and inputs.after (the two images)"))
    if inputs.zones is not None and inputs.zone_field is None:
        problems.append(InputError(f"{where}: inputs.zones needs inputs.zone_field, the field that names each zone"))
    for key in PATH_INPUTS:
        value = getattr(inputs, key, None)
        if key == "damage_grade_table" and value in ("deltacd", "xbd", "ems98", "copernicus"):
            continue
        for item in (value if isinstance(value, list) else [value]):
            if item is not None and not Path(item).exists():
                problems.append(MissingInputError(f"{where}: inputs.{key}: {item}: file not found; point it at your data"))
    for step, options in config.steps.items():
        for key in ("model", "localisation_model"):
            if options.get(key) and not Path(options[key]).exists():
                problems.append(MissingInputError(f"{where}: steps.{step}.{key}: {options[key]}: file not found; "
                                                  "point it at your model"))
    return problems + value_problems(config, where)


def check_study(config: StudyConfig, where: str, earlier: list[DeltacdError] | None = None) -> None:
    """Refuse, before any work, a study with problems (``earlier`` ones of its file, :func:`study_problems`, and
    every step's options checked by its verb: :func:`deltacd.study.steps.option_problems`), all named in one error."""
    from deltacd.study.steps import option_problems

    raise_problems([*(earlier or []), *study_problems(config, where), *option_problems(config)], where)


def raise_problems(problems: list[DeltacdError], where: str) -> None:
    """Raise the one problem as it is, or all of them in one error (one line): a MissingInputError when every
    one is a missing file, else an InputError."""
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    kind = MissingInputError if all(isinstance(p, MissingInputError) for p in problems) else InputError
    texts = [str(p).removeprefix(f"{where}: ") for p in problems]
    raise kind(f"{where}: {len(problems)} problems: " + "; ".join(texts))
