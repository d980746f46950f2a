"""conv_ae: convolutional autoencoder over temporal cuboids (Hasan et al. 2016)."""

from vad.config import DecodeConfig
from vad.models.registry import BenchmarkSettings, ModelMeta, Tiny
from vad.models.scorers.catalog import register
from vad.models.scorers.conv_ae.model import conv_ae

register(
    ModelMeta(
        name="conv_ae", builder=conv_ae, paper="Hasan et al., Learning Temporal Regularity in Video Sequences, CVPR 2016",
        size_multiple=8, evaluation_normalisation="regularity",
        tiny=Tiny({"clip_len": 8, "widths": [8, 8, 4]}, (2, 8, 32, 40)),
        # Ped2: clips slide by one frame, as the paper evaluates.
        benchmarks={"ped2": {
            "full": BenchmarkSettings({"widths": [128, 64, 32]}, DecodeConfig(clip_len=10, stride=1, resize=(64, 96)), [2], 20, 1e-3),
            "fast": BenchmarkSettings({"widths": [64, 32, 16]}, DecodeConfig(clip_len=10, stride=1, resize=(48, 72)), [5], 10, 2e-3),
        }},
    )
)
