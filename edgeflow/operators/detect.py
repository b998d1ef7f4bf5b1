"""Statistical anomaly detectors on feature vectors, useful before any model exists.

Both learn each sensor's normal feature distribution during ``warmup`` windows,
then score a window by its largest absolute z-score over the features:

* :func:`zscore_detector` freezes the baseline after warmup;
* :func:`ewma_detector` keeps adapting it (exponentially weighted, ``alpha``)
  with windows that are not anomalous, so slow drift is not flagged.

Like every detector (see :mod:`edgeflow.operators.flagging`), both take
``features=[...]`` (the features that drive the score; default all),
``persistence=(k, n)`` and explain each flag in ``Scored.raised_by``; windows
with non-finite features are dead letters and never enter the baseline. For
data with seasons or level changes, see :mod:`edgeflow.operators.baselines`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Schema, Step, StepContext, Stream, build_config
from edgeflow.metrics import FlowStats
from edgeflow.operators.flagging import (
    KOfN,
    check_persistence,
    feature_index,
    non_finite_letter,
    raised_by,
    score_windows,
)
from edgeflow.records import Scored, Window

__all__ = ["DetectorConfig", "ZScoreState", "ewma_detector", "zscore_detector"]

_FEW_WINDOWS = 4
"""A frozen baseline scores at most this many windows of a call with Python floats, more in one numpy pass."""


class DetectorConfig(BaseModel):
    """Settings of the z-score and EWMA detectors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: PositiveFloat = 4.0
    warmup: PositiveInt = Field(default=50, ge=2)
    alpha: float = Field(default=0.0, ge=0.0, lt=1.0)
    """EWMA weight of a new normal window after warmup; 0 freezes the baseline."""
    min_std: PositiveFloat = 1e-3
    """Floor on each feature's standard deviation, relative to its mean's magnitude (plus 1e-9)."""
    features: tuple[str, ...] | None = Field(default=None, min_length=1)
    """The features that drive the score; ``None``: all of the input's."""
    persistence: tuple[int, int] = (1, 1)
    """``(k, n)``: flag a window when *k* of the sensor's last *n* windows crossed the threshold."""

    @field_validator("persistence")
    @classmethod
    def _k_of_n(cls, value: tuple[int, int]) -> tuple[int, int]:
        return check_persistence(value)


