"""How unusual an attribute value is for a camera: a Gaussian mixture's negative log-likelihood
(velocity, geometry) or the distance to the nearest normal objects (appearance), both kept as tensors
(in the checkpoint, never pickled), and the calibration that puts each on one scale: the held-out
normal objects' minimum -> 0, their `quantile` (99.9th percentile, AI-VAD's) -> 1."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class GaussianDensity(nn.Module):
    """A Gaussian mixture fitted with scikit-learn (full covariances, k-means start, a small ridge),
    stored as weights, means and precision Cholesky factors; `score` is -log p(x)."""

    def __init__(self, dim: int, components: int = 8, *, seed: int = 0):
        super().__init__()
        self.dim, self.components, self.seed = dim, components, seed
        self.register_buffer("log_weights", torch.zeros(0))
        self.register_buffer("means", torch.zeros(0, dim))
        self.register_buffer("precision_chol", torch.zeros(0, dim, dim))

    @property
    def fitted(self) -> bool:
        return len(self.log_weights) > 0

    def fit(self, x: np.ndarray) -> None:
        from sklearn.mixture import GaussianMixture

        x = np.asarray(x, np.float64)
        if len(x) < 2:
            raise ValueError(f"a Gaussian mixture needs at least 2 normal objects, got {len(x)}")
        k = max(1, min(self.components, len(x) // 2))
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=self.seed, max_iter=200).fit(x)
        self.log_weights = torch.from_numpy(np.log(gmm.weights_)).float()
        self.means = torch.from_numpy(gmm.means_).float()
        self.precision_chol = torch.from_numpy(gmm.precisions_cholesky_).float()

    def score(self, x: np.ndarray) -> np.ndarray:
        """(N, dim) -> (N,) negative log-likelihood."""
        if not self.fitted:
            raise ValueError("the density is not fitted: fit the scorer on normal footage first (vad train)")
        x = torch.as_tensor(np.asarray(x, np.float32)).reshape(-1, self.dim)
        y = torch.einsum("nd,kde->nke", x, self.precision_chol) - torch.einsum("kd,kde->ke", self.means, self.precision_chol)[None]
        log_det = torch.log(torch.diagonal(self.precision_chol, dim1=1, dim2=2)).sum(1)
        log_prob = -0.5 * (self.dim * math.log(2 * math.pi) + (y * y).sum(2)) + log_det[None] + self.log_weights[None]
        return (-torch.logsumexp(log_prob, 1)).numpy()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        for name in ("log_weights", "means", "precision_chol"):
            key = next((k for k in state_dict if k.endswith(name)), None)
            if key is not None:
                setattr(self, name, torch.empty_like(state_dict[key]))
        return super().load_state_dict(state_dict, strict, assign)


class NearestDensity(nn.Module):
    """Distance to the `k` nearest normal rows of a bank chosen by greedy coreset (`vad.models.memory`)."""

    def __init__(self, dim: int, *, k: int = 1, bank_size: int = 4096, seed: int = 0):
        super().__init__()
        self.dim, self.k, self.bank_size, self.seed = dim, k, bank_size, seed
        self.register_buffer("bank", torch.zeros(0, dim))
        self._nearest = None

    @property
    def fitted(self) -> bool:
        return len(self.bank) > 0

    def fit(self, x: np.ndarray) -> None:
        from vad.models.memory import greedy_coreset

        rows = torch.as_tensor(np.asarray(x, np.float32))
        if len(rows) == 0:
            raise ValueError("no normal objects to build the appearance bank from")
        self.bank = rows[greedy_coreset(rows, self.bank_size, seed=self.seed, projection=self.dim)].contiguous()
        self._nearest = None

    def score(self, x: np.ndarray) -> np.ndarray:
        from vad.models.memory import NearestPatches

        if self._nearest is None or self._nearest.bank is not self.bank:
            self._nearest = NearestPatches(self.bank)
        if len(x) == 0:
            return np.zeros(0, np.float32)
        return self._nearest.distances(torch.as_tensor(np.asarray(x, np.float32)).reshape(-1, self.dim), self.k).numpy()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        key = next((k for k in state_dict if k.endswith("bank")), None)
        if key is not None:
            self.bank = torch.empty_like(state_dict[key])
        self._nearest = None
        return super().load_state_dict(state_dict, strict, assign)


def calibration(raw: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column of raw scores (N, A) of held-out normal objects: (low, high) = the minimum and the
    `quantile`; a column that never varies gets high = low + 1."""
    raw = np.asarray(raw, np.float64)
    low, high = raw.min(0), np.quantile(raw, quantile, axis=0)
    return low.astype(np.float32), np.where(high > low, high, low + 1).astype(np.float32)
