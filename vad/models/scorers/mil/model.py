"""MIL ranking head over clip features (Sultani, Chen & Shah, CVPR 2018).

Each video is a bag of 32 temporal segments; a segment's feature is the mean
of the (C3D fc6 4096-d or I3D 1024-d) clip features inside it, L2-normalised.
A 3-layer MLP (d -> 512 -> 32 -> 1, dropout 0.6, sigmoid) scores segments and is
trained with the ranking loss of `loss.py` on weakly labelled videos.
`MILScorer` joins a backbone and a trained head into a pipeline scorer (`mil`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vad.models.scorers.base import ScoreOutput, WeaklySupervisedScorer

SEGMENTS = 32


class MILHead(nn.Module):
    def __init__(self, *, feature_dim: int = 4096, dropout: float = 0.6):
        super().__init__()
        self.feature_dim, self.dropout = feature_dim, dropout
        self.net = nn.Sequential(
            nn.Linear(feature_dim, 512), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 32), nn.Dropout(dropout),
            nn.Linear(32, 1), nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., feature_dim) -> (...) anomaly scores in [0, 1]."""
        return self.net(features).squeeze(-1)

    def hparams(self) -> dict:
        return {"feature_dim": self.feature_dim, "dropout": self.dropout}


def segment_features(clip_features: np.ndarray, segments: int = SEGMENTS) -> np.ndarray:
    """(n_clips, d) -> (segments, d): mean over equal temporal spans, then L2-normalised.
    A video with fewer clips than segments repeats clips."""
    n = len(clip_features)
    if n == 0:
        raise ValueError("a video with no clips has no segments")
    edges = np.linspace(0, n, segments + 1)
    out = np.empty((segments, clip_features.shape[1]), dtype=np.float32)
    for i in range(segments):
        lo = int(np.floor(edges[i]))
        hi = max(int(np.ceil(edges[i + 1])), lo + 1)
        out[i] = clip_features[lo:min(hi, n)].mean(axis=0) if lo < n else clip_features[-1]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


class MILScorer(WeaklySupervisedScorer):
    """A backbone (C3D or I3D) and a trained MIL head: scores RGB clips in the scoring pipeline.

    Training ranks 32-segment bags (`vad.training.mil`; `vad.training.local.train_mil` in one process); at scoring time each clip is one instance, its
    L2-normalised feature scored by the head, so a nightly job needs no whole-video pass. Every frame
    of a clip takes the clip's score. The checkpoint holds the backbone too, so it is self-contained.
    """

    name = "mil"

    def __init__(self, *, extractor: str = "i3d", dropout: float = 0.6, pretrained_backbone: bool = False):
        super().__init__()
        from vad.models.backbones import backbone_meta, build_backbone

        self.extractor, self.pretrained_backbone = extractor, pretrained_backbone
        self.backbone_meta = backbone_meta(extractor)
        self.backbone = build_backbone(extractor)
        self.backbone.pretrained = pretrained_backbone
        self.head = MILHead(feature_dim=self.backbone_meta.feature_dim, dropout=dropout)

    @classmethod
    def from_parts(cls, extractor: str, backbone: nn.Module, head: MILHead) -> "MILScorer":
        """Join a (pretrained) backbone and a head trained on its features."""
        from vad.models.backbones import backbone_meta

        feature_dim = backbone_meta(extractor).feature_dim
        if head.feature_dim != feature_dim:
            raise ValueError(f"the head takes {head.feature_dim}-d features, {extractor} gives {feature_dim}-d")
        scorer = cls(extractor=extractor, dropout=head.dropout, pretrained_backbone=bool(backbone.pretrained))
        scorer.backbone.load_state_dict(backbone.state_dict())
        scorer.head.load_state_dict(head.state_dict())
        return scorer.eval()

    def clip_features(self, clips: torch.Tensor) -> torch.Tensor:
        """RGB clips (B, T, H, W, 3) in [0, 1] -> backbone features (B, d)."""
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"mil scores RGB clips (B, T, H, W, 3), got {tuple(clips.shape)}; set decode.grayscale: false")
        return self.backbone(clips * self.backbone_meta.input_range)  # e.g. C3D takes 0-255

    def score(self, clips: torch.Tensor) -> ScoreOutput:
        features = nn.functional.normalize(self.clip_features(clips).float(), dim=1)
        scores = self.head(features)
        return ScoreOutput(score=scores, frame_scores=scores[:, None].expand(-1, clips.shape[1]))

    # -- the weakly supervised learner's protocol (`vad.training.mil`) ------------------------------
    @staticmethod
    def head_for(feature_dim: int, dropout: float = 0.6) -> MILHead:
        return MILHead(feature_dim=feature_dim, dropout=dropout)

    @staticmethod
    def ranking_loss(scores_anomalous: torch.Tensor, scores_normal: torch.Tensor) -> torch.Tensor:
        from vad.models.scorers.mil.loss import mil_ranking_loss

        return mil_ranking_loss(scores_anomalous, scores_normal)

    def with_head(self, head: MILHead, backbone_state: dict | None = None) -> "MILScorer":
        from vad.models.backbones import build_backbone

        backbone = build_backbone(self.extractor, state_dict=backbone_state) if backbone_state is not None else self.backbone
        return MILScorer.from_parts(self.extractor, backbone, head)

    def hparams(self) -> dict:
        return {"extractor": self.extractor, "dropout": self.head.dropout, "pretrained_backbone": self.pretrained_backbone}


def mil(*, extractor: str = "i3d", dropout: float = 0.6, pretrained_backbone: bool = False) -> MILScorer:
    return MILScorer(extractor=extractor, dropout=dropout, pretrained_backbone=pretrained_backbone)
