"""Counters, latency and health signals of a running flow, kept per run (see :class:`~edgeflow.context.RunContext`).

Steps add to the counters; the engine adds what it can see from outside the
steps (dead letters by step and reason, flagged sensors, per-step batch times,
what each source hands on); :mod:`edgeflow.observe` reads it all for the
Prometheus exporter, the live view and the report. Everything is thread-safe.

>>> stats = FlowStats()
>>> stats.add(samples_in=3, bytes_in=90)
>>> stats.samples_in, stats.bytes_in
(3, 90)
"""

from __future__ import annotations

import math
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = [
    "BUCKETS_S",
    "FlowStats",
    "Histogram",
    "LatencyRecorder",
    "Link",
    "SensorFlags",
    "SourceState",
    "is_loss",
    "reason_class",
]

BUCKETS_S: tuple[float, ...] = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (seconds) of the duration histograms: 5 µs to a minute, 1-2.5-5 steps."""

MAX_REASONS_PER_STEP = 20
"""Distinct dead-letter reasons kept per step; further ones are counted as ``other``."""
MAX_EPISODES = 20
"""Flag episodes kept per sensor; later ones extend the last."""


class Histogram:
    """Durations in cumulative buckets (the shape of a Prometheus histogram), recorded in nanoseconds.

    >>> h = Histogram((1e-3, 1e-2))
    >>> for ns in (500_000, 2_000_000, 3_000_000, 50_000_000):
    ...     h.observe_ns(ns)
    >>> h.buckets(), h.count, h.sum_s
    ([(0.001, 1), (0.01, 3), (inf, 4)], 4, 0.0555)
    >>> round(h.quantile_s(0.5) * 1e3, 2)  # linear inside the bucket (1, 10] ms
    5.5
    """

    def __init__(self, bounds_s: Sequence[float] = BUCKETS_S) -> None:
        self.bounds_s = tuple(float(b) for b in bounds_s)
        self._bounds_ns = [round(b * 1e9) for b in self.bounds_s]
        self._counts = [0] * (len(self.bounds_s) + 1)
        self._sum_ns = 0
        self._lock = threading.Lock()

    def observe_ns(self, ns: int) -> None:
        """Add one duration in nanoseconds."""
        i = bisect_left(self._bounds_ns, ns)
        with self._lock:
            self._counts[i] += 1
            self._sum_ns += ns

    def _add_unlocked(self, ns: int) -> None:
        self._counts[bisect_left(self._bounds_ns, ns)] += 1
        self._sum_ns += ns

    @property
    def count(self) -> int:
        """How many durations were observed."""
        return sum(self._counts)

    @property
    def sum_s(self) -> float:
        """Their sum in seconds."""
        return self._sum_ns / 1e9

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative ``(upper bound in seconds, count)`` pairs, ending with ``inf``."""
        with self._lock:
            counts = list(self._counts)
        out, total = [], 0
        for bound, n in zip((*self.bounds_s, math.inf), counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def quantile_s(self, q: float) -> float:
        """Estimate the *q*-quantile (0..1) in seconds, as Prometheus's ``histogram_quantile`` does (NaN if empty)."""
        cumulative = self.buckets()
        total = cumulative[-1][1]
        if total == 0:
            return math.nan
        rank = q * total
        lower, below = 0.0, 0
        for bound, n in cumulative:
            if n >= rank and n > below:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - below) / (n - below)
            lower, below = bound, n
        return lower

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready copy (bounds, per-bucket counts, sum in ns)."""
        with self._lock:
            return {"bounds_s": list(self.bounds_s), "counts": list(self._counts), "sum_ns": self._sum_ns}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """Rebuild a histogram written by :meth:`to_json`."""
        h = cls(data["bounds_s"])
        h._counts = [int(n) for n in data["counts"]]
        h._sum_ns = int(data["sum_ns"])
        return h

    def merge(self, other: Histogram) -> None:
        """Add *other*'s observations (same bounds) to this histogram."""
        if other.bounds_s != self.bounds_s:
            msg = f"cannot merge histograms with bounds {other.bounds_s} into {self.bounds_s}; expected equal bounds"
            raise ValueError(msg)
        data = other.to_json()
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, data["counts"], strict=True)]
            self._sum_ns += data["sum_ns"]


