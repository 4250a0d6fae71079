"""Accuracy metrics: pixel confusion matrix, block bootstrap, threshold curves, objects, xView2.

Cross-checked against scikit-learn and torchmetrics on the published predictions of six models
on DSIFN-CD crops, against hand-computed answers, and against a straightforward re-computation
of the xView2 score on real xBD labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

from conftest import needs
from deltacd.errors import InputError
from deltacd.evaluate.metrics import (
    ConfusionMatrix,
    ScoreHistogram,
    area_stats,
    best_f1_threshold,
    block_bootstrap_ci,
    block_bootstrap_ci_from_blocks,
    block_confusion_matrices,
    f1_vs_threshold,
    metric_from_counts,
    precision_recall_curve_from_hist,
    score_histograms,
)
from deltacd.evaluate.objects import object_scores, object_scores_from_polygons, rasterize_objects
from deltacd.datasets.xview2 import XView2Accumulator, rasterize_xbd_labels, xview2_score

try:
    from sklearn import metrics as skm  # the reference implementation (`test` extra)
except ImportError:  # the tests marked @needs("sklearn") skip
    skm = None

DSIFN_MODELS = ["BIT", "ChangeFormerV6", "DTCDSCN", "SiamUnet_conc", "SiamUnet_diff", "Unet"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _png01(path: Path) -> np.ndarray:
    a = np.array(Image.open(path))
    assert a.ndim == 2 and set(np.unique(a)) <= {0, 255}, path
    return (a > 0).astype(np.uint8)


@pytest.fixture(scope="module")
def dsifn(data_dir: Path) -> dict[str, list[np.ndarray]]:
    root = data_dir / "dsifn_changeformer"
    names = sorted(p.name for p in (root / "label").glob("*.png"))
    assert len(names) == 10
    out = {"label": [_png01(root / "label" / n) for n in names]}
    for m in DSIFN_MODELS:
        out[m] = [_png01(root / "model_predictions" / f"predict_{m}" / n) for n in names]
    return out


def _blobs(shape: tuple[int, int], sigma: float, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Spatially correlated binary field: smoothed noise above its (1 - frac) quantile."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f > np.quantile(f, 1 - frac)).astype(np.uint8)


def _synthetic_pair(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference with blob-shaped change and a prediction with blob-shaped (clustered) errors."""
    rng = np.random.default_rng(seed)
    ref = _blobs(shape, 6, 0.3, rng)
    err = _blobs(shape, 4, 0.12, rng)
    return ref, ref ^ err


# --------------------------------------------------------------------------------------------
# confusion matrix on real predictions
# --------------------------------------------------------------------------------------------


@needs("sklearn")
@pytest.mark.parametrize("model", DSIFN_MODELS)
def test_dsifn_model_scores_equal_sklearn(dsifn, model):
    labels, preds = dsifn["label"], dsifn[model]
    cm = ConfusionMatrix(2)
    for p, r in zip(preds, labels):  # accumulated crop by crop
        cm.update(p, r)
    y_true = np.concatenate([r.ravel() for r in labels])
    y_pred = np.concatenate([p.ravel() for p in preds])

    # accumulation == one pass on the concatenation == merge of per-crop matrices
    whole = ConfusionMatrix.from_arrays(y_pred, y_true)
    np.testing.assert_array_equal(cm.counts, whole.counts)
    merged = ConfusionMatrix(2)
    for p, r in zip(preds, labels):
        merged.merge(ConfusionMatrix.from_arrays(p, r))
    assert merged == cm
    np.testing.assert_array_equal(cm.counts, skm.confusion_matrix(y_true, y_pred, labels=[0, 1]))
    assert cm.n_pixels == 10 * 256 * 256

    ours = {
        "precision": cm.precision,
        "recall": cm.recall,
        "f1": cm.f1,
        "iou": cm.iou,
        "kappa": cm.kappa,
        "accuracy": cm.overall_accuracy,
    }
    sk = {
        "precision": skm.precision_score(y_true, y_pred),
        "recall": skm.recall_score(y_true, y_pred),
        "f1": skm.f1_score(y_true, y_pred),
        "iou": skm.jaccard_score(y_true, y_pred),
        "kappa": skm.cohen_kappa_score(y_true, y_pred),
        "accuracy": skm.accuracy_score(y_true, y_pred),
    }
    for k in ours:
        assert ours[k] == pytest.approx(sk[k], abs=1e-9, rel=0), k
    # per-class (both classes) against sklearn's average=None
    np.testing.assert_allclose(cm.f1_per_class, skm.f1_score(y_true, y_pred, average=None), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cm.iou_per_class, skm.jaccard_score(y_true, y_pred, average=None), rtol=0, atol=1e-12)

    d = cm.scores_dict()
    json.dumps(d, allow_nan=False)
    assert d["f1"] == cm.f1 and d["tp"] == int(cm.counts[1, 1]) and d["count_change_no_change"] == cm.fn


