"""pred: future-frame predictor (after Liu et al. 2018)."""

from vad.config import DecodeConfig
from vad.models.registry import BenchmarkSettings, ModelMeta, Tiny
from vad.models.scorers.catalog import register
from vad.models.scorers.pred.model import pred

register(
    ModelMeta(
        name="pred", builder=pred, paper="Liu et al., Future Frame Prediction for Anomaly Detection - A New Baseline, CVPR 2018",
        size_multiple=4, evaluation_normalisation="minmax",
        tiny=Tiny({"widths": [8, 16]}, (2, 6, 32, 40)),
        # Ped2: clips start every 5 frames, so each frame after the third is predicted, not copied.
        benchmarks={"ped2": {
            "full": BenchmarkSettings({"widths": [32, 64, 128]}, DecodeConfig(clip_len=8, stride=5, resize=(128, 192)), [8], 4, 1e-3),
            "fast": BenchmarkSettings({"widths": [16, 32, 64]}, DecodeConfig(clip_len=8, stride=5, resize=(48, 72)), [8], 2, 2e-3),
        }},
    )
)
