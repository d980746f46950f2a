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
    """What every scorer provides, however it learns: it scores clips of shape (B, T, H, W) (grayscale) or
    (B, T, H, W, 3), floats in [0, 1] (uint8 as decoded for `ModelMeta.uint8_input` scorers).

    `name` is its key in the scorer registry, whose record (`meta`) says what else it needs and gives, and
    how it learns (`meta.learning_type`): each kind implements one of the learner protocols below, and
    `vad.training` hands it to that kind's learner."""

    name: ClassVar[str]

    @property
    def meta(self):
        from vad.models.scorers.catalog import scorer_meta

        return scorer_meta(self.name)

    def bind_storage(self, storage) -> None:
        """Where the model reads what it needs besides its checkpoint (a detector's weights at an
        `s3://` uri); most read nothing. Called when a checkpoint is loaded or a fit starts."""

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        raise NotImplementedError

    def hparams(self) -> dict:
        """Constructor keyword arguments, stored in checkpoints so the model can be rebuilt."""
        raise NotImplementedError


class TrainedScorer(ClipScorer):
    """`LearningType.TRAINED`: learns by gradient over epochs of normal clips (`vad.training.clips` on Ray
    Train, `vad.training.local.fit` in one process), both through `training_loss`."""

    def training_loss(self, clips: torch.Tensor) -> torch.Tensor:
        """The loss of a batch of unit normal clips (what the optimiser lowers, and `val/loss` on held-out ones)."""
        raise NotImplementedError

    def calibrate(self, clips: torch.Tensor) -> None:
        """Set what the model derives from held-out normal clips besides its threshold (a pixel-mask
        threshold); called once after training. Most set nothing."""


class ReconstructionScorer(TrainedScorer):
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
    """`LearningType.FITTED`: fitted, not trained: a pass over normal clips gathers rows (patch
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


class WeaklySupervisedScorer(ClipScorer):
    """`LearningType.WEAKLY_SUPERVISED`: learns from whole videos labelled only anomalous or normal (MIL). A
    frozen backbone gives `clip_features`; `vad.training.mil` ranks 32-segment bags of them with the model's
    head (`head_for`, its loss `ranking_loss`) and joins the trained head to the backbone (`with_head`)."""

    def clip_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips -> backbone features (B, d), as the head is trained on them."""
        raise NotImplementedError

    @staticmethod
    def head_for(feature_dim: int, **hparams) -> nn.Module:
        """A new head over `feature_dim`-d segment features (what the weak learner trains)."""
        raise NotImplementedError

    @staticmethod
    def ranking_loss(scores_anomalous: torch.Tensor, scores_normal: torch.Tensor) -> torch.Tensor:
        """The loss of paired bags' segment scores (B, segments) each."""
        raise NotImplementedError

    def with_head(self, head: nn.Module, backbone_state: dict | None = None) -> "WeaklySupervisedScorer":
        """This model with `head` trained (and the backbone weights the features came from, when given)."""
        raise NotImplementedError
