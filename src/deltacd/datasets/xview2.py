"""The xView2 challenge score (building localisation + damage) and an xBD label reader.

The score follows the official scoring code, ``xview2_metrics.py`` of
https://github.com/DIUx-xView/xView2_scoring (commit e34328c5b4de79e82001277c0dc0ba0622bd32ec),
re-implemented here on numpy arrays with the same definitions:

* Images ("tiles") hold uint8 classes: localisation 0 = background, > 0 = building; damage
  0 = background, 1 = no damage, 2 = minor, 3 = major, 4 = destroyed.
* **Localisation**: TP/FN/FP of "building" (value > 0) between the predicted and the target
  localisation masks, over all pixels, summed over tiles.
* **Damage**: the predicted damage is first multiplied by the predicted *localisation* mask
  (damage is only credited where a building is predicted), then only pixels where the *damage
  target* has a building (value > 0) are scored. For each class c in 1..4, TP/FN/FP of
  "class c" are counted **only on tiles whose damage target contains c**: on a tile without c,
  even false positives of c are not counted (the official code returns ``None`` for that tile
  and pandas skips it in the sum). Counts are summed over tiles.
* **F1** per class from the summed counts: 0 when TP = 0 (the official ``F1Recorder``: precision
  and recall are set to 0 when TP = 0), never NaN.
* **Damage F1** = harmonic mean of the four class F1 with ``eps = 1e-6``:
  ``4 / sum(1 / (f1_c + eps))``. Because of ``eps`` a perfect prediction has damage F1
  ``1 + 1e-6`` and score ``1 + 7e-7``, exactly as in the official code; pass ``eps=0`` for the
  plain harmonic mean.
* **Score** = ``0.3 * localisation F1 + 0.7 * damage F1``.

In the challenge the localisation target is rasterized from the *pre*-disaster labels and the
damage target from the *post*-disaster labels (:func:`rasterize_xbd_labels` of each file).

References
----------
.. [1] Gupta, R., Goodman, B., Patel, N., Hosfelt, R., Sajeev, S., Heim, E., Doshi, J.,
   Lucas, K., Choset, H., Gaston, M. (2019). Creating xBD: A Dataset for Assessing Building
   Damage from Satellite Imagery. CVPR Workshops 2019. arXiv:1911.09296
.. [2] DIUx-xView/xView2_scoring, ``xview2_metrics.py`` (official scoring code).
.. [3] DIUx-xView/xView2_baseline, ``model/process_data.py``: ``damage_intensity_encoding`` maps
   every subtype other than the four damage levels (i.e. ``un-classified``) to no-damage.
.. [4] vdurnov/xview2_1st_place_solution, ``create_masks.py``: ``"un-classified": 1`` (no-damage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deltacd.errors import InputError, MissingInputError

__all__ = [
    "DAMAGE_CLASSES",
    "OFFICIAL_EPS",
    "XBD_SUBTYPES",
    "XView2Accumulator",
    "XView2Scores",
    "rasterize_xbd_labels",
    "tile_counts",
    "xview2_score",
]

#: Damage values of the xView2 masks, in the order of the official per-class F1.
DAMAGE_CLASSES = {1: "no_damage", 2: "minor_damage", 3: "major_damage", 4: "destroyed"}

#: xBD ``properties.subtype`` -> damage value (``un-classified`` is decided by ``unclassified=``).
XBD_SUBTYPES = {"no-damage": 1, "minor-damage": 2, "major-damage": 3, "destroyed": 4}

#: The official epsilon of the harmonic mean.
OFFICIAL_EPS = 1e-6


def _f1_official(tp: int, fn: int, fp: int) -> float:
    """F1 as the official ``F1Recorder``: 0 when TP = 0."""
    if tp == 0:
        return 0.0
    p = tp / (tp + fp)
    r = tp / (tp + fn)
    return 2 * p * r / (p + r)


@dataclass(frozen=True)
class XView2Scores:
    """xView2 scores (names as in the official output JSON).

    Attributes
    ----------
    score : float
        ``0.3 * localization_f1 + 0.7 * damage_f1``.
    localization_f1 : float
    damage_f1 : float
        Harmonic mean (with eps) of the four damage F1.
    damage_f1_no_damage, damage_f1_minor_damage, damage_f1_major_damage, damage_f1_destroyed : float
    n_tiles : int
        Number of tiles accumulated.
    """

    score: float
    localization_f1: float
    damage_f1: float
    damage_f1_no_damage: float
    damage_f1_minor_damage: float
    damage_f1_major_damage: float
    damage_f1_destroyed: float
    n_tiles: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _as_tile(name: str, a: Any, *, damage: bool) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name}: got dtype {arr.dtype}, expected integer class masks (uint8); convert with np.asarray(..., np.uint8)")
    if arr.ndim != 2:
        raise InputError(f"{name}: got {arr.ndim} dimension(s) {arr.shape}, expected a 2-D [H, W] mask; pass one band")
    if damage and arr.size and (arr.min() < 0 or arr.max() > 4):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise InputError(
            f"{name}: found value {bad}, expected damage classes 0..4 (0 background, 1 no, 2 minor, 3 major, 4 destroyed); "
            "map other codes (e.g. 255) to 0 before scoring"
        )
    return arr


class XView2Accumulator:
    """Accumulates the official xView2 counts tile by tile (mutable accumulator).

    Examples
    --------
    >>> acc = XView2Accumulator()
    >>> for lp, dp, lt, dt in tiles:            # doctest: +SKIP
    ...     acc.update(lp, dp, lt, dt)
    >>> acc.result().score                      # doctest: +SKIP
    """

    __slots__ = ("damage_counts", "localization_counts", "n_tiles")

    def __init__(self) -> None:
        #: int64 [3]: localisation TP, FN, FP (official column order lTP, lFN, lFP).
        self.localization_counts = np.zeros(3, dtype=np.int64)
        #: int64 [4, 3]: per damage class 1..4, TP, FN, FP.
        self.damage_counts = np.zeros((4, 3), dtype=np.int64)
        self.n_tiles = 0

    def update(self, loc_pred: Any, dmg_pred: Any, loc_ref: Any, dmg_ref: Any) -> XView2Accumulator:
        """Add one tile (one pre/post image pair).

        Parameters
        ----------
        loc_pred : array_like of int, shape ``[H, W]``
            Predicted localisation; > 0 = building.
        dmg_pred : array_like of int, shape ``[H, W]``
            Predicted damage, 0..4.
        loc_ref : array_like of int, shape ``[H, W]``
            Target localisation (from the pre-disaster labels); > 0 = building.
        dmg_ref : array_like of int, shape ``[H, W]``
            Target damage (from the post-disaster labels), 0..4.

        Returns
        -------
        XView2Accumulator
            ``self``.

        Notes
        -----
        The tile is one unit of the official "class present in the target" rule, so call
        this once per image, not per window of an image, to reproduce the official score.
        """
        lp = _as_tile("loc_pred", loc_pred, damage=False)
        dp = _as_tile("dmg_pred", dmg_pred, damage=True)
        lt = _as_tile("loc_ref", loc_ref, damage=False)
        dt = _as_tile("dmg_ref", dmg_ref, damage=True)
        for name, a in (("dmg_pred", dp), ("loc_ref", lt), ("dmg_ref", dt)):
            if a.shape != lp.shape:
                raise InputError(f"{name}: got shape {a.shape}, expected {lp.shape} (the shape of loc_pred); pass masks of one tile")
        return self.add_tile_counts(*tile_counts(lp, dp, lt, dt))

    def add_tile_counts(self, localisation: np.ndarray, cm: np.ndarray) -> XView2Accumulator:
        """Add one tile given as its counts (:func:`tile_counts`, which may be summed over windows of the tile)."""
        self.localization_counts += np.asarray(localisation, dtype=np.int64)
        for c in range(1, 5):
            ref_c = cm[c].sum()
            if ref_c == 0:  # class absent from this tile's target: the tile is skipped for c (official)
                continue
            tp = cm[c, c]
            self.damage_counts[c - 1] += (tp, ref_c - tp, cm[:, c].sum() - tp)
        self.n_tiles += 1
        return self

    def merge(self, other: XView2Accumulator) -> XView2Accumulator:
        """Add the counts of another accumulator; returns ``self``."""
        if not isinstance(other, XView2Accumulator):
            raise InputError(f"other: got {type(other).__name__}, expected an XView2Accumulator; merge accumulators only")
        self.localization_counts += other.localization_counts
        self.damage_counts += other.damage_counts
        self.n_tiles += other.n_tiles
        return self

    def result(self, *, eps: float = OFFICIAL_EPS) -> XView2Scores:
        """The scores of the accumulated tiles.

        Parameters
        ----------
        eps : float, default 1e-6
            Added to each class F1 inside the harmonic mean (official value 1e-6; 0 gives the
            plain harmonic mean, which is 0 as soon as one class F1 is 0).
        """
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise InputError(f"eps: got {eps!r}, expected a number >= 0; use 1e-6 (official)")
        lf1 = _f1_official(*(int(x) for x in self.localization_counts))
        df1s = [_f1_official(*(int(x) for x in row)) for row in self.damage_counts]
        if eps == 0 and min(df1s) == 0:
            df1 = 0.0
        else:
            df1 = len(df1s) / sum((f + eps) ** -1 for f in df1s)
        return XView2Scores(
            score=0.3 * lf1 + 0.7 * df1,
            localization_f1=lf1,
            damage_f1=df1,
            damage_f1_no_damage=df1s[0],
            damage_f1_minor_damage=df1s[1],
            damage_f1_major_damage=df1s[2],
            damage_f1_destroyed=df1s[3],
            n_tiles=self.n_tiles,
        )


def xview2_score(
    loc_pred: Any, dmg_pred: Any, loc_ref: Any, dmg_ref: Any, *, eps: float = OFFICIAL_EPS
) -> XView2Scores:
    """The xView2 score of one tile, or of several tiles given as lists (same length).

    Parameters
    ----------
    loc_pred, dmg_pred, loc_ref, dmg_ref : array_like ``[H, W]`` or list of them
        See :meth:`XView2Accumulator.update`.
    eps : float, default 1e-6
        See :meth:`XView2Accumulator.result`.

    Returns
    -------
    XView2Scores
    """
    acc = XView2Accumulator()
    if isinstance(loc_pred, (list, tuple)):
        n = len(loc_pred)
        if not all(isinstance(x, (list, tuple)) and len(x) == n for x in (dmg_pred, loc_ref, dmg_ref)):
            raise InputError(f"dmg_pred/loc_ref/dmg_ref: expected lists of {n} tiles like loc_pred; pass four lists of equal length")
        for t in zip(loc_pred, dmg_pred, loc_ref, dmg_ref):
            acc.update(*t)
    else:
        acc.update(loc_pred, dmg_pred, loc_ref, dmg_ref)
    return acc.result(eps=eps)


def tile_counts(loc_pred: np.ndarray, dmg_pred: np.ndarray, loc_ref: np.ndarray, dmg_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Localisation TP, FN, FP [3] and the 5 x 5 damage confusion (rows target, columns prediction) of a tile or window.

    Counts of the windows of one image add up to the image's; :meth:`XView2Accumulator.add_tile_counts`
    then applies the official per-tile rule once for the whole image.
    """
    lp_b, lt_b = loc_pred > 0, loc_ref > 0
    localisation = np.array([np.count_nonzero(lp_b & lt_b), np.count_nonzero(~lp_b & lt_b), np.count_nonzero(lp_b & ~lt_b)])
    scored = dmg_ref > 0  # only where the damage target has a building
    d_pred = np.where(lp_b, dmg_pred, 0)[scored].astype(np.intp)  # damage credited only where a building is predicted
    d_ref = dmg_ref[scored].astype(np.intp)
    cm = np.bincount(d_ref * 5 + d_pred, minlength=25).reshape(5, 5)
    return localisation, cm


