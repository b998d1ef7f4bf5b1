"""The items that travel through a flow: samples, windows, scored windows, dead letters.

Event time is a float of seconds since the Unix epoch (UTC); it is parsed from
timezone-aware text at the edge of the system and turned back into aware
datetimes with :func:`to_datetime`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DeadLetter", "Sample", "SampleBlock", "Scored", "Window", "parse_timestamp", "to_datetime"]


class Sample(NamedTuple):
    """One reading of one sensor.

    >>> Sample(ts=0.0, sensor="pump-1", values=(0.5,), nbytes=30, t_in=0)
    Sample(ts=0.0, sensor='pump-1', values=(0.5,), nbytes=30, t_in=0)
    """

    ts: float
    """Event time, seconds since the epoch (UTC)."""
    sensor: str
    values: tuple[float, ...]
    nbytes: int
    """Size of the raw record this sample came from, for data-reduction accounting."""
    t_in: int
    """``time.perf_counter_ns()`` when the sample entered the flow, for latency."""


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Consecutive samples of one sensor as arrays: how sources hand over a batch cheaply.

    >>> block = SampleBlock.of([Sample(1.0, "s", (0.5,), 12, 7), Sample(2.0, "s", (0.7,), 12, 9)])
    >>> block.ts.tolist(), block.values.shape, int(block.nbytes.sum()), block.t_in
    ([1.0, 2.0], (2, 1), 24, 9)
    """

    sensor: str
    ts: np.ndarray
    """Event times, float64 seconds since the epoch, shape ``(n,)``."""
    values: np.ndarray
    """float64, shape ``(n, channels)``."""
    nbytes: np.ndarray
    """Raw record sizes, int64, shape ``(n,)``."""
    t_in: int
    """Ingest time of the newest sample (perf_counter_ns)."""
    t_ins: np.ndarray | None = None
    """Per-sample ingest times (int64) when samples arrived at different times; ``None``: all at ``t_in``."""

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def ingest_time(self, i: int) -> int:
        """Ingest time of sample *i*."""
        return self.t_in if self.t_ins is None else int(self.t_ins[i])

    @classmethod
    def of(cls, items: list[Any]) -> SampleBlock:
        """Join samples and blocks of one sensor, in order, into one block."""
        if len(items) == 1 and type(items[0]) is SampleBlock:
            return items[0]  # type: ignore[no-any-return]
        blocks = [x if type(x) is SampleBlock else None for x in items]
        ts = [b.ts if b is not None else np.array([x.ts]) for b, x in zip(blocks, items, strict=True)]
        values = [
            b.values if b is not None else np.array([x.values], dtype=np.float64)
            for b, x in zip(blocks, items, strict=True)
        ]
        nbytes = [b.nbytes if b is not None else np.array([x.nbytes]) for b, x in zip(blocks, items, strict=True)]
        t_ins = [
            (b.t_ins if b.t_ins is not None else np.full(len(b), b.t_in)) if b is not None else np.array([x.t_in])
            for b, x in zip(blocks, items, strict=True)
        ]
        return cls(
            items[0].sensor,
            np.concatenate(ts).astype(np.float64),
            np.concatenate(values).astype(np.float64),
            np.concatenate(nbytes).astype(np.int64),
            max(x.t_in for x in items),
            np.concatenate(t_ins).astype(np.int64),
        )

    def take(self, keep: np.ndarray) -> SampleBlock:
        """Return the samples where boolean mask *keep* is true."""
        t_ins = None if self.t_ins is None else self.t_ins[keep]
        return SampleBlock(self.sensor, self.ts[keep], self.values[keep], self.nbytes[keep], self.t_in, t_ins)


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed-length, evenly spaced block of one sensor's samples.

    ``data`` has shape ``(channels, size)`` and dtype float32. Windows are immutable: a step that adds
    features returns a new window (``dataclasses.replace``), because several steps may read one stream.
    """

    sensor: str
    start: float
    end: float
    data: np.ndarray
    rate_hz: float
    n_raw: int
    """Raw samples that arrived since the previous window of this sensor."""
    raw_bytes: int
    """Raw bytes of those samples."""
    t_in: int
    """Ingest time of the newest sample in the window (perf_counter_ns)."""
    features: np.ndarray | None = None
    """Feature vector (float32) once the features step has run."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Scored:
    """A window with an anomaly score, the verdict and who produced it."""

    window: Window
    score: float
    anomaly: bool
    model: str

    @property
    def sensor(self) -> str:
        """The sensor of the scored window."""
        return self.window.sensor


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be processed, with the step and the reason.

    >>> DeadLetter("samples", "bad timestamp", "x,y,z").reason
    'bad timestamp'
    """

    step_id: str
    reason: str
    payload: str
    sensor: str = "_dead_letter"

    def to_json(self) -> dict[str, str]:
        """Return a JSON-ready dict."""
        return {"step": self.step_id, "reason": self.reason, "payload": self.payload, "sensor": self.sensor}


def parse_timestamp(text: str) -> float:
    """Parse a timezone-aware ISO 8601 timestamp or epoch seconds into epoch seconds.

    >>> parse_timestamp("2026-03-02T08:00:00Z")
    1772438400.0
    >>> parse_timestamp("1772438400.5")
    1772438400.5
    >>> parse_timestamp("nan")
    Traceback (most recent call last):
    ...
    ValueError: timestamp 'nan' is not a finite number
    """
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            msg = f"timestamp {text!r} is not a finite number"
            raise ValueError(msg)
        return seconds
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        msg = f"timestamp {text!r} has no timezone; add 'Z' or an offset like '+01:00'"
        raise ValueError(msg)
    return stamp.timestamp()


def parse_timestamps(texts: Sequence[str]) -> np.ndarray:
    """Parse many timestamps at once into float64 epoch seconds; raise ``ValueError`` if any is bad.

    UTC ISO 8601 text (``...Z`` or ``...+00:00``) is parsed by numpy in C; other offsets and epoch
    numbers one by one.

    >>> parse_timestamps(["2026-03-02T08:00:00.5Z", "2026-03-02T08:00:01+00:00"]).tolist()
    [1772438400.5, 1772438401.0]
    """
    if texts and all(t.endswith("Z") for t in texts):
        stripped = [t[:-1] for t in texts]
    elif texts and all(t.endswith("+00:00") for t in texts):
        stripped = [t[:-6] for t in texts]
    else:
        return np.fromiter(map(parse_timestamp, texts), dtype=np.float64, count=len(texts))
    if not all("T" in t for t in stripped):  # numpy would accept a bare date; keep the rule strict
        return np.fromiter(map(parse_timestamp, texts), dtype=np.float64, count=len(texts))
    micros = np.array(stripped, dtype="datetime64[us]").astype(np.int64)
    return micros / 1e6


def to_datetime(ts: float) -> datetime:
    """Turn epoch seconds back into an aware UTC datetime.

    >>> to_datetime(0.0).isoformat()
    '1970-01-01T00:00:00+00:00'
    """
    return datetime.fromtimestamp(ts, tz=timezone.utc)
