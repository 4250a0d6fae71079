"""The contract every method follows: :class:`Method` (what the registry reads), :class:`ChangeMethod`.

A change method never opens a file: the engine hands it arrays of both dates on the common grid
and writes what it returns. Scene-wide state (statistics, a fitted transform) is learnt once in
:meth:`ChangeMethod.fit` from a :class:`~deltacd.prepare.sampling.PixelSample`. Every attribute
the engine and the pipelines read is declared here with its default, so a new method states
only what differs. Damage methods (``kind = "damage"``) derive from
:class:`deltacd.damage.methods.DamageMethod`; both kinds register with
:func:`deltacd.methods.registry.register_method`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from deltacd.errors import InputError
from deltacd.postprocess.histogram import Histogram
from deltacd.postprocess.threshold import otsu_threshold
from deltacd.prepare.sampling import PixelSample


class Method(ABC):
    """What every registered method declares (:func:`deltacd.methods.registry.register_method`).

    Class attributes
    ----------------
    name
        Registry key (``deltacd detect --method NAME``, ``deltacd damage --method NAME``).
    kind
        ``"change"`` (a :class:`ChangeMethod`, run by ``detect``) or ``"damage"`` (a
        :class:`deltacd.damage.methods.DamageMethod`, run by ``damage``): the registry table.
    """

    name: ClassVar[str]
    kind: ClassVar[str]

    def describe(self) -> dict:
        """Parameters and fitted state, JSON-serialisable, for run.json."""
        return {"name": self.name}


class ChangeMethod(Method):
    """A change detector: two dates in, one change score per pixel out (higher = more change).

    Class attributes
    ----------------
    name
        Registry key (``deltacd detect --method NAME``).
    kind
        ``"change"``.
    context
        Pixels of context needed on each side of a window for an exact result; 0 for
        per-pixel methods. The engine overlaps tiles by at least twice this.
    size_multiple
        Tile height and width must be multiples of this (networks with pooling levels).
    score_units
        What the score means, written into run.json and the raster's description.
    score_range
        ``(low, high)``: every score the method can produce lies in ``[low, high]``; a given
        threshold must lie in ``[low, high)``, or it would flag everything or nothing.
    threshold_rule
        Name of the automatic threshold rule, for run.json and the console ("Otsu").
    work_bytes_per_pixel
        Memory the method needs per pixel of a batch beyond its inputs (activations of a
        network), for the up-front check of the tile size.
    channels
        Values per pixel ``predict`` returns: 1 (a score, [B, H, W]) or K ([B, K, H, W], e.g.
        class probabilities), blended alike by the engine.
    tile_size
        Default tile side of the engine for this method (px).
    thread_safe
        ``predict`` may run in several threads at once (no state changes, numpy releasing the
        GIL): the engine then scores tiles in its reading threads.
    default_harmonise
        Harmonisation of date 2 that ``harmonise="auto"`` resolves to (``"pif"``; a network
        asks for the one it was trained with). An instance may refine it.

    Networks that run at their training resolution also define ``gsd_m`` (metres, or None when
    unknown); the pipeline treats a method that has the attribute as such a network, so the
    base class declares its type but gives it no value.
    """

    kind: ClassVar[str] = "change"
    context: ClassVar[int] = 0
    size_multiple: ClassVar[int] = 1
    score_units: ClassVar[str] = "change score"
    score_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
    threshold_rule: ClassVar[str] = "Otsu"
    work_bytes_per_pixel: ClassVar[int] = 16
    channels: ClassVar[int] = 1
    thread_safe: ClassVar[bool] = False
    tile_size: ClassVar[int] = 512
    default_harmonise: str = "pif"
    gsd_m: float | None

    def fit(self, sample: PixelSample) -> None:  # noqa: B027 - optional hook
        """Learn scene-wide state from pixels of the whole scene (optional)."""

    @abstractmethod
    def predict(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Change score of a batch of windows.

        Parameters
        ----------
        before, after : np.ndarray
            float32 [B, C, H, W], common bands in the pair's order, date 2 harmonised to date 1.

        Returns
        -------
        np.ndarray
            float32 [B, H, W]; higher means more likely changed.
        """

    def auto_threshold(self, hist: Histogram) -> float:
        """The method's own threshold rule on the scene's score histogram (Otsu by default)."""
        return otsu_threshold(hist)

    def check_threshold(self, value: float) -> None:
        """Raise :class:`InputError` when a given threshold lies outside what the method can produce."""
        low, high = self.score_range
        if not (math.isfinite(value) and low <= value < high):
            raise InputError(
                f"threshold: {value:g} lies outside the scores {self.name} produces ({self.score_units}, "
                f"[{low:g}, {high:g}]): it would flag every pixel or none; give a value in [{low:g}, {high:g}) or 'auto'"
            )
