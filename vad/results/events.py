"""Events: what a person reviews. A video's flagged clips (one model's `scores` rows) merged into maximal
runs whose gaps are at most `merge_gap_s` seconds, each with its peak (the highest-scoring clip, and in it
the highest-scoring frame), the number of clips and the peak's reason; one `events` file per video and
model beside its `scores` file, so a re-run replaces them and never duplicates one."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from vad.results.schema import EVENTS_SCHEMA, SCORES_SCHEMA_VERSION


def event_id(video_uri: str, model_name: str, model_version: str, first_clip_id: str) -> str:
    """Stable id of an event: the same video scored by the same model gives the same ids on every run."""
    return "e" + hashlib.sha1(f"{video_uri}|{model_name}|{model_version}|{first_clip_id}".encode()).hexdigest()[:15]


def merge_flagged(start_s: np.ndarray, end_s: np.ndarray, flagged: np.ndarray, merge_gap_s: float) -> list[list[int]]:
    """Indices of the flagged clips (in time order), grouped into events: a flagged clip joins the current
    event when it starts at most `merge_gap_s` after the event's end (overlapping clips always join)."""
    order = np.argsort(np.asarray(start_s), kind="stable")
    groups: list[list[int]] = []
    end = -np.inf
    for i in order:
        if not flagged[i]:
            continue
        if groups and start_s[i] - end <= merge_gap_s:
            groups[-1].append(int(i))
            end = max(end, float(end_s[i]))
        else:
            groups.append([int(i)])
            end = float(end_s[i])
    return groups


def events_table(scores: pa.Table, merge_gap_s: float, scored_at: dt.datetime | None = None) -> pa.Table:
    """The `events` rows of one video's `scores` rows of one model (the partition columns kept aside)."""
    if scores.num_rows == 0:
        return EVENTS_SCHEMA.empty_table()
    c = scores.select(["run_id", "clip_id", "video_uri", "start_frame", "end_frame", "frame_step", "start_time_s", "end_time_s",
                       "model_name", "model_version", "score", "threshold", "is_anomaly", "frame_scores", "reason"]).to_pydict()
    start_s, end_s = np.asarray(c["start_time_s"], float), np.asarray(c["end_time_s"], float)
    rows = []
    for group in merge_flagged(start_s, end_s, np.asarray(c["is_anomaly"], bool), merge_gap_s):
        peak = max(group, key=lambda i: c["score"][i])
        frames = c["frame_scores"][peak] or [c["score"][peak]]
        rows.append({
            "schema_version": SCORES_SCHEMA_VERSION, "run_id": c["run_id"][peak],
            "event_id": event_id(c["video_uri"][peak], c["model_name"][peak], c["model_version"][peak], c["clip_id"][group[0]]),
            "video_uri": c["video_uri"][peak], "model_name": c["model_name"][peak], "model_version": c["model_version"][peak],
            "start_frame": min(c["start_frame"][i] for i in group), "end_frame": max(c["end_frame"][i] for i in group),
            "start_time_s": float(min(start_s[i] for i in group)), "end_time_s": float(max(end_s[i] for i in group)),
            "clips": len(group), "peak_score": c["score"][peak], "peak_clip_id": c["clip_id"][peak],
            "peak_frame": c["start_frame"][peak] + int(np.argmax(frames)) * c["frame_step"][peak],
            "threshold": c["threshold"][peak], "reason": c["reason"][peak] or None,
            "scored_at": scored_at or dt.datetime.now(dt.timezone.utc),
        })
    return pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA) if rows else EVENTS_SCHEMA.empty_table()


def count_events(flagged: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, merge_gap_s: float) -> int:
    """How many events `merge_flagged` makes of one video's clips (in time order), vectorised for scanning
    many thresholds."""
    idx = np.flatnonzero(flagged)
    if idx.size == 0:
        return 0
    reach = np.maximum.accumulate(end_s[idx])  # the running end of the flagged clips so far
    joins = start_s[idx[1:]] - reach[:-1] <= merge_gap_s
    return int(idx.size - np.count_nonzero(joins))


@dataclass(frozen=True)
class Budget:
    """A threshold set from a false-alarm budget on held-out normal footage, and what it was measured on."""

    max_false_per_hour: float
    threshold: float
    held_out_hours: float
    events: int  # events the held-out normal footage raises at that threshold
    merge_gap_s: float
    quantile_threshold: float | None = None  # what train.threshold_quantile would have set instead, for comparison

    @property
    def events_per_hour(self) -> float:
        return self.events / self.held_out_hours if self.held_out_hours > 0 else float("inf")

    def to_dict(self) -> dict:
        return asdict(self)


def budget_threshold(scores, video, start_s, end_s, max_false_per_hour: float, merge_gap_s: float, candidates: int = 2000) -> Budget:
    """The threshold at which held-out normal clips (`scores`, their video ids and times) raise at most
    `max_false_per_hour` events per hour of that footage (events as `merge_flagged` makes them): lowered from
    the top (nothing flagged) through the candidates (the clips' scores, at most `candidates` of their
    quantiles) until one step more would break the budget. Lowering a threshold can merge events as well
    as add them (flag everything and each video is one long event): the first breach, not the lowest
    threshold that happens to fit, is where it stops."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no held-out clips to set a budget threshold on")
    video, start_s, end_s = np.asarray(video), np.asarray(start_s, dtype=np.float64), np.asarray(end_s, dtype=np.float64)
    order = np.lexsort((start_s, video))  # each video's clips in time order, videos contiguous
    scores, video, start_s, end_s = scores[order], video[order], start_s[order], end_s[order]
    hours = sum(float(end_s[video == v].max() - start_s[video == v].min()) for v in np.unique(video)) / 3600.0
    allowed = max_false_per_hour * hours
    values = np.unique(scores)
    if values.size > candidates:
        values = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, candidates)))
    best = Budget(max_false_per_hour, float(values[-1]), hours, 0, merge_gap_s)  # `score > threshold` flags: the top flags nothing
    for threshold in values[::-1][1:]:
        events = _events_by_video(scores > threshold, video, start_s, end_s, merge_gap_s)
        if events > allowed:
            break
        best = Budget(max_false_per_hour, float(threshold), hours, events, merge_gap_s)
    return best


def _events_by_video(flagged, video, start_s, end_s, merge_gap_s: float) -> int:
    bounds = np.flatnonzero(np.r_[True, video[1:] != video[:-1], True])
    return sum(count_events(flagged[a:b], start_s[a:b], end_s[a:b], merge_gap_s) for a, b in zip(bounds[:-1], bounds[1:]))
