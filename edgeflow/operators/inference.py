"""Run a model on each window's feature vector and emit anomaly scores.

``model=`` is a path (a ``manifest.json`` or a bare ``.tflite`` file, run on
LiteRT by :class:`~edgeflow.model.LiteRTModelHandler`) or any object that follows
the :class:`~edgeflow.model.ModelHandler` protocol, as with Apache Beam's
``RunInference``. Every :class:`~edgeflow.records.Scored` carries the
``name@version`` of the model that produced it.

The model is loaded once, when the flow is compiled: the file must exist, match
its manifest's checksum, load and run, and the model's input must take the
upstream feature vector (same length, and the same feature names when the
manifest lists them). A run reuses what the compiler loaded; each worker thread
that scores a batch gets its own copy of the loaded model (``worker_copy()``,
no re-read or re-check), or, for a handler without one, threads take turns.

The step is stateless: all windows that arrive together, from every sensor,
run through the model as one batch (one interpreter invoke for up to
``max_batch`` windows), fused with the features step before it; a lone window
runs at once, nothing is ever held back waiting for company. While the flow
runs, a window whose features are not finite, or a batch the runtime fails on,
becomes a dead letter; with ``reload_check_s`` the step watches the model file
and swaps in a new version, keeping the old model (and sending one dead letter)
when the new one is damaged.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, MapLogic, Schema, Step, StepContext, Stream, build_config
from edgeflow.metrics import FlowStats
from edgeflow.model import LiteRTModelHandler, ModelHandler, ModelInfo, ModelLoadError, missing_members
from edgeflow.records import DeadLetter, Scored, Window

__all__ = ["InferConfig", "InferLogic", "PreparedModel", "infer"]

_PROTOCOL = "info, load_model(), run_inference(batch), score(batch), swap(source)"
_LITERT_DEFAULTS = {"variant": None, "num_threads": 1, "max_batch": 64}


class InferConfig(BaseModel):
    """Settings of :func:`infer`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Path | None = None
    """The ``model`` argument when it is a path (a ``manifest.json`` or a ``.tflite`` file); ``None`` for a handler."""
    variant: str | None = None
    """Which file of the manifest to run (default: the manifest's ``default``, normally ``int8``)."""
    threshold: PositiveFloat | None = None
    """Anomaly threshold on the score; default: the manifest's."""
    num_threads: PositiveInt = Field(default=1, le=64)
    """Interpreter threads; 1 suits a small gateway running one worker."""
    max_batch: PositiveInt = Field(default=64, le=4096)
    """Most windows run in one invoke."""
    reload_check_s: NonNegativeFloat | None = None
    """Check the model file for a new version at most this often (seconds); ``None`` never checks."""


