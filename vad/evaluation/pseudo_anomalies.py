"""Validation without anomaly labels: pseudo-anomalies injected into held-out normal videos.

Normal footage is all a user has when training, so model and setting choices can't be made on a
real anomaly AUC without touching test data. Instead, each held-out normal video gets a synthetic
anomaly made from the video itself after its first third, and the frame-level AUC of separating those
frames from the untouched ones is the validation metric (`val/pseudo_auc`):

- "speedup": a stretch of the video fast-forwarded 3x — people move like cyclists, nothing is pasted;
- "fast": a patch of the scene (about one pedestrian in size) crosses the frame several times faster
  than people walk (12 s to cross the frame, about 3x walking pace) — the typical Ped2 anomaly
  (cyclists, skaters);
- "object": a large foreign block with a darker rim drifts through at walking pace — a vehicle on
  a walkway.

This is a proxy for users who have no labels: it rewards scorers that notice unusual motion and
appearance, and is never reported as the accuracy on real anomalies. Measured against labels it is a
rough guide, not a way to choose: on UCSD Ped2 it rated a pretrained-feature scorer 95-97 that scored
about 60 on the real anomalies, and preferred Conv-AE settings that the labelled development videos
ranked lower (README, "Accuracy on UCSD Ped2"). Where labelled footage exists, choose on it.
"""

from __future__ import annotations

import numpy as np

from vad.video.clips import clip_starts

KINDS = ("speedup", "fast", "object")
DEFAULT_KINDS = ("speedup", "object")


def speed_up(frames: np.ndarray, factor: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Fast-forward a stretch after the first third: every person and car moves `factor` times
    faster there, with nothing pasted in (frame skipping as a pseudo-anomaly, as in Astrid et al.,
    ICCVW 2021). The result is shorter than the input; returns (frames, per-frame 0/1 labels)."""
    t = len(frames)
    first = t // 3
    span = (t - first) // (2 * factor)  # leaves at least half of the rest as a normal tail
    if span < 2:
        raise ValueError(f"a video of {t} frames is too short for a pseudo-anomaly")
    fast = frames[first : first + factor * span : factor]
    out = np.concatenate([frames[:first], fast, frames[first + factor * span :]])
    labels = np.zeros(len(out), dtype=np.int8)
    labels[first : first + span] = 1
    return out, labels


def inject_pseudo_anomaly(frames: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) uint8 frames -> (copy with an anomaly after its first third, per-frame 0/1 labels).

    "fast" and "object" fill the middle third; only the object's own pixels are pasted (where it differs from the static background, the
    video's median frame), so there is no rectangular seam for a model to spot."""
    if kind not in KINDS:
        raise ValueError(f"unknown pseudo-anomaly {kind!r}; choose from {KINDS}")
    t, h, w = frames.shape[:3]
    if t < 6:
        raise ValueError(f"a video of {t} frames is too short for a pseudo-anomaly")
    if kind == "speedup":
        return speed_up(frames)
    background = np.median(frames, axis=0).astype(np.int16)
    out = frames.copy()
    labels = np.zeros(t, dtype=np.int8)
    first, last = t // 3, 2 * t // 3
    if kind == "fast":
        ph, pw = max(2, h // 6), max(2, w // 10)
        sy, sx = _foreground_window(frames[first], background, ph, pw, rng)
        patch = frames[first, sy : sy + ph, sx : sx + pw].copy()
        mask = np.abs(patch.astype(np.int16) - background[sy : sy + ph, sx : sx + pw]) > 20
        speed = (w - pw) / 120  # crosses the frame in 12 s at 10 fps: a cyclist, about 3x a walker
    else:
        ph, pw = max(2, h // 4), max(2, w // 5)
        level = int(np.clip(background.mean() + rng.choice([-25, 25]), 0, 255))
        patch = np.full((ph, pw) + frames.shape[3:], level, dtype=np.uint8)
        rim = max(1, min(ph, pw) // 6)
        patch[:rim], patch[-rim:], patch[:, :rim], patch[:, -rim:] = 2 * [level // 2] + 2 * [level // 2]
        mask = np.ones((ph, pw) + frames.shape[3:], dtype=bool)
        speed = max(0.5, (w - pw) / 120)  # a vehicle at walking pace: wrong by appearance
    y = int(rng.integers(h // 3, h - ph + 1)) if h - ph + 1 > h // 3 else 0
    x, direction = float(rng.integers(0, w - pw + 1)), 1 if rng.random() < 0.5 else -1
    for i in range(first, last):
        xi = int(round(x))
        np.copyto(out[i, y : y + ph, xi : xi + pw], patch, where=mask)
        labels[i] = 1
        x += direction * speed
        if x < 0 or x > w - pw:  # bounce off the frame edges
            direction = -direction
            x = min(max(x, 0.0), float(w - pw))
    return out, labels


def _foreground_window(frame: np.ndarray, background: np.ndarray, ph: int, pw: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of the window, among random candidates, that differs most from the background
    (a person, not bare pavement)."""
    h, w = frame.shape[:2]
    foreground = np.abs(frame.astype(np.int16) - background)
    candidates = [(int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))) for _ in range(64)]
    return max(candidates, key=lambda c: int(foreground[c[0] : c[0] + ph, c[1] : c[1] + pw].sum()))


def cut_clips(frames: np.ndarray, clip_len: int, stride: int | None = None) -> tuple[list[int], np.ndarray]:
    """Clips of a frame array every `stride` frames (default: back to back), plus one aligned to the
    last frame, as the decoder cuts them."""
    starts = clip_starts(len(frames), clip_len, stride or clip_len)
    return starts, np.stack([frames[s : s + clip_len] for s in starts])


def pseudo_anomaly_report(
    model, videos: list[np.ndarray], clip_len: int, *, stride: int | None = None, batch_size: int = 16, seed: int = 0,
    smoothing: int = 1, kinds: tuple[str, ...] = DEFAULT_KINDS, normalise: str = "minmax",
) -> dict:
    """Frame-level report (`vad.evaluation.metrics.frame_level_report`) of `model` on every held-out normal video
    with each kind of pseudo-anomaly injected."""
    from vad.evaluation.metrics import frame_level_report, frames_from_clips
    from vad.training.local import score_clips

    rng = np.random.default_rng(seed)
    labels, scores = [], []
    for frames in videos:
        for kind in kinds:
            injected, y = inject_pseudo_anomaly(frames, kind, rng)
            starts, clips = cut_clips(injected, clip_len, stride)
            frame_scores = score_clips(model, clips, batch_size, field="frame_scores")
            labels.append(y)
            scores.append(frames_from_clips(len(y), [(s, 1, f) for s, f in zip(starts, frame_scores)], "mean"))
    return frame_level_report(labels, scores, normalise, smoothing)
