"""Scorer registry: a plain dict from name to keyword-only builder."""

from __future__ import annotations

from collections.abc import Callable

from vad.scorers.base import ClipScorer, ScoreOutput

SCORERS: dict[str, Callable[..., ClipScorer]] = {}


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

__all__ = ["SCORERS", "ClipScorer", "ScoreOutput", "build_scorer", "register"]
