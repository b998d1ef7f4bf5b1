"""Promotion and health gates: when a candidate model may take over, and when a promoted one must go.

A :class:`GateWatch` compares a *subject* model with a *reference* on the same
windows: while a candidate shadows the active model (subject: the candidate), and
after a promotion (subject: the new active model, reference: the last good one,
which keeps scoring in the background). It fails as soon as failure is certain
(too many errors, too many disagreeing flags to reach the agreement asked for) and
decides the rest after ``windows`` windows.

>>> import numpy as np
>>> watch = GateWatch(Gates(windows=4, min_agreement=0.75, max_rate_diff=0.5), windows=4)
>>> watch.observe(np.array([True, False]), np.array([True, False]), 1_000, 900)
>>> watch.verdict() is None
True
>>> watch.observe(np.array([False, False]), np.array([True, False]), 1_000, 900)
>>> watch.verdict().passed, watch.figures()["agreement"]
(True, 0.75)
>>> bad = GateWatch(Gates(windows=100, min_agreement=0.98), windows=100)
>>> bad.observe(np.zeros(3, bool), np.ones(3, bool), 1_000, 1_000)
>>> print(bad.verdict().reason)
flags agree on 0 of 3 windows so far: more than 2 disagreements in 100 windows breaks the 98.0 % agreement gate
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

__all__ = ["GateWatch", "Gates", "Verdict"]


class Gates(BaseModel):
    """What a candidate must show while it shadows the active model, and a promoted model afterwards.

    >>> Gates().windows, Gates(windows=200).health_windows
    (500, 1000)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows: PositiveInt = 500
    """Windows the candidate scores beside the active model before promotion is decided."""
    health_windows: NonNegativeInt = 1000
    """Windows watched after a promotion, with the last good model scoring in the background (0: no watch)."""
    max_errors: NonNegativeInt = 0
    """Windows the model may fail on (an exception, a non-finite score)."""
    max_p99_us: PositiveFloat = 2000.0
    """Most the 99th percentile of the model's CPU time per batch may be (microseconds; CPU time of the scoring
    thread, so the machine's other load does not fail a model)."""
    min_agreement: float = Field(default=0.98, ge=0.0, le=1.0)
    """Least share of windows on which the model's anomaly flag equals the reference's."""
    max_rate_diff: float = Field(default=0.02, ge=0.0, le=1.0)
    """Largest difference between the model's and the reference's anomalous-window rates (0.02: 2 points)."""


@dataclass(frozen=True)
class Verdict:
    """A gate decision: passed or not, and why, with the figures it was based on."""

    passed: bool
    reason: str
    figures: dict[str, float]


class GateWatch:
    """Accumulates one comparison (see the module docstring); not thread-safe, the caller holds a lock."""

    def __init__(self, gates: Gates, windows: int) -> None:
        self.gates = gates
        self.windows = windows
        self.n = 0
        self.errors = 0
        self.first_error = ""
        self.agree = 0
        self.subject_flags = 0
        self.reference_flags = 0
        self._times: list[int] = []
        self._reference_times: list[int] = []

    def observe(self, subject: np.ndarray, reference: np.ndarray, subject_ns: int, reference_ns: int = 0) -> None:
        """Add one batch: both models' flags and their CPU times for the batch."""
        self.n += int(subject.shape[0])
        self.agree += int(np.count_nonzero(subject == reference))
        self.subject_flags += int(np.count_nonzero(subject))
        self.reference_flags += int(np.count_nonzero(reference))
        self._times.append(subject_ns)
        self._reference_times.append(reference_ns)

    def error(self, windows: int, reason: str) -> None:
        """Count windows the subject failed on."""
        self.n += windows
        self.errors += windows
        self.first_error = self.first_error or reason

    def p99_us(self, reference: bool = False) -> float:
        """99th percentile of the subject's (or reference's) CPU time per batch (microseconds; NaN before any)."""
        times = self._reference_times if reference else self._times
        if not times:
            return math.nan
        ranked = sorted(times)  # nearest rank: a few microseconds, on the batch that decides
        return ranked[max(0, math.ceil(0.99 * len(ranked)) - 1)] / 1000.0

    def figures(self) -> dict[str, float]:
        """Return what was seen so far (rates and agreement as fractions)."""
        n = max(self.n, 1)
        return {
            "windows": self.n,
            "errors": self.errors,
            "agreement": round(self.agree / n, 4),
            "anomaly_rate": round(self.subject_flags / n, 4),
            "reference_rate": round(self.reference_flags / n, 4),
            "p99_us": round(self.p99_us(), 1),
            "reference_p99_us": round(self.p99_us(reference=True), 1),
        }

    def verdict(self) -> Verdict | None:
        """Pass or fail once decided; ``None`` while undecided."""
        g = self.gates
        if self.errors > g.max_errors:
            return self._fail(f"{self.errors} windows failed (allowed {g.max_errors}): {self.first_error}")
        allowed = math.floor((1.0 - g.min_agreement) * self.windows + 1e-9)
        disagree = self.n - self.errors - self.agree
        if disagree > allowed:
            return self._fail(
                f"flags agree on {self.agree:,} of {self.n:,} windows so far: more than {allowed:,} disagreements in "
                f"{self.windows:,} windows breaks the {100 * g.min_agreement:.1f} % agreement gate"
            )
        if self.n < self.windows:
            return None
        rate, ref = self.subject_flags / self.n, self.reference_flags / self.n
        if abs(rate - ref) > g.max_rate_diff + 1e-12:
            return self._fail(
                f"anomaly rate {100 * rate:.1f} % against the reference's {100 * ref:.1f} % over {self.n:,} windows "
                f"(allowed difference {100 * g.max_rate_diff:.1f} points)"
            )
        if self.agree / self.n < g.min_agreement:
            return self._fail(f"flags agree on {100 * self.agree / self.n:.1f} % (needs {100 * g.min_agreement:.1f} %)")
        p99 = self.p99_us()
        if p99 > g.max_p99_us:
            return self._fail(
                f"CPU time per batch p99 {p99:,.0f} us (allowed {g.max_p99_us:,.0f} us; the reference's "
                f"{self.p99_us(reference=True):,.0f} us)"
            )
        return Verdict(True, f"passed on {self.n:,} windows", self.figures())

    def _fail(self, reason: str) -> Verdict:
        return Verdict(False, reason, self.figures())
