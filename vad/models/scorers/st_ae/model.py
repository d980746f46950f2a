"""Spatiotemporal autoencoder with ConvLSTM (Chong & Tay, ISNN 2017).

A spatial encoder (two strided convolutions) maps each frame of a 10-frame
cuboid to a feature map; three ConvLSTM layers (64 -> 32 -> 64 channels in the
paper) learn how those features evolve; a spatial decoder (two transposed
convolutions) reconstructs every frame. Anomaly score: per-frame reconstruction
error over the frame or, with `score_patch`, its worst window; evaluation turns
it into the paper's per-video regularity score, 1 - (e - min e) / max e
(`vad.models.scorers.evaluation_normalisation`).
Training augments with temporal strides 1, 2 and 3 (`decode.frame_step`).
"""

from __future__ import annotations

import torch
from torch import nn

from vad.models.scorers.base import ReconstructionScorer


class ConvLSTMCell(nn.Module):
    def __init__(self, c_in: int, c_hidden: int, kernel: int = 3):
        super().__init__()
        self.c_hidden = c_hidden
        self.gates = nn.Conv2d(c_in + c_hidden, 4 * c_hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Runs a cell over time: (B, T, C, H, W) -> (B, T, C_hidden, H, W)."""

    def __init__(self, c_in: int, c_hidden: int, kernel: int = 3):
        super().__init__()
        self.cell = ConvLSTMCell(c_in, c_hidden, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        state = (x.new_zeros(b, self.cell.c_hidden, h, w), x.new_zeros(b, self.cell.c_hidden, h, w))
        outputs = []
        for step in range(t):
            state = self.cell(x[:, step], state)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1)


class SpatiotemporalAE(ReconstructionScorer):
    name = "st_ae"

    def __init__(
        self, *, clip_len: int = 10, widths: tuple[int, int] = (64, 32), lstm: tuple[int, int, int] = (32, 16, 32),
        score_patch: int | None = None,
    ):
        super().__init__()
        self.clip_len, self.widths, self.lstm_widths = clip_len, tuple(widths), tuple(lstm)
        self.score_patch = score_patch
        c1, c2 = widths
        # The paper: 11x11/4 and 5x5/2 convolutions on 227x227; 5x5/2 and 3x3/2 suit small inputs.
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 5, stride=2, padding=2), nn.BatchNorm2d(c1), nn.Tanh(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.BatchNorm2d(c2), nn.Tanh(),
        )
        l1, l2, l3 = lstm
        self.temporal = nn.Sequential(ConvLSTM(c2, l1), ConvLSTM(l1, l2), ConvLSTM(l2, l3))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(l3, c1, 4, stride=2, padding=1), nn.BatchNorm2d(c1), nn.Tanh(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 4:
            raise ValueError(f"st_ae expects (B, T, H, W) grayscale clips, got {tuple(clips.shape)}")
        b, t, h, w = clips.shape
        if h % 4 or w % 4:
            raise ValueError(f"st_ae needs height and width divisible by 4, got {(h, w)}")
        features = self.encoder(clips.reshape(b * t, 1, h, w))
        features = self.temporal(features.view(b, t, *features.shape[1:]))
        return self.decoder(features.flatten(0, 1)).view(b, t, h, w)

    def hparams(self) -> dict:
        return {"clip_len": self.clip_len, "widths": list(self.widths), "lstm": list(self.lstm_widths), "score_patch": self.score_patch}


def st_ae(*, clip_len: int = 10, widths=(64, 32), lstm=(32, 16, 32), score_patch: int | None = None) -> SpatiotemporalAE:
    return SpatiotemporalAE(clip_len=clip_len, widths=tuple(widths), lstm=tuple(lstm), score_patch=score_patch)