class LatencyRecorder:
    """Keeps the newest *capacity* latencies (ns) in a ring buffer for percentiles, and all of them in a histogram.

    >>> rec = LatencyRecorder(4)
    >>> for ns in (1_000, 2_000, 3_000, 4_000, 5_000):
    ...     rec.record(ns)
    >>> rec.percentile_us(50), rec.count, rec.histogram.count
    (3.5, 5, 5)
    """

    def __init__(self, capacity: int = 65_536) -> None:
        self._buf = np.zeros(capacity, dtype=np.int64)
        self._n = 0
        self.histogram = Histogram()
        """Every latency ever recorded, in buckets (what the Prometheus exporter serves)."""
        self._lock = threading.Lock()

    def record(self, ns: int) -> None:
        """Add one latency in nanoseconds."""
        with self._lock:
            self._buf[self._n % self._buf.size] = ns
            self._n += 1
            with self.histogram._lock:
                self.histogram._add_unlocked(ns)

    @property
    def count(self) -> int:
        """How many latencies were ever recorded."""
        return self._n

    def kept(self) -> np.ndarray:
        """Return a copy of the latencies kept for percentiles (ns)."""
        with self._lock:
            return self._buf[: min(self._n, self._buf.size)].copy()

    def percentile_us(self, q: float) -> float:
        """Return the *q*-th percentile of the kept latencies, in microseconds (NaN if none)."""
        kept = self.kept()
        if kept.size == 0:
            return float("nan")
        return float(np.percentile(kept, q)) / 1_000.0

    @classmethod
    def of(cls, kept: np.ndarray, count: int, histogram: Histogram | None = None) -> LatencyRecorder:
        """Rebuild a recorder from kept latencies (ns), the number ever recorded and their histogram.

        >>> rec = LatencyRecorder.of(np.array([1_000, 3_000]), count=10)
        >>> rec.percentile_us(50), rec.count
        (2.0, 10)
        """
        rec = cls(max(int(kept.size), 1))
        rec._buf[: kept.size] = kept
        rec._n = max(int(count), int(kept.size))
        if histogram is not None:
            rec.histogram = histogram
        return rec


@dataclass
class SensorFlags:
    """When one sensor was flagged: flagged windows, the event-time span, and the episodes in it.

    An episode is a run of flagged windows that overlap or touch; one that starts after the previous
    flagged window ended starts a new episode.

    >>> f = SensorFlags()
    >>> for start, end in ((10.0, 10.5), (10.1, 10.6), (20.0, 20.5)):
    ...     f.add(start, end)
    >>> f.windows, f.first, f.last, f.episodes
    (3, 10.0, 20.5, [[10.0, 10.6], [20.0, 20.5]])
    """

    windows: int = 0
    first: float = math.inf
    """Event time (epoch seconds) the first flagged window started."""
    last: float = -math.inf
    """Event time the last flagged window ended."""
    episodes: list[list[float]] = field(default_factory=list)
    """``[start, end]`` of each episode (at most :data:`MAX_EPISODES`; later ones extend the last)."""
    n_episodes: int = 0

    def add(self, start: float, end: float) -> None:
        """Count one flagged window spanning *start*..*end* (event time)."""
        self.windows += 1
        self.first = min(self.first, start)
        self.last = max(self.last, end)
        if self.episodes and start <= self.episodes[-1][1]:
            self.episodes[-1][1] = max(self.episodes[-1][1], end)
            return
        self.n_episodes += 1
        if len(self.episodes) < MAX_EPISODES:
            self.episodes.append([start, end])
        else:
            self.episodes[-1][1] = max(self.episodes[-1][1], end)

    def merge(self, other: SensorFlags) -> None:
        """Add another process's flags of the same sensor (episodes that overlap are joined)."""
        self.windows += other.windows
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        spans = sorted([list(span) for span in self.episodes + other.episodes])
        joined: list[list[float]] = []
        for start, end in spans:
            if joined and start <= joined[-1][1]:
                joined[-1][1] = max(joined[-1][1], end)
            else:
                joined.append([start, end])
        self.n_episodes = max(len(joined), self.n_episodes + other.n_episodes - (len(spans) - len(joined)))
        self.episodes = joined[:MAX_EPISODES]

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "first": self.first,
            "last": self.last,
            "episodes": [list(s) for s in self.episodes],
            "n_episodes": self.n_episodes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SensorFlags:
        return cls(
            data["windows"], data["first"], data["last"], [list(s) for s in data["episodes"]], data["n_episodes"]
        )


