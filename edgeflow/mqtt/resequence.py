"""Put a sensor's MQTT messages back in order after a shared subscription spread them over partitions.

With several workers (``edgeflow run -w N`` / ``-p N``) every worker's partition of an MQTT source subscribes to
``$share/<group>/<filter>`` and the broker hands each message to **one** of them, message by message (Mosquitto
has no per-topic choice of member), so consecutive messages of one sensor can come through different partitions
and meet, in any order, at the worker that owns the sensor. The partitions only decode: each hands on its
messages as :class:`Arrivals` (one per sensor and batch, stamps and flags kept), and a keyed step right after the
source, :class:`Resequencer` (one per sensor, on the worker that owns it), does what a single partition does
itself:

* **stamped messages** (sequence number per topic and publisher, see :mod:`edgeflow.mqtt.codecs`) are released in
  sequence order: one whose predecessor has not come yet is held; a gap counts as lost upstream
  (``mqtt.lost_upstream``) once ``window`` later messages of that topic are held or one waited ``hold_s``; a
  number already released or held is a duplicate (``mqtt.duplicate_messages``); one that comes after it was given
  up on is handed on and counted in ``mqtt.late_messages`` (the window step sees it as late);
* **unstamped samples** wait in an event-time reorder buffer of at most ``window`` samples (released oldest first
  when it is full, or once they waited ``delay_s``, which is the latency they gain); a sample older than one
  already released is handed on and counted in ``mqtt.late_samples``; a redelivered one (DUP flag, or after a
  resume) at or before the sensor's newest is a duplicate (``mqtt.duplicates``).

Its snapshot (:class:`ResequenceState`) holds each topic's last released number, what is held, and the sensor's
newest released timestamp, so a resumed run goes on where the snapshot was taken. Acknowledgements stay with the
partition that received a message (once a snapshot covers it: a held message is in this step's snapshot).

>>> from edgeflow.metrics import FlowStats
>>> stats = FlowStats()
>>> seq = Resequencer(ResequenceSettings("samples"), stats)
>>> def msg(n, ts):
...     return Arrived("s/a", "p", n, False, 0, 10, [(ts, (1.0,))])
>>> [b.ts.tolist() for b in seq.on_batch([Arrivals("a", [msg(1, 1.0), msg(3, 3.0)])])]
[[1.0]]
>>> [b.ts.tolist() for b in seq.on_batch([Arrivals("a", [msg(2, 2.0), msg(2, 2.0)])])]
[[2.0, 3.0]]
>>> stats.counts["mqtt.duplicate_messages"], stats.samples_in
(1, 3)
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.records import SampleBlock

__all__ = ["Arrivals", "Arrived", "ResequenceSettings", "ResequenceState", "Resequencer"]

SampleTuple = tuple[float, tuple[float, ...]]
_LOST_KEPT = 4096
"""Numbers given up on that are remembered per topic (to tell a late message from a duplicate)."""
_KEYS_KEPT = 32
"""(topic, publisher) sequences remembered per sensor (a restarted publisher numbers anew under a new id)."""


class Arrived(NamedTuple):
    """One message as a partition received it (picklable; crosses processes)."""

    topic: str
    publisher: str | None
    """The stamp's publisher; ``None`` for an unstamped message."""
    seq: int
    """The stamp's number (0 unstamped)."""
    dup: bool
    """The broker sent it again (MQTT DUP flag)."""
    t_in: int
    """When it reached the partition's hand-off queue (``perf_counter_ns``)."""
    size: int
    """Payload bytes."""
    samples: list[SampleTuple]
    void: bool = False
    """Counted elsewhere (dropped by the partition's hand-off queue, or a dead letter): it takes its number, no
    samples, and is not lost upstream."""


@dataclass(slots=True)
class Arrivals:
    """A partition's messages of one sensor from one batch, in arrival order.

    >>> Arrivals("pump-1", []).sensor
    'pump-1'
    """

    sensor: str
    messages: list[Arrived]


@dataclass(frozen=True)
class ResequenceSettings:
    """How much a :class:`Resequencer` holds back.

    >>> ResequenceSettings("samples").window
    10000
    """

    step_id: str
    window: int = 10_000
    """Stamped: later messages of a topic held before a gap counts as lost; unstamped: samples held at most."""
    hold_s: float = 5.0
    """Stamped: longest a message waits for a missing predecessor before the gap counts as lost."""
    delay_s: float = 0.2
    """Unstamped: how long a sample waits in the reorder buffer for earlier ones (its added latency)."""

    def __post_init__(self) -> None:
        if self.window < 1 or not self.hold_s > 0 or not self.delay_s > 0:
            msg = (
                f"step {self.step_id!r}: reorder window got {self.window}, hold {self.hold_s} s, delay "
                f"{self.delay_s} s; expected a window of at least 1 and times above 0. Hint: set reorder_window, "
                "reorder_hold_s and reorder_delay_s of the MQTT source"
            )
            raise ValueError(msg)


