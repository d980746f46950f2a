"""Convolutional autoencoder over temporal cuboids (Hasan et al., CVPR 2016).

A cuboid of T grayscale frames is stacked as T input channels of a 2-D
convolutional encoder-decoder (conv/tanh/max-pool down, transposed convs up).
The paper's widths are 512/256/128 on 227x227 inputs; the defaults here are a
quarter of that on 128x128 so it trains on CPUs; `widths` restores the paper's.
Anomaly score: reconstruction error (higher = more anomalous), over the whole
frame or, with `score_patch`, its worst window; the paper's
per-video regularity score is `loss.regularity_score` (`vad evaluate --normalise regularity`).
"""

from __future__ import annotations

import torch
from torch import nn

from vad.models.scorers.base import ReconstructionScorer


class ConvAutoencoder(ReconstructionScorer):
    name = "conv_ae"

    def __init__(self, *, clip_len: int = 16, widths: tuple[int, int, int] = (128, 64, 32), score_patch: int | None = None):
        super().__init__()
        c1, c2, c3 = widths
        self.clip_len, self.widths, self.score_patch = clip_len, tuple(widths), score_patch
        self.encoder = nn.Sequential(
            nn.Conv2d(clip_len, c1, 5, stride=2, padding=2), nn.Tanh(),  # H/2
            nn.MaxPool2d(2),  # H/4
            nn.Conv2d(c1, c2, 3, padding=1), nn.Tanh(),
            nn.MaxPool2d(2),  # H/8
            nn.Conv2d(c2, c3, 3, padding=1), nn.Tanh(),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(c3, c2, 3, padding=1), nn.Tanh(),
            nn.ConvTranspose2d(c2, c2, 2, stride=2), nn.Tanh(),  # H/4
            nn.Conv2d(c2, c1, 3, padding=1), nn.Tanh(),
            nn.ConvTranspose2d(c1, c1, 2, stride=2), nn.Tanh(),  # H/2
            nn.ConvTranspose2d(c1, clip_len, 4, stride=2, padding=1), nn.Sigmoid(),  # H
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 4 or clips.shape[1] != self.clip_len:
            raise ValueError(f"conv_ae expects (B, {self.clip_len}, H, W) grayscale clips, got {tuple(clips.shape)}")
        if clips.shape[2] % 8 or clips.shape[3] % 8:
            raise ValueError(f"conv_ae needs height and width divisible by 8, got {tuple(clips.shape[2:])}")
        return self.decoder(self.encoder(clips))

    def hparams(self) -> dict:
        return {"clip_len": self.clip_len, "widths": list(self.widths), "score_patch": self.score_patch}


def conv_ae(
    *, clip_len: int = 16, widths: tuple[int, int, int] | list[int] = (128, 64, 32), score_patch: int | None = None
) -> ConvAutoencoder:
    return ConvAutoencoder(clip_len=clip_len, widths=tuple(widths), score_patch=score_patch)
