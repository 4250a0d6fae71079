"""The analyst review loop: objects of a run, their features, a classifier refined from an analyst's answers.

- :mod:`deltacd.review.objects`: the objects of a run (superpixels of a detect run's pair, a damage
  run's buildings), :class:`~deltacd.review.objects.ReviewRun`;
- :mod:`deltacd.review.features`: their features, cached beside the run
  (:func:`~deltacd.review.features.object_table`); :mod:`deltacd.review.embeddings`: what a pretrained
  encoder sees of each object at both dates, an optional feature group (``--embeddings``: it paid on
  LEVIR's buildings, not on DSIFN or EGY-BCD, at 10-15 times the features' CPU time: off by default);
- :mod:`deltacd.review.store`: the answers, ``RUN_DIR/review.gpkg`` (:class:`~deltacd.review.store.ReviewStore`);
- :mod:`deltacd.review.classifier`: the classifier (a balanced random forest), its cross-validated
  accuracy, whether it beats the base run on the reviews
  (:func:`~deltacd.review.classifier.classifier_beats_base`), and the objects it most wants reviewed
  (:func:`~deltacd.review.classifier.choose`);
- :mod:`deltacd.review.refine`: :func:`~deltacd.review.refine.suggest`,
  :func:`~deltacd.review.refine.write_suggestions` (``deltacd review RUN --suggest N -o FILE``) and
  :func:`~deltacd.review.refine.refine` (``deltacd refine RUN --labels FILE -o OUT``);
- :mod:`deltacd.review.session`: answers click by click, in memory
  (:class:`~deltacd.review.session.ReviewSession`);
- :mod:`deltacd.review.server`: the web map with a review mode, served on this machine
  (:class:`~deltacd.review.server.ReviewServer`, ``deltacd review RUN``).

Nothing is imported here: ``import deltacd.review.refine`` pays for scikit-learn only when it is used.
"""