@pytest.mark.parametrize("model", DSIFN_MODELS)
def test_dsifn_model_scores_equal_torchmetrics(dsifn, model):
    torch = pytest.importorskip("torch")
    tmc = pytest.importorskip("torchmetrics.classification")

    labels, preds = dsifn["label"], dsifn[model]
    cm = ConfusionMatrix(2)
    for p, r in zip(preds, labels):
        cm.update(p, r)
    ours = {
        "precision": cm.precision,
        "recall": cm.recall,
        "f1": cm.f1,
        "kappa": cm.kappa,
        "accuracy": cm.overall_accuracy,
    }
    # torchmetrics, accumulated crop by crop too. set_dtype(float64) makes the count states and
    # results double; BinaryJaccardIndex casts its matrix to float32 internally, so it is checked
    # exactly through its confusion matrix and to float32 resolution for the ratio.
    # validate_args=False skips torchmetrics' torch.unique value check (seconds per crop); the
    # inputs are 0/1 by construction (_png01).
    kw = {"validate_args": False}
    tm = {
        "precision": tmc.BinaryPrecision(**kw),
        "recall": tmc.BinaryRecall(**kw),
        "f1": tmc.BinaryF1Score(**kw),
        "kappa": tmc.BinaryCohenKappa(**kw),
        "accuracy": tmc.BinaryAccuracy(**kw),
    }
    jac, tcm = tmc.BinaryJaccardIndex(**kw), tmc.BinaryConfusionMatrix(**kw)
    for m in tm.values():
        m.set_dtype(torch.float64)
    for p, r in zip(preds, labels):
        tp, tr = torch.from_numpy(p.astype(np.int64)), torch.from_numpy(r.astype(np.int64))
        for m in (*tm.values(), jac, tcm):
            m.update(tp, tr)
    for k, m in tm.items():
        v = m.compute()
        assert v.dtype == torch.float64
        assert ours[k] == pytest.approx(v.item(), abs=1e-9, rel=0), k
    np.testing.assert_array_equal(cm.counts, tcm.compute().numpy())
    assert cm.iou == pytest.approx(jac.compute().item(), rel=2e-7)  # float32 inside torchmetrics


def test_dsifn_block_matrices_accumulate_over_windows(dsifn):
    """Per-block matrices of crops (windows aligned on the block grid) == those of the mosaic."""
    labels, preds = dsifn["label"], dsifn["ChangeFormerV6"]
    mosaic_ref = np.block([labels[0:5], labels[5:10]])  # 2 x 5 crops -> 512 x 1280
    mosaic_pred = np.block([preds[0:5], preds[5:10]])
    whole = block_confusion_matrices(mosaic_pred, mosaic_ref, block_size=64)
    per_crop = np.concatenate([block_confusion_matrices(p, r, block_size=64) for p, r in zip(preds, labels)])
    assert whole.shape == per_crop.shape == (160, 2, 2)
    key = lambda b: b[np.lexsort(b.reshape(len(b), 4).T)]  # noqa: E731  (order differs, content must not)
    np.testing.assert_array_equal(key(whole), key(per_crop))
    np.testing.assert_array_equal(whole.sum(axis=0), ConfusionMatrix.from_arrays(mosaic_pred, mosaic_ref).counts)
    a = block_bootstrap_ci(mosaic_pred, mosaic_ref, block_size=64, n_boot=500, seed=3)
    b = block_bootstrap_ci_from_blocks(whole, n_boot=500, seed=3, block_size=64)
    assert a == b
    assert a.low < a.estimate < a.high
    assert a.estimate == pytest.approx(ConfusionMatrix.from_arrays(mosaic_pred, mosaic_ref).f1, abs=1e-15)