class ZScoreState:
    """One sensor's baseline: Welford during warmup, then frozen or EWMA.

    >>> state = ZScoreState(DetectorConfig(warmup=3, threshold=3.0), "zscore", FlowStats())
    >>> calm = [np.array([1.0, 2.0]), np.array([1.2, 2.1]), np.array([0.8, 1.9])]
    >>> [state.score(x)[1] for x in calm]
    [False, False, False]
    >>> state.score(np.array([5.0, 2.0]))[1]
    True
    """

    def __init__(
        self,
        cfg: DetectorConfig,
        model: str,
        stats: FlowStats,
        resume: dict[str, Any] | None = None,
        *,
        step_id: str = "detect",
        names: tuple[str, ...] = (),
        index: tuple[int, ...] | None = None,
    ) -> None:
        self._cfg = cfg
        self._model = model
        self._stats = stats
        self._step_id = step_id
        self._names = names
        self._index = None if index is None else np.asarray(index)
        self._n = 0
        self._mean: list[float] | None = None
        self._m2: list[float] | None = None
        """Welford's (or the EWMA's) means and variance sums, as Python floats: feature vectors are short, and
        per-element float operations cost less than numpy calls on a few values (the same IEEE operations)."""
        self._flags = KOfN(*cfg.persistence)
        self.last_z = np.zeros(0)
        """Signed z-values of the features of the last window scored after warmup."""
        self._scale: tuple[list[float], list[float]] | None = None
        """The frozen baseline's means and standard deviations as floats, made on first use."""
        if resume is not None:
            self._n, self._mean, self._m2 = resume["n"], _floats(resume["mean"]), _floats(resume["m2"])
            self._flags.bits = resume.get("flags", 0)

    def score(self, x: np.ndarray) -> tuple[float, bool]:
        """Score one feature vector (the selected features) and learn from it when it is normal."""
        self._scale = None
        xs: list[float] = x.tolist()
        mean, m2 = self._mean, self._m2
        if mean is None or m2 is None:
            self._mean, self._m2, self._n = xs, [0.0] * len(xs), 1
            return 0.0, False
        cfg = self._cfg
        if self._n < cfg.warmup:
            self._n += 1
            n = self._n
            for i, v in enumerate(xs):
                delta = v - mean[i]
                mean[i] += delta / n
                m2[i] += delta * (v - mean[i])
            return 0.0, False
        # until the first normal window after warmup, _m2 still holds Welford's sum of squares
        var = [q / (self._n - 1) for q in m2] if cfg.alpha == 0 or self._n == cfg.warmup else m2
        std = [max(_sqrt(q), cfg.min_std * abs(m) + 1e-9) for q, m in zip(var, mean, strict=True)]
        z_values = [(v - m) / s for v, m, s in zip(xs, mean, std, strict=True)]
        self.last_z = np.array(z_values)
        z = max(abs(v) for v in z_values)
        crossed = z > cfg.threshold
        anomaly = self._flags.push(crossed) and crossed
        if cfg.alpha > 0 and not self._flags.active:
            alpha = cfg.alpha
            if self._n == cfg.warmup:  # switch from Welford sums to an EWMA variance
                m2 = self._m2 = [q / (self._n - 1) for q in m2]
                self._n += 1
            for i, v in enumerate(xs):
                delta = v - mean[i]
                mean[i] += alpha * delta
                m2[i] = (1 - alpha) * (m2[i] + alpha * delta * delta)
        return z, anomaly

    def on_batch(self, windows: list[Window]) -> list[Any]:
        """Score each window of one sensor; a window with non-finite features is a dead letter."""
        if self._frozen:
            return self._score_frozen(windows)
        return score_windows(
            self._step_id, windows, self._names, self._index, self._model, self._stats, self._explained
        )

    def _explained(self, x: np.ndarray, _window: Window) -> tuple[float, bool, dict[str, float] | None]:
        """Score *x* (learning from it as :meth:`score` does) and say which features raised a flag."""
        z, anomaly = self.score(x)
        return z, anomaly, raised_by(self._selected_names, self.last_z, self._cfg.threshold) if anomaly else None

    @property
    def _frozen(self) -> bool:
        """Whether the baseline no longer changes (a z-score detector past its warmup)."""
        return self._cfg.alpha == 0 and self._mean is not None and self._n >= self._cfg.warmup

    def _frozen_std(self) -> np.ndarray:
        assert self._mean is not None and self._m2 is not None
        mean = np.asarray(self._mean)
        return np.maximum(np.sqrt(np.asarray(self._m2) / (self._n - 1)), self._cfg.min_std * np.abs(mean) + 1e-9)

    def _score_frozen(self, windows: list[Window]) -> list[Any]:
        """Score a batch against the frozen baseline: a few windows with Python floats, more in one numpy pass.

        Both compute the same IEEE operations, so verdicts do not depend on how windows were batched.
        """
        few = self._frozen_z_few(windows) if len(windows) <= _FEW_WINDOWS else None
        if few is not None:
            return self._verdicts(windows, *few)
        feats = np.stack([w.features for w in windows]).astype(np.float64)  # type: ignore[misc]
        finite = np.asarray(np.isfinite(feats).all(axis=1), dtype=bool)
        x = feats if self._index is None else feats[:, self._index]
        z = (x - np.asarray(self._mean)) / self._frozen_std()
        return self._verdicts(windows, z, np.abs(z).max(axis=1), finite, feats)

    def _frozen_z_few(self, windows: list[Window]) -> tuple[list[list[float]], list[float]] | None:
        """Return each window's z-values and largest |z| in Python floats; ``None`` if a feature is not finite."""
        if self._scale is None:
            assert self._mean is not None
            self._scale = (self._mean, self._frozen_std().tolist())
        mean, std = self._scale
        rows = [w.features.tolist() for w in windows]  # type: ignore[union-attr]
        for row in rows:
            for v in row:
                if not math.isfinite(v):
                    return None
        index = self._index
        z = [
            [(a - m) / s for a, m, s in zip(row if index is None else [row[i] for i in index], mean, std, strict=True)]
            for row in rows
        ]
        return z, [max(abs(v) for v in values) for values in z]

    def _verdicts(
        self,
        windows: list[Window],
        z: Sequence[Sequence[float]] | np.ndarray,
        zmax: Sequence[float] | np.ndarray,
        finite: np.ndarray | None = None,
        feats: np.ndarray | None = None,
    ) -> list[Any]:
        """Flag each window from its largest |z| (persistence applied); windows not *finite* become dead letters."""
        threshold = self._cfg.threshold
        out: list[Any] = []
        anomalies = 0
        last = -1
        for i, w in enumerate(windows):
            if finite is not None and feats is not None and not finite[i]:
                letter = non_finite_letter(self._step_id, w, self._names, feats[i])
                assert letter is not None
                out.append(letter)
                continue
            crossed = bool(zmax[i] > threshold)
            anomaly = self._flags.push(crossed) and crossed
            last = i
            anomalies += anomaly
            explained = raised_by(self._selected_names, np.asarray(z[i]), threshold) if anomaly else None
            out.append(Scored(w, float(zmax[i]), anomaly, self._model, explained))
        if last >= 0:
            self.last_z = np.asarray(z[last])
        if anomalies:
            self._stats.add(anomalies=anomalies)
        return out

    @property
    def _selected_names(self) -> tuple[str, ...]:
        if self._index is None:
            return self._names or tuple(f"f{i}" for i in range(self.last_z.size))
        return tuple(self._names[i] for i in self._index)

    def on_eof(self) -> list[Any]:
        """Nothing is held back."""
        return []

    def snapshot(self) -> dict[str, Any]:
        """Return the baseline: count, means and (Welford or EWMA) variances, copied.

        >>> a = ZScoreState(DetectorConfig(warmup=2), "zscore", FlowStats())
        >>> _ = [a.score(np.array([x])) for x in (1.0, 2.0)]
        >>> b = ZScoreState(DetectorConfig(warmup=2), "zscore", FlowStats(), resume=a.snapshot())
        >>> b.score(np.array([9.0])) == a.score(np.array([9.0]))
        True
        """
        return {
            "n": self._n,
            "mean": None if self._mean is None else np.array(self._mean),
            "m2": None if self._m2 is None else np.array(self._m2),
            "flags": self._flags.bits,
        }


