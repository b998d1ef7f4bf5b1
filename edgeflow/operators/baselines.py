"""Detectors whose baseline follows drift and seasons without learning the fault.

Both score a window by robust z-values of its selected features,
``z = (x - expected) / scale``, against a baseline learned online per sensor, on
event time:

* :func:`robust_detector`: the expected value is the median of the sensor's last
  ``history`` learned windows. It follows slow drift; one outlier moves nothing.
* :func:`seasonal_detector`: the same, after removing a time-of-day profile
  (``period="day"``) or a time-of-week profile (``period="week"``: each weekday
  its own day shape), with linear interpolation between ``bins_per_day`` bins.
  The first period (``warmup_s``) is learned, not scored: the profile starts as
  its averages (a time the sensor was silent is interpolated) and then learns
  online. Windows are placed by the middle of their span in the local time of
  ``tz``.

The scale is ``1.4826 * MAD`` of the errors the baseline made predicting the
last ``history`` learned windows: out of sample, so the windows a profile was
fitted to do not make it too small. Scoring starts once ``min_history`` windows
have been predicted (for the seasonal detector: a calibration after the warmup).

What is learned, and how much, keeps a fault out of the baseline:

* a window that crosses the threshold, and every window while ``persistence``
  holds an alarm, is not learned at all;
* any other window is learned winsorized: at most ``learn_limit`` scales (half
  the threshold) from the baseline, so the level follows drift but a rise faster
  than about ``learn_limit`` scales per half ``history`` cannot drag it along;
  only errors within ``learn_limit`` scales of the errors' median enter the scale;
* a lasting change that *is* the new normal, such as a sensor recalibrated in
  maintenance, is adopted with ``relevel_after=N``: after *N* windows in a row
  not learned, if a constant offset explains them (90 % normal once it is
  removed, the first half level with the second), the baseline moves by that
  offset (counted as ``baseline.relevels``). A rise or a stuck sensor on a
  cycling signal is no constant offset; ``relevel_features=["mean"]`` keeps a
  lasting change of the other features (more noise) a fault too.

>>> import numpy as np
>>> cfg = RobustConfig(threshold=5.0, history=48, min_history=24)
>>> state = BaselineState(cfg, "robust", ("temp",), None, FlowStats())
>>> rng = np.random.default_rng(0)
>>> drift = [state.score(np.array([20.0 + 0.01 * i + rng.normal(0, 0.3)]), 300.0 * i) for i in range(400)]
>>> sum(flagged for _z, flagged, _by in drift)  # follows a slow drift of 4 degrees
0
>>> state.score(np.array([31.0]), 300.0 * 400)[1:]  # a jump of 7 is not drift
(True, {'temp': 24.936})
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Schema, Step, StepContext, Stream, build_config
from edgeflow.metrics import FlowStats
from edgeflow.operators.flagging import (
    KOfN,
    check_persistence,
    feature_index,
    raised_by,
    score_windows,
)
from edgeflow.records import Window

__all__ = ["BaselineState", "RobustConfig", "SeasonalConfig", "robust_detector", "seasonal_detector"]

_MAD_TO_STD = 1.4826
"""MAD times this is the standard deviation of normal data."""
_RELEVEL_SHARE = 0.9
"""Share of an alarm's windows that must be normal once a constant offset is removed, to adopt it."""
_PERIOD_S = {"day": 86_400.0, "week": 604_800.0}


