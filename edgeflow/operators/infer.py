"""Run a (quantized) model on each window's feature vector and emit anomaly scores.

The step is a stateless batch step: all windows that arrive together, from every
sensor, run through the model as one batch (one interpreter invoke for up to
``max_batch`` windows), fused with the features step before it; a lone window
runs at once, nothing is ever held back waiting for company.
Inputs are normalised as the model's manifest says, quantized with the model's
own scale and zero point, and the outputs dequantized (see
:mod:`edgeflow.model`). Every :class:`~edgeflow.records.Scored` carries the
``name@version`` of the model that produced it.

At compile time the model file must exist, load and run, and its input must
take the upstream feature vector (same length, and the same feature names when
the manifest lists them). While the flow runs, a window whose features are not
finite, or a batch the runtime fails on, becomes a dead letter; with
``reload_check_s`` the step watches the model file and swaps in a new version,
keeping the old model (and sending one dead letter) when the new one is
damaged.

Interpreters are per worker thread and loaded on the first batch, not at import.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Schema, Step, Stream, build_config
from edgeflow.metrics import FlowStats, flow_stats
from edgeflow.model import LiteRTModelHandler, ModelInfo, ModelLoadError
from edgeflow.records import DeadLetter, Scored, Window

__all__ = ["InferConfig", "InferState", "infer"]


class InferConfig(BaseModel):
    """Settings of :func:`infer`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Path
    """The ``model`` argument: a model ``manifest.json`` or a bare ``.tflite`` file."""
    variant: str | None = None
    """Which file of the manifest to run (default: the manifest's ``default``, normally ``int8``)."""
    threshold: PositiveFloat | None = None
    """Anomaly threshold on the score; default: the manifest's."""
    num_threads: PositiveInt = Field(default=1, le=64)
    """Interpreter threads; 1 suits a small gateway running one worker."""
    max_batch: PositiveInt = Field(default=64, le=4096)
    """Most windows of one sensor run in one invoke."""
    reload_check_s: NonNegativeFloat | None = None
    """Check the model file for a new version at most this often (seconds); ``None`` never checks."""


class _Handlers:
    """One model handler per worker thread, loaded on first use."""

    def __init__(self, cfg: InferConfig) -> None:
        self._cfg = cfg
        self._local = threading.local()

    def get(self) -> LiteRTModelHandler:
        handler: LiteRTModelHandler | None = getattr(self._local, "handler", None)
        if handler is None:
            cfg = self._cfg
            handler = LiteRTModelHandler(cfg.source, variant=cfg.variant, num_threads=cfg.num_threads,
                                         max_batch=cfg.max_batch)
            handler.load_model()
            self._local.handler = handler
        return handler