# --------------------------------------------------------------------------------------------
# confusion matrix: known answers and edge cases
# --------------------------------------------------------------------------------------------


def test_hand_computed_binary_matrix():
    # TP = 3, FN = 2, FP = 1, TN = 4
    ref = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    cm = ConfusionMatrix.from_arrays(pred.reshape(2, 5), ref.reshape(2, 5))
    np.testing.assert_array_equal(cm.counts, [[4, 1], [2, 3]])
    assert (cm.tp, cm.fp, cm.fn, cm.tn) == (3, 1, 2, 4)
    assert cm.precision == 0.75
    assert cm.recall == 0.6
    assert cm.f1 == pytest.approx(2 / 3, abs=1e-15)
    assert cm.iou == 0.5
    assert cm.overall_accuracy == pytest.approx(0.7, abs=1e-15)
    # p_o = 0.7, p_e = (5*6 + 5*4) / 100 = 0.5  ->  kappa = 0.2 / 0.5
    assert cm.kappa == pytest.approx(0.4, abs=1e-15)
    np.testing.assert_allclose(cm.precision_per_class, [4 / 6, 3 / 4])
    np.testing.assert_allclose(cm.recall_per_class, [4 / 5, 3 / 5])
    s = area_stats(cm, 0.25)  # 0.5 m pixels
    assert (s.found_ha, s.missed_ha, s.false_ha) == pytest.approx((3 * 0.25e-4, 2 * 0.25e-4, 1 * 0.25e-4))
    assert (s.reference_ha, s.predicted_ha) == pytest.approx((5 * 0.25e-4, 4 * 0.25e-4))
    assert area_stats(cm.counts, 1e4).found_ha == 3.0  # 1 ha pixels: hectares == pixel counts


def test_empty_classes_give_nan_not_zero_or_crash():
    z = np.zeros((4, 4), dtype=np.uint8)
    cm = ConfusionMatrix.from_arrays(z, z)
    for v in (cm.precision, cm.recall, cm.f1, cm.iou, cm.kappa):
        assert np.isnan(v)
    assert cm.overall_accuracy == 1.0
    d = cm.scores_dict()
    assert d["f1"] is None and d["precision"] is None and d["overall_accuracy"] == 1.0
    json.dumps(d, allow_nan=False)  # strict JSON

    pred = z.copy()
    pred[0, 0] = 1  # false alarm only, no reference change
    cm = ConfusionMatrix.from_arrays(pred, z)
    assert cm.precision == 0.0 and cm.f1 == 0.0 and cm.iou == 0.0
    assert np.isnan(cm.recall)
    assert np.isnan(ConfusionMatrix(3).overall_accuracy)  # nothing counted
    assert np.isnan(ConfusionMatrix(3).f1_per_class).all()


def test_ignore_value_valid_mask_and_errors():
    ref = np.array([[0, 1, 255], [1, 255, 0]], dtype=np.uint8)
    pred = np.array([[1, 1, 1], [0, 1, 0]], dtype=np.uint8)
    cm = ConfusionMatrix(2, ignore_value=255).update(pred, ref)
    np.testing.assert_array_equal(cm.counts, [[1, 1], [1, 1]])
    valid = np.array([[True, True, True], [False, True, True]])
    cm2 = ConfusionMatrix(2, ignore_value=255).update(pred, ref, valid)
    np.testing.assert_array_equal(cm2.counts, [[1, 1], [0, 1]])
    assert cm.copy().merge(cm2).n_pixels == 7 and (cm + cm2).n_pixels == 7 and cm.n_pixels == 4

    with pytest.raises(InputError, match="255") as e:
        ConfusionMatrix(2).update(pred, ref)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="shape"):
        ConfusionMatrix(2).update(pred[:, :2], ref)
    with pytest.raises(InputError, match="n_classes"):
        ConfusionMatrix(2).merge(ConfusionMatrix(3))
    with pytest.raises(InputError, match="non-integer"):
        ConfusionMatrix(2).update(np.full((2, 3), 0.4), ref)
    with pytest.raises(InputError, match="ignore_value"):
        ConfusionMatrix(2, ignore_value=1)
    with pytest.raises(InputError, match="n_classes=2"):
        _ = ConfusionMatrix(3).f1


