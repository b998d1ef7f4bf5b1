"""Many sensors' windows in one pass: what :meth:`SensorWindows.on_batch` does per sensor, for a batch of sensors.

With thousands of sensors, each one's batch is a few dozen samples, and the dozens of small numpy calls a
sensor's batch takes cost more than the work. :func:`advance` takes every sensor whose samples need no
judgement (no late sample, gap, time jump or unfit value: the everyday case) and resamples them all with
one set of numpy calls over the concatenated samples, then cuts every completed window with one gather.
Any other sensor goes through its own ``on_batch``. The results are the per-sensor way's to the bit
(the same floating-point operations on the same operands; a property test compares them).

Per-segment searches use complex keys: numpy orders complex numbers by real part, then imaginary part,
so ``segment + 1j * value`` searches each sensor's own sorted values in one ``searchsorted``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeflow.records import SampleBlock, Window

if TYPE_CHECKING:
    from edgeflow.operators.window import SensorWindows

__all__ = ["MANY_FROM", "MANY_ROWS", "advance"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ON_GRID = 1e-9
"""A sample within this fraction of a period before a grid point reaches it: ``floor((t - origin) * rate + _ON_GRID)``
is the last grid point a sample at *t* reaches (timestamps that are on the grid but for rounding stay on it)."""
MANY_FROM = 6
"""Sensors in a call from which the one pass is cheaper than each sensor's own numpy path (~120 µs fixed, then
~20 µs a sensor against ~40 µs, for 64 samples a sensor)."""
MANY_ROWS = 16_384
"""Samples one pass takes at most (whole sensors: a group ends once it reaches this many). A replay batch can hold
262,144 rows: in one pass its temporary arrays would cost ~30 MB of peak memory at 4,000 sensors."""


def advance(batches: list[tuple[SensorWindows, list[Any]]]) -> list[Any]:
    """Feed each ``(state, items)`` pair its items; return all windows and dead letters, sensor after sensor.

    Equal to ``[x for state, items in batches for x in state.on_batch(items)]``.
    """
    if len(batches) < MANY_FROM:  # too few for one pass to pay its fixed cost
        return [x for state, items in batches for x in state.on_batch(items)]
    plain: list[tuple[SensorWindows, SampleBlock]] = []
    out: list[Any] = []
    for state, items in batches:
        if state._held is None and not state._rejected:
            block = SampleBlock.of(items)
            if state._sensor is None:
                state._admit(block.sensor)
            if not state._rejected and len(block):
                plain.append((state, block))
                continue
        out.extend(state.on_batch(items))
    group: list[tuple[SensorWindows, SampleBlock]] = []
    rows = 0
    for pair in plain:  # in groups of about MANY_ROWS samples: a pass's temporary arrays stay small
        group.append(pair)
        rows += len(pair[1])
        if rows >= MANY_ROWS or pair is plain[-1]:
            if len(group) == 1:
                state, block = group[0]
                out.extend(state.on_batch([block]))
            else:
                out.extend(_advance_plain(group))
            group, rows = [], 0
    return out


def _advance_plain(plain: list[tuple[SensorWindows, SampleBlock]]) -> list[Any]:
    """Resample and cut the windows of admitted sensors holding no sample; any not plain goes through ``on_batch``."""
    first = plain[0][0]
    rate, size, hop, max_step = first._rate, first._size, first._hop, first._max_step
    lengths = np.array([len(block) for _state, block in plain])
    starts = np.zeros(len(plain) + 1, dtype=np.intp)
    np.cumsum(lengths, out=starts[1:])
    t = np.concatenate([block.ts for _state, block in plain])
    v = np.concatenate([block.values for _state, block in plain])
    seg = np.repeat(np.arange(len(plain)), lengths)
    last_t = np.array([state._last_t for state, _block in plain])
    new = last_t == -math.inf
    # the step from each sample's predecessor (the sensor's newest for its first): plain when 0 < step <= max_step
    before = np.empty_like(t)
    before[1:] = t[:-1]
    before[starts[:-1]] = last_t
    step = t - before
    in_step = (step > 0) & (step <= max_step)
    in_step[starts[:-1][new]] = True  # a new sensor's first sample starts its timeline (a reset, as on_batch does)
    fit = (np.abs(v) <= _FLOAT32_MAX).all(axis=1) & in_step
    ok = np.logical_and.reduceat(fit, starts[:-1])
    out: list[Any] = []
    if not ok.all():
        for i in np.flatnonzero(~ok).tolist():
            state, block = plain[i]
            out.extend(state.on_batch([block]))
        keep = ok.tolist()
        plain = [pair for pair, good in zip(plain, keep, strict=True) if good]
        if not plain:
            return out
        mask = ok[seg]
        t, v, new = t[mask], v[mask], new[ok]
        lengths = lengths[ok]
        starts = np.zeros(len(plain) + 1, dtype=np.intp)
        np.cumsum(lengths, out=starts[1:])
        seg = np.repeat(np.arange(len(plain)), lengths)
    for i in np.flatnonzero(new).tolist():
        state, block = plain[i]
        state._reset(float(block.ts[0]), block.values[0])
    for state, block in plain:
        if state._probe is not None:
            state._check_sampling(block.ts)
    return out + _resample_and_cut(plain, t, v, seg, starts, rate, size, hop)


def _resample_and_cut(
    plain: list[tuple[SensorWindows, SampleBlock]],
    t: np.ndarray,
    v: np.ndarray,
    seg: np.ndarray,
    starts: np.ndarray,
    rate: float,
    size: int,
    hop: int,
) -> list[Any]:
    n_sensors = len(plain)
    origin = np.array([state._origin for state, _block in plain])
    next_index = np.array([state._next_index for state, _block in plain], dtype=np.int64)
    last_t = np.array([state._last_t for state, _block in plain])
    last_v = np.array([state._last_v for state, _block in plain], dtype=np.float64).reshape(n_sensors, -1)
    reached = np.floor((t - origin[seg]) * rate + _ON_GRID)
    last_index = reached[starts[1:] - 1].astype(np.int64)
    k = last_index - next_index + 1
    # grid points: per sensor, indices next_index .. last_index
    k_starts = np.zeros(n_sensors + 1, dtype=np.intp)
    np.cumsum(k, out=k_starts[1:])
    gseg = np.repeat(np.arange(n_sensors), k)
    indices = next_index[gseg] + (np.arange(k_starts[-1]) - k_starts[gseg])
    grid = origin[gseg] + indices / rate
    # a grid point is interpolated no later than the first sample that reaches it (as on_batch does)
    reach_key = seg + 1j * reached
    first_reaching = reach_key.searchsorted(gseg + 1j * indices)
    at = np.minimum(grid, t[first_reaching])
    points = _interp(at, gseg, t, v, seg, starts, last_t, last_v).astype(np.float32)
    return _cut(plain, points, grid, indices, gseg, k, k_starts, t, seg, starts, reach_key, last_index, size, hop)


def _interp(
    x: np.ndarray,
    xseg: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    seg: np.ndarray,
    starts: np.ndarray,
    last_t: np.ndarray,
    last_v: np.ndarray,
) -> np.ndarray:
    """``numpy.interp(x, [last_t, *t], [last_v, *v])`` per sensor and channel, with numpy's very operations.

    Returns ``(channels, len(x))`` float64.
    """
    n_sensors = len(starts) - 1
    # each sensor's points: its newest before the batch, then the batch's samples
    pos = np.arange(len(t)) + seg + 1
    first = starts[:-1] + np.arange(n_sensors)
    xp = np.empty(len(t) + n_sensors)
    xp[pos], xp[first] = t, last_t
    fp = np.empty((len(t) + n_sensors, v.shape[1]))
    fp[pos], fp[first] = v, last_v
    xp_seg = np.empty(len(xp), dtype=np.int64)
    xp_seg[pos], xp_seg[first] = seg, np.arange(n_sensors)
    lo = first[xseg]
    hi = np.empty_like(first)
    hi[:-1] = first[1:] - 1
    hi[-1] = len(xp) - 1
    hi = hi[xseg]
    j = (xp_seg + 1j * xp).searchsorted(xseg + 1j * x, side="right") - 1  # xp[j] <= x < xp[j + 1]
    below = j < lo
    j = np.clip(j, lo, hi)
    nxt = np.minimum(j + 1, hi)
    x0, x1 = xp[j], xp[nxt]
    take = below | (j == hi) | (x0 == x)  # left of the first point, at or past the last, or exactly on a point
    span = np.where(take, 1.0, x1 - x0)
    y0, y1 = fp[j].T, fp[nxt].T
    slope = (y1 - y0) / span
    y = slope * (x - x0) + y0
    nan = np.isnan(y)
    if nan.any():  # as numpy: try from the right end; if still NaN and both ends equal, that value
        y = np.where(nan, slope * (x - x1) + y1, y)
        y = np.where(np.isnan(y) & (y0 == y1), y0, y)
    return np.where(take, y0, y)


def _cut(
    plain: list[tuple[SensorWindows, SampleBlock]],
    points: np.ndarray,
    grid: np.ndarray,
    indices: np.ndarray,
    gseg: np.ndarray,
    k: np.ndarray,
    k_starts: np.ndarray,
    t: np.ndarray,
    seg: np.ndarray,
    starts: np.ndarray,
    reach_key: np.ndarray,
    last_index: np.ndarray,
    size: int,
    hop: int,
) -> list[Any]:
    """Append each sensor's new points to its ring; cut and emit the windows they complete, with raw counts."""
    n_sensors = len(plain)
    ks = k.tolist()
    nbytes = np.concatenate([block.nbytes for _state, block in plain])
    cum = np.zeros(len(nbytes) + 1, dtype=np.int64)
    np.cumsum(nbytes, out=cum[1:])
    due = [state._due for state, _block in plain]
    # windows per sensor: ends at due-1, due-1+hop, ... within its k new points
    counts = [(kk - d) // hop + 1 if kk >= d else 0 for kk, d in zip(ks, due, strict=True)]
    out: list[Any] = []
    attributed = [0] * n_sensors
    total = sum(counts)
    if total:
        pieces: list[np.ndarray] = []
        series_at: list[int] = []  # where each windowed sensor's series starts in the joined series
        held_of: list[int] = []
        offset = 0
        for i, (state, _block) in enumerate(plain):
            if not counts[i]:
                continue
            held = min(state._filled, size)
            pieces += state._ring_points()
            pieces.append(points[:, k_starts[i] : k_starts[i + 1]])
            series_at.append(offset)
            held_of.append(held)
            offset += held + ks[i]
        series = np.concatenate(pieces, axis=1)
        made = [c for c in counts if c]
        wseg = np.repeat(np.flatnonzero(np.array(counts)), made)
        rank = np.repeat(np.arange(len(made)), made)  # the sensor's place among those with windows
        nth = np.arange(total) - np.cumsum([0, *made[:-1]])[rank]
        local_end = np.array(due)[wseg] - 1 + nth * hop  # in the sensor's new points
        begin = np.array(series_at)[rank] + local_end + np.array(held_of)[rank] - size + 1
        data = series[:, begin[:, None] + np.arange(size)].transpose(1, 0, 2)  # windows x channels x size
        at_end = k_starts[wseg] + local_end
        end_ts, end_index = grid[at_end], indices[at_end]
        out = _windows(plain, data, end_ts, end_index, wseg, counts, t, seg, starts, reach_key, size, cum, attributed)
        plain[0][0]._stats.add(windows=total)
    for i, (state, block) in enumerate(plain):
        kk = ks[i]
        done = attributed[i]
        if counts[i]:  # the windows took the carried raw counts and the batch's samples up to the last one's end
            state._n_raw, state._raw_bytes = len(block) - done, int(cum[starts[i + 1]] - cum[starts[i] + done])
        else:
            state._n_raw += len(block)
            state._raw_bytes += int(cum[starts[i + 1]] - cum[starts[i]])
        state._next_index = int(last_index[i]) + 1
        state._last_t, state._last_v = float(block.ts[-1]), block.values[-1]
        if kk:
            if counts[i]:
                state._since_emit = kk - 1 - (due[i] - 1 + (counts[i] - 1) * hop)
            else:
                state._since_emit += kk
            state._store(points[:, k_starts[i] : k_starts[i + 1]])
    return out


def _windows(
    plain: list[tuple[SensorWindows, SampleBlock]],
    data: np.ndarray,
    end_ts: np.ndarray,
    end_index: np.ndarray,
    wseg: np.ndarray,
    counts: list[int],
    t: np.ndarray,
    seg: np.ndarray,
    starts: np.ndarray,
    reach_key: np.ndarray,
    size: int,
    cum: np.ndarray,
    attributed: list[int],
) -> list[Any]:
    """Make the windows, each with the raw samples and bytes up to its end (since the sensor's last window).

    Fills *attributed*: per sensor, how many of its batch's samples the windows took.
    """
    # raw samples and bytes go to the first window ending at or after them
    upto = (seg + 1j * t).searchsorted(wseg + 1j * end_ts, side="right")
    first_of = np.ones(len(wseg), dtype=bool)
    first_of[1:] = wseg[1:] != wseg[:-1]
    before = np.empty_like(upto)
    before[1:] = upto[:-1]
    before[first_of] = starts[wseg[first_of]]
    n_raw = upto - before
    raw_bytes = cum[upto] - cum[before]
    carried_n = np.array([state._n_raw for state, _block in plain], dtype=np.int64)
    carried_b = np.array([state._raw_bytes for state, _block in plain], dtype=np.int64)
    n_raw[first_of] += carried_n[wseg[first_of]]
    raw_bytes[first_of] += carried_b[wseg[first_of]]
    # ingest time: of the sample that completed a window, the first to reach its last grid point
    completing = np.minimum(reach_key.searchsorted(wseg + 1j * end_index), starts[wseg + 1] - 1)
    t_ins = np.concatenate(
        [block.t_ins if block.t_ins is not None else np.full(len(block), block.t_in) for _s, block in plain]
    )
    ingest = t_ins[completing].tolist()
    last_of = np.append(first_of[1:], True)
    for i, done in zip(wseg[last_of].tolist(), (upto - starts[wseg])[last_of].tolist(), strict=True):
        attributed[i] = done
    out: list[Any] = []
    sensors = [plain[i][0]._sensor or "" for i in wseg.tolist()]
    rate = plain[0][0]._rate
    span = (size - 1) / rate
    out.extend(
        Window(sensor, end - span, end, window, rate, n, b, t_in)
        for sensor, window, end, n, b, t_in in zip(
            sensors, data, end_ts.tolist(), n_raw.tolist(), raw_bytes.tolist(), ingest, strict=True
        )
    )
    return out
