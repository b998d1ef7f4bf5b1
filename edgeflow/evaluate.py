"""Score a flow's window-level flags against labelled intervals, per sensor (``edgeflow eval``).

A **label file** is JSON: a list of intervals, or an object holding one under
``"labels"`` (or ``"faults"``, the shape of ``examples/data/pump_vibration.faults.json``).
Each interval names a ``sensor``, a ``start`` and an ``end`` (ISO 8601 with a
zone, e.g. ``"2026-03-02T08:00:20+00:00"``, or epoch seconds) and optionally a
``kind``; other keys are ignored::

    {"labels": [{"sensor": "temp-1", "kind": "bearing", "start": "2026-01-20T06:00:00Z",
                 "end": "2026-01-21T18:00:00Z"}]}

A window is **positive** when it overlaps a labelled interval of its sensor.
Per sensor the score gives:

* intervals **detected** out of N: at least one flagged window overlaps the interval;
* window-level **precision** (flagged windows that are positive) and **recall**
  (positive windows that are flagged);
* time from an interval's start to its **first flag** (the end of the first
  flagged window overlapping it, since that is when the flag can be raised);
* **false-alarm stretches**: runs of consecutive flagged windows that overlap no
  label, and how many per day of the sensor's data.

With ``grace_s``, windows starting less than that after a label's end are
neither true nor false (an alarm may take a moment to clear); ``merge_s`` joins
false flags less than that apart into one stretch.

>>> labels = [Label("s", 100.0, 200.0)]
>>> flags = [WindowFlag("s", float(t), t + 20.0, 110 <= t <= 150 or t == 400) for t in range(0, 600, 10)]
>>> result = score_flags(flags, labels)
>>> s = result.sensors["s"]
>>> (s.detected, s.n_labels, s.precision, round(s.recall, 3), s.intervals[0].first_flag_after_s, s.false_alarms)
(1, 1, 0.833..., 0.455, 30.0, 1)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from typing import Any

from edgeflow.compiler import CompiledFlow, Stage, compile_flow
from edgeflow.connectors import DEAD_LETTERS, Sink
from edgeflow.errors import EdgeflowError
from edgeflow.graph import Flow, Schema, Step
from edgeflow.loader import load_flow
from edgeflow.records import Scored, parse_timestamp, to_iso
from edgeflow.runtime import RunReport, run
from edgeflow.sinks import CaptureSink

__all__ = [
    "Evaluation",
    "IntervalResult",
    "Label",
    "SensorScore",
    "WindowFlag",
    "evaluate",
    "load_labels",
    "score_flags",
]

_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Label:
    """A labelled interval of one sensor, in epoch seconds."""

    sensor: str
    start: float
    end: float
    kind: str = ""


@dataclass(frozen=True, slots=True)
class WindowFlag:
    """One scored window: its sensor, its span in epoch seconds and the detector's verdict."""

    sensor: str
    start: float
    end: float
    anomaly: bool


