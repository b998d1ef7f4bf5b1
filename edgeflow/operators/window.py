"""Per-sensor windows over irregularly sampled data, on event time.

Samples are resampled onto a fixed grid (``rate_hz``) by linear interpolation
and written into a per-sensor numpy ring buffer; every ``hop`` grid points a
window of the newest ``size`` points is emitted. A time window
(``duration_s``, ``hop_s``) is the same thing measured in seconds. A silence
longer than ``max_gap_s`` resets the sensor's buffer (no interpolation across
it) and is counted; a sample not newer than the previous one of its sensor is
a dead letter, and so is a value a float32 window cannot hold (NaN, infinite or
beyond ±3.4e38: a corrupt reading must not turn windows into infinities). Work
per sample is O(1) amortized and memory per sensor is ``channels x size``
float32; at most ``max_sensors`` sensors are admitted per
process and run (each process of a cluster counts the sensors routed to it).

Slow sensors (minutes to hours between samples) need no hand-tuning beyond
``rate_hz``: ``max_gap_s`` defaults to five sample periods (at least 0.1 s).
From each sensor's first 64 samples the step checks that the settings fit the
data: a median interval longer than ``max_gap_s`` (no window could ever fill)
or resampling that repeats each sample more than 4 times (``rate_hz`` far above
the sensor's rate) raises a :class:`SamplingWarning` once per sensor and is
counted (``window.sparse_sensors``, ``window.upsampled_sensors``); the first
also makes the run's report name the problem.
"""

from __future__ import annotations

import math
import statistics
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, model_validator

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Schema, Step, StepContext, Stream, build_config
from edgeflow.metrics import FlowStats
from edgeflow.operators.window_many import _FLOAT32_MAX, _ON_GRID, advance
from edgeflow.records import DeadLetter, Sample, SampleBlock, Window, to_iso

__all__ = ["SamplingWarning", "SensorAdmission", "SensorWindows", "WindowConfig", "default_max_gap_s", "window"]

GAP_PERIODS = 5
"""The default ``max_gap_s`` in sample periods (and never below the former default, 0.1 s)."""
PROBE_SAMPLES = 64
"""Samples per sensor from which the sampling interval is checked against the settings."""
_FEW = 8
"""A call with at most this many samples of a sensor tries the scalar way first (see ``SensorWindows._few``)."""
_min, _max = np.minimum.reduce, np.maximum.reduce
MAX_UPSAMPLING = 4.0
"""Grid points per raw sample above which resampling is reported as upsampling."""


class SamplingWarning(UserWarning):
    """The data's sampling does not fit a window step's settings (reported once per sensor, and counted)."""


def default_max_gap_s(rate_hz: float) -> float:
    """Return the default ``max_gap_s`` for *rate_hz*: five sample periods, at least 0.1 s.

    >>> default_max_gap_s(500), default_max_gap_s(1 / 300)
    (0.1, 1500.0)
    """
    return max(0.1, GAP_PERIODS / rate_hz)


