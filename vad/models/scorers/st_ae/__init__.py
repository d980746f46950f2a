"""st_ae: spatiotemporal autoencoder with ConvLSTM (Chong & Tay 2017)."""

from vad.config import DecodeConfig
from vad.models.registry import BenchmarkSettings, ModelMeta, Tiny
from vad.models.scorers.catalog import register
from vad.models.scorers.st_ae.model import st_ae

register(
    ModelMeta(
        name="st_ae", builder=st_ae, paper="Chong & Tay, Abnormal Event Detection in Videos using Spatiotemporal Autoencoder, ISNN 2017",
        size_multiple=4, evaluation_normalisation="regularity",
        tiny=Tiny({"clip_len": 10, "widths": [8, 8], "lstm": [8, 4, 8]}, (2, 10, 32, 40)),
        # Ped2: training adds clips sampled every 2nd and 3rd frame (the paper's temporal strides).
        benchmarks={"ped2": {
            "full": BenchmarkSettings({"widths": [64, 32], "lstm": [32, 16, 32]}, DecodeConfig(clip_len=10, stride=1, resize=(64, 96)), [10, "x2", "x3"], 10, 1e-3),
            "fast": BenchmarkSettings({"widths": [32, 16], "lstm": [16, 8, 16]}, DecodeConfig(clip_len=10, stride=1, resize=(48, 72)), [10], 8, 2e-3),
        }},
    )
)
