"""Events: what a person reviews. A video's flagged clips (one model's `scores` rows) merged into maximal
runs whose gaps are at most `merge_gap_s` seconds, each with its peak (the highest-scoring clip, and in it
the highest-scoring frame), the number of clips and the peak's reason; one `events` file per video and
model beside its `scores` file, so a re-run replaces them and never duplicates one."""

from __future__ import annotations

import datetime as dt
import hashlib

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
