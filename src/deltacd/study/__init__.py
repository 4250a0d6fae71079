"""Whole studies from one file: ``deltacd run STUDY.yaml`` (:func:`deltacd.study.run.run_study`)."""

from deltacd.study.config import StudyConfig, load_study
from deltacd.study.run import StudyResult, run_study

__all__ = ["StudyConfig", "StudyResult", "load_study", "run_study"]