class WindowConfig(BaseModel):
    """Settings of :func:`window`: a count window (``size``, ``hop``) or a time window (``duration_s``, ``hop_s``).

    >>> WindowConfig(rate_hz=500, duration_s=0.512, hop_s=0.128).points
    (256, 64)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_hz: PositiveFloat
    size: PositiveInt | None = None
    hop: PositiveInt | None = None
    duration_s: PositiveFloat | None = None
    hop_s: PositiveFloat | None = None
    max_gap_s: PositiveFloat = 0.1
    """Silence that resets a sensor's window; not given (or ``None``): :func:`default_max_gap_s` of ``rate_hz``."""
    max_sensors: PositiveInt = 1024
    max_jump_s: PositiveFloat | None = None
    """A sample further ahead of its sensor's newest than this is held until the next sample confirms the
    new timeline (a sensor back after a long silence) or shows it was an outlier (a dead letter, not the
    sensor's new clock); not given: ``max(3600, 10 * max_gap_s)``."""

    @property
    def jump_s(self) -> float:
        """The effective ``max_jump_s``."""
        return self.max_jump_s if self.max_jump_s is not None else max(3600.0, 10 * self.max_gap_s)

    @model_validator(mode="before")
    @classmethod
    def _default_gap(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_gap_s") is None:
            rate = data.get("rate_hz")
            gap = default_max_gap_s(float(rate)) if isinstance(rate, int | float) and rate > 0 else None
            data = {k: v for k, v in data.items() if k != "max_gap_s"} | ({"max_gap_s": gap} if gap else {})
        return data

    @model_validator(mode="after")
    def _one_kind_of_window(self) -> WindowConfig:
        if (self.size is None) == (self.duration_s is None):
            msg = "size: give either size (samples) or duration_s (seconds), not both or neither"
            raise ValueError(msg)
        size, hop = self.points
        if size < 2:
            msg = f"size: a window needs at least 2 points, got {size}"
            raise ValueError(msg)
        if not 1 <= hop <= size:
            msg = f"hop: must be between 1 and the window size {size}, got {hop}"
            raise ValueError(msg)
        if self.max_gap_s * self.rate_hz < 1:
            msg = f"max_gap_s: {self.max_gap_s} s is shorter than one sample period at {self.rate_hz} Hz"
            raise ValueError(msg)
        return self

    @property
    def points(self) -> tuple[int, int]:
        """Window size and hop in grid points."""
        if self.size is not None:
            return self.size, self.hop or self.size
        assert self.duration_s is not None
        size = round(self.duration_s * self.rate_hz)
        hop = round((self.hop_s or self.duration_s) * self.rate_hz)
        return size, hop


class SensorAdmission:
    """The sensors a window step has taken on in this process, up to a bound (thread-safe).

    >>> gate = SensorAdmission(1)
    >>> gate.admit("a"), gate.admit("a"), gate.admit("b")
    (True, True, False)
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._sensors: set[str] = set()
        self._lock = threading.Lock()

    def admit(self, sensor: str) -> bool:
        """Whether *sensor* may have state (already has, or there is room)."""
        with self._lock:
            if sensor in self._sensors:
                return True
            if len(self._sensors) >= self._limit:
                return False
            self._sensors.add(sensor)
            return True


_NO_BUFFER = np.zeros((0, 0), dtype=np.float32)


class SensorWindows:
    """Ring buffer and resampler for one sensor (the state of one key).

    >>> cfg = WindowConfig(rate_hz=10, size=4, hop=2, max_gap_s=1.0)
    >>> state = SensorWindows("w", cfg, 1, SensorAdmission(10), FlowStats())
    >>> samples = [Sample(t / 10, "s", (float(t),), 10, 0) for t in range(8)]
    >>> [w.data[0].tolist() for w in state.on_batch(samples)]
    [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0], [4.0, 5.0, 6.0, 7.0]]
    """

    def __init__(
        self,
        step_id: str,
        cfg: WindowConfig,
        channels: int,
        admission: SensorAdmission,
        stats: FlowStats,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self._step_id = step_id
        self._cfg = cfg
        self._rate = cfg.rate_hz
        self._size, self._hop = cfg.points
        self._admission = admission
        self._stats = stats
        self._channels = channels
        self._buf = _NO_BUFFER  # made on admission: a refused sensor never holds one
        self._pos = 0
        self._filled = 0
        self._since_emit = 0
        self._last_t = -math.inf
        self._last_v = np.zeros(channels)
        self._origin = 0.0
        self._next_index = 0
        self._n_raw = 0
        self._raw_bytes = 0
        self._block: SampleBlock | None = None
        self._batch_t = np.zeros(0)
        self._batch_bytes: np.ndarray | None = None
        self._attributed = 0
        self._windows_made = 0
        self._sensor: str | None = None
        self._rejected = False
        self._held: SampleBlock | None = None
        """A sample far ahead of the timeline, waiting for the next one to confirm or refute it."""
        self._probe: np.ndarray | None = np.zeros(0)
        """The sensor's first raw timestamps, until the sampling check has run (then ``None``)."""
        self._max_step = min(cfg.max_gap_s, cfg.jump_s)
        """The longest step to a sensor's next sample that neither resets its window nor may be a time jump."""
        if resume is not None:
            self._restore(resume)

    def _admit(self, sensor: str) -> None:
        self._sensor = sensor
        self._rejected = not self._admission.admit(sensor)
        if not self._rejected and self._buf is _NO_BUFFER:
            self._buf = np.zeros((self._channels, self._size), dtype=np.float32)

    def _guard_jumps(self, block: SampleBlock) -> tuple[SampleBlock, list[DeadLetter], np.ndarray | None]:
        """Hold a sample far ahead of the sensor's timeline until the next one confirms or refutes it.

        One wrong timestamp (a clock glitch, a corrupt field) must not become the sensor's clock, or every
        later sample would be "late"; a sensor really back after a long silence is followed at its second
        sample. When no sample jumped, the block's running newest timestamps are returned too, for the
        late-sample check (``None`` when samples were held or dropped).
        """
        jump = self._cfg.jump_s
        if self._held is not None:
            block = SampleBlock.of([self._held, block])
            self._held = None
        t = block.ts
        newest = np.empty(len(t))
        newest[0] = self._last_t
        np.maximum.accumulate(t[:-1], out=newest[1:])
        np.maximum(newest, self._last_t, out=newest)
        ahead = t - newest
        if self._last_t == -math.inf:
            ahead[0] = 0.0  # a sensor's first sample starts its clock: it cannot jump
        if not _max(ahead) > jump:
            return block, [], newest
        keep = np.ones(len(t), dtype=bool)
        dead: list[DeadLetter] = []
        clock, held = self._last_t, -1
        for i, ti in enumerate(t.tolist()):
            if held >= 0:
                if ti > t[held] and ti - t[held] <= jump:  # a second sample on the new timeline: follow it
                    clock, held = ti, -1
                    continue
                keep[held] = False
                lead = float(t[held] - clock)
                reason = (
                    f"timestamp {to_iso(t[held])} is {lead:,.0f} s ahead of the sensor's newest {to_iso(clock)} "
                    f"and the next sample is not: an outlier, not the sensor's new clock (max_jump_s={jump:g})"
                )
                dead.append(DeadLetter(self._step_id, reason, self._describe(block, held), block.sensor))
                held = -1
            if clock != -math.inf and ti - clock > jump:
                held = i
                continue
            clock = max(clock, ti)
        if held >= 0:  # the last sample jumped: judged when the next batch arrives
            keep[held] = False
            self._held = block.take(np.arange(len(t)) == held)
        if dead:
            self._stats.count("window.time_outliers", len(dead))
        return block.take(keep), dead, None

    @staticmethod
    def on_batches(batches: list[tuple[SensorWindows, list[Any]]]) -> list[Any]:
        """Take several sensors' batches at once, as ``on_batch`` would each (:mod:`edgeflow.operators.window_many`)."""
        return advance(batches)

    @property
    def discard(self) -> bool:
        """A refused sensor keeps no state between batches: memory stays bounded however many are refused."""
        return self._rejected

    def on_batch(self, items: list[Sample | SampleBlock]) -> list[Any]:
        """Take one sensor's samples (single or in blocks) in arrival order; return windows and dead letters."""
        if len(items) == 1 and self._probe is None and self._held is None and not self._rejected:
            item = items[0]
            few: list[Any] | None = None
            if type(item) is Sample:
                few = self._few([item.ts], [item.values], [item.nbytes], item.t_in)
            elif len(item) <= _FEW:  # type: ignore[arg-type]
                one: SampleBlock = item  # type: ignore[assignment]
                ins = None if one.t_ins is None else one.t_ins.tolist()
                few = self._few(one.ts.tolist(), one.values.tolist(), one.nbytes.tolist(), one.t_in, ins)
            if few is not None:
                return few
        block = SampleBlock.of(items)
        if self._sensor is None:
            self._admit(block.sensor)
        if self._rejected:
            reason = f"sensor limit reached: max_sensors={self._cfg.max_sensors}"
            return [
                DeadLetter(self._step_id, reason, self._describe(block, i), block.sensor) for i in range(len(block))
            ]
        out: list[Any] = []
        if block.values.size and not np.abs(block.values).max() <= _FLOAT32_MAX:  # also NaN and infinities
            unfit = ~(np.abs(block.values) <= _FLOAT32_MAX).all(axis=1)
            for i in np.flatnonzero(unfit):
                reason = (
                    f"value {block.values[i].tolist()} at {to_iso(block.ts[i])} does not fit a float32 window "
                    f"(|value| <= {_FLOAT32_MAX:.3g} expected): sample dropped"
                )
                out.append(DeadLetter(self._step_id, reason, self._describe(block, int(i)), block.sensor))
            block = block.take(~unfit)
            if not len(block):
                return out
        block, jumped, seen = self._guard_jumps(block)
        out.extend(jumped)
        if not len(block):
            return out
        t = block.ts
        if seen is None:
            seen = np.maximum.accumulate(np.concatenate(([self._last_t], t)))[:-1]
        step = t - seen  # time since the sensor's newest sample, per sample
        if _min(step) <= 0:
            late = step <= 0
            for i in np.flatnonzero(late):
                reason = f"late sample: ts {to_iso(t[i])} is not after the sensor's newest {to_iso(seen[i])}"
                out.append(DeadLetter(self._step_id, reason, self._describe(block, int(i)), block.sensor))
            self._stats.add(late=int(late.sum()))
            block = block.take(~late)
            t = block.ts
            if not len(block):
                return out
            step = np.diff(t, prepend=self._last_t)
        # with no late sample, the newest before each sample is the one before it: *step* is the gap
        if self._probe is not None:
            self._check_sampling(t)
        v = block.values.T
        # raw samples and bytes are attributed to the first window ending at or after them,
        # so summaries do not depend on how the input was batched
        self._batch_t = t
        self._batch_bytes = None
        self._attributed = 0
        self._block = block
        if _max(step) > self._cfg.max_gap_s:
            bounds = [*np.flatnonzero(step > self._cfg.max_gap_s).tolist(), len(t)]
        else:
            bounds = [len(t)]
        start = 0
        for end in bounds:
            if end > start:
                self._resample(t[start:end], v[:, start:end], out)
            if end < len(t):
                self._reset(t[end], v[:, end])
            start = end
        self._n_raw += len(t) - self._attributed
        rest = block.nbytes if self._attributed == 0 else block.nbytes[self._attributed :]
        self._raw_bytes += int(rest.sum())
        if self._windows_made:
            self._stats.add(windows=self._windows_made)
            self._windows_made = 0
        return out

    def _few(
        self,
        ts: list[float],
        rows: Sequence[Sequence[float]],
        nbytes: list[int],
        t_in: int,
        t_ins: list[int] | None = None,
    ) -> list[Any] | None:
        """Take a few samples with Python scalars: their window if they complete one, or ``None`` (nothing done).

        A paced replay or MQTT hands a sensor a sample or two at a time, where numpy's per-call cost would
        dominate. Only the plain case is taken: each sample newer than the last by at most ``max_gap_s``
        (no late sample, gap or time jump), values a float32 window can hold, a few grid points per sample,
        at most one window completed, by the last point. Points are interpolated as :func:`numpy.interp`
        does (the same operations in the same order), so the result is the arrays' way's to the bit.
        """
        last_t, index, rate, origin = self._last_t, self._next_index, self._rate, self._origin
        points = 0
        for t, row in zip(ts, rows, strict=True):
            if not 0.0 < t - last_t <= self._max_step:
                return None
            for x in row:
                if not abs(x) <= _FLOAT32_MAX:
                    return None
            k = math.floor((t - origin) * rate + _ON_GRID) - index + 1
            if k > _FEW:
                return None
            points += k
            index += k
            last_t = t
        size, due = self._size, self._due
        if points > due:
            return None
        ring, pos, last_t = self._buf, self._pos, self._last_t
        last_v: Sequence[float] | np.ndarray = self._last_v
        index, pusher = self._next_index, 0
        for i, (t, row) in enumerate(zip(ts, rows, strict=True)):
            reached = math.floor((t - origin) * rate + _ON_GRID)
            while index <= reached:
                g = origin + index / rate
                # float(b): a Sample's values may be numpy scalars, which numpy's way takes as float64 too
                ring[:, pos] = [_interp_two(g, last_t, t, float(a), float(b)) for a, b in zip(last_v, row, strict=True)]
                pos = pos + 1 if pos + 1 < size else 0
                index += 1
                pusher = i
            last_t, last_v = t, row
        self._next_index = index
        self._pos, self._last_t, self._last_v = pos, last_t, np.array(last_v, dtype=np.float64)
        self._filled = min(size, self._filled + points)
        if points < due:
            self._since_emit += points
            self._n_raw += len(ts)
            self._raw_bytes += sum(nbytes)
            return []
        # the last point completed a window: samples up to its end are its raw samples (as in _emit)
        end = origin + (index - 1) / rate
        upto = sum(1 for t in ts if t <= end)
        data = np.concatenate(self._ring_points(), axis=1)  # a copy: the ring is full once a window completes
        n_raw, raw_bytes = self._n_raw + upto, self._raw_bytes + sum(nbytes[:upto])
        self._n_raw, self._raw_bytes, self._since_emit = len(ts) - upto, sum(nbytes[upto:]), 0
        self._stats.add(windows=1)
        span = (size - 1) / rate
        if t_ins is not None:  # latency runs from the sample that completed the window (reached its last point)
            t_in = t_ins[pusher]
        return [Window(self._sensor or "", end - span, end, data, rate, n_raw, raw_bytes, t_in)]

    @property
    def _due(self) -> int:
        """Grid points still to come before the next window is complete."""
        return self._size - self._filled if self._filled < self._size else self._hop - self._since_emit

    def _ring_points(self) -> list[np.ndarray]:
        """Return the points the ring holds for the sensor, oldest first, as one or two views (no copy).

        The ring is written round from position 0 after a reset, so while it fills its points are ``[0, _pos)``.
        """
        if self._filled >= self._size:
            return [self._buf[:, self._pos :], self._buf[:, : self._pos]]
        return [self._buf[:, : self._pos]]

    def _store(self, points: np.ndarray) -> None:
        """Write resampled *points* (channels x k) after the newest; the ring keeps the last ``size`` of them."""
        size, k, ring = self._size, points.shape[1], self._buf
        if k >= size:
            ring[:] = points[:, k - size :]
            self._pos = 0
        else:
            first = min(k, size - self._pos)
            ring[:, self._pos : self._pos + first] = points[:, :first]
            ring[:, : k - first] = points[:, first:]
            self._pos = (self._pos + k) % size
        self._filled = min(size, self._filled + k)

    def _reached(self, t: np.ndarray) -> np.ndarray:
        """Return the last grid point each of the timestamps *t* reaches (see :data:`_ON_GRID`)."""
        return np.floor((t - self._origin) * self._rate + _ON_GRID)

    def _check_sampling(self, t: np.ndarray, *, final: bool = False) -> None:
        """Once per sensor, from its first samples: warn if the data's sampling does not fit the settings."""
        assert self._probe is not None
        self._probe = np.concatenate((self._probe, t[: PROBE_SAMPLES - self._probe.size]))
        if self._probe.size < (2 if final else PROBE_SAMPLES):
            return
        interval = statistics.median(np.diff(self._probe).tolist())  # a few dozen values: cheaper than np.median
        self._probe = None
        cfg, where = self._cfg, f"step {self._step_id!r}: sensor {self._sensor!r}"
        if interval > cfg.max_gap_s:
            self._stats.count("window.sparse_sensors")
            msg = (
                f"{where} sends a sample every {interval:g} s (median) but max_gap_s is {cfg.max_gap_s:g} s: "
                f"every sample starts a new window and no window fills. Hint: set rate_hz near 1/{interval:g} "
                "(max_gap_s follows it) or max_gap_s above the sampling interval"
            )
            self._stats.problem(msg)
            warnings.warn(msg, SamplingWarning, stacklevel=2)
        elif interval * cfg.rate_hz > MAX_UPSAMPLING:
            self._stats.count("window.upsampled_sensors")
            msg = (
                f"{where} sends a sample every {interval:g} s (median); resampling onto a point every "
                f"{1 / cfg.rate_hz:g} s makes {interval * cfg.rate_hz:.3g} grid points of each. "
                f"Hint: set rate_hz near 1/{interval:g}"
            )
            warnings.warn(msg, SamplingWarning, stacklevel=2)

    @staticmethod
    def _describe(block: SampleBlock, i: int) -> str:
        return repr(Sample(float(block.ts[i]), block.sensor, tuple(block.values[i].tolist()), int(block.nbytes[i]), 0))

    def _reset(self, t0: float, v0: np.ndarray) -> None:
        if self._last_t != -math.inf:
            self._stats.add(gaps=1)
        self._filled = self._since_emit = self._pos = 0
        self._origin, self._next_index = t0, 0
        # a virtual point one period earlier puts the first sample exactly on the grid
        self._last_t, self._last_v = t0 - 1.0 / self._rate, v0

    def _resample(self, t: np.ndarray, v: np.ndarray, out: list[Any]) -> None:
        last_index = math.floor((t[-1] - self._origin) * self._rate + _ON_GRID)
        k = last_index - self._next_index + 1
        if k > 0:
            indices = np.arange(self._next_index, last_index + 1)
            grid = self._origin + indices / self._rate
            at = grid
            if len(t) > 1:
                # a grid point belongs to the first sample that reaches it: it is interpolated no later than
                # that sample, as when samples come one at a time, so that how the input was batched changes nothing
                at = np.minimum(grid, t[np.searchsorted(self._reached(t), indices)])
            xp = np.concatenate(([self._last_t], t))
            points = np.empty((v.shape[0], k), dtype=np.float32)
            for c in range(v.shape[0]):
                points[c] = np.interp(at, xp, np.concatenate(([self._last_v[c]], v[c])))
            self._push(points, grid, indices, out)
            self._next_index = last_index + 1
        self._last_t, self._last_v = float(t[-1]), v[:, -1]

    def _push(self, points: np.ndarray, grid: np.ndarray, indices: np.ndarray, out: list[Any]) -> None:
        """Append resampled *points* (channels x k) at times *grid* (grid *indices*); emit the windows they complete.

        All windows of the call are cut at once: the ring's points in time order followed by the new ones
        form one series, and each window is a slice of it (copied once, together).
        """
        size, hop, k = self._size, self._hop, points.shape[1]
        held = min(self._filled, size)
        ends = np.arange(self._due - 1, k, hop)  # the points that complete a window
        if ends.size:
            series = np.concatenate((*self._ring_points(), points), axis=1)
            starts = ends + held - size + 1
            data = series[:, starts[:, None] + np.arange(size)].transpose(1, 0, 2)  # windows x channels x size
            self._emit(data, grid[ends], indices[ends], out)
            self._since_emit = k - 1 - int(ends[-1])
        else:
            self._since_emit += k
        self._store(points)

    def _emit(self, data: np.ndarray, end_ts: np.ndarray, end_index: np.ndarray, out: list[Any]) -> None:
        """Make the windows of *data* (windows x channels x size) ending at *end_ts*, with their raw counts."""
        batch_t = self._batch_t
        assert self._block is not None
        if self._batch_bytes is None:
            nbytes = self._block.nbytes
            self._batch_bytes = np.zeros(len(nbytes) + 1, dtype=np.int64)
            np.cumsum(nbytes, out=self._batch_bytes[1:])
        batch_bytes = self._batch_bytes
        # raw samples and bytes go to the first window ending at or after them
        bounds = np.empty(len(end_ts) + 1, dtype=np.intp)
        bounds[0] = self._attributed
        bounds[1:] = batch_t.searchsorted(end_ts, side="right")
        n_raw = bounds[1:] - bounds[:-1]
        n_raw[0] += self._n_raw
        cut = batch_bytes[bounds]
        raw_bytes = cut[1:] - cut[:-1]
        raw_bytes[0] += self._raw_bytes
        self._attributed = int(bounds[-1])
        self._n_raw = self._raw_bytes = 0
        self._windows_made += len(end_ts)
        t_ins = self._block.t_ins
        if t_ins is None:
            ingest = [self._block.t_in] * len(end_ts)
        else:  # ingest time: of the sample that completed a window, the first to reach its last grid point
            completing = np.minimum(self._reached(batch_t).searchsorted(end_index, side="left"), len(batch_t) - 1)
            ingest = t_ins[completing].tolist()
        sensor, rate, span = self._sensor or "", self._rate, (self._size - 1) / self._rate
        out.extend(
            Window(sensor, end - span, end, window, rate, n, nbytes, t_in)
            for window, end, n, nbytes, t_in in zip(
                data, end_ts.tolist(), n_raw.tolist(), raw_bytes.tolist(), ingest, strict=True
            )
        )

    def on_eof(self) -> list[Any]:
        """Incomplete windows are not emitted; their samples are counted as ``window.tail_samples``.

        A sample still held as a possible time jump is a dead letter: nothing came after it to confirm it.
        """
        if self._probe is not None and self._probe.size:
            self._check_sampling(np.zeros(0), final=True)
        if self._n_raw:
            self._stats.count("window.tail_samples", self._n_raw)
        if self._held is None:
            return []
        held, self._held = self._held, None
        reason = (
            f"timestamp {to_iso(held.ts[0])} is far ahead of the sensor's newest {to_iso(self._last_t)} and the "
            f"input ended before a second sample confirmed it (max_jump_s={self._cfg.jump_s:g})"
        )
        self._stats.count("window.time_outliers")
        return [DeadLetter(self._step_id, reason, self._describe(held, 0), held.sensor)]

    _SNAPSHOT = (
        "_buf",
        "_pos",
        "_filled",
        "_since_emit",
        "_last_t",
        "_last_v",
        "_origin",
        "_next_index",
        "_n_raw",
        "_raw_bytes",
        "_sensor",
        "_rejected",
        "_held",
        "_probe",
    )

    def snapshot(self) -> dict[str, Any]:
        """Return the ring buffer, resampler position and unattributed raw counts (copied, picklable).

        >>> cfg = WindowConfig(rate_hz=10, size=4, hop=2, max_gap_s=1.0)
        >>> a = SensorWindows("w", cfg, 1, SensorAdmission(10), FlowStats())
        >>> _ = a.on_batch([Sample(t / 10, "s", (float(t),), 10, 0) for t in range(5)])
        >>> b = SensorWindows("w", cfg, 1, SensorAdmission(10), FlowStats(), resume=a.snapshot())
        >>> later = [Sample(t / 10, "s", (float(t),), 10, 0) for t in range(5, 8)]
        >>> [w.data[0].tolist() for w in b.on_batch(later)] == [w.data[0].tolist() for w in a.on_batch(later)]
        True
        """
        return {name: (v.copy() if isinstance(v := getattr(self, name), np.ndarray) else v) for name in self._SNAPSHOT}

    def _restore(self, state: dict[str, Any]) -> None:
        for name in self._SNAPSHOT:
            setattr(self, name, state[name])
        if self._sensor is not None and not self._rejected:
            self._admission.admit(self._sensor)


