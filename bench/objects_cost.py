"""What the object scorer costs: CPU core-hours per camera-hour of 720p footage, decode included.

    .venv/bin/python bench/objects_cost.py [--seconds 20] [--fps 30] [--frame-step 3] [--every 2]
                                           [--resize 360x640] [--flow medium] [--no-detector]

Makes a 720p H.264 video (PyAV) from Ped2 test frames (about 12 people a frame) enlarged to 1280x720
and repeated at `--fps`, then, in this one process pinned to one core (and one thread for torch,
OpenCV, onnxruntime, the decoder: whatever else runs must share that core), decodes it into 16-frame clips of every `--frame-step`-th frame at `--resize` (decord,
as the pipeline does) and scores them with a fitted object scorer. Time over the
video's duration is the core-hours per camera-hour (wall time on the one core, which counts the
busy-waiting of any helper thread too); the parts (decode, detector, flow, the rest) are timed the same way. Writes bench/results/cost/objects-<settings>.json; bench/RESULTS.md and the README quote it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.protocol import machine, today  # noqa: E402


def make_video(path: Path, seconds: float, fps: int) -> int:
    import av
    from PIL import Image

    from vad.datasets.ped2 import load_ped2

    folder = load_ped2().test_dir / "01"
    frames = [np.asarray(Image.open(f).convert("RGB").resize((1280, 720), Image.BILINEAR)) for f in sorted(folder.glob("*.jpg"))]
    count = int(seconds * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "26", "g": str(2 * fps)}
        for i in range(count):  # Ped2 is ~10 fps: each of its frames shown fps/10 times keeps people's speed
            frame = av.VideoFrame.from_ndarray(frames[(i * 10 // fps) % len(frames)], format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frame-step", type=int, default=3)
    parser.add_argument("--every", type=int, default=None, help="analyse every n-th decoded frame (default: the scorer's)")
    parser.add_argument("--resize", default="360x640", help="HxW the clips are decoded at")
    parser.add_argument("--flow", default=None, choices=["ultrafast", "fast", "medium"], help="DIS preset (default: the scorer's)")
    parser.add_argument("--no-detector", action="store_true", help="moving-region boxes only")
    parser.add_argument("--velocity", default="flow", choices=["flow", "track"])
    args = parser.parse_args(argv)

    import os

    import cv2
    import torch

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core: wall time is core time
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from vad.config import DecodeConfig, SourceConfig
    from vad.datasets import data_dir
    from vad.io.sources import list_videos
    from vad.models.scorers import build_scorer
    from vad.models.inputs import model_input
    from vad.video.clips import iter_clips

    height, width = (int(x) for x in args.resize.split("x"))
    # clips side by side: the stride counts source frames, so a clip of 16 frames every 3rd spans 46 and the next starts 48 on
    decode = DecodeConfig(clip_len=16, stride=16 * args.frame_step, frame_step=args.frame_step, resize=(height, width), grayscale=False, threads=1)
    weights = data_dir("yolox_nano.onnx")
    defaults = build_scorer("objects", boxes="motion").hparams()
    args.every, args.flow = args.every or defaults["every"], args.flow or defaults["flow_preset"]
    hparams = {"every": args.every, "flow_preset": args.flow, "velocity": args.velocity, "components": 4}
    if args.no_detector or weights is None:
        hparams["boxes"] = "motion"
    else:
        hparams["detector"] = str(weights / "yolox_nano.onnx")
    model = build_scorer("objects", **hparams)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cam" / "night.mp4"
        path.parent.mkdir()
        frames = make_video(path, args.seconds, args.fps)  # before pinning would be fairer to x264; it is not measured
        video = list_videos(SourceConfig(uri=str(path.parent)), run_date="2026-01-01")[0][0]
        # fit on the first clips (the figures are the scoring's, the densities' size barely matters)
        clips = [c.frames for c in iter_clips(video, decode)]
        with torch.inference_mode():
            rows = torch.cat([model.fit_rows(torch.from_numpy(c[None]).float() / 255) for c in clips[:4]])
            model.fit(rows)
            model.calibrate_values(torch.cat([model.calibration_values(torch.from_numpy(c[None]).float() / 255) for c in clips[:4]]))
        timers = {"detector": 0.0, "flow": 0.0}
        calls = {"detector": 0, "flow": 0}
        detector, flow = model.detector(), model.flow()

        def timed(name, fn):
            def wrapper(*a, **k):
                t = time.perf_counter()
                calls[name] += 1
                try:
                    return fn(*a, **k)
                finally:
                    timers[name] += time.perf_counter() - t
            return wrapper

        if detector is not None:
            model._detector = type("Timed", (), {"__call__": staticmethod(timed("detector", detector.__call__))})()
        model._flow = timed("flow", flow)
        cpu0, wall0 = time.perf_counter(), time.perf_counter()
        decode_s, n_clips = 0.0, 0
        started = time.perf_counter()
        with torch.inference_mode():
            for clip in iter_clips(video, decode):
                decode_s += time.perf_counter() - started
                model.score(model_input(model.meta, clip.frames[None]))  # as the scoring stage passes them (uint8 here)
                n_clips += 1
                started = time.perf_counter()
        cpu, wall = time.perf_counter() - cpu0, time.perf_counter() - wall0
    duration = frames / args.fps
    core_h = cpu / duration
    figures = {
        "core_hours_per_camera_hour": round(core_h, 4), "decode": round(decode_s / duration, 4),
        "detector": round(timers["detector"] / duration, 4), "flow": round(timers["flow"] / duration, 4),
        "rest": round((cpu - decode_s - timers["detector"] - timers["flow"]) / duration, 4),
        "analysed_frames_per_s": round(n_clips * len(model.analysed_frames(16)) / wall, 2), "clips": n_clips,
        "detector_ms": round(1000 * timers["detector"] / max(1, calls["detector"]), 1), "flow_ms": round(1000 * timers["flow"] / max(1, calls["flow"]), 1),
        "analysed_per_video_s": round(calls["flow"] / duration, 2),
        "video_frames_per_s_one_core": round(frames / cpu, 1),
    }
    record = {"scorer": "objects", "video": f"1280x720 {args.fps} fps H.264, {args.seconds:g} s of Ped2 test video 01 enlarged",
              "settings": {**vars(args), "hparams": {k: v for k, v in hparams.items() if k != "detector"}, "detector": "detector" in hparams},
              "figures": figures, "date": today(), "machine": machine(),
              "command": "bench/objects_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    name = f"objects-step{args.frame_step}-every{args.every}-{args.resize}-{args.flow}{'-motion' if 'boxes' in hparams else ''}{'-track' if args.velocity == 'track' else ''}"
    out = ROOT / "bench" / "results" / "cost" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    print(f"{core_h:.3f} core-hours per camera-hour ({figures['decode']:.3f} decode, {figures['detector']:.3f} detector, "
          f"{figures['flow']:.3f} flow, {figures['rest']:.3f} the rest) -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