class RobustConfig(BaseModel):
    """Settings of :func:`robust_detector`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: PositiveFloat = 5.0
    """Robust |z| above which a window crosses."""
    learn_limit: PositiveFloat | None = None
    """A learned window enters the level and the scale at most this many scales from the baseline
    (winsorized); ``None``: half the threshold. The level follows drift, but a rise faster than about
    ``learn_limit`` scales per half ``history`` cannot drag it along."""
    features: tuple[str, ...] | None = Field(default=None, min_length=1)
    """The features that drive the score; ``None``: all of the input's."""
    history: int = Field(default=288, ge=8, le=100_000)
    """Normal windows kept per sensor for the median and MAD."""
    min_history: int = Field(default=48, ge=4)
    """Windows learned before scoring starts."""
    persistence: tuple[int, int] = (1, 1)
    """``(k, n)``: flag a window when *k* of the sensor's last *n* windows crossed the threshold."""
    relevel_after: PositiveInt | None = None
    """Windows not learned in a row after which a constant offset is adopted as the new level; ``None``: never."""
    relevel_features: tuple[str, ...] | None = Field(default=None, min_length=1)
    """The features a new level may shift (e.g. ``["mean"]``); ``None``: all. A lasting change in the others
    (more noise, a stuck reading) is then never adopted."""
    min_scale: PositiveFloat = 1e-3
    """Floor on each feature's scale, relative to its median's magnitude (plus 1e-9)."""

    @field_validator("persistence")
    @classmethod
    def _k_of_n(cls, value: tuple[int, int]) -> tuple[int, int]:
        return check_persistence(value)

    @model_validator(mode="after")
    def _history_fits(self) -> RobustConfig:
        if self.min_history > self.history:
            msg = f"min_history: {self.min_history} windows do not fit a history of {self.history}"
            raise ValueError(msg)
        if self.relevel_features is not None and self.relevel_after is None:
            msg = "relevel_features: needs relevel_after (the windows after which a new level is adopted)"
            raise ValueError(msg)
        if self.learn_limit is not None and self.learn_limit > self.threshold:
            msg = f"learn_limit: {self.learn_limit} is above the threshold {self.threshold} (flags would be learned)"
            raise ValueError(msg)
        return self

    @property
    def learn_below(self) -> float:
        """The |z| up to which windows are learned."""
        return self.learn_limit if self.learn_limit is not None else self.threshold / 2


class SeasonalConfig(RobustConfig):
    """Settings of :func:`seasonal_detector`."""

    period: Literal["day", "week"] = "day"
    """The profile's cycle: one shape per day, or one per weekday."""
    bins_per_day: int = Field(default=24, ge=1, le=288)
    """Profile points per day (24: hourly), linearly interpolated."""
    season_alpha: float = Field(default=0.1, gt=0.0, le=1.0)
    """Learning rate of the profile once each bin has seen ``1/season_alpha`` windows."""
    warmup_s: PositiveFloat | None = None
    """Event time learned before scoring starts; ``None``: one period."""
    tz: str = "UTC"
    """Zone (IANA name) whose local time the profile follows, daylight saving included."""

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        if tz.upper() != "UTC":
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                msg = f"unknown time zone {tz!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'"
                raise ValueError(msg) from None
        return tz

    @property
    def bins(self) -> int:
        """Profile bins over one period."""
        return self.bins_per_day * (7 if self.period == "week" else 1)

    @property
    def warmup(self) -> float:
        """Seconds of event time learned before scoring."""
        return self.warmup_s if self.warmup_s is not None else _PERIOD_S[self.period]


