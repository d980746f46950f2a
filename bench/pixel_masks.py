"""Pixel-level masks of vgg_ae, patch_knn and objects against ground truth: precision, recall, F1 and pixel AUC.

    .venv/bin/python bench/pixel_masks.py [--epochs 10] [--percentile 99] [--only vgg_ae,patch_knn,objects]

UCSD Ped2's pixel masks are not in ../shared/data, so this runs on the synthetic scene, whose
renderer knows every anomalous pixel (a fast vehicle, a pedestrian crossing against the flow).
vgg_ae trains on normal scenes; masks come from the percentile threshold in both modes
("calibrated" on held-out normal frames, and the seed's "per_frame"); scores are pooled over the
anomalous frames. Chance F1 is what a random mask with the same number of pixels would get.
patch_knn (its record's defaults: Mixed_4b, bank 2000, threshold at the 99.9th percentile of held-out
normal patch scores) sees the same scenes upsampled 2x (16-frame clips at 128x192, an 8x12 patch
grid); its heat maps and masks are brought back to 64x96 before they are compared. objects (its
defaults, no detector: the scene's movers are no COCO objects, so moving-region boxes find them, and
objects on every frame of the small scene) fits on the same 6 normal scenes and calibrates on 2 at
64x96; its masks are the boxes of objects above the held-out normal objects' 99.9th percentile, its
heat map each box filled with its object's score.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.protocol import PIXEL_METRICS, PixelRecord, machine, today, write_pixel_record  # noqa: E402
from vad.evaluation.metrics import pixel_level_report
from vad.models.scorers import build_scorer
from vad.testing.synthetic import render_scene
from vad.training.local import fit

SIZE = (64, 96)


def _clips(frames: np.ndarray, clip_len: int) -> np.ndarray:
    n = len(frames) // clip_len * clip_len
    return frames[:n].reshape(-1, clip_len, *frames.shape[1:])


def _fit_and_pool(name: str, model, prepare, maps_and_masks, input_text: str, seed: int) -> list[dict]:
    """Fit `model` on 6 normal scenes (through `prepare`), calibrate on 2, score 3 test scenes; the
    report over their anomalous frames. `maps_and_masks(out)` -> per-frame pixel scores and masks at 64x96."""
    normal = [prepare(render_scene(seed + i, 96, *SIZE).frames) for i in range(8)]
    test = [render_scene(100 + seed + i, 96, *SIZE, anomalies=(("fast", 20), ("wrong_way", 50))) for i in range(3)]
    t0 = time.perf_counter()
    fit(model, np.concatenate([_clips(f, 16) for f in normal[:6]]), val_clips=np.concatenate([_clips(f, 16) for f in normal[6:]]))
    train_s = time.perf_counter() - t0
    predicted, scores, truth = [], [], []
    for scene in test:
        clips = torch.from_numpy(_clips(prepare(scene.frames), 16))
        with torch.inference_mode():
            maps, masks = maps_and_masks(model.score(clips if model.meta.uint8_input else clips.float() / 255))
        labels = scene.labels[: len(maps)]
        predicted.append(masks[labels])
        scores.append(maps[labels])
        truth.append(scene.masks[: len(maps)][labels])
    report = pixel_level_report(np.concatenate(predicted), np.concatenate(truth), pixel_scores=np.concatenate(scores), seed=seed)
    settings = {"hparams": model.hparams(), "input": input_text, "fit": "6 normal scenes, 2 to calibrate",
                "test": "3 scenes: a fast vehicle, a wrong-way pedestrian"}
    return [{"scorer": name, "mode": "calibrated", "settings": settings, "train_s": train_s, **report}]


def run_patch_knn(seed: int = 0) -> list[dict]:
    import torch.nn.functional as F

    def up(frames: np.ndarray) -> np.ndarray:
        x = F.interpolate(torch.from_numpy(frames[:, None]).float(), scale_factor=2, mode="bilinear", align_corners=False)
        return x[:, 0].clamp(0, 255).round().to(torch.uint8).numpy()

    model = build_scorer("patch_knn")

    def maps_and_masks(out):
        maps = F.avg_pool2d(out.pixel_scores.flatten(0, 1)[:, None], 2)[:, 0].numpy()  # back to 64x96
        return maps, maps > float(model.pixel_threshold)

    return _fit_and_pool("patch_knn", model, up, maps_and_masks, "synthetic scene 64x96 upsampled 2x to 128x192, 16-frame clips", seed)


def run_objects(seed: int = 0) -> list[dict]:
    def maps_and_masks(out):
        return out.pixel_scores.flatten(0, 1).numpy(), out.mask.flatten(0, 1).numpy()

    model = build_scorer("objects", detector=None, every=1)
    return _fit_and_pool("objects", model, lambda frames: frames, maps_and_masks, "synthetic scene 64x96, 16-frame clips", seed)


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
        model.mask_mode = mode  # vgg_ae
        with torch.inference_mode():
            x = torch.from_numpy(frames[:, None]).float() / 255  # each frame as a 1-frame clip
            out = model.score(x)
            errors = model.pixel_errors(x)[:, 0].numpy()
        predicted = out.mask[:, 0].numpy()
        report = pixel_level_report(predicted, truth, pixel_scores=errors, seed=seed)
        settings = {"hparams": model.hparams(), "epochs": epochs, "lr": 1e-3, "batch_size": 8, "input": "synthetic scene 64x96, 4-frame clips",
                    "fit": "8 normal scenes", "test": "3 scenes: a fast vehicle, a wrong-way pedestrian"}
        rows.append({"scorer": "vgg_ae", "mode": mode, "settings": settings, "train_s": train_s, **report})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--percentile", type=float, default=99.0)
    parser.add_argument("--only", default="vgg_ae,patch_knn,objects")
    parser.add_argument("--no-write", action="store_true", help="print only; write no record")
    args = parser.parse_args(argv)
    only = args.only.split(",")
    rows = (run(args.epochs, args.percentile) if "vgg_ae" in only else []) + (run_patch_knn() if "patch_knn" in only else [])
    rows += run_objects() if "objects" in only else []
    command = "bench/pixel_masks.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print("| scorer | mask mode | precision | recall | F1 | F1 all-ones mask | F1 random mask, same area | pixel AUC | masked pixels | training (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scorer']} | {r['mode']} | {r['pixel_precision']:.3f} | {r['pixel_recall']:.3f} | {r['pixel_f1']:.3f} | "
            f"{r['pixel_f1_all_ones']:.3f} | {r['pixel_f1_random']:.3f} | {r['pixel_auc']:.3f} | {100 * r['pixel_area']:.1f}% | {r['train_s']:.0f} |"
        )
        if not args.no_write:
            record = PixelRecord(
                scorer=r["scorer"], mode=r["mode"], settings=r["settings"], seeds=[0],
                figures={m: [float(r[m])] for m in PIXEL_METRICS}, fit_s=[round(r["train_s"], 1)], date=today(),
                machine=machine(), command=command,
            )
            print(f"wrote {write_pixel_record(record)}")


if __name__ == "__main__":
    main()