@dataclass
class ResequenceState:
    """What a :class:`Resequencer` resumes from (picklable)."""

    last: dict[tuple[str, str], int] = field(default_factory=dict)
    """Each (topic, publisher)'s last released number."""
    held: list[Arrived] = field(default_factory=list)
    """Stamped messages waiting for their predecessors."""
    pending: list[tuple[float, tuple[float, ...], int, int]] = field(default_factory=list)
    """Unstamped samples waiting: ``(ts, values, bytes, t_in)``."""
    newest: float = -math.inf
    """The sensor's newest released timestamp."""
    lost: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """Numbers given up on, per (topic, publisher), newest last (bounded)."""


class Resequencer:
    """One sensor's messages from every partition, released in order (a :class:`~edgeflow.graph.KeyedLogic`)."""

    def __init__(self, settings: ResequenceSettings, stats: FlowStats, resume: ResequenceState | None = None) -> None:
        """Start empty, or from *resume* (a snapshot of this step for this sensor)."""
        self._settings = settings
        self._stats = stats
        self._step = settings.step_id
        state = resume if resume is not None else ResequenceState()
        if not isinstance(state, ResequenceState):
            msg = (
                f"step {settings.step_id!r}: cannot resume the resequencing of a shared MQTT subscription from a "
                f"{type(state).__name__}; expected a ResequenceState. Hint: the recovery data was written by another "
                "version or another number of workers; start without it"
            )
            raise TypeError(msg)
        now = time.monotonic()
        self._last = dict(state.last)
        self._held: dict[tuple[str, str], dict[int, tuple[Arrived, float]]] = {}
        for message in state.held:
            assert message.publisher is not None
            self._held.setdefault((message.topic, message.publisher), {})[message.seq] = (message, now)
        self._pending: list[tuple[float, int, tuple[float, ...], int, int, float]] = []
        self._order = 0  # ties in the heap keep arrival order
        for ts, values, size, t_in in state.pending:
            self._push(ts, values, size, t_in, now)
        self._newest = state.newest
        self._resumed = resume is not None  # until a fresh sample passes: at or before newest is a duplicate
        self._lost = {key: list(seqs) for key, seqs in state.lost.items()}
        self._sensor = ""
        self._out: list[tuple[float, tuple[float, ...], int, int]] = []
        self._accepted = 0  # messages released since the last batch (counted once per batch)

    # what is held ---------------------------------------------------------------------------------------
    def _push(self, ts: float, values: tuple[float, ...], size: int, t_in: int, now: float) -> None:
        self._order += 1
        heapq.heappush(self._pending, (ts, self._order, values, size, t_in, now))

    def _release(self, message: Arrived) -> None:
        self._accepted += 1
        n = len(message.samples)
        share, extra = divmod(message.size, n) if n else (0, 0)
        for i, (ts, values) in enumerate(message.samples):
            self._out.append((ts, values, share + (extra if i == 0 else 0), message.t_in))

    def _give_up(self, key: tuple[str, str]) -> None:
        """Count the gap before the oldest held message of *key* as lost and release what follows it in order."""
        held = self._held.get(key)
        if not held:
            return
        first = min(held)
        last = self._last.get(key)
        if last is not None and first > last + 1:
            lost = first - last - 1
            self._stats.count("mqtt.lost_upstream", lost)
            seqs = self._lost.setdefault(key, [])
            seqs.extend(range(max(last + 1, first - _LOST_KEPT), first))
            del seqs[:-_LOST_KEPT]
        self._last[key] = first - 1
        self._run(key)

    def _run(self, key: tuple[str, str]) -> None:
        """Release *key*'s held messages that follow its last released one without a gap."""
        held = self._held.get(key)
        if not held:
            return
        nxt = self._last[key] + 1
        while nxt in held:
            message, _ = held.pop(nxt)
            if not message.void:
                self._release(message)
            nxt += 1
        self._last[key] = nxt - 1
        if not held:
            del self._held[key]

    def _stamped(self, message: Arrived, now: float) -> None:
        assert message.publisher is not None
        key = (message.topic, message.publisher)
        last = self._last.get(key)
        if last is None and message.seq == 1:
            last = self._last[key] = 0
        if last is not None and message.seq <= last:
            lost = self._lost.get(key)
            if lost and message.seq in lost:  # given up on, then it came: hand it on, late
                lost.remove(message.seq)
                self._stats.count("mqtt.late_messages")
                if not message.void:
                    self._release(message)
            elif not message.void:
                self._duplicate(message)
            return
        held = self._held.setdefault(key, {})
        if message.seq in held:
            if not message.void:
                self._duplicate(message)
            return
        if key not in self._last and len(self._last) >= _KEYS_KEPT:
            self._forget_oldest()
        held[message.seq] = (message, now)
        if last is not None:
            self._run(key)
        if len(held) >= self._settings.window:
            self._give_up(key)

    def _forget_oldest(self) -> None:
        """Bound the publishers remembered: release and forget the one without anything held, first seen first."""
        for key in list(self._last):
            if key not in self._held:
                del self._last[key]
                self._lost.pop(key, None)
                return

    def _duplicate(self, message: Arrived) -> None:
        self._stats.count("mqtt.duplicate_messages")
        if message.samples:
            self._stats.count("mqtt.duplicates", len(message.samples))

    def _unstamped(self, message: Arrived, now: float) -> None:
        redelivered = message.dup or self._resumed
        n = len(message.samples)
        share, extra = divmod(message.size, n) if n else (0, 0)
        fresh = 0
        for i, (ts, values) in enumerate(message.samples):
            size = share + (extra if i == 0 else 0)
            if ts <= self._newest:
                if redelivered:
                    self._stats.count("mqtt.duplicates")
                    continue
                self._stats.count("mqtt.late_samples")
                self._out.append((ts, values, size, message.t_in))  # the window step counts it late
                fresh += 1
                continue
            if redelivered and any(p[0] == ts for p in self._pending):
                self._stats.count("mqtt.duplicates")
                continue
            self._push(ts, values, size, message.t_in, now)
            fresh += 1
            self._resumed = False
        if fresh:
            self._accepted += 1
        elif n:
            self._stats.count("mqtt.duplicate_messages")
        window = self._settings.window
        while len(self._pending) > window:
            self._pop()

    def _pop(self) -> None:
        ts, _order, values, size, t_in, _at = heapq.heappop(self._pending)
        self._out.append((ts, values, size, t_in))

    def _expire(self, now: float, *, everything: bool = False) -> None:
        """Release what waited its time (*everything*: all, at the end of the input)."""
        if self._held:
            limit = now - self._settings.hold_s
            # a topic's held messages are in arrival order: the first is the one waiting longest
            for key in [k for k, held in self._held.items() if everything or next(iter(held.values()))[1] <= limit]:
                while key in self._held:
                    self._give_up(key)
        if self._pending:
            limit = now - self._settings.delay_s
            due = max((p[0] for p in self._pending if everything or p[5] <= limit), default=None)
            while self._pending and due is not None and self._pending[0][0] <= due:
                self._pop()

    def _emit(self) -> list[Any]:
        if self._accepted:
            self._stats.count("mqtt.accepted", self._accepted)
            self._accepted = 0
        out, self._out = self._out, []
        if not out:
            return []
        ts = np.fromiter((o[0] for o in out), dtype=np.float64, count=len(out))
        values = np.asarray([o[1] for o in out], dtype=np.float64).reshape(len(out), -1)
        sizes = np.fromiter((o[2] for o in out), dtype=np.int64, count=len(out))
        t_ins = np.fromiter((o[3] for o in out), dtype=np.int64, count=len(out))
        top = float(ts.max())
        if top > self._newest:
            self._newest = top
        self._stats.add(samples_in=len(out), bytes_in=int(sizes.sum()))
        self._stats.source_batch(self._step, len(out), top)
        return [SampleBlock(self._sensor, ts, values, sizes, int(t_ins[-1]), t_ins)]

    # the keyed-logic protocol ---------------------------------------------------------------------------
    def on_batch(self, items: list[Any]) -> list[Any]:
        """Take this sensor's arrivals; return dead letters as they came and one block of what is now in order."""
        now = time.monotonic()
        passed: list[Any] = []
        for item in items:
            if type(item) is not Arrivals:
                passed.append(item)  # a dead letter keyed like this sensor: on as it came
                continue
            self._sensor = item.sensor
            for message in item.messages:
                if message.publisher is not None:
                    self._stamped(message, now)
                elif not message.void:
                    self._unstamped(message, now)
        if self._held or self._pending:
            self._expire(now)
        return passed + self._emit()

    def on_notify(self) -> list[Any]:
        """Release what waited ``hold_s``."""
        self._expire(time.monotonic())
        return self._emit()

    def on_eof(self) -> list[Any]:
        """Release everything held, counting the gaps left as lost (the input ended)."""
        self._expire(time.monotonic(), everything=True)
        return self._emit()

    def notify_at(self) -> datetime | None:
        """When the longest-waiting message or sample has waited its time (``None``: nothing held)."""
        due = min((next(iter(held.values()))[1] for held in self._held.values()), default=math.inf)
        due += self._settings.hold_s
        if self._pending:
            due = min(due, min(p[5] for p in self._pending) + self._settings.delay_s)
        if due == math.inf:
            return None
        wait = max(0.0, due - time.monotonic())
        return datetime.now(timezone.utc) + timedelta(seconds=wait)

    @property
    def discard(self) -> bool:
        """Nothing worth keeping (e.g. a key that only saw dead letters)."""
        return not self._last and not self._held and not self._pending and self._newest == -math.inf

    def snapshot(self) -> ResequenceState:
        """Return the state to resume from: last numbers, what is held, the newest released timestamp."""
        held = [message for msgs in self._held.values() for message, _at in msgs.values()]
        pending = [(ts, values, size, t_in) for ts, _o, values, size, t_in, _at in sorted(self._pending)]
        lost = {key: list(seqs) for key, seqs in self._lost.items() if seqs}
        return ResequenceState(dict(self._last), held, pending, self._newest, lost)
