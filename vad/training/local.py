"""Single-process training and batch scoring of clip scorers on in-memory clips (benchmarks, tests).

`vad train` runs on Ray Train instead (`vad.training.clips`): the same model, loss, Adam optimiser and
`train_step`, with Ray Data feeding clips and checkpoints between epochs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from vad.models.calibration import Calibration
from vad.models.scorers import ClipScorer
from vad.training.step import optimise, train_step, unit_clips

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    threshold: float
    history: list[dict] = field(default_factory=list)
    val_scores: np.ndarray | None = None
    seconds: float = 0.0
    calibration: Calibration | None = None  # held-out normal frame scores' statistics (`vad.models.calibration`)


def _batches(clips: np.ndarray, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(len(clips)) if rng is not None else np.arange(len(clips))
    for i in range(0, len(order), batch_size):
        yield unit_clips(clips[order[i : i + batch_size]])


def score_clips(
    model: ClipScorer, clips: np.ndarray, batch_size: int = 32, device: str = "cpu", field: str = "score"
) -> np.ndarray:
    """Scores of uint8 clips in batches: `field` "score" gives (N,), "frame_scores" gives (N, T)."""
    scores, frames = score_clips_and_frames(model, clips, batch_size, device)
    return frames if field == "frame_scores" else scores


def score_clips_and_frames(model: ClipScorer, clips: np.ndarray, batch_size: int = 32, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(clip scores (N,), frame scores (N, T)) of uint8 clips, in one pass."""
    model.eval()
    scores, frames = [], []
    with torch.inference_mode():
        for batch in _batches(clips, batch_size, None):
            out = model.score(batch.to(device))
            scores.append(out.score.float().cpu().numpy())
            frames.append(out.frame_scores.float().cpu().numpy())
    if not scores:
        return np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(scores), np.concatenate(frames)


def validation_loss(model: ClipScorer, clips: np.ndarray, batch_size: int = 32, device: str = "cpu") -> float:
    """The training loss on held-out clips (what the registry promotes on); NaN without any."""
    if len(clips) == 0:
        return float("nan")
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for batch in _batches(clips, batch_size, None):
            total += float(model.training_loss(batch.to(device))) * len(batch)
    return total / len(clips)


def fit(
    model: ClipScorer,
    clips: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    val_fraction: float = 0.1,
    threshold_quantile: float = 0.99,
    seed: int = 0,
    device: str = "cpu",
    on_epoch=None,
    val_clips: np.ndarray | None = None,
) -> FitResult:
    """Train on normal clips; the threshold is a quantile of the scores of held-out normal clips:
    `val_clips` when given (e.g. whole held-out videos), else `val_fraction` of `clips` at random.
    A fitted scorer (`ModelMeta.fitted`) is fitted instead: one pass, the epoch settings unused."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if val_clips is not None:
        val, train, n_val = val_clips, clips, len(val_clips)
    else:
        order = rng.permutation(len(clips))
        n_val = max(1, int(round(len(clips) * val_fraction))) if len(clips) > 1 else 0
        val, train = clips[order[:n_val]], clips[order[n_val:]]
    if model.meta.fitted:  # a memory bank: one pass, no epochs (`vad.training.fitting`)
        from vad.training.fitting import fit_in_process

        return fit_in_process(
            model, train, val, batch_size=batch_size, device=device, threshold_quantile=threshold_quantile, seed=seed, on_epoch=on_epoch,
        )
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        losses = [train_step(model.training_loss, optimiser, batch.to(device)) for batch in _batches(train, batch_size, rng)]
        val_scores, val_frames = score_clips_and_frames(model, val, batch_size, device) if n_val else (np.zeros(0), None)
        row = {
            "epoch": epoch, "train/loss": float(np.mean(losses)), "val/loss": validation_loss(model, val, batch_size, device),
            "val/score_mean": float(val_scores.mean()) if n_val else float("nan"),
        }
        history.append(row)
        log.info("epoch %d/%d  train/loss %.5f  val/score_mean %.5f", epoch + 1, epochs, row["train/loss"], row["val/score_mean"])
        if on_epoch is not None:
            on_epoch(row)
    reference = val_scores if n_val else score_clips(model, train, batch_size, device)
    if hasattr(model, "calibrate"):  # scorers with pixel masks calibrate them on held-out normal clips
        model.eval()
        model.calibrate(unit_clips(val if n_val else train[:64], device))
    threshold = float(np.quantile(reference, threshold_quantile))
    frames = val_frames if n_val else score_clips(model, train[:256], batch_size, device, field="frame_scores")
    calibration = Calibration.from_frame_scores(frames, "held-out normal clips" if n_val else "training clips (none held out)")
    return FitResult(threshold, history, reference, time.perf_counter() - started, calibration)


def train_mil(
    anomalous: np.ndarray, normal: np.ndarray, *, epochs: int = 200, batch_pairs: int = 30, lr: float = 1e-3,
    weight_decay: float = 1e-3, seed: int = 0,
) -> tuple[torch.nn.Module, list[float]]:
    """The MIL head (Sultani et al.) trained in this process on bags (n, 32, d) of anomalous and normal
    videos; Adagrad as in the paper's code (`vad.training.mil` trains it on Ray Train)."""
    from vad.models.scorers.mil.loss import mil_ranking_loss
    from vad.models.scorers.mil.model import MILHead

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = MILHead(feature_dim=anomalous.shape[-1])
    optimiser = torch.optim.Adagrad(head.parameters(), lr=lr, weight_decay=weight_decay)
    a_all, n_all = torch.from_numpy(anomalous).float(), torch.from_numpy(normal).float()
    losses = []
    for _ in range(epochs):
        head.train()
        # The paper's batch: 30 anomalous and 30 normal videos, paired; smaller sets are cycled.
        ia = rng.permutation(len(a_all))[:batch_pairs]
        inn = rng.permutation(len(n_all))[:batch_pairs]
        pairs = max(len(ia), len(inn))
        scores_a, scores_n = head(a_all[ia]), head(n_all[inn])
        losses.append(optimise(optimiser, mil_ranking_loss(scores_a[np.arange(pairs) % len(ia)], scores_n[np.arange(pairs) % len(inn)])))
    head.eval()
    return head, losses
