"""Choosing patch_knn's settings without the test set: UCSD Ped2 TRAINING videos only.

The training videos are split as `bench/ped2.py --held-out 4` splits them (seed 0): the held-out four
get the project's pseudo-anomalies (`vad.evaluation.pseudo_anomalies`, default kinds), the other
twelve are the normal footage: 90% of their clips (16 frames, back to back) feed the bank, 10% at
random calibrate it, exactly as `vad.training.local.fit` does in `bench/ped2.py`. Features are
extracted once per input size and layer; every bank/k/pooling/calibration/normalisation setting is
then scored from them. Prints one line per setting, sorted by pseudo-anomaly micro AUC.

    .venv/bin/python bench/ped2_patch_knn.py [--sizes 160x240,240x352] [--layers Mixed_4f] [--grid JSON] [--out grid.jsonl]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.ped2_harness import _clips_with_starts, split_training_videos  # noqa: E402
from vad.config import DecodeConfig
from vad.datasets.ped2 import load_ped2
from vad.evaluation.metrics import frame_level_report, frames_from_clips
from vad.evaluation.pseudo_anomalies import DEFAULT_KINDS, cut_clips, inject_pseudo_anomaly
from vad.models.scorers import build_scorer
from vad.models.inputs import unit_clips

GRID = {
    "bank_size": [2000, 10000, 30000],
    "k": [1, 5],
    "pooling": ["max", "top"],
    "calibration": ["none", "global", "position"],
    "normalise": ["none", "minmax"],
}


def features(model, clips: np.ndarray, batch: int = 4) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.patch_features(unit_clips(clips[i : i + batch])) for i in range(0, len(clips), batch)])


def extract(size: tuple[int, int], layer: str, seed: int = 0) -> dict:
    ped2 = load_ped2()
    train_keys, val_keys = split_training_videos(ped2, 4, seed)
    model = build_scorer("patch_knn", layer=layer)
    decode = DecodeConfig(clip_len=16, stride=16, resize=size)
    train = np.concatenate([c for _, c in _clips_with_starts(ped2.train_dir, decode, train_keys).values()])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_cal = max(1, round(0.1 * len(train)))
    t0 = time.perf_counter()
    bank_f, cal_f = features(model, train[order[n_cal:]]), features(model, train[order[:n_cal]])
    fit_extract_s = time.perf_counter() - t0
    frames = decode.model_copy(update={"clip_len": 1, "stride": 1})
    val = []
    rng = np.random.default_rng(seed)
    for key, (_, clips) in sorted(_clips_with_starts(ped2.train_dir, frames, val_keys).items()):
        for kind in DEFAULT_KINDS:
            injected, y = inject_pseudo_anomaly(clips[:, 0], kind, rng)
            starts, cut = cut_clips(injected, 16, 8)
            val.append((y, starts, features(model, cut)))
    n = len(train) + sum(len(s) for _, s, _ in val)
    print(f"# {layer} {size}: {len(train)} fit clips, {sum(len(s) for _, s, _ in val)} val clips; "
          f"{n / (time.perf_counter() - t0):.2f} clips/s extraction", flush=True)
    return {"bank": bank_f, "cal": cal_f, "val": val, "fit_extract_s": fit_extract_s}


def nearest(data: dict, layer: str, bank_size: int, k_max: int) -> dict:
    """The bank of `bank_size` and the sorted distances of every calibration and validation patch to
    its `k_max` nearest bank patches (every k <= k_max is scored from them)."""
    import faiss

    model = build_scorer("patch_knn", layer=layer, bank_size=bank_size, max_candidates=max(100000, bank_size))
    t0 = time.perf_counter()
    model.build_bank(data["bank"].flatten(0, 3))
    coreset_s = time.perf_counter() - t0
    index = faiss.IndexFlatL2(model.bank.shape[1])
    index.add(model.bank.numpy())

    def search(f):
        d, _ = index.search(f.reshape(-1, f.shape[-1]).numpy(), k_max)
        return torch.from_numpy(d).clamp_min(0).sqrt().view(*f.shape[:-1], k_max)

    t0 = time.perf_counter()
    out = {"cal": search(data["cal"]), "val": [search(f) for _, _, f in data["val"]]}
    print(f"# bank {len(model.bank)}: coreset {coreset_s:.0f} s, kNN {time.perf_counter() - t0:.0f} s", flush=True)
    return {**out, "bank": len(model.bank), "coreset_s": coreset_s}


def evaluate(data: dict, near: dict, layer: str, setting: dict) -> dict:
    hp = {k: v for k, v in setting.items() if k != "normalise"}
    model = build_scorer("patch_knn", layer=layer, max_candidates=max(100000, hp["bank_size"]), **hp)
    k = setting["k"]
    model.calibrate_distances(near["cal"][..., :k].mean(-1))
    labels, scores = [], []
    for (y, starts, _), d in zip(data["val"], near["val"]):
        frame_scores = model.output(model.calibrated(d[..., :k].mean(-1)), 16).frame_scores.numpy()
        labels.append(y)
        scores.append(frames_from_clips(len(y), [(s, 1, fs) for s, fs in zip(starts, frame_scores)], "mean"))
    report = frame_level_report(labels, scores, setting["normalise"], 1)
    return {**setting, "layer": layer, "auc_micro": report["auc_micro"], "auc_macro": report["auc_macro"], "bank": near["bank"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="160x240")
    parser.add_argument("--layers", default="Mixed_4f")
    parser.add_argument("--out", default=None, help="append every result as a JSON line")
    parser.add_argument("--grid", type=json.loads, default=None, help='JSON replacing some of GRID\'s lists, e.g. \'{"k": [1]}\'')
    args = parser.parse_args()
    GRID.update(args.grid or {})
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for size_text, layer in itertools.product(args.sizes.split(","), args.layers.split(",")):
        size = tuple(int(v) for v in size_text.split("x"))
        data = extract(size, layer)
        near = {b: nearest(data, layer, b, max(GRID["k"])) for b in GRID["bank_size"]}
        for values in itertools.product(*GRID.values()):
            setting = dict(zip(GRID, values))
            row = {**evaluate(data, near[setting["bank_size"]], layer, setting), "size": size_text}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    for row in sorted(rows, key=lambda r: -r["auc_micro"])[:15]:
        print(f"{row['auc_micro']:.4f} {row['auc_macro']:.4f} " + " ".join(f"{k}={row[k]}" for k in ("size", "layer", *GRID)))
