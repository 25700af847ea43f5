"""A small bounded, thread-safe cache whose entries live a few seconds.

Used on the request path for answers the database gives the same way for every request
(which principal a key is, which policy a tenant runs under, which models it sees). The
services that fill it also empty it when this process changes the answer (revoking a key,
applying a policy, deleting a tenant); another API node's change is seen at the latest
``ttl_s`` seconds later (docs/security.md states the bound).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_TTL_S = 5.0
DEFAULT_MAX_ENTRIES = 10_000


class TtlCache(Generic[K, V]):
    """``ttl_s <= 0`` turns caching off (every ``get`` misses)."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._items: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Changes with every discard; read it before loading a value and hand it to :meth:`put`,
        so a value loaded before an invalidation is not stored after it."""
        with self._lock:
            return self._generation

    def get(self, key: K) -> V | None:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if self._clock() >= item[0]:
                del self._items[key]
                return None
            return item[1]

    def put(self, key: K, value: V, generation: int | None = None) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self._items.pop(key, None)
            while len(self._items) >= self._max:  # oldest first: dicts keep insertion order
                del self._items[next(iter(self._items))]
            self._items[key] = (self._clock() + self.ttl_s, value)

    def discard(self, key: K) -> None:
        with self._lock:
            self._generation += 1
            self._items.pop(key, None)

    def discard_where(self, drop: Callable[[K, V], bool]) -> None:
        with self._lock:
            self._generation += 1
            for key in [k for k, (_, v) in self._items.items() if drop(k, v)]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
