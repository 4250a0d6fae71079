"""An analyst's review session in memory: answer an object, get the next one, at the speed of a click.

What the review server (``deltacd review RUN_DIR``) calls on each click: the run's objects and
features are loaded once (:func:`~deltacd.review.features.object_table`); each answer is written
to the review store at once (one transaction, :class:`~deltacd.review.store.ReviewStore`), the
classifier is retrained on every answer so far and the next suggestion is taken from it, without
rewriting any raster (that is :func:`~deltacd.review.refine.refine`'s job). At 5 000 px (18 700
objects) a click costs about 0.3 s (``benchmarks/analyst_loop.py --speed``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import geopandas as gpd
import numpy as np

from deltacd.errors import InputError
from deltacd.review.classifier import Model, choose, train
from deltacd.review.embeddings import review_table
from deltacd.review.features import ObjectTable
from deltacd.review.objects import ReviewRun
from deltacd.review.store import Answer, ReviewStore


class ReviewSession:
    """The objects, answers and classifier of one run, kept in memory between clicks.

    Raises
    ------
    DeltacdError
        ``run_dir`` is not a deltacd run (one line).
    """

    def __init__(self, run_dir: str | Path, *, reviewer: str = "", seed: int = 0, embeddings: str | None = None):
        self.run = ReviewRun(run_dir)
        self.table: ObjectTable = review_table(self.run, embeddings)
        self.store = ReviewStore(self.run.folder, self.run.grid.crs, kind=self.run.kind)
        self.reviewer, self.seed = reviewer, seed
        known = set(self.table.ids.tolist())
        self.answers: dict[int, int] = {k: v for k, v in self.store.latest().items() if k in known}
        self.model: Model | None = train(self.table, self.answers, seed=seed)

    def answer(self, object_id: int, answer: int, *, source: str = "web") -> None:
        """Store one answer (one transaction) and retrain the classifier."""
        row = int(np.searchsorted(self.table.ids, object_id))
        if row >= len(self.table) or self.table.ids[row] != object_id:
            raise InputError(f"object {object_id}: not an object of the run {self.run.folder}")
        if int(answer) not in self.run.classes:
            raise InputError(f"answer {answer!r}: give one of {', '.join(map(str, self.run.classes))}")
        outline = self.run.polygons([object_id], self.table.boxes[[row]]).geometry
        self.store.add([Answer(int(object_id), int(answer), outline.iloc[0] if len(outline) else None, self.reviewer,
                               source)])
        self.answers[int(object_id)] = int(answer)
        self.model = train(self.table, self.answers, seed=self.seed)

    def object_at(self, x: float, y: float) -> int | None:
        """The object under a point of the grid's CRS, or None off the scene."""
        found = int(self.run.objects_at(np.array([[x, y]]))[0])
        return None if found < 0 else found

    def next(self, n: int = 1, *, skip: Collection[int] = ()) -> gpd.GeoDataFrame:
        """The ``n`` objects the classifier most wants reviewed (:func:`~deltacd.review.classifier.choose`), with
        outlines; none of ``skip`` (objects the analyst passed over)."""
        skip = set(skip) - set(self.answers)
        ids = choose(self.table, self.answers, n + len(skip), threshold=self.run.threshold, model=self.model,
                     seed=self.seed + len(self.answers))
        ids = np.array([i for i in ids.tolist() if i not in skip][:n], dtype=np.int64)
        return self.outlines(ids)

    def outlines(self, object_ids) -> gpd.GeoDataFrame:
        """The outlines of ``object_ids`` (multipolygons in the grid's CRS), indexed by object id."""
        ids = np.asarray(object_ids, dtype=np.int64)
        return self.run.polygons(ids, self.table.boxes[self.table.rows(ids)])

    def change_probability(self) -> np.ndarray:
        """P(change) of every object (rows of :attr:`table`); the run's own share above its threshold before a
        classifier can be trained; reviewed objects at their answer."""
        if self.model is not None:
            p = self.model.change_probability(self.table.features)
        else:
            p = self.table.column("score_above").astype(float) if "score_above" in self.table.names \
                else np.zeros(len(self.table))
        if self.answers:
            p[self.table.rows(list(self.answers))] = [float(v == 1) for v in self.answers.values()]
        return p

    def grades(self) -> np.ndarray:
        """The damage grade of every building (rows of :attr:`table`, damage runs): the classifier's likeliest, the
        run's own before a classifier can be trained (-1 unclassified), reviewed buildings at their answer."""
        if self.model is not None:
            grade = self.model.classes[np.argmax(self.model.probabilities(self.table.features), axis=1)].astype(np.int16)
        else:
            buildings = self.run.buildings()
            grade = (np.array(buildings.loc[self.table.ids, "damage_grade"], dtype=np.int16)
                     if "damage_grade" in buildings.columns else np.full(len(self.table), -1, dtype=np.int16))
        if self.answers:
            grade[self.table.rows(list(self.answers))] = list(self.answers.values())
        return grade

    def counts(self) -> dict[str, int]:
        values = list(self.answers.values())
        return {"reviewed": len(values), **{str(c): values.count(c) for c in self.run.classes},
                "objects": len(self.table)}

    def close(self) -> None:
        self.run.close()


__all__ = ["ReviewSession"]
