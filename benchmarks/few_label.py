"""Few-label learning curves, and deltacd against torchgeo's ChangeDetectionTask on the same chips.

Trains every arm of CONFIG (scratch, ImageNet encoder, TinyCD-pretrained, single-date STAR
labels, deltacd's training recipe, torchgeo peers) on N labelled chips for each N and seed, adds
zero-shot, and scores them on the test groups (:mod:`fewlabel.protocol`; the torchgeo arms:
:mod:`fewlabel.peers`, which need ``pip install -r benchmarks/requirements.txt``). CONFIG is a YAML
file of the fields of ``fewlabel.protocol.FewLabelConfig``; examples/benchmark_few_label_cpu.yaml
suits a 2-core CPU, examples/benchmark_peers_cpu.yaml is the peer comparison. Writes
few_label.csv, few_label_summary.csv, few_label.md, few_label.png and few_label.json into OUT.
Errors are one line, as deltacd's (exit code 1).

Usage::

    python benchmarks/few_label.py examples/benchmark_few_label_cpu.yaml -o out/few_label_cpu [--overwrite]
    python benchmarks/few_label.py examples/benchmark_peers_cpu.yaml -o benchmarks/results/peers_cpu
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deltacd.cli.common import Parser, run_guarded  # noqa: E402


def run(args: argparse.Namespace) -> int:
    from fewlabel.protocol import run_few_label

    result = run_few_label(args.config, args.out, overwrite=args.overwrite)
    print(result.markdown)
    print(f"few_label.csv, few_label_summary.csv, few_label.md, few_label.png and few_label.json in {result.out_dir}/ "
          f"({result.minutes:.1f} min)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="benchmarks/few_label.py", description=__doc__.splitlines()[0],
                    epilog="e.g. " + " ; ".join(line.strip() for line in __doc__.splitlines() if "python " in line))
    parser.add_argument("config", metavar="CONFIG", help="benchmark YAML file")
    parser.add_argument("-o", "--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT once the new results are complete")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="accepted for symmetry with deltacd (no progress bars here)")
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