@needs("sklearn")
def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 4, (64, 64))
    pred = np.where(rng.random((64, 64)) < 0.6, ref, rng.integers(0, 4, (64, 64)))
    pred[pred == 3] = 2  # class 3 never predicted -> precision NaN
    cm = ConfusionMatrix.from_arrays(pred, ref, n_classes=4)
    np.testing.assert_array_equal(cm.counts, skm.confusion_matrix(ref.ravel(), pred.ravel(), labels=range(4)))
    p = skm.precision_score(ref.ravel(), pred.ravel(), average=None, labels=range(4), zero_division=np.nan)
    np.testing.assert_allclose(cm.precision_per_class, p, atol=1e-12)
    assert np.isnan(cm.precision_per_class[3]) and cm.f1_per_class[3] == 0.0
    np.testing.assert_allclose(cm.recall_per_class, skm.recall_score(ref.ravel(), pred.ravel(), average=None), atol=1e-12)
    np.testing.assert_allclose(cm.f1_per_class, skm.f1_score(ref.ravel(), pred.ravel(), average=None), atol=1e-12)
    assert cm.kappa == pytest.approx(skm.cohen_kappa_score(ref.ravel(), pred.ravel()), abs=1e-12)
    assert cm.macro_f1 == pytest.approx(skm.f1_score(ref.ravel(), pred.ravel(), average="macro"), abs=1e-12)


# --------------------------------------------------------------------------------------------
# block bootstrap
# --------------------------------------------------------------------------------------------


def test_bootstrap_contains_estimate_is_seeded_and_shrinks_with_size():
    ref, pred = _synthetic_pair((256, 256), seed=0)
    ci = block_bootstrap_ci(pred, ref, block_size=32, n_boot=1000, seed=7)
    assert ci.n_blocks == 64 and ci.n_boot == 1000 and ci.n_undefined == 0
    assert ci.estimate == pytest.approx(ConfusionMatrix.from_arrays(pred, ref).f1, abs=1e-15)
    assert ci.low < ci.estimate < ci.high
    assert 0.5 < ci.estimate < 0.95
    assert ci == block_bootstrap_ci(pred, ref, block_size=32, n_boot=1000, seed=7)  # deterministic
    other = block_bootstrap_ci(pred, ref, block_size=32, n_boot=1000, seed=8)
    assert (other.low, other.high) != (ci.low, ci.high)
    json.dumps(ci.to_dict(), allow_nan=False)

    ref_l, pred_l = _synthetic_pair((1024, 1024), seed=1)  # 16x the area, same process
    big = block_bootstrap_ci(pred_l, ref_l, block_size=32, n_boot=1000, seed=7)
    assert big.low < big.estimate < big.high
    # width ~ 1/sqrt(area): expect about a quarter; allow generous slack for sampling noise
    assert (big.high - big.low) < 0.5 * (ci.high - ci.low)


def test_bootstrap_perfect_prediction_and_block_vs_pixel():
    ref, pred = _synthetic_pair((128, 128), seed=2)
    for metric in ("f1", "precision", "recall", "iou", "kappa", "accuracy"):
        ci = block_bootstrap_ci(ref, ref, block_size=16, n_boot=200, metric=metric)
        assert (ci.low, ci.estimate, ci.high) == (1.0, 1.0, 1.0), metric
    # errors come in blobs: resampling single pixels as if independent understates the spread
    pixel = block_bootstrap_ci(pred, ref, block_size=1, n_boot=300, seed=0)
    block = block_bootstrap_ci(pred, ref, block_size=32, n_boot=300, seed=0)
    assert pixel.estimate == block.estimate
    assert (block.high - block.low) > 2 * (pixel.high - pixel.low)


