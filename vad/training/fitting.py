"""Scorers that are fitted, not trained (`ModelMeta.fitted`; `vad.models.scorers.FittedScorer`, e.g.
`patch_knn`, `objects`): one pass over normal clips gathers the scorer's rows (`fit_rows`) into a
bounded pool, the scorer fits itself on them (`fit`), and a second pass over held-out normal clips
gives the values it calibrates on (`calibration_values`, `calibrate_values`); the threshold is a
quantile of those clips' scores.

`fit_in_process` does both passes here (benchmarks, tests, a fleet's camera task); `fit_with_ray_data`
runs them as Ray Data stages (actors on GPUs where the cluster has them) for `vad train`. Neither
knows which scorer it fits.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from vad.models.memory import CandidatePool
from vad.training.alerts import META
from vad.training.step import unit_clips

log = logging.getLogger(__name__)

CALIBRATION_SAMPLE = 256  # clips of the training footage calibrated on when there is no held-out footage


def model_input(model, clips: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 clips as the scorer takes them: unchanged for `ModelMeta.uint8_input` scorers, else in [0, 1]."""
    if model.meta.uint8_input:
        tensor = torch.from_numpy(np.ascontiguousarray(clips)) if isinstance(clips, np.ndarray) else clips
        return tensor.to(device)
    return unit_clips(clips, device)


def _fit(model, pool: CandidatePool) -> dict[str, float]:
    rows = pool.take()
    metrics = model.fit(rows)
    log.info("fitted %s on %d of %d rows gathered", model.name, len(rows), pool.seen)
    return metrics


def _finish(model, fit_metrics: dict, values: torch.Tensor, threshold_quantile: float, seconds: float, on_epoch=None,
            held_out: bool = True):
    """Calibrate on held-out values; the threshold is a quantile of their clip scores (a fitted scorer's
    clip score is its worst frame), the model's `Calibration` their frame scores' statistics."""
    from vad.models.calibration import Calibration
    from vad.training.local import FitResult

    frame_scores, val_metrics = model.calibrate_values(values)
    frame_scores = np.asarray(frame_scores, dtype=np.float64)
    scores = frame_scores.max(axis=1)
    calibration = Calibration.from_frame_scores(frame_scores, "held-out normal clips" if held_out else "training clips (none held out)")
    row = {"epoch": 0, **fit_metrics, **val_metrics, "val/score_mean": float(scores.mean()), **model.fit_summary()}
    row.setdefault("train/loss", float("nan"))
    row.setdefault("val/loss", float("nan"))
    if on_epoch is not None:
        on_epoch(row)
    log.info("fitted %s: train/loss %.4f, val/loss %.4f", model.name, row["train/loss"], row["val/loss"])
    return FitResult(float(np.quantile(scores, threshold_quantile)), [row], scores, seconds, calibration)


def fit_in_process(
    model, train: np.ndarray, val: np.ndarray, *, batch_size: int = 16, device: str = "cpu", threshold_quantile: float = 0.99,
    seed: int = 0, on_epoch=None,
):
    """Fit `model` on uint8 normal clips `train`; calibrate on `val` (held-out normal clips; a
    sample of `train` if there are none, which makes the scores look better than they are)."""
    started = time.perf_counter()
    model.to(device).eval()
    pool = CandidatePool(model.max_candidates, seed)
    with torch.inference_mode():
        for i in range(0, len(train), batch_size):
            pool.add(model.fit_rows(model_input(model, train[i : i + batch_size], device)))
        metrics = _fit(model, pool)
        reference = val if len(val) else train[:CALIBRATION_SAMPLE]
        values = torch.cat([model.calibration_values(model_input(model, reference[i : i + batch_size], device)).cpu()
                            for i in range(0, len(reference), batch_size)])
        return _finish(model, metrics, values, threshold_quantile, time.perf_counter() - started, on_epoch, held_out=len(val) > 0)


