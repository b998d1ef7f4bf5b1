"""The items that travel through a flow: samples, windows, scored windows, dead letters.

Event time is a float of seconds since the Unix epoch (UTC); it is parsed from
timezone-aware text at the edge of the system and turned back into aware
datetimes with :func:`to_datetime`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

__all__ = [
    "DeadLetter",
    "Sample",
    "SampleBlock",
    "Scored",
    "TimeFormat",
    "Window",
    "clip",
    "parse_timestamp",
    "parse_timestamps",
    "to_datetime",
    "to_iso",
]


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


@dataclass(frozen=True, slots=True)
class SampleBlock:
    """Consecutive samples of one sensor as arrays: how sources hand over a batch cheaply.

    >>> block = SampleBlock.of([Sample(1.0, "s", (0.5,), 12, 7), Sample(2.0, "s", (0.7,), 12, 9)])
    >>> block.ts.tolist(), block.values.shape, int(block.nbytes.sum()), block.t_in
    ([1.0, 2.0], (2, 1), 24, 9)
    """

    sensor: str
    ts: np.ndarray
    """Event times, float64 seconds since the epoch, shape ``(n,)``."""
    values: np.ndarray
    """float64, shape ``(n, channels)``."""
    nbytes: np.ndarray
    """Raw record sizes, int64, shape ``(n,)``."""
    t_in: int
    """Ingest time of the newest sample (perf_counter_ns)."""
    t_ins: np.ndarray | None = None
    """Per-sample ingest times (int64) when samples arrived at different times; ``None``: all at ``t_in``."""

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def ingest_time(self, i: int) -> int:
        """Ingest time of sample *i*."""
        return self.t_in if self.t_ins is None else int(self.t_ins[i])

    @classmethod
    def of(cls, items: list[Any]) -> SampleBlock:
        """Join samples and blocks of one sensor, in order, into one block."""
        if len(items) == 1 and type(items[0]) is SampleBlock:
            return items[0]  # type: ignore[no-any-return]
        blocks = [x if type(x) is SampleBlock else None for x in items]
        ts = [b.ts if b is not None else np.array([x.ts]) for b, x in zip(blocks, items, strict=True)]
        values = [
            b.values if b is not None else np.array([x.values], dtype=np.float64)
            for b, x in zip(blocks, items, strict=True)
        ]
        nbytes = [b.nbytes if b is not None else np.array([x.nbytes]) for b, x in zip(blocks, items, strict=True)]
        t_ins = [
            (b.t_ins if b.t_ins is not None else np.full(len(b), b.t_in)) if b is not None else np.array([x.t_in])
            for b, x in zip(blocks, items, strict=True)
        ]
        return cls(
            items[0].sensor,
            np.concatenate(ts).astype(np.float64),
            np.concatenate(values).astype(np.float64),
            np.concatenate(nbytes).astype(np.int64),
            max(x.t_in for x in items),
            np.concatenate(t_ins).astype(np.int64),
        )

    def take(self, keep: np.ndarray) -> SampleBlock:
        """Return the samples where boolean mask *keep* is true."""
        t_ins = None if self.t_ins is None else self.t_ins[keep]
        return SampleBlock(self.sensor, self.ts[keep], self.values[keep], self.nbytes[keep], self.t_in, t_ins)


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed-length, evenly spaced block of one sensor's samples.

    ``data`` has shape ``(channels, size)`` and dtype float32. Windows are immutable: a step that adds
    features returns a new window (``dataclasses.replace``), because several steps may read one stream.
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

    def with_features(self, features: np.ndarray) -> Window:
        """Return this window with *features* (what ``dataclasses.replace`` does, at a fifth of its cost).

        >>> w = Window("s", 0.0, 1.0, np.zeros((1, 2), np.float32), 1.0, 2, 20, 0)
        >>> w.with_features(np.ones(3, np.float32)).features.tolist(), w.features
        ([1.0, 1.0, 1.0], None)
        """
        return Window(
            self.sensor, self.start, self.end, self.data, self.rate_hz, self.n_raw, self.raw_bytes, self.t_in,
            features, self.extra,
        )  # fmt: skip


@dataclass(slots=True)
class Scored:
    """A window with an anomaly score, the verdict and who produced it.

    >>> w = Window("s", 0.0, 1.0, np.zeros((1, 2), np.float32), 1.0, 2, 20, 0)
    >>> Scored(w, 7.2, True, "robust", raised_by={"std": 7.2}).raised_by
    {'std': 7.2}
    """

    window: Window
    score: float
    anomaly: bool
    model: str
    raised_by: dict[str, float] | None = None
    """On a flagged window, the features that raised the flag and their (signed) z-values."""
    degraded: bool = False
    """The verdict did not come from the model the flow asked for (model failure or latency ladder): ``model``
    names the detector that produced it (e.g. ``fallback:zscore``)."""
    health: dict[str, Any] | None = None
    """The scoring model's health when it scored the window (see :mod:`edgeflow.operators.health`)."""

    @property
    def sensor(self) -> str:
        """The sensor of the scored window."""
        return self.window.sensor


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


TimeUnit = Literal["s", "ms", "us", "ns"]
_UNIT_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
MIN_TS, MAX_TS = -62_135_596_800.0, 253_402_300_799.0
"""Event times edgeflow accepts: the years 1 to 9999 (what an aware ``datetime`` can hold)."""