def test_bootstrap_from_blocks_variants_and_errors():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 50, (40, 2, 2))
    ci = block_bootstrap_ci_from_blocks(blocks, n_boot=400, metric="kappa", seed=1)
    assert ci.estimate == pytest.approx(float(metric_from_counts(blocks.sum(0), "kappa")))
    custom = block_bootstrap_ci_from_blocks(blocks, n_boot=400, seed=1, metric=lambda c: metric_from_counts(c, "kappa"))
    assert (custom.low, custom.high) == (ci.low, ci.high)
    # a replicate's score equals the score of the sum of the drawn blocks (vectorised path vs loop)
    draws = np.random.default_rng(5).integers(0, 40, (3, 40))
    vec = metric_from_counts(np.stack([blocks[d].sum(0) for d in draws]), "f1")
    loop = [ConfusionMatrix(counts=blocks[d].sum(0)).f1 for d in draws]
    np.testing.assert_allclose(vec, loop, rtol=0, atol=1e-15)
    with pytest.raises(InputError, match="block"):
        block_bootstrap_ci_from_blocks(blocks[:1])
    with pytest.raises(InputError, match="metric"):
        block_bootstrap_ci_from_blocks(blocks, metric="auc")
    with pytest.raises(InputError, match="alpha"):
        block_bootstrap_ci_from_blocks(blocks, alpha=5)
    # empty (all nodata) blocks are dropped
    ref = np.zeros((64, 64), dtype=np.uint8)
    valid = np.zeros_like(ref, dtype=bool)
    valid[:32] = True
    assert block_confusion_matrices(ref, ref, block_size=16, valid=valid).shape == (8, 2, 2)
    assert block_confusion_matrices(ref, ref, block_size=16, valid=valid, drop_empty=False).shape == (16, 2, 2)
    assert block_confusion_matrices(ref[:50, :40], ref[:50, :40], block_size=16).shape == (12, 2, 2)  # partial edge blocks


# --------------------------------------------------------------------------------------------
# threshold curves
# --------------------------------------------------------------------------------------------


@needs("sklearn")
def test_pr_curve_from_histograms_equals_direct_thresholding():
    rng = np.random.default_rng(3)
    ref = (rng.random((200, 150)) < 0.2).astype(np.uint8)
    score = np.clip(0.35 * ref + rng.normal(0.3, 0.2, ref.shape), -0.1, 1.2)  # some outside [0, 1]
    ref[0, :10] = 255
    score[1, :5] = np.nan
    score[2, :40] = np.linspace(0, 1, 51)[10:50]  # scores exactly on edges count as ">= threshold"
    edges = np.linspace(0, 1, 51)

    pos, neg = score_histograms(score, ref, bin_edges=edges, ignore_value=255)
    # accumulation over windows gives the same histograms
    acc = ScoreHistogram(edges, ignore_value=255)
    for rows in np.array_split(np.arange(200), 7):
        acc.update(score[rows], ref[rows])
    np.testing.assert_array_equal(acc.pos_hist, pos)
    np.testing.assert_array_equal(acc.neg_hist, neg)
    counted = (ref != 255) & ~np.isnan(score)
    assert pos.sum() + neg.sum() == counted.sum()

    curve = precision_recall_curve_from_hist(pos, neg, edges)
    y, s = ref[counted], score[counted]
    for i in range(1, 50):  # every inner edge is exact
        t = edges[i]
        p = (s >= t).astype(np.uint8)
        assert curve.precision[i] == pytest.approx(skm.precision_score(y, p, zero_division=np.nan), abs=1e-12, nan_ok=True)
        assert curve.recall[i] == pytest.approx(skm.recall_score(y, p), abs=1e-12)
        assert curve.f1[i] == pytest.approx(skm.f1_score(y, p), abs=1e-12)
    assert curve.recall[0] == 1.0  # lowest edge: everything is change
    thr, f1 = f1_vs_threshold(pos, neg, edges)
    np.testing.assert_array_equal(thr, edges[:-1])
    bt, bf = best_f1_threshold(pos, neg, edges)
    assert bf == np.nanmax(f1) and bt == thr[np.nanargmax(f1)]
    assert bf == pytest.approx(skm.f1_score(y, (s >= bt).astype(np.uint8)), abs=1e-12)
    assert 0.3 < bt < 0.7
    assert acc.best_f1_threshold() == (bt, bf)
    # uneven edges (searchsorted path) are exact too
    uneven = np.array([0.0, 0.05, 0.2, 0.33, 0.5, 0.61, 0.9, 1.0])
    cu = precision_recall_curve_from_hist(*score_histograms(score, ref, bin_edges=uneven, ignore_value=255), uneven)
    for i in range(1, uneven.size - 1):
        p = s >= uneven[i]
        assert (cu.tp[i], cu.fp[i], cu.fn[i]) == ((p & (y == 1)).sum(), (p & (y == 0)).sum(), (~p & (y == 1)).sum())
    with pytest.raises(InputError, match="pos_hist"):
        precision_recall_curve_from_hist(pos[:-1], neg, edges)
    assert all(np.isnan(best_f1_threshold(np.zeros(50), np.zeros(50), edges)))


