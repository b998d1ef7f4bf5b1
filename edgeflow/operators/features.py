"""Feature vectors from windows: statistics, percentiles and FFT band magnitudes.

Feature names (a list of strings, validated before data flows):

* ``mean``, ``std``, ``min``, ``max``, ``rms``, ``ptp``, ``skew``, ``kurtosis``
  (population moments; kurtosis is Fisher's, 0 for a normal distribution);
* ``slope``: the least-squares trend of the window in units per second (as
  ``scipy.stats.linregress`` on the grid times); ``mean_shift``: the mean of the
  window's second half minus the mean of its first half (a level shift; the
  middle point of an odd window is in neither half);
* ``pNN`` or ``pNN.N``: a percentile, e.g. ``p95``;
* ``fft_bands(LO-HI,...)``: the RMS amplitude of the signal in each band of Hz,
  from a one-sided periodogram of the mean-removed, windowed signal (the same
  quantity as ``sqrt(sum(scipy.signal.periodogram(...)[1][band]) * df)``).

The output is a float32 vector with one named field per channel and feature,
optionally normalised with stored statistics (``(x - mean) / std``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeflow.errors import FlowValidationError
from edgeflow.graph import MapLogic, Schema, Step, StepContext, Stream, build_config
from edgeflow.records import Window

__all__ = ["FeatureExtractor", "FeaturesConfig", "features", "parse_features", "taper"]

_SIMPLE = ("mean", "std", "min", "max", "rms", "ptp", "skew", "kurtosis", "slope", "mean_shift")
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")
_BANDS = re.compile(r"^fft_bands\((.+)\)$")


class FeaturesConfig(BaseModel):
    """Settings of :func:`features`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: tuple[str, ...] = Field(min_length=1)
    fft_window: str = "hann"
    """Window function for the FFT bands (any name ``scipy.signal.get_window`` knows)."""
    normalize: Path | None = None
    """JSON file with ``names``, ``mean`` and ``std`` lists, e.g. from a model manifest."""


@dataclass(frozen=True, slots=True)
class _Band:
    lo: float
    hi: float

    @property
    def name(self) -> str:
        return f"band_{self.lo:g}_{self.hi:g}"


_COSINE_TERMS = {"hann": (0.5, 0.5), "hamming": (0.54, 0.46), "blackman": (0.42, 0.5, 0.08)}


def taper(name: str, size: int) -> np.ndarray:
    """Return the periodic (DFT-even) window *name* of *size* points, as ``scipy.signal.get_window`` does.

    Common windows are computed with numpy, so the gateway need not load ``scipy.signal`` (~50 MB);
    any other name is passed to scipy.

    >>> taper("hann", 4).round(12).tolist()
    [0.0, 0.5, 1.0, 0.5]
    """
    if name in ("boxcar", "rectangular", "ones"):
        return np.ones(size)
    if name in _COSINE_TERMS:
        phase = 2 * np.pi * np.arange(size) / size
        return sum(((-1) ** k) * a * np.cos(k * phase) for k, a in enumerate(_COSINE_TERMS[name]))  # type: ignore[return-value]
    from scipy.signal import get_window

    return np.asarray(get_window(name, size), dtype=np.float64)


def parse_features(names: tuple[str, ...]) -> list[str | float | _Band]:
    """Parse feature names into simple names, percentiles (floats) and bands.

    >>> parse_features(("mean", "p95", "fft_bands(0-50,50-200)"))
    ['mean', 95.0, _Band(lo=0.0, hi=50.0), _Band(lo=50.0, hi=200.0)]
    """
    parsed: list[str | float | _Band] = []
    for name in names:
        if name in _SIMPLE:
            parsed.append(name)
        elif m := _PERCENTILE.match(name):
            parsed.append(float(m.group(1)))
        elif m := _BANDS.match(name.replace(" ", "")):
            for part in m.group(1).split(","):
                lo, sep, hi = part.partition("-")
                try:
                    band = _Band(float(lo), float(hi))
                except ValueError:
                    msg = f"band {part!r} is not LO-HI in Hz"
                    raise ValueError(msg) from None
                if not sep or band.lo < 0 or band.hi <= band.lo:
                    msg = f"band {part!r} must be LO-HI with 0 <= LO < HI"
                    raise ValueError(msg)
                parsed.append(band)
        else:
            msg = f"unknown feature {name!r}; known: {', '.join(_SIMPLE)}, pNN, fft_bands(LO-HI,...)"
            raise ValueError(msg)
    return parsed


