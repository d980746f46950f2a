"""Pretrained clip backbones (C3D fc6, I3D pooled): one file per architecture, each registering its
record (`vad.models.registry.ModelMeta`: input size, clip length, pixel scale, feature dimension)."""

from __future__ import annotations

from torch import nn

from vad.models.registry import ModelMeta, ModelRegistry, import_submodules

BACKBONES = ModelRegistry("backbone")


def register(meta: ModelMeta) -> ModelMeta:
    return BACKBONES.register(meta)


def backbone_meta(name: str) -> ModelMeta:
    return BACKBONES.meta(name)


def build_backbone(name: str, **kwargs) -> nn.Module:
    return BACKBONES.build(name, **kwargs)


import_submodules(__name__, __path__)
