"""Job configuration: one YAML file per job, validated on load.

Every section rejects unknown keys, so a typo fails loudly with the path of the
bad key and, where one is close, the key that was probably meant.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A job configuration that cannot be used, with every problem listed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Section):
    """How to reach object storage. Credentials default to the standard AWS chain."""

    endpoint_url: str | None = Field(None, description="S3 endpoint, e.g. http://127.0.0.1:9000 for MinIO")
    region: str = Field("us-east-1", description="S3 region (MinIO accepts any)")
    access_key_id: SecretStr | None = Field(None, description="null = the AWS credential chain (env, profile, instance role); never logged")
    secret_access_key: SecretStr | None = Field(None, description="given together with access_key_id; never logged")
    retries: int = Field(5, ge=0, le=50, description="retries per request, exponential backoff; whole-object reads are retried too")
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to open a connection to the store")
    request_timeout_s: float = Field(60.0, gt=0, description="seconds one request may take")

    @model_validator(mode="after")
    def _keys_come_in_pairs(self) -> "StorageConfig":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be given together (or neither)")
        return self


DEFAULT_KEY_PATTERN = r"(?:^|/)(?P<camera>[^/]+)/(?P<date>\d{4}-?\d{2}-?\d{2})/[^/]+$"


class SourceConfig(_Section):
    """Where the videos are and how camera id and date are read from each key."""

    uri: str = Field(..., description="s3://bucket/prefix or a local folder")
    video_extensions: tuple[str, ...] = Field(
        (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".ts"), description="objects with these endings are videos"
    )
    frame_extensions: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"), description="a folder of files with these endings is one video, frames in name order"
    )
    key_pattern: str = Field(
        DEFAULT_KEY_PATTERN,
        description="regex searched in each object's full path (bucket/key or absolute path), optional groups 'camera' and 'date'",
    )
    default_camera: str = Field("default", description="camera id of objects whose path has none")
    include: tuple[str, ...] = Field(
        (), description="glob patterns on the key under uri (* also matches '/'); only matching objects are considered; empty = all"
    )
    exclude: tuple[str, ...] = Field((), description="glob patterns on the key under uri; matching objects are not considered")
    min_frames_per_folder: int = Field(1, ge=1, description="frame folders with fewer images are skipped")

    @field_validator("key_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class DecodeConfig(_Section):
    """How clips are cut from each video."""

    clip_len: int = Field(16, ge=1, le=512, description="frames per clip (must match the model)")
    stride: int = Field(16, ge=1, description="frames between the starts of consecutive clips")
    frame_step: int = Field(1, ge=1, description="take every n-th frame inside a clip")
    resize: tuple[int, int] | None = Field((128, 128), description="(height, width) or null to keep")
    grayscale: bool = Field(True, description="false = RGB clips (the MIL backbones need them)")
    clips_per_batch: int = Field(8, ge=1, description="clips a decode task hands on at a time")
    num_cpus: float = Field(1.0, gt=0, description="CPUs of each decode task on GPU clusters (without GPUs the scoring actors decode)")
    max_in_memory_mb: int = Field(
        256, ge=0, description="objects larger than this are spooled to a local temp file instead of RAM"
    )
    backend: Literal["decord", "pyav"] = Field(
        "decord", description="decord (the default) or pyav (FFmpeg through PyAV); see bench/throughput.py"
    )
    threads: int = Field(1, ge=1, le=64, description="decoder threads per decode task (keep at num_cpus)")
    split_mb: float | None = Field(
        256.0, gt=0,
        description="video objects larger than this are decoded by several tasks, each cutting a contiguous "
        "share of the clips (each task reads the whole object); null = one task per video",
    )


class ScorerConfig(_Section):
    name: str | None = Field(
        None, description="the scorer the checkpoint must hold (e.g. conv_ae); the job refuses another; null = any"
    )
    checkpoint: str = Field(..., description="path or s3:// uri of a checkpoint written by `vad train`")
    batch_size: int = Field(16, ge=1, description="clips per scoring call")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when the actor has a GPU")
    concurrency: int = Field(1, ge=1, description="scoring actors")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved by each scoring actor")
    num_gpus: float | None = Field(None, ge=0, description="per actor; null = 1 when the cluster has GPUs")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on CUDA, fp32 on CPU")
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="conv weights in channels-last (3D) layout; auto = channels_last (faster on CUDA and on CPU)"
    )
    compile: bool = Field(False, description="torch.compile the scoring function once per actor (worth it on GPU for long runs)")
    cameras: dict[str, str] = Field(
        default_factory=dict, description="fleet: camera id -> checkpoint (path, s3:// or models:/ uri); wins over a {camera} template"
    )
    fallback: str | None = Field(
        None, description="fleet: checkpoint for cameras without a model of their own (rows say fallback); null = such cameras are errors"
    )
    max_models: int = Field(8, ge=1, description="fleet: models each scoring actor keeps loaded (least recently used dropped first)")
    max_model_mb: float = Field(2048.0, gt=0, description="fleet: weights each scoring actor keeps loaded, in MB (the newest is always kept)")

    @property
    def per_camera(self) -> bool:
        """A fleet: each camera's videos are scored by the camera's own model."""
        return "{camera}" in self.checkpoint or bool(self.cameras)

    @model_validator(mode="after")
    def _fallback_needs_a_fleet(self) -> "ScorerConfig":
        if self.fallback and not self.per_camera:
            raise ValueError("scorer.fallback is for fleets: put {camera} in scorer.checkpoint or list scorer.cameras")
        return self


class OutputConfig(_Section):
    uri: str = Field(..., description="results root (local folder or s3://bucket/prefix); one scores file per video")
    writers: int = Field(
        1, ge=1, le=64, description="writer actors; each video goes to one (whole-video writes); more for GPU fleets, see bench/fleet.py"
    )


class RunPolicyConfig(_Section):
    """How a nightly run treats bad input, earlier runs and failures."""

    max_failure_rate: float = Field(
        0.05, ge=0, le=1, description="the job exits non-zero when more than this fraction of objects ends in the errors table"
    )
    incremental: bool = Field(True, description="skip objects the manifest says this model already scored, unchanged")
    retry_passes: int = Field(
        1, ge=0, description="extra passes over videos left incomplete by lost workers before they are recorded as errors"
    )
    manifest_flush_s: float = Field(30.0, gt=0, description="at most this much finished work is redone after a killed run")


class MlflowConfig(_Section):
    tracking_uri: str | None = Field(None, description="null = sqlite file in the work folder")
    experiment: str = Field("vad-nightly", description="MLflow experiment of the runs")
    enabled: bool = Field(True, description="false = no MLflow run (results still go to Parquet)")


class RayConfig(_Section):
    address: str | None = Field(None, description="null = start or join a local Ray; \"auto\" inside a cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray started by the job; null = all")


class ReportConfig(_Section):
    enabled: bool = Field(False, description="write the night's review page (as vad report does) when the run ends; logged to its MLflow run")
    top_k: int = Field(12, ge=0, description="flagged clips shown with previews, highest score first")
    out_dir: str | None = Field(None, description="folder of the pages; null = <work_dir>/reports")
    concurrency: int = Field(2, ge=1, description="Ray tasks cutting previews at once")


class _JobConfig(_Section):
    """What every job has: footage, how to reach it and cut it, and where it tracks its runs."""

    source: SourceConfig
    decode: DecodeConfig = DecodeConfig()
    storage: StorageConfig = StorageConfig()
    mlflow: MlflowConfig = MlflowConfig()


class AlertsConfig(_Section):
    """How flagged clips become events, what a person reviews."""

    merge_gap_s: float = Field(2.0, ge=0, description="flagged clips of a video at most this many seconds apart are one event")


class ScoreJobConfig(_JobConfig):
    output: OutputConfig
    scorer: ScorerConfig
    ray: RayConfig = RayConfig()
    run: RunPolicyConfig = RunPolicyConfig()
    report: ReportConfig = ReportConfig()
    alerts: AlertsConfig = AlertsConfig()
    run_name: str | None = Field(None, description="MLflow run name; null = score-<date>")
    work_dir: str = Field("vad-work", description="local folder for the MLflow db and temp files")


class FusionMemberConfig(_Section):
    """One model of a fused model."""

    model: str = Field(
        ..., description="its model: models:/name@alias, a checkpoint path or s3:// uri; {camera} is filled in per camera (a fleet's)"
    )
    weight: float = Field(1.0, gt=0, description="its calibrated score is multiplied by this before the rule")
    label: str | None = Field(None, description="short name in the fused model's name and reasons; null = its scorer (pred, objects, ...)")


class FusionConfig(_Section):
    """A fused model: members' scores of the same videos, each on its held-out normal scale, combined by frame."""

    name: str | None = Field(None, description="the fused model's name in the tables; null = fusion(<labels>), e.g. fusion(pred,objects)")
    members: list[FusionMemberConfig] = Field(..., min_length=2, description="the first member's clips are the fused rows' clips")
    rule: Literal["sum", "max"] = Field("sum", description="sum = add the members' calibrated scores; max = the largest")
    threshold_quantile: float = Field(
        0.999, ge=0.5, le=0.9999,
        description="the fused threshold: fused frame scores of held-out normal footage exceed it at most 1 - this of the time "
        "(bounded from the members' recorded calibrations)",
    )
    cameras: tuple[str, ...] = Field((), description="fuse only these cameras; empty = every camera a member has scored")
    dates: tuple[str, ...] = Field((), description="fuse only these nights (YYYY-MM-DD); empty = every night")
    workers: int = Field(8, ge=1, le=64, description="videos read, fused and written at once (threads on the driver)")

    @model_validator(mode="after")
    def _labels_differ(self) -> "FusionConfig":
        labels = [m.label for m in self.members if m.label]
        if len(set(labels)) < len(labels):
            raise ValueError(f"fusion.members: labels must differ, got {labels}")
        return self


