"""The windower: resampling, ring buffer, hops, gaps, late samples, sensor bound."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow.errors import FlowValidationError
from edgeflow.metrics import FlowStats
from edgeflow.operators.window import SamplingWarning, SensorAdmission, SensorWindows, WindowConfig
from edgeflow.records import DeadLetter, Sample, Window


def _state(cfg: WindowConfig, admitted: SensorAdmission | None = None, stats: FlowStats | None = None) -> SensorWindows:
    return SensorWindows("win", cfg, 1, admitted or SensorAdmission(cfg.max_sensors), stats or FlowStats())


def _samples(times: np.ndarray, values: np.ndarray, sensor: str = "s") -> list[Sample]:
    return [Sample(float(t), sensor, (float(v),), 20, 0) for t, v in zip(times, values, strict=True)]


def _windows(out: list[object]) -> list[Window]:
    return [w for w in out if isinstance(w, Window)]


def test_irregular_samples_of_a_line_are_resampled_exactly() -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.008, 0.012, 400))  # ~100 Hz with jitter
    cfg = WindowConfig(rate_hz=100, size=50, hop=25, max_gap_s=0.05)
    wins = _windows(_state(cfg).on_batch(_samples(t, 3.0 * t + 1.0)))
    assert len(wins) > 10
    for w in wins:
        grid = w.start + np.arange(50) / 100.0
        np.testing.assert_allclose(w.data[0], 3.0 * grid + 1.0, rtol=1e-5)
        assert w.end - w.start == pytest.approx(49 / 100.0)


def test_hop_and_size_in_points_and_same_result_for_any_batching() -> None:
    t = np.arange(1000) / 50.0
    v = np.sin(t)
    cfg = WindowConfig(rate_hz=50, size=64, hop=16, max_gap_s=1.0)
    whole = _windows(_state(cfg).on_batch(_samples(t, v)))
    state = _state(cfg)
    pieces: list[Window] = []
    for i in range(0, 1000, 7):
        pieces += _windows(state.on_batch(_samples(t[i : i + 7], v[i : i + 7])))
    assert len(whole) == (1000 - 64) // 16 + 1
    assert [w.end for w in whole] == [w.end for w in pieces]
    for a, b in zip(whole, pieces, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    assert np.diff([w.end for w in whole]) == pytest.approx(16 / 50.0)


def test_time_window_equals_count_window_on_the_grid() -> None:
    assert WindowConfig(rate_hz=500, duration_s=0.512, hop_s=0.128).points == (256, 64)


def test_gap_resets_the_window_and_is_counted() -> None:
    t = np.concatenate([np.arange(100), np.arange(150, 250)]) / 100.0  # 0.5 s silence
    stats = FlowStats()
    state = _state(WindowConfig(rate_hz=100, size=40, hop=40, max_gap_s=0.1), stats=stats)
    wins = _windows(state.on_batch(_samples(t, np.ones_like(t))))
    assert stats.gaps == 1
    assert [round(w.start, 2) for w in wins] == [0.0, 0.4, 1.5, 1.9]  # no window spans the gap


def test_late_and_duplicate_samples_become_dead_letters() -> None:
    stats = FlowStats()
    state = _state(WindowConfig(rate_hz=10, size=4, hop=4, max_gap_s=1.0), stats=stats)
    samples = _samples(np.array([0.0, 0.1, 0.1, 0.05, 0.2]), np.zeros(5))
    out = state.on_batch(samples)
    dead = [d for d in out if isinstance(d, DeadLetter)]
    assert len(dead) == 2
    assert all("late sample" in d.reason and d.step_id == "win" for d in dead)
    assert stats.late == 2


def test_sensor_bound_sends_extra_sensors_to_dead_letters() -> None:
    cfg = WindowConfig(rate_hz=10, size=4, hop=4, max_sensors=2)
    admitted = SensorAdmission(cfg.max_sensors)
    for name in ("a", "b"):
        assert not any(
            isinstance(x, DeadLetter)
            for x in _state(cfg, admitted).on_batch(_samples(np.array([0.0]), np.zeros(1), name))
        )
    out = _state(cfg, admitted).on_batch(_samples(np.array([0.0]), np.zeros(1), "c"))
    assert isinstance(out[0], DeadLetter) and "max_sensors=2" in out[0].reason


def test_memory_per_sensor_is_bounded_by_the_window() -> None:
    state = _state(WindowConfig(rate_hz=1000, size=128, hop=32, max_gap_s=1.0))
    t = np.arange(20_000) / 1000.0
    state.on_batch(_samples(t, np.sin(t)))
    assert state._buf.nbytes == 128 * 4


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"rate_hz": 100, "size": 0}, "size", "greater than 0"),
        ({"rate_hz": 100, "size": 10, "hop": 20}, "hop", "got 20: must be between 1 and the window size 10"),
        ({"rate_hz": 100}, "size", "got None: give either size"),
        ({"rate_hz": -1, "size": 10}, "rate_hz", "greater than 0"),
        ({"rate_hz": 100, "size": 10, "max_gap_s": 0.001}, "max_gap_s", "shorter than one sample period"),
    ],
)
def test_bad_settings_name_the_step_and_field(settings: dict[str, float], field: str | None, message: str) -> None:
    import edgeflow.operators as eo
    from edgeflow import Flow

    s = eo.replay("samples", Flow("bad"), "examples/data/pump_vibration.csv")
    with pytest.raises(FlowValidationError, match=message) as info:
        eo.window("win", s, **settings)  # type: ignore[arg-type]
    assert info.value.step_id == "win"
    assert str(info.value).startswith("step 'win'")
    assert info.value.field == field
    assert f"field {field!r}" in str(info.value)


def test_window_latency_starts_at_the_sample_that_completed_it() -> None:
    from edgeflow.records import SampleBlock

    t = np.arange(12) / 10.0
    block = SampleBlock("s", t, np.zeros((12, 1)), np.full(12, 10), 1_000 + 11, np.arange(12) + 1_000)
    wins = _windows(_state(WindowConfig(rate_hz=10, size=4, hop=4, max_gap_s=1.0)).on_batch([block]))
    assert [w.end for w in wins] == pytest.approx([0.3, 0.7, 1.1])
    assert [w.t_in for w in wins] == [1_003, 1_007, 1_011]  # not the batch's newest (1_011) for all


def test_default_max_gap_follows_the_rate_and_keeps_the_former_default_at_high_rates() -> None:
    assert WindowConfig(rate_hz=500, size=256).max_gap_s == 0.1  # the shipped 500 Hz flows are unchanged
    assert WindowConfig(rate_hz=1 / 300, size=12).max_gap_s == pytest.approx(1500.0)  # five 5-minute periods
    assert WindowConfig(rate_hz=1 / 300, size=12, max_gap_s=None).max_gap_s == pytest.approx(1500.0)
    assert WindowConfig(rate_hz=1 / 300, size=12, max_gap_s=4000).max_gap_s == 4000


def _every(seconds: float, n: int, jitter: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(3)
    return 1.7e9 + np.arange(n) * seconds + rng.uniform(-jitter, jitter, n)


def test_a_five_minute_sensor_needs_only_its_rate(recwarn: pytest.WarningsRecorder) -> None:
    stats = FlowStats()
    t = _every(300.0, 500, jitter=20.0)
    wins = _windows(_state(WindowConfig(rate_hz=1 / 300, size=12, hop=3), stats=stats).on_batch(_samples(t, t * 0)))
    assert len(wins) == (500 - 12) // 3 + 1 and stats.gaps == 0
    assert not [w for w in recwarn if issubclass(w.category, SamplingWarning)] and not stats.counts


def test_an_hourly_sensor_under_five_minute_settings_is_reported_not_silently_empty() -> None:
    stats = FlowStats()
    t = _every(3600.0, 200)
    state = _state(WindowConfig(rate_hz=1 / 300, size=12, hop=3), stats=stats)
    with pytest.warns(SamplingWarning, match=r"sensor 's' sends a sample every 3600 s .* no window fills"):
        out = state.on_batch(_samples(t, np.zeros(200)))
    assert _windows(out) == [] and stats.gaps == 199
    assert stats.counts == {"window.sparse_sensors": 1}
    assert "step 'win': sensor 's' sends a sample every 3600 s" in stats.problems[0]


def test_heavy_upsampling_is_reported_once_per_sensor() -> None:
    stats = FlowStats()
    t = _every(3600.0, 100)
    state = _state(WindowConfig(rate_hz=1 / 300, size=12, hop=12, max_gap_s=7200), stats=stats)
    with pytest.warns(
        SamplingWarning, match=r"onto a point every 300 s makes 12 grid points of each. Hint: set rate_hz near 1/3600"
    ):
        for i in range(0, 100, 10):  # batching does not repeat the warning
            state.on_batch(_samples(t[i : i + 10], np.zeros(10)))
    assert stats.counts == {"window.upsampled_sensors": 1} and stats.problems == []


def test_a_sensor_with_few_samples_is_checked_at_the_end_of_input() -> None:
    stats = FlowStats()
    state = _state(WindowConfig(rate_hz=1 / 300, size=12, hop=3), stats=stats)
    state.on_batch(_samples(_every(3600.0, 5), np.zeros(5)))
    resumed = SensorWindows("win", state._cfg, 1, SensorAdmission(10), stats, resume=state.snapshot())
    with pytest.warns(SamplingWarning):
        resumed.on_eof()
    assert stats.counts["window.sparse_sensors"] == 1


def test_late_sample_reasons_give_iso_times_not_numpy_reprs() -> None:
    state = _state(WindowConfig(rate_hz=1 / 300, size=4, hop=4))
    out = state.on_batch(_samples(np.array([1389063300.0, 1389060000.0]), np.zeros(2)))
    (dead,) = [d for d in out if isinstance(d, DeadLetter)]
    assert dead.reason == (
        "late sample: ts 2014-01-07T02:00:00+00:00 is not after the sensor's newest 2014-01-07T02:55:00+00:00"
    )


def test_values_a_float32_window_cannot_hold_are_dead_letters() -> None:
    state = _state(WindowConfig(rate_hz=10, size=4, hop=4, max_gap_s=1.0))
    values = np.array([0.0, 1.0, 1e308, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    out = state.on_batch(_samples(np.arange(9) / 10.0, values))
    (dead,) = [d for d in out if isinstance(d, DeadLetter)]
    assert dead.reason.startswith("value [1e+308] at 1970-01-01T00:00:00.200000+00:00 does not fit a float32 window")
    wins = _windows(out)
    assert [w.data[0].tolist() for w in wins] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]  # bridged, finite