@dataclass
class SourceState:
    """What the engine saw one source step hand on in this process."""

    operator: str = ""
    partitions: int = 0
    """Partitions opened in this process."""
    ended: int = 0
    """Partitions that reached their end."""
    samples: int = 0
    batches: int = 0
    """Non-empty batches handed on."""
    last_item: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` of the last non-empty batch (or of the opening)."""
    newest_ts: float = -math.inf
    """Newest event time handed on (epoch seconds)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "partitions": self.partitions,
            "ended": self.ended,
            "samples": self.samples,
            "batches": self.batches,
            "idle_s": time.monotonic() - self.last_item,
            "newest_ts": self.newest_ts,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceState:
        return cls(
            data["operator"],
            data["partitions"],
            data["ended"],
            data["samples"],
            data["batches"],
            time.monotonic() - (data["idle_s"] if data["idle_s"] is not None else 0.0),
            data["newest_ts"] if data["newest_ts"] is not None else -math.inf,
        )


@dataclass
class Link:
    """A connection the flow depends on (e.g. the MQTT uplink): up or down, and since when."""

    up: bool
    since: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` of the last change."""


LOSS_WORDS = ("dropped", "lost", "overflow", "rejected", "shed", "discarded")
"""A counter whose name holds one of these counts data that did not make it."""


SUMMED_GAUGES = ("outbox.depth", "queue.depth")
"""Gauges that add up over processes (amounts); the others are levels or times (see :func:`_merge_gauge`)."""


def _merge_gauge(name: str, mine: float | None, theirs: float) -> float:
    """Two processes' values of gauge *name*: amounts add up, enqueue times keep the oldest, levels the highest."""
    if mine is None:
        return theirs
    kind = name.split("|", 1)[0]
    if kind in SUMMED_GAUGES:
        return mine + theirs
    if kind == "outbox.oldest_enqueued":  # epoch seconds, 0 for an empty outbox
        return min((t for t in (mine, theirs) if t > 0), default=0.0)
    return max(mine, theirs)


def is_loss(counter: str) -> bool:
    """Whether a counter counts data that did not make it (reports list every such counter that is non-zero).

    >>> is_loss("mqtt.sink_dropped"), is_loss("mqtt.reconnects")
    (True, False)
    """
    return any(word in counter for word in LOSS_WORDS)


_PREFIX = re.compile(r"^(?:line \d+|topic '[^']*'|topic \"[^\"]*\"): ")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_NUMBER = re.compile(r"(?<![\w-])[-+]?\d[\d,_]*(?:\.\d+)?(?:e[-+]?\d+)?")


