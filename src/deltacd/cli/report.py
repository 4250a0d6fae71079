"""``deltacd report``: an HTML report and a web map of a run or a study.

Write report.html (self-contained, figures embedded; PNGs in figures/; prints to clean A4 pages) and
webmap/index.html for the output folder of deltacd run, detect or damage, in English or French (--lang; a study
folder's default is its study file's language key).

API: :func:`deltacd.report.html.write_report`.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN_OR_STUDY_DIR")
    p.add_argument("-o", "--out", help="report folder (default: RUN_OR_STUDY_DIR/report)")
    p.add_argument("--title", help="title of the report")
    p.add_argument("--no-webmap", action="store_true", help="no interactive map")
    p.add_argument("--lang", choices=("en", "fr"), help="language of the report (default: the study file's language key, "
                                                         "else en)")
    p.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from deltacd.report.html import write_report

    path = write_report(args.source, args.out, title=args.title, webmap=not args.no_webmap, overwrite=args.overwrite,
                        language=args.lang)
    print(f"report: {path}" + ("" if args.no_webmap else f"; web map: {path.parent / 'webmap' / 'index.html'}"))
    return 0