def rasterize_xbd_labels(
    json_path: str | Path,
    *,
    shape: tuple[int, int] | None = None,
    unclassified: Literal["no-damage", "ignore"] = "no-damage",
    all_touched: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Localisation and damage masks of one xBD label file.

    Parameters
    ----------
    json_path : str or Path
        An xBD label JSON (``*_pre_disaster.json`` or ``*_post_disaster.json``). Polygons are read
        from ``features.xy`` (WKT in pixel coordinates, x = column, y = row).
    shape : (int, int), optional
        ``(height, width)``; default the ``metadata`` height/width of the file, else 1024 x 1024
        (every xBD tile).
    unclassified : {"no-damage", "ignore"}, default "no-damage"
        What ``un-classified`` buildings become in the damage mask. ``"no-damage"`` (1) follows
        the xView2 baseline (``damage_intensity_encoding`` in ``model/process_data.py``)
        and the winning solution (``create_masks.py`` of vdurnov/xview2_1st_place_solution); ``"ignore"`` writes 0, so those
        pixels are left out of the damage score (they stay buildings in the localisation mask).
    all_touched : bool, default False
        False: a pixel is in a polygon when its centre is (GDAL/rasterio rule); True: when the
        polygon touches it. (The official masks were drawn with OpenCV ``fillPoly`` on rounded
        vertices, which differs by at most about a pixel along outlines.)

    Returns
    -------
    localisation : numpy.ndarray of uint8, shape ``shape``
        1 = building, 0 = background.
    damage : numpy.ndarray of uint8, shape ``shape``
        0 = background, 1 = no damage, 2 = minor, 3 = major, 4 = destroyed. All 0 for a
        pre-disaster file (it has no ``subtype``). Where building polygons overlap, the most
        severe class wins.

    Raises
    ------
    deltacd.errors.MissingInputError
        The file does not exist.
    deltacd.errors.InputError
        The file is not an xBD label file, or has an unknown subtype or a non-polygon geometry.
    """
    from affine import Affine
    from rasterio.features import rasterize
    from shapely import wkt as shapely_wkt

    if unclassified not in ("no-damage", "ignore"):
        raise InputError(f"unclassified: got {unclassified!r}, expected 'no-damage' or 'ignore'; use 'no-damage' (xView2 convention)")
    path = Path(json_path)
    if not path.is_file():
        raise MissingInputError(f"{path}: xBD label file not found; give the path of a *_pre_disaster.json or *_post_disaster.json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        feats = doc["features"]["xy"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise InputError(
            f"{path}: not an xBD label file ({type(e).__name__}: {e}), expected JSON with features.xy; pass an xBD labels/*.json"
        ) from e
    if shape is None:
        meta = doc.get("metadata") or {}
        h, w = meta.get("height"), meta.get("width")
        shape = (int(h), int(w)) if h and w else (1024, 1024)
    if len(tuple(shape)) != 2 or min(shape) < 1:
        raise InputError(f"shape: got {shape!r}, expected (height, width) with both >= 1; e.g. (1024, 1024)")
    out_shape = (int(shape[0]), int(shape[1]))

    codes = dict(XBD_SUBTYPES, **{"un-classified": 1 if unclassified == "no-damage" else 0})
    buildings, damaged = [], []
    for i, f in enumerate(feats):
        try:
            geom = shapely_wkt.loads(f["wkt"])
        except Exception as e:  # shapely raises its own GEOSException/WKTReadingError
            raise InputError(f"{path}: feature {i} has unreadable WKT ({e}); expected a POLYGON in pixel coordinates") from e
        if geom.is_empty:
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{path}: feature {i} is a {geom.geom_type}, expected a Polygon; xBD buildings are polygons")
        buildings.append((geom, 1))
        subtype = (f.get("properties") or {}).get("subtype")
        if subtype is None:
            continue
        if subtype not in codes:
            raise InputError(
                f"{path}: feature {i} has subtype {subtype!r}, expected one of {', '.join(sorted(codes))}; "
                "fix the label file"
            )
        if codes[subtype]:
            damaged.append((geom, codes[subtype]))

    def burn(pairs: list) -> np.ndarray:
        if not pairs:
            return np.zeros(out_shape, dtype=np.uint8)
        return rasterize(pairs, out_shape=out_shape, transform=Affine.identity(), fill=0, all_touched=all_touched, dtype="uint8")

    damaged.sort(key=lambda gv: gv[1])  # later shapes overwrite earlier ones: the most severe class wins on overlaps
    return burn(buildings), burn(damaged)

