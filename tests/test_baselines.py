"""Detectors that follow drift and seasons without learning the fault: robust, seasonal and River baselines."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError
from edgeflow.compiler import compile_flow
from edgeflow.metrics import FlowStats
from edgeflow.operators.baselines import BaselineState, RobustConfig, SeasonalConfig
from edgeflow.operators.detect import DetectorConfig, ZScoreState
from edgeflow.operators.river_anomaly import RiverConfig, RiverState
from edgeflow.records import DeadLetter, Scored, Window
from edgeflow.testing import run_capture, write_csv_recording

MONDAY = datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()
STEP = 1800.0  # one window every 30 minutes


def _robust(**settings: object) -> BaselineState:
    cfg = RobustConfig(**{"history": 96, "min_history": 24, **settings})  # type: ignore[arg-type]
    return BaselineState(cfg, "robust", ("mean", "std"), None, FlowStats())


def _seasonal(**settings: object) -> BaselineState:
    cfg = SeasonalConfig(**{"history": 96, "min_history": 24, **settings})  # type: ignore[arg-type]
    return BaselineState(cfg, "seasonal", ("mean", "std"), None, FlowStats())


def _cycle(t: np.ndarray) -> np.ndarray:
    """A daily cycle of 4 degrees; weekends 3 degrees cooler (reached over five hours around midnight)."""
    day = 4.0 * np.sin(2 * np.pi * (t % 86_400) / 86_400)
    days = ((t - MONDAY) / 86_400 - 4.9) % 7  # 0 at 21:36 on Friday
    weekend = np.clip(days / 0.2, 0, 1) - np.clip((days - 2) / 0.2, 0, 1)
    return 20.0 + day - 3.0 * weekend


def _run(state: BaselineState, t: np.ndarray, mean: np.ndarray, std: np.ndarray) -> list[tuple[float, bool]]:
    return [state.score(np.array([m, s]), float(ts))[:2] for ts, m, s in zip(t, mean, std, strict=True)]


def test_robust_baseline_follows_drift_and_keeps_a_long_fault_flagged() -> None:
    rng = np.random.default_rng(4)
    n = 1500
    t = MONDAY + STEP * np.arange(n)
    mean = 10.0 + 0.004 * np.arange(n) + rng.normal(0, 0.2, n)  # 6 degrees of drift
    std = 1.0 + rng.normal(0, 0.05, n)
    mean[1000:1100] += 2.5  # a fault lasting 100 windows (two days)
    state = _robust(threshold=5.0)
    flags = np.array([f for _z, f in _run(state, t, mean, std)])
    assert not flags[:1000].any() and not flags[1100:].any()
    assert flags[1000:1100].all()  # flagged windows are never learned: the fault stays a fault
    frozen = ZScoreState(DetectorConfig(warmup=24, threshold=5.0), "zscore", FlowStats())
    frozen_flags = np.array([frozen.score(np.array([m, s]))[1] for m, s in zip(mean, std, strict=True)])
    assert frozen_flags[:1000].mean() > 0.5  # a baseline frozen after warmup flags the drift


def test_flags_say_which_feature_raised_them_and_by_how_much() -> None:
    rng = np.random.default_rng(5)
    state = _robust(threshold=5.0)
    for i in range(60):
        state.score(np.array([10.0 + rng.normal(0, 0.2), 1.0 + rng.normal(0, 0.05)]), MONDAY + STEP * i)
    z, flagged, by = state.score(np.array([10.0, 0.0]), MONDAY + STEP * 60)  # a stuck sensor: no variation
    assert flagged and by is not None and list(by) == ["std"] and by["std"] < -5
    assert z == pytest.approx(-by["std"], rel=1e-3)


def test_seasonal_baseline_learns_day_and_week_shapes_that_a_robust_one_flags() -> None:
    rng = np.random.default_rng(6)
    n = 48 * 28  # four weeks
    t = MONDAY + STEP * np.arange(n)
    mean = _cycle(t) + 0.0005 * np.arange(n) + rng.normal(0, 0.15, n)
    std = 0.3 + rng.normal(0, 0.02, n)
    fault = slice(48 * 20 + 10, 48 * 20 + 20)  # five hours 1.5 degrees too warm, well inside the cycle's range
    mean[fault] += 1.5
    seasonal = np.array([f for _z, f in _run(_seasonal(period="week", threshold=5.0), t, mean, std)])
    robust = np.array([f for _z, f in _run(_robust(threshold=5.0), t, mean, std)])
    normal = np.ones(n, bool)
    normal[fault] = False
    normal[: 48 * 7] = False  # the seasonal one's warmup: one week
    assert seasonal[fault].all() and not seasonal[normal].any()
    assert robust[fault].mean() < 0.5  # inside the daily range: a robust baseline without seasons misses most of it


def test_seasonal_profile_follows_local_time_with_daylight_saving() -> None:
    cfg = SeasonalConfig(period="day", bins_per_day=24, tz="Europe/Berlin")
    state = BaselineState(cfg, "seasonal", ("x",), None, FlowStats())
    winter = datetime(2026, 1, 5, 6, 30, tzinfo=timezone.utc).timestamp()  # 07:30 in Berlin
    summer = datetime(2026, 7, 6, 5, 30, tzinfo=timezone.utc).timestamp()  # 07:30 in Berlin too
    assert state._place(winter) == state._place(summer) == (7, 0.0)


def test_persistence_ignores_flicker_and_keeps_a_sustained_fault() -> None:
    rng = np.random.default_rng(7)
    n = 400
    t = MONDAY + STEP * np.arange(n)
    mean = 10.0 + rng.normal(0, 0.2, n)
    std = np.full(n, 1.0)
    mean[[100, 150, 151 + 3, 200]] += 4.0  # isolated spikes, never two within three windows
    mean[300:310] += 4.0
    plain = np.array([f for _z, f in _run(_robust(), t, mean, std)])
    steady = np.array([f for _z, f in _run(_robust(persistence=(2, 3)), t, mean, std)])
    assert plain[[100, 150, 154, 200]].all()
    assert not steady[:300].any() and steady[301:310].all() and not steady[310:].any()  # no tail after the fault


def test_relevel_adopts_a_maintenance_step_but_not_a_rise_or_a_stuck_sensor() -> None:
    rng = np.random.default_rng(8)
    n = 48 * 21
    t = MONDAY + STEP * np.arange(n)
    base = _cycle(t) + rng.normal(0, 0.15, n)
    std = 0.3 + rng.normal(0, 0.02, n)
    start = 48 * 12

    def flagged_after(mean: np.ndarray, sd: np.ndarray, **settings: object) -> np.ndarray:
        state = _seasonal(period="week", relevel_after=24, **settings)
        return np.array([f for _z, f in _run(state, t, mean, sd)])[start:]

    step = base.copy()
    step[start:] -= 2.5  # recalibrated during maintenance: a new normal level
    flags = flagged_after(step, std)
    assert 0 < flags.sum() <= 25 and not flags[30:].any()  # one alarm of about relevel_after windows, then quiet
    rise = base.copy()
    rise[start : start + 96] += np.linspace(0, 8, 96)  # a bearing warming up over two days
    rising = flagged_after(rise, std)
    assert rising[30:96].mean() > 0.9 and rising[80:96].all() and not rising[100:].any()
    stuck = base.copy()
    stuck[start : start + 48] = stuck[start]  # a stuck sensor for a day: the cycle goes on without it
    stuck_std = std.copy()
    stuck_std[start : start + 48] = 0.0
    assert flagged_after(stuck, stuck_std)[:48].mean() > 0.9
    noisy = std.copy()
    noisy[start : start + 96] *= 3  # noise three times stronger for two days: a constant offset of std
    assert flagged_after(base, noisy)[:96].mean() < 0.5  # adopted as a new level when any feature may shift
    kept = flagged_after(base, noisy, relevel_features=["mean"])
    assert kept[:96].mean() > 0.9 and not kept[100:].any()  # only the mean may: the noise stays a fault


@pytest.mark.parametrize("make", [_robust, lambda: _seasonal(period="week", relevel_after=10)])
def test_snapshot_resumes_the_same_baseline(make: object) -> None:
    rng = np.random.default_rng(9)
    n = 48 * 9
    t = MONDAY + STEP * np.arange(n)
    mean, std = _cycle(t) + rng.normal(0, 0.1, n), 0.3 + rng.normal(0, 0.02, n)
    a = make()  # type: ignore[operator]
    _run(a, t[:400], mean[:400], std[:400])
    b = BaselineState(
        a._cfg, a._model, ("mean", "std"), None, FlowStats(), resume=pickle.loads(pickle.dumps(a.snapshot()))
    )
    assert _run(a, t[400:], mean[400:], std[400:]) == _run(b, t[400:], mean[400:], std[400:])


def _window(i: int, features: list[float]) -> Window:
    end = MONDAY + STEP * i
    return Window(
        "s", end - STEP, end, np.zeros((1, 2), np.float32), 1 / 300, 6, 60, 0, np.asarray(features, np.float32)
    )


def test_non_finite_features_are_dead_letters_and_never_learned() -> None:
    state = BaselineState(
        RobustConfig(min_history=4, history=8), "robust", ("mean", "std"), None, FlowStats(), step_id="d"
    )
    out = state.on_batch([_window(i, [1.0 + 0.01 * i, 0.5]) for i in range(4)] + [_window(4, [np.inf, np.nan])])
    (letter,) = [x for x in out if isinstance(x, DeadLetter)]
    assert letter.step_id == "d" and "non-finite feature 'mean' = inf" in letter.reason
    assert "2026-01-05T02:00:00+00:00" in letter.reason and state._count == 4
    (ok,) = state.on_batch([_window(5, [1.05, 0.5])])
    assert isinstance(ok, Scored) and not ok.anomaly


def test_features_choice_is_checked_before_data_flows() -> None:
    flow = Flow("pick")
    s = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
    f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms", "kurtosis"])
    eo.output("out", eo.seasonal_detector("detect", f, features=["rms", "kurtsis"]), eo.stdout())
    with pytest.raises(
        FlowValidationError, match=r"field 'features' got \['rms', 'kurtsis'\].*did you mean 'kurtosis'"
    ):
        compile_flow(flow)
    with pytest.raises(FlowValidationError, match=r"step 'x': field 'relevel_after' got 0"):
        eo.robust_detector("x", f, relevel_after=0)
    with pytest.raises(FlowValidationError, match=r"step 'x': field 'tz' got 'Mars/Olympus'"):
        eo.seasonal_detector("x", f, tz="Mars/Olympus")
    with pytest.raises(FlowValidationError, match=r"step 'x': field 'min_history' got 500"):
        eo.robust_detector("x", f, history=100, min_history=500)


def _recording(path: Path, *, huge: bool = False, stuck: bool = False) -> Path:
    """One sensor at 10 Hz for 200 s with a fault at 150-160 s; optionally a 1e308 sample at 20 s (in every
    detector's warmup) or a stuck stretch at 60-65 s."""
    rng = np.random.default_rng(10)
    t = np.arange(2000) / 10.0
    x = np.sin(2 * np.pi * 1.3 * t) + rng.normal(0, 0.1, t.size)
    x[(t >= 150) & (t < 160)] *= 6.0
    if huge:
        x[200] = 1e308
    if stuck:
        x[(t >= 60) & (t < 65)] = 0.5
    stamps = [datetime.fromtimestamp(MONDAY + s, timezone.utc).isoformat() for s in t]
    return write_csv_recording(path, [(ts, "pump-9", repr(float(v))) for ts, v in zip(stamps, x, strict=True)])


DETECTORS = [
    lambda f: eo.zscore_detector("detect", f, threshold=6.0, warmup=30),
    lambda f: eo.ewma_detector("detect", f, threshold=6.0, warmup=30),
    lambda f: eo.robust_detector("detect", f, threshold=6.0, min_history=30),
]


def _flagged_only_in(scored: list[dict], *spans: tuple[float, float]) -> bool:
    """Whether the fault (150-160 s) is flagged, and nothing outside *spans* (seconds from the start)."""
    ends = [datetime.fromisoformat(w["end"]).timestamp() - MONDAY for w in scored if w["anomaly"]]
    return any(150 < e < 162 for e in ends) and all(any(lo < e < hi for lo, hi in spans) for e in ends)


@pytest.mark.parametrize("detector", DETECTORS)
def test_one_huge_sample_does_not_blind_the_sensor(tmp_path: Path, detector: object) -> None:
    flow = Flow("huge")
    s = eo.replay("samples", flow, _recording(tmp_path / "huge.csv", huge=True))
    f = eo.features("feat", eo.window("win", s, rate_hz=10, size=20, hop=10), ["mean", "std", "max"])
    eo.output("out", detector(f), eo.stdout())  # type: ignore[operator]
    result = run_capture(flow)
    (letter,) = result.dead_letters
    assert letter["step"] == "win" and letter["reason"].startswith("value [1e+308] at 2026-01-05T00:00:20+00:00")
    assert _flagged_only_in(result.only(), (150, 162))
    assert all(np.isfinite(w["score"]) for w in result.only())


@eo.window_feature(needs=["std"], adds=["smoothness"])
def _smoothness(std: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 1.0 / std  # infinite on a flat window


@pytest.mark.parametrize("detector", DETECTORS)
def test_non_finite_features_never_enter_a_baseline(tmp_path: Path, detector: object) -> None:
    flow = Flow("flat")
    s = eo.replay("samples", flow, _recording(tmp_path / "flat.csv", stuck=True))
    w = eo.window("win", s, rate_hz=10, size=20, hop=10)
    eo.output("out", detector(_smoothness("smooth", eo.features("feat", w, ["mean", "std"]))), eo.stdout())  # type: ignore[operator]
    result = run_capture(flow)
    assert result.dead_letters and all(
        d["step"] == "detect" and "non-finite feature 'smoothness' = inf in the window ending" in d["reason"]
        for d in result.dead_letters
    )
    assert _flagged_only_in(result.only(), (150, 162), (60, 67))  # the flat stretch is odd too, rightly


LIMITS = {"mean": (8.0, 12.0), "std": (0.0, 3.0)}


def _river_windows(n: int, fault: slice) -> list[Window]:
    rng = np.random.default_rng(11)
    feats = np.column_stack([10 + rng.normal(0, 0.2, n), 1 + rng.normal(0, 0.05, n)])
    feats[fault, 1] += 1.0
    return [_window(i, list(row)) for i, row in enumerate(feats)]


def test_river_half_space_trees_flag_a_fault_and_learn_only_normal_windows() -> None:
    pytest.importorskip("river")  # the optional `river` extra
    from river import anomaly

    model = anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=100, seed=3, limits=LIMITS)
    cfg = RiverConfig(threshold=0.9, warmup=100, persistence=(2, 3))
    state = RiverState(cfg, model, ("mean", "std"), None, FlowStats())
    out = state.on_batch(_river_windows(600, slice(400, 440)))
    flags = np.array([s.anomaly for s in out])
    assert flags[402:440].all() and flags[:400].mean() < 0.02 and not flags[445:].any()
    assert out[420].raised_by is not None and list(out[420].raised_by) == ["std"]
    assert out[420].model == "river:HalfSpaceTrees"
    assert state.model.counter != model.counter  # each sensor learns its own copy of the model given


def test_river_filters_give_the_verdict_and_bad_models_are_refused() -> None:
    pytest.importorskip("river")  # the optional `river` extra
    from river import anomaly

    q = anomaly.QuantileFilter(anomaly.HalfSpaceTrees(window_size=100, seed=3, limits=LIMITS), q=0.99)
    state = RiverState(RiverConfig(features=("std",), warmup=100), q, ("mean", "std"), (1,), FlowStats())
    out = state.on_batch(_river_windows(400, slice(300, 330)))
    assert np.mean([s.anomaly for s in out[300:330]]) > 0.9
    f = eo.features(
        "feat",
        eo.window("win", eo.replay("s", Flow("r"), "examples/data/pump_vibration.csv"), rate_hz=500, size=256),
        ["rms"],
    )
    with pytest.raises(FlowValidationError, match=r"field 'threshold' got None: HalfSpaceTrees gives scores"):
        eo.river_detector("detect", f, anomaly.HalfSpaceTrees())
    with pytest.raises(FlowValidationError, match=r"field 'model' got 'dict': is not a River anomaly detector"):
        eo.river_detector("detect", f, {}, threshold=1.0)


def test_river_missing_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['river'] = None\n"  # what Python does when a package is not installed
        "import edgeflow.operators as eo\n"
        "from edgeflow import Flow\n"
        "s = eo.replay('s', Flow('r'), 'examples/data/pump_vibration.csv')\n"
        "f = eo.features('f', eo.window('w', s, rate_hz=500, size=256), ['rms'])\n"
        "eo.river_detector('detect', f, object(), threshold=1.0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "ImportError: step 'detect': river_detector needs River; install it with: pip install edgeflow[river]" in (
        done.stderr
    )
