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
becomes a dead letter.

**Updates you can trust.** A model given as a path must be signed by one of the
``trusted_keys`` (default: ``$EDGEFLOW_TRUSTED_KEYS``, else ``models/keys``); an
unsigned, changed, wrongly signed or expired manifest is refused naming the reason.
With ``reload_check_s`` the step watches the model file, and with ``store`` a
gateway's model store (``edgeflow model deploy``, the MQTT agent: :mod:`edgeflow.ota`);
a new verified version first *shadows* the active one for ``shadow.windows`` windows
(scored beside it, compared, never emitted), is promoted between two batches when
the gates pass, and watched for ``shadow.health_windows`` more with the old version
scoring in the background: a breach rolls it back. Every refusal or rollback keeps
the running model scoring, sends one dead letter, prints one line and counts
(``infer.swaps``, ``infer.swap_rejected``, ``infer.rollbacks``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, MapLogic, Schema, Step, StepContext, Stream, build_config
from edgeflow.metrics import FlowStats
from edgeflow.model import LiteRTModelHandler, ModelHandler, ModelInfo, ModelLoadError, missing_members
from edgeflow.model.signing import SignatureError, TrustedKeys
from edgeflow.operators.health import ModelHealth
from edgeflow.operators.ladder import FALLBACK, LEAN_EVERY, Fallback, Ladder, LagGauge
from edgeflow.ota.gates import Gates
from edgeflow.ota.restore import restore
from edgeflow.ota.slot import ModelSlot, Runner, SlotState, Version
from edgeflow.ota.store import ModelStore
from edgeflow.records import DeadLetter, Scored, Window

__all__ = ["DEFAULT_TRUSTED_KEYS", "TRUSTED_KEYS_ENV", "InferConfig", "InferLogic", "PreparedModel", "infer"]

_PROTOCOL = "info, load_model(), run_inference(batch), score(batch), swap(source)"
_LITERT_DEFAULTS = {"variant": None, "num_threads": 1, "max_batch": 64}
DEFAULT_TRUSTED_KEYS = "models/keys"
"""Where trusted public keys are looked for unless ``trusted_keys=`` or ``$EDGEFLOW_TRUSTED_KEYS`` says otherwise."""
TRUSTED_KEYS_ENV = "EDGEFLOW_TRUSTED_KEYS"


class _Default:
    def __repr__(self) -> str:
        return "<default>"


_DEFAULT: Any = _Default()


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
    """Check the model file (and the store) for a new version at most this often (seconds); ``None``: never,
    or every second with a ``store``."""
    trusted_keys: Path | tuple[Path, ...] | None = Path(DEFAULT_TRUSTED_KEYS)
    """Folder of trusted ``*.pub`` keys (or the files); ``None`` runs unsigned models (development only)."""
    allow_downgrade: bool = False
    """Accept an update with an older version number than the running one."""
    store: Path | None = None
    """A gateway's model store (:class:`~edgeflow.ota.store.ModelStore`): updates, and what survives a restart."""
    shadow: Gates | None = Gates()
    """Gates a new version passes before and after promotion; ``None`` switches at once (not recommended)."""
    drift_alarm: PositiveFloat | None = 3.0
    """Raise a drift alarm when a feature's recent median moves this many training std devs; ``None``: never."""
    psi_alarm: PositiveFloat | None = None
    """Raise a PSI alarm when a feature's population stability index against the manifest's training bins
    passes this (0.25: a significant shift); ``None``: never. Manifests without training bins have no PSI."""
    priorities: dict[str, Literal["high", "normal"]] = Field(default_factory=dict)
    """Sensor priorities for the latency ladder: ``high`` sensors keep the model longest (default ``normal``)."""
    fallback: bool = True
    """Score with a per-sensor z-score fallback when the model fails, instead of dead-lettering the windows."""
    lean_hold_s: PositiveFloat | None = None
    """On the ladder's ``lean`` rung, hold windows across engine batches at most this long (seconds), or until
    ``max_batch`` are waiting, and run them as one batch; ``None``: an eighth of the latency budget (the wait
    counts in the latency the ladder watches, and stepping back up needs it under half the budget)."""
    backlog_s: PositiveFloat | None = None
    """With a latency budget: step down the ladder when verdicts lag this much (seconds) behind event time beyond
    each sensor's usual lag (:class:`~edgeflow.operators.ladder.LagGauge`); ``None``: four times the budget."""


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
    initial: SlotState | None = None
    """For a model given as a path: the versions a run starts on (the store's active one after a restart)."""
    load: Callable[[Path, bool], Version] | None = field(default=None, repr=False, compare=False)
    """Loads and verifies an update the way the compile-time check did."""
    last_good: Version | None = None
    seq: int = 0
    """The newest store request already handled."""
    rejected: Mapping[str, str] = field(default_factory=dict)
    """Refused versions (content digest -> why), from the store."""


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

    def __init__(
        self,
        step_id: str,
        cfg: InferConfig,
        prepared: PreparedModel,
        stats: FlowStats,
        notify: Callable[[str], None] | None = None,
        *,
        features: tuple[str, ...] = (),
        budget_ms: float | None = None,
    ) -> None:
        self._step_id = step_id
        self._notify = notify
        self._names = features or tuple(f"f{i}" for i in range(prepared.info.inputs[0].width))
        self._fallback = Fallback(self._names, stats)
        self.ladder: Ladder | None = None
        """The degradation ladder, when the flow has a latency budget."""
        self._lag = LagGauge()
        if budget_ms is not None:
            self.ladder = Ladder(budget_ms / 1e3, backlog_s=cfg.backlog_s, stats=stats, name=step_id)
        self._last_health: dict[str, Any] | None = None
        self.hold_s = cfg.lean_hold_s or (budget_ms / 8e3 if budget_ms is not None else 0.0)
        """Longest a window waits on the ``lean`` rung for company (seconds)."""
        self._held: list[Window] = []
        self._held_since = 0.0
        self._high = frozenset(sensor for sensor, level in cfg.priorities.items() if level == "high")
        self._run_s = budget_ms / 4e3 if budget_ms is not None else 0.0
        """With high-priority sensors: the longest a held run of windows should keep the model (seconds)."""
        self._per_window_s = 0.0  # the model's time per window, smoothed (measured while it scores)
        self._hold_lock = threading.Lock()
        self._ladder_lock = threading.Lock()
        self._health: dict[str, ModelHealth] = {}
        self._health_lock = threading.Lock()
        self._batches = 0
        self._cfg = cfg
        self._prepared = prepared
        self._stats = stats
        self._copy = getattr(prepared.handler, "worker_copy", None)
        self._spare: list[ModelHandler] = []
        """Copies of the compiled handler not in use now (``list.pop``/``append`` are atomic)."""
        self._runners: list[Runner] = []
        self.slot: ModelSlot | None = None
        """The versions this run scores with (a model given as a path); ``None`` for a handler object."""
        if prepared.initial is not None and prepared.load is not None:
            poll = cfg.reload_check_s if cfg.reload_check_s is not None else (1.0 if cfg.store is not None else None)
            self.slot = ModelSlot(
                step_id,
                prepared.initial,
                load=prepared.load,
                gates=cfg.shadow,
                stats=stats,
                store=None if cfg.store is None else ModelStore(cfg.store),
                watch_path=cfg.source if cfg.reload_check_s is not None else None,
                poll_s=poll,
                allow_downgrade=cfg.allow_downgrade,
                last_good=prepared.last_good,
                seq=prepared.seq,
                rejected=dict(prepared.rejected),
                notify=notify,
            )

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
        """Score the windows (the model, or the fallback on the ladder's lower rungs); time the batch for the ladder.

        On the ``lean`` rung windows are held until ``max_batch`` wait or the oldest waited :attr:`hold_s`
        (:meth:`flush` lets the engine run them when no batch comes). High-priority sensors' windows are never
        held, and a held run is cut to what the model scores in a quarter of the budget, so that it cannot keep
        theirs waiting. Non-finite feature vectors become dead letters; when the model fails, the fallback
        scores the windows.
        """
        self._batches += 1
        if self.ladder is not None and (self._held or self.ladder.level == 1):
            urgent: list[Window] = []
            if self._high:
                urgent = [w for w in windows if w.sensor in self._high]
                if urgent:
                    windows = [w for w in windows if w.sensor not in self._high]
            windows = self._coalesce(windows)
            out = self._run(urgent) if urgent else []
            return out + self._run(windows) if windows else out
        return self._run(windows)

    def _run_limit(self) -> int:
        """Return how many held windows make a run: ``max_batch``, or fewer with high-priority sensors."""
        limit = self._cfg.max_batch
        if self._high and self._per_window_s > 0:
            limit = min(limit, max(1, int(self._run_s / self._per_window_s)))
        return limit

    def _coalesce(self, windows: list[Window]) -> list[Window]:
        """Add *windows* to the held ones; return all of them when they are to run now, else ``[]``."""
        now = time.monotonic()
        with self._hold_lock:
            if not self._held:
                self._held_since = now
            self._held += windows
            lean = self.ladder is not None and self.ladder.level == 1
            full = len(self._held) >= self._run_limit()
            if lean and not full and now - self._held_since < self.hold_s:
                return []
            held, self._held = self._held, []
        waited = len(held) - len(windows)
        if waited:
            self._stats.count("infer.coalesced", waited)
        self._stats.count(f"infer.coalesce_runs|{'rung' if not lean else 'count' if full else 'time'}")
        return held

    def flush(self, final: bool) -> list[Any]:
        """Score the held windows: all of them when *final* (input ended), else only once the oldest is overdue.

        >>> handler = LiteRTModelHandler("models/pump_ae/manifest.json")
        >>> info = handler.load_model()
        >>> prepared = PreparedModel(handler, info, info.threshold)
        >>> InferLogic("model", InferConfig(), prepared, FlowStats(), budget_ms=15.0).flush(True)  # nothing held
        []
        """
        with self._hold_lock:
            if not self._held or (not final and time.monotonic() - self._held_since < self.hold_s):
                return []
            held, self._held = self._held, []
        self._stats.count("infer.coalesced", len(held))
        self._stats.count(f"infer.coalesce_runs|{'end' if final else 'time'}")
        return self._run(held)

    def _run(self, windows: list[Window]) -> list[Any]:
        level = self.ladder.level if self.ladder is not None else 0
        if level >= 2:
            high = self._cfg.priorities
            to_model = [w for w in windows if level == 2 and high.get(w.sensor) == "high"]
            rest = [w for w in windows if not (level == 2 and high.get(w.sensor) == "high")]
            out = self._by_fallback(rest, reason=f"ladder:{self.ladder.rung}") if rest else []  # type: ignore[union-attr]
            if to_model:
                out += self._timed_model(to_model)
        else:
            out = self._timed_model(windows)
        if self.ladder is not None:
            self._time(windows)
        return out

    def _timed_model(self, windows: list[Window]) -> list[Any]:
        """Score *windows* with the model; with high-priority sensors, learn its time per window."""
        if not self._high or not windows:
            return self._by_model(windows)
        t0 = time.perf_counter()
        out = self._by_model(windows)
        per = (time.perf_counter() - t0) / len(windows)
        self._per_window_s = per if not self._per_window_s else 0.8 * self._per_window_s + 0.2 * per
        return out

    def _time(self, windows: list[Window]) -> None:
        """Tell the ladder this batch's ingest → verdict latency and its backlog behind event time.

        Windows without an ingest time do not count.
        """
        ingested = [w.t_in for w in windows if w.t_in > 0]
        if not ingested or self.ladder is None:
            return
        latency = (time.perf_counter_ns() - min(ingested)) / 1e9
        with self._ladder_lock:
            backlog = self._lag.observe([(w.sensor, w.end) for w in windows], time.time())
            said = self.ladder.observe(latency, backlog)
        self._stats.set_gauge(f"ladder.backlog_s|{self._step_id}", backlog)
        if said is not None:
            self._stats.set_gauge(f"ladder.level|{self._step_id}", self.ladder.level)
            if self._notify is not None:
                self._notify(f"infer {self._step_id!r}: ladder {said}")

    def _by_fallback(self, windows: list[Window], reason: str) -> list[Any]:
        """Score *windows* with the per-sensor z-score fallback, marked degraded; count them by *reason*."""
        out: list[Any] = []
        ok, feats = self._finite(windows, out)
        anomalies = 0
        for w, row in zip(ok, feats, strict=True):
            score, anomaly = self._fallback.score(w.sensor, row.astype(np.float64))
            anomalies += anomaly
            out.append(Scored(w, score, anomaly, FALLBACK, degraded=True, health=self._with_ladder(self._last_health)))
        if ok:
            self._stats.count(f"infer.fallback|{reason}", len(ok))
        if anomalies:
            self._stats.add(anomalies=anomalies)
        return out

    def _after_model(
        self, handler: Any, info: ModelInfo, ok: list[Window], feats: np.ndarray, scores: np.ndarray
    ) -> dict[str, Any] | None:
        """Feed model health and the fallback's baselines (one batch in LEAN_EVERY on the lean rung); return health."""
        health = self._health_of(handler, info)
        lean = self.ladder is not None and self.ladder.level >= 1
        if lean and self._batches % LEAN_EVERY:
            return health.block()
        if self._cfg.fallback:
            for w, row in zip(ok, feats.astype(np.float64), strict=True):  # one copy for the batch
                self._fallback.learn(w.sensor, row)
        line = health.update(feats, scores)
        if line is not None and self._notify is not None:
            self._notify(f"infer {self._step_id!r}: {line}")
        return health.block()

    def _with_ladder(self, health: dict[str, Any] | None) -> dict[str, Any] | None:
        """*health* with the ladder's rung and cause added while it is below ``full`` (what summaries show)."""
        block = self.ladder.block() if self.ladder is not None else None
        if block is None:
            return health
        return {**(health or {}), "ladder": block}

    def _health_of(self, handler: Any, info: ModelInfo) -> ModelHealth:
        health = self._health.get(info.model_id)
        if health is None:
            with self._health_lock:
                health = self._health.get(info.model_id)
                if health is None:
                    norm = info.manifest.normalization if info.manifest is not None else None
                    dist = info.manifest.distribution if info.manifest is not None else None
                    health = ModelHealth(
                        info.model_id,
                        self._names,
                        None if norm is None else np.asarray(norm.mean),
                        None if norm is None else np.asarray(norm.std),
                        info.inputs[0],
                        self._stats,
                        drift_alarm=self._cfg.drift_alarm,
                        bins=None if dist is None else (dist.edges, dist.proportions),
                        psi_alarm=self._cfg.psi_alarm,
                    )
                    self._health[info.model_id] = health
        return health

    def _failed(self, out: list[Any], model_id: str, exc: Exception, ok: list[Window]) -> list[Any]:
        """Score a batch the model failed on with the fallback (one dead letter says why), or dead-letter it all."""
        self._stats.count("infer.failed", len(ok))
        reason = f"inference with {model_id} failed: {type(exc).__name__}: {exc}"
        if not self._cfg.fallback:
            return out + [DeadLetter(self._step_id, reason, repr(w.features), w.sensor) for w in ok]
        out.append(DeadLetter(self._step_id, f"{reason}; {len(ok)} windows scored by {FALLBACK}", "", ok[0].sensor))
        return out + self._by_fallback(ok, reason="model_failed")

    def _by_model(self, windows: list[Window]) -> list[Any]:
        if self.slot is not None:
            try:
                runner = self._runners.pop()
            except IndexError:  # every runner is busy in another thread (or this is the first batch): one more
                runner = Runner()
            try:
                return self._score_slot(self.slot, runner, windows)
            finally:
                self._runners.append(runner)
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

    def _finite(self, windows: list[Window], out: list[Any]) -> tuple[list[Window], np.ndarray]:
        """Return the windows with finite feature vectors and their features; others become dead letters in *out*."""
        # a lone window (the usual case when paced) skips the copy into a new batch array
        feats = windows[0].features[None, :] if len(windows) == 1 else np.stack([w.features for w in windows])  # type: ignore[index,misc]
        finite = np.isfinite(feats).all(axis=1)
        if finite.all():
            return windows, feats
        for w in (w for w, good in zip(windows, finite, strict=True) if not good):
            out.append(DeadLetter(self._step_id, "non-finite feature vector", repr(w.features), w.sensor))
        return [w for w, good in zip(windows, finite, strict=True) if good], feats[finite]

    def _score_slot(self, slot: ModelSlot, runner: Runner, windows: list[Window]) -> list[Any]:
        out: list[Any] = []
        while slot.notes:  # rejections and rollbacks decided since the last batch: one dead letter each
            try:
                reason, payload = slot.notes.pop(0)
            except IndexError:  # another thread took it
                break
            out.append(DeadLetter(self._step_id, reason, payload, windows[0].sensor))
        ok, feats = self._finite(windows, out)
        if not ok:
            return out
        active = slot.state.active
        self._health_of(active.handler, active.info)  # before its first invoke: saturation counts every input
        started = time.perf_counter()
        try:
            outcome = slot.score(runner, feats)
        except Exception as exc:  # the runtime failing on one batch must not stop the flow
            return self._failed(out, slot.state.active.model_id, exc, ok)
        self._count_invokes(outcome.version.handler, len(ok), time.perf_counter() - started)
        model_id = outcome.version.model_id
        health = self._after_model(outcome.version.handler, outcome.version.info, ok, feats, outcome.scores)
        self._last_health = health
        health = self._with_ladder(health)
        for w, score, flag in zip(ok, outcome.scores.tolist(), outcome.flags.tolist(), strict=True):
            out.append(Scored(w, score, flag, model_id, health=health))
        self._stats.count("infer.windows", len(ok))
        anomalies = int(np.count_nonzero(outcome.flags))
        if anomalies:
            self._stats.add(anomalies=anomalies)
        return out

    def _count_invokes(self, handler: ModelHandler, windows: int, seconds: float) -> None:
        """Count the model invokes that scored *windows* in *seconds*: each one timed (the time split evenly)."""
        per_invoke = getattr(handler, "invocations_per_batch", None) or windows
        invokes = -(-windows // per_invoke)
        self._stats.count("infer.batches", invokes)
        histogram, each_ns = self._stats.histogram("infer.invoke"), round(seconds * 1e9 / invokes)
        for _ in range(invokes):
            histogram.observe_ns(each_ns)

    def _score(self, handler: ModelHandler, windows: list[Window]) -> list[Any]:
        out = self._refresh(handler, windows[0].sensor)
        ok, feats = self._finite(windows, out)
        if not ok:
            return out
        info = handler.info
        self._health_of(handler, info)  # before its first invoke: saturation counts every input
        started = time.perf_counter()
        try:
            scores = handler.score(feats)
        except Exception as exc:  # the runtime failing on one batch must not stop the flow
            return self._failed(out, info.model_id, exc, ok)
        self._count_invokes(handler, len(ok), time.perf_counter() - started)
        threshold = self._threshold(info)
        scores = np.asarray(scores, dtype=np.float64)
        health = self._after_model(handler, info, ok, feats, scores)
        self._last_health = health
        health = self._with_ladder(health)
        anomalies = 0
        for w, score in zip(ok, scores.tolist(), strict=True):
            anomaly = score > threshold
            anomalies += anomaly
            out.append(Scored(w, score, anomaly, info.model_id, health=health))
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
    trusted_keys: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = _DEFAULT,
    allow_downgrade: bool = False,
    store: str | os.PathLike[str] | None = None,
    shadow: Gates | Mapping[str, Any] | None = _DEFAULT,
    drift_alarm: float | None = 3.0,
    psi_alarm: float | None = None,
    priorities: Mapping[str, str] | None = None,
    fallback: bool = True,
    backlog_s: float | None = None,
    lean_hold_s: float | None = None,
) -> Stream:
    """Score each window's features with *model* (a manifest, a ``.tflite`` file or a handler); emit scored windows.

    *variant*, *num_threads* and *max_batch* shape the LiteRT handler made from a path; a handler object
    brings its own. *trusted_keys* (default ``$EDGEFLOW_TRUSTED_KEYS`` or ``models/keys``) verify a model
    given as a path; *store* and *reload_check_s* bring updates, which pass the *shadow* gates
    (:class:`~edgeflow.ota.gates.Gates`, or a dict of its fields) before and after they take over.

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
    explicit = {
        name: value
        for name, value in (("trusted_keys", trusted_keys), ("store", store), ("allow_downgrade", allow_downgrade))
        if value is not _DEFAULT and value not in (None, False)
    }
    if trusted_keys is _DEFAULT:
        trusted_keys = os.environ.get(TRUSTED_KEYS_ENV) or DEFAULT_TRUSTED_KEYS
    settings: dict[str, Any] = {
        "source": None if handler is not None else model,
        "variant": variant,
        "threshold": threshold,
        "num_threads": num_threads,
        "max_batch": max_batch,
        "reload_check_s": reload_check_s,
        "trusted_keys": trusted_keys
        if isinstance(trusted_keys, (str, os.PathLike, type(None)))
        else tuple(trusted_keys),
        "allow_downgrade": allow_downgrade,
        "store": store,
        "drift_alarm": drift_alarm,
        "psi_alarm": psi_alarm,
        "priorities": dict(priorities or {}),
        "fallback": fallback,
        "backlog_s": backlog_s,
        "lean_hold_s": lean_hold_s,
    }
    if shadow is not _DEFAULT:
        settings["shadow"] = shadow
    cfg: InferConfig = build_config(step_id, InferConfig, **settings)
    if handler is not None:
        _check_handler_settings(step_id, handler, cfg, explicit)
    flow, upstream = up.flow, up.step_id

    def schema(inputs: tuple[Schema, ...]) -> Schema:
        (feats,) = inputs
        _features_of(step_id, feats)
        return feats.but(kind="scored")

    def check() -> PreparedModel:
        features = _features_of(step_id, _resolved_schema(flow, upstream))
        return _prepare(step_id, cfg, handler, features)

    def build(ctx: StepContext) -> MapLogic:
        features = ctx.inputs[0].features
        budget = ctx.run.latency_budget_ms
        logic = InferLogic(
            step_id, cfg, ctx.prepared, ctx.run.stats, notify=_terminal_line, features=features, budget_ms=budget
        )
        if logic.ladder is None:
            return MapLogic(batch=logic.on_batch)
        return MapLogic(batch=logic.on_batch, flush=logic.flush, flush_every_s=max(logic.hold_s / 4, 1e-3))

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


def _terminal_line(line: str) -> None:
    from edgeflow.terminal import err

    err.print(line, markup=False)


def _check_handler_settings(step_id: str, handler: Any, cfg: InferConfig, explicit: Mapping[str, Any]) -> None:
    for name, default in _LITERT_DEFAULTS.items():
        value = getattr(cfg, name)
        if value != default:
            problem = f"{name} shapes the LiteRT handler made from a path, but model= is a {type(handler).__name__}"
            raise FlowValidationError(step_id, name, value, problem, hint=f"set {name} on the handler you pass")
    for name, value in explicit.items():
        problem = (
            f"{name} applies to a model given as a path (signed manifests, the model store), but model= is a "
            f"{type(handler).__name__}"
        )
        raise FlowValidationError(step_id, name, value, problem, hint="verify and update the model in your handler")
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
        return _prepare_path(step_id, cfg, features)
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


class _NoThreshold(ModelLoadError):
    """A model without a threshold, where the flow sets none either."""


def _trusted(step_id: str, cfg: InferConfig) -> TrustedKeys | None:
    if cfg.trusted_keys is None:
        return None
    where = cfg.trusted_keys
    try:
        return TrustedKeys.load(list(where) if isinstance(where, tuple) else where)
    except SignatureError as exc:
        hint = (
            f"make a key pair with `edgeflow model keygen NAME --out {DEFAULT_TRUSTED_KEYS}`, sign the model with "
            f"`edgeflow model sign`, and give the public key's folder as trusted_keys= (or ${TRUSTED_KEYS_ENV}); "
            "trusted_keys=None runs unsigned models (development only)"
        )
        shown = [str(p) for p in where] if isinstance(where, tuple) else str(where)
        raise FlowValidationError(step_id, "trusted_keys", shown, str(exc), hint=hint) from None


def _prepare_path(step_id: str, cfg: InferConfig, features: tuple[str, ...]) -> PreparedModel:
    """Verify and load the model a path names (or the store's active version after a restart)."""
    assert cfg.source is not None
    trusted = _trusted(step_id, cfg)

    def load(path: Path, check_expiry: bool) -> Version:
        handler = LiteRTModelHandler(
            path,
            variant=cfg.variant,
            num_threads=cfg.num_threads,
            max_batch=cfg.max_batch,
            trusted_keys=trusted,
            check_expiry=check_expiry,
            allow_downgrade=cfg.allow_downgrade,
        )
        info = handler.load_model()
        threshold = cfg.threshold if cfg.threshold is not None else info.threshold
        if threshold is None:
            msg = f"the model {info.model_id} has no manifest threshold"
            raise _NoThreshold(msg)
        return Version(handler, info, threshold, path)

    restored = restore(
        None if cfg.store is None else ModelStore(cfg.store),
        load,
        lambda: _load_source(step_id, cfg, load),
        cfg.shadow,
        say=lambda line: _terminal_line(f"model {step_id!r}: {line}"),
    )
    active = restored.initial.active
    _check_input(step_id, active.info, features)
    _warn_test_key(step_id, active.info)
    return PreparedModel(
        active.handler,
        active.info,
        active.threshold,
        initial=restored.initial,
        load=load,
        last_good=restored.last_good,
        seq=restored.seq,
        rejected=restored.rejected,
    )


def _load_source(step_id: str, cfg: InferConfig, load: Callable[[Path, bool], Version]) -> Version:
    assert cfg.source is not None
    if not cfg.source.exists():
        hint = "build it with `edgeflow model build`, or check the path"
    elif cfg.trusted_keys is not None:
        hint = (
            "`edgeflow model verify PATH` shows what is wrong; restore or rebuild the model, or sign it with "
            "`edgeflow model sign` and a key in trusted_keys"
        )
    else:
        hint = "rebuild the model or restore the file; `edgeflow model info PATH` shows what is wrong"
    try:
        return load(cfg.source, True)
    except _NoThreshold as exc:
        raise FlowValidationError(step_id, "threshold", None, str(exc), hint="pass threshold=") from None
    except ModelLoadError as exc:
        raise FlowValidationError(step_id, "model", str(cfg.source), str(exc), hint=hint) from None


def _warn_test_key(step_id: str, info: ModelInfo) -> None:
    signer = info.signer
    if signer is not None and signer.test_key:
        _terminal_line(
            f"model {step_id!r}: {info.model_id} is signed with the TEST key {signer.key_name} ({signer.key_id}), "
            "whose private half is public: replace it with your own key before deploying (docs/ota.md)"
        )


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
