"""The scorers: one folder each, which registers its record (`vad.models.registry.ModelMeta`) in the leaf
`catalog` when imported. Every folder here is imported below, so adding a scorer touches only its own folder."""

from __future__ import annotations

from vad.models.registry import import_submodules
from vad.models.scorers.base import ClipScorer, FittedScorer, ScoreOutput, TrainedScorer, WeaklySupervisedScorer
from vad.models.scorers.catalog import SCORERS, build_scorer, evaluation_normalisation, register, scorer_meta

import_submodules(__name__, __path__)

__all__ = ["SCORERS", "ClipScorer", "FittedScorer", "ScoreOutput", "TrainedScorer", "WeaklySupervisedScorer", "build_scorer",
           "evaluation_normalisation", "register", "scorer_meta"]
