"""Flags generated from an options dataclass: one flag per field, spelt as the field, typed by its annotation.

``--min-area-m2`` is the field ``min_area_m2`` of :class:`deltacd.DetectOptions`, which is also the
key of a ``--config`` file and of a study step: one name everywhere. Earlier spellings
(``--min-area``) stay accepted as aliases (the class's ``aliases``). The help text is the field's
description in the class docstring (:func:`deltacd.config.field_docs`) and its real default, so the
two cannot drift apart. Every flag defaults to ``None`` (not given): the API's defaults apply, and
flags override a ``--config`` file only where they are given.

How an annotation becomes a flag: ``bool`` -> a switch; ``Literal[...]`` -> choices; ``int`` /
``float`` -> that type; a union of a number with words (``float | Literal["auto"]``) -> either; a
tuple of numbers -> numbers separated by commas (``0.1,0.25,0.5``); ``str`` / ``Path`` -> as given.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, fields
from typing import Any, Literal

from deltacd.config import field_docs

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r'``"?([^`"]*)"?``')


def _plain(text: str, flags: Iterable[str] = ()) -> str:
    """Docstring markup made plain for a terminal: ``"cva"`` -> cva, :mod:`a.b` -> a.b, a field among ``flags``
    -> its flag (``model`` -> --model); ``%`` escaped for argparse."""
    flags = set(flags)

    def literal(match: re.Match) -> str:
        word = match.group(1)
        return f"--{word.replace('_', '-')}" if word in flags else word

    return _LITERAL.sub(literal, _ROLE.sub(r"\1", text)).replace("%", "%%")


def _help(doc: str, default: Any, flags: Iterable[str]) -> str:
    """The field's description, with its default (when it has one to show) before the final full stop."""
    text = _plain(doc, flags).rstrip()
    if default is None or isinstance(default, bool):
        return text
    stop = "." if text.endswith(".") else ""
    return f"{text.removesuffix('.')} (default {_shown(default)}){stop}"


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _branches(hint: Any) -> list[Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


class _Value:
    """An argparse ``type``: one of ``words``, or a number, or ``count`` numbers separated by commas."""

    def __init__(self, words: tuple[str, ...], number: type | None, count: tuple[int, ...]):
        self.words, self.number, self.count = words, number, count
        self.__name__ = "|".join(words) or "number"

    def describe(self) -> str:
        parts = [f"{w!r}" for w in self.words]
        if self.number is not None and 1 in self.count:
            parts.append("a number")
        parts += [f"{n} numbers separated by commas" for n in self.count if n > 1]
        return " or ".join(parts)

    def __call__(self, value: str) -> Any:
        if value in self.words:
            return value
        try:
            if "," not in value and self.number is not None:
                return self.number(value)
            numbers = tuple(float(item) for item in value.split(","))
        except ValueError:
            numbers = ()
        if len(numbers) > 1 and len(numbers) in self.count:
            return numbers
        raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {value!r}")


def flag_kwargs(hint: Any) -> dict[str, Any] | None:
    """argparse keyword arguments for a field annotated ``hint`` (None: no flag can carry it, e.g. a mapping)."""
    branches = _branches(hint)
    words = tuple(v for b in branches if typing.get_origin(b) is Literal for v in typing.get_args(b))
    others = [b for b in branches if typing.get_origin(b) is not Literal]
    if others == [bool]:
        return {"action": "store_true"}
    if not others:
        return {"choices": list(words)}
    if words or any(typing.get_origin(b) is tuple for b in others) or len(others) > 1:
        count, number = [], None
        for b in others:
            if b in (int, float):
                count.append(1)
                number = b
            elif typing.get_origin(b) is tuple and all(a in (int, float) for a in typing.get_args(b)):
                count.append(len(typing.get_args(b)))
            else:
                return {}  # a union with text: taken as given
        value = _Value(tuple(str(w) for w in words), number, tuple(count))
        metavar = "|".join([*map(str, words), *(["NUMBER"] if 1 in count else []),
                            *[",".join(["N"] * n) for n in count if n > 1]])
        return {"type": value, "metavar": metavar}
    (only,) = others
    if only in (int, float):
        return {"type": only}
    if typing.get_origin(only) in (dict, list) or only in (dict, list):
        return None
    return {}  # str, Path: the value as given


def _default(field: Field) -> Any:
    return field.default if field.default is not MISSING else None


def add_option_flags(parser: argparse.ArgumentParser, cls: type, groups: Mapping[str, Iterable[str]], *,
                     aliases: Mapping[str, str] | None = None, metavars: Mapping[str, str] | None = None,
                     others: str | None = "other settings") -> dict[str, argparse._ArgumentGroup]:
    """One flag per field of ``cls`` named in ``groups`` (title -> field names), in that order.

    ``aliases``: earlier flag name (``min_area``) -> field; ``metavars``: field -> metavar shown in the
    help. The fields of ``cls`` that no group names get a group of their own titled ``others`` (None:
    no flag), so a new option gets its flag without touching the command line.
    Returns the argument groups by title, for flags that are not fields (``--option``).
    """
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    docs = field_docs(cls)
    aliases, metavars = aliases or {}, metavars or {}
    listed = {name for names in groups.values() for name in names}
    rest = [name for name in by_name if name not in listed and flag_kwargs(hints[name]) is not None]
    made = {}
    for title, names in [*groups.items(), *([(others, rest)] if rest and others else [])]:
        group = made[title] = parser.add_argument_group(title)
        for name in names:
            kwargs = flag_kwargs(hints[name])
            if kwargs is None:  # a mapping (method_options): the verb gives it its own flag
                continue
            if name in metavars:
                kwargs["metavar"] = metavars[name]
            spellings = [name, *sorted(old for old, new in aliases.items() if new == name)]
            group.add_argument(*(f"--{s.replace('_', '-')}" for s in spellings), dest=name, default=None,
                               help=_help(docs.get(name, ""), _default(by_name[name]), by_name), **kwargs)
    return made


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The options among ``names`` given on the command line (flags left out are None)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
