"""`vad calibrate`: a calibration (`vad.models.calibration`) for models trained before they were recorded.

The job's model (one checkpoint, or a fleet's per camera) scores held-out normal videos exactly as the
nightly job would, into a scratch results folder under the work folder; each model's frame scores give its
calibration, recorded where fusion reads it: a registered model version's `vad.calibration` tag (its
checkpoint stays as registered), else in the checkpoint itself (rewritten whole, the version unchanged)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vad.config import MlflowConfig, OutputConfig, ReportConfig, ScoreJobConfig
from vad.models.calibration import Calibration

log = logging.getLogger(__name__)


@dataclass
class Calibrated:
    name: str
    version: str
    calibration: Calibration
    recorded_in: str  # "registry tag" or the checkpoint's uri

    def row(self) -> dict:
        c = self.calibration
        return {"model": self.name, "version": self.version, "frames": c.frames, "low": c.low, "high": c.high,
                "median": c.median, "recorded_in": self.recorded_in}


def run_calibration(cfg: ScoreJobConfig, source_uri: str, *, verbose: bool = False) -> list[Calibrated]:
    """Score the held-out normal videos under `source_uri` with `cfg`'s model(s) and record each one's calibration."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from vad.models.checkpoint import add_calibration
    from vad.results.sql import run_query
    from vad.scoring.job import execute, plan_run
    from vad.tracking.registry import set_registered_calibration
    from vad.tracking.runs import tracking_uri

    tracking = tracking_uri(cfg.mlflow, cfg.work_dir)
    scratch = Path(cfg.work_dir).expanduser().resolve() / "calibrate" / uuid.uuid4().hex[:12]
    job = cfg.model_copy(update={
        "source": cfg.source.model_copy(update={"uri": source_uri}), "output": OutputConfig(uri=str(scratch)),
        "mlflow": MlflowConfig(enabled=False, tracking_uri=tracking), "report": ReportConfig(enabled=False),
        "run": cfg.run.model_copy(update={"incremental": False}),
    })
    plan = plan_run(job)
    if not plan.todo:
        raise ValueError(f"no videos to calibrate on under {source_uri} (held-out normal footage of the model's cameras)")
    summary = execute(job, plan, time.perf_counter(), verbose=verbose)
    if not summary.files:
        raise ValueError(f"none of the {len(plan.todo)} videos under {source_uri} could be scored: see {scratch}/errors")
    _, rows = run_query(str(scratch), "SELECT model_name, model_version, flatten(list(frame_scores)) FROM scores GROUP BY ALL ORDER BY ALL")
    client = MlflowClient(tracking)
    out = []
    for name, version, frames in rows:
        route = next(r for r in plan.routing.routes if (r.name, r.version) == (name, version))
        calibration = Calibration.from_frame_scores(np.asarray(frames, dtype=np.float64), f"held-out normal videos under {source_uri}")
        try:
            client.get_model_version(name, version)
            registered = True
        except MlflowException:
            registered = False
        if registered:
            set_registered_calibration(name, version, calibration, tracking)
            out.append(Calibrated(name, version, calibration, "registry tag"))
        else:
            add_calibration(route.checkpoint, calibration, cfg.storage)
            out.append(Calibrated(name, version, calibration, route.checkpoint))
        log.info("%s version %s: calibrated on %d frames (min %.4g, 99.9th percentile %.4g), recorded in %s",
                 name, version, calibration.frames, calibration.low, calibration.high, out[-1].recorded_in)
    return out
