"""The optimisation step every training loop takes, on a laptop or a Ray Train worker: `train_step`
for trained scorers, `optimise` under it and under `mil_epoch`, the MIL ranker's one loop."""

from __future__ import annotations

from collections.abc import Callable

import torch


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


def mil_epoch(head: torch.nn.Module, ranking_loss: Callable, optimiser: torch.optim.Optimizer, anomalous: torch.Tensor,
              normal: torch.Tensor, *, steps: int, pairs: int, seed: int, epoch: int, rank: int = 0) -> list[float]:
    """One epoch of the MIL ranker (Sultani et al. 2018), the one loop both learners run (`vad.training.mil`
    on Ray Train, `vad.training.local.train_mil` in one process): `steps` steps, each ranking `pairs`
    (anomalous, normal) bags drawn with replacement; each rank of a group draws its own pairs. `head` scores
    bags' segments (B, S, d) -> (B, S); `ranking_loss` ranks two such batches. Returns the steps' losses."""
    import numpy as np

    rng = np.random.default_rng([seed, rank, epoch])
    head.train()
    losses = []
    for _ in range(steps):
        ia, inn = rng.integers(0, len(anomalous), pairs), rng.integers(0, len(normal), pairs)
        losses.append(optimise(optimiser, ranking_loss(head(anomalous[ia]), head(normal[inn]))))
    return losses
