"""MLflow tracking with a local sqlite backend by default."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from vad.config import MlflowConfig

log = logging.getLogger(__name__)


def tracking_uri(cfg: MlflowConfig, work_dir: str) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    root = Path(work_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _experiment_id(mlflow, name: str, work_dir: str) -> str:
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifacts = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        artifacts = (Path(work_dir).expanduser().resolve() / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifacts)


@contextlib.contextmanager
def mlflow_run(cfg: MlflowConfig, work_dir: str, run_name: str | None = None, tags: dict | None = None):
    """Yields the mlflow module inside an active run, or None when tracking is disabled."""
    if not cfg.enabled:
        yield None
        return
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg, work_dir))
    experiment_id = _experiment_id(mlflow, cfg.experiment, work_dir)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {}):
        yield mlflow