# --------------------------------------------------------------------------------------------
# objects
# --------------------------------------------------------------------------------------------


def test_objects_overlapping_squares_known_iou():
    ref = np.zeros((40, 40), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[5:15, 5:15] = 1  # 100 px
    pred[5:15, 10:20] = 1  # shifted by 5 columns: intersection 50, union 150
    s = object_scores(pred, ref)
    assert (s.n_reference, s.n_predicted) == (1, 1)
    assert s.reference_objects["best_iou"][0] == pytest.approx(1 / 3)
    assert s.reference_objects["area_px"][0] == 100
    assert s.reference_objects["covered_fraction"][0] == 0.5
    assert s.n_found == 0 and s.recall == 0.0 and s.precision == 0.0 and s.f1 == 0.0
    # lower IoU threshold, or the overlap rule (exactly half covered), both accept it
    assert object_scores(pred, ref, iou_threshold=0.3).n_found == 1
    o = object_scores(pred, ref, rule="overlap")
    assert o.n_found == 1 and o.n_matched == 1 and o.f1 == 1.0
    assert object_scores(pred, ref, rule="overlap", overlap_threshold=0.51).n_found == 0
    assert s.to_dict()["recall"] == 0.0


def test_objects_split_missed_and_extra():
    ref = np.zeros((40, 60), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[2:12, 2:22] = 1  # object A, 200 px, predicted as two pieces with a 3-px gap
    pred[2:12, 2:11] = 1  # 90 px: IoU with A = 90 / 200 (pred label 1)
    pred[2:12, 14:22] = 1  # 80 px: IoU with A = 80 / 200 (pred label 2)
    ref[20:30, 30:40] = 1  # object B, missed
    ref[32:38, 2:8] = 1  # object C, found exactly
    pred[32:38, 2:8] = 1
    pred[30:35, 50:55] = 1  # false alarm
    s = object_scores(pred, ref)
    assert (s.n_reference, s.n_predicted) == (3, 4)
    table = {int(i): row for i, row in zip(s.reference_objects["id"], s.reference_objects)}
    a, b, c = (table[i] for i in (1, 2, 3))  # ndimage.label numbers objects in raster order
    assert a["area_px"] == 200 and a["best_iou"] == pytest.approx(0.45) and not a["found"]
    assert a["best_match_id"] == 1  # the larger piece is the best match
    assert b["best_iou"] == 0.0 and b["best_match_id"] == 0 and not b["found"]
    assert c["best_iou"] == 1.0 and c["found"]
    assert s.n_found == 1 and s.n_matched == 1
    assert s.recall == pytest.approx(1 / 3) and s.precision == pytest.approx(1 / 4)
    assert s.f1 == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    # predicted side: pieces -> A (0.45, 0.4), false alarm (label 3, row 30) -> none, C (label 4) -> C
    np.testing.assert_allclose(s.predicted_objects["best_iou"], [0.45, 0.4, 0.0, 1.0])
    np.testing.assert_array_equal(s.predicted_objects["best_match_id"], [1, 1, 0, 3])
    o = object_scores(pred, ref, rule="overlap")  # both halves lie on A, A is 90 % covered
    assert o.n_found == 2 and o.n_matched == 3
    assert o.reference_objects["covered_fraction"][0] == pytest.approx(0.85)


def test_objects_connectivity_labels_and_polygons():
    from shapely.geometry import box

    m = np.zeros((10, 10), dtype=np.uint8)
    m[2:4, 2:4] = 255  # 0/255 masks work
    m[4:6, 4:6] = 255  # touches the first only by a corner
    assert object_scores(m, m, connectivity=8).n_reference == 1
    assert object_scores(m, m, connectivity=4).n_reference == 2
    with pytest.raises(InputError, match="connectivity"):
        object_scores(m, m, connectivity=6)
    # labelled input: touching objects with different ids stay apart; ids are reported as given
    lab = np.zeros((10, 10), dtype=np.int32)
    lab[0:4, 0:4] = 7
    lab[0:4, 4:8] = 3
    s = object_scores(lab, lab, labelled=True)
    assert s.n_reference == 2 and s.f1 == 1.0 and s.connectivity is None
    np.testing.assert_array_equal(s.reference_objects["id"], [3, 7])
    np.testing.assert_array_equal(s.reference_objects["best_match_id"], [3, 7])
    # min_area_px drops speckle on both sides
    speck = lab.copy()
    speck[9, 9] = 5
    assert object_scores(speck, lab, labelled=True).n_predicted == 3
    assert object_scores(speck, lab, labelled=True, min_area_px=2).n_predicted == 2
    # polygons: identical to the array case
    refp = [box(5, 5, 15, 15)]
    predp = [box(10, 5, 20, 15)]
    p = object_scores_from_polygons(predp, refp, shape=(40, 40))
    assert p.reference_objects["best_iou"][0] == pytest.approx(1 / 3)
    lab2 = rasterize_objects([box(0, 0, 4, 4), None, box(4, 0, 8, 4)], shape=(10, 10))
    assert set(np.unique(lab2)) == {0, 1, 3} and (lab2 == 1).sum() == 16


# --------------------------------------------------------------------------------------------
# xView2
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xbd(data_dir: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(localisation from pre, localisation from post, damage from post) of the 3 tiles."""
    root = data_dir / "xbd_matthinfo" / "tier3" / "labels"
    out = []
    for i in range(3):
        lt, dpre = rasterize_xbd_labels(root / f"joplin-tornado_{i:08d}_pre_disaster.json")
        lpost, dt = rasterize_xbd_labels(root / f"joplin-tornado_{i:08d}_post_disaster.json")
        assert not dpre.any()  # no subtype in pre files
        out.append((lt, lpost, dt))
    return out


def _xview2_independent(lp_list, dp_list, lt_list, dt_list, eps=1e-6):
    """Straightforward re-computation with sklearn + scipy, following xview2_metrics.py."""
    lf1 = skm.f1_score(
        np.concatenate([(t > 0).ravel() for t in lt_list]), np.concatenate([(p > 0).ravel() for p in lp_list]), zero_division=0
    )
    f1s = []
    for c in (1, 2, 3, 4):
        ys, ps = [], []
        for lp, dp, dt in zip(lp_list, dp_list, dt_list):
            m = dt > 0
            if not (dt[m] == c).any():  # the official code skips tiles without class c in the target
                continue
            ys.append(dt[m] == c)
            ps.append((dp * (lp > 0))[m] == c)
        f1s.append(skm.f1_score(np.concatenate(ys), np.concatenate(ps), zero_division=0) if ys else 0.0)
    df1 = stats.hmean(np.array(f1s) + eps)
    return 0.3 * lf1 + 0.7 * df1, lf1, df1, f1s


def test_rasterize_xbd_labels_counts(xbd, data_dir):
    root = data_dir / "xbd_matthinfo" / "tier3" / "labels"
    lt, lpost, dt = xbd[0]
    assert lt.shape == dt.shape == (1024, 1024) and lt.dtype == dt.dtype == np.uint8
    assert set(np.unique(dt)) == {0, 1, 2, 3, 4} and set(np.unique(lt)) == {0, 1}
    np.testing.assert_array_equal(lpost, dt > 0)  # un-classified -> no-damage keeps every building
    # README: image 0 has 102 destroyed, 27 major, 43 minor, 6 no-damage, 7 un-classified buildings
    n_destroyed = ndimage.label(dt == 4)[1]
    assert 80 <= n_destroyed <= 102  # adjacent footprints may merge into one component
    _, dign = rasterize_xbd_labels(root / "joplin-tornado_00000000_post_disaster.json", unclassified="ignore")
    moved = (dt == 1) & (dign == 0)
    assert moved.any() and ((dign > 0) == (dt > 0) & ~moved).all()
    assert ndimage.label(moved)[1] == 7  # the 7 un-classified footprints
    with pytest.raises(InputError, match="unclassified"):
        rasterize_xbd_labels(root / "joplin-tornado_00000000_post_disaster.json", unclassified="drop")


@needs("sklearn")
def test_xview2_score_variants_equal_independent_computation(xbd):
    lt = [t[0] for t in xbd]  # localisation target from the pre-disaster labels (challenge convention)
    lpost = [t[1] for t in xbd]
    dt = [t[2] for t in xbd]

    # perfect prediction of consistent targets: 0.3 * 1 + 0.7 * (1 + 1e-6) (official eps)
    perfect = xview2_score(lpost, dt, lpost, dt)
    assert perfect.localization_f1 == 1.0 and perfect.damage_f1_destroyed == 1.0
    assert perfect.score == pytest.approx(1.0, abs=1e-6)
    assert perfect.score == pytest.approx(0.3 + 0.7 * (1 + 1e-6), abs=1e-12)
    assert xview2_score(lpost, dt, lpost, dt, eps=0).score == pytest.approx(1.0, abs=1e-15)

    # the same with the pre-disaster localisation target: pre and post footprints differ by a few
    # hundred pixels, and damage is only credited where a building is predicted
    rng = np.random.default_rng(0)
    shifted = [np.where(d > 0, np.minimum(d + 1, 4), 0).astype(np.uint8) for d in dt]
    loc_only = [(d > 0).astype(np.uint8) for d in dt]  # every building "no damage"
    noisy = [np.where((d > 0) & (rng.random(d.shape) < 0.3), rng.integers(1, 5, d.shape), d).astype(np.uint8) for d in dt]
    eroded = [ndimage.binary_erosion(t > 0, iterations=2).astype(np.uint8) for t in lt]
    variants = {
        "perfect_pre_loc": (lt, dt),
        "shifted_by_one": (lt, shifted),
        "localisation_only": (lt, loc_only),
        "noisy_damage_eroded_loc": (eroded, noisy),
    }
    results = {}
    for name, (lp, dp) in variants.items():
        ours = xview2_score(lp, dp, lt, dt)
        score, lf1, df1, f1s = _xview2_independent(lp, dp, lt, dt)
        assert ours.localization_f1 == pytest.approx(lf1, abs=1e-9), name
        assert [ours.damage_f1_no_damage, ours.damage_f1_minor_damage, ours.damage_f1_major_damage, ours.damage_f1_destroyed] == (
            pytest.approx(f1s, abs=1e-9)
        ), name
        assert ours.damage_f1 == pytest.approx(df1, abs=1e-9), name
        assert ours.score == pytest.approx(score, abs=1e-9), name
        results[name] = ours

    assert 0.9999 < results["perfect_pre_loc"].score < 1.0  # a few post-only footprint pixels get no credit
    assert results["shifted_by_one"].damage_f1_no_damage == 0.0  # class 1 is never predicted
    assert results["shifted_by_one"].damage_f1 < 1e-5  # one zero class sinks the harmonic mean
    assert results["localisation_only"].localization_f1 == pytest.approx(results["perfect_pre_loc"].localization_f1)
    assert results["localisation_only"].score < 0.31
    assert 0.3 < results["noisy_damage_eroded_loc"].damage_f1 < 0.95

    # tile-by-tile accumulation with merge == lists; a tile without class c adds no FP for c
    acc = XView2Accumulator()
    for i in range(3):
        acc.merge(XView2Accumulator().update(eroded[i], noisy[i], lt[i], dt[i]))
    assert acc.result() == results["noisy_damage_eroded_loc"] and acc.n_tiles == 3
    t = np.zeros((4, 4), dtype=np.uint8)
    t[:2] = 1
    p = t.copy()
    p[0, 0] = 4  # false "destroyed" on a tile whose target has no destroyed building
    one = xview2_score(t, p, t, t)
    assert one.damage_f1_destroyed == 0.0 and XView2Accumulator().update(t, p, t, t).damage_counts[3].tolist() == [0, 0, 0]
    with pytest.raises(InputError, match="0..4"):
        xview2_score(t, t * 255, t, t)
