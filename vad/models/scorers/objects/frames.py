"""A clip's frames as the object scorer reads them: uint8 on the CPU, grey frames picked by index, grey
frames lent three channels for the detector."""

from __future__ import annotations

import numpy as np
import torch


def as_uint8(clips: torch.Tensor) -> np.ndarray:
    """Clips (B, T, H, W[, 3]) as decoded (uint8: `ModelMeta.uint8_input`, what the pipeline passes)
    or in [0, 1] -> uint8 numpy on the CPU (rounded; one temporary)."""
    if clips.dtype == torch.uint8:
        return clips.detach().cpu().numpy()
    scaled = torch.mul(clips.detach().cpu(), 255.0)
    return scaled.add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


class FramesByIndex:
    """Some frames of a clip by index (the grey frames describe_clip needs), with the clip's length."""

    def __init__(self, frames: dict[int, np.ndarray], count: int):
        self.frames, self.count = frames, count
        self.shape = (count, *next(iter(frames.values())).shape)

    def __getitem__(self, t: int) -> np.ndarray:
        return self.frames[t]

    def __len__(self) -> int:
        return self.count


class GreyAsRGB:
    """A grey clip's frames as RGB, made when asked for (the detector takes three channels)."""

    def __init__(self, clip: np.ndarray):
        self.clip = clip

    def __getitem__(self, t: int) -> np.ndarray:
        return np.repeat(self.clip[t][..., None], 3, axis=2)

    def __len__(self) -> int:
        return len(self.clip)
