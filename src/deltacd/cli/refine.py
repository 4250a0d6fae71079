"""``deltacd refine``: refine a run's map from an analyst's reviews.

Merge the labels of FILE (points or polygons in any CRS, integer field label: 1 change / 0 no change, or the
damage grade 0-3; empty labels are skipped) into RUN_DIR/review.gpkg with the answers given in deltacd review,
train a random forest on every reviewed object and write OUT with the files of the run it refines (change_mask.tif,
changes.gpkg or buildings.gpkg with a probability per polygon, QGIS styles, quicklook, run.json with the
cross-validated accuracy of the reviews and the features that mattered). Without --labels: the answers already
in the store. With --pseudo-labels (detect runs): also train on the objects at the confident extremes of the
run's score while the answers hold fewer than two classes, so that a run can be refined with no answer at all.

API: :func:`deltacd.review.refine.refine`.
"""

from __future__ import annotations

import argparse

from deltacd.cli.common import progress_bars


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="output folder of deltacd detect or damage")
    p.add_argument("--labels", nargs="+", default=[], metavar="FILE", help="label files (e.g. filled-in suggestions)")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--reviewer", default="", help="name recorded with the answers of --labels")
    p.add_argument("--seed", type=int, default=0, help="seed of the classifier and its cross-validation")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the refined run has succeeded")
    p.add_argument("--pseudo-labels", action="store_true",
                   help="with no answer (or one class): train on pseudo-labels from the run's score (detect runs)")
    p.add_argument("--embeddings", nargs="?", const="efficientnet_lite0:imagenet", metavar="SPEC",
                   help="add a pretrained encoder's view of each object to its features (detect runs; default encoder "
                        "efficientnet_lite0:imagenet, weights installed with deltacd; 10-15x the features' time on a CPU; "
                        "paid on building changes only, docs/benchmarks.md section 13)")


def run(args: argparse.Namespace) -> int:
    from deltacd.review.refine import refine

    with progress_bars(args) as bars:
        result = refine(args.run_dir, args.labels, args.out, reviewer=args.reviewer, overwrite=args.overwrite,
                        seed=args.seed, progress=bars, pseudo_labels=args.pseudo_labels,
                        embeddings=args.embeddings)
    review = result.record["review"]
    cv = review["cross_validated"]
    accuracy = (f"cross-validated accuracy {cv['accuracy']:.2f} (95 % interval {cv['interval_95'][0]:.2f}-"
                f"{cv['interval_95'][1]:.2f})" if cv.get("accuracy") is not None
                else f"no cross-validated accuracy ({cv.get('why', 'too few reviews')})")
    pseudo = review.get("pseudo_labels")
    extra = f" and {pseudo['change'] + pseudo['no_change']} pseudo-labels" if pseudo else ""
    kept = review["map_outside_reviews"]
    print(f"refined from {review['objects_reviewed']} reviewed objects{extra}, {accuracy}; outside the reviews: "
          f"the {kept['map']}'s map; outputs in {result.out_dir}/")
    return 0
