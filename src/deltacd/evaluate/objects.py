"""Object-level accuracy: how many changed objects (buildings, clearings...) were found.

Pixel scores reward a map that gets the big objects right and misses every small one. Object
scores count objects instead: each connected region of reference change is one reference
object, each connected region of predicted change one predicted object, and

* a **reference object is found** when

  - ``rule="iou"`` (default): its best-matching predicted object has IoU >= ``iou_threshold``
    (0.5, the usual rule of object detection benchmarks, e.g. SpaceNet [1]_ and COCO [2]_);
  - ``rule="overlap"``: at least ``overlap_threshold`` (0.5) of its area is covered by
    predicted change (any predicted object), a lenient rule that forgives split or merged
    objects and outline errors.

* a **predicted object matches** under the same rule seen from the other side: best IoU with a
  reference object >= ``iou_threshold``, or at least ``overlap_threshold`` of its area lies on
  reference change.

Object recall = found reference objects / reference objects; object precision = matching
predicted objects / predicted objects; object F1 = their harmonic mean. With the IoU rule and a
threshold above 0.5 each object can match at most one object on the other side, so the
matching is one-to-one without an assignment step; at exactly 0.5 one predicted object can
match two reference objects that it covers exactly half each (both are counted as found).

The pairwise IoU table is computed sparsely: one ``np.unique`` over the (reference label,
predicted label) pairs of the pixels where both are change, so the cost is linear in the number
of pixels whatever the number of objects.

References
----------
.. [1] Van Etten, A., Lindenbaum, D., Bacastow, T. M. (2018). SpaceNet: A Remote Sensing
   Dataset and Challenge Series. arXiv:1807.01232 (building F1 at IoU >= 0.5).
.. [2] Lin, T.-Y. et al. (2014). Microsoft COCO: Common Objects in Context. ECCV 2014,
   doi:10.1007/978-3-319-10602-1_48.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from scipy import ndimage

from deltacd.errors import InputError

__all__ = [
    "OBJECT_TABLE_DTYPE",
    "ObjectScores",
    "label_objects",
    "object_scores",
    "object_scores_from_polygons",
    "polygon_object_scores",
    "rasterize_objects",
]

#: dtype of :attr:`ObjectScores.reference_objects` and :attr:`ObjectScores.predicted_objects`.
OBJECT_TABLE_DTYPE = np.dtype(
    [
        ("id", np.int64),  # label of the object (as in the input labels, or from scipy.ndimage.label)
        ("area_px", np.int64),  # pixels
        ("best_iou", np.float64),  # highest IoU with an object on the other side (0 if none overlaps)
        ("best_match_id", np.int64),  # id of that object, 0 if none
        ("covered_fraction", np.float64),  # share of the area lying on change of the other side
        ("found", np.bool_),  # found (reference) / matches (prediction) under the rule used
    ]
)


@dataclass(frozen=True, eq=False)
class ObjectScores:
    """Object-level counts and scores.

    Attributes
    ----------
    rule : {"iou", "overlap"}
    threshold : float
        The IoU or covered-area threshold used.
    connectivity : int or None
        4 or 8 when objects were labelled here, None when labels were given.
    n_reference, n_predicted : int
        Number of objects.
    n_found : int
        Reference objects found.
    n_matched : int
        Predicted objects that match a reference object.
    precision : float
        ``n_matched / n_predicted``; NaN when nothing is predicted.
    recall : float
        ``n_found / n_reference``; NaN when the reference has no object.
    f1 : float
        ``2 P R / (P + R)``; 0 when P = R = 0, NaN when P or R is NaN.
    reference_objects, predicted_objects : numpy structured arrays of :data:`OBJECT_TABLE_DTYPE`
        One row per object, sorted by id.
    """

    rule: str
    threshold: float
    connectivity: int | None
    n_reference: int
    n_predicted: int
    n_found: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    reference_objects: np.ndarray
    predicted_objects: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """The summary (no tables) as a strict-JSON dict (NaN -> None)."""

        def f(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "connectivity": self.connectivity,
            "n_reference": self.n_reference,
            "n_predicted": self.n_predicted,
            "n_found": self.n_found,
            "n_matched": self.n_matched,
            "precision": f(self.precision),
            "recall": f(self.recall),
            "f1": f(self.f1),
        }


def _structure(connectivity: Any) -> np.ndarray:
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    if connectivity == 8:
        return ndimage.generate_binary_structure(2, 2)
    raise InputError(f"connectivity: got {connectivity!r}, expected 4 (edge neighbours) or 8 (edge and corner neighbours); use 8")


def label_objects(mask: Any, *, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Connected regions of a change mask.

    Parameters
    ----------
    mask : array_like, shape ``[H, W]``
        Non-zero = change (bool, 0/1 or 0/255 all work).
    connectivity : {4, 8}, default 8
        8: pixels touching by an edge or a corner belong to the same object (a diagonal line is
        one object); 4: only by an edge. See :func:`scipy.ndimage.label`.

    Returns
    -------
    labels : numpy.ndarray of int32, shape ``[H, W]``
        0 = background, objects 1..n.
    n : int
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask: got {m.ndim} dimension(s) {m.shape}, expected a 2-D [H, W] array; pass one band")
    labels, n = ndimage.label(m != 0, structure=_structure(connectivity), output=np.int32)
    return labels, int(n)


def _compact(name: str, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Relabel arbitrary non-negative ids to 0..n; returns (compact labels, original ids [n])."""
    a = np.asarray(labels)
    if a.dtype == bool:
        a = a.view(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name}: got dtype {a.dtype}, expected integer object labels (0 = background); pass labelled=False for masks")
    if a.size and a.min() < 0:
        raise InputError(f"{name}: found label {int(a.min())}, expected labels >= 0 (0 = background); relabel the objects")
    ids, inv = np.unique(a, return_inverse=True)
    inv = inv.reshape(a.shape)
    if ids.size and ids[0] == 0:
        return inv, ids[1:].astype(np.int64)
    return inv + 1, ids.astype(np.int64)


