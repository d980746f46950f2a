"""The threshold a model carries: a quantile of held-out normal clip scores (`train.threshold_quantile`), or
with `alerts.max_false_per_hour` the threshold at which the held-out normal videos raise at most that many
events per hour (`vad.results.events.budget_threshold`)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from vad.models.calibration import Calibration
from vad.results.events import Budget, budget_threshold

log = logging.getLogger(__name__)

NAN = float("nan")
META = ("video_uri", "start_time_s", "end_time_s")  # what a held-out clip needs besides its score to count events


@dataclasses.dataclass(frozen=True)
class Settled:
    """What held-out normal footage sets on a model: its threshold, its calibration (fusion's common scale) and,
    with `alerts.max_false_per_hour`, the budget the threshold came from."""

    threshold: float
    calibration: Calibration
    budget: Budget | None = None


def settle(clip_scores: np.ndarray, frame_scores: np.ndarray, *, quantile: float, alerts=None, meta: dict | None = None,
           held_out: bool = True, what: str = "the model") -> Settled:
    """The one calibration step every learner ends with: held-out normal clips' scores (N,) and frame scores (N, T)
    -> the threshold (the `quantile` of the clip scores, or the `alerts` budget's, measured on the clips' videos
    and times in `meta`) and the model's `Calibration`. `held_out` False: the clips are training clips (no
    footage was held out), which makes the threshold look better than it is; the calibration says so."""
    scores = np.asarray(clip_scores, dtype=np.float64)
    quantile_threshold = float(np.quantile(scores, quantile)) if len(scores) else NAN
    calibration = Calibration.from_frame_scores(np.asarray(frame_scores, dtype=np.float64),
                                                "held-out normal clips" if held_out else "training clips (none held out)")
    if alerts is None:
        return Settled(quantile_threshold, calibration)
    threshold, budget = threshold_of(alerts, scores, meta if held_out else None, quantile_threshold, what)
    return Settled(threshold, calibration, budget)


def threshold_of(alerts, scores: np.ndarray, meta: dict | None, quantile_threshold: float, what: str) -> tuple[float, Budget | None]:
    """(threshold, budget) for `what` (a model, a camera's) under `alerts` (the train job's section): `scores` of
    held-out normal clips in the order of `meta`'s columns (None: no held-out videos)."""
    if alerts.max_false_per_hour is None:
        return quantile_threshold, None
    if not meta or len(scores) == 0:
        log.warning("%s: no held-out normal videos to measure alerts.max_false_per_hour on; its threshold is train.threshold_quantile's "
                    "(hold out videos with train.val_fraction)", what)
        return quantile_threshold, None
    budget = budget_threshold(scores, meta["video_uri"], meta["start_time_s"], meta["end_time_s"], alerts.max_false_per_hour, alerts.merge_gap_s)
    budget = dataclasses.replace(budget, quantile_threshold=float(quantile_threshold))
    if budget.held_out_hours < alerts.min_held_out_hours:
        log.warning(
            "%s: the alert budget (%g false events per hour) was measured on only %.2f hours of held-out normal footage "
            "(alerts.min_held_out_hours %g): its threshold %.4g is a rough guess; hold out more footage", what,
            alerts.max_false_per_hour, budget.held_out_hours, alerts.min_held_out_hours, budget.threshold,
        )
    log.info("%s: threshold %.4g from the budget: %d events in %.2f held-out hours (%.2f per hour, budget %g)", what, budget.threshold,
             budget.events, budget.held_out_hours, budget.events_per_hour, alerts.max_false_per_hour)
    return budget.threshold, budget


def feedback_floor(threshold: float, dismissed_scores: np.ndarray, what: str) -> tuple[float, float | None]:
    """(threshold, floor): with footage operators dismissed (`train.use_feedback`), the threshold is at least just above the
    highest score the refitted model gives its clips, so a dismissed event is not raised again whatever the refit did to
    its scores; `floor` is that score (None without dismissed clips). Raising it is logged: it can hide true events too."""
    scores = np.asarray(dismissed_scores, dtype=np.float64)
    if scores.size == 0:
        return threshold, None
    floor = float(scores.max()) * (1 + 1e-5) + 1e-9  # above it in float32 too: rows compare score > threshold in float32
    if floor > threshold:
        log.warning("%s: threshold raised from %.4g to %.4g, just above the highest score of the %d clips operators dismissed as "
                    "normal (train.use_feedback); events scoring below it are no longer raised", what, threshold, floor, scores.size)
        return floor, floor
    log.info("%s: the %d dismissed clips score at most %.4g, under the threshold %.4g", what, scores.size, float(scores.max()), threshold)
    return threshold, floor


def budget_metrics(budget: Budget | None) -> dict[str, float]:
    if budget is None:
        return {}
    return {"alerts/max_false_per_hour": budget.max_false_per_hour, "alerts/held_out_hours": budget.held_out_hours,
            "alerts/held_out_events_per_hour": budget.events_per_hour, "alerts/threshold": budget.threshold}
