"""``deltacd methods``: list the change methods.

List the change-detection methods.

API: :data:`deltacd.methods.METHODS`.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from deltacd.methods import METHODS

    for name, cls in sorted(METHODS.items()):
        print(f"{name:12s} {(cls.__doc__ or '').strip().splitlines()[0]}")
    return 0
