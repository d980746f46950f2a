"""The backbone registry, a leaf module: each backbone file registers its record here (`vad.models.backbones`
re-exports these), so a backbone importing it closes no circle."""

from __future__ import annotations

from vad.models.registry import ModelMeta, ModelRegistry

BACKBONES = ModelRegistry("backbone")


def register(meta: ModelMeta) -> ModelMeta:
    return BACKBONES.register(meta)


def backbone_meta(name: str) -> ModelMeta:
    return BACKBONES.meta(name)


def build_backbone(name: str, **kwargs):
    return BACKBONES.build(name, **kwargs)
