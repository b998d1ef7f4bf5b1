"""Per-sensor, per-interval summaries: the only data that leaves the gateway.

Intervals are aligned to multiples of ``every_s`` on event time and close when
a window of a later interval arrives (or at end of input). A summary holds the
raw sample count and bytes it stands for, feature min/mean/max, the anomaly
verdict with the anomalous-window rate and its 95 % Wilson interval, and the
mean score with its 95 % Student-t interval. When the detector explains its
flags, ``raised_by`` gives each feature that raised one in the interval with
its largest |z| (sign kept).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Schema, Step, StepContext, Stream, build_config
from edgeflow.records import Scored, to_datetime
from edgeflow.student_t import t975

__all__ = ["IntervalSummary", "Summary", "SummaryConfig", "summarize", "wilson_interval"]


class SummaryConfig(BaseModel):
    """Settings of :func:`summarize`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    every_s: PositiveFloat = 10.0
    min_anomalous_windows: PositiveInt = 1
    """Windows that must be anomalous for the interval's ``anomaly`` flag."""
    digits: int = Field(default=4, ge=1, le=9)
    """Significant digits kept in numbers (smaller summaries)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """One interval of one sensor, ready to send."""

    record: dict[str, Any]
    t_in: int
    """Ingest time of the window that closed the interval (perf_counter_ns); 0 when the input ended."""

    def to_json(self) -> dict[str, Any]:
        """Return the JSON-ready summary."""
        return self.record


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion *k* / *n*.

    >>> [round(x, 3) for x in wilson_interval(0, 50)]
    [0.0, 0.071]
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, round(centre - half, 12)), min(1.0, round(centre + half, 12)))


@functools.lru_cache(maxsize=256)
def _interval_text(start: float, every_s: float) -> tuple[str, str]:
    """ISO 8601 start and end of an interval: made once, as every sensor's summary of it names them."""
    return to_datetime(start).isoformat(), to_datetime(start + every_s).isoformat()


