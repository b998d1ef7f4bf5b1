"""Adapters from edgeflow's source, sink and keyed-state protocols to bytewax's classes."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from edgeflow.connectors import Sink, SinkPartition, Source, SourcePartition
from edgeflow.engine.shards import Shards

__all__ = ["EngineSink", "EngineSource"]


_STOP_CHECK = timedelta(seconds=0.2)
"""A source that sleeps is still polled this often, so a stop request is seen within it."""


class _SourcePart(StatefulSourcePartition[tuple[str, Any], Any]):
    def __init__(self, part: SourcePartition, stop: threading.Event, shards: Shards) -> None:
        self._part = part
        self._stop = stop
        self._route = shards.route

    def next_batch(self) -> list[tuple[str, Any]]:
        if self._stop.is_set():
            raise StopIteration
        route = self._route
        return [(route(item.sensor), item) for item in self._part.next_batch()]

    def next_awake(self) -> datetime | None:
        awake = self._part.next_awake()
        if awake is None:
            return None
        return min(awake, datetime.now(timezone.utc) + _STOP_CHECK)

    def snapshot(self) -> Any:
        return self._part.snapshot()

    def close(self) -> None:
        self._part.close()


class EngineSource(FixedPartitionedSource[tuple[str, Any], Any]):
    """A bytewax source reading an edgeflow :class:`~edgeflow.connectors.Source`, keyed by *shards* by ``.sensor``.

    Once *stop* is set every partition ends, as if its input had run out.
    """

    def __init__(self, source: Source, stop: threading.Event, shards: Shards) -> None:
        self._source = source
        self._stop = stop
        self._shards = shards

    def list_parts(self) -> list[str]:
        return self._source.partitions()

    def build_part(self, step_id: str, for_part: str, resume_state: Any | None) -> _SourcePart:
        return _SourcePart(self._source.open(for_part, resume_state), self._stop, self._shards)


class _SinkPart(StatelessSinkPartition[tuple[str, Any]]):
    def __init__(self, part: SinkPartition) -> None:
        self._part = part

    def write_batch(self, items: list[tuple[str, Any]]) -> None:
        self._part.write_batch([item for _key, item in items])

    def close(self) -> None:
        self._part.close()


class EngineSink(DynamicSink[tuple[str, Any]]):
    """A bytewax sink writing to an edgeflow :class:`~edgeflow.connectors.Sink` (keys dropped)."""

    def __init__(self, sink: Sink, workers: range | None = None, worker_count: int = 1) -> None:
        self._sink = sink
        self._workers = workers
        self._count = worker_count

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPart:
        if self._workers is not None:  # processes that share nothing: the run's own worker numbers
            worker_index, worker_count = self._workers[worker_index], self._count
        return _SinkPart(self._sink.open(worker_index, worker_count))
