"""`vad score` (and what `vad fuse` shares with it: results, run policy, the report)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vad.config.common import AlertsConfig, _JobConfig, _Section, _Tracked


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


class ReportConfig(_Section):
    enabled: bool = Field(False, description="write the night's review page (as vad report does) when the run ends; logged to its MLflow run")
    top_k: int = Field(12, ge=0, description="flagged clips shown with previews, highest score first")
    out_dir: str | None = Field(None, description="folder of the pages; null = <work_dir>/reports")
    concurrency: int = Field(2, ge=1, description="Ray tasks cutting previews at once")


class _NightlyConfig(_Tracked):
    """A job that writes a night's results: its policy on failures, its review page, how events are cut."""

    run: RunPolicyConfig = RunPolicyConfig()
    report: ReportConfig = ReportConfig()
    alerts: AlertsConfig = AlertsConfig()


class ScoreJobConfig(_JobConfig, _NightlyConfig):
    output: OutputConfig
    scorer: ScorerConfig
    run_name: str | None = Field(None, description="MLflow run name; null = score-<date>")
