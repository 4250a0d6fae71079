"""``deltacd run``: run a whole study from one study file.

Run the steps of STUDY.yaml (detect, damage, compare, evaluate, evaluate-damage, report), each into its own
subfolder of the study folder: -o DIR, or the study's output key (relative to the study file). Every input,
field and grade value is checked before any step runs, all problems named at once. A rerun skips the steps
whose inputs and options did not change and resumes a killed run at the step it was in. A step's options are
its verb's flags without the dashes (min_area_m2, or min-area-m2). --lang fr|en writes the report in that
language whatever the study's language key says. Templates: deltacd template occitanie|fiona
DIR; examples: examples/*.yaml.

API: :func:`deltacd.study.run.run_study`.
"""

from __future__ import annotations

import argparse

from deltacd.cli.common import progress_bars


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY.yaml")
    p.add_argument("-o", "--out", metavar="DIR", help="study folder (default: the study file's output key)")
    p.add_argument("--force", action="store_true", help="rerun every step")
    p.add_argument("--lang", choices=("en", "fr"), help="language of the report (overrides the study's language key)")


def run(args: argparse.Namespace) -> int:
    from deltacd.study.run import run_study

    study = args.study
    if getattr(args, "lang", None):  # the study as its file says, in another language
        from dataclasses import replace

        from deltacd.study.config import load_study

        study = load_study(args.study, output=args.out)
        report = {k: v for k, v in study.steps.get("report", {}).items() if k != "language"}
        study = replace(study, language=args.lang, steps={**study.steps, **({"report": report} if "report" in study.steps else {})})
    with progress_bars(args) as bars:
        result = run_study(study, out_dir=None if not isinstance(study, str) else args.out, force=args.force, progress=bars)
    for step in result.steps:
        print(f"{step.name:16s} {step.status:22s} {step.seconds:8.1f} s  {step.reason}")
    report = result.out_dir / "report" / "report.html"
    print(f"study {result.record['name']} in {result.out_dir}/" + (f"; report: {report}" if report.is_file() else ""))
    return 0
