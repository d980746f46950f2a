"""A small synthetic surveillance scene with known anomalous frames.

A fixed camera looks at a walkway: pedestrians walk left or right along lanes
at walking speed. Anomalies are injected with exact frame labels:

- ``fast``: a bright vehicle crossing the walkway several times faster than a walker;
- ``wrong_way``: a pedestrian crossing the lanes vertically, against the flow.

A second view (`VIEWS`, for camera fleets) looks at a road instead: vehicles drive along the lanes,
and the anomalies are pedestrians on the road (``pedestrian`` along a lane, ``wrong_way`` across).
In a fleet (`generate_dataset(distinct_views=True)`) each view's anomaly is the other's normal traffic
(``vehicle`` on the walkway, ``pedestrian`` on the road), so one model of both cameras' normal
misses what a model of each camera's own normal catches.

Used by the demo, the fast tests and the benchmarks' smoke runs; real accuracy
is measured on UCSD Ped2 (see bench/).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ANOMALY_KINDS = ("fast", "wrong_way", "pedestrian")


@dataclass
class Scene:
    frames: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) bool, True where an anomaly is visible
    masks: np.ndarray | None = None  # (N, H, W) bool, the anomalous object's pixels
    anomalies: list[dict] = field(default_factory=list)


# A camera's view: a walkway (walkers; anomalies: a vehicle, a walker crossing) or a road (vehicles;
# anomalies: walkers on it). `movers`: (count, height, width, tone range, speed range) of the normal traffic.
# `fleet_anomalies`: the kinds a fleet's cameras of this view get (`generate_dataset(distinct_views=True)`):
# the other view's normal traffic, in a lane, at its usual speed.
VIEWS = (
    {"name": "walkway", "movers": (6, 12, 5, (40.0, 80.0), (0.6, 1.1)), "anomalies": ("fast", "wrong_way"),
     "fleet_anomalies": ("vehicle", "vehicle")},
    {"name": "road", "movers": (3, 14, 26, (215.0, 245.0), (2.5, 4.0)), "anomalies": ("pedestrian", "wrong_way"),
     "fleet_anomalies": ("pedestrian", "pedestrian")},
)
LANE = 0.3 + 0.5 * 2 / 3  # the third of the four lanes, as a share of the height


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    base = 150 + 40 * y - 20 * x + rng.normal(0, 4, (height, width))
    for row in np.linspace(0.25, 0.85, 4):  # paving lines
        base[int(row * height), :] -= 25
    return base


def _stamp(canvas: np.ndarray, cy: float, cx: float, h: int, w: int, value: float, mask: np.ndarray | None = None) -> bool:
    height, width = canvas.shape
    y0, y1 = int(round(cy - h / 2)), int(round(cy + h / 2))
    x0, x1 = int(round(cx - w / 2)), int(round(cx + w / 2))
    y0c, y1c, x0c, x1c = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    if y0c >= y1c or x0c >= x1c:
        return False
    canvas[y0c:y1c, x0c:x1c] = value
    if mask is not None:
        mask[y0c:y1c, x0c:x1c] = True
    return True


def _draw_anomaly(canvas: np.ndarray, kind: str, age: int, mask: np.ndarray) -> bool:
    """Draw anomaly `kind`, `age` frames after it started, into a frame (and its mask); whether any of it shows."""
    height, width = canvas.shape
    if kind == "fast":
        return _stamp(canvas, height * 0.55, -20 + 7.0 * age, 14, 26, 235, mask)
    if kind == "wrong_way":
        visible = _stamp(canvas, -10 + 2.0 * age, width * 0.5, 12, 5, 55, mask)
        return visible | _stamp(canvas, -18 + 2.0 * age, width * 0.5, 4, 4, 35, mask)
    if kind == "pedestrian":  # a walker along a lane, where only vehicles go
        visible = _stamp(canvas, height * LANE, -10 + 0.9 * age, 12, 5, 60, mask)
        return visible | _stamp(canvas, height * LANE - 8, -10 + 0.9 * age, 4, 4, 40, mask)
    if kind == "vehicle":  # a vehicle along a lane at road speed, where only walkers go
        return _stamp(canvas, height * LANE, -20 + 3.0 * age, 14, 26, 230, mask)
    raise ValueError(f"unknown anomaly kind {kind!r}; choose from {ANOMALY_KINDS}")


def render_scene(
    seed: int,
    num_frames: int,
    height: int = 120,
    width: int = 160,
    anomalies: tuple[tuple[str, int], ...] = (),
    walkers: int | None = None,
    view: int = 0,
) -> Scene:
    """Render a scene; `anomalies` is a tuple of (kind, start_frame); `view` indexes `VIEWS`;
    `walkers`: how many movers of the view's normal traffic (None: the view's own number)."""
    count, mover_h, mover_w, tones, speeds = VIEWS[view % len(VIEWS)]["movers"]
    walking = mover_w < mover_h  # walkers have a head and bob as they go
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    lanes = np.linspace(0.3, 0.8, 4) * height
    people = []
    for _ in range(count if walkers is None else walkers):
        direction = rng.choice([-1.0, 1.0])
        people.append(
            {
                "y": float(rng.choice(lanes) + rng.normal(0, 2)),
                "x": float(rng.uniform(0, width)),
                "v": direction * rng.uniform(*speeds),
                "tone": float(rng.uniform(*tones)),
                "phase": float(rng.uniform(0, 6.28)),
            }
        )
    frames = np.empty((num_frames, height, width), dtype=np.uint8)
    labels = np.zeros(num_frames, dtype=bool)
    masks = np.zeros((num_frames, height, width), dtype=bool)
    for t in range(num_frames):
        canvas = background.copy()
        for p in people:
            margin = 10 if walking else mover_w  # off-screen run-out before wrapping round
            x = (p["x"] + p["v"] * t) % (width + 2 * margin) - margin
            bob = 1.0 * np.sin(p["phase"] + 0.5 * t) if walking else 0.0
            _stamp(canvas, p["y"] + bob, x, mover_h, mover_w, p["tone"])  # body
            if walking:
                _stamp(canvas, p["y"] - 8 + bob, x, 4, 4, p["tone"] - 20)  # head
        for kind, start in anomalies:
            if t >= start:
                labels[t] |= _draw_anomaly(canvas, kind, t - start, masks[t])
        noise = rng.normal(0, 2.0, canvas.shape)
        frames[t] = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    described = [{"kind": k, "start_frame": s} for k, s in anomalies]
    return Scene(frames=frames, labels=labels, masks=masks, anomalies=described)


def encode_mp4(frames: np.ndarray, fps: float = 25.0, timestamps_s: list[float] | None = None) -> bytes:
    """H.264 (yuv420p) in MP4, written in memory with PyAV; dimensions are rounded down to even.
    With `timestamps_s` (one per frame, increasing) the video has a variable frame rate."""
    from fractions import Fraction

    import av

    n, height, width = frames.shape[:3]
    height, width = height - height % 2, width - width % 2
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "g": "32"}
        if timestamps_s is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.options = {**stream.options, "bf": "0"}
        for i, frame in enumerate(frames):
            rgb = np.repeat(frame[:height, :width, None], 3, axis=2) if frame.ndim == 2 else frame[:height, :width]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if timestamps_s is not None:
                video_frame.pts, video_frame.time_base = int(round(timestamps_s[i] * 1000)), Fraction(1, 1000)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@dataclass
class GeneratedVideo:
    key: str  # relative path, e.g. cam01/2026-11-24/test_000.mp4
    split: str  # "train" (normal only) or "test"
    labels: list[int]
    anomalies: list[dict]


def generate_dataset(
    out_dir: str | Path,
    cameras: int = 2,
    train_per_camera: int = 2,
    test_per_camera: int = 2,
    num_frames: int = 160,
    height: int = 120,
    width: int = 160,
    fps: float = 25.0,
    date: str = "2026-11-24",
    seed: int = 0,
    masks_dir: str | Path | None = None,
    distinct_views: bool = False,
) -> list[GeneratedVideo]:
    """Write `camNN/<date>/{train,test}_XXX.mp4` plus `labels.json`; every test video holds anomalies.
    With `masks_dir`, each test video's pixel ground truth goes there as `camNN/<date>/test_XXX.npy`
    ((T, H, W) booleans, the format `vad evaluate --masks` reads). With `distinct_views`, cameras
    alternate between the `VIEWS`, walkway and road (a fleet whose cameras each have their own normal)."""
    out = Path(out_dir)
    made: list[GeneratedVideo] = []
    counter = 0
    for cam in range(cameras):
        for split, count in (("train", train_per_camera), ("test", test_per_camera)):
            for i in range(count):
                counter += 1
                anomalies: tuple[tuple[str, int], ...] = ()
                view = cam % len(VIEWS) if distinct_views else 0
                if split == "test":
                    kinds = VIEWS[view]["fleet_anomalies" if distinct_views else "anomalies"]
                    anomalies = ((kinds[(cam + i) % 2], num_frames // 4), (kinds[(cam + i + 1) % 2], (num_frames * 5) // 8))
                scene = render_scene(seed * 1000 + counter, num_frames, height, width, anomalies, view=view)
                key = f"cam{cam + 1:02d}/{date}/{split}_{i:03d}.mp4"
                path = out / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_mp4(scene.frames, fps))
                if masks_dir is not None and split == "test" and scene.masks is not None:
                    truth = Path(masks_dir) / Path(key).with_suffix(".npy")
                    truth.parent.mkdir(parents=True, exist_ok=True)
                    np.save(truth, scene.masks)
                made.append(GeneratedVideo(key, split, scene.labels.astype(int).tolist(), scene.anomalies))
    (out / "labels.json").write_text(json.dumps([v.__dict__ for v in made]))
    return made
