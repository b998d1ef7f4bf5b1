"""River's online anomaly detectors behind edgeflow's detector shape (the optional ``river`` extra).

Pick a detector from :mod:`river.anomaly` instead of writing one: the model given
is cloned per sensor, scores each window's selected features
(``score_one({name: value})``) and learns only from windows that are not
flagged, so a fault is not learned as normal. A window crosses when its score
is above ``threshold`` (the model's own scale: HalfSpaceTrees gives 0..1), or,
for a River anomaly filter (``anomaly.QuantileFilter``,
``anomaly.ThresholdFilter``), when the filter classifies it so. (HalfSpaceTrees
expects features within known ranges: give it ``limits={name: (lo, hi)}``.) Like every
detector it takes ``features=``, ``persistence=(k, n)``, sends windows with
non-finite features to dead letters, and explains flags in ``raised_by``:
River scores carry no per-feature attribution, so the z-values there are the
features' robust z against the sensor's last ``history`` normal windows.

>>> from river import anomaly
>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
>>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms", "kurtosis"])
>>> hst = anomaly.HalfSpaceTrees(seed=7, limits={"rms": (0.0, 2.0), "kurtosis": (-3.0, 30.0)})
>>> scores = eo.river_detector("detect", f, hst, threshold=0.9, persistence=(2, 3))
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator

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

__all__ = ["RiverConfig", "RiverState", "river_detector"]

_MAD_TO_STD = 1.4826
_EXPLAIN_Z = 3.0
"""|z| above which a feature is named as raising a River flag."""


class RiverConfig(BaseModel):
    """Settings of :func:`river_detector` (the model itself is kept apart: it is state, not a setting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: PositiveFloat | None = None
    """Score above which a window crosses; ``None`` only for a River anomaly filter, which classifies."""
    features: tuple[str, ...] | None = Field(default=None, min_length=1)
    """The features the model sees; ``None``: all of the input's."""
    warmup: int = Field(default=50, ge=0)
    """Windows learned before scoring starts."""
    persistence: tuple[int, int] = (1, 1)
    """``(k, n)``: flag a window when *k* of the sensor's last *n* windows crossed."""
    history: int = Field(default=288, ge=8, le=100_000)
    """Normal windows kept per sensor to explain flags with robust z-values."""

    @field_validator("persistence")
    @classmethod
    def _k_of_n(cls, value: tuple[int, int]) -> tuple[int, int]:
        return check_persistence(value)


class RiverState:
    """One sensor's River model, flags and explanation history (the state of one key)."""

    def __init__(
        self,
        cfg: RiverConfig,
        template: Any,
        names: tuple[str, ...],
        index: tuple[int, ...] | None,
        stats: FlowStats,
        resume: dict[str, Any] | None = None,
        *,
        step_id: str = "detect",
    ) -> None:
        self._cfg = cfg
        self._names = names
        self._index = None if index is None else np.asarray(index)
        self._selected = names if index is None else tuple(names[i] for i in index)
        self._stats = stats
        self._step_id = step_id
        self._model_name = f"river:{type(template).__name__}"
        self._classify = getattr(template, "classify", None) is not None
        # through pickle once: the form a snapshot has, so snapshot -> resume -> snapshot gives the same bytes
        self.model = pickle.loads(pickle.dumps(template.clone()))
        self._seen = 0
        self._history = np.zeros((cfg.history, len(self._selected)))
        self._count = 0
        self._pos = 0
        self._flags = KOfN(*cfg.persistence)
        if resume is not None:
            self.model = pickle.loads(resume["model"])
            self._seen, self._count, self._pos = resume["seen"], resume["count"], resume["pos"]
            self._history = resume["history"].copy()
            self._flags.bits = resume["flags"]

    def snapshot(self) -> dict[str, Any]:
        """Return the model (pickled), the explanation history and the flags."""
        return {
            "model": pickle.dumps(self.model),
            "seen": self._seen,
            "count": self._count,
            "pos": self._pos,
            "history": self._history.copy(),
            "flags": self._flags.bits,
        }

    def _learn(self, x: np.ndarray, sample: dict[str, float]) -> None:
        self.model.learn_one(sample)
        self._history[self._pos] = x
        self._pos = (self._pos + 1) % self._cfg.history
        self._count = min(self._count + 1, self._cfg.history)

    def _explain(self, x: np.ndarray) -> dict[str, float]:
        if not self._count:
            return {}
        past = self._history[: self._count]
        level = np.median(past, axis=0)
        scale = np.maximum(_MAD_TO_STD * np.median(np.abs(past - level), axis=0), 1e-3 * np.abs(level) + 1e-9)
        return raised_by(self._selected, (x - level) / scale, _EXPLAIN_Z)

    def score(self, x: np.ndarray) -> tuple[float, bool, dict[str, float] | None]:
        """Score the selected features *x* of one window; learn from it unless it is flagged."""
        sample = dict(zip(self._selected, x.tolist(), strict=True))
        self._seen += 1
        if self._seen <= self._cfg.warmup:
            self._learn(x, sample)
            return 0.0, False, None
        score = float(self.model.score_one(sample))
        if self._classify:
            crossed = bool(self.model.classify(score))
        else:
            assert self._cfg.threshold is not None
            crossed = score > self._cfg.threshold
        flagged = self._flags.push(crossed) and crossed
        if not self._flags.active:
            self._learn(x, sample)
            return score, False, None
        return score, flagged, self._explain(x) if flagged else None

    def on_batch(self, windows: list[Window]) -> list[Any]:
        """Score each window of one sensor; a window with non-finite features is a dead letter."""
        return score_windows(
            self._step_id, windows, self._names, self._index, self._model_name, self._stats, lambda x, _w: self.score(x)
        )

    def on_eof(self) -> list[Any]:
        """Nothing is held back."""
        return []


def _require_river(step_id: str) -> None:
    try:
        import river  # noqa: F401
    except ImportError:
        msg = f"step {step_id!r}: river_detector needs River; install it with: pip install edgeflow[river]"
        raise ImportError(msg) from None


def river_detector(
    step_id: str,
    up: Stream,
    model: Any,
    *,
    threshold: float | None = None,
    features: list[str] | tuple[str, ...] | None = None,
    warmup: int = 50,
    persistence: tuple[int, int] = (1, 1),
    history: int = 288,
) -> Stream:
    """Score windows with a River anomaly detector *model* (cloned per sensor), learning only normal windows.

    >>> from river import anomaly
    >>> import edgeflow.operators as eo
    >>> from edgeflow import Flow
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms"])
    >>> hst = anomaly.HalfSpaceTrees(seed=7, limits={"rms": (0.0, 2.0)})
    >>> q = eo.river_detector("detect", f, anomaly.QuantileFilter(hst, q=0.995))
    """
    _require_river(step_id)
    cfg: RiverConfig = build_config(
        step_id,
        RiverConfig,
        threshold=threshold,
        features=features,
        warmup=warmup,
        persistence=persistence,
        history=history,
    )
    if not all(callable(getattr(model, name, None)) for name in ("score_one", "learn_one", "clone")):
        raise FlowValidationError(
            step_id,
            "model",
            type(model).__name__,
            "is not a River anomaly detector (score_one, learn_one, clone)",
            hint="pass e.g. river.anomaly.HalfSpaceTrees() or a pipeline ending in one",
        )
    if cfg.threshold is None and not callable(getattr(model, "classify", None)):
        raise FlowValidationError(
            step_id,
            "threshold",
            None,
            f"{type(model).__name__} gives scores but no verdict",
            hint="give threshold= on the model's score scale, or wrap it in river.anomaly.QuantileFilter",
        )

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (feats,) = inputs
        feature_index(step_id, feats, cfg.features)
        return feats.but(kind="scored")

    def build(ctx: StepContext) -> Any:
        stats, names = ctx.run.stats, ctx.input.features
        index = None if cfg.features is None else feature_index(step_id, ctx.input, cfg.features)
        return lambda resume: RiverState(cfg, model, names, index, stats, resume, step_id=step_id)

    return up.flow.add_step(
        Step(step_id, "river", "keyed", (up.step_id,), cfg, schema=schema, build=build, can_fail=True)
    )