def load_labels(path: str | Path) -> list[Label]:
    """Read a label file (see the module docstring); ``ValueError`` naming the file, the entry and the field.

    >>> [(x.sensor, x.kind) for x in load_labels("examples/data/pump_vibration.faults.json")]
    [('pump-2', 'bearing_defect'), ('pump-3', 'imbalance'), ('pump-4', 'cavitation')]
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        msg = f"{path}: not JSON ({exc})"
        raise ValueError(msg) from None
    entries = data
    if isinstance(data, dict):
        entries = data.get("labels", data.get("faults"))
    if not isinstance(entries, list):
        msg = f'{path}: expected a list of intervals, or an object with a "labels" (or "faults") list'
        raise ValueError(msg)
    labels = []
    for i, entry in enumerate(entries):
        where = f"{path}: label {i}"
        if not isinstance(entry, dict):
            msg = f"{where}: got {entry!r}, expected an object with sensor, start and end"
            raise ValueError(msg)
        missing = [key for key in ("sensor", "start", "end") if key not in entry]
        if missing:
            msg = f"{where}: missing {missing}; each label needs sensor, start and end"
            raise ValueError(msg)
        try:
            start, end = (parse_timestamp(str(entry[key])) for key in ("start", "end"))
        except ValueError as exc:
            msg = f"{where}: {exc}"
            raise ValueError(msg) from None
        if end <= start:
            msg = f"{where}: end {entry['end']} is not after start {entry['start']}"
            raise ValueError(msg)
        labels.append(Label(str(entry["sensor"]), start, end, str(entry.get("kind", ""))))
    return labels


@dataclass(frozen=True, slots=True)
class IntervalResult:
    """How one labelled interval fared."""

    label: Label
    windows: int
    """Windows of the sensor overlapping the interval."""
    flagged: int
    """Of those, how many were flagged."""
    first_flag_after_s: float | None
    """Seconds from the interval's start to its first flag; ``None``: not detected."""

    @property
    def detected(self) -> bool:
        """Whether any window overlapping the interval was flagged."""
        return self.first_flag_after_s is not None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "sensor": self.label.sensor,
            "kind": self.label.kind,
            "start": to_iso(self.label.start),
            "end": to_iso(self.label.end),
            "detected": self.detected,
            "first_flag_after_s": self.first_flag_after_s,
            "windows": self.windows,
            "flagged_windows": self.flagged,
        }


