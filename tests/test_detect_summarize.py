"""Detectors and the summarizer on synthetic scored windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from edgeflow.metrics import FlowStats
from edgeflow.operators.detect import DetectorConfig, ZScoreState
from edgeflow.operators.summarize import IntervalSummary, SummaryConfig, wilson_interval
from edgeflow.records import Scored, Window
from edgeflow.student_t import t975


def _window(end: float, features: list[float], n_raw: int = 10) -> Window:
    return Window("s", end - 1, end, np.zeros((1, 4), np.float32), 4.0, n_raw, 100, 1, np.asarray(features, np.float32))


def test_zscore_flags_outliers_after_warmup_only() -> None:
    rng = np.random.default_rng(0)
    state = ZScoreState(DetectorConfig(warmup=200, threshold=6.0), "zscore", FlowStats())
    normal = rng.normal(10.0, 1.0, size=(400, 3))
    flags = [state.score(x)[1] for x in normal]
    assert not any(flags)
    z, flagged = state.score(np.array([10.0, 10.0, 19.0]))
    assert flagged and z == pytest.approx(9.0, rel=0.15)


def test_ewma_follows_slow_drift_that_a_frozen_baseline_flags() -> None:
    rng = np.random.default_rng(1)
    frozen = ZScoreState(DetectorConfig(warmup=50, threshold=5.0), "zscore", FlowStats())
    ewma = ZScoreState(DetectorConfig(warmup=50, threshold=5.0, alpha=0.05), "ewma", FlowStats())
    drift = [np.array([10.0 + 0.02 * i + rng.normal(0, 0.5)]) for i in range(1000)]
    frozen_flags = sum(frozen.score(x)[1] for x in drift)
    ewma_flags = sum(ewma.score(x)[1] for x in drift)
    assert frozen_flags > 500 and ewma_flags == 0
    assert ewma.score(np.array([10.0 + 0.02 * 1000 + 10.0]))[1]  # a real jump is still caught


def test_wilson_interval_matches_known_values() -> None:
    lo, hi = wilson_interval(10, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.0552, 0.1744)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summaries_close_on_event_time_and_carry_stats() -> None:
    summary = IntervalSummary(SummaryConfig(every_s=10), ("a", "b"))
    items = [Scored(_window(t, [t, -t]), score=float(t % 3), anomaly=t == 14, model="m@1") for t in (1, 4, 8, 11, 14)]
    out = summary.on_batch(items[:4])
    assert len(out) == 1  # the window ending at 11 s closed [0, 10)
    first = out[0].record
    assert first["windows"] == 3 and first["samples"] == 30 and first["raw_bytes"] == 300
    assert first["features"] == {"a": [1.0, 4.333, 8.0], "b": [-8.0, -4.333, -1.0]}
    scores = np.array([1.0, 1.0, 2.0])
    half = sps.t.ppf(0.975, 2) * scores.std(ddof=1) / np.sqrt(3)
    assert first["score"]["ci95"] == [
        pytest.approx(scores.mean() - half, rel=1e-3),
        pytest.approx(scores.mean() + half, rel=1e-3),
    ]
    assert not first["anomaly"] and first["model"] == "m@1"
    (last,) = summary.on_batch(items[4:]) + summary.on_eof()
    assert last.record["anomaly"] and last.record["anomalous_windows"] == 1
    assert last.record["interval"] == ["1970-01-01T00:00:10+00:00", "1970-01-01T00:00:20+00:00"]


def test_ewma_flags_an_outlier_right_after_warmup() -> None:
    rng = np.random.default_rng(2)
    for alpha in (0.0, 0.02):
        state = ZScoreState(DetectorConfig(warmup=50, threshold=5.0, alpha=alpha), "d", FlowStats())
        for x in rng.normal(0.0, 1.0, size=(50, 2)):
            state.score(x)
        z, flagged = state.score(np.array([10.0, 0.0]))
        assert flagged and z > 7, (alpha, z)


def test_summaries_carry_the_features_that_raised_their_flags() -> None:
    summary = IntervalSummary(SummaryConfig(every_s=10), ("mean", "std"))
    items = [
        Scored(_window(1, [1, 2]), 7.0, True, "robust", {"std": 7.0}),
        Scored(_window(2, [1, 2]), 9.5, True, "robust", {"mean": -9.5, "std": 6.1}),
        Scored(_window(3, [1, 2]), 1.0, False, "robust"),
    ]
    (out,) = summary.on_batch(items) + summary.on_eof()
    assert out.record["raised_by"] == {"mean": -9.5, "std": 7.0}
    quiet = IntervalSummary(SummaryConfig(every_s=10), ("mean", "std"))
    (calm,) = quiet.on_batch(items[2:]) + quiet.on_eof()
    assert "raised_by" not in calm.record


def test_an_interval_in_which_the_model_switched_names_both_models_in_order() -> None:
    summary = IntervalSummary(SummaryConfig(every_s=10), ("rms",))
    old, new = "pump_ae@1.0.0+5c8ff791/int8", "pump_ae@1.1.0+0a1b2c3d/int8"
    items = [Scored(_window(t, [1.0]), 0.1, False, old if t < 4 else new) for t in (1, 2, 3, 4, 5)]
    items.append(Scored(_window(11, [1.0]), 0.1, False, new))  # the next interval closes this one
    (closed,) = summary.on_batch(items)
    (next_one,) = summary.on_eof()
    assert closed.record["model"] == [old, new]
    assert next_one.record["model"] == new
    resumed = IntervalSummary(SummaryConfig(every_s=10), ("rms",), summary.snapshot())
    assert resumed.on_eof() == []


def test_a_snapshot_from_before_the_model_list_resumes_with_its_model() -> None:
    summary = IntervalSummary(SummaryConfig(every_s=10), ("rms",))
    summary.on_batch([Scored(_window(t, [1.0]), 0.1, False, "m@1") for t in (1, 2)])
    old = {**summary.snapshot(), "_model": "m@1"}
    del old["_models"]
    (closed,) = IntervalSummary(SummaryConfig(every_s=10), ("rms",), old).on_eof()
    assert closed.record["model"] == "m@1" and closed.record["windows"] == 2


def test_a_frozen_baseline_scores_a_batch_at_once_exactly_as_window_by_window() -> None:
    rng = np.random.default_rng(5)
    cfg = DetectorConfig(warmup=20, threshold=4.0, persistence=(2, 3))
    names = ("a", "b", "c")
    batched, single = (ZScoreState(cfg, "z", FlowStats(), names=names) for _ in range(2))
    warm = [_window(t, rng.normal(0, 1, 3).tolist()) for t in range(20)]
    batched.on_batch(warm)
    single.on_batch(warm)
    later = [_window(20 + t, (rng.normal(0, 1, 3) * (8 if t % 5 < 2 else 1)).tolist()) for t in range(40)]
    later[7] = _window(27, [1.0, float("nan"), 0.0])
    fast = batched.on_batch(later)  # past warmup: one numpy pass
    slow = [x for w in later for x in single.on_batch([w])]

    def seen(out: list) -> list:
        return [(type(x).__name__, *(getattr(x, k, None) for k in ("score", "anomaly", "raised_by"))) for x in out]

    assert seen(fast) == seen(slow)  # one at a time takes Python floats: the same bits
    assert sum(getattr(x, "anomaly", False) for x in fast) > 0
    np.testing.assert_array_equal(batched.last_z, single.last_z)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1e6, allow_subnormal=False), min_size=2, max_size=300))
def test_summary_score_mean_and_interval_are_numpy_s_to_the_digit(scores: list[float]) -> None:
    summary = IntervalSummary(SummaryConfig(every_s=1e6, digits=9), ("rms",))
    summary.on_batch([Scored(_window(1.0 + i * 1e-3, [1.0]), s, False, "z") for i, s in enumerate(scores)])
    (closed,) = summary.on_eof()
    a = np.asarray(scores)
    half = float(t975(len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    expected = [float(f"{x:.9g}") for x in (a.mean(), a.mean() - half, a.mean() + half, a.max())]
    got = closed.record["score"]
    assert [got["mean"], *got["ci95"], got["max"]] == expected


def test_a_nan_score_makes_the_summary_s_max_nan_wherever_it_is() -> None:
    # numpy's max propagates NaN; the summary's max must not depend on where in the interval the NaN came
    for scores in ([1.0, float("nan"), 2.0], [float("nan"), 1.0], [1.0, 2.0, float("nan")]):
        summary = IntervalSummary(SummaryConfig(every_s=1e6), ("rms",))
        summary.on_batch([Scored(_window(1.0 + i * 1e-3, [1.0]), s, False, "z") for i, s in enumerate(scores)])
        (closed,) = summary.on_eof()
        assert np.isnan(closed.record["score"]["max"]), scores
