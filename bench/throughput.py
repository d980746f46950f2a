"""Throughput of decoding, of each model, and of the whole scoring pipeline, on one machine and input.

    apt-get install -y ffmpeg      # the decode baseline (and the input generator)
    .venv/bin/python bench/throughput.py [--minutes 3] [--seconds-per-model 8] [--skip-models] [--nodes 1,2]

Generates a synthetic 720p H.264 video (ffmpeg's testsrc2 pattern with noise, 30 fps, a keyframe
every 2 s), then measures on the same file:

- decode: the ffmpeg CLI decoding it to null (the practical limit), with 1 thread and with all
  cores; decord reading clips at the configured clip length, stride and size (resize inside the
  decoder), 1 thread — what one decode task of the pipeline does — and as many decode processes
  as cores, each on its share of the clips;
- models: clips/s of each scorer and feature extractor alone, on random clips of its input size;
- pipeline: `vad score` end to end on local Ray (list, decode, score with Conv-AE, write Parquet),
  optionally on 1, 2, 4 local Ray nodes (`ray.cluster_utils.Cluster`, the machine's CPUs split
  among them).

Prints one table and the ratios decode/ffmpeg and pipeline/slowest stage. Numbers depend on the
machine; write them into bench/RESULTS.md with the machine named.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from vad.config import DecodeConfig

DECODE = DecodeConfig(clip_len=16, stride=16, resize=(128, 128), grayscale=True, clips_per_batch=8)


def make_video(path: Path, minutes: float) -> None:
    """720p30 H.264, yuv420p, GOP 60: a moving test pattern with film grain (so it is not trivially compressible)."""
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size=1280x720:rate=30:duration={minutes * 60}",
            "-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
            "-g", "60", "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
    )


def ffmpeg_fps(path: Path, frames: int, threads: int) -> float:
    started = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-threads", str(threads), "-i", str(path), "-f", "null", "-"], check=True)
    return frames / (time.perf_counter() - started)


def _decode_share(args: tuple) -> tuple[int, float]:
    """Decode every `share`-th clip of the video (offset `part`); (frames delivered, seconds)."""
    path, decode_json, part, share = args
    from vad.decode import _VideoReader, clip_starts

    decode = DecodeConfig(**json.loads(decode_json))
    started = time.perf_counter()
    reader = _VideoReader(str(path), decode)
    starts = clip_starts(len(reader), decode.clip_len, decode.stride, decode.frame_step)[part::share]
    frames = 0
    for start in starts:
        indices = [start + k * decode.frame_step for k in range(decode.clip_len)]
        frames += len(reader.batch(indices))
    return frames, time.perf_counter() - started


def decord_fps(path: Path, decode: DecodeConfig, processes: int) -> float:
    args = [(path, decode.model_dump_json(), part, processes) for part in range(processes)]
    started = time.perf_counter()
    if processes == 1:
        results = [_decode_share(args[0])]
    else:
        with mp.get_context("spawn").Pool(processes) as pool:
            results = pool.map(_decode_share, args)
    return sum(f for f, _ in results) / (time.perf_counter() - started)


MODELS = {
    # name: (builder kwargs, clip shape without batch, batch size)
    "conv_ae": ({"clip_len": 16, "widths": [128, 64, 32]}, (16, 128, 128), 16),
    "st_ae": ({"clip_len": 10}, (10, 128, 128), 8),
    "pred": ({"clip_len": 8}, (8, 128, 128), 8),
    "vgg_ae": ({"clip_len": 4, "width_divisor": 2}, (4, 128, 128), 8),
    "mil (i3d 112)": ({"extractor": "i3d"}, (16, 112, 112, 3), 4),
    "c3d fc6": (None, (16, 112, 112, 3), 4),
    "i3d 224": (None, (16, 224, 224, 3), 2),
}


def model_clips_per_s(name: str, seconds: float) -> float:
    import torch

    from vad.extractors import build_extractor
    from vad.scorers import build_scorer

    kwargs, shape, batch = MODELS[name]
    if kwargs is None:
        model = build_extractor(name.split()[0]).eval()
        run = model
    else:
        model = build_scorer(name.split()[0], **kwargs).eval()
        run = lambda clips: model.score(clips).score  # noqa: E731
    clips = torch.rand(batch, *shape)
    done, started = 0, None
    with torch.inference_mode():
        run(clips)  # warm-up
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or done == 0:
            run(clips)
            done += batch
    return done / (time.perf_counter() - started)


def pipeline_clips_per_s(path: Path, work: Path, nodes: int, cpus: int) -> tuple[float, int]:
    import ray
    import torch

    from vad.checkpoint import decode_record, save_checkpoint
    from vad.config import MlflowConfig, OutputConfig, ScoreJobConfig, ScorerConfig, SourceConfig
    from vad.pipeline import run_scoring
    from vad.scorers import build_scorer

    checkpoint = work / "conv_ae.pt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(str(checkpoint), build_scorer("conv_ae", **MODELS["conv_ae"][0]).eval(), version="bench",
                        threshold=0.0, decode=decode_record(DECODE))
    cluster = None
    if nodes == 1:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    else:
        from ray.cluster_utils import Cluster

        per_node = max(1, cpus // nodes)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=per_node)
        ray.init(address=cluster.address, log_to_driver=False)
    try:
        out = work / f"results-{nodes}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = ScoreJobConfig(
            source=SourceConfig(uri=str(path)),
            output=OutputConfig(uri=str(out)),
            scorer=ScorerConfig(name="conv_ae", checkpoint=str(checkpoint), batch_size=32, device="cpu", concurrency=nodes),
            decode=DECODE,
            mlflow=MlflowConfig(enabled=False),
            run={"incremental": False},
            work_dir=str(work / "work"),
        )
        summary = run_scoring(cfg, run_date="2026-11-24")
        return summary.clips / summary.wall_s, summary.clips
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the generated 720p video")
    parser.add_argument("--seconds-per-model", type=float, default=8.0)
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--nodes", default="1", help="comma-separated local Ray node counts for the pipeline, e.g. 1,2,4")
    parser.add_argument("--video", help="use this file instead of generating one")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is needed for the baseline: apt-get install -y ffmpeg", file=sys.stderr)
        return 2
    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="vad-throughput-"))
    video = Path(args.video) if args.video else work / "synthetic-720p.mp4"
    if not args.video:
        started = time.perf_counter()
        make_video(video, args.minutes)
        print(f"generated {video} ({video.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s", flush=True)
    import decord

    frames = len(decord.VideoReader(str(video), num_threads=1))
    print(f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs; video: {frames} frames 1280x720", flush=True)

    rows: list[tuple[str, str, float]] = []  # (stage, unit, rate)
    ff1, ffn = ffmpeg_fps(video, frames, 1), ffmpeg_fps(video, frames, cpus)
    rows += [("ffmpeg -> null, 1 thread", "frames/s", ff1), (f"ffmpeg -> null, {cpus} threads", "frames/s", ffn)]
    native = DECODE.model_copy(update={"resize": None, "grayscale": False})
    for label, decode, processes in (
        ("decord clips, native 720p RGB, 1 process", native, 1),
        (f"decord clips, {DECODE.resize[0]}x{DECODE.resize[1]} gray, 1 process", DECODE, 1),
        (f"decord clips, {DECODE.resize[0]}x{DECODE.resize[1]} gray, {cpus} processes", DECODE, cpus),
    ):
        rows.append((label, "frames/s", decord_fps(video, decode, processes)))
        print(f"  {label}: {rows[-1][2]:.0f} frames/s", flush=True)
    decode_1 = rows[3][2]
    decode_n = rows[4][2]
    model_rates = {}
    if not args.skip_models:
        import torch

        torch.set_num_threads(cpus)
        for name in MODELS:
            model_rates[name] = model_clips_per_s(name, args.seconds_per_model)
            rows.append((f"model {name}, input {MODELS[name][1]}", "clips/s", model_rates[name]))
            print(f"  model {name}: {model_rates[name]:.2f} clips/s", flush=True)
    pipeline = {}
    for nodes in [int(n) for n in args.nodes.split(",")]:
        rate, clips = pipeline_clips_per_s(video, work, nodes, cpus)
        pipeline[nodes] = rate
        rows.append((f"pipeline (decode + conv_ae + Parquet), {nodes} Ray node(s)", "clips/s", rate))
        print(f"  pipeline, {nodes} node(s): {rate:.1f} clips/s ({clips} clips)", flush=True)

    print()
    print("| stage | rate | unit |\n|---|---|---|")
    for stage, unit, rate in rows:
        print(f"| {stage} | {rate:,.1f} | {unit} |")
    print()
    print(f"decode/ffmpeg, 1 thread each:          {decode_1 / ff1:.2f}")
    print(f"decode/ffmpeg, {cpus} processes vs {cpus} threads: {decode_n / ffn:.2f}")
    if model_rates and pipeline:
        decode_clips = decode_n / DECODE.clip_len
        slowest = min(decode_clips, model_rates["conv_ae"])
        which = "decode" if decode_clips <= model_rates["conv_ae"] else "conv_ae"
        print(f"slowest stage:                          {which} at {slowest:.1f} clips/s "
              f"(decode {decode_clips:.1f} clips/s on {cpus} processes, conv_ae {model_rates['conv_ae']:.1f} clips/s)")
        for nodes, rate in pipeline.items():
            print(f"pipeline/slowest stage, {nodes} node(s):     {rate / slowest:.2f}")
    print(f"(work files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
