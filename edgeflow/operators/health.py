"""Model health of one model version: input drift, int8 saturation and the score distribution.

*Drift* is, per feature, how far the median of the last ``capacity`` feature vectors lies from the training
mean, in training standard deviations (the manifest's ``normalization``); the median keeps a faulty sensor's
windows (anomalies, not drift) from moving it. *Saturation* is the share of input values the quantizer clipped
at the integer bounds (:attr:`edgeflow.model.tensors.TensorSpec.clips`). *PSI* is, per feature, the population
stability index of the same recent inputs against the training quantile bins the manifest stores
(:mod:`edgeflow.model.psi`; absent for manifests without them); it sees a change of shape or spread the
median misses. Scores go to a histogram. Everything is kept in the run's :class:`~edgeflow.metrics.FlowStats`,
labelled by the model id (``name@version/variant``): counters ``model.inputs|ID``, ``model.saturated|ID``,
``model.drift_alarms|ID``, ``model.psi_alarms|ID``; gauges ``model.drift|ID|FEATURE``, ``model.psi|ID|FEATURE``;
histogram ``model.score|ID`` (score units, not seconds).

>>> from edgeflow.metrics import FlowStats
>>> health = ModelHealth("m@1", ("a", "b"), np.zeros(2), np.ones(2), None, FlowStats(), drift_alarm=3.0, capacity=8)
>>> health.update(np.tile([0.1, 5.0], (8, 1)), np.full(8, 0.01))
'model m@1: input drift 5.0 training std devs on feature b (alarm at 3)'
>>> health.block()
{'model': 'm@1', 'drift': {'feature': 'b', 'shift_sd': 5.0}, 'saturation_rate': 0.0, 'drift_alarm': True}
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeflow.metrics import FlowStats, Histogram
from edgeflow.model.psi import PsiBins
from edgeflow.model.tensors import TensorSpec

__all__ = ["SCORE_BOUNDS", "ModelHealth"]

SCORE_BOUNDS: tuple[float, ...] = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
"""Upper bounds of the score histogram (score units)."""
_MIN_ROWS = 16
"""Feature vectors needed before drift is computed, and between two measurements of it."""


def _column_medians(x: np.ndarray) -> np.ndarray:
    """Return the median of each column of finite *x*, as :func:`numpy.median` computes it.

    ``numpy.median`` imports ``numpy.ma`` on first use (~40 ms, inside a running flow) for a NaN check the
    model's inputs do not need (non-finite windows never reach the model).

    >>> x = np.array([[3.0, 1.0], [1.0, 5.0], [2.0, 2.0], [8.0, 0.5]])
    >>> bool((_column_medians(x) == np.median(x, axis=0)).all()), bool((_column_medians(x[:3]) == [2.0, 2.0]).all())
    (True, True)
    """
    n = len(x)
    ordered = np.sort(x, axis=0)
    half = n // 2
    return ordered[half] if n % 2 else (ordered[half - 1] + ordered[half]) / 2


class ModelHealth:
    """Drift, saturation and scores of one model version, fed one batch at a time (thread-safe)."""

    def __init__(
        self,
        model_id: str,
        names: tuple[str, ...],
        mean: np.ndarray | None,
        std: np.ndarray | None,
        spec: TensorSpec | None,
        stats: FlowStats,
        *,
        drift_alarm: float | None = 3.0,
        capacity: int = 256,
        bins: tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]] | None = None,
        psi_alarm: float | None = 0.25,
    ) -> None:
        self.model_id = model_id
        self._names = names
        self._mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self._std = None if std is None else np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
        self._spec = spec if spec is not None and spec.quantized else None
        self._base = self._spec.clips.totals() if self._spec is not None else (0, 0)
        self._stats = stats
        self._alarm_at = drift_alarm
        self._bins = None if bins is None else PsiBins(*bins)
        self._psi_at = psi_alarm
        self.psi: np.ndarray | None = None
        """Latest population stability index of each feature (``None`` until enough windows, or without bins)."""
        self.psi_alarm = False
        self._buf = np.zeros((capacity, len(names)), dtype=np.float64)
        self._n = 0
        self._every = min(_MIN_ROWS, capacity)
        """Drift and PSI are measured each time ``_n`` reaches a multiple of this."""
        self._lock = threading.Lock()
        self.drift: np.ndarray | None = None
        """Latest shift of each feature in training standard deviations (``None`` until enough windows)."""
        self.alarm = False
        self.saturation = 0.0
        """Share of input values clipped by the quantizer since this version started serving."""
        self._seen = self._hit = 0
        key = f"model.score|{model_id}"
        self._scores = stats.histograms.setdefault(key, Histogram(SCORE_BOUNDS))

    def update(self, feats: np.ndarray, scores: np.ndarray) -> str | None:
        """Add a batch of raw feature vectors and their scores; return a line when the drift alarm is raised.

        Drift and PSI are recomputed each time the vectors seen reach a multiple of 16 (over the last
        ``capacity`` of them), not on every batch: a paced flow makes batches of one window, and the
        statistics of 256 vectors move little from one to the next. A batch that crosses several multiples is
        measured at the last one, so each value depends on the vectors seen, not on how they were batched.
        """
        for s in scores.tolist():
            self._scores.observe_ns(round(s * 1e9) if s < 1e9 else 10**18)
        with self._lock:
            self._saturation()
            if (self._mean is None or self._std is None) and self._bins is None:
                return None
            total = self._n + len(feats)
            boundary = total - total % self._every
            if boundary <= self._n:
                self._insert(feats)
                return None
            head = boundary - self._n
            self._insert(feats[:head])
            said = self._measure()
            self._insert(feats[head:])
            return said

    def _insert(self, rows: np.ndarray) -> None:
        """Write *rows* into the ring of recent vectors (only the last ``capacity`` of them can stay)."""
        if not len(rows):
            return
        cap = self._buf.shape[0]
        kept = rows[-cap:]
        self._buf[(self._n + len(rows) - len(kept) + np.arange(len(kept))) % cap] = kept
        self._n += len(rows)

    def _measure(self) -> str | None:
        """Recompute drift and PSI over the recent vectors; return the alarm line if one is raised."""
        recent = self._buf[: min(self._n, self._buf.shape[0])]
        said = self._check_psi(recent)
        if self._mean is None or self._std is None:
            return said
        drift = np.abs(_column_medians(recent) - self._mean) / self._std
        self.drift = drift
        for name, value in zip(self._names, drift.tolist(), strict=True):
            self._stats.set_gauge(f"model.drift|{self.model_id}|{name}", value)
        drift_said = self._check_alarm(drift)
        return drift_said if said is None else said if drift_said is None else f"{drift_said}; {said}"

    def _check_psi(self, recent: np.ndarray) -> str | None:
        if self._bins is None:
            return None
        values = self._bins.psi(recent)
        self.psi = values
        for name, value in zip(self._names, values.tolist(), strict=True):
            self._stats.set_gauge(f"model.psi|{self.model_id}|{name}", value)
        if self._psi_at is None:
            return None
        top = float(values.max())
        if top > self._psi_at and not self.psi_alarm:
            self.psi_alarm = True
            self._stats.count(f"model.psi_alarms|{self.model_id}")
            name = self._names[int(values.argmax())]
            return f"model {self.model_id}: input PSI {top:.2f} on feature {name} (alarm at {self._psi_at:g})"
        if top < 0.8 * self._psi_at:  # hysteresis, as for drift
            self.psi_alarm = False
        return None

    def _saturation(self) -> None:
        if self._spec is None:
            return
        values, clipped = self._spec.clips.totals()
        seen, hit = values - self._base[0], clipped - self._base[1]
        new_values, new_hit = seen - self._seen, hit - self._hit
        if new_values:
            self._stats.count(f"model.inputs|{self.model_id}", new_values)
        if new_hit:
            self._stats.count(f"model.saturated|{self.model_id}", new_hit)
        self._seen, self._hit = seen, hit
        self.saturation = hit / seen if seen else 0.0

    def _check_alarm(self, drift: np.ndarray) -> str | None:
        if self._alarm_at is None:
            return None
        top = float(drift.max())
        if top > self._alarm_at and not self.alarm:
            self.alarm = True
            self._stats.count(f"model.drift_alarms|{self.model_id}")
            name = self._names[int(drift.argmax())]
            return (
                f"model {self.model_id}: input drift {top:.1f} training std devs on feature {name} "
                f"(alarm at {self._alarm_at:g})"
            )
        if top < 0.8 * self._alarm_at:  # hysteresis: the next crossing raises a new alarm
            self.alarm = False
        return None

    def block(self) -> dict[str, Any]:
        """Return the ``model_health`` block of a summary: the largest drift and its feature, the saturation rate."""
        out: dict[str, Any] = {"model": self.model_id}
        drift = self.drift
        if drift is not None:
            i = int(drift.argmax())
            out["drift"] = {"feature": self._names[i], "shift_sd": round(float(drift[i]), 3)}
        out["saturation_rate"] = round(self.saturation, 6)
        out["drift_alarm"] = self.alarm
        values = self.psi
        if values is not None:
            i = int(values.argmax())
            out["psi"] = {"feature": self._names[i], "value": round(float(values[i]), 4)}
            out["psi_alarm"] = self.psi_alarm
        return out
