"""``deltacd template``: write one of the agency's study templates into a folder.

Write the study file of template NAME into DIR: occitanie (land-cover changes of a Pléiades pair against
OCS GE of both dates, per commune) or fiona (damage per BD TOPO building against an earlier damage study).
Point its inputs at your files, then run it with deltacd run FILE.yaml -o OUT; until then it stops before
any step, naming every missing file at once.

API: :func:`deltacd.study.template.write_template`.
"""

from __future__ import annotations

import argparse

#: The template names (as :data:`deltacd.study.template.TEMPLATES`; here so that --help imports nothing).
NAMES = ("occitanie", "fiona")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=NAMES, metavar="NAME", help=f"the template: {' or '.join(NAMES)}")
    p.add_argument("folder", metavar="DIR", help="folder to write the study file into (made if needed)")
    p.add_argument("--overwrite", action="store_true", help="replace the study file if it exists")


def run(args: argparse.Namespace) -> int:
    from deltacd.study.template import write_template

    path = write_template(args.name, args.folder, overwrite=args.overwrite)
    print(f"template {args.name}: {path}; point its inputs at your files, then: deltacd run {path} -o OUT")
    return 0
