"""STAR pairing: single-date chips of one split paired into change chips (Zheng et al., ICCV 2021, arXiv:2108.07002).

Called, through a ``single_date`` source's ``pairer``, after the split draw of
:mod:`deltacd.datasets.chips`. The method and its limits: :mod:`deltacd.datasets.single_date`.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deltacd.datasets.chip_files import read_chip_band, write_chip
from deltacd.datasets.manifest import SPLITS, BandMoments

if TYPE_CHECKING:  # the source package imports this module to set its pairer
    from deltacd.datasets.sources.config import SingleDateSource
    from deltacd.datasets.sources.scenes import OpenedSource

log = logging.getLogger(__name__)

__all__ = ["STAR_REFERENCE", "draw_star_partners", "make_star_pairs"]

#: The method, as written in the manifest.
STAR_REFERENCE = "STAR: Zheng, Ma, Zhang & Zhong, ICCV 2021, arXiv:2108.07002"


def draw_star_partners(
    places: list[tuple[str, int, int]],
    *,
    chip_size: int,
    pairs_per_chip: int,
    identity_fraction: float,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Partners of every chip of one split: ``pairs_per_chip`` indices into ``places`` per chip.

    Parameters
    ----------
    places
        (scene, row, col) of every chip of the split; two chips overlap when they are in one scene
        less than ``chip_size`` px apart in both directions.
    identity_fraction
        Exactly ``round(identity_fraction * len(places) * pairs_per_chip)`` slots, drawn at random,
        pair a chip with itself.
    rng
        The draw's generator.

    Returns
    -------
    list of list of int
        ``partners[i][k]``: the after chip of the k-th pair of chip i (``i`` for an identity pair).
        Other partners are drawn uniformly among the chips that are not i and do not overlap i,
        distinct for one chip while there are enough; a chip without any such partner is paired
        with itself.
    """
    n = len(places)
    slots = n * pairs_per_chip
    identity = np.zeros(slots, dtype=bool)
    identity[rng.permutation(slots)[: math.floor(slots * identity_fraction + 0.5)]] = True

    def allowed(i: int, j: int) -> bool:
        (si, ri, ci), (sj, rj, cj) = places[i], places[j]
        return j != i and not (si == sj and abs(ri - rj) < chip_size and abs(ci - cj) < chip_size)

    partners = []
    for i in range(n):
        chosen: list[int] = []
        for k in range(pairs_per_chip):
            if identity[i * pairs_per_chip + k]:
                chosen.append(i)
                continue
            j = None
            for _ in range(64):  # rejection: overlapping neighbours are few in a split of many chips
                candidate = int(rng.integers(n))
                if allowed(i, candidate) and candidate not in chosen:
                    j = candidate
                    break
            if j is None:  # few chips: list them
                pool = [c for c in range(n) if allowed(i, c)]
                fresh = [c for c in pool if c not in chosen]
                j = int(rng.choice(fresh or pool)) if pool else i
            chosen.append(j)
        partners.append(chosen)
    return partners


