"""The open registry of methods: name -> class, one table per kind (``change``, ``damage``).

:func:`register_method` adds a :class:`~deltacd.methods.base.Method` subclass under its ``name``
in the table of its ``kind`` (usable as a class decorator, like
:func:`deltacd.models.registry.register_model`); :func:`build_method` builds one from its name and
keyword options, turning an unknown name or option into an :class:`~deltacd.errors.InputError`.

* ``change``: :class:`~deltacd.methods.base.ChangeMethod` s, for ``deltacd detect --method`` (the
  built-in ``cva``, ``irmad``, ``zero-shot`` are registered by :mod:`deltacd.methods`);
* ``damage``: :class:`deltacd.damage.methods.DamageMethod` s, for ``deltacd damage --method`` (the
  built-in ``change``, ``classifier``, ``segmentation`` are registered by :mod:`deltacd.damage.methods`).
"""

from __future__ import annotations

import inspect
from typing import Any

from deltacd.errors import InputError
from deltacd.methods.base import ChangeMethod, Method

__all__ = ["DAMAGE_METHODS", "KINDS", "METHODS", "build_method", "get_method", "method_class", "register_method"]

#: The kinds of method, each with its table.
KINDS = ("change", "damage")
_TABLES: dict[str, dict[str, type[Method]]] = {kind: {} for kind in KINDS}
#: Change methods by name (``deltacd detect --method``).
METHODS: dict[str, type[Method]] = _TABLES["change"]
#: Damage methods by name (``deltacd damage --method``).
DAMAGE_METHODS: dict[str, type[Method]] = _TABLES["damage"]


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method class under its ``name`` in the table of its ``kind``; usable as a class decorator.

    After this, ``get_method(name)`` (change) or ``build_damage_method(name, ...)`` (damage) builds
    it, in this process, and the verbs take ``--method NAME``. A name already taken in the same
    table is refused.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise InputError(f"register_method: {cls!r} is not a method class; derive it from "
                         "deltacd.methods.base.ChangeMethod (or deltacd.damage.methods.DamageMethod)")
    name, kind = getattr(cls, "name", None), getattr(cls, "kind", None)
    if not isinstance(name, str) or not name:
        raise InputError(f"register_method: {cls.__name__} needs a class attribute name (its registry key)")
    if kind not in _TABLES:
        raise InputError(f"register_method: {cls.__name__}.kind is {kind!r}; expected one of {', '.join(KINDS)}")
    table = _TABLES[kind]
    if name in table and table[name] is not cls:
        raise InputError(f"register_method: the {kind} method name {name!r} is taken by {table[name].__name__}; choose another")
    table[name] = cls
    return cls


def method_class(name: str, kind: str = "change") -> type[Method]:
    """The class registered as ``name`` among the methods of ``kind``; InputError listing the others when unknown."""
    table = _TABLES[kind]
    if name not in table:
        what = "method" if kind == "change" else f"{kind} method"
        raise InputError(f"method: unknown {what} {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


def build_method(name: str, options: dict[str, Any] | None = None, *, kind: str = "change") -> Method:
    """Build the method ``name`` of ``kind`` with keyword ``options``.

    Raises
    ------
    InputError
        Unknown name (the message lists the available ones), an option the method does not
        take, or one its constructor rejects.
    """
    cls = method_class(name, kind)
    options = dict(options or {})
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"method_options: {', '.join(unknown)} not accepted by {name}; accepted: {', '.join(accepted) or 'none'}"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"method_options of {name}: {exc}") from exc


def get_method(name: str, **options: Any) -> ChangeMethod:
    """Build the change method called ``name`` with keyword ``options`` (:func:`build_method`)."""
    return build_method(name, options, kind="change")  # type: ignore[return-value]
