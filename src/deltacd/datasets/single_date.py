"""Change pairs from single-date labels: STAR (Zheng et al., ICCV 2021, arXiv:2108.07002).

Method
    Zheng, Ma, Zhang & Zhong, "Change is Everywhere: Single-Temporal Supervised Object Change
    Detection in Remote Sensing Imagery", ICCV 2021, arXiv:2108.07002 (extended in
    arXiv:2406.15694). Two *unpaired* images, each labelled at its own date, make a pseudo
    bitemporal pair: an object present at one of the two places and absent from the other is an
    object change. A ``single_date`` source (settings: :class:`~deltacd.datasets.sources.SingleDateSource`):

    1. cuts every image and its single-date label into chips exactly like the other sources
       (``chip_size``, ``stride``; ``min_valid_fraction`` applies to these single-date chips); the
       chips are drawn into train / val / test by spatial blocks (xBD: one block per tile) and
       guarded as usual (:mod:`deltacd.datasets.chips`);
    2. pairs every kept chip i, ``pairs_per_chip`` times, with a partner from the **same source and
       the same split** (never across splits: no val/test place ever reaches a train pair): chip i
       itself for a share ``identity_fraction`` of each split's pairs (``round(share x pairs)``
       pairs, drawn with ``seed``), otherwise a chip j drawn uniformly with ``seed`` among the chips
       whose footprint does not overlap chip i's. An overlapping partner would be a shifted copy of
       the same place, and the label would then call misregistration "change";
    3. writes each pair as an ordinary A/B/label chip, so training needs no change:
       A = image i, B = image j (byte copies of the single-date chips, each keeping its own
       georeferencing), label = mask_i XOR mask_j for object masks (``label_type: mask``), or
       class_i != class_j for land-cover maps (``label_type: classes``, with ``from`` = class_i and
       ``to`` = class_j kept as extra targets). A pixel unlabelled in either chip is ignored.
       Identity pairs have A == B and an all-0 label: identical geometry means no change.

    ``chips.csv`` gives every pair its ``pair_of`` (the two single-date chip ids,
    ``<source>__<scene>__<row>_<col>``; ``scene``/``row_off``/``col_off``/``block`` are those of
    the before chip) and ``manifest.json`` records the source kind ``single_date`` with its STAR
    parameters and pair counts. Normalisation statistics are those of the pairs' two images.

Limits
    * The two images of a pair are two different places. The network learns the appearance and
      disappearance of objects, not what a real revisit adds: misregistration, parallax of tall
      objects between view angles, moved shadows, season and illumination. Only the augmentation
      (:mod:`deltacd.datasets.augment`: photometric jitter per date, sub-pixel shifts) imitates
      part of it, so a STAR model over-reacts to those more than one trained on real pairs.
    * Outside identity pairs the background differs everywhere; "no change" on a real unchanged
      place seen twice (same geometry, other radiometry) is taught only by the identity pairs plus
      photometric augmentation: keep ``identity_fraction`` above 0.
    * Only appearance / disappearance of whole labelled objects is produced: no partial changes
      (extensions, roof repairs), and the change fraction follows the object density
      (about 2p(1 - p) for a share p of object pixels), not the rarity of real change.
    * Pairs are drawn once and written; the paper redraws them at every mini-batch. Raise
      ``pairs_per_chip`` for more variety.
    * Labels must describe their own image date: footprints from another year (e.g. 2020 building
      footprints over 2011 images) carry their own changes as label noise.

The source is opened by :mod:`deltacd.datasets.sources.single_date`; the pairs are drawn and
written by :mod:`deltacd.datasets.star`. This module names both.
"""

from __future__ import annotations

from deltacd.datasets.sources.single_date import SingleDateScene, open_single_date
from deltacd.datasets.star import STAR_REFERENCE, draw_star_partners, make_star_pairs

__all__ = ["STAR_REFERENCE", "SingleDateScene", "draw_star_partners", "make_star_pairs", "open_single_date"]
