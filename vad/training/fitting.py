"""The fitted learner (`LearningType.FITTED`, the `vad.models.scorers.FittedScorer` protocol, e.g.
`patch_knn`, `objects`): one pass over normal clips gathers the scorer's rows (`fit_rows`) into a
bounded pool, the scorer fits itself on them (`fit`), and a second pass over held-out normal clips
gives the values it calibrates on (`calibration_values`, `calibrate_values`); the threshold comes from
those clips' scores (`vad.training.alerts.settle`).

`fit_in_process` does both passes here (benchmarks, tests, a fleet's camera task); `fit_with_ray_data`
runs them as Ray Data stages (actors on GPUs where the cluster has them) for `vad train`. Neither
knows which scorer it fits.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from vad.models.inputs import model_input
from vad.models.memory import CandidatePool
from vad.training.alerts import META, settle
from vad.training.result import Trained

log = logging.getLogger(__name__)

CALIBRATION_SAMPLE = 256  # clips of the training footage calibrated on when there is no held-out footage


def _fit(model, pool: CandidatePool) -> dict[str, float]:
    rows = pool.take()
    metrics = model.fit(rows)
    log.info("fitted %s on %d of %d rows gathered", model.name, len(rows), pool.seen)
    return metrics


def _finish(model, fit_metrics: dict, values: torch.Tensor, *, threshold_quantile: float, alerts, val_meta: dict | None, what: str,
            started: float, held_out: bool, train_clips: int, on_epoch=None) -> Trained:
    """Calibrate on held-out values (`settle`: a fitted scorer's clip score is its worst frame)."""
    frame_scores, val_metrics = model.calibrate_values(values)
    frame_scores = np.asarray(frame_scores, dtype=np.float64)
    scores = frame_scores.max(axis=1)
    settled = settle(scores, frame_scores, quantile=threshold_quantile, alerts=alerts, meta=val_meta, held_out=held_out, what=what)
    row = {"epoch": 0, "train/loss": float("nan"), "val/loss": float("nan"), **fit_metrics, **val_metrics,
           "val/score_mean": float(scores.mean()), **model.fit_summary()}
    if on_epoch is not None:
        on_epoch(row)
    log.info("fitted %s: train/loss %.4f, val/loss %.4f", model.name, row["train/loss"], row["val/loss"])
    return Trained(model, settled.threshold, [row], scores, settled.calibration, settled.budget, train_clips=train_clips,
                   val_clips=len(values) if held_out else 0, seconds=time.perf_counter() - started)


def fit_in_process(
    model, train: np.ndarray, val: np.ndarray, *, batch_size: int = 16, device: str = "cpu", threshold_quantile: float = 0.99,
    seed: int = 0, on_epoch=None, alerts=None, val_meta: dict | None = None, what: str = "the model",
) -> Trained:
    """Fit `model` on uint8 normal clips `train`; calibrate on `val` (held-out normal clips, their videos and
    times in `val_meta` for an `alerts` budget; a sample of `train` if there are none, which makes the scores
    look better than they are)."""
    started = time.perf_counter()
    model.to(device).eval()
    pool = CandidatePool(model.max_candidates, seed)
    with torch.inference_mode():
        for i in range(0, len(train), batch_size):
            pool.add(model.fit_rows(model_input(model.meta, train[i : i + batch_size], device)))
        metrics = _fit(model, pool)
        reference = val if len(val) else train[:CALIBRATION_SAMPLE]
        values = torch.cat([model.calibration_values(model_input(model.meta, reference[i : i + batch_size], device)).cpu()
                            for i in range(0, len(reference), batch_size)])
    return _finish(model, metrics, values, threshold_quantile=threshold_quantile, alerts=alerts, val_meta=val_meta, what=what,
                   started=started, held_out=len(val) > 0, train_clips=len(train), on_epoch=on_epoch)


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
            out = self.method(model_input(self.model.meta, batch["frames"], self.device)).float().cpu().numpy()
        if self.method.__name__ != "fit_rows":  # each clip's video and times travel along (the budget threshold counts events)
            return {"values": out, **{k: batch[k] for k in META if k in batch}}
        if len(out) == 0:
            out = np.full((1, *out.shape[1:]), np.nan, np.float32)
        counts = np.zeros(len(out), np.int64)
        counts[0] = clips
        return {"values": out, "clips": counts}


def fit_with_ray_data(cfg, train_videos: list, val_videos: list, hparams: dict, **_) -> Trained:
    """`vad train` for a fitted scorer: both passes are Ray Data stages (`distributed.num_workers`
    actors, each with `cpus_per_worker` CPUs and `gpus_per_worker` GPUs when `use_gpu`); the scorer
    is fitted in the driver from a pool bounded by its `max_candidates`."""
    import ray

    from vad.models.scorers import build_scorer
    from vad.training.data import clips_dataset

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
            FitPass, fn_constructor_kwargs=kwargs, batch_size=cfg.train.batch_size, compute=ray.data.ActorPoolStrategy(size=dist.num_workers),
            num_cpus=dist.cpus_per_worker, num_gpus=dist.gpus_per_worker if dist.use_gpu else 0,
        )

    pool, clips = CandidatePool(model.max_candidates, cfg.train.seed), 0
    # a clip's rows can be many (a patch grid: 1,320 x 480 floats at 240x352): take few clips at a time
    for batch in run_pass(train_videos, "fit_rows", None, cfg.train.max_clips).iter_batches(batch_size=cfg.train.batch_size, batch_format="numpy"):
        rows = torch.from_numpy(np.array(batch["values"]))
        pool.add(rows[~torch.isnan(rows.flatten(1)).any(1)])
        clips += int(np.sum(batch["clips"]))
    metrics = _fit(model, pool)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    parts, meta = [], {k: [] for k in META}
    reference = run_pass(val_videos or train_videos, "calibration_values", state, None if val_videos else CALIBRATION_SAMPLE)
    for b in reference.iter_batches(batch_size=1024, batch_format="numpy"):
        parts.append(torch.from_numpy(np.array(b["values"])))
        for k in META:
            meta[k].append(b[k])
    return _finish(model, metrics, torch.cat(parts), threshold_quantile=cfg.train.threshold_quantile, alerts=cfg.alerts,
                   val_meta={k: np.concatenate(v) for k, v in meta.items()}, what=cfg.model.name, started=started,
                   held_out=bool(val_videos), train_clips=clips)
