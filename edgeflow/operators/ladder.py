"""Keep a latency budget: the degradation ladder of a scoring step, and the statistical fallback it steps down to.

A flow with ``Flow(..., latency_budget_ms=15)`` gives every :func:`~edgeflow.operators.infer` step a
:class:`Ladder`. The step tells it, for each batch, the ingest → verdict latency and the *backlog*: how far
the verdicts lag behind event time (see :class:`LagGauge`). The ladder steps down one rung when the p99
latency of the last ``window`` batches breaks the budget (cause ``latency``) or when the median backlog of
the last ``BACKLOG_BATCHES`` batches breaks ``backlog_s`` (cause ``backlog``; a level, not a distribution,
and a flow that falls behind hands on fewer, larger batches: the input waits before it is even ingested, e.g. a blocked
MQTT hand-off holding back the broker). It steps back up when both have stayed under ``recover_fraction`` of
their limits for ``hold`` batches, or for ``hold_s`` seconds and at least ``MIN_QUIET`` batches (a lightly
loaded flow makes few batches) (hysteresis). A step down soon after a step up (within twice the hold: the
load that broke the budget is still there) doubles both holds (once), so the ladder does not
flap between two rungs; they relax again once a step up has lasted four holds:

0. ``full``: the model scores every window.
1. ``lean``: windows are held across engine batches and run through the model in larger batches (bounded
   by a count and a time); model-health bookkeeping and the fallback's learning run on one batch in
   ``LEAN_EVERY``.
2. ``priority``: only ``high``-priority sensors are scored by the model; the others by the fallback detector.
3. ``raw``: no model at all: every window is scored by the fallback detector.

Every step is counted with its cause (``ladder.down|<rung>|latency``, ``ladder.down|<rung>|backlog``,
``ladder.up|<rung>|recovered``) and kept with its reason in :attr:`Ladder.events`.

>>> ladder = Ladder(budget_s=0.015, window=4, hold=4)
>>> [ladder.observe(0.030) for _ in range(4)][-1]
'down to lean (latency): p99 30.0 ms > budget 15.0 ms over 4 batches'
>>> ladder.rung
'lean'
>>> [ladder.observe(0.001) for _ in range(4)][-1]
'up to full (recovered): p99 1.0 ms < 7.5 ms and backlog 0.000 s < 0.030 s (0.5 of the limits) for 4 batches'
>>> [ladder.observe(0.001, backlog_s=0.5) for _ in range(3)][-1]
'down to lean (backlog): backlog 0.500 s > 0.060 s (median over 3 batches)'
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.operators.detect import DetectorConfig, ZScoreState

__all__ = [
    "BACKLOG_BATCHES",
    "CAUSES",
    "FALLBACK",
    "LEAN_EVERY",
    "MIN_QUIET",
    "RUNGS",
    "Fallback",
    "Ladder",
    "LadderEvent",
    "LagGauge",
]

RUNGS: tuple[str, ...] = ("full", "lean", "priority", "raw")
"""The rungs of the ladder, from no degradation to the most."""
BACKLOG_BATCHES = 3
"""The ladder steps down for backlog when the median backlog of this many batches in a row breaks its limit."""
MIN_QUIET = 8
"""Fewest calm batches in a row that can step the ladder up (with ``hold_s`` seconds of calm)."""
LEAN_EVERY = 8
"""On the ``lean`` rung (and below), health bookkeeping and fallback learning run on one batch in this many."""
CAUSES: tuple[str, ...] = ("latency", "backlog", "recovered")
"""Why the ladder stepped: down on broken latency or backlog, up once both recovered."""
FALLBACK = "fallback:zscore"
"""``Scored.model`` of a verdict the fallback detector produced."""


@dataclass(frozen=True, slots=True)
class LadderEvent:
    """One step down or up: from which rung to which, its cause (:data:`CAUSES`), why, after how many batches."""

    down: bool
    src: str
    dst: str
    reason: str
    batch: int
    cause: str = "latency"

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        step = "down" if self.down else "up"
        return {"step": step, "from": self.src, "to": self.dst, "cause": self.cause, "reason": self.reason}


class Ladder:
    """Decides the rung from measured latencies and backlogs (seconds), one pair per batch; knows nothing of models.

    *backlog_s* is the backlog limit (default: four times the budget). Not thread-safe: the owner serialises
    :meth:`observe`.
    """

    def __init__(
        self,
        budget_s: float,
        *,
        backlog_s: float | None = None,
        window: int = 32,
        recover_fraction: float = 0.5,
        hold: int = 64,
        hold_s: float = 4.0,
        stats: FlowStats | None = None,
        name: str = "infer",
    ) -> None:
        backlog = 4 * budget_s if backlog_s is None else backlog_s
        if not budget_s > 0 or not backlog > 0 or not 0 < recover_fraction < 1 or window < 1 or hold < 1:
            msg = (
                f"ladder {name!r}: got budget_s={budget_s}, backlog_s={backlog_s}, "
                f"recover_fraction={recover_fraction}, window={window}, hold={hold}; expected budget_s > 0, "
                "backlog_s > 0, 0 < recover_fraction < 1, window >= 1, hold >= 1. "
                "Hint: set Flow(latency_budget_ms=...) to a positive number"
            )
            raise ValueError(msg)
        self.budget_s = budget_s
        self.backlog_s = backlog
        self.recover_fraction = recover_fraction
        self.window = window
        self.hold = hold
        self.level = 0
        self.cause: str | None = None
        """Cause of the last step down while the ladder is below ``full`` (``None`` on ``full``)."""
        self.events: list[LadderEvent] = []
        self._recent: deque[float] = deque(maxlen=window)
        self._backlog: deque[float] = deque(maxlen=BACKLOG_BATCHES)
        self._quiet = 0
        self._seen = 0
        self.hold_s = hold_s
        self.hold_now = hold
        """The hold in force, in batches (doubled after each relapse, see the module docstring)."""
        self._relapses = 0
        self._quiet_since = 0.0
        self._last_up: int | None = None
        self._stats = stats
        self._name = name

    @property
    def rung(self) -> str:
        """The current rung's name (see :data:`RUNGS`)."""
        return RUNGS[self.level]

    def observe(self, latency_s: float, backlog_s: float = 0.0, now: float | None = None) -> str | None:
        """Add one batch's latency and backlog; return the reason when this made the ladder step, else ``None``.

        *now* is ``time.monotonic()`` unless given.
        """
        now = time.monotonic() if now is None else now
        self._seen += 1
        self._recent.append(latency_s)
        self._backlog.append(backlog_s)
        calm = latency_s < self.recover_fraction * self.budget_s and backlog_s < self.recover_fraction * self.backlog_s
        if calm and not self._quiet:
            self._quiet_since = now
        self._quiet = self._quiet + 1 if calm else 0
        if self._last_up is not None and self._seen - self._last_up > 4 * self.hold_now:
            self.hold_now, self._relapses, self._last_up = self.hold, 0, None  # the last step up held
        quiet_enough = self._quiet >= self.hold_now or (
            self._quiet >= MIN_QUIET and now - self._quiet_since >= self.hold_s * 2**self._relapses
        )
        full = len(self._backlog) == self._backlog.maxlen
        if len(self._recent) < self.window and not quiet_enough and not full:
            return None
        p99 = float(np.percentile(np.fromiter(self._recent, float), 99))
        backlog = float(np.median(np.fromiter(self._backlog, float)))
        ms = 1e3
        if self.level < len(RUNGS) - 1:
            if len(self._recent) >= self.window and p99 > self.budget_s:
                reason = f"p99 {p99 * ms:.1f} ms > budget {self.budget_s * ms:.1f} ms over {len(self._recent)} batches"
                return self._step(+1, "latency", reason)
            if full and backlog > self.backlog_s:
                reason = f"backlog {backlog:.3f} s > {self.backlog_s:.3f} s (median over {len(self._backlog)} batches)"
                return self._step(+1, "backlog", reason)
        if quiet_enough and self.level > 0 and p99 < self.recover_fraction * self.budget_s:
            f = self.recover_fraction
            reason = (
                f"p99 {p99 * ms:.1f} ms < {f * self.budget_s * ms:.1f} ms and backlog {backlog:.3f} s < "
                f"{f * self.backlog_s:.3f} s ({f:g} of the limits) for {self._quiet} batches"
            )
            return self._step(-1, "recovered", reason)
        return None

    def _step(self, delta: int, cause: str, reason: str) -> str:
        src, self.level = self.rung, self.level + delta
        down = delta > 0
        if not down:
            self._last_up = self._seen
        elif self._last_up is not None and self._seen - self._last_up <= 2 * self.hold_now and self._relapses < 1:
            self._relapses += 1  # relapsed: wait longer before the next try
            self.hold_now = 2 * self.hold_now
        self.cause = None if self.level == 0 else (cause if down else self.cause)
        self.events.append(LadderEvent(down, src, self.rung, reason, self._seen, cause))
        self._recent.clear()
        self._backlog.clear()
        self._quiet = 0
        if self._stats is not None:
            self._stats.count(f"ladder.{'down' if down else 'up'}|{self.rung}|{cause}")
            self._stats.set_gauge(f"ladder.level|{self._name}", self.level)
        return f"{'down' if down else 'up'} to {self.rung} ({cause}): {reason}"

    def block(self) -> dict[str, Any] | None:
        """Return what summaries show while degraded, ``{"rung": ..., "cause": ...}``; ``None`` on ``full``."""
        if self.level == 0:
            return None
        return {"rung": self.rung, "cause": self.cause}


