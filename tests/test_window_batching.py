"""The windower gives the same windows, dead letters and state however a sensor's samples are batched.

A paced replay or MQTT hands a sensor one sample or a few at a time (taken by a scalar path), a fast replay
thousands (taken by numpy): both must agree to the bit, or a replay would depend on its speed.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.metrics import FlowStats
from edgeflow.operators.window import SensorAdmission, SensorWindows, WindowConfig
from edgeflow.records import DeadLetter, Sample, SampleBlock, Window

T0 = 1_767_225_600.0  # 2026-01-01, epoch seconds: timestamps with the resolution real ones have


def _singles(block: SampleBlock) -> list[Sample]:
    """A block as single samples, each with its own ingest time (as a source of single readings hands them on)."""
    return [
        Sample(float(t), block.sensor, tuple(v.tolist()), int(n), block.ingest_time(i))
        for i, (t, v, n) in enumerate(zip(block.ts, block.values, block.nbytes, strict=True))
    ]


def _run(
    cfg: WindowConfig, block: SampleBlock, cuts: list[int], *, singles: bool = False
) -> tuple[list[tuple], list[tuple], dict]:
    state = SensorWindows("win", cfg, block.values.shape[1], SensorAdmission(10), FlowStats())
    out: list[object] = []
    bounds = [0, *sorted(set(cuts)), len(block)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                ins = None if block.t_ins is None else block.t_ins[lo:hi]
                t_in = block.t_in if ins is None else int(ins[-1])
                part = SampleBlock("s", block.ts[lo:hi], block.values[lo:hi], block.nbytes[lo:hi], t_in, ins)
                out += state.on_batch(_singles(part) if singles else [part])
        out += state.on_eof()
    # windows in order; dead letters as a set (a batch lists them by check, before its windows)
    windows = [(w.start, w.end, w.data.tobytes(), w.n_raw, w.raw_bytes, w.t_in) for w in out if isinstance(w, Window)]
    letters = sorted((w.reason, w.payload) for w in out if isinstance(w, DeadLetter))
    assert len(windows) + len(letters) == len(out)
    snap = state.snapshot()
    ring, pos, held = snap["_buf"], snap.pop("_pos"), min(snap["_filled"], cfg.size)  # the points held, oldest first
    snap["_buf"] = np.concatenate((ring[:, pos:], ring[:, :pos]), axis=1)[:, cfg.size - held :].tobytes()
    snap["_last_v"] = np.asarray(snap["_last_v"], dtype=np.float64).tobytes()
    snap["_held"] = None if snap["_held"] is None else snap["_held"].ts.tolist()
    snap["_probe"] = None if snap["_probe"] is None else snap["_probe"].tolist()
    return windows, letters, snap


@st.composite
def _series(draw: st.DrawFn) -> tuple[WindowConfig, SampleBlock, list[int]]:
    rate = draw(st.sampled_from([10.0, 100.0, 500.0]))
    n = draw(st.integers(80, 400))
    channels = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["on_grid", "jitter", "irregular"]))
    if kind == "on_grid":
        steps = np.full(n, 1.0 / rate)
    elif kind == "jitter":
        steps = 1.0 / rate + rng.uniform(-0.3, 0.3, n) / rate
    else:
        steps = rng.exponential(1.0 / rate, n)
    gaps = rng.random(n) < draw(st.sampled_from([0.0, 0.01]))
    steps[gaps] += 10.0 / rate  # longer than max_gap_s: the window resets
    ts = draw(st.sampled_from([T0, 0.0])) + np.cumsum(steps)
    late = rng.random(n) < draw(st.sampled_from([0.0, 0.02]))
    ts[late] -= 3.0 / rate  # late or out of order: dead letters
    values = rng.normal(0.0, 1.0, (n, channels)) * 10.0 ** rng.integers(-3, 4)
    values[rng.random(n) < 0.01] = np.nan
    size = draw(st.sampled_from([4, 16, 64]))
    hop = draw(st.integers(1, size))
    cfg = WindowConfig(rate_hz=rate, size=size, hop=hop, max_gap_s=5.0 / rate)
    arrivals = None  # a replay's block: one ingest time; MQTT's: one per sample (message)
    if draw(st.booleans()):
        arrivals = np.cumsum(rng.integers(1, 1_000, n)).astype(np.int64)
    block = SampleBlock(
        "s", ts, values, rng.integers(10, 40, n), 0 if arrivals is None else int(arrivals[-1]), arrivals
    )
    cuts = draw(st.lists(st.integers(1, n - 1), max_size=n))
    return cfg, block, cuts


@settings(max_examples=150, deadline=None)
@given(_series())
def test_any_batching_gives_the_same_windows_dead_letters_and_state(case: tuple) -> None:
    cfg, block, cuts = case
    whole = _run(cfg, block, [])
    assert _run(cfg, block, cuts) == whole
    assert _run(cfg, block, list(range(1, len(block)))) == whole  # one sample at a time
    assert _run(cfg, block, cuts, singles=True) == whole  # the same batches as lists of single samples


def test_regular_samples_one_at_a_time_fill_the_same_windows_as_one_block() -> None:
    ts = T0 + np.arange(2_000) / 500.0
    values = np.sin(np.arange(2_000) / 7.0)[:, None]
    block = SampleBlock("s", ts, values, np.full(2_000, 20), 0)
    cfg = WindowConfig(rate_hz=500, size=256, hop=64, max_gap_s=0.05)
    whole, pieces = _run(cfg, block, []), _run(cfg, block, list(range(1, 2_000)))
    assert len(whole[0]) == (2_000 - 256) // 64 + 1
    assert pieces == whole


def test_a_grid_point_reached_within_rounding_is_interpolated_at_its_own_sample() -> None:
    # cumulative sums of 0.1 s drift below the grid: the 8th sample (0.7999999999999999) reaches the grid point
    # 0.8 within the tolerance, so the point takes that sample's value, whether or not the next one is in the batch
    ts = np.cumsum(np.full(24, 0.1))
    values = np.zeros((24, 1))
    values[8::2] = 1e30  # the next sample is far away: interpolating past the sample would show
    block = SampleBlock("s", ts, values, np.full(24, 20), 0)
    cfg = WindowConfig(rate_hz=10, size=4, hop=1, max_gap_s=1.0)
    assert _run(cfg, block, []) == _run(cfg, block, list(range(1, 24)))


def test_samples_whose_values_are_numpy_float32_give_the_same_windows_one_at_a_time() -> None:
    # a custom source may hand on numpy scalars: the scalar path must interpolate them in float64, as numpy does
    from edgeflow.records import Sample

    rng = np.random.default_rng(0)
    ts = T0 + np.cumsum(rng.uniform(0.03, 0.17, 120))
    values = rng.normal(size=120).astype(np.float32)
    samples = [Sample(float(t), "s", (v,), 10, 0) for t, v in zip(ts, values, strict=True)]
    cfg = WindowConfig(rate_hz=10, size=4, hop=1, max_gap_s=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = SensorWindows("win", cfg, 1, SensorAdmission(10), FlowStats())
        singly = [w for s in samples for w in one.on_batch([s])]
        together = SensorWindows("win", cfg, 1, SensorAdmission(10), FlowStats()).on_batch(list(samples))
    assert len(singly) == len(together) > 100
    assert [w.data.tobytes() for w in singly] == [w.data.tobytes() for w in together]


def test_a_few_single_samples_at_a_time_give_each_window_the_ingest_time_of_the_sample_that_completed_it() -> None:
    # three samples per grid period, handed on three at a time: the window is often completed by the first or
    # second sample of a batch, and its latency must run from that sample's arrival, not the batch's last
    n = 3_000
    ts = T0 + np.arange(n) / 300.0
    arrivals = 1_000 + np.arange(n, dtype=np.int64) * 7
    block = SampleBlock("s", ts, np.cos(np.arange(n) / 11.0)[:, None], np.full(n, 20), int(arrivals[-1]), arrivals)
    cfg = WindowConfig(rate_hz=100, size=16, hop=4, max_gap_s=0.05)
    whole = _run(cfg, block, [])
    threes = _run(cfg, block, list(range(3, n, 3)), singles=True)
    assert len(whole[0]) == (n // 3 - 16) // 4 + 1
    assert threes == whole
    last_of_batch = set(arrivals[2::3].tolist())
    assert any(w[5] not in last_of_batch for w in whole[0])  # some windows were completed mid-batch
