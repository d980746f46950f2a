"""Single-process learning and batch scoring on in-memory clips (a fleet camera's task, benchmarks, tests).

`vad train` runs on the cluster instead (`vad.training.job`): the same model, loss, optimiser, `train_step`,
MIL loop (`mil_epoch`) and calibration step (`vad.training.alerts.settle`), with Ray Data feeding clips.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from vad.models.inputs import unit_clips
from vad.models.registry import LearningType
from vad.models.scorers import ClipScorer
from vad.training.alerts import settle
from vad.training.result import Trained
from vad.training.step import mil_epoch, train_step

log = logging.getLogger(__name__)


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


def validation_loss(model, clips: np.ndarray, batch_size: int = 32, device: str = "cpu") -> float:
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
    alerts=None,
    val_meta: dict | None = None,
    what: str = "the model",
) -> Trained:
    """Learn normal from uint8 clips in this process, by the model's kind: a trained scorer by `epochs` of
    gradient steps, a fitted one in one pass (`vad.training.fitting`, the epoch settings unused). The
    threshold comes from held-out normal clips: `val_clips` when given (e.g. whole held-out videos, with
    their videos and times in `val_meta` for an `alerts` budget), else `val_fraction` of `clips` at random."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if val_clips is not None:
        val, train = val_clips, clips
    else:
        order = rng.permutation(len(clips))
        n_val = max(1, int(round(len(clips) * val_fraction))) if len(clips) > 1 else 0
        val, train = clips[order[:n_val]], clips[order[n_val:]]
        val_meta = None
    settings = {"threshold_quantile": threshold_quantile, "alerts": alerts, "val_meta": val_meta, "what": what}
    if model.meta.learning_type is LearningType.FITTED:
        from vad.training.fitting import fit_in_process

        return fit_in_process(model, train, val, batch_size=batch_size, device=device, seed=seed, on_epoch=on_epoch, **settings)
    if model.meta.learning_type is not LearningType.TRAINED:
        raise ValueError(f"{model.name} learns {model.meta.learning_type.value}, not from normal clips: see vad.training.mil")
    return _train(model, train, val, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, rng=rng, device=device,
                  on_epoch=on_epoch, **settings)


def _train(model, train: np.ndarray, val: np.ndarray, *, epochs: int, batch_size: int, lr: float, weight_decay: float, rng,
           device: str, on_epoch, threshold_quantile: float, alerts, val_meta, what: str) -> Trained:
    """The gradient learner: Adam over `epochs` of `train`, validated on `val` after each."""
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        losses = [train_step(model.training_loss, optimiser, batch.to(device)) for batch in _batches(train, batch_size, rng)]
        val_scores, val_frames = score_clips_and_frames(model, val, batch_size, device) if len(val) else (np.zeros(0), None)
        row = {
            "epoch": epoch, "train/loss": float(np.mean(losses)), "val/loss": validation_loss(model, val, batch_size, device),
            "val/score_mean": float(val_scores.mean()) if len(val) else float("nan"),
        }
        history.append(row)
        log.info("epoch %d/%d  train/loss %.5f  val/score_mean %.5f", epoch + 1, epochs, row["train/loss"], row["val/score_mean"])
        if on_epoch is not None:
            on_epoch(row)
    held_out = len(val) > 0
    if not held_out:  # the threshold from the training clips: it looks better than it is
        val_scores, val_frames = score_clips_and_frames(model, train[:256], batch_size, device)
    model.eval()
    model.calibrate(unit_clips(val if held_out else train[:64], device))
    settled = settle(val_scores, val_frames, quantile=threshold_quantile, alerts=alerts, meta=val_meta, held_out=held_out, what=what)
    return Trained(model, settled.threshold, history, val_scores, settled.calibration, settled.budget, train_clips=len(train),
                   val_clips=len(val), seconds=time.perf_counter() - started)


def train_mil(
    anomalous: np.ndarray, normal: np.ndarray, *, epochs: int = 200, steps_per_epoch: int = 1, batch_pairs: int = 30, lr: float = 1e-3,
    weight_decay: float = 1e-3, dropout: float = 0.6, seed: int = 0,
) -> tuple[torch.nn.Module, list[float]]:
    """The MIL head (Sultani et al.) trained in this process on bags (n, 32, d) of anomalous and normal
    videos, by the loop `vad train` runs on Ray Train (`mil_epoch`); Adagrad as in the paper's code."""
    from vad.models.scorers.mil.model import MILScorer

    torch.manual_seed(seed)
    head = MILScorer.head_for(anomalous.shape[-1], dropout=dropout)
    optimiser = torch.optim.Adagrad(head.parameters(), lr=lr, weight_decay=weight_decay)
    a_all, n_all = torch.from_numpy(anomalous).float(), torch.from_numpy(normal).float()
    losses: list[float] = []
    for epoch in range(epochs):
        losses += mil_epoch(head, MILScorer.ranking_loss, optimiser, a_all, n_all, steps=steps_per_epoch, pairs=batch_pairs, seed=seed, epoch=epoch)
    head.eval()
    return head, losses
