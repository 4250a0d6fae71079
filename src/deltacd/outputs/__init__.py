"""The outputs stage: what a run writes and where (layout), the run skeleton every verb shares, and the
writers of the files every run leaves beside its rasters (quicklook, backdrops, damage grade vocabulary).

Readers (report, evaluate, study, review) name a run's files through :mod:`deltacd.outputs.layout`, never by
a string of their own.
"""
