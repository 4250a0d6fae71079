"""The ``deltacd`` command: parses arguments and calls the Python API, nothing else.

One module per verb (:mod:`deltacd.cli.detect`, :mod:`deltacd.cli.damage`, ...), each with
``add_arguments(parser)`` and ``run(args)``, the API function it calls imported inside ``run``, and
its help in its docstring (:func:`verb_help`); :mod:`deltacd.cli.common` holds what they share
(one-line errors, the console, progress bars) and :mod:`deltacd.cli.options` the flags generated
from the options dataclasses. :func:`main` builds the arguments of the verb it is given only, so
``deltacd --help`` and ``deltacd VERB --help`` import neither numpy nor GDAL.

A :class:`~deltacd.errors.DeltacdError` becomes one line on stderr and exit code 1, and nothing
else is printed: the warnings a run raised are shown (one line each) only once it succeeded.
``-v`` (before or after the verb) also shows deltacd's progress messages, other libraries'
warnings and tracebacks; other libraries' INFO lines are never shown. SIGTERM is handled like
Ctrl+C: the run stops, removes what it had written, and the command exits with 128 + the signal
number.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

from deltacd._version import __version__
from deltacd.cli.common import Parser, run_guarded

#: The verbs, in the order ``deltacd --help`` lists them, and their modules in this package.
VERBS = {
    "detect": "detect", "batch": "batch", "demo": "demo", "prepare-dataset": "prepare_dataset", "train": "train",
    "evaluate": "evaluate", "compare": "compare", "robustness": "robustness", "damage": "damage",
    "evaluate-damage": "evaluate_damage", "run": "run", "template": "template", "report": "report", "prepare-examples": "prepare_examples",
    "methods": "methods", "review": "review", "refine": "refine",
}


def verb_help(doc: str | None) -> tuple[str, str]:
    """The summary and the description of a verb, from its module's docstring.

    The first line reads ``deltacd VERB``: *summary*. (the summary is listed by ``deltacd --help``);
    the second paragraph is the description (``deltacd VERB --help``); later ones are for developers.
    """
    first, _, rest = (doc or "").partition("\n\n")
    return first.partition(": ")[2].removesuffix("."), " ".join(rest.partition("\n\n")[0].split())


def build_parser(verbs: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the command; only the verbs in ``verbs`` (default: all) get their arguments."""
    chosen = set(VERBS if verbs is None else verbs)
    parser = Parser(prog="deltacd", description="Change detection between two very-high-resolution images.")
    parser.add_argument("--version", action="version", version=f"deltacd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # the same flags after the verb (deltacd detect ... -v); SUPPRESS keeps a value given before it
    common = Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details and show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for verb, name in VERBS.items():
        module = importlib.import_module(f"deltacd.cli.{name}")
        summary, description = verb_help(module.__doc__)
        p = sub.add_parser(verb, parents=[common], help=summary, description=description)
        if verb in chosen:
            module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((a for a in argv if not a.startswith("-")), None)  # the options before the verb take no value
    args = build_parser([verb] if verb else []).parse_args(argv)
    return run_guarded(lambda: args.func(args), verbose=args.verbose)
