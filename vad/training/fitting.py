"""Scorers that are fitted, not trained (`ModelMeta.fitted`, e.g. `patch_knn`): one pass over normal
clips gathers candidate features into a bounded pool, the scorer chooses its memory bank from them,
and a second pass over held-out normal clips calibrates its scores and sets the threshold.

`fit_in_process` does both passes here (benchmarks, tests, a fleet's camera task); `fit_with_ray_data`
runs them as Ray Data stages (actors on GPUs where the cluster has them) for `vad train`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from vad.models.scorers.patch_knn.bank import CandidatePool
from vad.training.step import unit_clips

log = logging.getLogger(__name__)


def _finish(model, train_distance: float, val_distances: torch.Tensor, threshold_quantile: float, seconds: float, on_epoch=None):
    """Calibrate on held-out raw distances (N, T', h, w); the threshold is a quantile of their clip scores."""
    from vad.training.local import FitResult

    model.calibrate_distances(val_distances)
    scores = model.output(model.calibrated(val_distances), model.clip_len).score.cpu().numpy()
    row = {
        "epoch": 0, "train/loss": train_distance, "val/loss": float(val_distances.mean()),
        "val/score_mean": float(scores.mean()), "train/bank_patches": float(len(model.bank)),
    }
    if on_epoch is not None:
        on_epoch(row)
    log.info("fitted %s: %d bank patches, train/loss %.4f, val/loss %.4f", model.name, len(model.bank), row["train/loss"], row["val/loss"])
    return FitResult(float(np.quantile(scores, threshold_quantile)), [row], scores, seconds)


def coverage(model, candidates: torch.Tensor, limit: int = 20000) -> float:
    """Mean distance from the pool's patches to the chosen bank: how well the bank covers them."""
    sample = candidates[torch.randperm(len(candidates), generator=torch.Generator().manual_seed(0))[:limit]]
    return float(model.distances(sample.to(model.bank.device)).mean())


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
            pool.add(model.bank_candidates(unit_clips(train[i : i + batch_size], device)).flatten(0, 1))
        candidates = pool.take()
        model.build_bank(candidates)
        reference = val if len(val) else train[:256]
        distances = torch.cat([model.raw_distances(unit_clips(reference[i : i + batch_size], device)).cpu() for i in range(0, len(reference), batch_size)])
        return _finish(model, coverage(model, candidates), distances, threshold_quantile, time.perf_counter() - started, on_epoch)


class FitPass:
    """A Ray Data stage of a fit: builds the scorer (with `state`, a fitted one) and applies one of its
    per-batch methods to clip batches: `bank_candidates` (each clip's patch features) or `raw_distances`."""

    def __init__(self, name: str, hparams: dict, method: str, state: dict | None = None, use_gpu: bool = False, threads: int = 1):
        from vad.models.inference import pick_device
        from vad.models.scorers import build_scorer

        torch.set_num_threads(max(1, threads))
        self.device = pick_device("cuda" if use_gpu else "cpu")
        self.model = build_scorer(name, **hparams)
        if state is not None:
            self.model.load_state_dict(state)
        self.model.to(self.device).eval()
        self.method = getattr(self.model, method)

    def __call__(self, batch: dict) -> dict:
        with torch.inference_mode():
            out = self.method(unit_clips(batch["frames"], self.device)).float().cpu().numpy()
        return {"values": out}


def fit_with_ray_data(cfg, train_videos: list, val_videos: list, hparams: dict):
    """`vad train` for a fitted scorer: both passes are Ray Data stages (`distributed.num_workers`
    actors, each with `cpus_per_worker` CPUs and `gpus_per_worker` GPUs when `use_gpu`), the bank is
    chosen in the driver from a pool bounded by the scorer's `max_candidates`."""
    from vad.models.scorers import build_scorer
    from vad.training.clips import DistributedResult, clips_dataset

    dist = cfg.distributed
    started = time.perf_counter()
    model = build_scorer(cfg.model.name, **hparams)

    def run_pass(videos: list, method: str, state: dict | None, limit: int | None = None):
        ds = clips_dataset(videos, cfg)
        if limit:
            ds = ds.limit(limit)
        kwargs = {"name": cfg.model.name, "hparams": hparams, "method": method, "state": state, "use_gpu": dist.use_gpu,
                  "threads": max(1, int(dist.cpus_per_worker))}
        return ds.map_batches(
            FitPass, fn_constructor_kwargs=kwargs, batch_size=cfg.train.batch_size, concurrency=dist.num_workers,
            num_cpus=dist.cpus_per_worker, num_gpus=dist.gpus_per_worker if dist.use_gpu else 0,
        )

    pool, clips = CandidatePool(model.max_candidates, cfg.train.seed), 0
    # a clip's candidates are all its patch features (e.g. 1,320 x 480 floats at 240x352): take few clips at a time
    passed = run_pass(train_videos, "bank_candidates", None, cfg.train.max_clips)
    for batch in passed.iter_batches(batch_size=cfg.train.batch_size, batch_format="numpy"):
        pool.add(torch.from_numpy(np.array(batch["values"])).flatten(0, 1))
        clips += len(batch["values"])
    candidates = pool.take()
    model.build_bank(candidates)
    log.info("memory bank: %d of %d candidate patches (%d seen)", len(model.bank), len(candidates), pool.seen)
    reference = val_videos or train_videos
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    distances = torch.cat([
        torch.from_numpy(np.array(b["values"]))
        for b in run_pass(reference, "raw_distances", state, None if val_videos else 256).iter_batches(batch_size=1024, batch_format="numpy")
    ])
    fitted = _finish(model, coverage(model, candidates), distances, cfg.train.threshold_quantile, time.perf_counter() - started)
    return DistributedResult(
        model=model, history=fitted.history, val_scores=fitted.val_scores, threshold=fitted.threshold,
        train_clips=clips, val_clips=len(distances) if val_videos else 0, seconds=fitted.seconds, run_path="",
    )
