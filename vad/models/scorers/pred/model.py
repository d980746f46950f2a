"""Future-frame prediction: 3 frames in, the 4th predicted (after Liu et al., CVPR 2018).

A small U-Net maps the stacked previous frames to the next one; training
minimises L2 intensity loss plus a gradient loss. A frame is anomalous when it
is badly predicted: its score is the negative PSNR of the prediction (of the
whole frame or, with `score_patch`, of its worst window), which
evaluation normalises per video, as in the paper. The first `history` frames of
a clip cannot be predicted and take the score of the first predicted frame.
"""

from __future__ import annotations

import torch
from torch import nn

from vad.models.scorers.base import ScoreOutput, TrainedScorer
from vad.models.scorers.pred.loss import gradient_loss, intensity_loss, psnr


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, c_in: int, c_out: int, widths: tuple[int, ...]):
        super().__init__()
        self.down = nn.ModuleList()
        channels = c_in
        for width in widths:
            self.down.append(_double_conv(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
            self.merge.append(_double_conv(2 * width, width))
            channels = width
        self.head = nn.Conv2d(channels, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class FramePredictor(TrainedScorer):
    name = "pred"

    def __init__(
        self, *, history: int = 3, widths: tuple[int, ...] = (32, 64, 128), gradient_weight: float = 1.0,
        score_patch: int | None = None,
    ):
        super().__init__()
        self.history, self.widths, self.gradient_weight = history, tuple(widths), gradient_weight
        self.score_patch = score_patch
        self.net = UNet(history, 1, self.widths)

    def _windows(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H, W) -> inputs (B*(T-h), h, H, W) and targets (B*(T-h), 1, H, W)."""
        b, t, h, w = clips.shape
        if t <= self.history:
            raise ValueError(f"pred needs clips longer than {self.history} frames, got {t}")
        divisor = 2 ** (len(self.widths) - 1)
        if h % divisor or w % divisor:
            raise ValueError(f"pred needs height and width divisible by {divisor}, got {(h, w)}")
        inputs = clips.unfold(1, self.history + 1, 1)  # (B, T-h, H, W, h+1)
        inputs = inputs.permute(0, 1, 4, 2, 3).reshape(-1, self.history + 1, h, w)
        return inputs[:, : self.history], inputs[:, self.history :]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Previous frames (N, history, H, W) in [0, 1] -> predicted next frame (N, 1, H, W)."""
        return torch.sigmoid(self.net(frames * 2 - 1))

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        inputs, target = self._windows(clips)
        pred = self(inputs)
        return intensity_loss(pred, target) + self.gradient_weight * gradient_loss(pred, target)

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        inputs, target = self._windows(clips)
        predicted = -psnr(self(inputs), target, self.score_patch).view(clips.shape[0], -1)  # (B, T-h)
        frame_scores = torch.cat([predicted[:, :1].expand(-1, self.history), predicted], dim=1)
        return ScoreOutput(score=predicted.mean(dim=1), frame_scores=frame_scores)

    def hparams(self) -> dict:
        return {
            "history": self.history, "widths": list(self.widths), "gradient_weight": self.gradient_weight,
            "score_patch": self.score_patch,
        }


def pred(
    *, history: int = 3, widths=(32, 64, 128), gradient_weight: float = 1.0, score_patch: int | None = None,
) -> FramePredictor:
    """Any clip longer than `history` works: the builder takes no clip length."""
    return FramePredictor(history=history, widths=tuple(widths), gradient_weight=gradient_weight, score_patch=score_patch)
