"""Scorer checkpoints: a plain dict of tensors and JSON-like values.

Loaded with `torch.load(weights_only=True)`, which refuses arbitrary pickled
objects, so a checkpoint from an untrusted bucket cannot run code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field

import torch

from vad.config import StorageConfig
from vad.io.storage import read_bytes, write_bytes
from vad.models.calibration import Calibration
from vad.models.scorers import ClipScorer, build_scorer

FORMAT = "vad-checkpoint/1"


@dataclass
class LoadedScorer:
    model: ClipScorer
    name: str
    version: str
    threshold: float
    decode: dict  # clip_len, frame_step, resize, grayscale the model was trained with
    metrics: dict = field(default_factory=dict)
    model_name: str | None = None  # a fleet camera's model: its own name (e.g. vad-conv-ae.cam01)
    calibration: Calibration | None = None  # held-out normal frame-score statistics; None: trained before they were recorded
    alert_budget: dict | None = None  # the threshold's false-alarm budget, when it came from one (max_false_per_hour, held_out_hours, ...)
    recorded_digest: str = field(default="", repr=False)  # the checkpoint's `weights_digest`; "" in checkpoints written before it

    @property
    def weights_digest(self) -> str:
        """sha256 of the weights (`weights_digest`): what the model computes, whatever its file or version say. Computed
        for older checkpoints only when asked (the driver's routing does; scoring actors never do)."""
        if not self.recorded_digest:
            self.recorded_digest = weights_digest(self.model.state_dict())
        return self.recorded_digest

    @property
    def identity_version(self) -> str:
        return identity_version(self.version, self.weights_digest)


def identity_version(version: str, digest: str) -> str:
    """The version rows record for a model known by its location (a path or s3:// checkpoint, not the
    registry): its version and the first 8 hex digits of its weights' digest, so weights retrained under the
    same `output.version` are a new model to the manifest (re-scored), and unchanged weights the same one."""
    return f"{version}+{digest[:8]}" if digest else version


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the state dict's names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_bytes(
    model: ClipScorer, *, version: str, threshold: float, decode: dict, metrics: dict | None = None, model_name: str | None = None,
    calibration: Calibration | None = None, budget=None,
) -> bytes:
    """A checkpoint as bytes: a plain dict of tensors and JSON-like values (see the module doc).
    `model_name` names a model among others of the same scorer (a fleet camera's); `calibration` puts its
    frame scores on the scale fusion shares."""
    payload = {
        "format": FORMAT,
        "scorer": model.name,
        **({"model_name": model_name} if model_name else {}),
        "version": version,
        "hparams": model.hparams(),
        "threshold": float(threshold),
        "decode": decode,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        **({"calibration": calibration.to_dict()} if calibration is not None else {}),
        # the threshold's false-alarm budget (`vad.results.events.Budget`) and the held-out hours it was measured on
        **({"alert_budget": budget.to_dict()} if budget is not None else {}),
        "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    payload["weights_digest"] = weights_digest(payload["state_dict"])
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(
    uri: str,
    model: ClipScorer,
    *,
    version: str,
    threshold: float,
    decode: dict,
    metrics: dict | None = None,
    storage: StorageConfig | None = None,
    calibration: Calibration | None = None,
) -> None:
    data = checkpoint_bytes(model, version=version, threshold=threshold, decode=decode, metrics=metrics, calibration=calibration)
    write_bytes(uri, data, storage)


@dataclass(frozen=True)
class CheckpointRecord:
    """What a checkpoint says about its model, read without building it."""

    scorer: str
    version: str
    threshold: float
    model_name: str | None
    calibration: Calibration | None
    weights_digest: str = ""

    @property
    def identity_version(self) -> str:
        return identity_version(self.version, self.weights_digest)


def read_checkpoint_record(uri: str, storage: StorageConfig | None = None) -> CheckpointRecord:
    """The record of the checkpoint at `uri` (a path or s3:// uri), loaded `weights_only`."""
    payload = _payload(uri, storage)
    return CheckpointRecord(payload["scorer"], str(payload["version"]), float(payload["threshold"]), payload.get("model_name"),
                            _calibration(payload), payload.get("weights_digest") or weights_digest(payload["state_dict"]))


def add_calibration(uri: str, calibration: Calibration, storage: StorageConfig | None = None) -> None:
    """Record `calibration` in the checkpoint at `uri` (rewritten whole, atomically; the model, its version and
    everything else unchanged): for models trained before calibrations were recorded."""
    payload = _payload(uri, storage)
    payload["calibration"] = calibration.to_dict()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(uri, buffer.getvalue(), storage)


def _payload(uri: str, storage: StorageConfig | None, map_location: str = "cpu") -> dict:
    try:
        data = read_bytes(uri, storage)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {uri!r} not found") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a checkpoint we accept"
        raise ValueError(f"{uri}: not a loadable vad checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{uri}: not a vad checkpoint (expected format {FORMAT!r})")
    return payload


def _calibration(payload: dict) -> Calibration | None:
    """A checkpoint's calibration; None in checkpoints written before calibrations were recorded."""
    return Calibration.from_dict(payload["calibration"]) if payload.get("calibration") else None


def load_checkpoint(uri: str, storage: StorageConfig | None = None, map_location: str = "cpu") -> LoadedScorer:
    payload = _payload(uri, storage, map_location)
    model = build_scorer(payload["scorer"], **payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    model.bind_storage(storage)  # what it reads besides the checkpoint (a detector's weights), checked now
    model.eval()
    return LoadedScorer(
        model=model,
        name=payload["scorer"],
        version=payload["version"],
        threshold=payload["threshold"],
        decode=payload["decode"],
        metrics=payload.get("metrics", {}),
        model_name=payload.get("model_name"),
        calibration=_calibration(payload),
        alert_budget=payload.get("alert_budget"),
        recorded_digest=payload.get("weights_digest", ""),
    )


def check_decode_matches(loaded: LoadedScorer, decode) -> None:
    """The job must cut clips the way the model was trained on them."""
    expected, actual = loaded.decode, decode_record(decode)
    wrong = [f"decode.{k}: model wants {expected[k]!r}, job has {actual[k]!r}" for k in actual if k in expected and expected[k] != actual[k]]
    if wrong:
        raise ValueError(f"checkpoint {loaded.name} {loaded.version} does not match the job's decoding:\n  " + "\n  ".join(wrong))


def decode_record(decode) -> dict:
    """What a model was trained on (and so the job must cut clips as): stored in its checkpoint."""
    return {
        "clip_len": decode.clip_len,
        "frame_step": decode.frame_step,
        "resize": list(decode.resize) if decode.resize is not None else None,
        "grayscale": decode.grayscale,
    }
