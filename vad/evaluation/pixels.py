"""Pixel-level evaluation of a run's masks and heat maps against pixel ground truth.

Ground truth is a folder holding, per video, either a `<key>.npy` array (T, H, W) of booleans or a
`<key>/` folder of PNG frames in name order (non-zero = anomalous), where `<key>` names the video by
a suffix of its uri, with or without the file extension (e.g. `cam01/2026-11-24/test_000`). Truth
is resized (nearest) to the masks' resolution; a frame covered by several clips takes the union of
their masks and the largest of their pixel scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vad.config import StorageConfig
from vad.evaluation.metrics import matches, pixel_level_report


def load_pixel_truth(folder: str | Path) -> dict[str, Callable[[], np.ndarray]]:
    """key -> loader of that video's (T, H, W) boolean ground truth."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"pixel ground truth folder {folder} does not exist")

    def from_npy(path: Path) -> np.ndarray:
        return np.load(path, allow_pickle=False).astype(bool)

    def from_pngs(folder: Path) -> np.ndarray:
        from PIL import Image

        return np.stack([np.asarray(Image.open(p).convert("L")) > 0 for p in sorted(folder.glob("*.png"))])

    truth: dict[str, Callable[[], np.ndarray]] = {}
    for path in sorted(root.rglob("*.npy")):
        truth[path.relative_to(root).with_suffix("").as_posix()] = lambda p=path: from_npy(p)
    for folder_of_pngs in sorted({p.parent for p in root.rglob("*.png")}):
        truth[folder_of_pngs.relative_to(root).as_posix()] = lambda f=folder_of_pngs: from_pngs(f)
    if not truth:
        raise ValueError(f"{folder} holds no pixel ground truth (<key>.npy files or folders of PNG frames)")
    return truth


def _frames_of(rows: list[tuple]) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """frame index -> (mask, pixel scores or None) from a video's masks rows, overlapping clips merged."""
    from vad.results.tables import decode_heatmap, decode_mask

    frames: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    for start, step, height, width, pngs, heatmaps, scales in rows:
        for k, png in enumerate(pngs):
            mask = decode_mask(png)
            heat = decode_heatmap(heatmaps[k], scales[k], (height, width)) if heatmaps else None
            index = start + k * step
            if index in frames:
                old_mask, old_heat = frames[index]
                mask = mask | old_mask
                heat = np.maximum(heat, old_heat) if heat is not None and old_heat is not None else None
            frames[index] = (mask, heat)
    return frames


def pixel_report(results_uri: str, truth_dir: str | Path, run_id: str, storage: StorageConfig | None = None) -> dict:
    """`vad.evaluation.metrics.pixel_level_report` of run `run_id`'s masks (and heat maps, for pixel
    AUC) on every frame that has ground truth, plus the videos matched and missed."""
    from PIL import Image

    from vad.results.sql import with_readable_files

    truth = load_pixel_truth(truth_dir)
    rows = with_readable_files(results_uri, storage, lambda con: con.execute(
        "SELECT video_uri, start_frame, frame_step, height, width, mask_png, heatmap_png, heatmap_scale FROM masks "
        "WHERE run_id = ? ORDER BY video_uri, clip_index", [run_id],
    ).fetchall())
    by_video: dict[str, list[tuple]] = {}
    for uri, *rest in rows:
        by_video.setdefault(uri, []).append(tuple(rest))
    if not by_video:
        raise ValueError(f"run {run_id} wrote no masks: its scorer does not localise")
    predicted, actual, scores, missing = [], [], [], []
    for key, load in truth.items():
        uri = next((u for u in by_video if matches(u, key)), None)
        if uri is None:
            missing.append(key)
            continue
        frames, video_truth = _frames_of(by_video[uri]), load()
        for index, (mask, heat) in sorted(frames.items()):
            if index >= len(video_truth):
                continue
            size = (mask.shape[1], mask.shape[0])
            actual.append(np.asarray(Image.fromarray(video_truth[index].astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0)
            predicted.append(mask)
            scores.append(heat)
    if not predicted:
        raise ValueError(f"none of the {len(truth)} videos with pixel ground truth have masks in run {run_id}")
    pixel_scores = np.stack(scores) if all(s is not None for s in scores) else None
    report = pixel_level_report(np.stack(predicted), np.stack(actual), pixel_scores)
    return {**report, "pixel_frames": len(predicted), "pixel_missing_videos": missing}
