"""The threshold a model carries: a quantile of held-out normal clip scores (`train.threshold_quantile`), or
with `alerts.max_false_per_hour` the threshold at which the held-out normal videos raise at most that many
events per hour (`vad.results.events.budget_threshold`)."""

from __future__ import annotations

import logging

import numpy as np

from vad.results.events import Budget, budget_threshold

log = logging.getLogger(__name__)

META = ("video_uri", "start_time_s", "end_time_s")  # what a held-out clip needs besides its score to count events


def threshold_of(cfg, scores: np.ndarray, meta: dict | None, quantile_threshold: float, what: str) -> tuple[float, Budget | None]:
    """(threshold, budget) for `what` (a model, a camera's): `scores` of held-out normal clips in the order of
    `meta`'s columns (None: no held-out videos)."""
    alerts = cfg.alerts
    if alerts.max_false_per_hour is None:
        return quantile_threshold, None
    if not meta or len(scores) == 0:
        log.warning("%s: no held-out normal videos to measure alerts.max_false_per_hour on; its threshold is train.threshold_quantile's "
                    "(hold out videos with train.val_fraction)", what)
        return quantile_threshold, None
    budget = budget_threshold(scores, meta["video_uri"], meta["start_time_s"], meta["end_time_s"], alerts.max_false_per_hour, alerts.merge_gap_s)
    if budget.held_out_hours < alerts.min_held_out_hours:
        log.warning(
            "%s: the alert budget (%g false events per hour) was measured on only %.2f hours of held-out normal footage "
            "(alerts.min_held_out_hours %g): its threshold %.4g is a rough guess; hold out more footage", what,
            alerts.max_false_per_hour, budget.held_out_hours, alerts.min_held_out_hours, budget.threshold,
        )
    log.info("%s: threshold %.4g from the budget: %d events in %.2f held-out hours (%.2f per hour, budget %g)", what, budget.threshold,
             budget.events, budget.held_out_hours, budget.events_per_hour, alerts.max_false_per_hour)
    return budget.threshold, budget


def budget_metrics(budget: Budget | None) -> dict[str, float]:
    if budget is None:
        return {}
    return {"alerts/max_false_per_hour": budget.max_false_per_hour, "alerts/held_out_hours": budget.held_out_hours,
            "alerts/held_out_events_per_hour": budget.events_per_hour, "alerts/threshold": budget.threshold}
