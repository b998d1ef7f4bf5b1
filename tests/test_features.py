"""Every feature against a numpy/scipy reference, on random windows (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import signal, stats

from edgeflow.operators.features import FeatureExtractor, parse_features

RATE = 500.0
finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)
windows = st.integers(8, 300).flatmap(lambda n: arrays(np.float32, (1, n), elements=finite))


def _one(name: str, x: np.ndarray, **kw: object) -> float:
    fx = FeatureExtractor((name,), channels=("a",), size=x.shape[1], rate_hz=RATE, **kw)  # type: ignore[arg-type]
    return float(fx(x)[0])


REFERENCES = {
    "mean": np.mean,
    "std": np.std,
    "min": np.min,
    "max": np.max,
    "rms": lambda v: np.sqrt(np.mean(v**2)),
    "ptp": np.ptp,
    "p95": lambda v: np.percentile(v, 95),
    "p5": lambda v: np.percentile(v, 5),
    "p50": np.median,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@given(x=windows)
@settings(max_examples=60, deadline=None)
def test_simple_features_match_numpy(name: str, x: np.ndarray) -> None:
    ref = float(REFERENCES[name](x[0].astype(np.float64)))
    assert _one(name, x) == pytest.approx(ref, rel=1e-5, abs=1e-4)


@given(x=windows)
@settings(max_examples=80, deadline=None)
def test_skew_and_kurtosis_match_scipy(x: np.ndarray) -> None:
    v = x[0].astype(np.float64)
    if np.std(v) < 1e-3 * (1 + np.abs(v).max()):
        return  # scipy is itself unstable on (near-)constant data; see test_constant_window below
    assert _one("skew", x) == pytest.approx(stats.skew(v), rel=1e-3, abs=1e-3)
    assert _one("kurtosis", x) == pytest.approx(stats.kurtosis(v), rel=1e-3, abs=1e-3)


def test_constant_window_has_defined_moments() -> None:
    x = np.full((1, 64), 3.0, dtype=np.float32)
    fx = FeatureExtractor(("std", "skew", "kurtosis"), channels=("a",), size=64, rate_hz=RATE)
    assert fx(x).tolist() == [0.0, 0.0, -3.0]


@given(
    x=st.integers(16, 512).flatmap(lambda n: arrays(np.float32, (1, n), elements=finite)),
    window=st.sampled_from(["hann", "hamming", "boxcar", "blackman"]),
)
@settings(max_examples=60, deadline=None)
def test_fft_bands_match_scipy_periodogram(x: np.ndarray, window: str) -> None:
    bands = ((0, 40), (40, 130), (130, 250))
    spec = "fft_bands(" + ",".join(f"{lo}-{hi}" for lo, hi in bands) + ")"
    fx = FeatureExtractor((spec,), channels=("a",), size=x.shape[1], rate_hz=RATE, fft_window=window)
    got = fx(x).astype(np.float64)
    v = x[0].astype(np.float64)
    freqs, pxx = signal.periodogram(v, fs=RATE, window=window, detrend="constant", scaling="density")
    df = freqs[1] - freqs[0]
    for (lo, hi), value in zip(bands, got, strict=True):
        mask = (freqs >= lo) & ((freqs < hi) | ((freqs == hi) & (hi >= RATE / 2)))
        assert value == pytest.approx(np.sqrt(pxx[mask].sum() * df), rel=1e-4, abs=1e-4)


def test_band_rms_of_a_pure_tone() -> None:
    n = 500
    t = np.arange(n) / RATE
    x = (2.0 * np.sin(2 * np.pi * 100.0 * t))[None, :].astype(np.float32)
    fx = FeatureExtractor(("fft_bands(0-50,50-150,150-250)",), channels=("a",), size=n, rate_hz=RATE)
    low, mid, high = fx(x)
    assert mid == pytest.approx(2.0 / np.sqrt(2), rel=0.02)  # RMS of a 2 g sine
    assert low < 0.05 and high < 0.05


def test_vector_layout_names_and_dtype_for_several_channels() -> None:
    fx = FeatureExtractor(("mean", "p90", "fft_bands(0-100)"), channels=("x", "y"), size=32, rate_hz=RATE)
    assert fx.names == ("x.mean", "x.p90", "x.band_0_100", "y.mean", "y.p90", "y.band_0_100")
    x = np.stack([np.zeros(32), np.ones(32)]).astype(np.float32)
    out = fx(x)
    assert out.dtype == np.float32 and out.shape == (6,)
    assert out[0] == 0.0 and out[3] == 1.0


def test_normalisation_uses_stored_statistics() -> None:
    x = np.arange(10, dtype=np.float32)[None, :]
    norm = (np.array([4.5, 9.0]), np.array([2.0, 3.0]))
    fx = FeatureExtractor(("mean", "max"), channels=("a",), size=10, rate_hz=RATE, normalize=norm)
    assert fx(x).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("median",), "unknown feature 'median'"),
        (("fft_bands(50-10)",), "must be LO-HI with 0 <= LO < HI"),
        (("fft_bands(a-b)",), "is not LO-HI in Hz"),
    ],
)
def test_bad_feature_names_are_explained(names: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_features(names)


def test_band_above_nyquist_is_refused() -> None:
    with pytest.raises(ValueError, match="above the Nyquist frequency 250 Hz"):
        FeatureExtractor(("fft_bands(300-400)",), channels=("a",), size=64, rate_hz=RATE)


@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", "boxcar", "flattop"])
@pytest.mark.parametrize("size", [8, 255, 256])
def test_taper_matches_scipy_get_window(name: str, size: int) -> None:
    from edgeflow.operators.features import taper

    np.testing.assert_allclose(taper(name, size), signal.get_window(name, size), atol=1e-12)


def test_many_windows_at_once_equal_one_at_a_time() -> None:
    names = ("mean", "std", "skew", "kurtosis", "p5", "p95", "ptp", "fft_bands(0-50,50-250)")
    fx = FeatureExtractor(names, channels=("x", "y"), size=128, rate_hz=RATE)
    data = np.random.default_rng(5).normal(size=(6, 2, 128)).astype(np.float32)
    np.testing.assert_allclose(fx.many(data), np.stack([fx(d) for d in data]), rtol=1e-6, atol=1e-6)


@given(x=windows, rate=st.sampled_from([RATE, 1.0, 1 / 300]))
@settings(max_examples=60, deadline=None)
def test_slope_matches_scipy_linregress(x: np.ndarray, rate: float) -> None:
    v = x[0].astype(np.float64)
    t = np.arange(v.size) / rate
    fx = FeatureExtractor(("slope",), channels=("a",), size=v.size, rate_hz=rate)
    ref = stats.linregress(t, v).slope
    scale = (np.abs(v).max() + 1) * rate / v.size  # the slope's size where float32 rounding matters
    assert float(fx(x)[0]) == pytest.approx(ref, rel=1e-4, abs=1e-5 * scale)


@given(x=windows)
@settings(max_examples=60, deadline=None)
def test_mean_shift_is_the_difference_of_the_halves_means(x: np.ndarray) -> None:
    v = x[0].astype(np.float64)
    half = v.size // 2
    assert _one("mean_shift", x) == pytest.approx(v[-half:].mean() - v[:half].mean(), rel=1e-5, abs=1e-4)


def test_trend_and_level_shift_features_on_known_signals() -> None:
    rate = 1 / 300  # one sample every 5 minutes
    t = np.arange(24) / rate
    fx = FeatureExtractor(("slope", "mean_shift"), channels=("a",), size=24, rate_hz=rate)
    ramp = (2.0 + 1e-3 * t)[None, :].astype(np.float32)  # 1e-3 per second
    step = np.where(np.arange(24) < 12, 10.0, 13.0)[None, :].astype(np.float32)
    assert fx(ramp).tolist() == pytest.approx([1e-3, 1e-3 * 12 / rate], rel=1e-5)
    assert fx(step)[1] == pytest.approx(3.0)
    many = fx.many(np.stack([ramp, step]))
    np.testing.assert_allclose(many, np.stack([fx(ramp), fx(step)]), rtol=1e-6)