class InferState:
    """Scores batches of windows, from any sensors, with the worker thread's model.

    >>> cfg = InferConfig(source="models/pump_ae/manifest.json")
    >>> state = InferState("model", cfg, _Handlers(cfg), flow_stats("doc-infer"))
    >>> w = Window("pump-1", 0.0, 0.5, np.zeros((1, 256), np.float32), 500.0, 64, 2000, 0,
    ...            features=np.full(14, np.nan, dtype=np.float32))
    >>> [type(item).__name__ for item in state.on_batch([w])]
    ['DeadLetter']
    """

    def __init__(self, step_id: str, cfg: InferConfig, handlers: _Handlers, stats: FlowStats) -> None:
        self._step_id = step_id
        self._cfg = cfg
        self._handlers = handlers
        self._stats = stats

    def _threshold(self, info: ModelInfo) -> float:
        threshold = self._cfg.threshold if self._cfg.threshold is not None else info.threshold
        assert threshold is not None  # checked at compile time
        return threshold

    def _refresh(self, handler: LiteRTModelHandler, sensor: str) -> list[Any]:
        if self._cfg.reload_check_s is None:
            return []
        old = handler.info.model_id
        try:
            new = handler.refresh(self._cfg.reload_check_s)
        except ModelLoadError as exc:
            self._stats.count("infer.swap_rejected")
            reason = f"model update rejected, still running {old}: {exc}"
            return [DeadLetter(self._step_id, reason, str(handler.source), sensor)]
        if new is not None:
            self._stats.count("infer.swaps")
        return []

    def on_batch(self, windows: list[Window]) -> list[Any]:
        """Score the windows; non-finite feature vectors and failed invokes become dead letters."""
        handler = self._handlers.get()
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
        self._stats.count("infer.batches", -(-len(ok) // handler.invocations_per_batch))
        self._stats.count("infer.windows", len(ok))
        if anomalies:
            self._stats.add(anomalies=anomalies)
        return out

    def on_eof(self) -> list[Any]:
        """Nothing is held back."""
        return []


def infer(
    step_id: str,
    up: Stream,
    *,
    model: str | Path,
    variant: str | None = None,
    threshold: float | None = None,
    num_threads: int = 1,
    max_batch: int = 64,
    reload_check_s: float | None = None,
) -> Stream:
    """Score each window's features with *model* (a manifest or ``.tflite``); emit scored windows.

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
    cfg: InferConfig = build_config(
        step_id,
        InferConfig,
        source=model,
        variant=variant,
        threshold=threshold,
        num_threads=num_threads,
        max_batch=max_batch,
        reload_check_s=reload_check_s,
    )
    flow = up.flow

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (feats,) = inputs
        if feats.kind != "windows" or not feats.features:
            raise FlowValidationError(
                step_id, "up", feats.kind, "infer needs feature vectors", hint="put eo.features before it"
            )
        _check_model(step_id, cfg, feats.features)
        return feats.but(kind="scored")

    handlers = _Handlers(cfg)
    states: dict[int, InferState] = {}

    def score_batch(windows: list[Window]) -> list[Any]:
        # stateless across windows, so every sensor's ready windows share one invoke; the engine
        # fuses this step with the features before it
        state = states.get(threading.get_ident())
        if state is None:
            state = states[threading.get_ident()] = InferState(step_id, cfg, handlers, flow_stats(flow.name))
        return state.on_batch(windows)

    return flow.add_step(
        Step(step_id, "infer", "map", (up.step_id,), cfg, schema=schema, can_fail=True, batch=score_batch)
    )


def _check_model(step_id: str, cfg: InferConfig, features: tuple[str, ...]) -> None:
    handler = LiteRTModelHandler(cfg.source, variant=cfg.variant, num_threads=cfg.num_threads)
    try:
        info = handler.load_model()
    except ModelLoadError as exc:
        hint = "build it with `edgeflow model build`, or check the path" if not cfg.source.exists() else (
            "rebuild the model or restore the file; `edgeflow model info PATH` shows what is wrong"
        )
        raise FlowValidationError(step_id, "model", str(cfg.source), str(exc), hint=hint) from None
    spec = info.inputs[0]
    got = f"(batch, {len(features)}) float32"
    want = f"(batch, {spec.width}) {spec.dtype}"
    if spec.width != len(features):
        problem = f"the model takes input shape {want} but the upstream feature vector has shape {got}"
        raise FlowValidationError(
            step_id, "up", list(features), problem,
            hint=f"compute the model's {spec.width} features upstream, or use a model built for these features",
        )
    if info.manifest is not None and info.manifest.features != features:
        diff = [f"{a} != {b}" for a, b in zip(info.manifest.features, features, strict=True) if a != b]
        problem = (
            f"the model {info.model_id} was trained on features {list(info.manifest.features)} "
            f"but gets {list(features)} (same shape {want} vs {got}; differ: {', '.join(diff)})"
        )
        raise FlowValidationError(step_id, "up", list(features), problem, hint="compute the features in its order")
    if cfg.threshold is None and info.threshold is None:
        raise FlowValidationError(
            step_id, "threshold", None, f"the model {info.model_id} has no manifest threshold", hint="pass threshold="
        )
