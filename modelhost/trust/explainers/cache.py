"""A bounded LRU of explanations: the same row of the same model is explained once."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

__all__ = ["ExplanationCache", "row_digest"]


def row_digest(row: np.ndarray[Any, Any]) -> bytes:
    """The identity of one row's values (float64 bytes: ``1`` and ``1.0`` are the same row)."""
    values = np.ascontiguousarray(row, dtype=np.float64).tobytes()
    return hashlib.blake2b(values, digest_size=16).digest()


class ExplanationCache:
    """Explanations by key, the least recently used dropped past ``capacity``; thread-safe."""

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, explanation: Any) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._entries[key] = explanation
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
