"""MLflow model registry: register every trained model, move the alias only to a better one, and
resolve `models:/name@alias` (or `models:/name/version`) to the checkpoint the scoring job reads."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vad.config import RegistryConfig

log = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoint.pt"


@dataclass
class Registration:
    name: str
    version: str
    promoted: bool
    champion_metric: float | None  # the metric of the champion it was compared with, if any
    reason: str = ""  # why the alias moved, or why not


def registry_name(cfg: RegistryConfig, model_name: str, camera: str | None = None) -> str:
    """`registry.model_name` or vad-<model>, e.g. vad-conv-ae; a fleet camera's own model is
    <that>.<camera>, e.g. vad-conv-ae.cam01, with its own versions and alias."""
    name = cfg.model_name or f"vad-{model_name.replace('_', '-')}"
    return f"{name}.{camera}" if camera else name


def scorer_of(model_name: str) -> str | None:
    """The scorer a model name as the scores record it stands for: a scorer's own name (a model scored by its path),
    or `registry_name`'s default naming of one (vad-conv-ae, a fleet camera's vad-conv-ae.cam01 -> conv_ae); None
    for any other name (a `registry.model_name` of the user's, a fused model)."""
    from vad.models.scorers import SCORERS

    default = model_name.partition(".")[0].removeprefix("vad-").replace("-", "_")
    return next((name for name in (model_name, default) if name in SCORERS), None)


def _signature(input_shape: tuple[int, ...]):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape), "clips")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "score")]),
    )


def register_checkpoint(
    checkpoint_bytes: bytes, cfg: RegistryConfig, model_name: str, input_shape: tuple[int, ...], metric: float, camera: str | None = None,
) -> Registration:
    """Log the checkpoint as a pyfunc model with a signature in the active run, register it, and
    point `cfg.alias` at it when it beats the current holder on `cfg.metric` (or there is none).
    A fleet camera's model is registered under its own name (`registry_name`), tagged vad.camera."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name = registry_name(cfg, model_name, camera)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / CHECKPOINT_ARTIFACT
        local.write_bytes(checkpoint_bytes)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"checkpoint": str(local)},
            signature=_signature(input_shape),
            registered_model_name=name,
            pip_requirements=["vad", "torch", "mlflow"],
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    if camera:
        client.set_model_version_tag(name, version, "vad.camera", camera)
    try:
        holder = client.get_model_version_by_alias(name, cfg.alias)
    except MlflowException:
        holder = None
    champion_metric = None
    if holder is not None:
        champion_metric = client.get_run(holder.run_id).data.metrics.get(cfg.metric)
    if np.isnan(metric):
        promoted, reason = False, f"its {cfg.metric} is undefined (no validation videos: train.val_fraction 0, or too few videos)"
    elif champion_metric is None:
        promoted, reason = True, f"no champion with a {cfg.metric} yet; its own is {metric:.6g}"
    else:
        promoted = metric < champion_metric if cfg.lower_is_better else metric > champion_metric
        compared = f"{cfg.metric} {metric:.6g} vs version {holder.version}'s {champion_metric:.6g}"
        reason = f"it beats the champion: {compared}" if promoted else f"it does not beat the champion: {compared}"
    if promoted:
        client.set_registered_model_alias(name, cfg.alias, version)
    log.info("%s version %s: @%s %s (%s)", name, version, cfg.alias, "moved to it" if promoted else "stays", reason)
    return Registration(name, version, promoted, champion_metric, reason)


def promote(name: str, version: str, alias: str, tracking_uri: str) -> str | None:
    """Point `alias` at `name` version `version` by hand (e.g. a model trained without validation);
    returns the version that held the alias before, if any."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    client.get_model_version(name, version)  # raises when there is no such version
    try:
        before = client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        before = None
    client.set_registered_model_alias(name, alias, version)
    return before


def registered_calibration(name: str, version: str, tracking_uri: str):
    """The `vad.calibration` tag of a model version (a calibration recorded after registration; fusion reads
    it before the checkpoint's), or None."""
    from mlflow.tracking import MlflowClient

    from vad.models.calibration import TAG, Calibration

    text = MlflowClient(tracking_uri).get_model_version(name, version).tags.get(TAG)
    return Calibration.from_json(text) if text else None


def set_registered_calibration(name: str, version: str, calibration, tracking_uri: str) -> None:
    """Record `calibration` on a registered model version (its checkpoint stays as it was registered)."""
    from mlflow.tracking import MlflowClient

    from vad.models.calibration import TAG

    MlflowClient(tracking_uri).set_model_version_tag(name, version, TAG, calibration.to_json())


def resolve_model_uri(uri: str, tracking_uri: str, work_dir: str) -> str:
    """`models:/name@alias` or `models:/name/version` -> a path or s3:// uri of its checkpoint."""
    return resolve_model(uri, tracking_uri, work_dir)[0]


def resolve_model(uri: str, tracking_uri: str, work_dir: str) -> tuple[str, str | None, str | None]:
    """(checkpoint location, registered name, registered version) of `models:/name@alias` or
    `models:/name/version`; a path or s3:// uri is returned as it is, with no name or version.

    The model version's own storage is used where the scoring workers can read it (a local folder or
    S3); otherwise the checkpoint is downloaded into `work_dir`. Raises `LookupError` when the
    registry has no such model or alias."""
    from mlflow.exceptions import MlflowException

    if not uri.startswith("models:/"):
        return uri, None, None
    try:
        return _resolve_registered(uri, tracking_uri, work_dir)
    except MlflowException as exc:
        raise LookupError(f"{uri}: {exc.message}") from None


def _resolve_registered(uri: str, tracking_uri: str, work_dir: str) -> tuple[str, str, str]:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    spec = uri[len("models:/") :]
    if "@" in spec:
        name, alias = spec.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, version = spec.rsplit("/", 1)
    version = str(version)
    location = client.get_model_version_download_uri(name, version).rstrip("/")
    if location.startswith("file://"):
        return str(Path(location[len("file://") :]) / "artifacts" / CHECKPOINT_ARTIFACT), name, version
    if location.startswith("s3://") or location.startswith("/"):
        return f"{location}/artifacts/{CHECKPOINT_ARTIFACT}", name, version
    target = Path(work_dir).expanduser().resolve() / "models" / name / str(version)
    if not (target / CHECKPOINT_ARTIFACT).is_file():
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder)
            shutil.copy(Path(local) / "artifacts" / CHECKPOINT_ARTIFACT, target / CHECKPOINT_ARTIFACT)
    return str(target / CHECKPOINT_ARTIFACT), name, version
