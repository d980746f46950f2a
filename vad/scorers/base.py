"""What every clip scorer provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vad.scorers.conv_ae.loss import frame_errors, reconstruction_loss


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


class ReconstructionScorer(ClipScorer):
    """A scorer whose forward pass reconstructs its input clip: trained on the reconstruction
    loss, scored by each frame's reconstruction error (Hasan et al. 2016; Chong & Tay 2017)."""

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(self(clips), clips)

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        errors = frame_errors(self(clips), clips)
        return ScoreOutput(score=errors.mean(dim=1), frame_scores=errors)
