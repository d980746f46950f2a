"""Cut fixed-length clips out of a video, a clip at a time, and hand them on in columnar batches.

Memory stays bounded by one clip batch whatever the video's length (see `vad.video.readers`).
A long video can be shared by several decode tasks, each cutting a contiguous share of its clips.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vad.config import DecodeConfig, StorageConfig
from vad.io.sources import VideoRef
from vad.video.readers import TooShort, open_video


def clip_starts(num_frames: int, clip_len: int, stride: int, frame_step: int = 1) -> list[int]:
    """Start frames of every clip. A tail the regular stride misses gets one clip aligned to the
    last frame, so every frame is covered; a video shorter than one clip yields none."""
    span = (clip_len - 1) * frame_step + 1
    if num_frames < span:
        return []
    starts = list(range(0, num_frames - span + 1, stride))
    if starts[-1] + span < num_frames:
        starts.append(num_frames - span)
    return starts


def clip_span(decode: DecodeConfig) -> int:
    return (decode.clip_len - 1) * decode.frame_step + 1


@dataclass
class Clip:
    index: int
    start_frame: int
    end_frame: int  # inclusive
    start_time_s: float
    end_time_s: float
    frames: np.ndarray  # (T, H, W) uint8 when grayscale, else (T, H, W, 3)


def _cut(reader, starts: list[int], decode: DecodeConfig, first_index: int = 0) -> Iterator[Clip]:
    yield from _cut_indexed(reader, list(enumerate(starts, first_index)), decode)


def _cut_indexed(reader, chosen: list[tuple[int, int]], decode: DecodeConfig) -> Iterator[Clip]:
    """The clips (index in the video, start frame) of `chosen`."""
    for index, start in chosen:
        indices = [start + k * decode.frame_step for k in range(decode.clip_len)]
        start_s, end_s = reader.times(indices[0], indices[-1])
        yield Clip(index, indices[0], indices[-1], start_s, end_s, reader.batch(indices))


def iter_clips(video: VideoRef, decode: DecodeConfig, storage: StorageConfig | None = None) -> Iterator[Clip]:
    """Every clip of a video in time order; a video shorter than one clip yields none."""
    with open_video(video, decode, storage) as reader:
        yield from _cut(reader, clip_starts(len(reader), decode.clip_len, decode.stride, decode.frame_step), decode)


def split_parts(video: VideoRef, decode: DecodeConfig) -> int:
    """How many decode tasks share a video: one per `decode.split_mb` of a video object."""
    if video.kind != "video" or decode.split_mb is None:
        return 1
    return max(1, -(-video.size // int(decode.split_mb * (1 << 20))))


def part_range(num_clips: int, part: int, parts: int) -> range:
    """The contiguous clip indices that task `part` of `parts` cuts."""
    return range(part * num_clips // parts, (part + 1) * num_clips // parts)


def iter_clip_batches(
    video: VideoRef, decode: DecodeConfig, storage: StorageConfig | None = None, part: int = 0, parts: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """Columnar batches of at most `decode.clips_per_batch` clips, ready for Ray Data. Each row
    carries the video's clip count, so a writer can tell when it has all of them. Raises
    `BadVideo` (e.g. `TooShort`) for objects that cannot be scored.

    With `parts` > 1 only the `part`-th contiguous share of the clips is cut (indices stay
    those of the whole video): several tasks decode one long video side by side."""
    with open_video(video, decode, storage) as reader:
        starts = clip_starts(len(reader), decode.clip_len, decode.stride, decode.frame_step)
        if not starts:
            raise TooShort(f"{len(reader)} frames; one clip needs {clip_span(decode)}")
        share = part_range(len(starts), part, parts)
        chosen = list(zip(range(share.start, share.stop), starts[share.start : share.stop]))
        if video.first_frame is not None:  # a span of the video: the clips starting in it (at least the one nearest its start)
            inside = [(i, s) for i, s in chosen if video.first_frame <= s <= video.last_frame]
            before = [(i, s) for i, s in chosen if s <= video.first_frame]
            chosen = inside or before[-1:] or chosen[:1]
        pending: list[Clip] = []
        for clip in _cut_indexed(reader, chosen, decode):
            pending.append(clip)
            if len(pending) == decode.clips_per_batch:
                yield _columns(video, pending, len(starts))
                pending = []
        if pending:
            yield _columns(video, pending, len(starts))


def _columns(video: VideoRef, clips: list[Clip], clips_in_video: int) -> dict[str, np.ndarray]:
    n = len(clips)
    return {
        "clips_in_video": np.full(n, clips_in_video, dtype=np.int64),
        "video_size": np.full(n, video.size, dtype=np.int64),
        "video_mtime": np.full(n, video.mtime, dtype=np.float64),
        "video_uri": np.array([video.uri] * n, dtype=object),
        "camera": np.array([video.camera] * n, dtype=object),
        "date": np.array([video.date] * n, dtype=object),
        "clip_index": np.array([c.index for c in clips], dtype=np.int32),
        "start_frame": np.array([c.start_frame for c in clips], dtype=np.int64),
        "end_frame": np.array([c.end_frame for c in clips], dtype=np.int64),
        "start_time_s": np.array([c.start_time_s for c in clips], dtype=np.float64),
        "end_time_s": np.array([c.end_time_s for c in clips], dtype=np.float64),
        "frames": np.stack([c.frames for c in clips]),
    }
