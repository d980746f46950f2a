"""Design study of the object scorer on Ped2's development videos 01-06 only (the protocol's dev
half; 07-12 are never read here): the objects of every training and development frame are found and
described once (cached under ~/.cache/vad/objects_study), then settings are compared in seconds.

    python bench/ped2_objects.py cache          # boxes, flows and attributes of every frame (minutes)
    python bench/ped2_objects.py compare        # the settings table on 01-06

What it compares is what `vad.models.scorers.objects` does (the same detector, flow, attribute,
density and calibration code), with frames subsampled as `every` would; the chosen settings are
then recorded and measured by `bench/ped2.py --only objects` like every scorer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vad.datasets.ped2 import load_ped2  # noqa: E402

CACHE = Path.home() / ".cache" / "vad" / "objects_study"
FLOWS = {"fast": ("fast", None), "medium": ("medium", None), "medium_x2": ("medium", "x2")}


def frames_of(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".png", ".tif"))
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def describe_video(frames: np.ndarray, detector) -> list[dict]:
    """Per frame: detector boxes (score >= 0.1), moving-region boxes, and each box's velocity under every flow setting."""
    import cv2

    from vad.models.scorers.objects.attributes import Flow, flow_velocity, geometry
    from vad.models.scorers.objects.detector import Boxes, moving_regions

    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    flows = {name: Flow(preset) for name, (preset, _) in FLOWS.items()}
    h, w = grey.shape[1:]
    out = []
    for t in range(len(frames)):
        other = t + 1 if t + 1 < len(frames) else t - 1
        boxes = Boxes.concat([detector(frames[t], 0.1), moving_regions(grey[other], grey[t], threshold=20, min_area=int(0.0005 * h * w))])
        a, b = (grey[t], grey[t + 1]) if t + 1 < len(frames) else (grey[t - 1], grey[t])
        row = {"xyxy": boxes.xyxy, "score": boxes.score, "classes": boxes.classes.astype(np.float16), "source": boxes.source,
               "geometry": geometry(boxes.xyxy, h, w)}
        for name, (_, scale) in FLOWS.items():
            if scale == "x2":
                big = (w * 2, h * 2)
                flow = flows[name](cv2.resize(a, big), cv2.resize(b, big))
                flow = cv2.resize(flow, (w, h)) / 2
            else:
                flow = flows[name](a, b)
            row[f"v1_{name}"] = flow_velocity(flow, boxes.xyxy, 1)
            row[f"v8_{name}"] = flow_velocity(flow, boxes.xyxy, 8)
        out.append(row)
    return out


def cache(args) -> None:
    from vad.datasets import data_dir
    from vad.models.scorers.objects.detector import load_detector

    ped2 = load_ped2()
    detector = load_detector(str(data_dir("yolox_nano.onnx") / "yolox_nano.onnx"))
    CACHE.mkdir(parents=True, exist_ok=True)
    jobs = [("train", p) for p in sorted(ped2.train_dir.iterdir()) if p.is_dir()]
    jobs += [("dev", ped2.test_dir / v) for v in ("01", "02", "03", "04", "05", "06")]
    for kind, folder in jobs:
        target = CACHE / f"{kind}_{folder.name}.npz"
        if target.exists():
            continue
        t0 = time.perf_counter()
        rows = describe_video(frames_of(folder), detector)
        flat = {f"{i}/{k}": v for i, row in enumerate(rows) for k, v in row.items()}
        np.savez_compressed(target, frames=len(rows), **flat)
        print(f"{kind} {folder.name}: {len(rows)} frames, {time.perf_counter() - t0:.0f} s", flush=True)


def load(kind: str) -> dict[str, list[dict]]:
    out = {}
    for f in sorted(CACHE.glob(f"{kind}_*.npz")):
        z = np.load(f)
        n = int(z["frames"])
        keys = sorted({k.split("/", 1)[1] for k in z.files if "/" in k})
        out[f.stem.split("_", 1)[1]] = [{k: z[f"{i}/{k}"] for k in keys} for i in range(n)]
    return out


