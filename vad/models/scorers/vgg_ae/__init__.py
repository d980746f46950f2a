"""vgg_ae: VGG16-encoder autoencoder with pixel masks (percentile threshold)."""

from vad.config import DecodeConfig
from vad.models.registry import BenchmarkSettings, ModelMeta, Tiny
from vad.models.scorers.catalog import register
from vad.models.scorers.vgg_ae.model import vgg_ae

register(
    ModelMeta(
        name="vgg_ae", builder=vgg_ae, paper="VGG16-encoder autoencoder with percentile pixel masks (the seed system)",
        size_multiple=8, normalisation="gray replicated to RGB, ImageNet mean and std", evaluation_normalisation="minmax",
        localises=True, tiny=Tiny({"width_divisor": 8}, (2, 3, 32, 40)),
        benchmarks={"ped2": {
            "full": BenchmarkSettings({"width_divisor": 2}, DecodeConfig(clip_len=4, stride=4, resize=(64, 96)), [8], 6, 1e-3),
            "fast": BenchmarkSettings({"width_divisor": 4}, DecodeConfig(clip_len=4, stride=4, resize=(48, 72)), [8], 6, 2e-3),
        }},
    )
)
