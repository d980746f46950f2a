"""Losses and scores of the convolutional autoencoder (Hasan et al. 2016)."""

from __future__ import annotations

import torch

from vad.models.scorers.base import reconstruction_loss

__all__ = ["reconstruction_loss", "regularity_score"]


def regularity_score(errors: torch.Tensor) -> torch.Tensor:
    """s(t) = 1 - (e(t) - min e) / max e over one video's frame errors (Hasan et al. 2016, eq. 3)."""
    low, high = errors.min(), errors.max()
    return 1.0 - (errors - low) / high.clamp_min(torch.finfo(errors.dtype).tiny)
