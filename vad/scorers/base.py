"""What every clip scorer provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass
class ScoreOutput:
    """Evaluation output for a batch of clips. Higher scores mean more anomalous."""

    score: torch.Tensor  # (B,)
    frame_scores: torch.Tensor  # (B, T)
    mask: torch.Tensor | None = None  # (B, T, H, W) bool, for scorers that localise


class ClipScorer(nn.Module):
    """A model that scores clips of shape (B, T, H, W) (grayscale) or (B, T, H, W, 3), floats in [0, 1]."""

    name: ClassVar[str]
    grayscale: ClassVar[bool] = True

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        raise NotImplementedError

    def hparams(self) -> dict:
        """Constructor keyword arguments, stored in checkpoints so the model can be rebuilt."""
        raise NotImplementedError