def make_star_pairs(source: OpenedSource, cfg: SingleDateSource, kept: list, tmp: Path, *, targets: tuple[str, ...],
                    chip_size: int, ignore: int) -> list:
    """Replace the single-date chips of ``source`` in ``kept`` by STAR pairs written in ``tmp``.

    ``kept`` holds the chips written by :mod:`deltacd.datasets.chips` (``A`` and ``B`` both the
    single-date image, ``label`` the single-date mask or class map) with their split; the pairs
    take their place in the list (chip i's split, scene, offsets and block) and the single-date
    chip files are deleted.
    """
    mine = [c for c in kept if c.source is source]
    pairs_of: dict[str, list] = {}
    star = source.description["star"]
    counts: dict[str, dict[str, int]] = {"single_date_chips": {}, "pairs": {}, "identity_pairs": {}, "changed_pixels": {}}
    for split_index, split in enumerate(SPLITS):
        members = sorted((c for c in mine if c.split == split), key=lambda c: c.id)
        if not members:
            continue
        rng = np.random.default_rng([cfg.seed, source.index, split_index])
        partners = draw_star_partners([(c.scene.name, c.row, c.col) for c in members], chip_size=chip_size,
                                      pairs_per_chip=cfg.pairs_per_chip, identity_fraction=cfg.identity_fraction, rng=rng)
        alone = sum(1 for i, js in enumerate(partners) for j in js if j == i)
        expected = math.floor(len(members) * cfg.pairs_per_chip * cfg.identity_fraction + 0.5)
        if alone > expected:
            log.warning("source %s, split %s: %d pair(s) had no partner that does not overlap their chip; "
                        "paired with themselves", source.name, split, alone - expected)
        counts["single_date_chips"][split] = len(members)
        counts["pairs"][split] = len(members) * cfg.pairs_per_chip
        counts["identity_pairs"][split] = alone
        for i, js in enumerate(partners):
            ci = members[i]
            pairs_of[ci.id] = [_write_pair(tmp, f"{ci.id}__p{k}", ci, members[j], targets, cfg.label_type, ignore)
                               for k, j in enumerate(js)]
        counts["changed_pixels"][split] = int(sum(p.balance[1] for c in members for p in pairs_of[c.id]))
    for c in mine:
        for folder in ("A", "B", "label", *targets):
            (tmp / folder / f"{c.id}.tif").unlink(missing_ok=True)
    star.update(counts)
    out: list = []
    placed = False
    for c in kept:
        if c.source is not source:
            out.append(c)
        elif not placed:  # all pairs where the source's chips were, in chip order
            out.extend(p for m in mine for p in pairs_of[m.id])
            placed = True
    log.info("source %s: %s STAR pairs from %s single-date chips", source.name, counts["pairs"], counts["single_date_chips"])
    return out


def _write_pair(tmp: Path, pair_id: str, ci, cj, targets: tuple[str, ...], label_type: str, ignore: int):
    """Write one pair's A/B/label (and targets); returns its chip record."""
    shutil.copyfile(tmp / "A" / f"{ci.id}.tif", tmp / "A" / f"{pair_id}.tif")
    shutil.copyfile(tmp / "A" / f"{cj.id}.tif", tmp / "B" / f"{pair_id}.tif")
    li, crs_i, transform_i = read_chip_band(tmp / "label" / f"{ci.id}.tif")
    lj, crs_j, transform_j = read_chip_band(tmp / "label" / f"{cj.id}.tif")
    unknown = (li == ignore) | (lj == ignore)
    change = (li ^ lj) if label_type == "mask" else (li != lj).astype(np.uint8)
    label = np.where(unknown, np.uint8(ignore), change).astype(np.uint8)
    write_chip(tmp / "label" / f"{pair_id}.tif", label[None], crs_i, transform_i, ignore, ("label",))
    target_counts = {}
    for target in targets:
        if label_type == "classes" and target in ("from", "to"):
            values, crs, transform = (li, crs_i, transform_i) if target == "from" else (lj, crs_j, transform_j)
        else:  # a target of another source: unknown here
            values, crs, transform = np.full(label.shape, ignore, dtype=np.uint8), crs_i, transform_i
        write_chip(tmp / target / f"{pair_id}.tif", values[None], crs, transform, ignore, (target,))
        codes, n = np.unique(values, return_counts=True)
        target_counts[target] = Counter({int(k): int(v) for k, v in zip(codes, n)})
    transitions: Counter = Counter()
    if label_type == "classes":
        both = ~unknown
        codes, n = np.unique(li[both].astype(np.int32) * 256 + lj[both], return_counts=True)
        transitions = Counter({(int(k) // 256, int(k) % 256): int(v) for k, v in zip(codes, n)})
    balance = np.array([np.count_nonzero(label == 0), np.count_nonzero(label == 1), np.count_nonzero(label == ignore)],
                       dtype=np.int64)
    return replace(ci, id=pair_id, moments=_single(ci.moments).merge(_single(cj.moments)), balance=balance,
                   target_counts=target_counts, transitions=transitions, pair_of=(ci.id, cj.id))


def _single(moments: BandMoments) -> BandMoments:
    """Moments of the image alone: the single-date chip counted it as both dates (same pixels twice)."""
    return BandMoments(moments.count // 2, moments.mean, moments.m2 / 2)

