"""What a robustness study runs: its methods, the detect options of each pair, and the perturbation strengths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deltacd.config import DetectOptions, build_options
from deltacd.errors import InputError
from deltacd.evaluate.perturb import PERTURBATIONS, Perturbation, get_perturbation
from deltacd.methods import ChangeMethod

__all__ = ["merged_detect_options", "method_kwargs", "method_label", "method_labels", "perturbation_plan", "resolve_method"]


def method_label(method: str | ChangeMethod) -> str:
    if isinstance(method, str):
        return method
    if isinstance(method, ChangeMethod):
        return str(method.name)
    raise InputError(f"method: got {type(method).__name__}, expected a method name (cva, irmad) or a ChangeMethod instance")


def method_kwargs(method: str | ChangeMethod) -> dict[str, Any]:
    return {"method": method} if isinstance(method, str) else {"method_instance": method}


def method_labels(methods: Sequence[str | ChangeMethod]) -> list[str]:
    if not methods:
        raise InputError("methods: empty list; give at least one method name or ChangeMethod")
    labels = [method_label(m) for m in methods]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise InputError(f"methods: {', '.join(twice)} given twice; give each method once (set distinct names on instances)")
    return labels


def merged_detect_options(detect_options: Mapping[str, Any] | None, pair_options: Mapping[str, Any]) -> dict[str, Any]:
    options = {"coregistration": "off", **dict(detect_options or {}), **dict(pair_options)}
    if "method" in options:
        raise InputError("detect_options: 'method' is not a detect option here; give the method(s) with method= / methods=")
    build_options(DetectOptions, options, source="detect_options")  # fail early, with detect's message
    return options


def perturbation_plan(
    perturbations: Sequence[str] | str | None, strengths: Sequence[float] | Mapping[str, Sequence[float]] | None
) -> list[tuple[Perturbation, tuple[float, ...]]]:
    """(perturbation, strengths) to run, each list sorted, starting at 0."""
    if perturbations is None:
        names = list(PERTURBATIONS)
    else:
        names = [perturbations] if isinstance(perturbations, str) else list(perturbations)
    if not names:
        raise InputError(f"perturbations: empty list; give one or more of {', '.join(PERTURBATIONS)}")
    chosen = [get_perturbation(n) for n in names]
    if isinstance(strengths, Mapping):
        unknown = sorted(set(strengths) - set(names))
        if unknown:
            raise InputError(
                f"strengths: given for {', '.join(unknown)}, which are not among the perturbations run ({', '.join(names)})"
            )
    plan = []
    for p in chosen:
        given = strengths.get(p.name) if isinstance(strengths, Mapping) else strengths
        values = p.strengths if given is None else tuple(float(s) for s in given)
        if not values:
            raise InputError(f"strengths of {p.name}: empty list; give values in {p.units}, e.g. {list(p.strengths)}")
        for s in values:  # validate on a tiny image: a bad strength fails before any detect run
            p(np.zeros((1, 4, 4), np.float32), s, data_range=1.0)
        plan.append((p, tuple(sorted({0.0, *values}))))
    return plan


def resolve_method(model: str | Path | ChangeMethod) -> str | ChangeMethod:
    if isinstance(model, ChangeMethod):
        return model
    from deltacd.methods import METHODS

    if isinstance(model, str) and model in METHODS:
        return model
    try:
        from deltacd.methods.learned import LearnedModel
    except ImportError as exc:  # torch missing
        raise InputError(f"model {model!s}: learned models need torch ({exc}); install deltacd with its model extras") from exc
    return LearnedModel.from_file(model)
