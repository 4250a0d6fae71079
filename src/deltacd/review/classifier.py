"""The classifier of the review loop, its cross-validated accuracy, and the objects it most wants reviewed.

**The classifier** is scikit-learn's :class:`~sklearn.ensemble.RandomForestClassifier`
(:func:`make_classifier`): with 10 to 40 labels it is the robust choice. Averaging fully grown
trees on bootstrap samples, it fits a handful of examples without tuning; it needs no scaling of
features that range from NDVI (-1..1) to 12-bit digital numbers; it ignores the many features
that do not matter to a given scene; its out-of-the-box probabilities drive uncertainty sampling;
and it reports which features it used. Gradient boosting needs its learning rate and depth tuned
and overfits a dozen labels; a linear model needs scaled, relevant features; a network needs
hundreds of labels. Classes are weighted to balance (``class_weight="balanced"``): an analyst's
first answers are rarely half change.

**Suggestions** (uncertainty sampling, :func:`choose`): the unreviewed objects the current
classifier is least sure of (probability nearest 0.5; least confident grade for damage runs),
spread over the scene (no two closer than a share of the scene's size while enough others
remain). Before the classifier can be trained (no answers, or answers of a single class): half the
objects whose mean score lies nearest the run's threshold (or the likeliest of the class not
answered yet), half picked at random over the scene, since where the method's score misses the
changes (CVA on LEVIR-CD's new buildings) the objects it ranks first never show the analyst a change.

Nothing here reads or writes a file: :mod:`deltacd.review.refine` and :mod:`deltacd.review.session` do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deltacd.errors import InputError, MissingDependencyError
from deltacd.review.features import ObjectTable

#: Trees of the forest: 100 leave the probabilities stable to about 0.02 and predict 20 000 objects in 0.1 s.
TREES = 100
#: Trees of each cross-validation fold's forest: the accuracy estimate does not need more.
CV_TREES = 50
#: Bootstrap resamples of the cross-validated answers, for the accuracy's interval.
BOOTSTRAP = 1000


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency of the review loop
        raise MissingDependencyError("the review loop needs scikit-learn: pip install scikit-learn") from exc


def make_classifier(seed: int = 0, trees: int = TREES):
    """The classifier of the loop (module notes): a balanced random forest of ``trees`` trees.

    One thread: fitting a few dozen answers takes 0.2 s, and a second thread's start-up cost as much.
    """
    _sklearn()
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=trees, class_weight="balanced", min_samples_leaf=1, max_features="sqrt",
                                  n_jobs=1, random_state=seed)


def _clean(features: np.ndarray) -> np.ndarray:
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class Model:
    """A classifier trained on the reviewed objects of a run, and what it was trained on."""

    classifier: Any
    names: list[str]
    classes: np.ndarray
    reviewed: int

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """[n, classes] class probabilities, in :attr:`classes` order."""
        return self.classifier.predict_proba(_clean(features))

    def change_probability(self, features: np.ndarray) -> np.ndarray:
        """P(change) for a detect run (the column of class 1)."""
        p = self.probabilities(features)
        return p[:, list(self.classes).index(1)] if 1 in self.classes else np.zeros(len(features))

    def importances(self, top: int = 12) -> dict[str, float]:
        order = np.argsort(-self.classifier.feature_importances_)[:top]
        return {self.names[i]: round(float(self.classifier.feature_importances_[i]), 4) for i in order}


def train(table: ObjectTable, answers: dict[int, int], *, seed: int = 0, groups: Sequence[str] | None = None) -> Model | None:
    """The classifier trained on ``answers`` (object id -> class); None while they hold fewer than two classes."""
    if len(set(answers.values())) < 2:
        return None
    features, names = table.select(groups)
    rows = table.rows(list(answers))
    y = np.array(list(answers.values()))
    classifier = make_classifier(seed)
    classifier.fit(_clean(features[rows]), y)
    return Model(classifier, names, classifier.classes_, len(rows))


def cross_validate(table: ObjectTable, answers: dict[int, int], *, seed: int = 0, groups: Sequence[str] | None = None
                   ) -> dict[str, Any]:
    """Accuracy of the classifier on the reviewed objects it did not see (stratified k-fold, k <= 5), with a
    95 % bootstrap interval over the objects; ``{"accuracy": None, "why": ...}`` when too few answers per class."""
    _sklearn()
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.array(list(answers.values()))
    _, counts = np.unique(y, return_counts=True)
    folds = int(min(5, counts.min())) if len(counts) > 1 else 0
    if folds < 2:
        return {"accuracy": None, "interval_95": None, "folds": 0,
                "why": "cross-validation needs at least two reviewed objects of each class"}
    features, _ = table.select(groups)
    x = _clean(features[table.rows(list(answers))])
    predicted = cross_val_predict(make_classifier(seed, CV_TREES), x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    correct = (predicted == y).astype(float)
    rng = np.random.default_rng(seed)
    boot = correct[rng.integers(0, len(correct), size=(BOOTSTRAP, len(correct)))].mean(axis=1)
    per_class = [float(correct[y == c].mean()) for c in np.unique(y)]
    return {"accuracy": round(float(correct.mean()), 4),
            "interval_95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            "balanced_accuracy": round(float(np.mean(per_class)), 4), "folds": folds, "objects": len(y)}


def base_classes(table: ObjectTable) -> np.ndarray | None:
    """The base run's class of each object of a detect run: change where most of its pixels score at or above the
    run's threshold (feature ``score_above``); None when the table has no such feature (damage runs)."""
    if "score_above" not in table.names:
        return None
    return (table.column("score_above") >= 0.5).astype(int)


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean over the classes of ``truth`` of the share predicted right; None when ``truth`` is empty."""
    classes = np.unique(truth)
    if len(classes) == 0:
        return None
    return float(np.mean([(predicted[truth == c] == c).mean() for c in classes]))


#: Balanced accuracy on the reviews from which the base run's map is trusted (:func:`classifier_beats_base`).
TRUSTED_BASE = 0.8


def classifier_beats_base(table: ObjectTable, answers: dict[int, int], cv: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether the classifier should replace the base run's map outside the reviewed objects.

    Not when the reviews show the base to be good: its balanced accuracy on the reviewed objects at least
    :data:`TRUSTED_BASE` and at least the classifier's cross-validated balanced accuracy on the same reviews. A good
    base (a network on its own domain, CVA on a Landsat pair it suits) is then kept rather than replaced, object by
    object, by a forest that knows 10 answers (``benchmarks/analyst_loop.py``, map "guarded"). The floor keeps a poor
    base from standing on a noisy estimate: with 5-10 answers a 5-fold cross-validation often scores the forest
    below a base that is right by chance on those few objects. Balanced, so that reviews that are nearly all
    "no change" do not favour a map that never says change. With too few answers to cross-validate (under two of
    a class) the classifier is kept: the reviews were asked for because the base was doubted.
    """
    base = base_classes(table)
    ours = cv.get("balanced_accuracy")
    if base is None or ours is None:
        return True, {"map": "classifier", "why": "no estimate to compare", "classifier": ours, "base": None}
    theirs = balanced_accuracy(base[table.rows(list(answers))], np.array(list(answers.values())))
    keep_base = theirs is not None and theirs >= TRUSTED_BASE and theirs >= ours
    return not keep_base, {"map": "base run" if keep_base else "classifier",
                           "why": (f"balanced accuracy on the {len(answers)} reviews: base "
                                   f"{'-' if theirs is None else f'{theirs:.3f}'}, classifier (cross-validated) {ours:.3f}; "
                                   f"the base is kept from {TRUSTED_BASE} if at least the classifier's"),
                           "classifier": round(float(ours), 4), "base": None if theirs is None else round(theirs, 4)}


