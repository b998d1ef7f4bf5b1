"""edgeflow's own source and sink protocols, independent of the engine that runs a flow.

A :class:`Source` is split into named partitions; each worker opens the partitions
given to it and polls them with :meth:`SourcePartition.next_batch`, which never
blocks. A partition's :meth:`~SourcePartition.snapshot` is what it needs to resume
where it stopped (a line number, a set of unacknowledged messages...). A
:class:`Sink` opens one :class:`SinkPartition` per worker. The engine package
(:mod:`edgeflow.engine`) adapts these to the dataflow engine; no other module knows the engine.

>>> class Numbers:
...     def partitions(self) -> list[str]:
...         return ["only"]
...     def open(self, partition: str, resume: int | None) -> "Counter":
...         return Counter(resume or 0)
>>> class Counter:
...     def __init__(self, start: int) -> None:
...         self.n = start
...     def next_batch(self) -> list[int]:
...         if self.n >= 3:
...             raise StopIteration
...         self.n += 1
...         return [self.n]
...     def next_awake(self) -> None:
...         return None
...     def snapshot(self) -> int:
...         return self.n
...     def close(self) -> None:
...         pass
>>> isinstance(Numbers(), Source), isinstance(Counter(0), SourcePartition)
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

__all__ = ["DEAD_LETTERS", "Sink", "SinkPartition", "Source", "SourcePartition"]

DEAD_LETTERS = "dead_letters"
"""The reserved step id of a flow's dead-letter sink (a sink can be put in its place by this id)."""


@runtime_checkable
class SourcePartition(Protocol):
    """One readable part of a source, owned by one worker."""

    def next_batch(self) -> Sequence[Any]:
        """Return the items ready now (possibly none) without blocking; raise ``StopIteration`` at the end.

        Items are routed by their ``.sensor`` attribute.
        """
        ...

    def next_awake(self) -> datetime | None:
        """When to poll next (an aware datetime), or ``None`` to poll again at once."""
        ...

    def snapshot(self) -> Any:
        """Return what :meth:`Source.open` needs to resume right after the items returned so far."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


@runtime_checkable
class Source(Protocol):
    """Where a flow's items come from."""

    def partitions(self) -> list[str]:
        """Names of the partitions; each is read by exactly one worker."""
        ...

    def open(self, partition: str, resume: Any | None) -> SourcePartition:
        """Open *partition*, resuming from a snapshot when *resume* is not ``None``."""
        ...

    # A source may also have ``resequencer() -> new_state | None``: a keyed step the engine puts right after it,
    # one :class:`~edgeflow.graph.KeyedLogic` per sensor (``new_state(resume)``, with ``notify_at``/``on_notify``),
    # e.g. to put back in order what several partitions of one shared MQTT subscription received.


@runtime_checkable
class SinkPartition(Protocol):
    """One worker's connection to a sink."""

    def write_batch(self, items: Sequence[Any]) -> None:
        """Write items, in order."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Where a flow's outputs go."""

    def open(self, worker_index: int, worker_count: int) -> SinkPartition:
        """Open this worker's partition of the sink."""
        ...
