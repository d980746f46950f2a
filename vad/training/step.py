"""The optimisation step every training loop takes, on a laptop or a Ray Train worker: `train_step`
for clip scorers, `optimise` under it and under the MIL ranking loops."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def unit_clips(clips: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 clips (0-255) -> float32 in [0, 1] on `device`, the input every clip scorer takes."""
    tensor = torch.from_numpy(np.ascontiguousarray(clips)) if isinstance(clips, np.ndarray) else clips
    return tensor.to(device).float().div_(255.0)


def optimise(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """Back-propagate `loss` and take one optimiser step; returns the loss."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def train_step(loss_model: Callable[[torch.Tensor], torch.Tensor], optimiser: torch.optim.Optimizer, clips: torch.Tensor, *, bf16: bool = False) -> float:
    """One Adam (or other) step on a batch of unit clips; returns the batch's loss.

    `loss_model(clips)` is the loss (a scorer's `training_loss`, wrapped for DDP where there are
    several workers); `bf16` autocasts the forward pass on CUDA."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_model(clips)
    return optimise(optimiser, loss)
