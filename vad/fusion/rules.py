"""How several models' scores of one video become one: each member's clip rows onto the video's frames,
put on the common scale by its `Calibration`, combined frame by frame by the rule, and cut back into the
clips of the first member (the fused rows reuse its clip ids, so its masks and objects join them).

Pure functions of arrays and Arrow tables; `vad.fusion.job` reads and writes the tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vad.models.calibration import Calibration
from vad.results.frames import fill_gaps, frames_from_clips

RULES = ("sum", "max")


@dataclass(frozen=True)
class Member:
    """One model of a fusion, as resolved for a camera."""

    label: str  # short, in the fused model's name and its reasons (e.g. "pred", "objects")
    name: str  # what its rows record as model_name
    version: str
    calibration: Calibration
    weight: float = 1.0


def frame_series(rows: pa.Table | dict, num_frames: int) -> np.ndarray:
    """A member's clip rows (start_frame, frame_step, frame_scores) -> one score per video frame: the mean
    over the clips holding a frame, frames between sampled ones interpolated, the ends held."""
    columns = rows.to_pydict() if isinstance(rows, pa.Table) else rows
    clips = list(zip(columns["start_frame"], columns["frame_step"], columns["frame_scores"]))
    return fill_gaps(frames_from_clips(num_frames, clips, "mean"))


def fuse_frames(series: list[np.ndarray], members: list[Member], rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Members' frame scores (each in its own units) -> (fused (F,), contributions (M, F)): each member's
    weighted calibrated score, summed (`sum`) or the largest taken (`max`)."""
    if rule not in RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; one of {', '.join(RULES)}")
    contributions = np.stack([m.weight * m.calibration.scale(s) for s, m in zip(series, members)])
    fused = contributions.sum(0) if rule == "sum" else contributions.max(0)
    return fused, contributions


def fused_threshold(members: list[Member], rule: str, level: float) -> float:
    """A threshold the fused frame scores of held-out normal footage exceed at most `1 - level` of the
    time, from the members' recorded quantiles alone (nothing is scored again): for `sum` the sum of their
    quantiles at `level` (exact when the members rise together, higher than needed when they do not); for
    `max` the largest of their quantiles at `1 - (1 - level) / members` (a union bound)."""
    if rule == "sum":
        return float(sum(m.weight * m.calibration.scaled_quantile(level) for m in members))
    each = 1.0 - (1.0 - level) / len(members)
    return float(max(m.weight * m.calibration.scaled_quantile(each) for m in members))


def clip_frames(rows: dict) -> list[np.ndarray]:
    """The video frames of each clip row (start_frame + i * frame_step)."""
    return [int(s) + int(step) * np.arange(len(f)) for s, step, f in zip(rows["start_frame"], rows["frame_step"], rows["frame_scores"])]


def video_length(tables: list[pa.Table]) -> int:
    """Frames the members' clips reach (the last sampled frame + 1)."""
    return max(int(np.max(np.asarray(t["end_frame"]))) + 1 for t in tables)


@dataclass
class FusedVideo:
    """The fused rows of one video, aligned with the first member's clips."""

    frame_scores: list[np.ndarray]  # per clip
    scores: np.ndarray  # per clip: its worst fused frame
    leader: list[int]  # per clip: the member that contributed most at that frame
    leader_value: np.ndarray  # ... its weighted calibrated score there
    worst_frame: np.ndarray  # per clip: the video frame of its worst fused frame


def fuse_video(tables: list[pa.Table], members: list[Member], rule: str) -> FusedVideo:
    """Members' scores rows of one video (same order as `members`) -> the fused clips of the first."""
    length = video_length(tables)
    series = [frame_series(t, length) for t in tables]
    fused, contributions = fuse_frames(series, members, rule)
    reference = tables[0].select(["start_frame", "frame_step", "frame_scores"]).to_pydict()
    out = FusedVideo([], np.zeros(tables[0].num_rows), [], np.zeros(tables[0].num_rows), np.zeros(tables[0].num_rows, np.int64))
    for i, frames in enumerate(clip_frames(reference)):
        values = fused[frames]
        worst = int(frames[int(np.argmax(values))])
        out.frame_scores.append(values.astype(np.float32))
        out.scores[i] = float(values.max())
        lead = int(np.argmax(contributions[:, worst]))
        out.leader.append(lead)
        out.leader_value[i] = float(contributions[lead, worst])
        out.worst_frame[i] = worst
    return out


def reason_of(member: Member, value: float, member_reason: str | None) -> str:
    """Why a fused clip scored as it did: the member that contributed most, and its own reason when it gives one."""
    if member_reason:
        return f"{member.label}: {member_reason}"
    return f"{member.label}: {value:.1f}x its normal (its held-out 99.9th percentile = 1)"


def covering_reason(rows: dict, frame: int) -> str | None:
    """The reason of the highest-scoring clip of a member that holds `frame` (None when none gives one)."""
    best, reason = -np.inf, None
    for start, end, score, text in zip(rows["start_frame"], rows["end_frame"], rows["score"], rows.get("reason") or []):
        if start <= frame <= end and text and score > best:
            best, reason = score, text
    return reason