def _floats(values: np.ndarray | list[float] | None) -> list[float] | None:
    """Return a snapshot's means or variance sums as a list of floats (snapshots hold arrays)."""
    return None if values is None else np.asarray(values, dtype=np.float64).tolist()


def _sqrt(q: float) -> float:
    """``math.sqrt`` that gives NaN for a negative value, as ``numpy.sqrt`` does, instead of raising."""
    return math.sqrt(q) if q >= 0.0 else math.nan


def _detector(step_id: str, up: Stream, operator: str, cfg: DetectorConfig) -> Stream:
    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (feats,) = inputs
        feature_index(step_id, feats, cfg.features)
        return feats.but(kind="scored")

    def build(ctx: StepContext) -> Any:
        stats, names = ctx.run.stats, ctx.input.features
        index = None if cfg.features is None else feature_index(step_id, ctx.input, cfg.features)
        return lambda resume: ZScoreState(cfg, operator, stats, resume, step_id=step_id, names=names, index=index)

    return up.flow.add_step(
        Step(step_id, operator, "keyed", (up.step_id,), cfg, schema=schema, build=build, can_fail=True)
    )


def zscore_detector(
    step_id: str,
    up: Stream,
    *,
    threshold: float = 4.0,
    warmup: int = 50,
    min_std: float = 1e-3,
    features: list[str] | tuple[str, ...] | None = None,
    persistence: tuple[int, int] = (1, 1),
) -> Stream:
    """Flag windows whose features stray more than *threshold* standard deviations from the warmup baseline.

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms"])
    >>> scores = zscore_detector("detect", f, threshold=5.0)
    """
    cfg = build_config(
        step_id,
        DetectorConfig,
        threshold=threshold,
        warmup=warmup,
        min_std=min_std,
        features=features,
        persistence=persistence,
    )
    return _detector(step_id, up, "zscore", cfg)


def ewma_detector(
    step_id: str,
    up: Stream,
    *,
    threshold: float = 4.0,
    warmup: int = 50,
    alpha: float = 0.02,
    min_std: float = 1e-3,
    features: list[str] | tuple[str, ...] | None = None,
    persistence: tuple[int, int] = (1, 1),
) -> Stream:
    """Like :func:`zscore_detector`, but the baseline follows normal windows with weight *alpha*."""
    cfg = build_config(
        step_id,
        DetectorConfig,
        threshold=threshold,
        warmup=warmup,
        alpha=alpha,
        min_std=min_std,
        features=features,
        persistence=persistence,
    )
    if cfg.alpha == 0:
        raise FlowValidationError(step_id, "alpha", alpha, "must be > 0 for an EWMA", hint="or use zscore_detector")
    return _detector(step_id, up, "ewma", cfg)
