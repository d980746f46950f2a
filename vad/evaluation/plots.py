"""Plots people would rather look at than read: ROC curve and per-video score timelines."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _intervals(labels: np.ndarray) -> list[tuple[int, int]]:
    padded = np.r_[0, np.asarray(labels, dtype=int), 0]
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def roc_plot(labels: np.ndarray, scores: np.ndarray, path: str | Path, title: str = "") -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title or "frame-level ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def timeline_plot(videos: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, threshold: float | None = None) -> Path:
    """One row per video: the score over frames, ground-truth anomalous intervals shaded."""
    plt = _pyplot()
    n = len(videos)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.6 * n + 0.6), dpi=100, sharex=False, squeeze=False)
    for ax, (name, (labels, scores)) in zip(axes[:, 0], videos.items()):
        for start, end in _intervals(labels):
            ax.axvspan(start, end - 1, color="tab:red", alpha=0.2, lw=0)
        ax.plot(np.arange(len(scores)), scores, c="tab:blue", lw=1.2)
        if threshold is not None:
            ax.axhline(threshold, c="k", ls=":", lw=1)
        ax.set_ylabel(name if len(name) < 18 else "…" + name[-16:], fontsize=8)
        ax.set_xlim(0, max(len(scores) - 1, 1))
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("frame (red: ground-truth anomaly)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
