"""Clip rows back onto the frames of their video: what evaluation scores against frame labels and
fusion aligns different models' clips by."""

from __future__ import annotations

import numpy as np


def frames_from_clips(num_frames: int, clips, reduce: str = "max") -> np.ndarray:
    """Per-frame scores from clip rows (start_frame, frame_step, frame_scores).

    Where clips overlap, a frame takes the max (or mean) of the scores it got;
    frames no clip covers are NaN.
    """
    total = np.full(num_frames, -np.inf if reduce == "max" else 0.0)
    count = np.zeros(num_frames)
    for start, step, scores in clips:
        idx = start + step * np.arange(len(scores))
        keep = idx < num_frames
        idx, values = idx[keep], np.asarray(scores, dtype=float)[keep]
        if reduce == "max":
            np.maximum.at(total, idx, values)
        else:
            np.add.at(total, idx, values)
        np.add.at(count, idx, 1)
    out = total if reduce == "max" else total / np.maximum(count, 1)
    out[count == 0] = np.nan
    return out


def fill_gaps(scores: np.ndarray) -> np.ndarray:
    """Frames no clip scored (between sampled frames when frame_step > 1) are interpolated."""
    scores = np.asarray(scores, dtype=float)
    known = np.flatnonzero(~np.isnan(scores))
    if known.size == 0 or known.size == len(scores):
        return scores
    return np.interp(np.arange(len(scores)), known, scores[known])
