"""Losses and scores of the future-frame predictor (intensity + gradient loss, PSNR score)."""

from __future__ import annotations

import torch


def intensity_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 between the predicted and the true next frame."""
    return torch.mean((pred - target) ** 2)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients (Mathieu et al. 2016; Liu et al. 2018): keeps predictions sharp."""

    def grads(x):
        return (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()

    (pdx, pdy), (tdx, tdy) = grads(pred), grads(target)
    return (pdx - tdx).abs().mean() + (pdy - tdy).abs().mean()


def psnr(pred: torch.Tensor, target: torch.Tensor, patch: int | None = None) -> torch.Tensor:
    """Per-frame PSNR in dB for images in [0, 1]; (N, 1, H, W) -> (N,). With `patch`, the PSNR of
    the worst-predicted p x p window (see `vad.models.scorers.base.frame_score_from_errors`)."""
    from vad.models.scorers.base import frame_score_from_errors

    mse = frame_score_from_errors(((pred - target) ** 2).flatten(0, 1), patch).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)