class _Profile:
    """A cyclic profile of ``bins`` points per feature, interpolated linearly between bin centres.

    During the warmup it averages the raw values around each bin (so a level that moves within the
    first period does not leak into it); :meth:`fit` turns those averages into the profile, centred
    on zero, and from then on :meth:`learn` moves it towards normal windows at rate ``alpha``.
    """

    def __init__(self, cfg: SeasonalConfig, n_features: int) -> None:
        self.bins = cfg.bins
        self.period = _PERIOD_S[cfg.period]
        self.alpha = cfg.season_alpha
        self.zone = None if cfg.tz.upper() == "UTC" else ZoneInfo(cfg.tz)
        self.values = np.zeros((self.bins, n_features))
        self.sums = np.zeros((self.bins, n_features))
        self.weights = np.zeros(self.bins)
        self.fitted = False

    def place(self, t: float) -> tuple[int, float]:
        """Return the lower bin and the weight of the upper one for event time *t*."""
        if self.zone is not None:
            offset = datetime.fromtimestamp(t, self.zone).utcoffset()
            t += offset.total_seconds() if offset is not None else 0.0
        # epoch day 0 was a Thursday: shift so that a week starts on Monday 00:00
        u = ((t + 3 * 86_400.0) % self.period) / self.period * self.bins - 0.5
        lower = math.floor(u)
        return lower % self.bins, u - lower

    def at(self, lower: np.ndarray | int, w: np.ndarray | float) -> np.ndarray:
        """Profile values at placements (one or many)."""
        upper = (np.asarray(lower) + 1) % self.bins
        w = np.asarray(w)[..., None]
        return (1 - w) * self.values[lower] + w * self.values[upper]  # type: ignore[no-any-return]

    def accumulate(self, lower: int, w: float, x: np.ndarray) -> None:
        """Add a warmup window's values to the averages of the two bins around it."""
        for b, weight in ((lower, 1.0 - w), ((lower + 1) % self.bins, w)):
            self.sums[b] += weight * x
            self.weights[b] += weight

    def fit(self) -> None:
        """Turn the warmup averages into the profile, centred on zero.

        A bin the warmup never reached (the sensor was silent then) is interpolated from the nearest
        bins on either side, around the cycle: a bin left wrong would be flagged every period and,
        since flagged windows are not learned, never corrected.
        """
        seen = np.flatnonzero(self.weights > 0)
        if seen.size:
            means = self.sums[seen] / self.weights[seen, None]
            around = np.concatenate((seen - self.bins, seen, seen + self.bins))
            for j in range(means.shape[1]):
                self.values[:, j] = np.interp(np.arange(self.bins), around, np.tile(means[:, j], 3))
            self.values -= self.values.mean(axis=0)
        self.fitted = True

    def learn(self, lower: int, w: float, error: np.ndarray) -> None:
        """Move the two bins around a placement towards a normal value that was off by *error*.

        A bin learns as a running mean until it has seen ``1/alpha`` windows (a bin the warmup never
        reached is set by the first window it sees), then as an exponential average.
        """
        for b, weight in ((lower, 1.0 - w), ((lower + 1) % self.bins, w)):
            if weight > 0:
                self.weights[b] += weight
                self.values[b] += weight * max(self.alpha, 1.0 / self.weights[b]) * error