# --- uncertainty sampling ----------------------------------------------------------------------------

def _spread(order: np.ndarray, table: ObjectTable, n: int, extent: float) -> list[int]:
    """Up to ``n`` rows taken in ``order`` (best first) no two of which lie closer than a radius, halved until ``n`` are found."""
    n = min(n, len(order))
    pool = order[: max(5 * n, 50)]
    chosen: list[int] = []
    radius = 0.5 * extent / math.sqrt(max(n, 1))
    while len(chosen) < n:
        for row in pool:
            if len(chosen) >= n:
                break
            if row in chosen:
                continue
            xs, ys = table.x[chosen], table.y[chosen]
            if not chosen or np.min((xs - table.x[row]) ** 2 + (ys - table.y[row]) ** 2) >= radius ** 2:
                chosen.append(int(row))
        if radius < 1e-6 * extent:  # the pool is exhausted: the next best anywhere
            chosen += [int(r) for r in order if int(r) not in chosen][: n - len(chosen)]
            break
        radius /= 2
    return chosen


def choose(table: ObjectTable, answers: dict[int, int], n: int, *, threshold: float | None, model: Model | None = None,
           strategy: str = "model", seed: int = 0) -> np.ndarray:
    """Object ids of the next ``n`` objects to review (module notes); ``strategy="random"``: uniformly at random.

    ``threshold``: the run's threshold (detect runs), for the first suggestions; ``model``: the classifier
    trained on ``answers`` (:func:`train`), None before there is one.
    """
    reviewed = np.isin(table.ids, np.fromiter(answers, dtype=np.int64, count=len(answers)))
    open_rows = np.flatnonzero(~reviewed)
    if n <= 0 or len(open_rows) == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return table.ids[rng.choice(open_rows, size=min(n, len(open_rows)), replace=False)]
    if strategy != "model":
        raise InputError(f"suggestion strategy {strategy!r}: use 'model' or 'random'")
    extent = math.hypot(np.ptp(table.x), np.ptp(table.y)) or 1.0
    jitter = rng.random(len(open_rows)) * 1e-6  # ties broken at random, reproducibly
    if model is not None:
        p = model.probabilities(table.features[open_rows][:, [table.names.index(c) for c in model.names]])
        uncertainty = 1.0 - p.max(axis=1) if p.shape[1] > 2 else 1.0 - 2.0 * np.abs(p[:, -1] - 0.5)
        order = open_rows[np.argsort(-(uncertainty + jitter))]
        return table.ids[_spread(order, table, n, extent)]
    # no classifier yet: half near the run's threshold (or the likeliest of a class not answered yet), half
    # anywhere, spread over the scene: where the score misses the changes, only those find the first ones
    prior = next((c for c in ("score_mean", "change_score") if c in table.names), table.names[0])
    score = table.column(prior)
    seen = set(answers.values())
    if answers and 1 not in seen:
        key = -score[open_rows]
    elif answers and 0 not in seen:
        key = score[open_rows]
    elif threshold and threshold > 0:
        key = np.abs(np.log(np.maximum(score[open_rows], 1e-9) / threshold))
    else:
        key = np.abs(score[open_rows] - np.median(score))
    first = _spread(open_rows[np.argsort(key + jitter)], table, -(-n // 2), extent)
    rest = open_rows[~np.isin(open_rows, first)]
    anywhere = _spread(rng.permutation(rest), table, n - len(first), extent)
    return table.ids[np.array(first + anywhere, dtype=np.int64)]


__all__ = ["BOOTSTRAP", "CV_TREES", "TREES", "Model", "choose", "cross_validate", "make_classifier", "train"]
