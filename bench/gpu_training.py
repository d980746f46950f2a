"""Training throughput of the clip scorers on a CUDA device: clips per second through the step every
training loop takes (`vad.training.step.train_step`: forward, loss, backward, Adam), in fp32 and in
bf16 autocast (what Ray Train's workers use on a GPU), with contiguous and channels-last weights, at a
few batch sizes. Random clips already on the device: the model alone, no decode, no transfer.

    python3 bench/gpu_training.py [--seconds 2] [--models conv_ae,pred]

Runs on CPU too (slowly; `--device cpu`), which is how it is checked without a GPU. Keep the figures in
bench/RESULTS.md with the card named.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.throughput import MODELS  # noqa: E402

TRAINED = ("conv_ae", "st_ae", "pred", "vgg_ae")


def train_clips_per_s(name: str, device: str, bf16: bool, channels_last: bool, batch: int, seconds: float) -> float:
    import torch

    from vad.models.inference import to_channels_last
    from vad.models.scorers import build_scorer
    from vad.training.step import train_step

    kwargs, shape, _ = MODELS[name]
    torch.manual_seed(0)
    model = build_scorer(name, **kwargs).to(device).train()
    if channels_last:
        to_channels_last(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    clips = torch.rand(batch, *shape, device=device)
    for _ in range(2):  # warm-up: cuDNN picks its algorithms
        train_step(model.training_loss, optimiser, clips, bf16=bf16)
    if device == "cuda":
        torch.cuda.synchronize()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        train_step(model.training_loss, optimiser, clips, bf16=bf16)  # returns float(loss): one sync per step, as in the loops
        done += batch
    if device == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row")
    parser.add_argument("--models", default=",".join(TRAINED), help="comma-separated: " + ", ".join(TRAINED))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="32,128")
    args = parser.parse_args(argv)
    bad = [m for m in args.models.split(",") if m not in TRAINED]
    if bad:
        parser.error(f"not a trained clip scorer: {', '.join(bad)} (choose from {', '.join(TRAINED)})")
    cuda = args.device == "cuda"
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}; torch {torch.__version__}")
    print("| model | clip | settings | batch | train clips/s | peak GiB |\n|---|---|---|---|---|---|")
    variants = [(False, False), (True, False), (True, True)] if cuda else [(False, False), (False, True)]
    for name in args.models.split(","):
        for bf16, channels_last in variants:
            for batch in (int(b) for b in args.batches.split(",")):
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                try:
                    rate = train_clips_per_s(name, args.device, bf16, channels_last, batch, args.seconds)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"| {name} | | | {batch} | out of memory | |", flush=True)
                    continue
                peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if cuda else "-"
                label = ("bf16" if bf16 else "fp32") + (", channels_last" if channels_last else ", contiguous")
                shape = "×".join(str(s) for s in MODELS[name][1])
                print(f"| {name} | {shape} | {label} | {batch} | {rate:,.0f} | {peak} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
