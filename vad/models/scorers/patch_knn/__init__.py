"""patch_knn: a memory bank of pretrained I3D patch features, kNN distance (fitted, not trained)."""

from vad.config import DecodeConfig
from vad.models.registry import BenchmarkSettings, LearningType, ModelMeta, Tiny
from vad.models.scorers.catalog import register
from vad.models.scorers.patch_knn.model import patch_knn

register(
    ModelMeta(
        name="patch_knn", builder=patch_knn,
        paper="PatchCore memory bank (Roth et al., CVPR 2022) of Kinetics-400 I3D patch features; kNN density as in AI-VAD (Reiss & Hoshen 2023)",
        size_multiple=16, normalisation="grey replicated to RGB, scaled to [-1, 1] (I3D)", evaluation_normalisation="none",
        learning_type=LearningType.FITTED, localises=True,
        tiny=Tiny({"layer": "Mixed_3c", "bank_size": 64, "max_candidates": 512, "pretrained": False, "clip_len": 8}, (2, 8, 32, 48)),
        # Ped2, chosen on pseudo-anomalies in held-out training videos (bench/ped2_patch_knn.py): the defaults
        # (Mixed_4b, bank 2000, k 1, worst-3 pooling, per-position calibration) at 240x352; test clips every 8 frames.
        benchmarks={"ped2": {
            "full": BenchmarkSettings({}, DecodeConfig(clip_len=16, stride=8, resize=(240, 352)), [16], 1, 0.0),
            "fast": BenchmarkSettings({}, DecodeConfig(clip_len=16, stride=16, resize=(128, 192)), [16], 1, 0.0),
        }},
    )
)
