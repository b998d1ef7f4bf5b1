"""Keep a latency budget: the degradation ladder of a scoring step, and the statistical fallback it steps down to.

A flow with ``Flow(..., latency_budget_ms=15)`` gives every :func:`~edgeflow.operators.infer` step a
:class:`Ladder`. The step tells it the ingest → verdict latency of each batch; when the p99 of the last
``window`` batches breaks the budget the ladder steps down one rung, and when the latency has stayed under
``recover_fraction`` of the budget for ``hold`` batches it steps back up (hysteresis):

0. ``full``: the model scores every window.
1. ``lean``: the model scores every window in one invoke per engine batch; model-health bookkeeping and the
   fallback's learning run on one batch in ``LEAN_EVERY``.
2. ``priority``: only ``high``-priority sensors are scored by the model; the others by the fallback detector.
3. ``raw``: no model at all: every window is scored by the fallback detector.

Every step is counted (``ladder.down|<rung>``, ``ladder.up|<rung>``) with its reason in :attr:`Ladder.events`.

>>> ladder = Ladder(budget_s=0.015, window=4, hold=4)
>>> [ladder.observe(0.030) for _ in range(4)][-1]
'down to lean: p99 30.0 ms > budget 15.0 ms over 4 batches'
>>> ladder.rung
'lean'
>>> [ladder.observe(0.001) for _ in range(4)][-1]
'up to full: p99 1.0 ms < 7.5 ms (0.5 of the budget) for 4 batches'
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.operators.detect import DetectorConfig, ZScoreState

__all__ = ["FALLBACK", "LEAN_EVERY", "RUNGS", "Fallback", "Ladder", "LadderEvent"]

RUNGS: tuple[str, ...] = ("full", "lean", "priority", "raw")
"""The rungs of the ladder, from no degradation to the most."""
LEAN_EVERY = 8
"""On the ``lean`` rung (and below), health bookkeeping and fallback learning run on one batch in this many."""
FALLBACK = "fallback:zscore"
"""``Scored.model`` of a verdict the fallback detector produced."""


@dataclass(frozen=True, slots=True)
class LadderEvent:
    """One step down or up: from which rung to which, why, and after how many observed batches."""

    down: bool
    src: str
    dst: str
    reason: str
    batch: int

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"step": "down" if self.down else "up", "from": self.src, "to": self.dst, "reason": self.reason}


class Ladder:
    """Decides the rung from measured latencies (seconds), one per batch; knows nothing about models.

    Not thread-safe: the owner serialises :meth:`observe`.
    """

    def __init__(
        self,
        budget_s: float,
        *,
        window: int = 32,
        recover_fraction: float = 0.5,
        hold: int = 64,
        stats: FlowStats | None = None,
        name: str = "infer",
    ) -> None:
        if not budget_s > 0 or not 0 < recover_fraction < 1 or window < 1 or hold < 1:
            msg = (
                f"ladder {name!r}: got budget_s={budget_s}, recover_fraction={recover_fraction}, window={window}, "
                f"hold={hold}; expected budget_s > 0, 0 < recover_fraction < 1, window >= 1, hold >= 1. "
                "Hint: set Flow(latency_budget_ms=...) to a positive number"
            )
            raise ValueError(msg)
        self.budget_s = budget_s
        self.recover_fraction = recover_fraction
        self.window = window
        self.hold = hold
        self.level = 0
        self.events: list[LadderEvent] = []
        self._recent: deque[float] = deque(maxlen=window)
        self._quiet = 0
        self._seen = 0
        self._stats = stats
        self._name = name

    @property
    def rung(self) -> str:
        """The current rung's name (see :data:`RUNGS`)."""
        return RUNGS[self.level]

    def observe(self, latency_s: float) -> str | None:
        """Add one batch's latency; return the reason when this made the ladder step, else ``None``."""
        self._seen += 1
        self._recent.append(latency_s)
        self._quiet = self._quiet + 1 if latency_s < self.recover_fraction * self.budget_s else 0
        if len(self._recent) < self.window and self._quiet < self.hold:
            return None
        p99 = float(np.percentile(np.fromiter(self._recent, float), 99))
        ms = 1e3
        if len(self._recent) >= self.window and p99 > self.budget_s and self.level < len(RUNGS) - 1:
            reason = f"p99 {p99 * ms:.1f} ms > budget {self.budget_s * ms:.1f} ms over {len(self._recent)} batches"
            return self._step(+1, reason)
        if self._quiet >= self.hold and self.level > 0 and p99 < self.recover_fraction * self.budget_s:
            reason = (
                f"p99 {p99 * ms:.1f} ms < {self.recover_fraction * self.budget_s * ms:.1f} ms "
                f"({self.recover_fraction:g} of the budget) for {self._quiet} batches"
            )
            return self._step(-1, reason)
        return None

    def _step(self, delta: int, reason: str) -> str:
        src, self.level = self.rung, self.level + delta
        down = delta > 0
        self.events.append(LadderEvent(down, src, self.rung, reason, self._seen))
        self._recent.clear()
        self._quiet = 0
        if self._stats is not None:
            self._stats.count(f"ladder.{'down' if down else 'up'}|{self.rung}")
            self._stats.set_gauge(f"ladder.level|{self._name}", self.level)
        return f"{'down' if down else 'up'} to {self.rung}: {reason}"


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