@dataclass(frozen=True, slots=True)
class TimeFormat:
    """How a source's timestamps are written: ISO 8601 text or epoch numbers, and the zone of naive text.

    The one timestamp parser of edgeflow: replay, the MQTT codecs and ``edgeflow publish`` all use it.

    >>> TimeFormat().parse("2026-03-02T08:00:00Z"), TimeFormat(unit="ms").parse("1772438400500")
    (1772438400.0, 1772438400.5)
    >>> TimeFormat(tz="Europe/Berlin").parse("2026-03-02T09:00:00")
    1772438400.0
    >>> TimeFormat().parse("2026-03-02T09:00:00")
    Traceback (most recent call last):
    ...
    ValueError: timestamp '2026-03-02T09:00:00' has no timezone; add 'Z' or an offset like '+01:00', or set tz=
    """

    tz: str | None = None
    """Zone (IANA name, e.g. ``"UTC"``) of timestamps written without an offset; ``None``: such text is an error."""
    unit: TimeUnit = "s"
    """Unit of numeric epoch timestamps."""

    def parse(self, text: str) -> float:
        """Epoch seconds of one timestamp; ``ValueError`` naming the text when it is bad or out of range."""
        try:
            number = float(text)
        except ValueError:
            seconds = self._parse_text(text)
        else:
            if not math.isfinite(number):
                msg = f"timestamp {text!r} is not a finite number"
                raise ValueError(msg)
            seconds = number * _UNIT_SCALE[self.unit]
        if not MIN_TS <= seconds <= MAX_TS:
            msg = f"timestamp {text!r} is outside the years 1-9999 (unit {self.unit!r})"
            raise ValueError(msg)
        return seconds

    def _parse_text(self, text: str) -> float:
        stamp = datetime.fromisoformat(text)
        if stamp.tzinfo is None:
            if self.tz is None:
                msg = f"timestamp {text!r} has no timezone; add 'Z' or an offset like '+01:00', or set tz="
                raise ValueError(msg)
            stamp = stamp.replace(tzinfo=_zone(self.tz))
        return stamp.timestamp()

    def parse_many(self, texts: Sequence[str]) -> np.ndarray:
        """Parse many timestamps into float64 epoch seconds; ``ValueError`` if any is bad.

        UTC ISO 8601 text (``...Z``, ``...+00:00``, or naive with ``tz="UTC"``) is parsed by numpy in C;
        anything else one by one.

        >>> TimeFormat().parse_many(["2026-03-02T08:00:00.5Z", "2026-03-02T08:00:01+00:00"]).tolist()
        [1772438400.5, 1772438401.0]
        """
        stripped: Sequence[str] | None = None
        if texts and all(t.endswith("Z") for t in texts):
            stripped = [t[:-1] for t in texts]
        elif texts and all(t.endswith("+00:00") for t in texts):
            stripped = [t[:-6] for t in texts]
        elif (
            self.tz in ("UTC", "Etc/UTC")
            and texts
            and all(len(t) >= 19 and t[10] == "T" and "+" not in t[10:] and t.count("-") == 2 for t in texts)
        ):
            stripped = texts
        if stripped is None or not all(len(t) > 10 and t[10] == "T" for t in stripped):
            return np.fromiter(map(self.parse, texts), dtype=np.float64, count=len(texts))
        # numpy would accept a bare date or a year past 9999: those go the strict way above
        micros = np.array(stripped, dtype="datetime64[us]").astype(np.int64)
        return micros / 1e6


@functools.lru_cache(maxsize=32)
def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return timezone.utc
    return ZoneInfo(name)


MAX_PAYLOAD_CHARS = 1_000
"""A dead letter keeps at most this much of the bad input."""


def clip(text: str, limit: int = MAX_PAYLOAD_CHARS) -> str:
    """Return *text*, cut to *limit* characters with a note of its full length, for dead letters and messages.

    >>> clip("x" * 12, limit=4)
    'xxxx... (12 characters in all)'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters in all)"


def parse_timestamp(text: str) -> float:
    """Parse a timezone-aware ISO 8601 timestamp or epoch seconds into epoch seconds (``TimeFormat().parse``).

    >>> parse_timestamp("2026-03-02T08:00:00Z")
    1772438400.0
    >>> parse_timestamp("nan")
    Traceback (most recent call last):
    ...
    ValueError: timestamp 'nan' is not a finite number
    """
    return _DEFAULT_FORMAT.parse(text)


def parse_timestamps(texts: Sequence[str]) -> np.ndarray:
    """Parse many timestamps at once (``TimeFormat().parse_many``)."""
    return _DEFAULT_FORMAT.parse_many(texts)


_DEFAULT_FORMAT = TimeFormat()


def to_iso(ts: float) -> str:
    """ISO 8601 text of epoch seconds, for messages and reports (never a numpy repr).

    >>> to_iso(1772438400.25)
    '2026-03-02T08:00:00.250000+00:00'
    """
    try:
        return to_datetime(float(ts)).isoformat()
    except (ValueError, OverflowError, OSError):
        return repr(float(ts))


def to_datetime(ts: float) -> datetime:
    """Turn epoch seconds back into an aware UTC datetime.

    >>> to_datetime(0.0).isoformat()
    '1970-01-01T00:00:00+00:00'
    """
    return datetime.fromtimestamp(ts, tz=timezone.utc)
