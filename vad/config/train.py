"""`vad train`: the model, the training loop, Ray Train's workers, the registry, the threshold's budget."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from vad.config.common import DecodeConfig, MlflowConfig, _JobConfig, _Section

log = logging.getLogger(__name__)


class TrainModelConfig(_Section):
    name: str = Field("conv_ae", description="a registered scorer: conv_ae, st_ae, pred, vgg_ae or mil")
    hparams: dict[str, Any] = Field(default_factory=dict, description="builder keyword arguments")
    backbone_weights: str | None = Field(
        None, description="mil: state dict of the feature extractor (c3d.pickle layout, or vad.models.backbones.i3d_convert output); null = random init"
    )


class TrainLoopConfig(_Section):
    epochs: int = Field(10, ge=1, description="passes over the training clips")
    batch_size: int = Field(16, ge=1, description="clips per step and worker (mil: bag pairs per step)")
    lr: float = Field(1e-3, gt=0, description="learning rate (Adam; Adagrad for mil)")
    weight_decay: float = Field(1e-5, ge=0, description="L2 weight decay in the optimiser")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the videos held out for val/loss and the threshold (whole videos)")
    threshold_quantile: float = Field(0.99, gt=0, le=1, description="the anomaly threshold is this quantile of held-out normal clip scores")
    key_regex: str | None = Field(None, description="train only on videos whose key matches")
    anomalous_regex: str | None = Field(
        None, description="mil: weak video-level labels; videos whose key matches are anomalous, the others normal"
    )
    steps_per_epoch: int = Field(25, ge=1, description="mil: optimiser steps per epoch (batch_size bag pairs each)")
    shuffle_buffer_clips: int = Field(1024, ge=1, description="clips each worker shuffles among (a local shuffle buffer)")
    max_clips: int | None = Field(None, ge=1, description="train on at most this many clips; null = all")
    seed: int = Field(0, description="seeds the initial weights and the clip order")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="mil feature extraction device; training follows distributed.use_gpu")
    per_camera: bool = Field(
        False, description="fleet: one model per camera (source.key_pattern), trained in parallel; output.checkpoint needs {camera}"
    )
    min_camera_clips: int = Field(32, ge=1, description="fleet: a camera with fewer training clips is skipped (said in the summary)")
    use_feedback: bool = Field(
        False, description="add the footage of events operators marked normal (vad feedback) to each camera's normal training set"
    )
    feedback_results: str | None = Field(None, description="with use_feedback: the results root holding the feedback table (folder or s3:// uri)")
    init_from: str | None = Field(
        None, description="fleet, trained scorers: start each camera's model from this checkpoint ({camera} filled in; a path or s3:// "
        "uri) instead of fresh weights: a refit with feedback fine-tunes the camera's model rather than replacing it",
    )
    feedback_repeat: int | None = Field(
        None, ge=1, le=100, description="with use_feedback: times each dismissed event's clips are added; null = 16 for fitted scorers "
        "(a density needs mass where a handful of objects were; README) and 4 for trained ones",
    )

    @model_validator(mode="after")
    def _feedback_needs_results(self) -> "TrainLoopConfig":
        if self.use_feedback and not self.feedback_results:
            raise ValueError("train.use_feedback needs train.feedback_results: the results root whose feedback table to read")
        return self


class DistributedConfig(_Section):
    """How Ray Train runs the training loop (`vad.training.ray_train`)."""

    num_workers: int = Field(1, ge=1, description="training workers (DDP ranks)")
    use_gpu: bool = Field(False, description="CUDA workers with bf16 autocast")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved by each training worker (and each fleet camera's task)")
    gpus_per_worker: float = Field(1.0, gt=0, description="with use_gpu")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest Ray Train checkpoints kept")
    max_failures: int = Field(2, ge=-1, description="restarts of the worker group from the last checkpoint; -1 = unlimited")
    storage_path: str | None = Field(
        None, description="where Ray Train keeps run state and checkpoints; null = <work_dir>/ray-train (use s3:// or shared storage on clusters)"
    )
    check_resources: bool = Field(
        True, description="refuse to start when the cluster lacks the CPUs/GPUs of the workers plus one decode task "
        "(false for autoscaling clusters that add nodes on demand)",
    )


class RegistryConfig(_Section):
    """MLflow model registry: every trained model is registered; the alias moves only to a better one."""

    enabled: bool = Field(True, description="register every trained model in MLflow")
    model_name: str | None = Field(
        None, description="null = vad-<model name>, e.g. vad-conv-ae; fleets: one registered model per camera, <name>.<camera>"
    )
    alias: str = Field("champion", description="the alias scoring jobs use (models:/name@alias); moved only to a better model")
    metric: str = Field("val/loss", description="validation metric that decides promotion (never test data)")
    lower_is_better: bool = Field(True, description="direction of the metric")


class TrainAlertsConfig(_Section):
    """A threshold from a false-alarm budget instead of a quantile."""

    max_false_per_hour: float | None = Field(
        None, gt=0,
        description="null = the threshold is train.threshold_quantile's; a number = the threshold at which the held-out normal "
        "videos raise at most this many events per hour (per camera in a fleet)",
    )
    merge_gap_s: float = Field(2.0, ge=0, description="how events are counted: as the scoring job's alerts.merge_gap_s (keep them equal)")
    min_held_out_hours: float = Field(1.0, gt=0, description="less held-out normal footage than this: the budget threshold is set with a warning")


class TrainOutputConfig(_Section):
    checkpoint: str = Field(..., description="where to write the checkpoint (path or s3:// uri)")
    version: str = Field("1", description="model version recorded in every score row")


DEPRECATED_KEYS = {"ray_address": "address", "num_cpus": "num_cpus"}  # distributed.<old> -> ray.<new>


class TrainJobConfig(_JobConfig):
    output: TrainOutputConfig
    model: TrainModelConfig = TrainModelConfig()
    train: TrainLoopConfig = TrainLoopConfig()
    distributed: DistributedConfig = DistributedConfig()
    registry: RegistryConfig = RegistryConfig()
    alerts: TrainAlertsConfig = TrainAlertsConfig()
    decode: DecodeConfig = DecodeConfig(stride=4)
    mlflow: MlflowConfig = MlflowConfig(experiment="vad-train")
    run_name: str | None = Field(None, description="Ray Train run name; naming an unfinished run again resumes it; null = a fresh one")
    work_dir: str = Field("vad-work", description="local folder for the MLflow db, Ray Train state and temp files")

    @model_validator(mode="before")
    @classmethod
    def _ray_address_moved(cls, data: Any) -> Any:
        """`distributed.ray_address` and `distributed.num_cpus` are now `ray.address` and `ray.num_cpus`, as in
        the scoring job: the old keys are read, with a one-line deprecation message."""
        distributed = data.get("distributed") if isinstance(data, dict) else None
        if not isinstance(distributed, dict) or not set(distributed) & set(DEPRECATED_KEYS):
            return data
        distributed, ray = dict(distributed), dict(data.get("ray") or {})
        for old, new in DEPRECATED_KEYS.items():
            if old in distributed:
                value = distributed.pop(old)
                if new in ray and ray[new] != value:
                    raise ValueError(f"distributed.{old} (deprecated) and ray.{new} disagree: keep ray.{new} only")
                ray[new] = value
                log.warning("distributed.%s is deprecated: use ray.%s (the same key as the scoring job's)", old, new)
        return {**data, "distributed": distributed, "ray": ray}

    @model_validator(mode="after")
    def _fleet_checkpoints_name_the_camera(self) -> "TrainJobConfig":
        if self.train.per_camera and "{camera}" not in self.output.checkpoint:
            raise ValueError("train.per_camera needs {camera} in output.checkpoint, e.g. s3://models/conv_ae/{camera}.pt")
        if self.train.per_camera and self.model.name == "mil":
            raise ValueError("train.per_camera trains clip scorers on normal footage; mil needs labelled footage")
        return self
