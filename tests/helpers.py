"""Test helpers: videos whose frames carry known content."""

from __future__ import annotations

import numpy as np

from vad.config import DecodeConfig

# Small clips for the integration tests: quick to train and score on 2 CPUs.
DECODE = DecodeConfig(clip_len=8, stride=8, resize=(48, 64), grayscale=True, clips_per_batch=4)


def level(i: int) -> int:
    """Gray level of frame i in the known-content videos (distinct by 7 levels, survives H.264)."""
    return 16 + 7 * i


def known_frames(n: int, height: int = 64, width: int = 96) -> np.ndarray:
    if level(n - 1) > 255:
        raise ValueError(f"at most 35 known frames, asked for {n}")
    return np.stack([np.full((height, width), level(i), dtype=np.uint8) for i in range(n)])


def frame_index_of(frame: np.ndarray) -> int:
    """Invert `level` from a decoded (possibly resized, lossy) frame."""
    return int(round((float(np.median(frame)) - 16) / 7))
