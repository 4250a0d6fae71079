"""``run_study``: every step of a study file, each in its own subfolder, rerun only when its inputs changed.

The study folder holds one subfolder per step (``detect/``, ``damage/``, ``compare/``,
``evaluate/``, ``evaluate-damage/``, ``report/``), each written by the step's verb through the
usual staged output, and beside it ``<step>.step.json``: the step's record, with the fingerprint
of every input file, the step's options and the records of the steps it reads. A rerun compares
the record it would write with the one on disk: equal, the step is skipped; different (an input
file changed, an option, an upstream step rerun), the step runs again and replaces its folder. A
run killed during a step left no record for it (the record is written after the step's folder is
published), so the next run resumes at that step; the staging folder the killed step left is
removed by the output rules (:mod:`deltacd.io.outputs`). One study runs at a time per folder
(a lock), and ``study.json`` summarises the last run: what ran, what was skipped, how long.

Fingerprints: :func:`deltacd.io.records.fingerprint` (content hashes, first and last 16 MiB of
files over 256 MiB).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deltacd.errors import InputError, OutputError
from deltacd.io.outputs import MARKER, OutputLock, read_marker
from deltacd.io.records import dumps, environment, fingerprint, record_digest, to_json_value
from deltacd.study.config import StudyConfig, check_study, load_study

log = logging.getLogger(__name__)

STUDY_RECORD = "study.json"
LOG_FILE = "deltacd.log"

Progress = Callable[[str, int, int], None]


@dataclass
class StepOutcome:
    name: str
    status: str  # "ran", "skipped (up to date)"
    seconds: float
    reason: str = ""


@dataclass(frozen=True)
class StudyResult:
    out_dir: Path
    steps: list[StepOutcome]
    record: dict[str, Any]


def _record_path(out: Path, step: str) -> Path:
    return out / f"{step}.step.json"


def _check_study_folder(out: Path) -> None:
    """The study folder must be new, empty, or a study folder deltacd made."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another output in the study file")
    ours = (out / STUDY_RECORD).is_file() or any(out.glob("*.step.json")) or read_marker(out) is not None  # a killed run left step records
    if any(out.iterdir()) and not ours:
        raise OutputError(f"{out}: not a study folder (no {STUDY_RECORD}); choose another output in the study file "
                          "(nothing was deleted)")


def run_study(study: str | Path | StudyConfig | dict, *, out_dir: str | Path | None = None, force: bool = False,
              progress: Progress | None = None) -> StudyResult:
    """Run the steps of a study file (module notes); ``force`` reruns every step.

    ``out_dir`` replaces the study's ``output`` folder (``deltacd run STUDY.yaml -o DIR``).

    Raises
    ------
    DeltacdError
        A bad study file or input (before any step runs), or a failing step; steps done before
        are kept intact.
    """
    from deltacd.study import steps as step_functions

    if isinstance(study, StudyConfig):
        config = study if out_dir is None else replace(study, output=str(Path(out_dir).expanduser().resolve()))
        check_study(config, config.source or "study")  # as load_study does for a file
    else:
        config = load_study(study, output=out_dir)
    out = config.output_dir
    _check_study_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[StepOutcome] = []
    started = time.perf_counter()
    handler = logging.FileHandler(out / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("deltacd")
    level = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        with OutputLock(out):
            if not (out / STUDY_RECORD).is_file():  # marks the folder as a study's from the first step on
                _write_record(out, {"format": "deltacd-study/1", "name": config.name, "study_file": config.source,
                                    "status": "running"})
            records: dict[str, dict[str, Any]] = {}
            warned = same_dates_warning(config)
            for name in config.ordered_steps():
                record = step_functions.record_of(name, config, records)
                path = _record_path(out, name)
                previous = json.loads(path.read_text()) if path.is_file() else None
                folder = out / name
                up_to_date = previous is not None and previous.get("digest") == record_digest(record) and folder.is_dir()
                begun = time.perf_counter()
                if up_to_date and not force:
                    log.info("study %s: step %s up to date, skipped", config.name, name)
                    outcomes.append(StepOutcome(name, "skipped (up to date)", 0.0))
                    records[name] = previous["record"]
                    continue
                reason = "forced" if force else ("first run" if previous is None else _what_changed(previous["record"], record))
                log.info("study %s: step %s runs (%s)", config.name, name, reason)
                if progress is not None:
                    progress("steps", len(outcomes), len(config.ordered_steps()))
                step_functions.run_step(name, config, folder, progress)
                if name in step_functions.WRITES_ITS_INPUTS:  # recorded as they are once it ran
                    record = step_functions.record_of(name, config, records)
                seconds = round(time.perf_counter() - begun, 3)
                path.write_text(dumps({"digest": record_digest(record), "record": record, "seconds": seconds,
                                       "finished_utc": datetime.now(UTC).isoformat(timespec="seconds")}))
                records[name] = record
                outcomes.append(StepOutcome(name, "ran", seconds, reason))
            summary = {
                "format": "deltacd-study/1", "name": config.name, "study_file": config.source, "status": "complete",
                **environment(),
                "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 3), "steps": [asdict(o) for o in outcomes],
                "warnings": warned,
                "config": to_json_value(asdict(config)),
            }
            _write_record(out, summary)
    finally:
        package.removeHandler(handler)
        handler.close()
        package.setLevel(level)
    if progress is not None:
        progress("steps", len(outcomes), len(outcomes))
    return StudyResult(out, outcomes, summary)


def same_dates_warning(config: StudyConfig) -> list[str]:
    """The warning (logged, and returned for ``study.json``) when a step that compares the two images is given
    the same file for both dates (:func:`deltacd.io.rasters.warn_if_same_file`)."""
    from deltacd.io.rasters import warn_if_same_file

    i = config.inputs
    if not ({"detect", "damage"} & set(config.steps)) or i.before is None or i.after is None:
        return []
    if not warn_if_same_file(i.before, i.after):
        return []
    return [f"inputs.before and inputs.after are the same file ({i.before}): there is nothing to compare"]


def _write_record(out: Path, record: dict[str, Any]) -> None:
    tmp = out / f".{STUDY_RECORD}.tmp"
    tmp.write_text(dumps(record))
    os.replace(tmp, out / STUDY_RECORD)


def _what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not changed:
        return "record changed"
    if "inputs" in changed:
        keys = sorted(k for k in set(old.get("inputs", {})) | set(new.get("inputs", {}))
                      if old.get("inputs", {}).get(k) != new.get("inputs", {}).get(k))
        return "inputs changed: " + ", ".join(keys)
    return ", ".join(changed) + " changed"


__all__ = ["MARKER", "StudyResult", "fingerprint", "run_study", "InputError"]
