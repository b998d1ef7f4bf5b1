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

:class:`PriorityHandOff` keeps high-priority items in a queue of their own that
``take`` drains first, and, with a latency budget, keeps the worker's batches
short and sheds normal items that waited too long (see its docstring).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["HandOff", "OverloadPolicy", "PriorityHandOff", "PriorityPolicy"]

OverloadPolicy = Literal["block", "drop_oldest"]
T = TypeVar("T")


class HandOff(Generic[T]):
    """A FIFO of at most *capacity* items; counts drops, blocking episodes and time spent blocked."""

    shed = 0
    """Items shed for latency (only :class:`PriorityHandOff` sheds)."""

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
        self._put_full(items, item)

    def _put_full(self, items: deque[T], item: T) -> None:
        """Append *item* to the full queue *items*: wait for room (``block``) or drop its oldest."""
        with self._room:
            if len(items) >= self.capacity:
                if self.policy == "block":
                    self.blocked += 1
                    t0 = time.perf_counter_ns()
                    self._room.wait_for(lambda: len(items) < self.capacity, timeout=self.block_s)
                    self.blocked_ns += time.perf_counter_ns() - t0
                while len(items) >= self.capacity:
                    dropped = items.popleft()
                    self.dropped += 1
                    if self.on_drop is not None:
                        self.on_drop(dropped)
            items.append(item)

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


@dataclass(frozen=True, slots=True)
class PriorityPolicy:
    """How a :class:`PriorityHandOff` protects high-priority latency (seconds; ``None``: not at all).

    *batch_s*: the worker time one batch should take; normal items beyond what fits wait for a later batch.
    *shed_after_s*: normal items that waited longer than this are shed (their verdict would be late anyway).

    >>> PriorityPolicy(batch_s=0.025, shed_after_s=0.1)
    PriorityPolicy(batch_s=0.025, shed_after_s=0.1, min_batch=16)
    """

    batch_s: float | None = None
    shed_after_s: float | None = None
    min_batch: int = 16
    """Normal items a batch may always take, however slow the last one was (the normal sensors keep moving)."""

    def __post_init__(self) -> None:
        for name in ("batch_s", "shed_after_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"priority policy: {name} must be a positive number of seconds or None, got {value!r}"
                raise ValueError(msg)
        if self.min_batch < 1:
            msg = f"priority policy: min_batch must be at least 1, got {self.min_batch}"
            raise ValueError(msg)


class PriorityHandOff(HandOff[T]):
    """Two FIFOs: high-priority items (``put_high``) are taken before normal ones (``put``).

    Each queue holds up to *capacity* items under the overload policy. An item's priority must follow from
    its sensor, so that a sensor is always in one queue and its order is kept. With a *policy*:

    * ``batch_s``: ``take`` measures how long the worker spent since the last batch it handed out (what that
      batch cost) and scales the number of normal items it hands out next so that a batch costs about
      ``batch_s``; normal items beyond it wait (*deferred*). High-priority items are never held back.
    * ``shed_after_s``: normal items that have waited longer are removed at ``take`` (*shed*), counted in
      :attr:`shed` and handed to *on_shed* (on the worker, with the lock held).

    *stamp* gives an item's enqueue time (``time.perf_counter_ns``).

    >>> q = PriorityHandOff(10, "drop_oldest", stamp=lambda item: 0)
    >>> for n in range(3):
    ...     q.put(n)
    >>> q.put_high(99)
    >>> q.take(2), q.take(10)
    ([99, 0], [1, 2])
    """

    def __init__(
        self,
        capacity: int,
        policy: OverloadPolicy,
        block_s: float = 1.0,
        on_drop: Callable[[T], None] | None = None,
        *,
        stamp: Callable[[T], int],
        priority: PriorityPolicy | None = None,
        on_shed: Callable[[T], None] | None = None,
    ) -> None:
        super().__init__(capacity, policy, block_s, on_drop)
        self._high: deque[T] = deque()
        self._stamp = stamp
        self.priority = priority or PriorityPolicy()
        self.on_shed = on_shed
        self.shed = 0
        self.deferred = 0
        """Batches that left normal items waiting to keep within ``batch_s``."""
        self._quota: int | None = None  # normal items the next batch may take (None: no limit yet)
        self._handed_at: int | None = None  # when the last non-empty batch was handed out
        self._handed_normal = 0

    def put_high(self, item: T) -> None:
        """Append a high-priority *item* (the overload policy applies to the high-priority queue alone)."""
        items = self._high
        if len(items) < self.capacity:
            items.append(item)
            return
        self._put_full(items, item)

    def take(self, limit: int, now_ns: int | None = None) -> list[T]:
        """Shed stale normal items, then return up to *limit* items: high-priority first, then normal, each FIFO."""
        now = time.perf_counter_ns() if now_ns is None else now_ns
        policy = self.priority
        with self._room:
            normal = self._items
            if policy.shed_after_s is not None and normal:
                cutoff = now - int(policy.shed_after_s * 1e9)
                stamp, on_shed = self._stamp, self.on_shed
                while normal and stamp(normal[0]) < cutoff:
                    item = normal.popleft()
                    self.shed += 1
                    if on_shed is not None:
                        on_shed(item)
            high = self._high
            n_high = min(limit, len(high))
            out = [high.popleft() for _ in range(n_high)]
            room = self._normal_room(now, limit - n_high, limit)
            n_normal = min(room, len(normal))
            if n_normal < min(limit - n_high, len(normal)):
                self.deferred += 1
            out += [normal.popleft() for _ in range(n_normal)]
            if out and self.policy == "block":
                self._room.notify_all()
        self._handed_at = now if out else None
        self._handed_normal = n_normal
        return out

    def _normal_room(self, now: int, room: int, limit: int) -> int:
        """Return how many normal items this batch may take, scaled by what the last batch cost (``batch_s``)."""
        target = self.priority.batch_s
        if target is None:
            return room
        if self._handed_at is not None:
            spent_s = max(now - self._handed_at, 1) / 1e9
            scale = min(target / spent_s, 2.0)  # grow at most twofold a batch
            if self._handed_normal:
                self._quota = min(limit, max(self.priority.min_batch, int(self._handed_normal * scale)))
            elif scale < 1.0 and self._quota is not None:  # the high-priority items alone were slow
                self._quota = max(self.priority.min_batch, int(self._quota * scale))
        return room if self._quota is None else min(room, self._quota)

    @property
    def high_depth(self) -> int:
        """High-priority items waiting."""
        return len(self._high)

    def __len__(self) -> int:
        return len(self._items) + len(self._high)