@dataclass(slots=True)
class SensorScore:
    """One sensor's (or all sensors') window counts, intervals and false alarms."""

    sensor: str
    windows: int = 0
    flagged: int = 0
    positive: int = 0
    true_flags: int = 0
    false_alarms: int = 0
    """False-alarm stretches."""
    days: float = 0.0
    """Days of data: from the first window's start to the last window's end."""
    intervals: list[IntervalResult] = field(default_factory=list)

    @property
    def n_labels(self) -> int:
        """Labelled intervals of this sensor."""
        return len(self.intervals)

    @property
    def detected(self) -> int:
        """Labelled intervals with at least one flag."""
        return sum(r.detected for r in self.intervals)

    @property
    def precision(self) -> float:
        """Flagged windows that overlap a label (NaN when nothing was flagged)."""
        return self.true_flags / self.flagged if self.flagged else math.nan

    @property
    def recall(self) -> float:
        """Windows overlapping a label that were flagged (NaN when there are none)."""
        return self.true_flags / self.positive if self.positive else math.nan

    @property
    def false_alarms_per_day(self) -> float:
        """False-alarm stretches per day of data."""
        return self.false_alarms / self.days if self.days > 0 else math.nan

    @property
    def delays_s(self) -> list[float]:
        """Seconds from each detected interval's start to its first flag."""
        return [r.first_flag_after_s for r in self.intervals if r.first_flag_after_s is not None]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN becomes null)."""
        delays = self.delays_s
        return {
            "sensor": self.sensor,
            "windows": self.windows,
            "flagged_windows": self.flagged,
            "positive_windows": self.positive,
            "labels": self.n_labels,
            "detected": self.detected,
            "precision": _finite(self.precision),
            "recall": _finite(self.recall),
            "first_flag_after_s": {"median": median(delays), "max": max(delays)} if delays else None,
            "false_alarm_stretches": self.false_alarms,
            "days": round(self.days, 4),
            "false_alarms_per_day": _finite(self.false_alarms_per_day),
            "intervals": [r.to_json() for r in self.intervals],
        }


def _finite(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


@dataclass(frozen=True)
class Evaluation:
    """Scores per sensor and for all sensors together, and the run behind them (if any)."""

    sensors: dict[str, SensorScore]
    total: SensorScore
    grace_s: float = 0.0
    merge_s: float = 0.0
    report: RunReport | None = None
    steps: tuple[str, ...] = ()
    """The scored steps whose flags were evaluated."""
    flags: tuple[WindowFlag, ...] = ()
    """Every window scored, per sensor in event time order (for a closer look in tests)."""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "flow": self.report.flow if self.report is not None else None,
            "steps": list(self.steps),
            "grace_s": self.grace_s,
            "merge_s": self.merge_s,
            "total": self.total.to_json(),
            "sensors": {name: score.to_json() for name, score in self.sensors.items()},
        }

    def rows(self) -> list[list[str]]:
        """Table rows: sensor, windows, labels found, precision, recall, first flag after, false alarms, per day."""
        header = ["sensor", "windows", "labels found", "precision", "recall", "first flag after", "false alarms",
                  "per day"]  # fmt: skip
        scores = [*self.sensors.values(), self.total]
        return [header] + [
            [
                s.sensor,
                f"{s.windows:,}",
                f"{s.detected}/{s.n_labels}",
                _pct(s.precision),
                _pct(s.recall),
                _median_delay(s) if s is self.total else ", ".join(_duration(d) for d in s.delays_s) or "-",
                str(s.false_alarms),
                "-" if math.isnan(s.false_alarms_per_day) else f"{s.false_alarms_per_day:.2f}",
            ]
            for s in scores
        ]

    def table(self) -> str:
        """Return the scores as a Markdown table (what ``edgeflow eval`` prints).

        >>> print(score_flags([WindowFlag("s", 0.0, 60.0, True)], [Label("s", 0.0, 30.0)]).table())
        | sensor | windows | labels found | precision | recall | first flag after | false alarms | per day |
        |---|---:|---:|---:|---:|---:|---:|---:|
        | s | 1 | 1/1 | 100.0 % | 100.0 % | 1 min | 0 | 0.00 |
        | all | 1 | 1/1 | 100.0 % | 100.0 % | 1 min | 0 | 0.00 |
        """
        header, *body = self.rows()
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f} %"


def _duration(seconds: float) -> str:
    """Readable duration: ``96 ms``, ``45 s``, ``12 min``, ``3.5 h``, ``2.1 d``."""
    if seconds < 1:
        return f"{1000 * seconds:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * _DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / _DAY_S:.1f} d"


def _median_delay(score: SensorScore) -> str:
    delays = score.delays_s
    return f"median {_duration(median(delays))}" if len(delays) > 1 else ", ".join(map(_duration, delays)) or "-"


def score_flags(
    flags: Iterable[WindowFlag], labels: Sequence[Label], *, grace_s: float = 0.0, merge_s: float = 0.0
) -> Evaluation:
    """Score window-level *flags* against *labels* per sensor (see the module docstring)."""
    by_sensor: dict[str, list[WindowFlag]] = {}
    for flag in flags:
        by_sensor.setdefault(flag.sensor, []).append(flag)
    for sensor in {label.sensor for label in labels}:
        by_sensor.setdefault(sensor, [])
    sensors = {}
    for sensor in sorted(by_sensor):
        windows = sorted(by_sensor[sensor], key=lambda w: (w.end, w.start))
        mine = sorted((x for x in labels if x.sensor == sensor), key=lambda x: x.start)
        sensors[sensor] = _score_sensor(sensor, windows, mine, grace_s, merge_s)
    ordered = tuple(w for sensor in sorted(by_sensor) for w in sorted(by_sensor[sensor], key=lambda w: w.end))
    total = SensorScore("all")
    for s in sensors.values():
        total.windows += s.windows
        total.flagged += s.flagged
        total.positive += s.positive
        total.true_flags += s.true_flags
        total.false_alarms += s.false_alarms
        total.days += s.days
        total.intervals.extend(s.intervals)
    return Evaluation(sensors, total, grace_s, merge_s, flags=ordered)


def _score_sensor(
    sensor: str, windows: list[WindowFlag], labels: list[Label], grace_s: float, merge_s: float
) -> SensorScore:
    score = SensorScore(sensor, windows=len(windows))
    if windows:
        score.days = (windows[-1].end - min(w.start for w in windows)) / _DAY_S
    last_false: float | None = None  # end of the newest false flag of the open stretch; None: no open stretch
    for w in windows:
        positive = any(w.start < x.end and x.start < w.end for x in labels)
        ignored = not positive and any(x.end <= w.start < x.end + grace_s for x in labels)
        score.positive += positive
        score.flagged += w.anomaly and not ignored
        score.true_flags += w.anomaly and positive
        if w.anomaly and not positive and not ignored:
            score.false_alarms += last_false is None
            last_false = w.end
        elif last_false is not None and w.start >= last_false + merge_s:
            last_false = None
    for label in labels:
        over = [w for w in windows if w.start < label.end and label.start < w.end]
        first = next((w for w in over if w.anomaly), None)
        after = None if first is None else max(0.0, first.end - label.start)
        score.intervals.append(IntervalResult(label, len(over), sum(w.anomaly for w in over), after))
    return score


def evaluate(
    flow: CompiledFlow | Flow | str,
    labels: Sequence[Label] | str | Path,
    *,
    step: str | None = None,
    grace_s: float = 0.0,
    merge_s: float = 0.0,
) -> Evaluation:
    """Run *flow* to the end (its sinks captured, nothing written) and score the flags of its scored steps.

    The flags evaluated are those of *step*, or of every scored step whose output is not scored again
    (a flow may have one detector per group of sensors).

    >>> result = evaluate("flows/pump_vibration.py", "examples/data/pump_vibration.faults.json")
    >>> result.steps, result.total.detected, result.total.n_labels, result.total.false_alarms
    (('detect',), 3, 3, 0)
    """
    if isinstance(flow, str):
        flow = load_flow(flow)
    compiled = flow if isinstance(flow, CompiledFlow) else compile_flow(flow)
    if not isinstance(labels, Sequence) or isinstance(labels, str):
        labels = load_labels(labels)
    steps = _scored_steps(compiled, step)
    taps = {sid: CaptureSink() for sid in steps}
    tapped = _with_taps(compiled, taps)
    sinks: dict[str, Sink] = {s.step_id: CaptureSink() for s in tapped.order if s.kind == "sink"}
    sinks.update({f"{sid}.eval": sink for sid, sink in taps.items()})
    sinks[DEAD_LETTERS] = CaptureSink()
    report = run(tapped, sinks=sinks)
    flags = [
        WindowFlag(item.window.sensor, item.window.start, item.window.end, bool(item.anomaly))
        for sink in taps.values()
        for item in sink.items
        if isinstance(item, Scored)
    ]
    _one_step_per_sensor(taps)
    result = score_flags(flags, labels, grace_s=grace_s, merge_s=merge_s)
    return replace(result, report=report, steps=tuple(steps))


def _scored_steps(compiled: CompiledFlow, step: str | None) -> list[str]:
    scored = [s.step_id for s in compiled.order if s.kind != "sink" and compiled.schemas[s.step_id].kind == "scored"]
    if step is not None:
        if step not in scored:
            msg = f"step {step!r} does not emit scored windows; scored steps of {compiled.name!r}: {scored}"
            raise EdgeflowError(msg)
        return [step]
    rescored = {src for s in compiled.order if s.step_id in scored for src in s.inputs}
    last = [sid for sid in scored if sid not in rescored]
    if not last:
        msg = f"flow {compiled.name!r} has no step that emits scored windows; add a detector or eo.infer"
        raise EdgeflowError(msg)
    return last


def _giving(sink: CaptureSink) -> Callable[[Any], CaptureSink]:
    """Return a step factory that gives *sink*, whatever the run."""
    return lambda _ctx: sink


def _with_taps(compiled: CompiledFlow, taps: dict[str, CaptureSink]) -> CompiledFlow:
    """*compiled* with a capturing sink on each tapped step (no recompiling: checks and models stay as prepared)."""
    extra = [Step(f"{sid}.eval", "capture", "sink", (sid,), build=_giving(sink)) for sid, sink in taps.items()]
    return replace(
        compiled,
        order=(*compiled.order, *extra),
        schemas={**compiled.schemas, **{s.step_id: Schema("any") for s in extra}},
        stages=(*compiled.stages, *(Stage((s,)) for s in extra)),
    )


def _one_step_per_sensor(taps: dict[str, CaptureSink]) -> None:
    seen: dict[str, str] = {}
    for sid, sink in taps.items():
        for sensor in {item.sensor for item in sink.items if isinstance(item, Scored)}:
            if sensor in seen:
                msg = f"sensor {sensor!r} is scored by both {seen[sensor]!r} and {sid!r}; pick one with step="
                raise EdgeflowError(msg)
            seen[sensor] = sid