class LagGauge:
    """How far verdicts lag behind event time, beyond each sensor's usual lag: the backlog the ladder watches.

    Per sensor, lag is wall-clock time at the verdict minus the window's end (event time); the smallest lag
    seen for the sensor is its baseline (a constant clock offset, transport), which creeps up by at most
    ``creep`` of the wall time elapsed so that a clock step is forgotten. The backlog of a batch is the
    largest lag over baseline among its windows. Meaningful when event time runs at wall-clock speed (live
    sources, replays at ``speed=1``); a replay faster than real time never shows a backlog.

    >>> lag = LagGauge()
    >>> lag.observe([("a", 100.0)], now=100.2), lag.observe([("a", 101.0)], now=101.2)
    (0.0, 0.0)
    >>> round(lag.observe([("a", 102.0)], now=103.7), 1)  # 1.5 s later than usual
    1.5
    """

    def __init__(self, creep: float = 0.01) -> None:
        self._base: dict[str, tuple[float, float]] = {}
        self._creep = creep

    def observe(self, ends: list[tuple[str, float]], now: float) -> float:
        """Add a batch's ``(sensor, window end)`` pairs seen at wall-clock *now* (epoch s); return its backlog (s)."""
        worst = 0.0
        base = self._base
        for sensor, end in ends:
            lag = now - end
            old = base.get(sensor)
            if old is None:
                base[sensor] = (lag, now)
                continue
            floor = old[0] + self._creep * (now - old[1])
            if lag <= floor:
                base[sensor] = (lag, now)
            else:
                base[sensor] = (floor, now)
                worst = max(worst, lag - floor)
        return worst


