"""Change-detection methods, one per module, behind one registry.

``METHODS`` maps each class's ``name`` to the class; :func:`get_method` builds one with its
options and turns a wrong option into an :class:`~deltacd.errors.InputError`.
"""

from __future__ import annotations

import inspect
from typing import Any

from deltacd.errors import InputError
from deltacd.methods.base import ChangeMethod
from deltacd.methods.cva import CVA
from deltacd.methods.irmad import IRMAD
from deltacd.methods.zero_shot import FeatureDistance

METHODS: dict[str, type[ChangeMethod]] = {m.name: m for m in (CVA, IRMAD, FeatureDistance)}


def get_method(name: str, **options: Any) -> ChangeMethod:
    """Build the method called ``name`` with keyword ``options``.

    Raises
    ------
    InputError
        Unknown name (the message lists the available ones) or an option the method does not take.
    """
    if name not in METHODS:
        raise InputError(f"method: unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"method_options: {', '.join(unknown)} not accepted by {name}; accepted: {', '.join(accepted) or 'none'}"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"method_options of {name}: {exc}") from exc


__all__ = ["METHODS", "ChangeMethod", "get_method"]