class FitPass:
    """A Ray Data stage of a fit: builds the scorer (with `state`, a fitted one) and applies one of its
    per-batch methods to clip batches: `fit_rows` or `calibration_values`."""

    def __init__(self, name: str, hparams: dict, method: str, state: dict | None = None, use_gpu: bool = False, threads: int = 1, storage=None):
        from vad.models.inference import pick_device
        from vad.models.scorers import build_scorer

        if method not in ("fit_rows", "calibration_values"):
            raise ValueError(f"unknown fit pass {method!r}")
        torch.set_num_threads(max(1, threads))
        self.device = pick_device("cuda" if use_gpu else "cpu")
        self.model = build_scorer(name, **hparams)
        self.model.bind_storage(storage)
        if state is not None:
            self.model.load_state_dict(state)
        self.model.to(self.device).eval()
        self.method = getattr(self.model, method)

    def __call__(self, batch: dict) -> dict:
        """`calibration_values`: one row per clip. `fit_rows`: any number of rows, and a `clips` column
        that counts the batch's clips on its first row (a batch without rows gives one NaN row to carry it)."""
        clips = len(batch["frames"])
        with torch.inference_mode():
            out = self.method(model_input(self.model, batch["frames"], self.device)).float().cpu().numpy()
        if self.method.__name__ != "fit_rows":  # each clip's video and times travel along (the budget threshold counts events)
            return {"values": out, **{k: batch[k] for k in META if k in batch}}
        if len(out) == 0:
            out = np.full((1, *out.shape[1:]), np.nan, np.float32)
        counts = np.zeros(len(out), np.int64)
        counts[0] = clips
        return {"values": out, "clips": counts}


def fit_with_ray_data(cfg, train_videos: list, val_videos: list, hparams: dict):
    """`vad train` for a fitted scorer: both passes are Ray Data stages (`distributed.num_workers`
    actors, each with `cpus_per_worker` CPUs and `gpus_per_worker` GPUs when `use_gpu`); the scorer
    is fitted in the driver from a pool bounded by its `max_candidates`."""
    from vad.models.scorers import build_scorer
    from vad.training.alerts import threshold_of
    from vad.training.clips import DistributedResult, clips_dataset

    dist = cfg.distributed
    started = time.perf_counter()
    model = build_scorer(cfg.model.name, **hparams)
    model.bind_storage(cfg.storage)  # resources it reads (detector weights) checked before any cluster work

    def run_pass(videos: list, method: str, state: dict | None, limit: int | None = None):
        ds = clips_dataset(videos, cfg, ("frames", *META) if method == "calibration_values" else ("frames",))
        if limit:
            ds = ds.limit(limit)
        kwargs = {"name": cfg.model.name, "hparams": hparams, "method": method, "state": state, "use_gpu": dist.use_gpu,
                  "threads": max(1, int(dist.cpus_per_worker)), "storage": cfg.storage}
        return ds.map_batches(
            FitPass, fn_constructor_kwargs=kwargs, batch_size=cfg.train.batch_size, concurrency=dist.num_workers,
            num_cpus=dist.cpus_per_worker, num_gpus=dist.gpus_per_worker if dist.use_gpu else 0,
        )

    pool, clips = CandidatePool(model.max_candidates, cfg.train.seed), 0
    # a clip's rows can be many (a patch grid: 1,320 x 480 floats at 240x352): take few clips at a time
    for batch in run_pass(train_videos, "fit_rows", None, cfg.train.max_clips).iter_batches(batch_size=cfg.train.batch_size, batch_format="numpy"):
        rows = torch.from_numpy(np.array(batch["values"]))
        pool.add(rows[~torch.isnan(rows.flatten(1)).any(1)])
        clips += int(np.sum(batch["clips"]))
    metrics = _fit(model, pool)
    reference = val_videos or train_videos
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    parts, meta = [], {k: [] for k in META}
    for b in run_pass(reference, "calibration_values", state, None if val_videos else CALIBRATION_SAMPLE).iter_batches(batch_size=1024, batch_format="numpy"):
        parts.append(torch.from_numpy(np.array(b["values"])))
        for k in META:
            meta[k].append(b[k])
    values = torch.cat(parts)
    fitted = _finish(model, metrics, values, cfg.train.threshold_quantile, time.perf_counter() - started, held_out=bool(val_videos))
    held_out = {k: np.concatenate(v) for k, v in meta.items()} if val_videos else None
    threshold, budget = threshold_of(cfg, fitted.val_scores, held_out, fitted.threshold, cfg.model.name)
    return DistributedResult(
        model=model, history=fitted.history, val_scores=fitted.val_scores, threshold=threshold, calibration=fitted.calibration, budget=budget,
        train_clips=clips, val_clips=len(values) if val_videos else 0, seconds=fitted.seconds, run_path="",
    )
