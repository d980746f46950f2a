"""What every job's configuration shares: the section base (unknown keys refused), how to reach object
storage, where the footage is and how clips are cut from it, MLflow, Ray and how events are cut."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


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


class MlflowConfig(_Section):
    tracking_uri: str | None = Field(None, description="null = sqlite file in the work folder")
    experiment: str = Field("vad-nightly", description="MLflow experiment of the runs")
    enabled: bool = Field(True, description="false = no MLflow run (results still go to Parquet)")


class RayConfig(_Section):
    address: str | None = Field(None, description="null = start or join a local Ray; \"auto\" inside a cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray started by the job; null = all")


class AlertsConfig(_Section):
    """How flagged clips become events, what a person reviews."""

    merge_gap_s: float = Field(2.0, ge=0, description="flagged clips of a video at most this many seconds apart are one event")


class _Tracked(_Section):
    """What every job has: how to reach storage, where it tracks its runs, its local folder."""

    storage: StorageConfig = StorageConfig()
    mlflow: MlflowConfig = MlflowConfig()
    ray: RayConfig = RayConfig()
    run_name: str | None = Field(None, description="MLflow run name; null = <job>-<date>")
    work_dir: str = Field("vad-work", description="local folder for the MLflow db and temp files")


class _JobConfig(_Tracked):
    """A job that reads footage: where it is and how clips are cut from it."""

    source: SourceConfig
    decode: DecodeConfig = DecodeConfig()