def _interp_two(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    """Return the value at *x* of the line through two points, computed as :func:`numpy.interp` does.

    >>> _interp_two(0.25, 0.0, 1.0, 2.0, 4.0) == float(np.interp(0.25, [0.0, 1.0], [2.0, 4.0]))
    True
    """
    if x >= x1:
        return y1
    if x <= x0:
        return y0
    slope = (y1 - y0) / (x1 - x0)
    y = slope * (x - x0) + y0
    if y != y:  # NaN one way: numpy tries the other
        y = slope * (x - x1) + y1
        if y != y and y0 == y1:
            y = y0
    return y


def window(
    step_id: str,
    up: Stream,
    *,
    rate_hz: float,
    size: int | None = None,
    hop: int | None = None,
    duration_s: float | None = None,
    hop_s: float | None = None,
    max_gap_s: float | None = None,
    max_sensors: int = 1024,
    max_jump_s: float | None = None,
) -> Stream:
    """Cut each sensor's samples into evenly resampled, overlapping windows.

    *max_gap_s* defaults to five sample periods of *rate_hz* (at least 0.1 s), so a sensor sampled
    every 5 minutes needs only ``rate_hz=1/300``.

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> w = window("win", s, rate_hz=500, size=256, hop=64)
    """
    cfg: WindowConfig = build_config(
        step_id,
        WindowConfig,
        rate_hz=rate_hz,
        size=size,
        hop=hop,
        duration_s=duration_s,
        hop_s=hop_s,
        max_gap_s=max_gap_s,
        max_sensors=max_sensors,
        max_jump_s=max_jump_s,
    )

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        if inputs[0].kind != "samples":
            raise FlowValidationError(
                step_id, "up", inputs[0].kind, "window takes samples", hint="put it after a source"
            )
        return Schema("windows", channels=inputs[0].channels, rate_hz=cfg.rate_hz, window_size=cfg.points[0])

    def build(ctx: StepContext) -> Any:
        channels, stats = len(ctx.input.channels), ctx.run.stats
        admission = SensorAdmission(cfg.max_sensors)  # one per run: every run starts empty
        return lambda resume: SensorWindows(step_id, cfg, channels, admission, stats, resume)

    return up.flow.add_step(
        Step(step_id, "window", "keyed", (up.step_id,), cfg, schema=schema, build=build, can_fail=True)
    )
