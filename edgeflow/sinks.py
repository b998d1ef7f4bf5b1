"""Sinks that write flow outputs: readable stdout, JSONL files, and the dead-letter file.

Every sink counts the bytes it sends (what would leave the gateway) and the
latency from the newest contributing sample's ingest to output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from edgeflow.jsontext import dumps
from edgeflow.metrics import FlowStats
from edgeflow.records import DeadLetter, Scored, Window, to_datetime

__all__ = [
    "CaptureSink",
    "DeadLetterSink",
    "JsonlSink",
    "StdoutSink",
    "append_dead_letters",
    "ingest_time",
    "to_json",
    "worker_path",
]


def to_json(item: Any) -> dict[str, Any]:
    """Turn any flow item into a JSON-ready dict.

    >>> to_json({"a": 1})
    {'a': 1}
    """
    if isinstance(item, dict):
        return item
    if hasattr(item, "to_json"):
        return item.to_json()  # type: ignore[no-any-return]
    if isinstance(item, Scored):
        out = _window_json(item.window)
        out.update(score=round(item.score, 4), anomaly=item.anomaly, model=item.model)
        if item.raised_by:
            out["raised_by"] = {name: round(z, 2) for name, z in item.raised_by.items()}
        if item.degraded:  # the verdict came from a fallback detector, named by "model"
            out["degraded"] = True
        return out
    if isinstance(item, Window):
        return _window_json(item)
    return {"value": repr(item)}


def _window_json(w: Window) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sensor": w.sensor,
        "start": to_datetime(w.start).isoformat(),
        "end": to_datetime(w.end).isoformat(),
    }
    if w.features is not None:
        out["features"] = [round(float(x), 6) for x in w.features]
    return out


def ingest_time(item: Any) -> int | None:
    """Return the ingest time (perf_counter_ns) an output's latency runs from, if it has one."""
    if isinstance(item, Scored):
        return item.window.t_in
    return getattr(item, "t_in", None)


def worker_path(path: str | Path, worker_index: int, worker_count: int) -> Path:
    """One file per worker when several write: ``out.jsonl`` becomes ``out.w1.jsonl``.

    >>> str(worker_path("out/s.jsonl", 1, 2))
    'out/s.w1.jsonl'
    """
    path = Path(path)
    if worker_count == 1:
        return path
    return path.with_name(f"{path.stem}.w{worker_index}{path.suffix}")


class _WriterPartition:
    def __init__(self, stream: TextIO, stats: FlowStats, render: Any, close: bool) -> None:
        self._stream = stream
        self._stats = stats
        self._render = render
        self._close = close

    def write_batch(self, items: Sequence[Any]) -> None:
        now = time.perf_counter_ns()
        lines = []
        for item in items:
            lines.append(self._render(item))
            t_in = ingest_time(item)
            if t_in:
                self._stats.latency.record(now - t_in)
        text = "".join(lines)
        self._stream.write(text)
        self._stream.flush()
        self._stats.add(items_out=len(items), bytes_out=len(text.encode()))

    def close(self) -> None:
        if self._close:
            self._stream.close()


def _jsonl_line(item: Any) -> str:
    return dumps(to_json(item)) + "\n"


def _readable_line(item: Any) -> str:
    record = to_json(item)
    if "interval" in record:  # a summary
        flag = "ANOMALY" if record["anomaly"] else "ok"
        return (
            f"{record['interval'][0][11:19]}..{record['interval'][1][11:19]} {record['sensor']:<10} "
            f"{flag:<7} samples={record['samples']} windows={record['windows']} "
            f"anomalous={record['anomalous_windows']} max_score={record['score']['max']}\n"
        )
    return dumps(record) + "\n"


class JsonlSink:
    """Appends one JSON object per line to *path* (one file per worker); a restart never wipes earlier results.

    >>> import tempfile
    >>> sink = JsonlSink(Path(tempfile.mkdtemp()) / "out.jsonl", FlowStats())
    >>> part = sink.open(0, 1)
    >>> part.write_batch([{"a": 1}]); part.close()
    >>> sink.path.read_text().splitlines()
    ['{"a":1}']
    """

    def __init__(self, path: str | Path, stats: FlowStats) -> None:
        self.path = Path(path)
        self.stats = stats

    def open(self, worker_index: int, worker_count: int) -> _WriterPartition:
        path = worker_path(self.path, worker_index, worker_count)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _WriterPartition(path.open("a", encoding="utf-8"), self.stats, _jsonl_line, close=True)


class StdoutSink:
    """Prints one readable line per item."""

    def __init__(self, stats: FlowStats) -> None:
        self.stats = stats

    def open(self, worker_index: int, worker_count: int) -> _WriterPartition:
        return _WriterPartition(sys.stdout, self.stats, _readable_line, close=False)


class CaptureSink:
    """Keeps every item in :attr:`items`, in the order written (for tests; thread-safe appends).

    >>> sink = CaptureSink()
    >>> sink.open(0, 1).write_batch([1, 2])
    >>> sink.items
    [1, 2]
    """

    def __init__(self) -> None:
        self.items: list[Any] = []

    def open(self, worker_index: int, worker_count: int) -> CaptureSink:
        return self

    def write_batch(self, items: Sequence[Any]) -> None:
        self.items.extend(items)

    def close(self) -> None:
        """Nothing to release."""


class _DeadLetterPartition:
    def __init__(self, stream: TextIO, close: bool) -> None:
        self._stream = stream
        self._close = close

    def write_batch(self, items: Sequence[DeadLetter]) -> None:
        self._stream.write(_dead_letter_lines(items))
        self._stream.flush()

    def close(self) -> None:
        if self._close:
            self._stream.close()


def _dead_letter_lines(letters: Sequence[DeadLetter]) -> str:
    return "".join(dumps(letter.to_json()) + "\n" for letter in letters)


def append_dead_letters(path: str | Path | None, letters: Sequence[DeadLetter]) -> None:
    """Append *letters* as JSONL to *path* (stderr when ``None``): how a step that is itself a sink sets items aside.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "dead.jsonl"
    >>> append_dead_letters(p, [DeadLetter("uplink", "topic too long", "{}")])
    >>> p.read_text().count("topic too long")
    1
    """
    text = _dead_letter_lines(letters)
    if path is None:
        sys.stderr.write(text)
        return
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(text)


class DeadLetterSink:
    """Appends dead letters as JSONL to *path*, or writes them to stderr if *path* is ``None`` (the engine counts)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)

    def open(self, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        if self.path is None:
            return _DeadLetterPartition(sys.stderr, close=False)
        path = worker_path(self.path, worker_index, worker_count)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _DeadLetterPartition(path.open("a", encoding="utf-8"), close=True)