def _drop_small(labels: np.ndarray, ids: np.ndarray, min_area_px: int) -> tuple[np.ndarray, np.ndarray]:
    if min_area_px <= 1 or ids.size == 0:
        return labels, ids
    area = np.bincount(labels.ravel(), minlength=ids.size + 1)
    keep = area >= min_area_px
    keep[0] = True
    new = np.cumsum(keep) - 1  # old compact label -> new compact label
    new[~keep] = 0
    return new[labels], ids[keep[1:]]


def best_match(a_idx: np.ndarray, b_idx: np.ndarray, iou: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per object of side a (0-based, n of them): best IoU and the 0-based index of its partner (-1 none)."""
    best = np.zeros(n, dtype=np.float64)
    partner = np.full(n, -1, dtype=np.int64)
    if iou.size:
        order = np.lexsort((-iou, a_idx))  # by a, then highest IoU first
        a_sorted = a_idx[order]
        first = np.ones(a_sorted.size, dtype=bool)
        first[1:] = a_sorted[1:] != a_sorted[:-1]
        sel = order[first]
        best[a_idx[sel]] = iou[sel]
        partner[a_idx[sel]] = b_idx[sel]
    return best, partner


def detection_rates(n_found: int, n_reference: int, n_matched: int, n_predicted: int) -> tuple[float, float, float]:
    """Object precision (matched / predicted), recall (found / reference) and their F1; NaN where a side is empty."""
    precision = n_matched / n_predicted if n_predicted else math.nan
    recall = n_found / n_reference if n_reference else math.nan
    if math.isnan(precision) or math.isnan(recall):
        f1 = math.nan
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def object_scores(
    pred: Any,
    ref: Any,
    *,
    rule: Literal["iou", "overlap"] = "iou",
    iou_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    connectivity: int = 8,
    labelled: bool = False,
    valid: Any = None,
    min_area_px: int = 1,
) -> ObjectScores:
    """Object-level precision, recall and F1 of a change map.

    Parameters
    ----------
    pred, ref : array_like, shape ``[H, W]``
        Change masks (non-zero = change; bool, 0/1 and 0/255 all work), or, with
        ``labelled=True``, object label arrays (int, 0 = background, any positive ids; two
        objects may touch when their ids differ, e.g. rasterized building footprints).
    rule : {"iou", "overlap"}, default "iou"
        Matching rule, see the module notes.
    iou_threshold : float, default 0.5
        For ``rule="iou"``: minimum IoU of a match, in (0, 1].
    overlap_threshold : float, default 0.5
        For ``rule="overlap"``: minimum share of an object's area covered by change of the
        other side, in (0, 1].
    connectivity : {4, 8}, default 8
        Neighbourhood used to label masks into objects (see :func:`label_objects`); ignored
        with ``labelled=True``.
    labelled : bool, default False
        Whether ``pred`` and ``ref`` are already object labels.
    valid : array_like of bool, shape ``[H, W]``, optional
        Pixels outside it are set to background on both sides *before* labelling, so an object
        cut by nodata becomes its pieces inside the valid area.
    min_area_px : int, default 1
        Objects smaller than this (pixels) are dropped on both sides before matching (speckle).

    Returns
    -------
    ObjectScores
    """
    if rule not in ("iou", "overlap"):
        raise InputError(f"rule: got {rule!r}, expected 'iou' or 'overlap'; use 'iou' for the usual IoU >= 0.5 rule")
    threshold = iou_threshold if rule == "iou" else overlap_threshold
    tname = "iou_threshold" if rule == "iou" else "overlap_threshold"
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise InputError(f"{tname}: got {threshold!r}, expected a number in (0, 1]; e.g. 0.5")
    if isinstance(min_area_px, bool) or not isinstance(min_area_px, (int, np.integer)) or min_area_px < 1:
        raise InputError(f"min_area_px: got {min_area_px!r}, expected an integer >= 1 (pixels); use 1 to keep every object")
    p_in, r_in = np.asarray(pred), np.asarray(ref)
    if p_in.shape != r_in.shape:
        raise InputError(f"pred: got shape {p_in.shape}, expected the shape of ref {r_in.shape}; read both on the same grid")
    if r_in.ndim != 2:
        raise InputError(f"ref: got {r_in.ndim} dimension(s) {r_in.shape}, expected a 2-D [H, W] array; pass one band")
    if valid is not None:
        v = np.asarray(valid)
        if v.shape != r_in.shape:
            raise InputError(f"valid: got shape {v.shape}, expected {r_in.shape} (the shape of pred/ref); give one flag per pixel")
        v = v if v.dtype == bool else v != 0
        p_in = np.where(v, p_in, 0)
        r_in = np.where(v, r_in, 0)

    if labelled:
        pl, p_ids = _compact("pred", p_in)
        rl, r_ids = _compact("ref", r_in)
        conn = None
    else:
        _structure(connectivity)
        pl, n_p = label_objects(p_in, connectivity=connectivity)
        rl, n_r = label_objects(r_in, connectivity=connectivity)
        p_ids = np.arange(1, n_p + 1, dtype=np.int64)
        r_ids = np.arange(1, n_r + 1, dtype=np.int64)
        conn = int(connectivity)
    pl, p_ids = _drop_small(pl, p_ids, int(min_area_px))
    rl, r_ids = _drop_small(rl, r_ids, int(min_area_px))
    n_p, n_r = int(p_ids.size), int(r_ids.size)

    p = pl.ravel().astype(np.int64)
    r = rl.ravel().astype(np.int64)
    area_p = np.bincount(p, minlength=n_p + 1)[1:]
    area_r = np.bincount(r, minlength=n_r + 1)[1:]
    both = (p > 0) & (r > 0)
    pb, rb = p[both], r[both]
    # sparse intersection table: one entry per (ref object, pred object) pair that overlaps
    keys, inter = np.unique(rb * (n_p + 1) + pb, return_counts=True)
    ri, pi = keys // (n_p + 1) - 1, keys % (n_p + 1) - 1  # 0-based object indices
    iou = inter / (area_r[ri] + area_p[pi] - inter).astype(np.float64)

    best_r, partner_r = best_match(ri, pi, iou, n_r)
    best_p, partner_p = best_match(pi, ri, iou, n_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov_r = np.bincount(rb, minlength=n_r + 1)[1:] / np.maximum(area_r, 1)
        cov_p = np.bincount(pb, minlength=n_p + 1)[1:] / np.maximum(area_p, 1)
    if rule == "iou":
        found_r, found_p = best_r >= threshold, best_p >= threshold
    else:
        found_r, found_p = cov_r >= threshold, cov_p >= threshold

    def table(ids, area, best, partner, other_ids, cov, found) -> np.ndarray:
        t = np.zeros(ids.size, dtype=OBJECT_TABLE_DTYPE)
        t["id"], t["area_px"], t["best_iou"] = ids, area, best
        t["best_match_id"] = np.where(partner >= 0, other_ids[np.maximum(partner, 0)] if other_ids.size else 0, 0)
        t["covered_fraction"], t["found"] = cov, found
        return t

    n_found, n_matched = int(found_r.sum()), int(found_p.sum())
    precision, recall, f1 = detection_rates(n_found, n_r, n_matched, n_p)
    return ObjectScores(
        rule=rule,
        threshold=float(threshold),
        connectivity=conn,
        n_reference=n_r,
        n_predicted=n_p,
        n_found=n_found,
        n_matched=n_matched,
        precision=precision,
        recall=recall,
        f1=f1,
        reference_objects=table(r_ids, area_r, best_r, partner_r, p_ids, cov_r, found_r),
        predicted_objects=table(p_ids, area_p, best_p, partner_p, r_ids, cov_p, found_p),
    )


def rasterize_objects(
    geometries: Iterable[Any], *, shape: tuple[int, int], transform: Any = None, all_touched: bool = False
) -> np.ndarray:
    """Burn polygons into an object label array, object ``i`` (0-based input order) as ``i + 1``.

    Parameters
    ----------
    geometries : iterable of shapely geometries (e.g. a GeoSeries)
        Polygons or multipolygons; ``None`` and empty geometries are skipped (their id is unused).
    shape : (int, int)
        ``(height, width)`` of the output.
    transform : affine.Affine, optional
        Pixel-to-map transform of the output grid; default the identity (geometries already in
        pixel coordinates, x = column, y = row).
    all_touched : bool, default False
        False: a pixel belongs to a polygon when its centre does (GDAL rule); True: when the
        polygon touches it at all.

    Returns
    -------
    numpy.ndarray of int32, shape ``shape``
        0 = background. Where polygons overlap, the later one wins.
    """
    from affine import Affine
    from rasterio.features import rasterize

    if len(tuple(shape)) != 2 or min(shape) < 1:
        raise InputError(f"shape: got {shape!r}, expected (height, width) with both >= 1; pass the grid shape")
    pairs = [(g, i + 1) for i, g in enumerate(geometries) if g is not None and not g.is_empty]
    out_shape = (int(shape[0]), int(shape[1]))
    if not pairs:
        return np.zeros(out_shape, dtype=np.int32)
    return rasterize(
        pairs,
        out_shape=out_shape,
        transform=Affine.identity() if transform is None else transform,
        fill=0,
        all_touched=all_touched,
        dtype="int32",
    )


def object_scores_from_polygons(
    pred_geometries: Iterable[Any],
    ref_geometries: Iterable[Any],
    *,
    shape: tuple[int, int],
    transform: Any = None,
    all_touched: bool = False,
    rule: Literal["iou", "overlap"] = "iou",
    iou_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    min_area_px: int = 1,
) -> ObjectScores:
    """:func:`object_scores` of two polygon sets, each polygon one object.

    Both sets are burnt on the same grid with :func:`rasterize_objects` (ids = input order + 1)
    and compared as labels, so IoU is measured in pixels of that grid; choose a grid fine
    enough for the smallest objects. Polygons that touch stay separate objects.
    """
    p = rasterize_objects(pred_geometries, shape=shape, transform=transform, all_touched=all_touched)
    r = rasterize_objects(ref_geometries, shape=shape, transform=transform, all_touched=all_touched)
    return object_scores(
        p, r, rule=rule, iou_threshold=iou_threshold, overlap_threshold=overlap_threshold, labelled=True, min_area_px=min_area_px
    )


def polygon_object_scores(
    pred: np.ndarray, ref: np.ndarray, *, rule: Literal["iou", "overlap"], threshold: float, pixel_area_m2: float
) -> ObjectScores:
    """Object scores of two polygon sets from their geometric intersections (the large-grid path).

    The same rules as :func:`object_scores`, with areas measured on the
    geometries (``area_px`` = area / pixel area, rounded). Covered fractions assume the polygons
    of one side do not overlap each other (true of vectorised masks), and are capped at 1.
    """
    n_r, n_p = len(ref), len(pred)
    area_r, area_p = shapely.area(ref) if n_r else np.zeros(0), shapely.area(pred) if n_p else np.zeros(0)
    if n_r and n_p:
        ri, pi = shapely.STRtree(pred).query(ref, predicate="intersects")
        inter = shapely.area(shapely.intersection(ref[ri], pred[pi]))
        keep = inter > 0
        ri, pi, inter = ri[keep], pi[keep], inter[keep]
    else:
        ri = pi = np.zeros(0, dtype=np.int64)
        inter = np.zeros(0)
    iou = inter / (area_r[ri] + area_p[pi] - inter) if inter.size else inter
    best_r, partner_r = best_match(ri, pi, iou, n_r)
    best_p, partner_p = best_match(pi, ri, iou, n_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov_r = np.minimum(np.bincount(ri, inter, minlength=n_r) / np.maximum(area_r, 1e-12), 1.0)
        cov_p = np.minimum(np.bincount(pi, inter, minlength=n_p) / np.maximum(area_p, 1e-12), 1.0)
    found_r, found_p = (best_r >= threshold, best_p >= threshold) if rule == "iou" else (cov_r >= threshold, cov_p >= threshold)

    def table(n, area, best, partner, cov, found):
        t = np.zeros(n, dtype=OBJECT_TABLE_DTYPE)
        t["id"] = np.arange(1, n + 1)
        t["area_px"] = np.round(area / pixel_area_m2).astype(np.int64)
        t["best_iou"], t["best_match_id"] = best, np.where(partner >= 0, partner + 1, 0)
        t["covered_fraction"], t["found"] = cov, found
        return t

    n_found, n_matched = int(found_r.sum()), int(found_p.sum())
    precision, recall, f1 = detection_rates(n_found, n_r, n_matched, n_p)
    return ObjectScores(
        rule=rule, threshold=float(threshold), connectivity=None, n_reference=n_r, n_predicted=n_p, n_found=n_found,
        n_matched=n_matched, precision=precision, recall=recall, f1=f1,
        reference_objects=table(n_r, area_r, best_r, partner_r, cov_r, found_r),
        predicted_objects=table(n_p, area_p, best_p, partner_p, cov_p, found_p),
    )
