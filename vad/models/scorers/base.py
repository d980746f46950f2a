"""What every clip scorer provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
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
    objects: list[list[dict]] | None = None  # per clip, its highest-scoring objects (`vad.results.schema.OBJECTS_SCHEMA` rows)
    reasons: list[str] | None = None  # per clip, why it scored as it did, in words ("" where nothing to say)


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

    def bind_storage(self, storage) -> None:
        """Where the model reads what it needs besides its checkpoint (a detector's weights at an
        `s3://` uri); most read nothing. Called when a checkpoint is loaded or a fit starts."""

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


class FittedScorer(ClipScorer):
    """A scorer fitted, not trained (`ModelMeta.fitted`): a pass over normal clips gathers rows (patch
    features, objects), bounded by `max_candidates`, from which `fit` builds the model (a memory bank,
    densities); a pass over held-out normal clips gives the values `calibrate_values` puts on a common
    scale. `vad.training.fitting` runs both passes, in this process or as Ray Data stages; a scorer
    that implements these four methods is fitted like the others with nothing else to change.

    `fit_rows` and `calibration_values` are pure batch work (they run in actors, one clip batch at a
    time); `fit` and `calibrate_values` run once, where the rows are gathered."""

    max_candidates: int

    def fit_rows(self, clips: torch.Tensor) -> torch.Tensor:
        """Unit clips of normal footage -> rows (N, D) of whatever the model is fitted on."""
        raise NotImplementedError

    def fit(self, rows: torch.Tensor) -> dict[str, float]:
        """Build the model from the gathered rows; returns fit metrics (`train/loss` among them)."""
        raise NotImplementedError

    def calibration_values(self, clips: torch.Tensor) -> torch.Tensor:
        """Unit clips of held-out normal footage -> per-clip values (B, ...) that calibrate the model."""
        raise NotImplementedError

    def calibrate_values(self, values: torch.Tensor) -> tuple[np.ndarray, dict[str, float]]:
        """Set the calibration from the held-out values of every clip; returns those clips' frame scores
        (B, T) and metrics (`val/loss` among them). A fitted scorer's clip score is its worst frame: the
        threshold is a quantile of the clips' worst frames, the model's `Calibration` (what fusion scales
        by) the statistics of the frames."""
        raise NotImplementedError

    def fit_summary(self) -> dict[str, float]:
        """Size of what was fitted, for the run's metrics (e.g. bank rows)."""
        return {}
