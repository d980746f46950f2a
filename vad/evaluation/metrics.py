"""Frame-level evaluation: clip scores back onto frames, AUC, EER."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from vad.models.registry import NORMALISATIONS  # one list, kept with the model records
from vad.results.frames import fill_gaps, frames_from_clips  # noqa: F401 - clip rows onto frames, shared with fusion




def normalise_per_video(scores: np.ndarray, method: str = "minmax") -> np.ndarray:
    """One video's frame scores on a common scale, higher = more anomalous.

    "minmax": (e - min e) / (max e - min e), so 0 and 1 are the video's most normal and most anomalous
    frames (Liu et al. 2018 normalise PSNR this way). "regularity": (e - min e) / max e, one minus the
    regularity score s(t) of Hasan et al. 2016 (eq. 3), which keeps a video whose errors vary little
    near 0. "none": unchanged."""
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; choose from {NORMALISATIONS}")
    if method == "none":
        return scores
    low, high = np.nanmin(scores), np.nanmax(scores)
    if method == "regularity":
        if low < 0:
            raise ValueError(
                "the regularity normalisation is for non-negative errors; these scores go down to "
                f"{low:.4g} (e.g. pred's -PSNR): use minmax"
            )
        return (scores - low) / high if high > 0 else np.zeros_like(scores)
    return (scores - low) / (high - low) if high > low else np.zeros_like(scores)


def smooth(scores: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return scores
    kernel = np.ones(window) / window
    padded = np.pad(scores, (window // 2, window - 1 - window // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def prepare_scores(scores: np.ndarray, normalise: str = "minmax", smoothing: int = 1) -> np.ndarray:
    """The evaluation view of one video's frame scores: gaps filled, smoothed, normalised."""
    s = smooth(fill_gaps(np.asarray(scores, dtype=float)), smoothing)
    return normalise_per_video(s, normalise)


def frame_level_report(labels: list[np.ndarray], scores: list[np.ndarray], normalise: str = "minmax", smoothing: int = 1) -> dict:
    """Micro AUC (all frames concatenated), macro AUC (mean over videos that hold both classes), EER."""
    prepared = []
    for y, s in zip(labels, scores):
        s = prepare_scores(s, normalise, smoothing)
        keep = ~np.isnan(s)
        prepared.append((np.asarray(y)[keep].astype(int), s[keep]))
    y_all = np.concatenate([y for y, _ in prepared])
    s_all = np.concatenate([s for _, s in prepared])
    per_video = [roc_auc_score(y, s) for y, s in prepared if 0 < y.sum() < len(y)]
    return {
        "auc_micro": float(roc_auc_score(y_all, s_all)),
        "auc_macro": float(np.mean(per_video)) if per_video else float("nan"),
        "eer": equal_error_rate(y_all, s_all),
        "frames": int(len(y_all)),
        "videos": len(prepared),
    }


def _f1(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = int(np.sum(predicted & truth))
    precision = tp / max(int(predicted.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def pixel_level_report(predicted: np.ndarray, truth: np.ndarray, pixel_scores: np.ndarray | None = None, seed: int = 0) -> dict:
    """Pixel-level precision, recall and F1 of boolean masks (all frames pooled), beside two baselines
    any mask must beat: the all-ones mask (`pixel_f1_all_ones`) and a random mask of the same area
    (`pixel_f1_random`, seeded); pixel AUC when continuous per-pixel scores are given."""
    predicted, truth = np.asarray(predicted, dtype=bool).ravel(), np.asarray(truth, dtype=bool).ravel()
    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} vs {truth.shape}")
    precision, recall, f1 = _f1(predicted, truth)
    shuffled = np.zeros_like(predicted)
    shuffled[np.random.default_rng(seed).choice(predicted.size, int(predicted.sum()), replace=False)] = True
    report = {
        "pixel_precision": precision,
        "pixel_recall": recall,
        "pixel_f1": f1,
        "pixel_f1_all_ones": _f1(np.ones_like(truth), truth)[2],
        "pixel_f1_random": _f1(shuffled, truth)[2],
        "pixel_area": float(predicted.mean()) if predicted.size else 0.0,
    }
    if pixel_scores is not None and 0 < truth.sum() < truth.size:
        report["pixel_auc"] = float(roc_auc_score(truth, np.asarray(pixel_scores, dtype=float).ravel()))
    return report


def describe_pixel_report(report: dict) -> str:
    """One line for people: F1 beside its baselines, and AUC where there is one."""
    line = (
        f"pixel-level precision {report['pixel_precision']:.3f} recall {report['pixel_recall']:.3f} F1 {report['pixel_f1']:.3f} "
        f"(all-ones mask F1 {report['pixel_f1_all_ones']:.3f}, random mask of the same area F1 {report['pixel_f1_random']:.3f}; "
        f"masks cover {100 * report['pixel_area']:.1f}% of pixels)"
    )
    return line + (f", pixel AUC {report['pixel_auc']:.3f}" if "pixel_auc" in report else "")


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of anomalous frames: (first, last) frame indices, inclusive."""
    y = np.asarray(labels).astype(bool)
    edges = np.flatnonzero(np.diff(np.r_[0, y.astype(np.int8), 0]))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def event_report(videos: list[tuple[np.ndarray, list[tuple[int, int]], float]]) -> dict:
    """What an operator would judge, against frame labels, at the threshold the model carries. `videos`: per
    video (frame labels, its events as (start_frame, end_frame) inclusive, seconds per frame).

    - event recall: the share of ground-truth anomalous segments that at least one event overlaps;
    - false events per hour: events overlapping no anomalous frame, per hour of normal (label 0) footage;
    - mean delay: from a hit segment's first frame to the start of the first event overlapping it (0 when
      the event began earlier), in seconds."""
    hit = total = false = 0
    normal_s, delays = 0.0, []
    for labels, events, frame_s in videos:
        y = np.asarray(labels).astype(bool)
        normal_s += float((~y).sum()) * frame_s
        for first, last in segments(y):
            total += 1
            starts = [s for s, e in events if s <= last and e >= first]
            if starts:
                hit += 1
                delays.append(max(0, min(starts) - first) * frame_s)
        for s, e in events:
            if not y[max(0, s) : e + 1].any():
                false += 1
    return {
        "event_recall": hit / total if total else float("nan"), "segments": total, "segments_hit": hit,
        "events": sum(len(events) for _, events, _ in videos), "false_events": false,
        "false_events_per_hour": false / (normal_s / 3600.0) if normal_s > 0 else float("nan"),
        "mean_delay_s": float(np.mean(delays)) if delays else float("nan"),
    }


def matches(uri: str, key: str) -> bool:
    """A label key names a video by a suffix of its uri, with or without the file extension."""
    key = key.strip("/")
    stem = uri.rsplit(".", 1)[0] if "." in uri.rsplit("/", 1)[-1] else uri
    return any(candidate == key or candidate.endswith("/" + key) for candidate in (uri, stem))