@dataclass(frozen=True)
class PreparedModel:
    """What the compile-time check loaded and verified, handed to every run of the compiled flow."""

    handler: ModelHandler
    """The handler, its model loaded; runs use copies of it (``worker_copy()``) when it has them."""
    info: ModelInfo
    """The model as loaded at compile time."""
    threshold: float
    """The anomaly threshold in force: the ``threshold`` setting, else the model's own."""
    turns: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Serialises batches on a handler that has no ``worker_copy()`` (shared by every run)."""


class InferLogic:
    """Scores batches of windows, from any sensors, for one run of the step.

    Batches from several worker threads may run at once, each on its own copy of the compiled model
    (``worker_copy()``); a handler without copies serves one batch at a time.

    >>> from edgeflow.metrics import FlowStats
    >>> handler = LiteRTModelHandler("models/pump_ae/manifest.json")
    >>> info = handler.load_model()
    >>> logic = InferLogic("model", InferConfig(), PreparedModel(handler, info, info.threshold), FlowStats())
    >>> def window(value: float) -> Window:
    ...     return Window("pump-1", 0.0, 0.5, np.zeros((1, 256), np.float32), 500.0, 64, 2000, 0,
    ...                   features=np.full(14, value, dtype=np.float32))
    >>> [type(item).__name__ for item in logic.on_batch([window(np.nan), window(0.0)])]
    ['DeadLetter', 'Scored']
    """

    def __init__(self, step_id: str, cfg: InferConfig, prepared: PreparedModel, stats: FlowStats) -> None:
        self._step_id = step_id
        self._cfg = cfg
        self._prepared = prepared
        self._stats = stats
        self._copy = getattr(prepared.handler, "worker_copy", None)
        self._spare: list[ModelHandler] = []
        """Copies of the compiled handler not in use now (``list.pop``/``append`` are atomic)."""

    def _threshold(self, info: ModelInfo) -> float:
        if self._cfg.threshold is not None:
            return self._cfg.threshold
        return info.threshold if info.threshold is not None else self._prepared.threshold

    def _refresh(self, handler: Any, sensor: str) -> list[Any]:
        if self._cfg.reload_check_s is None:
            return []
        old = handler.info
        try:
            new = handler.refresh(self._cfg.reload_check_s)
        except ModelLoadError as exc:
            self._stats.count("infer.swap_rejected")
            reason = f"model update rejected, still running {old.model_id}: {exc}"
            return [DeadLetter(self._step_id, reason, str(getattr(handler, "source", old.path)), sensor)]
        if new is not None:
            self._stats.count("infer.swaps")
        return []

    def on_batch(self, windows: list[Window]) -> list[Any]:
        """Score the windows; non-finite feature vectors and failed invokes become dead letters."""
        if self._copy is None:
            with self._prepared.turns:
                return self._score(self._prepared.handler, windows)
        try:
            handler = self._spare.pop()
        except IndexError:  # every copy is busy in another thread (or this is the first batch): one more
            handler = self._copy()
        try:
            return self._score(handler, windows)
        finally:
            self._spare.append(handler)

    def _score(self, handler: ModelHandler, windows: list[Window]) -> list[Any]:
        out = self._refresh(handler, windows[0].sensor)
        # a lone window (the usual case when paced) skips the copy into a new batch array
        feats = windows[0].features[None, :] if len(windows) == 1 else np.stack([w.features for w in windows])  # type: ignore[index,misc]
        ok = windows
        finite = np.isfinite(feats).all(axis=1)
        if not finite.all():
            ok = [w for w, good in zip(windows, finite, strict=True) if good]
            for w in (w for w, good in zip(windows, finite, strict=True) if not good):
                out.append(DeadLetter(self._step_id, "non-finite feature vector", repr(w.features), w.sensor))
            feats = feats[finite]
            if not ok:
                return out
        info = handler.info
        try:
            scores = handler.score(feats)
        except Exception as exc:  # the runtime failing on one batch must not stop the flow
            self._stats.count("infer.failed", len(ok))
            reason = f"inference with {info.model_id} failed: {type(exc).__name__}: {exc}"
            return out + [DeadLetter(self._step_id, reason, repr(w.features), w.sensor) for w in ok]
        threshold = self._threshold(info)
        anomalies = 0
        for w, score in zip(ok, scores.tolist(), strict=True):
            anomaly = score > threshold
            anomalies += anomaly
            out.append(Scored(w, score, anomaly, info.model_id))
        per_invoke = getattr(handler, "invocations_per_batch", None) or len(ok)
        self._stats.count("infer.batches", -(-len(ok) // per_invoke))
        self._stats.count("infer.windows", len(ok))
        if anomalies:
            self._stats.add(anomalies=anomalies)
        return out


def infer(
    step_id: str,
    up: Stream,
    *,
    model: str | os.PathLike[str] | ModelHandler,
    variant: str | None = None,
    threshold: float | None = None,
    num_threads: int = 1,
    max_batch: int = 64,
    reload_check_s: float | None = None,
) -> Stream:
    """Score each window's features with *model* (a manifest, a ``.tflite`` file or a handler); emit scored windows.

    *variant*, *num_threads* and *max_batch* shape the LiteRT handler made from a path; a handler object
    brings its own.

    >>> from edgeflow import Flow
    >>> from edgeflow.compiler import compile_flow
    >>> import edgeflow.operators as eo
    >>> flow = Flow("doc-infer")
    >>> s = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
    >>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms", "p95"])
    >>> scores = infer("model", f, model="models/pump_ae/manifest.json")
    >>> eo.output("print", scores, eo.stdout())
    >>> compile_flow(flow)
    Traceback (most recent call last):
    ...
    edgeflow.errors.FlowValidationError: step 'model': ...: the model takes input shape (batch, 14) int8 ...
    """
    handler = None if isinstance(model, (str, os.PathLike)) else _as_handler(step_id, model)
    cfg: InferConfig = build_config(
        step_id,
        InferConfig,
        source=None if handler is not None else model,
        variant=variant,
        threshold=threshold,
        num_threads=num_threads,
        max_batch=max_batch,
        reload_check_s=reload_check_s,
    )
    if handler is not None:
        _check_handler_settings(step_id, handler, cfg)
    flow, upstream = up.flow, up.step_id

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (feats,) = inputs
        _features_of(step_id, feats)
        return feats.but(kind="scored")

    def check() -> PreparedModel:
        features = _features_of(step_id, _resolved_schema(flow, upstream))
        return _prepare(step_id, cfg, handler, features)

    def build(ctx: StepContext) -> MapLogic:
        logic = InferLogic(step_id, cfg, ctx.prepared, ctx.run.stats)
        return MapLogic(batch=logic.on_batch)

    return flow.add_step(
        Step(step_id, "infer", "map", (upstream,), cfg, schema=schema, build=build, can_fail=True, check=check)
    )


def _as_handler(step_id: str, model: Any) -> ModelHandler:
    missing = missing_members(model)
    if missing:
        problem = (
            f"a {type(model).__name__} is not a model handler: it lacks {', '.join(missing)} "
            f"(the ModelHandler protocol: {_PROTOCOL})"
        )
        hint = "pass the path of a manifest.json or .tflite file, or an object following edgeflow.model.ModelHandler"
        raise FlowValidationError(step_id, "model", model, problem, hint=hint)
    return model  # type: ignore[no-any-return]


def _check_handler_settings(step_id: str, handler: Any, cfg: InferConfig) -> None:
    for name, default in _LITERT_DEFAULTS.items():
        value = getattr(cfg, name)
        if value != default:
            problem = f"{name} shapes the LiteRT handler made from a path, but model= is a {type(handler).__name__}"
            raise FlowValidationError(step_id, name, value, problem, hint=f"set {name} on the handler you pass")
    if cfg.reload_check_s is not None and not callable(getattr(type(handler), "refresh", None)):
        problem = f"watching for model updates needs refresh(min_interval_s), which {type(handler).__name__} lacks"
        raise FlowValidationError(
            step_id, "reload_check_s", cfg.reload_check_s, problem, hint="add refresh() or leave reload_check_s unset"
        )


def _features_of(step_id: str, feats: Schema) -> tuple[str, ...]:
    if feats.kind != "windows" or not feats.features:
        raise FlowValidationError(
            step_id, "up", feats.kind, "infer needs feature vectors", hint="put eo.features before it"
        )
    return feats.features


def _resolved_schema(flow: Flow, step_id: str) -> Schema:
    """Work out the output schema of *step_id* from its own and its ancestors' schema rules.

    Schema rules are pure, so the check can work out what its step will get without state shared with the
    compiler (which has already checked the graph for unknown steps and cycles).
    """
    by_id = {step.step_id: step for step in flow.steps}
    resolved: dict[str, Schema] = {}

    def resolve(sid: str) -> Schema:
        if sid not in resolved:
            step = by_id[sid]
            resolved[sid] = step.schema(tuple(resolve(src) for src in step.inputs))
        return resolved[sid]

    return resolve(step_id)


def _prepare(step_id: str, cfg: InferConfig, given: ModelHandler | None, features: tuple[str, ...]) -> PreparedModel:
    """Load and verify the model once; raise :class:`FlowValidationError` naming the step if it cannot serve."""
    if given is None:
        assert cfg.source is not None
        handler: ModelHandler = LiteRTModelHandler(
            cfg.source, variant=cfg.variant, num_threads=cfg.num_threads, max_batch=cfg.max_batch
        )
        shown: Any = str(cfg.source)
        if not cfg.source.exists():
            hint = "build it with `edgeflow model build`, or check the path"
        else:
            hint = "rebuild the model or restore the file; `edgeflow model info PATH` shows what is wrong"
    else:
        handler, shown, hint = given, given, f"fix what {type(given).__name__}.load_model() reports"
    try:
        info = handler.load_model()
    except ModelLoadError as exc:
        raise FlowValidationError(step_id, "model", shown, str(exc), hint=hint) from None
    if not isinstance(info, ModelInfo):
        problem = f"load_model() returned a {type(info).__name__}, expected an edgeflow.model.ModelInfo"
        raise FlowValidationError(step_id, "model", shown, problem, hint="return the loaded model's ModelInfo")
    _check_input(step_id, info, features)
    threshold = cfg.threshold if cfg.threshold is not None else info.threshold
    if threshold is None:
        raise FlowValidationError(
            step_id, "threshold", None, f"the model {info.model_id} has no manifest threshold", hint="pass threshold="
        )
    _check_scores(step_id, handler, info, shown)
    return PreparedModel(handler, info, threshold)


def _check_input(step_id: str, info: ModelInfo, features: tuple[str, ...]) -> None:
    spec = info.inputs[0]
    got = f"(batch, {len(features)}) float32"
    want = f"(batch, {spec.width}) {spec.dtype}"
    if spec.width != len(features):
        problem = f"the model takes input shape {want} but the upstream feature vector has shape {got}"
        raise FlowValidationError(
            step_id,
            "up",
            list(features),
            problem,
            hint=f"compute the model's {spec.width} features upstream, or use a model built for these features",
        )
    if info.manifest is not None and info.manifest.features != features:
        diff = [f"{a} != {b}" for a, b in zip(info.manifest.features, features, strict=True) if a != b]
        problem = (
            f"the model {info.model_id} was trained on features {list(info.manifest.features)} "
            f"but gets {list(features)} (same shape {want} vs {got}; differ: {', '.join(diff)})"
        )
        raise FlowValidationError(step_id, "up", list(features), problem, hint="compute the features in its order")


def _check_scores(step_id: str, handler: ModelHandler, info: ModelInfo, shown: Any) -> None:
    """Check that a handler's ``score`` gives one value per row (LiteRT's do; a handler written for a flow may not)."""
    if isinstance(handler, LiteRTModelHandler):
        return  # smoke-tested while loading
    rows = np.zeros((2, info.inputs[0].width), dtype=np.float32)
    try:
        scores = np.asarray(handler.score(rows))
    except Exception as exc:
        problem = f"score() fails on 2 rows of zeros: {type(exc).__name__}: {exc}"
        raise FlowValidationError(step_id, "model", shown, problem, hint="score(batch) takes (n, features)") from None
    if scores.shape != (2,):
        problem = f"score() of 2 rows returned shape {scores.shape}, expected (2,): one score per row"
        raise FlowValidationError(step_id, "model", shown, problem, hint="return one anomaly score per row")
