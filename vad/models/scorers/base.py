"""What every clip scorer provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ScoreOutput:
    """Evaluation output for a batch of clips. Higher scores mean more anomalous."""

    score: torch.Tensor  # (B,)
    frame_scores: torch.Tensor  # (B, T)
    mask: torch.Tensor | None = None  # (B, T, H, W) bool, for scorers that localise
    pixel_scores: torch.Tensor | None = None  # (B, T, H, W) float: what `mask` thresholds (heat maps, pixel AUC)


def frame_score_from_errors(errors: torch.Tensor, patch: int | None = None) -> torch.Tensor:
    """One score per frame from a per-pixel error map (..., H, W) -> (...).

    `patch` None: the mean over the whole frame (the papers' frame error). `patch` p: the largest mean
    error over p x p windows (stride p/2). A small anomalous object (a cyclist among pedestrians)
    changes few pixels; averaging over the whole frame dilutes its error with the background's,
    the window maximum keeps it.
    """
    if not patch:
        return errors.flatten(-2).mean(-1)
    lead, (h, w) = errors.shape[:-2], errors.shape[-2:]
    if patch > min(h, w):
        raise ValueError(f"score_patch {patch} is larger than the {h}x{w} frame")
    pooled = F.avg_pool2d(errors.reshape(-1, 1, h, w), patch, stride=max(1, patch // 2))
    return pooled.flatten(1).amax(1).view(lead)


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Euclidean (mean squared) reconstruction loss over the cuboid; weight decay is in the optimiser."""
    return torch.mean((reconstruction - target) ** 2)


class ClipScorer(nn.Module):
    """A model that scores clips of shape (B, T, H, W) (grayscale) or (B, T, H, W, 3), floats in [0, 1].

    `name` is its key in the scorer registry, whose record (`meta`) says what else it needs and gives."""

    name: ClassVar[str]

    @property
    def meta(self):
        from vad.models.scorers import scorer_meta

        return scorer_meta(self.name)

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        raise NotImplementedError

    def hparams(self) -> dict:
        """Constructor keyword arguments, stored in checkpoints so the model can be rebuilt."""
        raise NotImplementedError


class ReconstructionScorer(ClipScorer):
    """A scorer whose forward pass reconstructs its input clip: trained on the reconstruction
    loss, scored by each frame's reconstruction error (Hasan et al. 2016; Chong & Tay 2017).
    Subclasses set `score_patch` (see `frame_score_from_errors`)."""

    score_patch: int | None = None

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(self(clips), clips)

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        errors = frame_score_from_errors((self(clips) - clips) ** 2, self.score_patch)
        return ScoreOutput(score=errors.mean(dim=1), frame_scores=errors)
