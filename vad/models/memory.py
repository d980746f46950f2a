"""Memory banks of normal features, shared by the fitted scorers (`patch_knn`'s patch features,
`objects`' appearance vectors): a bounded pool of candidates while fitting, a greedy coreset to choose
the bank (PatchCore, Roth et al. 2022), and nearest-neighbour distances (faiss on CPU, a matrix
product on GPU)."""

from __future__ import annotations

import torch


class CandidatePool:
    """Feature rows gathered while passing over normal clips, at most `limit` kept: when the pool
    holds twice that, a uniform random half-sample is kept, so memory stays bounded on any footage."""

    def __init__(self, limit: int, seed: int = 0):
        self.limit = limit
        self.parts: list[torch.Tensor] = []
        self.size = 0
        self.seen = 0
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, features: torch.Tensor) -> None:
        self.parts.append(features.float().cpu())
        self.size += len(features)
        self.seen += len(features)
        if self.size > 2 * self.limit:
            self._shrink()

    def _shrink(self) -> None:
        pool = torch.cat(self.parts)
        keep = torch.randperm(len(pool), generator=self.generator)[: self.limit]
        self.parts, self.size = [pool[keep.sort().values]], self.limit

    def take(self) -> torch.Tensor:
        if self.size > self.limit:
            self._shrink()
        return torch.cat(self.parts) if self.parts else torch.zeros(0)


def greedy_coreset(features: torch.Tensor, size: int, *, seed: int = 0, projection: int = 128) -> torch.Tensor:
    """Indices of `size` rows of `features` chosen so that every row lies close to a chosen one:
    each step takes the row farthest from those chosen so far (k-center greedy), on a random
    projection to `projection` dimensions as PatchCore does."""
    if size >= len(features):
        return torch.arange(len(features))
    generator = torch.Generator().manual_seed(seed)
    x = features.float()
    if x.shape[1] > projection:
        x = x @ (torch.randn(x.shape[1], projection, generator=generator) / projection**0.5)
    squared = (x * x).sum(1)
    first = int(torch.randint(len(x), (1,), generator=generator))
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = first
    nearest = squared - 2 * (x @ x[first]) + squared[first]
    for i in range(1, size):
        nxt = int(nearest.argmax())
        chosen[i] = nxt
        nearest = torch.minimum(nearest, squared - 2 * (x @ x[nxt]) + squared[nxt])
    return chosen


class NearestPatches:
    """Exact k-nearest-neighbour distances to the bank. On CPU a faiss flat index (multi-threaded
    BLAS, as many threads as torch uses); on a GPU, blocks of one matrix product and a top-k."""

    def __init__(self, bank: torch.Tensor):
        self.bank = bank
        self._index = None

    def _faiss(self):
        if self._index is None:
            import faiss

            self._index = faiss.IndexFlatL2(self.bank.shape[1])
            self._index.add(self.bank.detach().float().cpu().contiguous().numpy())
        return self._index

    def distances(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """(N, D) -> (N,): the mean Euclidean distance to the `k` nearest bank rows."""
        if len(self.bank) == 0:
            raise ValueError("the memory bank is empty: fit the scorer on normal clips first (vad train)")
        k = min(k, len(self.bank))
        if queries.device.type == "cpu":
            import faiss

            faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
            squared, _ = self._faiss().search(queries.detach().float().contiguous().numpy(), k)
            squared = torch.from_numpy(squared)
        else:
            squared = matmul_knn(queries, self.bank.to(queries.device), k)
        return squared.clamp_min(0).sqrt().mean(1).to(queries.device)


def matmul_knn(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distances (N, k) to the `k` nearest bank rows, ascending, by blocks of one matrix product."""
    with torch.autocast(queries.device.type, enabled=False):  # |q|^2 + |b|^2 - 2 q.b cancels: fp32, never bf16
        bank = bank.float()
        bank_sq = (bank * bank).sum(1)
        parts = []
        for block in queries.float().split(8192):
            d = (block * block).sum(1, keepdim=True) + bank_sq - 2 * block @ bank.T
            parts.append(d.topk(k, dim=1, largest=False).values)
        return torch.cat(parts)
