"""Counters and latency of a running flow, kept per run (see :class:`~edgeflow.context.RunContext`).

>>> stats = FlowStats()
>>> stats.add(samples_in=3, bytes_in=90)
>>> stats.samples_in, stats.bytes_in
(3, 90)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields

import numpy as np

__all__ = ["FlowStats", "LatencyRecorder"]


class LatencyRecorder:
    """Keeps the newest *capacity* latencies (ns) in a ring buffer for percentiles.

    >>> rec = LatencyRecorder(4)
    >>> for ns in (1_000, 2_000, 3_000, 4_000, 5_000):
    ...     rec.record(ns)
    >>> rec.percentile_us(50)
    3.5
    """

    def __init__(self, capacity: int = 65_536) -> None:
        self._buf = np.zeros(capacity, dtype=np.int64)
        self._n = 0

    def record(self, ns: int) -> None:
        """Add one latency in nanoseconds."""
        self._buf[self._n % self._buf.size] = ns
        self._n += 1

    @property
    def count(self) -> int:
        """How many latencies were ever recorded."""
        return self._n

    def percentile_us(self, q: float) -> float:
        """Return the *q*-th percentile of the kept latencies, in microseconds (NaN if none)."""
        kept = self._buf[: min(self._n, self._buf.size)]
        if kept.size == 0:
            return float("nan")
        return float(np.percentile(kept, q)) / 1_000.0


@dataclass
class FlowStats:
    """What one process of a flow has seen so far."""

    samples_in: int = 0
    bytes_in: int = 0
    windows: int = 0
    gaps: int = 0
    late: int = 0
    dead_letters: int = 0
    anomalies: int = 0
    items_out: int = 0
    bytes_out: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Operator-specific counters by name, e.g. ``mqtt.dropped``."""
    problems: list[str] = field(default_factory=list)
    """Reasons the run cannot be trusted, recorded by steps (see :meth:`problem`); the CLI exits non-zero."""
    started: float = field(default_factory=time.monotonic)
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to several counters at once (thread-safe)."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def problem(self, text: str) -> None:
        """Record something that makes the run's result untrustworthy (e.g. a broker refused the login); kept once."""
        with self._lock:
            if text not in self.problems:
                self.problems.append(text)

    def count(self, name: str, n: int = 1) -> None:
        """Add *n* to the operator-specific counter *name* (thread-safe)."""
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def counters(self) -> dict[str, int]:
        """All integer counters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}

    @property
    def reduction(self) -> float:
        """Fraction of raw input bytes that did not leave the gateway (0..1)."""
        return 1.0 - self.bytes_out / self.bytes_in if self.bytes_in else 0.0
