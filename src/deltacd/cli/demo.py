"""``deltacd demo``: run detect on the bundled Pléiades example.

Orthorectify, co-register and compare the bundled Pléiades PAN pair (RPC, uint16) with CVA.

API: :func:`deltacd.demo.run_demo`.
"""

from __future__ import annotations

import argparse

from deltacd.cli.common import progress_bars
from deltacd.cli.detect import print_result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", default="deltacd-demo", help="output folder (default ./deltacd-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new run has succeeded")


def run(args: argparse.Namespace) -> int:
    from deltacd.demo import BEFORE, run_demo

    print(f"deltacd demo: Pléiades PAN pair bundled in {BEFORE.parent} (before/after the 2023 Kahramanmaraş earthquake)")
    with progress_bars(args) as bars:
        result = run_demo(args.out, overwrite=args.overwrite, progress=bars)
    print_result(result)
    return 0