class FuseJobConfig(_Section):
    """`vad fuse`: the fused model's rows from its members' rows of the same results root."""

    output: OutputConfig
    fusion: FusionConfig
    storage: StorageConfig = StorageConfig()
    mlflow: MlflowConfig = MlflowConfig()
    run: RunPolicyConfig = RunPolicyConfig()
    report: ReportConfig = ReportConfig()
    alerts: AlertsConfig = AlertsConfig()
    ray: RayConfig = RayConfig()
    run_name: str | None = Field(None, description="MLflow run name; null = fuse-<date>")
    work_dir: str = Field("vad-work", description="local folder for the MLflow db and temp files")


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(sorted(allowed))})"
        return f"{loc}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{loc}: required key is missing"
    return f"{loc}: {error['msg']} (got {error.get('input')!r})"


def _allowed_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in path:
        field = current.model_fields.get(str(part)) if isinstance(current, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        current = field.annotation
    return list(current.model_fields)


def parse_config(data: Any, model: type[BaseModel], origin: str = "<config>") -> Any:
    """Validate a mapping against a config model; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err, model) for err in exc.errors()]
        raise ConfigError(f"{origin}: invalid configuration\n  " + "\n  ".join(lines)) from None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path, model: type[BaseModel] = ScoreJobConfig, overrides: dict | None = None) -> Any:
    """Read a YAML job file, apply dotted-key overrides, and validate it."""
    data = _read_yaml(Path(path))
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return parse_config(data, model, str(path))


def load_storage(path: str | Path) -> StorageConfig:
    """The `storage` section of a job YAML file (score or train), for commands that only read results."""
    data = _read_yaml(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return parse_config(data.get("storage") or {}, StorageConfig, f"{path} (storage)")


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{part}' is not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` with the value read as YAML (so numbers, booleans and null work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


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
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved by each training worker")
    gpus_per_worker: float = Field(1.0, gt=0, description="with use_gpu")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest Ray Train checkpoints kept")
    max_failures: int = Field(2, ge=-1, description="restarts of the worker group from the last checkpoint; -1 = unlimited")
    storage_path: str | None = Field(
        None, description="where Ray Train keeps run state and checkpoints; null = <work_dir>/ray-train (use s3:// or shared storage on clusters)"
    )
    ray_address: str | None = Field(None, description="null = start or join a local Ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray started by the job")
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

    @model_validator(mode="after")
    def _fleet_checkpoints_name_the_camera(self) -> "TrainJobConfig":
        if self.train.per_camera and "{camera}" not in self.output.checkpoint:
            raise ValueError("train.per_camera needs {camera} in output.checkpoint, e.g. s3://models/conv_ae/{camera}.pt")
        if self.train.per_camera and self.model.name == "mil":
            raise ValueError("train.per_camera trains clip scorers on normal footage; mil needs labelled footage")
        return self