class Fallback:
    """Per-sensor z-score baselines (thread-safe) (:class:`~edgeflow.operators.detect.ZScoreState`) kept beside a model.

    They learn from windows while the model works (:meth:`learn`) and score when it cannot (:meth:`score`).

    >>> fb = Fallback(("a", "b"), FlowStats(), DetectorConfig(warmup=3, threshold=3.0))
    >>> for x in ([1.0, 2.0], [1.2, 2.1], [0.8, 1.9]):
    ...     fb.learn("s", np.array(x))
    >>> fb.score("s", np.array([5.0, 2.0]))[1]
    True
    """

    def __init__(self, names: tuple[str, ...], stats: FlowStats, cfg: DetectorConfig | None = None) -> None:
        self._names = names
        self._stats = stats
        self._cfg = cfg or DetectorConfig(warmup=20, threshold=6.0, alpha=0.01, persistence=(1, 1))
        self._states: dict[str, ZScoreState] = {}
        self._lock = threading.Lock()

    def _state(self, sensor: str) -> ZScoreState:
        state = self._states.get(sensor)
        if state is None:
            state = self._states[sensor] = ZScoreState(self._cfg, FALLBACK, self._stats, names=self._names)
        return state

    def learn(self, sensor: str, x: np.ndarray) -> None:
        """Let *sensor*'s baseline see one feature vector the model scored."""
        with self._lock:
            self._state(sensor).score(x)

    def score(self, sensor: str, x: np.ndarray) -> tuple[float, bool]:
        """Score one feature vector: ``(largest |z|, anomaly)``; ``(0.0, False)`` while still warming up."""
        with self._lock:
            return self._state(sensor).score(x)
