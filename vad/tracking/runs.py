"""MLflow tracking with a local sqlite backend by default.

A job logs through a `Tracker` (an active MLflow run) or, with `mlflow.enabled: false`, a
`NullTracker` that accepts the same calls and records nothing, so jobs need no `if tracking` branches.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

from vad.config import MlflowConfig

log = logging.getLogger(__name__)


def local_store(work_dir: str) -> Path:
    """The sqlite file of a work folder's own MLflow store (what `tracking_uri` names when none is configured)."""
    return Path(work_dir).expanduser().resolve() / "mlflow.db"


def tracking_uri(cfg: MlflowConfig, work_dir: str) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    store = local_store(work_dir)
    store.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store}"


def _experiment_id(mlflow, name: str, work_dir: str) -> str:
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifacts = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        artifacts = (Path(work_dir).expanduser().resolve() / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifacts)


class NullTracker:
    """Tracking switched off: every call is accepted and nothing is recorded."""

    run_id: str | None = None

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        pass

    def set_tag(self, key: str, value) -> None:
        pass

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    @contextlib.contextmanager
    def child(self, run_name: str, tags: dict):
        """A run nested in this one (a fleet's camera): yields its tracker."""
        yield NullTracker()

    def worker_spec(self) -> dict | None:
        """What a Ray worker needs to log into this run (`EpochLogger.from_spec`); None: nothing."""
        return None

    def register(self, checkpoint: bytes, registry, model_name: str, input_shape: tuple[int, ...], metric: float, camera: str | None = None):
        """Register a checkpoint in the model registry (`vad.tracking.registry`); None when not tracking."""
        return None


class Tracker(NullTracker):
    """The active MLflow run of a job."""

    def __init__(self, mlflow):
        self._mlflow = mlflow
        self.run_id = mlflow.active_run().info.run_id

    def log_params(self, params: dict) -> None:
        self._mlflow.log_params(params)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self._mlflow.log_metrics(metrics, step=step)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._mlflow.log_metric(key, value, step=step)

    def set_tag(self, key: str, value) -> None:
        self._mlflow.set_tag(key, value)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(path, artifact_path=artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    @contextlib.contextmanager
    def child(self, run_name: str, tags: dict):
        experiment_id = self._mlflow.active_run().info.experiment_id  # the parent's, not the default experiment
        with self._mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=True, tags=tags):
            yield Tracker(self._mlflow)

    def worker_spec(self) -> dict:
        return {"tracking_uri": self._mlflow.get_tracking_uri(), "run_id": self.run_id}

    def register(self, checkpoint: bytes, registry, model_name: str, input_shape: tuple[int, ...], metric: float, camera: str | None = None):
        from vad.tracking.registry import register_checkpoint

        if not registry.enabled:
            return None
        return register_checkpoint(checkpoint, registry, model_name, input_shape, metric, camera)


@contextlib.contextmanager
def mlflow_run(cfg: MlflowConfig, work_dir: str, run_name: str | None = None, tags: dict | None = None):
    """Yields a `Tracker` inside an active MLflow run, or a `NullTracker` when tracking is disabled."""
    if not cfg.enabled:
        yield NullTracker()
        return
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    mlflow.config.enable_async_logging(False)  # every metric is in the store when the job returns
    mlflow.set_tracking_uri(tracking_uri(cfg, work_dir))
    experiment_id = _experiment_id(mlflow, cfg.experiment, work_dir)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {}):
        yield Tracker(mlflow)


class EpochLogger:
    """Per-epoch metrics logged from a Ray Train worker into the driver's run, by run id (so no
    active-run state is needed there); built from `Tracker.worker_spec`, silent without one."""

    def __init__(self, client=None, run_id: str | None = None):
        self.client, self.run_id = client, run_id

    @classmethod
    def from_spec(cls, spec: dict | None) -> "EpochLogger":
        if not spec:
            return cls()
        from mlflow.tracking import MlflowClient

        return cls(MlflowClient(spec["tracking_uri"]), spec["run_id"])

    def log(self, metrics: dict, step: int) -> None:
        if self.client is None:
            return
        for key, value in metrics.items():
            if key != "epoch" and not math.isnan(value):
                self.client.log_metric(self.run_id, key, float(value), step=step)