class FeatureExtractor:
    """Computes a fixed-length float32 feature vector from a ``(channels, size)`` window.

    >>> fx = FeatureExtractor(("mean", "max"), channels=("x",), size=4, rate_hz=4.0)
    >>> fx.names
    ('mean', 'max')
    >>> fx(np.array([[1.0, 2.0, 3.0, 6.0]], dtype=np.float32)).tolist()
    [3.0, 6.0]
    """

    def __init__(
        self,
        names: tuple[str, ...],
        *,
        channels: tuple[str, ...],
        size: int,
        rate_hz: float,
        fft_window: str = "hann",
        normalize: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self._parsed = parse_features(names)
        per_channel = [p if isinstance(p, str) else p.name if isinstance(p, _Band) else f"p{p:g}" for p in self._parsed]
        self.names = tuple(f"{c}.{n}" if len(channels) > 1 else n for c in channels for n in per_channel)
        self._percentiles = [p for p in self._parsed if isinstance(p, float)]
        self._percentile_at = _percentile_positions(size, self._percentiles)
        bands = [p for p in self._parsed if isinstance(p, _Band)]
        nyquist = rate_hz / 2
        for band in bands:
            if band.lo >= nyquist:
                msg = f"band {band.lo:g}-{band.hi:g} Hz starts above the Nyquist frequency {nyquist:g} Hz"
                raise ValueError(msg)
        self._taper = taper(fft_window, size) if bands else None
        if bands:
            freqs = np.fft.rfftfreq(size, 1.0 / rate_hz)
            self._band_masks = np.array(
                [(freqs >= b.lo) & ((freqs < b.hi) | ((freqs == b.hi) & (b.hi >= nyquist))) for b in bands]
            ).astype(np.float64)
            assert self._taper is not None
            scale = np.full(freqs.size, 2.0 / (rate_hz * float(np.sum(self._taper**2))))
            scale[0] /= 2
            if size % 2 == 0:
                scale[-1] /= 2
            self._psd_scale = scale * (rate_hz / size)
        t = np.arange(size) / rate_hz
        # least-squares slope = x @ weights: the weights sum to 0, so the window's mean drops out
        self._slope_weights = (t - t.mean()) / float(np.sum((t - t.mean()) ** 2))
        self.normalization = normalize
        self._steps = self._plan()

    def _plan(self) -> list[Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]]:
        steps: list[Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]] = []
        for p in self._parsed:
            if p == "slope":
                steps.append(self._slope)
            elif isinstance(p, str):
                steps.append(_STATS[p])
            elif isinstance(p, float):
                steps.append(partial(self._percentile, self._percentiles.index(p)))
            else:
                steps.append(partial(self._band, [b for b in self._parsed if isinstance(b, _Band)].index(p)))
        return steps

    def _slope(self, cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return x @ self._slope_weights

    def _percentile(self, idx: int, cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return self._percentile_block(cache, x)[idx]

    def _band(self, idx: int, cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        return self._band_block(cache, x)[:, idx]

    def _percentile_block(self, cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        if "pct" not in cache:
            lo, hi, frac = self._percentile_at
            ordered = _sorted(cache, x)
            below, above = ordered[:, lo], ordered[:, hi]
            cache["pct"] = (below + (above - below) * frac).T
        return cache["pct"]

    def _band_block(self, cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        if "bands" not in cache:
            assert self._taper is not None
            spectrum = np.fft.rfft((x - _mean(cache, x)[:, None]) * self._taper, axis=1)
            power = (spectrum.real**2 + spectrum.imag**2) * self._psd_scale
            cache["bands"] = np.sqrt(power @ self._band_masks.T)
        return cache["bands"]

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """Feature vector of one ``(channels, size)`` window (float32, ``len(self.names)`` long)."""
        return self.many(data[None])[0]

    def many(self, data: np.ndarray) -> np.ndarray:
        """Feature vectors of ``(windows, channels, size)`` data at once: shape ``(windows, len(self.names))``."""
        k, channels, size = data.shape
        x = data.reshape(k * channels, size).astype(np.float64)
        cache: dict[str, np.ndarray] = {}
        vec = np.empty((k * channels, len(self._steps)), dtype=np.float64)
        for j, step in enumerate(self._steps):
            vec[:, j] = step(cache, x)
        out = vec.reshape(k, channels * len(self._steps))
        if self.normalization is not None:
            out = (out - self.normalization[0]) / self.normalization[1]
        return out.astype(np.float32)


# Hot path: each helper avoids numpy's slower conveniences (ndarray.mean, np.percentile,
# np.errstate, the Python wrappers of ndarray.sum/min/max) and shares work with the others through ``cache``.
_sum, _min, _max = np.add.reduce, np.minimum.reduce, np.maximum.reduce


def _mean(cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    if "mean" not in cache:
        cache["mean"] = _sum(x, axis=1) / x.shape[1]
    return cache["mean"]


def _central(cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Return the second central moment (population variance) of each row; keep its deviations in *cache*."""
    if "m2" not in cache:
        d = x - _mean(cache, x)[:, None]
        d2 = d * d
        cache["d"], cache["d2"] = d, d2
        cache["m2"] = _sum(d2, axis=1) / x.shape[1]
    return cache["m2"]


def _moment(cache: dict[str, np.ndarray], x: np.ndarray, order: int) -> np.ndarray:
    """Return the third or fourth central moment of each row (made only for skew and kurtosis)."""
    key = f"m{order}"
    if key not in cache:
        _central(cache, x)
        d2 = cache["d2"]
        cache[key] = _sum((d2 * cache["d"]) if order == 3 else (d2 * d2), axis=1) / x.shape[1]
    return cache[key]


def _sorted(cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    if "sorted" not in cache:
        cache["sorted"] = np.sort(x, axis=1)
    return cache["sorted"]


def _percentile_positions(size: int, qs: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return where percentiles *qs* of *size* sorted values lie: index below, index above, fraction between.

    numpy's default ("linear") rule; made once per extractor, as windows have a fixed size.
    """
    h = (size - 1) * np.asarray(qs, dtype=np.float64) / 100.0
    lo = np.floor(h).astype(np.intp)
    return lo, np.minimum(lo + 1, size - 1), h - lo


def _mean_shift(cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    half = x.shape[1] // 2
    return (x[:, x.shape[1] - half :].sum(axis=1) - x[:, :half].sum(axis=1)) / half


def _skew(cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    m2 = _central(cache, x)
    m3 = _moment(cache, x, 3)
    if (m2 > 0).all():  # the usual case: no constant row, a plain division
        return m3 / m2**1.5
    return np.divide(m3, m2**1.5, out=np.zeros_like(m2), where=m2 > 0)


def _kurtosis(cache: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    m2 = _central(cache, x)
    m4 = _moment(cache, x, 4)
    if (m2 > 0).all():
        return m4 / (m2 * m2) - 3.0
    return np.divide(m4, m2 * m2, out=np.zeros_like(m2), where=m2 > 0) - 3.0


_STATS: dict[str, Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]] = {
    "mean": _mean,
    "std": lambda cache, x: np.sqrt(_central(cache, x)),
    "min": lambda cache, x: cache["sorted"][:, 0] if "sorted" in cache else _min(x, axis=1),
    "max": lambda cache, x: cache["sorted"][:, -1] if "sorted" in cache else _max(x, axis=1),
    "rms": lambda cache, x: np.sqrt(_sum(x * x, axis=1) / x.shape[1]),
    "ptp": lambda cache, x: _sorted(cache, x)[:, -1] - _sorted(cache, x)[:, 0],
    "skew": _skew,
    "kurtosis": _kurtosis,
    "mean_shift": _mean_shift,
}


def load_normalization(path: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``{"names": [...], "mean": [...], "std": [...]}`` and check it matches *names*."""
    stats = json.loads(path.read_text(encoding="utf-8"))
    stats = stats.get("normalization", stats)
    if tuple(stats["names"]) != names:
        msg = f"its feature names {stats['names']} differ from this step's {list(names)}"
        raise ValueError(msg)
    mean, std = np.asarray(stats["mean"], dtype=np.float64), np.asarray(stats["std"], dtype=np.float64)
    if mean.shape != (len(names),) or std.shape != (len(names),):
        msg = f"it has {mean.size} means and {std.size} standard deviations for {len(names)} features"
        raise ValueError(msg)
    return mean, np.where(std > 0, std, 1.0)


def features(
    step_id: str,
    up: Stream,
    names: list[str] | tuple[str, ...],
    *,
    fft_window: str = "hann",
    normalize: str | Path | None = None,
) -> Stream:
    """Attach a feature vector to each window (stateless: it fuses with neighbours).

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> w = eo.window("win", s, rate_hz=500, size=256, hop=64)
    >>> f = features("feat", w, ["rms", "p95", "fft_bands(0-50,50-250)"])
    """
    cfg: FeaturesConfig = build_config(
        step_id, FeaturesConfig, names=tuple(names), fft_window=fft_window, normalize=normalize
    )
    try:
        parse_features(cfg.names)
    except ValueError as exc:
        raise FlowValidationError(step_id, "names", list(cfg.names), str(exc)) from None

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        return inputs[0].but(features=_extractor(step_id, cfg, inputs[0]).names)

    def build(ctx: StepContext) -> MapLogic:
        fx = _extractor(step_id, cfg, ctx.input)

        def compute(w: Window) -> Window:
            return w.with_features(fx(w.data))

        def compute_many(windows: list[Window]) -> list[Window]:
            # windows of one flow step share their shape, so all sensors' windows go through numpy together
            if len(windows) == 1:
                return [compute(windows[0])]
            vectors = fx.many(np.stack([w.data for w in windows]))
            return [w.with_features(vector) for w, vector in zip(windows, vectors, strict=True)]

        return MapLogic(fn=compute, batch=compute_many)

    return up.flow.add_step(Step(step_id, "features", "map", (up.step_id,), cfg, schema=schema, build=build))


def _extractor(step_id: str, cfg: FeaturesConfig, win: Schema) -> FeatureExtractor:
    """Return the extractor for windows of schema *win*, or a :class:`FlowValidationError` naming the step."""
    if win.kind != "windows" or win.window_size is None or win.rate_hz is None:
        raise FlowValidationError(step_id, "up", win.kind, "features takes windows", hint="put eo.window before it")
    try:
        fx = FeatureExtractor(
            cfg.names, channels=win.channels, size=win.window_size, rate_hz=win.rate_hz, fft_window=cfg.fft_window
        )
    except ValueError as exc:
        raise FlowValidationError(step_id, "names", list(cfg.names), str(exc)) from None
    if cfg.normalize is not None:
        try:
            fx.normalization = load_normalization(cfg.normalize, fx.names)
        except (OSError, ValueError, KeyError) as exc:
            raise FlowValidationError(step_id, "normalize", str(cfg.normalize), str(exc)) from None
    return fx
