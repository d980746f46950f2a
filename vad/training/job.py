"""`vad train`: train a scorer on normal footage (or, for MIL, weakly labelled footage) with Ray Train,
write its checkpoint, track and register it in MLflow."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vad.cluster import ensure_ray
from vad.config import TrainJobConfig
from vad.io.sources import list_videos
from vad.io.storage import require_credentials, write_bytes
from vad.models.checkpoint import checkpoint_bytes, decode_record
from vad.tracking.runs import mlflow_run
from vad.training.alerts import budget_metrics
from vad.training.local import FitResult

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    checkpoint: str
    clips: int
    result: FitResult
    mlflow_run_id: str | None = None
    registered: object | None = None  # vad.tracking.registry.Registration
    budget: object | None = None  # vad.results.events.Budget, when the threshold came from alerts.max_false_per_hour


@dataclass
class Trained:
    """What either kind of training hands back to the job: the model, its threshold and history,
    the metrics of the checkpoint (the registry's promotion metric among them) and the run's extras."""

    model: object
    threshold: float
    history: list[dict]
    metrics: dict
    extra_metrics: dict
    clips: int
    seconds: float
    run_path: str
    val_scores: np.ndarray
    calibration: object = None  # vad.models.calibration.Calibration
    budget: object = None  # vad.results.events.Budget: the threshold came from alerts.max_false_per_hour


def training_videos(cfg: TrainJobConfig) -> list:
    videos, rejected = list_videos(cfg.source, cfg.storage)
    for bad in rejected:
        log.warning("skipped %s: %s", bad.uri, bad.reason)
    wanted = re.compile(cfg.train.key_regex) if cfg.train.key_regex else None
    videos = [v for v in videos if wanted is None or wanted.search(v.key)]
    if not videos:
        raise ValueError(f"no training videos under {cfg.source.uri!r}" + (f" matching {cfg.train.key_regex!r}" if wanted else ""))
    return videos


def run_params(cfg: TrainJobConfig, hparams: dict, videos: int) -> dict:
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


def _train_clip_scorer(cfg: TrainJobConfig, videos: list, hparams: dict, tracker, epoch_callbacks) -> Trained:
    from vad.models.scorers import scorer_meta
    from vad.training.clips import train_distributed
    from vad.training.feedback import feedback_footage
    from vad.training.fitting import fit_with_ray_data
    from vad.training.split import split_videos, split_warning

    train_videos, val_videos = split_videos(videos, cfg.train.val_fraction)
    if warning := split_warning("normal videos", train_videos, val_videos, cfg.train.val_fraction):
        log.warning(warning)
        tracker.set_tag("vad.split_warning", warning)
    marked_normal = feedback_footage(cfg)  # events operators marked normal: trained on, never held out
    train_videos = train_videos + marked_normal
    tracker.log_params({"split.train_videos": len(train_videos), "split.val_videos": len(val_videos), "feedback.normal_events": len(marked_normal)})
    if scorer_meta(cfg.model.name).fitted:  # a memory bank: Ray Data passes, no Ray Train epochs
        trained = fit_with_ray_data(cfg, train_videos, val_videos, hparams)
    else:
        trained = train_distributed(cfg, train_videos, val_videos, hparams, tracker.worker_spec(), epoch_callbacks)
    log.info(
        "trained on %d videos (%d clips), validated on %d videos (%d clips)",
        len(train_videos), trained.train_clips, len(val_videos), trained.val_clips,
    )
    final = trained.history[-1] if trained.history else {}
    metrics = {"train/loss": final.get("train/loss", float("nan")), "val/loss": final.get("val/loss", float("nan")), "train/seconds": trained.seconds}
    return Trained(
        trained.model, trained.threshold, trained.history, metrics,
        {"train/clips": trained.train_clips, "val/clips": trained.val_clips,
         **{k: v for k, v in final.items() if k not in ("epoch", "train/loss", "val/loss", "val/score_mean")}},  # a fit's own (bank size, objects)
        trained.train_clips, trained.seconds, trained.run_path, trained.val_scores, trained.calibration, trained.budget,
    )


def _train_mil(cfg: TrainJobConfig, videos: list, hparams: dict, tracker, epoch_callbacks) -> Trained:
    from vad.training.mil import train_mil_job

    if cfg.alerts.max_false_per_hour is not None:
        log.warning("mil: alerts.max_false_per_hour is not supported (its held-out clips are bag features without times); "
                    "the threshold is train.threshold_quantile's")
    trained = train_mil_job(cfg, videos, epoch_callbacks)
    for row in trained.history:  # per epoch, as rank 0 reported them
        tracker.log_metric("train/loss", row["train/loss"], step=int(row["epoch"]))
    final = trained.history[-1] if trained.history else {}
    metrics = {"train/loss": final.get("train/loss", float("nan")), **trained.val_metrics, "train/seconds": trained.seconds}
    extra = {**trained.val_metrics, **{f"train/bags_{k}": v for k, v in trained.bags.items()}}
    return Trained(
        trained.model, trained.threshold, trained.history, metrics, extra, trained.clips, trained.seconds, trained.run_path, np.array([]),
        trained.calibration,
    )


def check_resources(cfg: TrainJobConfig) -> None:
    """Refuse a run the cluster cannot hold: Ray Train reserves its workers' CPUs (and GPUs) for the
    whole run, and the clips are decoded by Ray Data tasks that need CPUs of their own; with too few
    the decode tasks wait forever."""
    import ray

    dist = cfg.distributed
    have = ray.cluster_resources()
    needs = {"CPU": dist.num_workers * dist.cpus_per_worker + cfg.decode.num_cpus}
    if dist.use_gpu:
        needs["GPU"] = dist.num_workers * dist.gpus_per_worker
    short = {kind: (need, have.get(kind, 0.0)) for kind, need in needs.items() if have.get(kind, 0.0) + 1e-9 < need}
    if short:
        what = "; ".join(f"{need:g} {kind}s, the cluster has {got:g}" for kind, (need, got) in short.items())
        raise ValueError(
            f"training needs {what} ({dist.num_workers} workers x {dist.cpus_per_worker:g} CPUs"
            f"{f' x {dist.gpus_per_worker:g} GPUs' if dist.use_gpu else ''}, plus {cfg.decode.num_cpus:g} CPUs for a decode task): "
            "lower distributed.num_workers or distributed.cpus_per_worker (fractions such as 0.5 work), or decode.num_cpus, "
            "or add nodes; on an autoscaling cluster set distributed.check_resources: false"
        )


def run_training(cfg: TrainJobConfig, *, epoch_callbacks: list[Callable[[dict], None]] = ()) -> TrainSummary:
    """Train, write the checkpoint to `cfg.output.checkpoint`, log and register it.

    `epoch_callbacks` run on every Ray Train worker after each epoch with its metrics (the tests use
    one to fail a worker group once)."""
    from vad.models.scorers import build_scorer, scorer_meta
    from vad.training.mil import WEAK_LABELS_NEEDED

    hparams = {"clip_len": cfg.decode.clip_len, **cfg.model.hparams}
    build_scorer(cfg.model.name, **hparams).bind_storage(cfg.storage)  # bad names, hparams or weights fail here, before any cluster work
    for uri in (cfg.output.checkpoint, cfg.distributed.storage_path or ""):
        require_credentials(uri, cfg.storage)
    trains_on_normal_clips = scorer_meta(cfg.model.name).trains_on_normal_clips
    if not trains_on_normal_clips and not cfg.train.anomalous_regex:
        raise ValueError(WEAK_LABELS_NEEDED)
    videos = training_videos(cfg)
    train = _train_clip_scorer if trains_on_normal_clips else _train_mil
    log.info("training %s on %d videos with %d Ray Train worker(s)", cfg.model.name, len(videos), cfg.distributed.num_workers)
    ensure_ray(cfg.distributed.ray_address, cfg.distributed.num_cpus, dashboard=True)
    if cfg.distributed.check_resources:
        check_resources(cfg)
    if cfg.distributed.num_workers > 1 and trains_on_normal_clips:
        log.info("each of the %d workers takes the same number of clips: up to %d clips are left out of an epoch",
                 cfg.distributed.num_workers, cfg.distributed.num_workers - 1)
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"train-{cfg.model.name}", {"vad.job": "train"}) as tracker:
        tracker.log_params(run_params(cfg, hparams, len(videos)))
        trained = train(cfg, videos, hparams, tracker, epoch_callbacks)
        data = checkpoint_bytes(
            trained.model, version=cfg.output.version, threshold=trained.threshold, decode=decode_record(cfg.decode), metrics=trained.metrics,
            calibration=trained.calibration, budget=trained.budget,
        )
        recorded = {**(trained.calibration.metrics() if trained.calibration else {}), **budget_metrics(trained.budget)}
        tracker.log_metrics({**trained.extra_metrics, **recorded, "train/threshold": trained.threshold, "train/seconds": trained.seconds})
        tracker.set_tag("vad.ray_train_path", trained.run_path)
        registered, checkpoint = register_and_write(tracker, cfg, data, trained.metrics)
    if registered is not None and not registered.promoted:
        log.warning(
            "%s version %s is registered but @%s was not moved to it: %s. Its checkpoint is %s (%s still holds the "
            "champion's). To use it anyway: vad promote %s %s",
            registered.name, registered.version, cfg.registry.alias, registered.reason, checkpoint, cfg.output.checkpoint,
            registered.name, registered.version,
        )
    result = FitResult(trained.threshold, trained.history, trained.val_scores, trained.seconds, trained.calibration)
    return TrainSummary(checkpoint, trained.clips, result, tracker.run_id, registered, trained.budget)


def register_and_write(tracker, cfg: TrainJobConfig, data: bytes, metrics: dict, camera: str | None = None) -> tuple:
    """Register the checkpoint `data` in the tracker's run (promoted on `registry.metric` from
    `metrics`), write it to `output.checkpoint` (`{camera}` filled in for a fleet's camera; beside it
    when not promoted, see `checkpoint_path`) and tag the run with where; returns (registration, path)."""
    shape = (cfg.decode.clip_len, *(cfg.decode.resize or ())) + (() if cfg.decode.grayscale else (3,))
    registered = tracker.register(data, cfg.registry, cfg.model.name, shape, metrics.get(cfg.registry.metric, float("nan")), camera)
    checkpoint = checkpoint_path(cfg.output.checkpoint.replace("{camera}", camera) if camera else cfg.output.checkpoint, registered)
    write_bytes(checkpoint, data, cfg.storage)
    tracker.set_tag("vad.checkpoint", checkpoint)
    return registered, checkpoint


def checkpoint_path(uri: str, registered) -> str:
    """`output.checkpoint` holds the champion: a model the registry did not promote is written beside
    it under its version (`v1.pt` -> `v1.v3.pt`), so scoring by path never picks it up by accident."""
    if registered is None or registered.promoted:
        return uri
    head, sep, name = uri.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    renamed = f"{stem}.v{registered.version}.{suffix}" if dot and stem else f"{name}.v{registered.version}"
    return f"{head}{sep}{renamed}"
