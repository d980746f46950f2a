"""Deep MIL ranking loss (Sultani et al. 2018, eq. 7)."""

from __future__ import annotations

import torch

LAMBDA_SMOOTH = 8e-5
LAMBDA_SPARSE = 8e-5


def mil_ranking_loss(
    anomalous: torch.Tensor,
    normal: torch.Tensor,
    lambda_smooth: float = LAMBDA_SMOOTH,
    lambda_sparse: float = LAMBDA_SPARSE,
) -> torch.Tensor:
    """Segment scores of paired bags, (B, 32) each: hinge between the bags' maxima, plus temporal
    smoothness and sparsity of the anomalous bag's scores."""
    hinge = torch.relu(1.0 - anomalous.max(dim=1).values + normal.max(dim=1).values)
    smooth = ((anomalous[:, 1:] - anomalous[:, :-1]) ** 2).sum(dim=1)
    sparse = anomalous.sum(dim=1)
    return (hinge + lambda_smooth * smooth + lambda_sparse * sparse).mean()
