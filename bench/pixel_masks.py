"""Pixel-level masks of vgg_ae against ground truth: precision, recall, F1 and pixel AUC.

    .venv/bin/python bench/pixel_masks.py [--epochs 10] [--percentile 99]

UCSD Ped2's pixel masks are not in ../shared/data, so this runs on the synthetic scene, whose
renderer knows every anomalous pixel (a fast vehicle, a pedestrian crossing against the flow).
vgg_ae trains on normal scenes; masks come from the percentile threshold in both modes
("calibrated" on held-out normal frames, and the seed's "per_frame"); scores are pooled over the
anomalous frames. Chance F1 is what a random mask with the same number of pixels would get.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vad.evaluation.metrics import pixel_level_report
from vad.models.scorers import build_scorer
from vad.testing.synthetic import render_scene
from vad.training.local import fit

SIZE = (64, 96)


def _clips(frames: np.ndarray, clip_len: int) -> np.ndarray:
    n = len(frames) // clip_len * clip_len
    return frames[:n].reshape(-1, clip_len, *frames.shape[1:])


def run(epochs: int, percentile: float, seed: int = 0) -> list[dict]:
    normal = [render_scene(seed + i, 96, *SIZE).frames for i in range(8)]
    test = [render_scene(100 + seed + i, 96, *SIZE, anomalies=(("fast", 20), ("wrong_way", 50))) for i in range(3)]
    torch.manual_seed(seed)
    model = build_scorer("vgg_ae", width_divisor=2, mask_percentile=percentile)
    t0 = time.perf_counter()
    fit(model, np.concatenate([_clips(f, 4) for f in normal]), epochs=epochs, batch_size=8, lr=1e-3, seed=seed)
    train_s = time.perf_counter() - t0
    frames = np.concatenate([s.frames[s.labels] for s in test])
    truth = np.concatenate([s.masks[s.labels] for s in test])
    rows = []
    for mode in ("calibrated", "per_frame"):
        model.mask_mode = mode
        with torch.inference_mode():
            x = torch.from_numpy(frames[:, None]).float() / 255  # each frame as a 1-frame clip
            out = model.score(x)
            errors = model.pixel_errors(x)[:, 0].numpy()
        predicted = out.mask[:, 0].numpy()
        report = pixel_level_report(predicted, truth, pixel_scores=errors, seed=seed)
        rows.append({"mode": mode, "train_s": train_s, **report})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--percentile", type=float, default=99.0)
    args = parser.parse_args()
    rows = run(args.epochs, args.percentile)
    print("| mask mode | precision | recall | F1 | F1 all-ones mask | F1 random mask, same area | pixel AUC | masked pixels | training (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['pixel_precision']:.3f} | {r['pixel_recall']:.3f} | {r['pixel_f1']:.3f} | "
            f"{r['pixel_f1_all_ones']:.3f} | {r['pixel_f1_random']:.3f} | {r['pixel_auc']:.3f} | {100 * r['pixel_area']:.1f}% | {r['train_s']:.0f} |"
        )
