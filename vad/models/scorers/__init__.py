"""The scorers: one folder each, which registers its record (`vad.models.registry.ModelMeta`) when
imported. Every folder here is imported below, so adding a scorer touches only its own folder."""

from __future__ import annotations

from vad.models.registry import ModelMeta, ModelRegistry, import_submodules
from vad.models.scorers.base import ClipScorer, FittedScorer, ScoreOutput

SCORERS = ModelRegistry("scorer")


def register(meta: ModelMeta) -> ModelMeta:
    return SCORERS.register(meta)


def scorer_meta(name: str) -> ModelMeta:
    return SCORERS.meta(name)


def build_scorer(name: str, **hparams) -> ClipScorer:
    return SCORERS.build(name, **hparams)


def evaluation_normalisation(name: str) -> str:
    """The per-video normalisation `vad evaluate` and the benchmarks use for `name` (min-max if unknown)."""
    return SCORERS.meta(name).evaluation_normalisation if name in SCORERS else "minmax"


import_submodules(__name__, __path__)

__all__ = ["SCORERS", "ClipScorer", "FittedScorer", "ScoreOutput", "build_scorer", "evaluation_normalisation", "register", "scorer_meta"]
