"""`vad train`: train a scorer on normal footage with Ray Train, write a checkpoint, track and
register it in MLflow."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from vad.checkpoint import checkpoint_bytes, decode_record
from vad.config import TrainJobConfig
from vad.sources import list_videos
from vad.storage import write_bytes
from vad.tracking import mlflow_run
from vad.training import FitResult

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    checkpoint: str
    clips: int
    result: FitResult
    mlflow_run_id: str | None = None
    registered: object | None = None  # vad.registry.Registration


def training_videos(cfg: TrainJobConfig) -> list:
    videos, rejected = list_videos(cfg.source, cfg.storage)
    for bad in rejected:
        log.warning("skipped %s: %s", bad.uri, bad.reason)
    wanted = re.compile(cfg.train.key_regex) if cfg.train.key_regex else None
    videos = [v for v in videos if wanted is None or wanted.search(v.key)]
    if not videos:
        raise ValueError(f"no training videos under {cfg.source.uri!r}" + (f" matching {cfg.train.key_regex!r}" if wanted else ""))
    return videos


def _params(cfg: TrainJobConfig, hparams: dict, videos: int) -> dict:
    """Run parameters for MLflow; storage credentials are never included."""
    return {
        "model.name": cfg.model.name,
        **{f"model.{k}": v for k, v in hparams.items()},
        **{f"train.{k}": v for k, v in cfg.train.model_dump().items()},
        **{f"distributed.{k}": v for k, v in cfg.distributed.model_dump().items()},
        **{f"decode.{k}": v for k, v in decode_record(cfg.decode).items()},
        "source.uri": cfg.source.uri,
        "videos": videos,
    }


def _register(mlflow, cfg: TrainJobConfig, data: bytes, metrics: dict):
    from vad.registry import register_checkpoint

    shape = (cfg.decode.clip_len, *(cfg.decode.resize or ())) + (() if cfg.decode.grayscale else (3,))
    return register_checkpoint(mlflow, data, cfg.registry, cfg.model.name, shape, metrics.get(cfg.registry.metric, float("nan")))


def run_mil_training(cfg: TrainJobConfig, hparams: dict) -> TrainSummary:
    """`vad train` for the MIL ranker (weakly labelled videos, see `vad.distributed.train_mil_job`)."""
    from vad.distributed import train_mil_job

    if not cfg.train.anomalous_regex:
        raise ValueError("mil learns from weakly labelled videos: set train.anomalous_regex (keys of anomalous videos)")
    videos = training_videos(cfg)
    log.info("training the mil head on %d weakly labelled videos with %d Ray Train worker(s)", len(videos), cfg.distributed.num_workers)
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"train-{cfg.model.name}", {"vad.job": "train"}) as mlflow:
        if mlflow is not None:
            mlflow.log_params(_params(cfg, hparams, len(videos)))
        trained = train_mil_job(cfg, videos)
        final = trained.history[-1] if trained.history else {}
        metrics = {"train/loss": final.get("train/loss", float("nan")), **trained.val_metrics, "train/seconds": trained.seconds}
        data = checkpoint_bytes(
            trained.model, version=cfg.output.version, threshold=trained.threshold, decode=decode_record(cfg.decode), metrics=metrics
        )
        write_bytes(cfg.output.checkpoint, data, cfg.storage)
        run_id, registered = None, None
        if mlflow is not None:
            for row in trained.history:  # per epoch, as rank 0 reported them
                mlflow.log_metric("train/loss", row["train/loss"], step=int(row["epoch"]))
            mlflow.log_metrics({**trained.val_metrics, "train/threshold": trained.threshold, "train/seconds": trained.seconds,
                                **{f"train/bags_{k}": v for k, v in trained.bags.items()}})
            mlflow.set_tag("vad.checkpoint", cfg.output.checkpoint)
            mlflow.set_tag("vad.ray_train_path", trained.run_path)
            if cfg.registry.enabled:
                registered = _register(mlflow, cfg, data, metrics)
            run_id = mlflow.active_run().info.run_id
    result = FitResult(trained.threshold, trained.history, np.array([]), trained.seconds)
    return TrainSummary(cfg.output.checkpoint, trained.clips, result, run_id, registered)


def run_training(cfg: TrainJobConfig, *, fail_once_after_epoch: dict | None = None) -> TrainSummary:
    """Train, write the checkpoint to `cfg.output.checkpoint`, log and register it.

    `fail_once_after_epoch` ({"epoch": k, "marker": path}) makes a worker raise once after epoch k,
    for testing recovery."""
    from vad.distributed import train_distributed

    from vad.scorers import build_scorer

    hparams = {"clip_len": cfg.decode.clip_len, **cfg.model.hparams}
    model = build_scorer(cfg.model.name, **hparams)  # bad names or hparams fail here, before any cluster work
    if not model.trains_on_normal_clips:
        return run_mil_training(cfg, hparams)
    videos = training_videos(cfg)
    log.info("training %s on %d videos with %d Ray Train worker(s)", cfg.model.name, len(videos), cfg.distributed.num_workers)
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"train-{cfg.model.name}", {"vad.job": "train"}) as mlflow:
        spec = None
        if mlflow is not None:
            mlflow.log_params(_params(cfg, hparams, len(videos)))
            spec = {"tracking_uri": mlflow.get_tracking_uri(), "run_id": mlflow.active_run().info.run_id}
        trained = train_distributed(cfg, videos, hparams, spec, fail_once_after_epoch)
        final = trained.history[-1] if trained.history else {}
        metrics = {"train/loss": final.get("train/loss", float("nan")), "val/loss": final.get("val/loss", float("nan")), "train/seconds": trained.seconds}
        data = checkpoint_bytes(
            trained.model, version=cfg.output.version, threshold=trained.threshold, decode=decode_record(cfg.decode), metrics=metrics
        )
        write_bytes(cfg.output.checkpoint, data, cfg.storage)
        run_id, registered = None, None
        if mlflow is not None:
            mlflow.log_metrics({"train/threshold": trained.threshold, "train/seconds": trained.seconds, "train/clips": trained.train_clips})
            mlflow.set_tag("vad.checkpoint", cfg.output.checkpoint)
            mlflow.set_tag("vad.ray_train_path", trained.run_path)
            if cfg.registry.enabled:
                registered = _register(mlflow, cfg, data, metrics)
            run_id = mlflow.active_run().info.run_id
    result = FitResult(trained.threshold, trained.history, trained.val_scores, trained.seconds)
    return TrainSummary(cfg.output.checkpoint, trained.train_clips, result, run_id, registered)
