"""`vad train`: a scorer learns normal from footage on the cluster, by its kind (`LearningType`, asked once):
trained by gradient on Ray Train (`clips`), fitted in Ray Data passes (`fitting`), or weakly supervised on
labelled videos (`mil`); every learner hands back one `Trained`, whose checkpoint is written, tracked and
registered here (`register_and_write`, the fleet's cameras included)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from vad.cluster import ensure_ray
from vad.config import TrainJobConfig
from vad.io.sources import list_videos
from vad.io.storage import require_credentials, write_bytes
from vad.models.checkpoint import decode_record
from vad.models.registry import LearningType
from vad.tracking.runs import mlflow_run
from vad.training.result import Trained

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What `vad train` reports: where the checkpoint went and what the learner handed back."""

    checkpoint: str
    clips: int
    result: Trained
    mlflow_run_id: str | None = None
    registered: object | None = None  # vad.tracking.registry.Registration

    @property
    def budget(self):  # vad.results.events.Budget, when the threshold came from alerts.max_false_per_hour
        return self.result.budget


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


def _learn_from_normal(cfg: TrainJobConfig, videos: list, hparams: dict, tracker, epoch_callbacks, learn) -> Trained:
    """Trained and fitted scorers: whole videos held out, footage operators marked normal added (never held
    out), then the kind's learner (`learn`)."""
    from vad.training.feedback import feedback_footage
    from vad.training.split import split_videos, split_warning

    train_videos, val_videos = split_videos(videos, cfg.train.val_fraction)
    if warning := split_warning("normal videos", train_videos, val_videos, cfg.train.val_fraction):
        log.warning(warning)
        tracker.set_tag("vad.split_warning", warning)
    marked_normal = feedback_footage(cfg)  # events operators marked normal: trained on, never held out
    train_videos = train_videos + marked_normal
    tracker.log_params({"split.train_videos": len(train_videos), "split.val_videos": len(val_videos), "feedback.normal_events": len(marked_normal)})
    trained = learn(cfg, train_videos, val_videos, hparams, mlflow_spec=tracker.worker_spec(), epoch_callbacks=epoch_callbacks)
    log.info("trained on %d videos (%d clips), validated on %d videos (%d clips)",
             len(train_videos), trained.train_clips, len(val_videos), trained.val_clips)
    return trained


def _learner(kind: LearningType) -> Callable[..., Trained]:
    """The learner of a kind of model, asked once: each takes (cfg, videos, hparams, tracker, epoch_callbacks)."""
    from vad.training.clips import train_distributed
    from vad.training.fitting import fit_with_ray_data
    from vad.training.mil import train_mil_job

    if kind is LearningType.TRAINED:
        return functools.partial(_learn_from_normal, learn=train_distributed)
    if kind is LearningType.FITTED:
        return functools.partial(_learn_from_normal, learn=fit_with_ray_data)
    if kind is LearningType.WEAKLY_SUPERVISED:
        return lambda cfg, videos, hparams, tracker, epoch_callbacks: train_mil_job(cfg, videos, hparams, epoch_callbacks=epoch_callbacks)
    raise ValueError(f"{kind.value} models are not trained by vad train")


def model_hparams(cfg: TrainJobConfig) -> dict:
    """The scorer's builder arguments: `model.hparams`, with `decode.clip_len` where the builder takes one."""
    from vad.models.scorers import scorer_meta

    return scorer_meta(cfg.model.name).hparams_for(cfg.decode.clip_len, cfg.model.hparams)


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


def run_training(cfg: TrainJobConfig, *, epoch_callbacks: list[Callable[[dict], None]] = (), verbose: bool = False) -> TrainSummary:
    """Train, write the checkpoint to `cfg.output.checkpoint`, log and register it.

    `epoch_callbacks` run on every Ray Train worker after each epoch with its metrics (the tests use
    one to fail a worker group once)."""
    from vad.models.scorers import build_scorer, scorer_meta
    from vad.training.mil import WEAK_LABELS_NEEDED

    hparams = model_hparams(cfg)
    build_scorer(cfg.model.name, **hparams).bind_storage(cfg.storage)  # bad names, hparams or weights fail here, before any cluster work
    for uri in (cfg.output.checkpoint, cfg.distributed.storage_path or ""):
        require_credentials(uri, cfg.storage)
    kind = scorer_meta(cfg.model.name).learning_type
    if kind is LearningType.WEAKLY_SUPERVISED and not cfg.train.anomalous_regex:
        raise ValueError(WEAK_LABELS_NEEDED)
    learn = _learner(kind)
    videos = training_videos(cfg)
    log.info("training %s (%s) on %d videos with %d worker(s)", cfg.model.name, kind.value, len(videos), cfg.distributed.num_workers)
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, dashboard=True, verbose=verbose)
    if cfg.distributed.check_resources:
        check_resources(cfg)
    if cfg.distributed.num_workers > 1 and kind is LearningType.TRAINED:
        log.info("each of the %d workers takes the same number of clips: up to %d clips are left out of an epoch",
                 cfg.distributed.num_workers, cfg.distributed.num_workers - 1)
    with mlflow_run(cfg.mlflow, cfg.work_dir, cfg.run_name or f"train-{cfg.model.name}", {"vad.job": "train"}) as tracker:
        tracker.log_params(run_params(cfg, hparams, len(videos)))
        trained = learn(cfg, videos, hparams, tracker, epoch_callbacks)
        if kind is LearningType.WEAKLY_SUPERVISED:  # its Ray Train loop logs nothing itself: per epoch, as rank 0 reported them
            for row in trained.history:
                tracker.log_metric("train/loss", row["train/loss"], step=int(row["epoch"]))
        tracker.log_metrics(trained.logged_metrics())
        tracker.set_tag("vad.ray_train_path", trained.run_path)
        registered, checkpoint = register_and_write(tracker, cfg, trained)
    if registered is not None and not registered.promoted:
        log.warning(
            "%s version %s is registered but @%s was not moved to it: %s. Its checkpoint is %s (%s still holds the "
            "champion's). To use it anyway: vad promote %s %s",
            registered.name, registered.version, cfg.registry.alias, registered.reason, checkpoint, cfg.output.checkpoint,
            registered.name, registered.version,
        )
    return TrainSummary(checkpoint, trained.train_clips, trained, tracker.run_id, registered)


def register_and_write(tracker, cfg: TrainJobConfig, trained: Trained, camera: str | None = None) -> tuple:
    """Register what a learner handed back in the tracker's run (promoted on `registry.metric` from its
    metrics), write its checkpoint to `output.checkpoint` (`{camera}` filled in for a fleet's camera; beside
    it when not promoted, see `checkpoint_path`) and tag the run with where; returns (registration, path)."""
    data, metrics = trained.pack(cfg, camera), trained.metrics()
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
