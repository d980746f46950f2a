"""`Trained`: what every learner hands back, whatever the model's kind (trained by gradient, fitted in one
pass, weakly supervised) and wherever it ran (Ray Train, Ray Data passes, a fleet camera's task, this
process): the model, its threshold and calibration, its history and figures. `vad.training.job` writes,
logs and registers it the same way for each (`register_and_write`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NAN = float("nan")


@dataclass
class Trained:
    model: Any  # the scorer with its final weights, on CPU (None where only the packed checkpoint travels: a fleet camera's)
    threshold: float
    history: list[dict] = field(default_factory=list)  # one row per epoch (a fit: one row)
    val_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the held-out normal clips' scores the threshold came from
    calibration: Any = None  # vad.models.calibration.Calibration of those clips' frame scores
    budget: Any = None  # vad.results.events.Budget, when the threshold came from alerts.max_false_per_hour
    feedback_floor: float | None = None  # the threshold was raised above the clips operators dismissed (fleets)
    train_clips: int = 0
    val_clips: int = 0
    seconds: float = 0.0
    run_path: str = ""  # Ray Train's run folder, when trained on Ray Train
    val_metrics: dict = field(default_factory=dict)  # held-out figures a learner computes besides the history's (MIL: val/loss, val/auc)
    figures: dict = field(default_factory=dict)  # the learner's own figures, logged, not promoted on (bank size, bags)
    checkpoint: bytes | None = None  # the packed checkpoint (`pack`), for a result that crosses processes

    def metrics(self) -> dict[str, float]:
        """The checkpoint's metrics, the registry's promotion metric among them."""
        final = self.history[-1] if self.history else {}
        return {"train/loss": final.get("train/loss", NAN), "val/loss": final.get("val/loss", NAN), **self.val_metrics,
                "train/seconds": self.seconds}

    def logged_metrics(self) -> dict[str, float]:
        """What the run's MLflow metrics add to the history: sizes, the fit's own figures, the threshold and what set it."""
        from vad.training.alerts import budget_metrics

        final = self.history[-1] if self.history else {}
        own = {k: v for k, v in final.items() if k not in ("epoch", "train/loss", "val/loss", "val/score_mean", "train/clips")}
        return {
            "train/clips": self.train_clips, "val/clips": self.val_clips, **own, **self.val_metrics, **self.figures,
            **(self.calibration.metrics() if self.calibration else {}), **budget_metrics(self.budget),
            **({"alerts/feedback_floor": self.feedback_floor} if self.feedback_floor is not None else {}),
            "train/threshold": self.threshold, "train/seconds": self.seconds,
        }

    def pack(self, cfg, camera: str | None = None) -> bytes:
        """The checkpoint's bytes (built once): `camera` names a fleet camera's own model
        (`vad.tracking.registry.registry_name`)."""
        if self.checkpoint is None:
            from vad.models.checkpoint import checkpoint_bytes, decode_record
            from vad.tracking.registry import registry_name

            self.checkpoint = checkpoint_bytes(
                self.model, version=cfg.output.version, threshold=self.threshold, decode=decode_record(cfg.decode), metrics=self.metrics(),
                model_name=registry_name(cfg.registry, cfg.model.name, camera) if camera else None, calibration=self.calibration,
                budget=self.budget,
            )
        return self.checkpoint
