"""The items that travel through a flow: samples, windows, scored windows, dead letters.

Event time is a float of seconds since the Unix epoch (UTC); it is parsed from
timezone-aware text at the edge of the system and turned back into aware
datetimes with :func:`to_datetime`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DeadLetter", "Sample", "Scored", "Window", "parse_timestamp", "to_datetime"]


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


@dataclass(slots=True)
class Window:
    """A fixed-length, evenly spaced block of one sensor's samples.

    ``data`` has shape ``(channels, size)`` and dtype float32.
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
    """
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        msg = f"timestamp {text!r} has no timezone; add 'Z' or an offset like '+01:00'"
        raise ValueError(msg)
    return stamp.timestamp()


def to_datetime(ts: float) -> datetime:
    """Turn epoch seconds back into an aware UTC datetime.

    >>> to_datetime(0.0).isoformat()
    '1970-01-01T00:00:00+00:00'
    """
    return datetime.fromtimestamp(ts, tz=timezone.utc)
