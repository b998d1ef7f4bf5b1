"""The bounded queue between paho's network thread and the flow's worker, with an explicit overload policy.

``put`` runs on the network thread. When the queue is full, ``"block"`` makes it
wait for room up to ``block_s`` (holding back the broker through TCP) and then
drops the oldest message; ``"drop_oldest"`` drops the oldest at once. Every
drop is counted (and handed to *on_drop*, on the network thread, with the lock
held). ``take`` runs on the worker and never waits.

>>> q = HandOff(2, "drop_oldest")
>>> for n in range(3):
...     q.put(n)
>>> q.take(10), q.dropped
([1, 2], 1)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

__all__ = ["HandOff", "OverloadPolicy"]

OverloadPolicy = Literal["block", "drop_oldest"]
T = TypeVar("T")


class HandOff(Generic[T]):
    """A FIFO of at most *capacity* items; counts drops, blocking episodes and time spent blocked."""

    def __init__(
        self,
        capacity: int,
        policy: OverloadPolicy,
        block_s: float = 1.0,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        if capacity < 1:
            msg = f"capacity must be at least 1, got {capacity}"
            raise ValueError(msg)
        self.capacity = capacity
        self.policy = policy
        self.block_s = block_s
        self.on_drop = on_drop
        self._items: deque[T] = deque()
        self._room = threading.Condition(threading.Lock())
        self.dropped = 0
        self.blocked = 0
        self.blocked_ns = 0

    def put(self, item: T) -> None:
        """Append *item*, applying the overload policy when full (one thread puts, another takes)."""
        items = self._items
        if len(items) < self.capacity:  # only this thread adds: the room seen cannot shrink before the append
            items.append(item)
            return
        with self._room:
            if len(self._items) >= self.capacity:
                if self.policy == "block":
                    self.blocked += 1
                    t0 = time.perf_counter_ns()
                    self._room.wait_for(lambda: len(self._items) < self.capacity, timeout=self.block_s)
                    self.blocked_ns += time.perf_counter_ns() - t0
                while len(self._items) >= self.capacity:
                    dropped = self._items.popleft()
                    self.dropped += 1
                    if self.on_drop is not None:
                        self.on_drop(dropped)
            self._items.append(item)

    def take(self, limit: int) -> list[T]:
        """Remove and return up to *limit* items, oldest first, without waiting."""
        with self._room:
            n = min(limit, len(self._items))
            if not n:
                return []
            popleft = self._items.popleft
            out = [popleft() for _ in range(n)]
            if self.policy == "block":
                self._room.notify_all()
        return out

    def __len__(self) -> int:
        return len(self._items)
