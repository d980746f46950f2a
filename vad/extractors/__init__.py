"""Clip feature extractors (C3D fc6, I3D pooled): a plain dict registry of keyword-only builders."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

EXTRACTORS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    if name in EXTRACTORS:
        raise ValueError(f"extractor {name!r} is already registered")
    EXTRACTORS[name] = builder


def build_extractor(name: str, **kwargs) -> nn.Module:
    try:
        return EXTRACTORS[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; available: {', '.join(sorted(EXTRACTORS))}") from None


def _register_builtin() -> None:
    from vad.extractors.c3d import c3d
    from vad.extractors.i3d import i3d

    register("c3d", c3d)
    register("i3d", i3d)


_register_builtin()
