"""Fleet benchmarks (run by hand; figures go to bench/RESULTS.md):

1. training: a fleet of N synthetic cameras vs one camera with the same footage per camera; wall time
   per camera and parallel efficiency on the cores Ray has;
2. scoring: N cameras with N models vs the same footage with one model (throughput ratio, target >= 0.9);
3. the writer's ceiling in isolation: clips/s of turning scored batches into tables (the routing
   stage) and of gathering and writing whole videos (one `WriteScores`), memory held for partial
   videos, and the rate through 1, 2 and 4 writer actors.

    .venv/bin/python bench/fleet.py [--cameras 20] [--videos 3] [--frames 160] [--skip-training]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vad.config import (  # noqa: E402
    DecodeConfig,
    MlflowConfig,
    OutputConfig,
    RayConfig,
    ScoreJobConfig,
    ScorerConfig,
    SourceConfig,
    TrainJobConfig,
    TrainLoopConfig,
    TrainModelConfig,
    TrainOutputConfig,
)

DECODE = DecodeConfig(clip_len=16, stride=8, resize=(64, 64), grayscale=True)


def train_config(root: Path, work: Path, include: tuple[str, ...] = ()) -> TrainJobConfig:
    return TrainJobConfig(
        source=SourceConfig(uri=str(root), include=include),
        output=TrainOutputConfig(checkpoint=str(work / "models" / "{camera}.pt"), version="b1"),
        model=TrainModelConfig(name="conv_ae", hparams={"widths": [32, 16, 8]}),
        train=TrainLoopConfig(epochs=4, batch_size=16, key_regex="/train_", val_fraction=0.34, per_camera=True, device="cpu", min_camera_clips=8),
        decode=DECODE.model_copy(update={"stride": 4}),
        mlflow=MlflowConfig(enabled=False),
        work_dir=str(work),
    )


def bench_training(root: Path, scratch: Path, cameras: int) -> dict:
    from vad.cluster import ensure_ray
    from vad.training.fleet import run_fleet_training

    ensure_ray(None, None)  # Ray's start-up is not part of either figure
    t = time.perf_counter()
    alone = run_fleet_training(train_config(root, scratch / "one", include=("cam01/*",)))
    one = time.perf_counter() - t
    t = time.perf_counter()
    summary = run_fleet_training(train_config(root, scratch / "all"))
    fleet = time.perf_counter() - t
    import ray

    cores = int(ray.cluster_resources().get("CPU", 1))
    busy = sum(row["seconds"] for row in summary.rows)
    print(f"training: 1 camera alone {one:.1f} s wall ({alone.rows[0]['seconds']:.1f} s in its task); {cameras} cameras {fleet:.1f} s "
          f"wall = {fleet / cameras:.2f} s per camera ({one / (fleet / cameras):.1f}x faster per camera than alone); "
          f"camera tasks {busy:.1f} s in all = {busy / cameras:.2f} s each, parallel efficiency {busy / (fleet * min(cores, cameras)):.2f} "
          f"on {cores} cores")
    return {"models": {row["camera"]: row["checkpoint"] for row in summary.rows if row["status"] == "trained"}}


def score_config(root: Path, out: Path, work: Path, checkpoint: str, cameras: dict | None = None) -> ScoreJobConfig:
    return ScoreJobConfig(
        source=SourceConfig(uri=str(root), include=("*/test_*",)),
        output=OutputConfig(uri=str(out)),
        scorer=ScorerConfig(name="conv_ae", checkpoint=checkpoint, cameras=cameras or {}, batch_size=16, device="cpu",
                            concurrency=int(os.cpu_count() or 1)),
        decode=DECODE, mlflow=MlflowConfig(enabled=False), ray=RayConfig(), work_dir=str(work),
    )


def bench_scoring(root: Path, scratch: Path, models: dict[str, str]) -> None:
    from vad.scoring.job import run_scoring

    one_model = next(iter(models.values()))
    template = str(Path(one_model).parent / "{camera}.pt")
    rates = {}
    for name, cfg in (
        ("1 model", score_config(root, scratch / "out-one", scratch, one_model)),
        (f"{len(models)} models", score_config(root, scratch / "out-fleet", scratch, template, models)),
    ):
        summary = run_scoring(cfg)
        rates[name] = summary.clips_per_s
        print(f"scoring with {name}: {summary.clips} clips from {summary.videos} videos in {summary.wall_s:.1f} s = {summary.clips_per_s:.1f} clips/s")
    names = list(rates)
    print(f"scoring throughput ratio ({names[1]} / {names[0]}): {rates[names[1]] / rates[names[0]]:.2f} (target >= 0.9)")


def scored_batch(video: str, start: int, n: int, clips_in_video: int, clip_len: int = 16) -> dict:
    rng = np.random.default_rng(start)
    return {
        "run_id": np.array(["r"] * n, dtype=object), "clip_id": np.array([f"{video}-{start + i}" for i in range(n)], dtype=object),
        "video_uri": np.array([video] * n, dtype=object), "clip_index": np.arange(start, start + n, dtype=np.int32),
        "start_frame": np.arange(start, start + n) * clip_len, "end_frame": np.arange(start, start + n) * clip_len + clip_len - 1,
        "frame_step": np.ones(n, np.int16), "start_time_s": np.zeros(n), "end_time_s": np.zeros(n),
        "model_name": np.array(["vad-conv-ae.cam01"] * n, dtype=object), "model_version": np.array(["1"] * n, dtype=object),
        "model_fallback": np.zeros(n, bool), "score": rng.random(n, dtype=np.float32), "threshold": np.full(n, 0.5, np.float32),
        "is_anomaly": np.zeros(n, bool), "frame_scores": rng.random((n, clip_len), dtype=np.float32),
        "date": np.array(["2026-11-24"] * n, dtype=object), "camera": np.array(["cam01"] * n, dtype=object),
        "video_size": np.full(n, 1000), "video_mtime": np.full(n, 1.0), "clips_in_video": np.full(n, clips_in_video),
    }


def bench_writer(scratch: Path, videos: int = 200, clips_per_video: int = 225, batch: int = 32) -> None:
    """One hour of 720p30 footage is 6,750 clips at stride 16: 200 videos x 225 clips is 6.7 hours."""
    import ray

    from vad.scoring.writer import WriteScores, route_to_writers, video_parts

    # Batches of 8 videos at a time interleaved, as 8 scoring actors deliver them (8 videos in flight).
    batches = []
    for first in range(0, videos, 8):
        for start in range(0, clips_per_video, batch):
            for v in range(first, min(first + 8, videos)):
                uri = f"/archive/cam01/2026-11-24/v{v:04d}.mp4"
                batches.append(scored_batch(uri, start, min(batch, clips_per_video - start), clips_per_video))
    clips = videos * clips_per_video
    now = dt.datetime.now(dt.timezone.utc)
    t = time.perf_counter()
    parts = [video_parts(b, now) for b in batches]
    route_s = time.perf_counter() - t
    writer = WriteScores(output_uri=str(scratch / "writer-out"), storage=None, decode=DECODE)
    peak_videos = peak_bytes = 0
    t = time.perf_counter()
    for p in parts:
        writer.add(p)
        held = writer._pending
        if len(held) > peak_videos:
            peak_videos = len(held)
            peak_bytes = sum(s.nbytes for state in held.values() for s, _ in state["parts"])
    write_s = time.perf_counter() - t
    print(f"writer in one process: tables {clips / route_s:,.0f} clips/s (the routing stage, parallel in Ray Data); "
          f"gather + write {clips / write_s:,.0f} clips/s (one WriteScores); peak held: {peak_videos} partial videos, {peak_bytes / 2**20:.1f} MB")
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    route = ray.remote(num_cpus=0.1)(route_to_writers)
    from vad.scoring.decoding import concatenate_batches

    actor = ray.remote(num_cpus=0.1)(WriteScores)
    for per_task in (1, 8):  # scored batches per routing task (the job's writer stage takes up to 256 clips)
        grouped = [concatenate_batches(batches[i : i + per_task]) for i in range(0, len(batches), per_task)]
        refs = [ray.put(b) for b in grouped]
        for n in (1, 2, 4):
            warm_up = [actor.remote(output_uri=str(scratch / f"warm-up-{n}"), storage=None, decode=DECODE) for _ in range(n)]
            ray.get([route.remote(b, writers=warm_up) for b in refs[: 224 // per_task]])  # Ray starts the task workers
            for w in warm_up:
                ray.kill(w)
            writers = [actor.remote(output_uri=str(scratch / f"writers-{per_task}-{n}"), storage=None, decode=DECODE) for _ in range(n)]
            ray.get([w.pending.remote() for w in writers])
            t = time.perf_counter()
            ray.get([route.remote(b, writers=writers) for b in refs])
            seconds = time.perf_counter() - t
            print(f"writer through Ray, {n} writer actor(s), one routing task per {batch * per_task} clips: {clips / seconds:,.0f} clips/s")
            for w in writers:
                ray.kill(w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=20)
    parser.add_argument("--videos", type=int, default=3, help="normal videos per camera")
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--skip-training", action="store_true", help="only the writer benchmark")
    args = parser.parse_args()
    from vad.testing.synthetic import generate_dataset

    with tempfile.TemporaryDirectory(prefix="vad-bench-fleet-") as folder:
        scratch = Path(folder)
        print(f"machine: {os.cpu_count()} cores; {args.cameras} cameras x {args.videos} normal + 1 test videos of {args.frames} frames")
        if not args.skip_training:
            root = scratch / "archive"
            generate_dataset(root, cameras=args.cameras, train_per_camera=args.videos, test_per_camera=1, num_frames=args.frames,
                             distinct_views=True)
            trained = bench_training(root, scratch, args.cameras)
            bench_scoring(root, scratch, trained["models"])
        bench_writer(scratch)


if __name__ == "__main__":
    main()
