"""Many sensors' batches windowed in one pass give what each sensor's own ``on_batch`` gives, to the bit.

The engine hands a shard's sensors to :meth:`SensorWindows.on_batches` together; a sensor's windows, dead
letters, counters and state must not depend on which other sensors shared its batch.
"""

from __future__ import annotations

import warnings
from typing import Any
from unittest.mock import patch

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.metrics import FlowStats
from edgeflow.operators import window_many
from edgeflow.operators.window import SensorAdmission, SensorWindows, WindowConfig
from edgeflow.records import DeadLetter, Sample, SampleBlock, Window

T0 = 1_767_225_600.0


def _sensor_series(rng: np.random.Generator, sensor: str, rate: float, n: int, channels: int, kind: str) -> SampleBlock:
    if kind == "on_grid":
        steps = np.full(n, 1.0 / rate)
    elif kind == "jitter":
        steps = 1.0 / rate + rng.uniform(-0.3, 0.3, n) / rate
    elif kind == "irregular":
        steps = rng.exponential(1.0 / rate, n)
    else:  # everything a sensor can do wrong: gaps, late samples, a time jump, unfit values
        steps = 1.0 / rate + rng.uniform(-0.3, 0.3, n) / rate
        steps[rng.random(n) < 0.03] += 10.0 / rate
    ts = (T0 if rng.random() < 0.8 else 0.0) + rng.uniform(0, 5) + np.cumsum(steps)  # real clocks, and epoch 0
    values = rng.normal(0.0, 1.0, (n, channels)) * 10.0 ** rng.integers(-3, 4)
    if kind == "faulty":
        ts[rng.random(n) < 0.03] -= 3.0 / rate
        ts[n // 2] += 1e6  # far ahead: held, then a dead letter
        values[rng.random(n) < 0.02] = np.nan
        values[rng.random(n) < 0.01] = 1e300
    arrivals = np.cumsum(rng.integers(1, 1_000, n)).astype(np.int64) if rng.random() < 0.5 else None
    t_in = 0 if arrivals is None else int(arrivals[-1])
    return SampleBlock(sensor, ts, values, rng.integers(10, 40, n), t_in, arrivals)


def _part(block: SampleBlock, lo: int, hi: int) -> SampleBlock:
    ins = None if block.t_ins is None else block.t_ins[lo:hi]
    t_in = block.t_in if ins is None else int(ins[-1])
    return SampleBlock(block.sensor, block.ts[lo:hi], block.values[lo:hi], block.nbytes[lo:hi], t_in, ins)


def _samples(block: SampleBlock) -> list[Any]:
    return [
        Sample(float(t), block.sensor, tuple(v.tolist()), int(n), block.ingest_time(i))
        for i, (t, v, n) in enumerate(zip(block.ts, block.values, block.nbytes, strict=True))
    ]


def _state_of(state: SensorWindows, size: int) -> dict[str, Any]:
    snap = state.snapshot()
    ring, pos, held = snap["_buf"], snap.pop("_pos"), min(snap["_filled"], size)
    if ring.size:
        snap["_buf"] = np.concatenate((ring[:, pos:], ring[:, :pos]), axis=1)[:, size - held :].tobytes()
    else:
        snap["_buf"] = b""
    snap["_last_v"] = np.asarray(snap["_last_v"], dtype=np.float64).tobytes()
    snap["_held"] = None if snap["_held"] is None else snap["_held"].ts.tolist()
    snap["_probe"] = None if snap["_probe"] is None else snap["_probe"].tolist()
    return snap


def _outputs(out: list[Any]) -> dict[str, tuple[list[tuple], list[tuple]]]:
    per: dict[str, tuple[list[tuple], list[tuple]]] = {}
    for item in out:
        windows, letters = per.setdefault(item.sensor, ([], []))
        if isinstance(item, Window):
            windows.append((item.start, item.end, item.data.tobytes(), item.n_raw, item.raw_bytes, item.t_in))
        else:
            assert isinstance(item, DeadLetter)
            letters.append((item.reason, item.payload))
    return {sensor: (windows, sorted(letters)) for sensor, (windows, letters) in per.items()}


def _run(
    cfg: WindowConfig,
    rounds: list[list[tuple[str, list[SampleBlock]]]],
    limit: int,
    together: bool,
    group_rows: int = window_many.MANY_ROWS,
) -> Any:
    stats, admission = FlowStats(), SensorAdmission(limit)
    states: dict[str, SensorWindows] = {}
    first = rounds[0][0][1][0].values
    channels = first.shape[1] if isinstance(first, np.ndarray) else len(first)
    out: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in rounds:
            pairs = []
            for sensor, items in batch:
                if sensor not in states:
                    states[sensor] = SensorWindows("win", cfg, channels, admission, stats)
                pairs.append((states[sensor], list(items)))
            if together:  # the one pass even for two sensors (the engine takes it from MANY_FROM on)
                with patch.object(window_many, "MANY_FROM", 2), patch.object(window_many, "MANY_ROWS", group_rows):
                    out += SensorWindows.on_batches(pairs)
            else:
                for state, items in pairs:
                    out += state.on_batch(items)
        for state in states.values():
            out += state.on_eof()
    counts = {k: v for k, v in vars(stats).items() if isinstance(v, int | float) and k != "started"}
    return _outputs(out), {s: _state_of(state, cfg.size) for s, state in states.items()}, counts, dict(stats.counts)


@st.composite
def _fleet(draw: st.DrawFn) -> tuple[WindowConfig, list[list[tuple[str, list[Any]]]], int]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rate = draw(st.sampled_from([10.0, 100.0, 500.0]))
    channels = draw(st.integers(1, 2))
    size = draw(st.sampled_from([4, 16, 64]))
    cfg = WindowConfig(rate_hz=rate, size=size, hop=draw(st.integers(1, size)), max_gap_s=5.0 / rate)
    sensors = draw(st.integers(2, 7))
    kinds = ["on_grid", "jitter", "irregular", "faulty"]
    series = [
        _sensor_series(rng, f"s{i}", rate, int(rng.integers(20, 300)), channels, kinds[int(rng.integers(4))])
        for i in range(sensors)
    ]
    rounds: list[list[tuple[str, list[Any]]]] = []
    done = [0] * sensors
    while any(d < len(b) for d, b in zip(done, series, strict=True)):
        batch = []
        for i, block in enumerate(series):
            if done[i] >= len(block) or rng.random() < 0.2:  # not every sensor in every batch
                continue
            hi = min(len(block), done[i] + int(rng.integers(1, 90)))
            if hi - done[i] > 1 and rng.random() < 0.3:  # two items for one sensor in one batch
                mid = int(rng.integers(done[i] + 1, hi))
                batch.append((block.sensor, [_part(block, done[i], mid), _part(block, mid, hi)]))
            elif rng.random() < 0.2:  # single samples, as a source of single readings hands them on
                batch.append((block.sensor, _samples(_part(block, done[i], hi))))
            else:
                batch.append((block.sensor, [_part(block, done[i], hi)]))
            done[i] = hi
        if batch:
            rounds.append(batch)
    limit = draw(st.sampled_from([sensors, max(1, sensors - 2)]))  # sometimes a sensor is refused
    group_rows = draw(st.sampled_from([1, 100, window_many.MANY_ROWS]))  # passes of one sensor, a few, all
    return cfg, rounds, limit, group_rows


@settings(max_examples=120, deadline=None)
@given(_fleet())
def test_sensors_windowed_together_get_what_each_gets_alone(case: tuple) -> None:
    cfg, rounds, limit, group_rows = case
    alone = _run(cfg, rounds, limit, together=False)
    assert _run(cfg, rounds, limit, together=True, group_rows=group_rows) == alone


def test_thousands_of_regular_sensors_take_the_one_pass_and_match() -> None:
    rng = np.random.default_rng(7)
    cfg = WindowConfig(rate_hz=10, size=16, hop=8, max_gap_s=1.0)
    series = [_sensor_series(rng, f"s{i}", 10.0, 50, 1, "jitter") for i in range(2_000)]
    rounds = [[(b.sensor, [_part(b, lo, lo + 25)]) for b in series] for lo in (0, 25)]
    alone = _run(cfg, rounds, 5_000, together=False)
    together = _run(cfg, rounds, 5_000, together=True)
    assert together == alone
    assert _run(cfg, rounds, 5_000, together=True, group_rows=1_000) == alone  # in groups of 40 sensors
    windows = sum(len(w) for w, _letters in alone[0].values())
    assert 2_000 * 4 < windows <= 2_000 * 5  # 50 samples, 5 s: windows end at points 15, 23, ..., 47 (or 39)
