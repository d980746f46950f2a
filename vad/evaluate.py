"""Frame-level evaluation of a scoring run against ground-truth frame labels."""

from __future__ import annotations

import numpy as np

from vad.config import StorageConfig
from vad.metrics import frame_level_report, frames_from_clips
from vad.query import connect


def video_frame_scores(results_uri: str, run_id: str | None = None, storage: StorageConfig | None = None) -> dict[str, list]:
    """video_uri -> list of (start_frame, frame_step, frame_scores) rows of one run (the latest if None)."""
    con = connect(results_uri, storage)
    try:
        if run_id is None:
            latest = con.execute("SELECT run_id FROM scores ORDER BY scored_at DESC LIMIT 1").fetchone()
            if latest is None:
                raise ValueError(f"no scores under {results_uri}")
            run_id = latest[0]
        rows = con.execute(
            "SELECT video_uri, start_frame, frame_step, frame_scores FROM scores WHERE run_id = ? ORDER BY video_uri, clip_index",
            [run_id],
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list] = {}
    for uri, start, step, scores in rows:
        out.setdefault(uri, []).append((start, step, scores))
    return out


def evaluate_run(
    results_uri: str,
    labels: dict[str, np.ndarray],
    run_id: str | None = None,
    storage: StorageConfig | None = None,
    per_video_norm: bool = True,
    smoothing: int = 1,
    overlap: str = "mean",
) -> dict:
    """`labels` maps a video key (matched as a suffix of the video uri) to its per-frame 0/1 labels."""
    clips = video_frame_scores(results_uri, run_id, storage)
    ys, ss, missing = [], [], []
    for key, y in labels.items():
        match = [uri for uri in clips if uri == key or uri.endswith("/" + key.lstrip("/"))]
        if not match:
            missing.append(key)
            continue
        ys.append(np.asarray(y))
        ss.append(frames_from_clips(len(y), clips[match[0]], overlap))
    if not ys:
        raise ValueError(f"none of the {len(labels)} labelled videos were scored in this run")
    report = frame_level_report(ys, ss, per_video_norm=per_video_norm, smoothing=smoothing)
    report["missing_videos"] = missing
    return report
