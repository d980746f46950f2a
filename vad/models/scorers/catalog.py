"""The scorer registry, a leaf module: each scorer folder registers its record here, and everything that
looks a scorer up by name (`vad.models.scorers` re-exports these) reads it here. It imports no scorer, so
a folder importing it closes no circle."""

from __future__ import annotations

from vad.models.registry import ModelRegistry

SCORERS = ModelRegistry("scorer")
register = SCORERS.register  # a scorer's folder or file registers its record
scorer_meta = SCORERS.meta
build_scorer = SCORERS.build  # keyword arguments: the builder's own


def evaluation_normalisation(name: str) -> str:
    """The per-video normalisation `vad evaluate` and the benchmarks use for `name` (min-max if unknown)."""
    return SCORERS.meta(name).evaluation_normalisation if name in SCORERS else "minmax"
