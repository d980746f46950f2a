"""Decoded clips as a model takes them: the one place pixels are scaled. Clips arrive from the decoder as uint8
(B, T, H, W[, 3]); a model's record says whether it takes them as they are (`uint8_input`: work done in
OpenCV/ONNX) or as floats `pixels / 255 * input_range` ([0, 1] for every scorer, 0-255 for C3D)."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(clips: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(clips)) if isinstance(clips, np.ndarray) else clips
    return tensor.to(device, non_blocking=True)


def unit_clips(clips: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 clips (0-255) -> float32 in [0, 1] on `device`, the input every trained scorer takes."""
    return as_tensor(clips, device).float().div_(255.0)


def model_input(meta, clips: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 clips as the model of record `meta` (`vad.models.registry.ModelMeta`) takes them."""
    if meta.uint8_input:
        return as_tensor(clips, device)
    return as_tensor(clips, device).float().div_(255.0 / meta.input_range)
