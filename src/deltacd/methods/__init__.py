"""Change-detection methods, one per module, behind one open registry (:mod:`deltacd.methods.registry`).

``METHODS`` maps each change method's ``name`` to its class; :func:`get_method` builds one with
its options and turns a wrong option into an :class:`~deltacd.errors.InputError`;
:func:`register_method` adds a method (change or damage) under its name.
"""

from __future__ import annotations

from deltacd.methods.base import ChangeMethod, Method
from deltacd.methods.cva import CVA
from deltacd.methods.irmad import IRMAD
from deltacd.methods.registry import DAMAGE_METHODS, METHODS, build_method, get_method, method_class, register_method
from deltacd.methods.zero_shot import FeatureDistance

for _builtin in (CVA, IRMAD, FeatureDistance):
    register_method(_builtin)
del _builtin

__all__ = [
    "DAMAGE_METHODS",
    "METHODS",
    "ChangeMethod",
    "Method",
    "build_method",
    "get_method",
    "method_class",
    "register_method",
]
