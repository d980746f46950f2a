"""The backbone registry, a leaf module: each backbone file registers its record here (`vad.models.backbones`
re-exports these), so a backbone importing it closes no circle."""

from __future__ import annotations

from vad.models.registry import ModelRegistry

BACKBONES = ModelRegistry("backbone")
register = BACKBONES.register  # a backbone's folder or file registers its record
backbone_meta = BACKBONES.meta
build_backbone = BACKBONES.build  # keyword arguments: the builder's own
