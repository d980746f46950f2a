"""Soak the nightly job with faults: bad objects, a flaky object store and killed actors.

    .venv/bin/python bench/fault_soak.py [--videos 300] [--fault-share 0.2] [--kill-actors 2]
                                         [--fail-rate 0.05] [--drop-rate 0.01] [--seed 0]

Generates short synthetic videos on a local S3 server (moto), replaces a share of them with
objects of a random fault kind (vad.testing.faults: zero bytes, truncated, garbage, non-video, too short,
a frame folder with a broken frame, variable frame rate, odd size), puts a fault-injecting proxy
between the job and the store (503s, dropped connections, slow answers), SIGKILLs scoring actors
while the job runs, then runs the job a second time. Prints: videos in, clips expected, clips
written, duplicates, missing clips, errors recorded (expected and not), wall time, and what the
re-run did. The model is an untrained Conv-AE: this measures bookkeeping, not accuracy.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vad.config import DecodeConfig, MlflowConfig, OutputConfig, RayConfig, RunPolicyConfig, ScoreJobConfig, ScorerConfig, SourceConfig
from vad.models.checkpoint import decode_record, save_checkpoint
from vad.scoring.job import run_scoring
from vad.testing.faults import FAULT_KINDS, FaultyS3Proxy, bad_object
from vad.testing.s3server import start_local_s3
from vad.testing.synthetic import encode_mp4, render_scene
from vad.video.clips import clip_starts

DAY = "2026-11-24"
DECODE = DecodeConfig(clip_len=8, stride=8, resize=(48, 64), grayscale=True, clips_per_batch=4)


def build_archive(s3, videos: int, fault_share: float, rng: np.random.Generator) -> dict:
    """Upload the archive; returns {uri: (kind, expected frames or None)}."""
    client = s3.client()
    client.create_bucket(Bucket="soak")
    plan = {}
    for i in range(videos):
        prefix = f"footage/cam{i % 4:02d}/{DAY}"
        if rng.random() < fault_share:
            kind = str(rng.choice(sorted(FAULT_KINDS)))
            obj = bad_object(kind, rng, clip_len=DECODE.clip_len, frames=int(rng.integers(24, 49)), name=f"v{i:04d}")
            for rel, data in obj.files.items():
                client.put_object(Bucket="soak", Key=f"{prefix}/{rel}", Body=data)
            plan[f"s3://soak/{prefix}/{obj.name}"] = (kind, obj.frames if obj.expect == "scored" else None)
        else:
            frames = int(rng.integers(24, 49))
            data = encode_mp4(render_scene(int(rng.integers(1 << 30)), frames, height=64, width=96).frames)
            client.put_object(Bucket="soak", Key=f"{prefix}/v{i:04d}.mp4", Body=data)
            plan[f"s3://soak/{prefix}/v{i:04d}.mp4"] = ("good", frames)
    return plan


def kill_scoring_actors(times: int, stop: threading.Event, killed: list) -> None:
    """SIGKILL the scoring actor `times` times, a few seconds apart, while the job runs."""
    import ray

    while len(killed) < times and not stop.wait(3.0):
        if not ray.is_initialized():
            continue
        for actor in ray._private.state.actors().values():  # this cluster's actors only
            if actor["State"] == "ALIVE" and "ScoreClips" in actor["ActorClassName"] and actor.get("Pid"):
                os.kill(int(actor["Pid"]), signal.SIGKILL)
                killed.append(int(actor["Pid"]))
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--fault-share", type=float, default=0.2, help="share of objects replaced by a fault kind")
    parser.add_argument("--kill-actors", type=int, default=2, help="scoring actors SIGKILLed during the first run")
    parser.add_argument("--fail-rate", type=float, default=0.05, help="share of S3 requests answered 503")
    parser.add_argument("--drop-rate", type=float, default=0.01, help="share of S3 connections dropped")
    parser.add_argument("--delay-rate", type=float, default=0.02, help="share of S3 requests delayed 0.3 s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from vad.models.scorers import build_scorer

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="vad-soak-"))
    s3 = start_local_s3()
    t0 = time.perf_counter()
    plan = build_archive(s3, args.videos, args.fault_share, rng)
    print(f"archive: {len(plan)} objects uploaded in {time.perf_counter() - t0:.1f} s ({work})", flush=True)
    torch.manual_seed(args.seed)
    checkpoint = str(work / "conv_ae.pt")
    save_checkpoint(checkpoint, build_scorer("conv_ae", clip_len=DECODE.clip_len, widths=[16, 8, 4]).eval(),
                    version="soak", threshold=0.0, decode=decode_record(DECODE))

    with FaultyS3Proxy(s3.endpoint_url, fail_rate=args.fail_rate, drop_rate=args.drop_rate,
                       delay_rate=args.delay_rate, delay_s=0.3, seed=args.seed) as proxy:
        cfg = ScoreJobConfig(
            source=SourceConfig(uri="s3://soak/footage"),
            output=OutputConfig(uri=str(work / "results")),
            scorer=ScorerConfig(name="conv_ae", checkpoint=checkpoint, batch_size=16, device="cpu"),
            decode=DECODE,
            storage=s3.storage_config().model_copy(update={"endpoint_url": proxy.endpoint_url, "retries": 8}),
            mlflow=MlflowConfig(enabled=False),
            ray=RayConfig(num_cpus=2),
            run=RunPolicyConfig(max_failure_rate=1.0),
            work_dir=str(work / "work"),
        )
        stop, killed = threading.Event(), []
        killer = threading.Thread(target=kill_scoring_actors, args=(args.kill_actors, stop, killed), daemon=True)
        killer.start()
        t0 = time.perf_counter()
        first = run_scoring(cfg, run_date=DAY)
        wall = time.perf_counter() - t0
        stop.set()
        t0 = time.perf_counter()
        second = run_scoring(cfg, run_date=DAY)
        rerun_wall = time.perf_counter() - t0
        stats = dict(proxy.stats)

    import pyarrow.dataset as pads

    table = pads.dataset(str(work / "results" / "scores"), partitioning="hive").to_table(columns=["video_uri", "clip_index"])
    written = collections.Counter(zip(table["video_uri"].to_pylist(), table["clip_index"].to_pylist()))
    expected = {
        (uri, index)
        for uri, (_, frames) in plan.items()
        if frames is not None
        for index in range(len(clip_starts(frames, DECODE.clip_len, DECODE.stride)))
    }
    errors = {e["uri"]: e for e in first.errors}
    should_fail = {uri for uri, (kind, frames) in plan.items() if frames is None and FAULT_KINDS.get(kind) == "error"}
    kinds = collections.Counter(kind for kind, _ in plan.values())
    by_class = collections.Counter(e["error_class"] for e in first.errors)

    print()
    print(f"videos in:            {len(plan)}  ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})")
    print(f"clips expected:       {len(expected)}")
    print(f"clips written:        {sum(written.values())}")
    print(f"duplicates:           {sum(n - 1 for n in written.values() if n > 1)}")
    print(f"missing clips:        {len(expected - set(written))}")
    print(f"unexpected clips:     {len(set(written) - expected)}")
    print(f"errors recorded:      {len(first.errors)}  ({', '.join(f'{k} {n}' for k, n in sorted(by_class.items()))})")
    print(f"  bad objects caught: {len(should_fail & set(errors))} of {len(should_fail)}")
    print(f"  good objects in errors: {len(set(errors) - should_fail)}")
    print(f"non-video skipped:    {first.skipped}")
    print(f"S3 faults injected:   {stats['failed']} x 503, {stats['dropped']} dropped, {stats['delayed']} delayed of {stats['requests']} requests")
    print(f"actors killed:        {len(killed)}")
    print(f"wall time:            {wall:.1f} s  ({first.clips / wall:.1f} clips/s)")
    print(f"re-run:               {second.clips} clips scored, {len(second.errors)} errors, {second.up_to_date} up to date, {rerun_wall:.1f} s")
    s3.stop()
    ok = not (expected - set(written)) and all(n == 1 for n in written.values()) and not (set(errors) - should_fail)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
