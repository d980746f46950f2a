"""How a model runs for inference: device, precision, memory format and compilation.

The same settings serve the scoring actors (`ScoreClips`) and the feature extractors
(`ExtractFeatures`); on a CPU-only machine the defaults reduce to plain fp32 eager PyTorch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' but this worker has no CUDA device")
    return requested


def uses_bf16(precision: str, cuda: bool, prefers: str = "bf16") -> bool:
    """Whether a model runs in bf16 autocast: asked for (`precision: bf16`), or `auto` on CUDA for a
    model whose record prefers it (`ModelMeta.precision`)."""
    return precision == "bf16" or (precision == "auto" and cuda and prefers == "bf16")


@dataclass(frozen=True)
class InferenceOptions:
    device: str  # "cpu" | "cuda"
    bf16: bool  # autocast to bfloat16
    channels_last: bool  # conv weights (and so activations) in NDHWC / NHWC layout
    compile: bool  # torch.compile the scoring function

    @classmethod
    def resolve(
        cls, device: str = "auto", precision: str = "auto", memory_format: str = "auto", compile: bool = False, prefers: str = "bf16",
    ) -> "InferenceOptions":
        """'auto' means the model's own precision on CUDA (`prefers`, its record's `precision`: bf16
        for most; fp32 where bf16 measured slower, e.g. I3D on an H200, or cannot help) and fp32 on
        CPU, and channels-last weights on both: cuDNN's bf16 convolutions want that layout, and on
        CPU it made the scorers 1.2-1.8x faster (oneDNN; bench/throughput.py) and the extractors no slower."""
        device = pick_device(device)
        cuda = device == "cuda"
        if precision == "bf16" and not cuda:
            raise ValueError("precision 'bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
        return cls(
            device=device,
            bf16=uses_bf16(precision, cuda, prefers),
            channels_last=memory_format != "contiguous",
            compile=compile,
        )

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=torch.bfloat16)


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """5-D conv weights to channels_last_3d, 4-D ones to channels_last; the rest stays."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 5:
                param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
            elif param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model


def prepare(model: torch.nn.Module, options: InferenceOptions, method: str = "forward") -> tuple[torch.nn.Module, Callable]:
    """The model on its device in eval mode, and the (optionally compiled) function to call."""
    model = model.to(options.device).eval()
    if options.channels_last:
        to_channels_last(model)
    function = getattr(model, method)
    if options.compile:
        function = torch.compile(function, dynamic=None)
    return model, function
