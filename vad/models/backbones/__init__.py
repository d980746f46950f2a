"""Pretrained clip backbones (C3D fc6, I3D pooled): one file per architecture, each registering its
record (`vad.models.registry.ModelMeta`: input size, clip length, pixel scale, feature dimension) in the leaf
`catalog`; every file here is imported below."""

from __future__ import annotations

from vad.models.backbones.catalog import BACKBONES, backbone_meta, build_backbone, register
from vad.models.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["BACKBONES", "backbone_meta", "build_backbone", "register"]