def select(row: dict, s: dict) -> dict:
    """The boxes a setting keeps: detector boxes above its threshold, moving regions it does not cover."""
    from vad.models.scorers.objects.detector import Boxes, merge_boxes

    src = row["source"]
    det = (src == 0) & (row["score"] >= s["score_threshold"])
    mov = src == 1
    boxes = Boxes(row["xyxy"], row["score"], row["classes"].astype(np.float32), src)
    keep_det = np.flatnonzero(det) if s["boxes"] in ("both", "detector") else np.zeros(0, int)
    keep_mov = np.flatnonzero(mov) if s["boxes"] in ("both", "motion") else np.zeros(0, int)
    if s["boxes"] == "both":
        merged = merge_boxes(boxes.take(keep_det), boxes.take(keep_mov))
        covered = {tuple(x) for x in merged.xyxy[merged.source == 1].tolist()}
        keep_mov = np.array([i for i in keep_mov if tuple(row["xyxy"][i].tolist()) in covered], int)
    keep = np.concatenate([keep_det, keep_mov]).astype(int)
    v = row[f"v{s['bins']}_{s['flow']}"][keep]
    h = np.clip(row["xyxy"][keep, 3] - row["xyxy"][keep, 1], 1, None)
    if s["scale"] == "height":
        v = v / h[:, None]
    return {"velocity": v, "geometry": row["geometry"][keep], "appearance": row["classes"][keep].astype(np.float32)}


def evaluate(s: dict, train: dict, dev: dict, labels: dict, seed: int = 0) -> dict:
    from vad.evaluation.metrics import frame_level_report
    from vad.models.scorers.objects.density import GaussianDensity, NearestDensity, calibration

    rng = np.random.default_rng(seed)
    names = sorted(train)
    held = set(rng.choice(names, 2, replace=False).tolist())  # calibrated on 2 held-out training videos
    def frames(videos, every): return [(v, t, select(r, s)) for v in videos for t, r in enumerate(videos[v]) if t % every == 0]
    fit_rows = [o for v, _, o in frames({k: train[k] for k in names if k not in held}, s["every"])]
    dens = {}
    for a in s["attributes"]:
        x = np.concatenate([o[a] for o in fit_rows])
        if a == "appearance":
            d = NearestDensity(80, k=s["k"], bank_size=4096)
        else:
            d = GaussianDensity(x.shape[1], s["components"])
        d.fit(x)
        dens[a] = d
    def raw(o): return np.stack([dens[a].score(o[a]) if len(o[a]) else np.zeros(0) for a in s["attributes"]], 1) if len(o["velocity"]) else np.zeros((0, len(s["attributes"])))
    cal = np.concatenate([raw(o) for _, _, o in frames({k: train[k] for k in held}, s["every"])])
    low, high = calibration(cal, 0.999)
    scores = {}
    for v, rows in dev.items():
        out = np.full(len(rows), np.nan)
        for t, row in enumerate(rows):
            if t % s["every"]:
                continue
            r = raw(select(row, s))
            out[t] = ((r - low) / (high - low)).sum(1).max() if len(r) else 0.0
        scores[v] = out  # frames between analysed ones: nan, filled by the evaluation (fill_gaps)
    rep = frame_level_report([labels[v] for v in sorted(dev)], [scores[v] for v in sorted(dev)], "none", s["smoothing"])
    return {"micro": rep["auc_micro"], "macro": rep["auc_macro"]}


BASE = {"boxes": "both", "score_threshold": 0.3, "flow": "fast", "bins": 1, "scale": "pixels", "every": 2,
        "attributes": ("velocity",), "components": 8, "k": 1, "smoothing": 1}


def compare(args) -> None:
    train, dev = load("train"), load("dev")
    labels = load_ped2().test_labels("dev")
    grid = json.loads(args.grid) if args.grid else {}
    keys = list(grid)
    for values in itertools.product(*[grid[k] for k in keys]) if keys else [()]:
        s = {**BASE, **dict(zip(keys, values))}
        s["attributes"] = tuple(s["attributes"])
        r = evaluate(s, train, dev, labels)
        print(f"{r['micro'] * 100:5.1f} {r['macro'] * 100:5.1f}  " + " ".join(f"{k}={s[k]}" for k in keys), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["cache", "compare"])
    parser.add_argument("--grid", default="", help='JSON {setting: [values]} over the BASE settings')
    args = parser.parse_args()
    cache(args) if args.step == "cache" else compare(args)


if __name__ == "__main__":
    main()