class BaselineState:
    """One sensor's robust baseline, with an optional seasonal profile (the state of one key)."""

    def __init__(
        self,
        cfg: RobustConfig,
        model: str,
        names: tuple[str, ...],
        index: tuple[int, ...] | None,
        stats: FlowStats,
        resume: dict[str, Any] | None = None,
        *,
        step_id: str = "detect",
    ) -> None:
        self._cfg = cfg
        self._model = model
        self._names = names
        self._index = None if index is None else np.asarray(index)
        self._selected = names if index is None else tuple(names[i] for i in index)
        shifted = cfg.relevel_features or self._selected
        self._relevel_mask = np.array([name in shifted for name in self._selected])
        self._stats = stats
        self._step_id = step_id
        f = len(self._selected)
        self._profile = _Profile(cfg, f) if isinstance(cfg, SeasonalConfig) else None
        self._warmup = cfg.warmup if isinstance(cfg, SeasonalConfig) else 0.0
        # normal windows: raw values and where they sit in the profile
        self._x = np.zeros((cfg.history, f))
        self._lower = np.zeros(cfg.history, dtype=np.intp)
        self._w = np.zeros(cfg.history)
        self._count = 0
        self._pos = 0
        # prediction errors of normal windows, for the scale
        self._err = np.zeros((cfg.history, f))
        self._ecount = 0
        self._epos = 0
        self._first_t: float | None = None
        self._flags = KOfN(*cfg.persistence)
        # the current alarm's windows, for relevelling
        size = cfg.relevel_after or 0
        self._qx = np.zeros((size, f))
        self._qlower = np.zeros(size, dtype=np.intp)
        self._qw = np.zeros(size)
        self._qcount = 0
        if resume is not None:
            self._restore(resume)

    _SNAPSHOT = (
        "_x",
        "_lower",
        "_w",
        "_count",
        "_pos",
        "_err",
        "_ecount",
        "_epos",
        "_first_t",
        "_qx",
        "_qlower",
        "_qw",
        "_qcount",
    )

    def _restore(self, snap: dict[str, Any]) -> None:
        for name in self._SNAPSHOT:
            setattr(self, name, snap[name].copy() if isinstance(snap[name], np.ndarray) else snap[name])
        self._flags.bits = snap["flags"]
        if self._profile is not None:
            for name in ("values", "sums", "weights"):
                setattr(self._profile, name, snap[f"profile_{name}"].copy())
            self._profile.fitted = snap["profile_fitted"]

    def snapshot(self) -> dict[str, Any]:
        """Return the history, profile, alarm and flags (copied, picklable).

        >>> cfg = RobustConfig(min_history=4, history=8)
        >>> a = BaselineState(cfg, "robust", ("x",), None, FlowStats())
        >>> _ = [a.score(np.array([float(i % 3)]), float(i)) for i in range(6)]
        >>> b = BaselineState(cfg, "robust", ("x",), None, FlowStats(), resume=a.snapshot())
        >>> b.score(np.array([9.0]), 7.0) == a.score(np.array([9.0]), 7.0)
        True
        """
        snap: dict[str, Any] = {
            name: (v.copy() if isinstance(v := getattr(self, name), np.ndarray) else v) for name in self._SNAPSHOT
        }
        snap["flags"] = self._flags.bits
        if self._profile is not None:
            for name in ("values", "sums", "weights"):
                snap[f"profile_{name}"] = getattr(self._profile, name).copy()
            snap["profile_fitted"] = self._profile.fitted
        return snap

    def _place(self, t: float) -> tuple[int, float]:
        return self._profile.place(t) if self._profile is not None else (0, 0.0)

    def _season(self, lower: np.ndarray | int, w: np.ndarray | float) -> np.ndarray | float:
        return self._profile.at(lower, w) if self._profile is not None else 0.0

    def _level(self) -> np.ndarray:
        """Median of the history's values with the profile removed."""
        n = self._count
        return np.median(self._x[:n] - self._season(self._lower[:n], self._w[:n]), axis=0)  # type: ignore[no-any-return]

    def _spread(self, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Median and robust spread of the prediction errors of recent learned windows (out of sample)."""
        e = self._err[: self._ecount]
        centre = np.median(e, axis=0)
        mad = np.median(np.abs(e - centre), axis=0)
        return centre, np.maximum(_MAD_TO_STD * mad, self._cfg.min_scale * np.abs(level) + 1e-9)

    def _scale(self, level: np.ndarray) -> np.ndarray:
        return self._spread(level)[1]

    def _remember(self, x: np.ndarray, lower: int, w: float, error: np.ndarray | None) -> None:
        """Add a normal window to the history and, if it was predicted with *error*, to the errors."""
        cfg = self._cfg
        if error is not None:
            self._err[self._epos] = error
            self._epos = (self._epos + 1) % cfg.history
            self._ecount = min(self._ecount + 1, cfg.history)
        i = self._pos
        self._x[i], self._lower[i], self._w[i] = x, lower, w
        self._pos = (i + 1) % cfg.history
        self._count = min(self._count + 1, cfg.history)

    def _warm(self, x: np.ndarray, lower: int, w: float) -> None:
        """Learn a window of the warmup: the history, the profile's averages and (robust) the errors."""
        profile = self._profile
        if profile is None:
            self._remember(x, lower, w, x - self._level() if self._count >= 8 else None)
            return
        if self._count >= 8:  # one wild window must not set a bin
            level, bound = self._level(), 10 * self._cfg.threshold
            spread = np.median(np.abs(self._x[: self._count] - level), axis=0) + 1e-9
            x = np.clip(x, level - bound * spread, level + bound * spread)
        profile.accumulate(lower, w, x)
        self._remember(x, lower, w, None)

    def _shape(self, lower: int, w: float, error: np.ndarray) -> None:
        """Move the profile towards a window that did not cross (its error already winsorized)."""
        if self._profile is not None:
            self._profile.learn(lower, w, error)

    def score(self, x: np.ndarray, t: float) -> tuple[float, bool, dict[str, float] | None]:
        """Score the selected features *x* of a window centred at event time *t*; learn from it if normal.

        Returns the largest |z|, the flag and, on a flagged window, the features that raised it. Until
        the history holds ``min_history`` windows, the warmup time has passed (seasonal: the profile is
        then fitted) and ``min_history`` normal windows have been predicted, windows are only learned.
        """
        cfg = self._cfg
        lower, w = self._place(t)
        if self._first_t is None:
            self._first_t = t
        if self._count < cfg.min_history or t - self._first_t < self._warmup:
            self._warm(x, lower, w)
            return 0.0, False, None
        if self._profile is not None and not self._profile.fitted:
            self._profile.fit()
        level = self._level()
        error = x - self._season(lower, w) - level
        if self._ecount < cfg.min_history:  # calibrating the scale on predictions
            if self._ecount >= 8:  # one wild window must not set a bin
                bound = cfg.threshold * self._scale(level)
                error = np.clip(error, -bound, bound)
            self._shape(lower, w, error)
            self._remember(x, lower, w, error)
            return 0.0, False, None
        centre, scale = self._spread(level)
        z = error / scale
        score = float(np.max(np.abs(z)))
        crossed = score > cfg.threshold
        flagged = self._flags.push(crossed) and crossed
        if not self._flags.active and not crossed:  # calm: learn it, pulling by at most learn_limit
            bound = cfg.learn_below * scale
            kept = np.clip(error, -bound, bound)
            self._shape(lower, w, kept)
            # the scale learns errors within learn_limit of their median: clipped ones would inflate it in a slow rise
            usual = bool(np.all(np.abs(error - centre) <= bound))
            self._remember(x - error + kept, lower, w, error if usual else None)
            self._qcount = 0
            return score, False, None
        if cfg.relevel_after is not None:
            self._hold(x, lower, w, level, scale)
        return score, flagged, raised_by(self._selected, z, cfg.threshold) if flagged else None

    def _hold(self, x: np.ndarray, lower: int, w: float, level: np.ndarray, scale: np.ndarray) -> None:
        """Keep the windows not learned in a row; adopt their constant offset once it explains *relevel_after*."""
        size = self._qx.shape[0]
        i = self._qcount % size
        self._qx[i], self._qlower[i], self._qw[i] = x, lower, w
        self._qcount += 1
        if self._qcount < size:
            return
        d = self._qx - self._season(self._qlower, self._qw) - level
        offset = np.median(d, axis=0) * self._relevel_mask
        normal = np.max(np.abs((d - offset) / scale), axis=1) <= self._cfg.threshold
        d = np.roll(d, -(self._qcount % size), axis=0)  # oldest first
        half = size // 2
        trend = np.abs(np.median(d[size - half :], axis=0) - np.median(d[:half], axis=0)) / scale
        if normal.mean() >= _RELEVEL_SHARE and np.max(trend) <= self._cfg.learn_below:  # a new level, not a trend
            self._x[: self._count] += offset
            self._qcount = 0
            self._flags.clear()
            self._stats.count("baseline.relevels")

    def on_batch(self, windows: list[Window]) -> list[Any]:
        """Score each window of one sensor (at its middle in event time); non-finite ones are dead letters."""
        return score_windows(
            self._step_id,
            windows,
            self._names,
            self._index,
            self._model,
            self._stats,
            lambda x, w: self.score(x, (w.start + w.end) / 2),
        )

    def on_eof(self) -> list[Any]:
        """Nothing is held back."""
        return []


def _detector(step_id: str, up: Stream, operator: str, cfg: RobustConfig) -> Stream:
    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (feats,) = inputs
        feature_index(step_id, feats, cfg.features)
        selected = cfg.features or feats.features
        unknown = [name for name in cfg.relevel_features or () if name not in selected]
        if unknown:
            raise FlowValidationError(
                step_id,
                "relevel_features",
                list(cfg.relevel_features or ()),
                f"{unknown} are not among the detector's features {list(selected)}",
                hint="name features the detector scores",
            )
        return feats.but(kind="scored")

    def build(ctx: StepContext) -> Any:
        stats, names = ctx.run.stats, ctx.input.features
        index = None if cfg.features is None else feature_index(step_id, ctx.input, cfg.features)
        return lambda resume: BaselineState(cfg, operator, names, index, stats, resume, step_id=step_id)

    return up.flow.add_step(
        Step(step_id, operator, "keyed", (up.step_id,), cfg, schema=schema, build=build, can_fail=True)
    )


def robust_detector(
    step_id: str,
    up: Stream,
    *,
    threshold: float = 5.0,
    learn_limit: float | None = None,
    features: list[str] | tuple[str, ...] | None = None,
    history: int = 288,
    min_history: int = 48,
    persistence: tuple[int, int] = (1, 1),
    relevel_after: int | None = None,
    relevel_features: list[str] | tuple[str, ...] | None = None,
    min_scale: float = 1e-3,
) -> Stream:
    """Flag windows whose features stray from the median of the sensor's recent normal windows.

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms", "kurtosis"])
    >>> scores = robust_detector("detect", f, features=["rms"], threshold=6.0, persistence=(2, 3))
    """
    cfg = build_config(
        step_id,
        RobustConfig,
        threshold=threshold,
        learn_limit=learn_limit,
        features=features,
        history=history,
        min_history=min_history,
        persistence=persistence,
        relevel_after=relevel_after,
        relevel_features=relevel_features,
        min_scale=min_scale,
    )
    return _detector(step_id, up, "robust", cfg)


def seasonal_detector(
    step_id: str,
    up: Stream,
    *,
    period: str = "day",
    bins_per_day: int = 24,
    threshold: float = 5.0,
    learn_limit: float | None = None,
    features: list[str] | tuple[str, ...] | None = None,
    history: int = 288,
    min_history: int = 48,
    warmup_s: float | None = None,
    season_alpha: float = 0.1,
    tz: str = "UTC",
    persistence: tuple[int, int] = (1, 1),
    relevel_after: int | None = None,
    relevel_features: list[str] | tuple[str, ...] | None = None,
    min_scale: float = 1e-3,
) -> Stream:
    """Like :func:`robust_detector`, after removing a time-of-day (or time-of-week) profile learned online.

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["mean", "std"])
    >>> scores = seasonal_detector("detect", f, period="week", tz="Europe/Berlin", relevel_after=96)
    """
    cfg = build_config(
        step_id,
        SeasonalConfig,
        period=period,
        bins_per_day=bins_per_day,
        threshold=threshold,
        learn_limit=learn_limit,
        features=features,
        history=history,
        min_history=min_history,
        warmup_s=warmup_s,
        season_alpha=season_alpha,
        tz=tz,
        persistence=persistence,
        relevel_after=relevel_after,
        relevel_features=relevel_features,
        min_scale=min_scale,
    )
    return _detector(step_id, up, "seasonal", cfg)