def reason_class(reason: str) -> str:
    """Return a dead letter's reason without its particulars (line, quoted values, numbers, times): a label.

    >>> reason_class("line 12: expected 3 columns, got 2")
    'expected N columns, got N'
    >>> reason_class("late sample: ts 2026-03-02T08:00:01.5+00:00 is not after the sensor's newest ...")
    'late sample'
    >>> reason_class("topic 'plant/1/x': not UTF-8 JSON: byte 0xff")
    'not UTF-8 JSON'
    """
    text = _PREFIX.sub("", reason, count=1)
    text = _ISO.sub("T", text)
    text = _QUOTED.sub("'…'", text)
    text = _HEX.sub("N", text)
    text = _NUMBER.sub("N", text)
    head = text.split(": ", 1)[0].strip()
    return (head[:77] + "...") if len(head) > 80 else head or "unknown"


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
    """Operator-specific counters by name, e.g. ``mqtt.dropped``. Names the observers read: any name with
    ``dropped``, ``lost``, ``overflow``, ``rejected``, ``shed`` or ``discarded`` is a loss; ``infer.swaps``,
    ``infer.swap_rejected``, ``infer.rollbacks``; ``mqtt.sink_delivered``; ``replay.bytes_read`` and
    ``replay.bytes_total`` (file bytes read and in all, for progress)."""
    problems: list[str] = field(default_factory=list)
    """Reasons the run cannot be trusted, recorded by steps (see :meth:`problem`); the CLI exits non-zero."""
    started: float = field(default_factory=time.monotonic)
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    flags: dict[str, SensorFlags] = field(default_factory=dict)
    """Flagged sensors: when they were flagged (see :meth:`flagged`)."""
    dead_letters_by: dict[tuple[str, str], int] = field(default_factory=dict)
    """Dead letters by ``(step, reason class)`` (see :meth:`dead_letter`)."""
    histograms: dict[str, Histogram] = field(default_factory=dict)
    """Durations by name: ``step.<id>`` (time a step spends per batch), ``infer.invoke`` (one model invoke)."""
    gauges: dict[str, float] = field(default_factory=dict)
    """Current values by name: ``outbox.depth`` (messages waiting), ``outbox.oldest_enqueued`` (epoch seconds of the
    oldest), ``queue.depth`` (the MQTT hand-off queue)."""
    readiness: dict[str, bool] = field(default_factory=dict)
    """Components and whether they are ready (see :meth:`set_ready`); the flow is ready when all are."""
    links: dict[str, Link] = field(default_factory=dict)
    """Connections and whether they are up (see :meth:`link`)."""
    sources: dict[str, SourceState] = field(default_factory=dict)
    """What each source step handed on in this process (kept by the engine)."""
    models: dict[str, str] = field(default_factory=dict)
    """The model (``name@version``) each scoring step used last, by step."""
    verdict_ts: dict[str, float] = field(default_factory=dict)
    """Newest event time each scoring step gave a verdict for (the end of its window), by step."""
    expected_bytes_in: int | None = None
    """Raw bytes the sources will read in all, when known before the run (replays of plain files): progress."""
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

    # observations (thread-safe) ------------------------------------------------
    def flagged(self, sensor: str, start: float, end: float | None = None) -> None:
        """Record that *sensor*'s window *start*..*end* (event time, epoch seconds) was flagged.

        >>> stats = FlowStats()
        >>> stats.flagged("pump-2", 20.0, 20.5); stats.flagged("pump-2", 20.1, 20.6)
        >>> stats.flags["pump-2"].windows, stats.flags["pump-2"].episodes
        (2, [[20.0, 20.6]])
        """
        with self._lock:
            flags = self.flags.get(sensor)
            if flags is None:
                flags = self.flags[sensor] = SensorFlags()
            flags.add(start, start if end is None else end)

    def dead_letter(self, step: str, reason: str) -> None:
        """Count one dead letter of *step*, by the class of its *reason* (see :func:`reason_class`).

        >>> stats = FlowStats()
        >>> stats.dead_letter("samples", "line 3: expected 3 columns, got 2")
        >>> stats.dead_letters, stats.dead_letters_by
        (1, {('samples', 'expected N columns, got N'): 1})
        """
        kind = reason_class(reason)
        with self._lock:
            self.dead_letters += 1
            key = (step, kind)
            if key not in self.dead_letters_by:
                kinds = sum(1 for s, _ in self.dead_letters_by if s == step)
                if kinds >= MAX_REASONS_PER_STEP:
                    key = (step, "other")
            self.dead_letters_by[key] = self.dead_letters_by.get(key, 0) + 1

    def histogram(self, name: str) -> Histogram:
        """Return the duration histogram *name*, made on first use."""
        with self._lock:
            h = self.histograms.get(name)
            if h is None:
                h = self.histograms[name] = Histogram()
            return h

    def observe(self, name: str, seconds: float) -> None:
        """Add one duration in seconds to the histogram *name* (e.g. ``infer.invoke``)."""
        self.histogram(name).observe_ns(round(seconds * 1e9))

    def set_gauge(self, name: str, value: float) -> None:
        """Set the current value *name* (e.g. ``outbox.depth``)."""
        with self._lock:
            self.gauges[name] = float(value)

    def add_gauge(self, name: str, delta: float) -> None:
        """Add *delta* to the current value *name* (several workers keeping one total, e.g. ``outbox.depth``).

        >>> stats = FlowStats()
        >>> stats.add_gauge("outbox.depth", 3); stats.add_gauge("outbox.depth", -1); stats.gauges
        {'outbox.depth': 2.0}
        """
        with self._lock:
            self.gauges[name] = self.gauges.get(name, 0.0) + delta

    def set_ready(self, component: str, ready: bool) -> None:
        """Say whether *component* (e.g. ``source:samples``) is ready; a component that never says is not waited for.

        >>> stats = FlowStats()
        >>> stats.set_ready("source:samples", False); stats.is_ready
        False
        >>> stats.set_ready("source:samples", True); stats.is_ready
        True
        """
        with self._lock:
            self.readiness[component] = ready

    @property
    def is_ready(self) -> bool:
        """Whether every component that declared itself is ready."""
        with self._lock:
            return all(self.readiness.values())

    def link(self, name: str, up: bool) -> None:
        """Say whether the connection *name* (e.g. ``uplink:mqtt_sink``) is up; only changes restart its clock.

        >>> stats = FlowStats()
        >>> stats.link("uplink:out", False); stats.links["uplink:out"].up
        False
        """
        with self._lock:
            now = self.links.get(name)
            if now is None or now.up != up:
                self.links[name] = Link(up)

    def expect_sources(self, steps: Iterable[str]) -> None:
        """Make readiness wait until every partition of each source step is open (``open:<step>``).

        Only for a process that opens all partitions (not one process of a cluster).

        >>> stats = FlowStats()
        >>> stats.expect_sources(["samples"]); stats.is_ready
        False
        >>> stats.source_opened("samples", "replay", total=1); stats.is_ready
        True
        """
        with self._lock:
            for step in steps:
                self.readiness[f"open:{step}"] = False

    def source_opened(self, step: str, operator: str, total: int | None = None) -> None:
        """Count a partition of source *step* the engine opened in this process (of *total* partitions, if known)."""
        with self._lock:
            state = self.sources.get(step)
            if state is None:
                state = self.sources[step] = SourceState(operator)
            state.partitions += 1
            state.last_item = time.monotonic()
            if total is not None and state.partitions >= total and f"open:{step}" in self.readiness:
                self.readiness[f"open:{step}"] = True

    def source_batch(self, step: str, samples: int, newest_ts: float) -> None:
        """Source *step* handed on a non-empty batch: *samples* samples, the newest at event time *newest_ts*."""
        with self._lock:
            state = self.sources.get(step)
            if state is None:
                state = self.sources[step] = SourceState()
            state.samples += samples
            state.batches += 1
            state.last_item = time.monotonic()
            if newest_ts > state.newest_ts:
                state.newest_ts = newest_ts

    def source_ended(self, step: str) -> None:
        """Count a partition of source *step* that reached its end."""
        with self._lock:
            state = self.sources.get(step)
            if state is None:
                state = self.sources[step] = SourceState()
            state.ended += 1

    def scored(self, step: str, model: str, newest_end: float) -> None:
        """Scoring step *step* gave verdicts with *model*, the newest for a window ending at *newest_end*."""
        with self._lock:
            self.models[step] = model
            if newest_end > self.verdict_ts.get(step, -math.inf):
                self.verdict_ts[step] = newest_end

    # whole copies ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Everything as plain JSON-ready data (the latency as percentiles and its histogram).

        >>> data = FlowStats(samples_in=5, counts={"mqtt.dropped": 1}).to_json()
        >>> data["samples_in"], data["counts"], data["latency"]["p99_us"]
        (5, {'mqtt.dropped': 1}, None)
        """
        latency = self.latency
        p50, p99 = latency.percentile_us(50), latency.percentile_us(99)
        with self._lock:
            return {
                **{name: getattr(self, name) for name in self.counters()},
                "counts": dict(self.counts),
                "problems": list(self.problems),
                "elapsed_s": time.monotonic() - self.started,
                "latency": {
                    "count": latency.count,
                    "p50_us": None if math.isnan(p50) else p50,
                    "p99_us": None if math.isnan(p99) else p99,
                    "histogram": latency.histogram.to_json(),
                },
                "flags": {sensor: f.to_json() for sensor, f in self.flags.items()},
                "dead_letters_by": [
                    {"step": step, "reason": reason, "count": n} for (step, reason), n in self.dead_letters_by.items()
                ],
                "histograms": {name: h.to_json() for name, h in self.histograms.items()},
                "gauges": dict(self.gauges),
                "readiness": dict(self.readiness),
                "links": {
                    name: {"up": link.up, "for_s": time.monotonic() - link.since} for name, link in self.links.items()
                },
                "sources": {step: s.to_json() for step, s in self.sources.items()},
                "models": dict(self.models),
                "verdict_ts": dict(self.verdict_ts),
                "expected_bytes_in": self.expected_bytes_in,
            }

    @classmethod
    def from_json(cls, data: dict[str, Any], latencies: np.ndarray | None = None) -> FlowStats:
        """Rebuild stats written by :meth:`to_json`; *latencies* are the kept latencies (ns), if saved.

        >>> again = FlowStats.from_json(FlowStats(windows=4, counts={"x": 2}).to_json())
        >>> again.windows, again.counts
        (4, {'x': 2})
        """
        stats = cls()
        for name in stats.counters():
            setattr(stats, name, int(data.get(name, 0)))
        stats.counts = {str(k): int(v) for k, v in data.get("counts", {}).items()}
        stats.problems = list(data.get("problems", []))
        stats.started = time.monotonic() - float(data.get("elapsed_s") or 0.0)
        lat = data.get("latency") or {}
        hist = Histogram.from_json(lat["histogram"]) if "histogram" in lat else None
        kept = latencies if latencies is not None else np.zeros(0, dtype=np.int64)
        stats.latency = LatencyRecorder.of(kept, int(lat.get("count", kept.size)), hist)
        stats.flags = {s: SensorFlags.from_json(f) for s, f in data.get("flags", {}).items()}
        stats.dead_letters_by = {(d["step"], d["reason"]): int(d["count"]) for d in data.get("dead_letters_by", [])}
        stats.histograms = {n: Histogram.from_json(h) for n, h in data.get("histograms", {}).items()}
        stats.gauges = {str(k): float(v) for k, v in data.get("gauges", {}).items() if v is not None}
        stats.readiness = {str(k): bool(v) for k, v in data.get("readiness", {}).items()}
        now = time.monotonic()
        stats.links = {n: Link(bool(v["up"]), now - float(v["for_s"])) for n, v in data.get("links", {}).items()}
        stats.sources = {s: SourceState.from_json(v) for s, v in data.get("sources", {}).items()}
        stats.models = dict(data.get("models", {}))
        stats.verdict_ts = {k: float(v) for k, v in data.get("verdict_ts", {}).items() if v is not None}
        stats.expected_bytes_in = data.get("expected_bytes_in")
        return stats

    @classmethod
    def merged(cls, parts: Iterable[FlowStats]) -> FlowStats:
        """Add up the stats of several processes of one run (percentiles over all their kept latencies).

        >>> a, b = FlowStats(samples_in=3), FlowStats(windows=2)
        >>> a.latency.record(1_000); b.latency.record(3_000)
        >>> m = FlowStats.merged([a, b])
        >>> m.samples_in, m.windows, m.latency.count, m.latency.percentile_us(50)
        (3, 2, 2, 2.0)
        """
        parts = list(parts)
        out = cls()
        for name in out.counters():
            setattr(out, name, sum(getattr(p, name) for p in parts))
        kept = [p.latency.kept() for p in parts]
        hist = Histogram()
        for p in parts:
            hist.merge(p.latency.histogram)
        out.latency = LatencyRecorder.of(
            np.concatenate(kept) if kept else np.zeros(0, np.int64), sum(p.latency.count for p in parts), hist
        )
        out.started = min((p.started for p in parts), default=out.started)
        for p in parts:
            for name, n in p.counts.items():
                out.counts[name] = out.counts.get(name, 0) + n
            for text in p.problems:
                if text not in out.problems:
                    out.problems.append(text)
            for sensor, f in p.flags.items():
                if sensor in out.flags:
                    out.flags[sensor].merge(f)
                else:
                    out.flags[sensor] = SensorFlags.from_json(f.to_json())
            for key, n in p.dead_letters_by.items():
                out.dead_letters_by[key] = out.dead_letters_by.get(key, 0) + n
            for name, h in p.histograms.items():
                if name not in out.histograms:
                    out.histograms[name] = Histogram(h.bounds_s)
                out.histograms[name].merge(h)
            for name, value in p.gauges.items():
                out.gauges[name] = _merge_gauge(name, out.gauges.get(name), value)
            for name, ready in p.readiness.items():
                out.readiness[name] = out.readiness.get(name, True) and ready
            for name, link in p.links.items():
                mine = out.links.get(name)
                if mine is None or (mine.up and not link.up) or (mine.up == link.up and link.since < mine.since):
                    out.links[name] = Link(link.up, link.since)
            for step, s in p.sources.items():
                mine_s = out.sources.setdefault(step, SourceState(s.operator, last_item=-math.inf))
                mine_s.operator = mine_s.operator or s.operator
                mine_s.partitions += s.partitions
                mine_s.ended += s.ended
                mine_s.samples += s.samples
                mine_s.batches += s.batches
                mine_s.last_item = max(mine_s.last_item, s.last_item)
                mine_s.newest_ts = max(mine_s.newest_ts, s.newest_ts)
            out.models.update(p.models)
            for step, ts in p.verdict_ts.items():
                out.verdict_ts[step] = max(out.verdict_ts.get(step, -math.inf), ts)
            if p.expected_bytes_in is not None:
                out.expected_bytes_in = max(out.expected_bytes_in or 0, p.expected_bytes_in)
        return out
