"""patch_knn: a memory bank of pretrained I3D patch features, kNN distance (fitted, not trained)."""

from vad.config import DecodeConfig
from vad.models.registry import ModelMeta, Tiny
from vad.models.scorers import register
from vad.models.scorers.patch_knn.model import patch_knn

register(
    ModelMeta(
        name="patch_knn", builder=patch_knn,
        paper="PatchCore memory bank (Roth et al., CVPR 2022) of Kinetics-400 I3D patch features; kNN density as in AI-VAD (Reiss & Hoshen 2023)",
        size_multiple=16, normalisation="grey replicated to RGB, scaled to [-1, 1] (I3D)", evaluation_normalisation="none",
        fitted=True, localises=True,
        tiny=Tiny({"layer": "Mixed_3c", "bank_size": 64, "max_candidates": 512, "pretrained": False, "clip_len": 8}, (2, 8, 32, 48)),
        benchmarks={"ped2": {
            "full": ({}, DecodeConfig(clip_len=16, stride=8, resize=(160, 240)), [16], 1, 0.0),
            "fast": ({"bank_size": 4000}, DecodeConfig(clip_len=16, stride=16, resize=(112, 176)), [16], 1, 0.0),
        }},
    )
)
