"""Scorer registry: a plain dict from name to keyword-only builder."""

from __future__ import annotations

from collections.abc import Callable

from vad.scorers.base import ClipScorer, ScoreOutput

SCORERS: dict[str, Callable[..., ClipScorer]] = {}

# How each scorer's paper puts one video's frame scores on a common scale before the frame-level AUC
# (`vad.metrics.normalise_per_video`): Hasan et al. and Chong & Tay use the regularity score, Liu et al.
# min-max normalise PSNR; MIL scores are probabilities, comparable across videos as they are.
EVALUATION_NORMALISATION = {"conv_ae": "regularity", "st_ae": "regularity", "pred": "minmax", "vgg_ae": "minmax", "mil": "none"}


def evaluation_normalisation(name: str) -> str:
    """The per-video normalisation `vad evaluate` and the benchmarks use for `name` (min-max if unknown)."""
    return EVALUATION_NORMALISATION.get(name, "minmax")


def register(name: str, builder: Callable[..., ClipScorer]) -> None:
    if name in SCORERS:
        raise ValueError(f"scorer {name!r} is already registered")
    SCORERS[name] = builder


def build_scorer(name: str, **hparams) -> ClipScorer:
    try:
        builder = SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; available: {', '.join(sorted(SCORERS))}") from None
    return builder(**hparams)


def _register_builtin() -> None:
    from vad.scorers.conv_ae.model import conv_ae
    from vad.scorers.mil.model import mil
    from vad.scorers.pred.model import pred
    from vad.scorers.st_ae.model import st_ae
    from vad.scorers.vgg_ae.model import vgg_ae

    register("conv_ae", conv_ae)
    register("mil", mil)
    register("pred", pred)
    register("st_ae", st_ae)
    register("vgg_ae", vgg_ae)


_register_builtin()

__all__ = ["SCORERS", "ClipScorer", "ScoreOutput", "build_scorer", "evaluation_normalisation", "register"]
