"""A bounded cache of loaded models, for scoring actors that serve a fleet (one model per camera).

Least recently used models are dropped while more than `max_models` are held or their weights take
more than `max_mb`; the model just asked for is always kept, however large.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


def weight_bytes(module) -> int:
    """Bytes of a torch module's parameters and buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelCache(Generic[V]):
    def __init__(self, load: Callable[[Hashable], V], size_of: Callable[[V], int], *, max_models: int, max_mb: float):
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self._load, self._size_of = load, size_of
        self.max_models, self.max_bytes = max_models, int(max_mb * 2**20)
        self._held: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self.loads = 0
        self.evictions = 0

    def get(self, key: Hashable) -> V:
        if key in self._held:
            self._held.move_to_end(key)
            return self._held[key][0]
        value = self._load(key)
        self.loads += 1
        self._held[key] = (value, int(self._size_of(value)))
        while len(self._held) > 1 and (len(self._held) > self.max_models or self.held_bytes > self.max_bytes):
            self._held.popitem(last=False)
            self.evictions += 1
        return value

    @property
    def held_bytes(self) -> int:
        return sum(size for _, size in self._held.values())

    def keys(self) -> list[Hashable]:
        """Held keys, least recently used first."""
        return list(self._held)