def _round(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


@functools.lru_cache(maxsize=64)
def _formats(count: int, digits: int) -> str:
    return " ".join([f"{{:.{digits}g}}"] * count)


def _round_all(values: Sequence[float], digits: int) -> list[float]:
    """Round each of *values* to *digits* significant digits, as :func:`_round` does, in one formatting call.

    >>> _round_all([3.14159, float("inf"), 2.5e-7], 3)
    [3.14, inf, 2.5e-07]
    """
    return list(map(float, _formats(len(values), digits).format(*values).split()))


class IntervalSummary:
    """Accumulates one sensor's scored windows and emits a summary per interval."""

    def __init__(
        self, cfg: SummaryConfig, feature_names: tuple[str, ...], resume: dict[str, Any] | None = None
    ) -> None:
        self._cfg = cfg
        self._names = feature_names
        self._interval: int | None = None
        self._reset()
        if resume is not None:
            state = copy.deepcopy(resume)
            if "_models" not in state and state.get("_model"):  # a snapshot taken before intervals kept every model
                state["_models"] = [state.pop("_model")]
            self.__dict__.update({name: state[name] for name in self._SNAPSHOT if name in state})

    _SNAPSHOT = (
        "_interval",
        "_windows",
        "_samples",
        "_raw_bytes",
        "_anomalous",
        "_scores",
        "_max_score",
        "_max_at",
        "_fmin",
        "_fmax",
        "_fsum",
        "_sensor",
        "_models",
        "_raised_by",
        "_degraded",
        "_health",
    )

    def snapshot(self) -> dict[str, Any]:
        """Return the open interval's accumulators (copies, picklable; the engine asks once per sensor and epoch).

        >>> from edgeflow.operators.summarize import SummaryConfig
        >>> a = IntervalSummary(SummaryConfig(), ("rms",))
        >>> state = a.snapshot(); a._scores.append(1.0)
        >>> state["_scores"], a._scores
        ([], [1.0])
        """
        state = {name: self.__dict__[name] for name in self._SNAPSHOT}
        state["_scores"], state["_models"], state["_raised_by"] = [*self._scores], [*self._models], {**self._raised_by}
        for name in ("_fmin", "_fmax", "_fsum"):
            if state[name] is not None:
                state[name] = state[name].copy()
        if self._health is not None:
            state["_health"] = copy.deepcopy(self._health)
        return state

    def _reset(self) -> None:
        self._windows = 0
        self._samples = 0
        self._raw_bytes = 0
        self._anomalous = 0
        self._scores: list[float] = []
        self._max_score = 0.0
        self._max_at = 0.0
        self._fmin: np.ndarray | None = None
        self._fmax: np.ndarray | None = None
        self._fsum: np.ndarray | None = None
        self._sensor = ""
        self._models: list[str] = []
        """Every model that scored a window of the interval, in order (two when a switch happened in it)."""
        self._raised_by: dict[str, float] = {}
        self._degraded = 0
        """Windows whose verdict came from a fallback detector (model failure or latency ladder)."""
        self._health: dict[str, Any] | None = None
        """The scoring model's health at the interval's last model-scored window."""

    def on_batch(self, items: list[Scored]) -> list[Any]:
        """Add scored windows; return summaries of intervals that closed."""
        out = []
        every = self._cfg.every_s
        for item in items:
            w = item.window
            interval = math.floor(w.end / every)
            if self._interval is not None and interval != self._interval and self._windows:
                out.append(self._emit(t_in=w.t_in))  # latency runs from the window that closed it
            self._interval = interval
            self._add(item)
        return out

    def _add(self, item: Scored) -> None:
        w = item.window
        self._sensor = w.sensor
        if not self._models or self._models[-1] != item.model:
            self._models.append(item.model)
        self._windows += 1
        self._samples += w.n_raw
        self._raw_bytes += w.raw_bytes
        self._anomalous += item.anomaly
        self._degraded += getattr(item, "degraded", False)
        if getattr(item, "health", None) is not None:
            self._health = item.health
        if item.anomaly and item.raised_by:
            for name, z in item.raised_by.items():
                if abs(z) > abs(self._raised_by.get(name, 0.0)):
                    self._raised_by[name] = z
        if not self._scores or item.score > self._max_score:
            self._max_score, self._max_at = item.score, w.end
        self._scores.append(item.score)
        if w.features is not None:
            f = w.features.astype(np.float64)
            if self._fsum is None or self._fmin is None or self._fmax is None:
                self._fmin, self._fmax, self._fsum = f.copy(), f.copy(), f.copy()
            else:
                np.minimum(self._fmin, f, out=self._fmin)
                np.maximum(self._fmax, f, out=self._fmax)
                self._fsum += f

    def _emit(self, t_in: int) -> Summary:
        d = self._cfg.digits
        n = self._windows
        # ndarray.mean and .std(ddof=1) by the same ufunc reductions, without their Python-level overhead
        scores = np.asarray(self._scores)
        total = np.add.reduce(scores)
        mean = float(total / n)
        if n > 1:
            deviations = scores - total / n
            std = math.sqrt(float(np.add.reduce(deviations * deviations) / (n - 1)))
            half = float(t975(n - 1) * std / math.sqrt(n))
        else:
            half = math.inf
        assert self._interval is not None
        start = self._interval * self._cfg.every_s
        lo, hi = wilson_interval(self._anomalous, n)
        finite = math.isfinite(half)
        # one formatting call rounds them all (as :func:`_round` would each)
        rate, rate_lo, rate_hi, mean_r, mean_lo, mean_hi, top = _round_all(
            (self._anomalous / n, lo, hi, mean, mean - half, mean + half, float(np.maximum.reduce(scores))), d
        )
        record: dict[str, Any] = {
            "sensor": self._sensor,
            "interval": list(_interval_text(start, self._cfg.every_s)),
            "samples": self._samples,
            "raw_bytes": self._raw_bytes,
            "windows": n,
            "anomaly": self._anomalous >= self._cfg.min_anomalous_windows,
            "anomalous_windows": self._anomalous,
            "anomaly_rate": {"value": rate, "ci95": [rate_lo, rate_hi]},
            "score": {
                "mean": mean_r,
                "ci95": [mean_lo, mean_hi] if finite else None,
                "max": top,  # NaN if any score is, as ndarray.max
                "max_at": to_datetime(self._max_at).isoformat(),
            },
            "model": self._models[0] if len(self._models) == 1 else list(dict.fromkeys(self._models)),
        }
        if self._degraded:
            record["degraded"] = True
            record["degraded_windows"] = self._degraded
        if self._health is not None:
            record["model_health"] = self._health
        if self._raised_by:
            record["raised_by"] = {
                name: _round(z, d) for name, z in sorted(self._raised_by.items(), key=lambda kv: -abs(kv[1]))
            }
        if self._fsum is not None and self._fmin is not None and self._fmax is not None:
            lows, means, highs = self._fmin.tolist(), (self._fsum / n).tolist(), self._fmax.tolist()
            stats = _round_all([x for triple in zip(lows, means, highs, strict=True) for x in triple], d)
            record["features"] = {name: stats[3 * i : 3 * i + 3] for i, name in enumerate(self._names)}
        summary = Summary(record, t_in)
        self._reset()
        return summary

    def on_eof(self) -> list[Any]:
        """Flush the open interval."""
        return [self._emit(t_in=0)] if self._windows else []  # end of input: no latency to speak of


def summarize(
    step_id: str,
    up: Stream,
    *,
    every_s: float = 10.0,
    min_anomalous_windows: int = 1,
    digits: int = 4,
    sink: Any = None,
) -> Stream:
    """Summarize scored windows per sensor every *every_s* seconds of event time; optionally send to *sink*.

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms"])
    >>> out = summarize("summary", eo.zscore_detector("detect", f), every_s=10, sink=eo.stdout())
    """
    cfg: SummaryConfig = build_config(
        step_id, SummaryConfig, every_s=every_s, min_anomalous_windows=min_anomalous_windows, digits=digits
    )

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (scored,) = inputs
        if scored.kind != "scored":
            raise FlowValidationError(
                step_id,
                "up",
                scored.kind,
                "summarize takes scored windows",
                hint="put a detector or eo.infer before it",
            )
        return Schema("summaries")

    def build(ctx: StepContext) -> Any:
        names = ctx.input.features
        return lambda resume: IntervalSummary(cfg, names, resume)

    out = up.flow.add_step(Step(step_id, "summarize", "keyed", (up.step_id,), cfg, schema=schema, build=build))
    if sink is not None:
        from edgeflow.operators.output import output

        output(f"{step_id}_out", out, sink)
    return out
