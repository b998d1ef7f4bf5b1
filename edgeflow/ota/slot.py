"""The model slot of one ``eo.infer`` step: which version scores, which one shadows it, and when they change.

Phases, per run of the step (and per simulated gateway):

* **serving**: the active version scores every batch;
* **shadow**: a verified candidate scores the same batches beside the active one, its
  results are only compared (:class:`~edgeflow.ota.gates.GateWatch`), never emitted;
  when the gates pass it is promoted, when they fail it is rejected;
* **watch**: after a promotion the last good version keeps scoring in the background;
  a breach of the same gates rolls back to it, a pass makes the new version the last good.

Each batch reads the slot's state once, so a whole batch is scored by one version and
a switch falls between two batches: no window is lost or scored twice. Everything
slow (reading and verifying a candidate, writing the store, printing) happens in one
background thread per slot; the batch path only swaps a reference.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.model import ModelInfo, ModelLoadError
from edgeflow.model.litert import version_problem
from edgeflow.model.reload import Stamp, watched_stamp
from edgeflow.ota.gates import Gates, GateWatch, Verdict
from edgeflow.ota.store import ModelStore

__all__ = ["ModelSlot", "Outcome", "Runner", "SlotState", "Version"]

Phase = Literal["serving", "shadow", "watch"]


@dataclass(frozen=True, eq=False)
class Version:
    """A loaded, verified model version: the handler copies are made from, and the threshold it flags with."""

    handler: Any
    info: ModelInfo
    threshold: float
    source: Path
    """The manifest (or model file) it was loaded from."""

    @property
    def model_id(self) -> str:
        """The exact id every score of this version carries."""
        return self.info.model_id

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity, as the store records it."""
        return {
            "model": self.model_id,
            "version": self.info.version,
            "path": str(self.source.absolute()),
            "digest": self.info.digest,
        }


@dataclass(frozen=True, eq=False)
class SlotState:
    """What the slot runs now; replaced as a whole (a reference swap) at every change."""

    active: Version
    other: Version | None = None
    """The candidate (phase ``shadow``) or the last good version (phase ``watch``)."""
    phase: Phase = "serving"
    watch: GateWatch | None = None
    request: dict[str, Any] | None = None
    """The store request (or file change) the current candidate came from."""


@dataclass(frozen=True)
class Outcome:
    """One batch's result: scores, flags and the version that produced them."""

    scores: np.ndarray
    flags: np.ndarray
    version: Version


class Runner:
    """One worker thread's interpreter copies, one per version it has met (LiteRT interpreters are not thread-safe)."""

    def __init__(self) -> None:
        self._copies: dict[int, tuple[Version, Any]] = {}

    def handler(self, version: Version) -> Any:
        """Return this thread's copy of *version*'s model."""
        entry = self._copies.get(id(version))
        if entry is not None and entry[0] is version:
            return entry[1]
        copy = version.handler.worker_copy() if hasattr(version.handler, "worker_copy") else version.handler
        if len(self._copies) >= 4:  # versions come and go: keep the newest few
            self._copies.pop(next(iter(self._copies)))
        self._copies[id(version)] = (version, copy)
        return copy


Loader = Callable[[Path, bool], Version]
"""``load(path, check_expiry) -> Version``: read, verify, load and smoke-test a version, or raise ModelLoadError."""


class _Background:
    """One thread per slot for slow work (loading candidates, writing the store, printing).

    It wakes on its own every *tick_s*: the batch path only queues work (a deque append) and never wakes a thread,
    which would make the batch wait for the interpreter lock. It runs *periodic* every *period_s* while batches keep
    coming, and ends after *idle_s* without batches or work (it starts again on demand).
    """

    def __init__(self, tick_s: float = 0.02, idle_s: float = 2.0, inline: bool = False) -> None:
        self.inline = inline
        """Run work at once in the caller's thread (simulated gateways, whose caller is not a data path)."""
        self.tick_s = tick_s
        self.idle_s = idle_s
        self.jobs: collections.deque[Callable[[], None]] = collections.deque()
        self.periodic: Callable[[], None] | None = None
        self.period_s = 1.0
        self.last_use = time.monotonic()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy = False

    def submit(self, job: Callable[[], None]) -> None:
        if self.inline:
            job()
            return
        self.jobs.append(job)
        self.ensure()

    def ensure(self) -> None:
        if self.inline:
            return
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="edgeflow-model-slot", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        next_periodic = 0.0
        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            self._busy = True
            try:
                if self.periodic is not None and now >= next_periodic and now - self.last_use < self.idle_s:
                    next_periodic = now + self.period_s
                    self.periodic()
                while self.jobs:
                    self.jobs.popleft()()
            finally:
                self._busy = False
            if now - self.last_use > self.idle_s and not self.jobs:
                with self._lock:
                    if not self.jobs:
                        self._thread = None
                        return

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.jobs or self._busy:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


class ModelSlot:
    """See the module docstring. ``score`` may be called from several worker threads at once."""

    def __init__(
        self,
        step_id: str,
        initial: SlotState,
        *,
        load: Loader,
        gates: Gates | None,
        stats: FlowStats,
        store: ModelStore | None = None,
        watch_path: Path | None = None,
        poll_s: float | None = None,
        allow_downgrade: bool = False,
        last_good: Version | None = None,
        seq: int = 0,
        rejected: dict[str, str] | None = None,
        notify: Callable[[str], None] | None = None,
        inline: bool = False,
    ) -> None:
        self.step_id = step_id
        self.state = initial
        self._load = load
        self._gates = gates
        self._stats = stats
        self._store = store
        self._watch_path = watch_path
        self._poll_s = poll_s
        self._allow_downgrade = allow_downgrade
        self._good: list[Version] = []
        """Versions that served and stayed healthy, oldest first: where a rollback goes."""
        for version in (last_good, initial.other if initial.phase == "watch" else None):
            self._add_good(version)
        if initial.phase != "watch":
            self._add_good(initial.active)
        self._seq = seq
        """The newest store request handled."""
        self._rejected: dict[str, str] = dict(rejected or {})
        self._notify = notify or (lambda _line: None)
        self._lock = threading.RLock()  # re-entered when background work runs inline
        self._bg = _Background(inline=inline)
        if poll_s is not None:
            self._bg.periodic, self._bg.period_s = self._poll, poll_s
        self._stamp: Stamp | None = None
        if watch_path is not None:
            self._stamp = watched_stamp(watch_path, initial.active.info.path, None)
        self._pending: tuple[Version, dict[str, Any] | None] | None = None
        self._seen_seq = -1
        self.notes: list[tuple[str, str]] = []
        """(reason, payload) of rejections and rollbacks not yet reported by the step (list ops are atomic)."""
        self.history: list[dict[str, Any]] = []
        """Every event of this slot, in order."""
        self.decisions_ns: collections.deque[tuple[int, int]] = collections.deque(maxlen=100_000)
        """(wall, CPU) ns each promote/reject/rollback decision held the batch that made it: the swap pause."""

    # -- the batch path

    def score(self, runner: Runner, feats: np.ndarray) -> Outcome:
        """Score one batch with the active version (and the shadowing or watched one beside it).

        Raises what the active model raises when nothing can stand in for it (the step makes dead letters).
        """
        if self._poll_s is not None:  # the background thread polls while batches come; it is never woken from here
            self._bg.last_use = time.monotonic()
            self._bg.ensure()
        state = self.state
        active, other = state.active, state.other
        if other is None:
            scores = runner.handler(active).score(feats)
            return Outcome(scores, scores > active.threshold, active)
        active_copy, other_copy = runner.handler(active), runner.handler(other)
        # CPU time of this thread, not wall time: a gate must judge the model, not the machine's other load
        t0 = time.thread_time_ns()
        scores, active_exc, active_error = _run(active_copy, feats)
        t1 = time.thread_time_ns()
        other_scores, _other_exc, other_error = _run(other_copy, feats)
        t2 = time.thread_time_ns()
        n = feats.shape[0]
        if state.phase == "shadow":
            if active_exc is not None:
                raise active_exc  # the step makes dead letters, as without a candidate
            flags = scores > active.threshold
            if other_error is None:
                self._observe(state, other_scores > other.threshold, flags, (t2 - t1, t1 - t0), None, n)
            else:
                self._observe(state, flags, flags, (t2 - t1, t1 - t0), other_error, n)
            return Outcome(scores, flags, active)
        if active_error is None:
            flags = scores > active.threshold
            other_flags = other_scores > other.threshold if other_error is None else flags
            self._observe(state, flags, other_flags, (t1 - t0, t2 - t1), None, n)
            return Outcome(scores, flags, active)
        self._observe(state, flags_none := np.zeros(0, bool), flags_none, (t1 - t0, t2 - t1), active_error, n)
        if other_error is None:
            return Outcome(other_scores, other_scores > other.threshold, other)  # the last good one stands in
        if active_exc is not None:
            raise active_exc
        return Outcome(scores, scores > active.threshold, active)

    def _observe(
        self,
        state: SlotState,
        subject: np.ndarray,
        reference: np.ndarray,
        ns: tuple[int, int],
        error: str | None,
        n: int,
    ) -> None:
        with self._lock:
            if state is not self.state or state.watch is None:
                return  # the slot moved on while this batch ran
            if error is None:
                state.watch.observe(subject, reference, *ns)
            else:
                state.watch.error(n, error)
            verdict = state.watch.verdict()
            if verdict is None:
                return
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            if state.phase == "shadow":
                self._decide_shadow(state, verdict)
            else:
                self._decide_watch(state, verdict)
            self.decisions_ns.append((time.perf_counter_ns() - t0, time.thread_time_ns() - c0))

    # -- decisions (under the lock)

    def _decide_shadow(self, state: SlotState, verdict: Verdict) -> None:
        candidate = state.other
        assert candidate is not None
        if verdict.passed:
            self._promote(state.active, candidate, state.request, verdict)
        else:
            self.state = SlotState(state.active)
            self._reject(candidate, f"shadow gates failed: {verdict.reason}", state.request, verdict.figures)
            self._start_pending()

    def _promote(self, old: Version, new: Version, request: dict[str, Any] | None, verdict: Verdict | None) -> None:
        t0 = time.perf_counter_ns()
        health = self._gates.health_windows if self._gates is not None else 0
        if health and self._gates is not None:
            self.state = SlotState(new, old, "watch", GateWatch(self._gates, health), request)
        else:
            self.state = SlotState(new)
            self._add_good(new)
        switch_ns = time.perf_counter_ns() - t0
        self._stats.count("infer.swaps")
        figures = verdict.figures if verdict is not None else {}
        why = f"gates passed ({_figures_text(figures)})" if verdict is not None else "no shadow gates set"
        watch = f"; watching its health for {health:,} windows" if health else ""
        self._event(
            "promoted",
            f"promoted {new.model_id} over {old.model_id}: {why}{watch}",
            new,
            request,
            figures=figures,
            previous=old.model_id,
            switch_us=round(switch_ns / 1000, 2),
            health_windows=health,
        )
        if not health:
            self._seq = max(self._seq, _seq_of(request))
            self._start_pending()

    def _decide_watch(self, state: SlotState, verdict: Verdict) -> None:
        previous = state.other
        assert previous is not None
        if verdict.passed:
            self.state = SlotState(state.active)
            self._add_good(state.active)
            self._seq = max(self._seq, _seq_of(state.request))
            self._event(
                "healthy",
                f"{state.active.model_id} is healthy after promotion ({_figures_text(verdict.figures)})",
                state.active,
                state.request,
                figures=verdict.figures,
            )
            self._start_pending()
        else:
            self._rollback(state.active, previous, f"health gates failed: {verdict.reason}", state.request, verdict)

    def _rollback(
        self, bad: Version, good: Version, reason: str, request: dict[str, Any] | None, verdict: Verdict | None
    ) -> None:
        self.state = SlotState(good)
        self._good = [v for v in self._good if v.info.digest != bad.info.digest]
        self._add_good(good)
        self._rejected[bad.info.digest] = f"rolled back: {reason}"
        self._seq = max(self._seq, _seq_of(request))
        self._stats.count("infer.rollbacks")
        self.notes.append((f"model rolled back from {bad.model_id} to {good.model_id}: {reason}", str(bad.source)))
        self._event(
            "rolled_back",
            f"ROLLED BACK from {bad.model_id} to {good.model_id}: {reason}",
            bad,
            request,
            reason=reason,
            figures=verdict.figures if verdict is not None else {},
            active=good.model_id,
        )
        self._start_pending()

    def _reject(
        self,
        version: Version | None,
        reason: str,
        request: dict[str, Any] | None,
        figures: dict[str, Any] | None = None,
    ) -> None:
        self._stats.count("infer.swap_rejected")
        if version is not None:
            self._rejected[version.info.digest] = reason
        self._seq = max(self._seq, _seq_of(request))
        name = version.model_id if version is not None else str((request or {}).get("model") or "update")
        running = self.state.active.model_id
        payload = str(version.source) if version is not None else str((request or {}).get("path", ""))
        self.notes.append((f"model update rejected, still running {running}: {reason}", payload))
        self._event("rejected", f"REJECTED {name}: {reason}; still running {running}", version, request, reason=reason,
                    figures=figures or {}, model=name)  # fmt: skip

    def _start_pending(self) -> None:
        if self._pending is None or self.state.phase != "serving":
            return
        version, request = self._pending
        self._pending = None
        self._begin(version, request)

    def _begin(self, version: Version, request: dict[str, Any] | None) -> None:
        """Start shadowing *version* (or promote it at once without gates); the slot is serving."""
        active = self.state.active
        if self._gates is None:
            self._promote(active, version, request, None)
            return
        self.state = SlotState(active, version, "shadow", GateWatch(self._gates, self._gates.windows), request)
        self._event(
            "shadowing",
            f"candidate {version.model_id} verified{_signed_text(version)}; shadowing {active.model_id} for "
            f"{self._gates.windows:,} windows",
            version,
            request,
        )

    # -- events, persistence

    def _event(
        self, kind: str, line: str, version: Version | None, request: dict[str, Any] | None, **fields: Any
    ) -> None:
        record: dict[str, Any] = {
            "event": kind,
            "step": self.step_id,
            "model": version.model_id if version is not None else fields.pop("model", None),
            "version": version.info.version if version is not None else (request or {}).get("version"),
            "active": self.state.active.model_id,
            "seq": _seq_of(request) or None,
            "rollout": (request or {}).get("rollout"),
            "origin": "flow",
            **fields,
        }
        self.history.append(record)
        text = f"model {self.step_id!r}: {line}"
        store = self._store

        def write() -> None:  # in the background thread: nothing slow on the batch path
            if store is not None:
                store.save_state(self._persisted())  # the newest state: writes are ordered, the last one wins
                store.event(kind, **{k: v for k, v in record.items() if k != "event"})
            self._notify(text)

        self._bg.submit(write)

    def _add_good(self, version: Version | None) -> None:
        if version is None:
            return
        self._good = [*[v for v in self._good if v.info.digest != version.info.digest][-2:], version]

    def fallback(self, leaving: Version) -> Version | None:
        """Return the newest good version other than *leaving* (nor of its number): where a rollback goes."""
        for version in reversed(self._good):
            if version.info.digest != leaving.info.digest and version.info.version != leaving.info.version:
                return version
        return None

    def _persisted(self) -> dict[str, Any]:
        with self._lock:  # only references are taken under the lock; describing them touches the file system
            state = self.state
            fallback = state.other if state.phase == "watch" else self.fallback(state.active)
            seq, rejected = self._seq, dict(self._rejected)
        return {
            "active": state.active.describe(),
            "last_good": (fallback or state.active).describe(),
            "phase": "watch" if state.phase == "watch" else "serving",
            "seq": seq,
            "rejected": rejected,
        }

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the background work (loading, store writes) is done; ``False`` on timeout."""
        return self._bg.wait(timeout)

    # -- candidates (background thread)

    def poll_now(self) -> None:
        """Look for a new request or model file soon (the background thread does so every ``poll_s`` anyway)."""
        self._bg.submit(self._poll)

    def _poll(self) -> None:
        if self._store is not None:
            try:
                pending = self._store.requests(after=max(self._seq, self._seen_seq))
            except ModelLoadError as exc:
                pending = []
                self._notify(f"model {self.step_id!r}: {exc}")
            for request in pending:  # in order: a rollback written right after a deploy is never skipped
                self._seen_seq = _seq_of(request)
                if request.get("kind") == "rollback":
                    self._rollback_request(request)
                else:
                    self._candidate(Path(str(request.get("path", ""))), request)
        if self._watch_path is not None:
            stamp = watched_stamp(self._watch_path, self.state.active.info.path, None)
            if stamp != self._stamp:
                self._stamp = stamp
                self._candidate(self._watch_path, None)

    def _candidate(self, path: Path, request: dict[str, Any] | None) -> None:
        self._received(path, request)
        try:
            version = self._load(path, True)
        except (ModelLoadError, OSError) as exc:
            with self._lock:
                self._reject(None, str(exc), request or {"path": str(path)})
            return
        self.offer(version, request)

    def offer(self, version: Version, request: dict[str, Any] | None = None) -> str | None:
        """Take a loaded *version* as the next candidate; return why it was refused (``None``: taken).

        Checked against the running version (input, version number, refused before); it shadows at once when the
        slot is serving, replaces a shadowing candidate, or waits for a health watch to end.
        """
        with self._lock:
            problem = self._problem(version)
            if problem == "":
                self._seq = max(self._seq, _seq_of(request))
                return "it runs already"
            if problem is not None:
                self._reject(version, problem, request)
                return problem
            state = self.state
            if state.phase == "serving":
                self._begin(version, request)
            elif state.phase == "shadow":
                assert state.other is not None
                self._event("superseded", f"candidate {state.other.model_id} superseded by {version.model_id}",
                            state.other, state.request)  # fmt: skip
                self.state = SlotState(state.active)
                self._begin(version, request)
            else:
                self._pending = (version, request)
                self._event("queued", f"candidate {version.model_id} waits for the health watch to end", version,
                            request)  # fmt: skip
            return None

    def _received(self, path: Path, request: dict[str, Any] | None) -> None:
        if request is None:
            self._notify(f"model {self.step_id!r}: model file {str(path)!r} changed, checking the new version")

    def _problem(self, version: Version) -> str | None:
        """Why *version* may not become a candidate; ``""``: it is what runs already; ``None``: it may."""
        active = self.state.active
        digest = version.info.digest
        if digest in self._rejected:
            return f"this version was refused before ({self._rejected[digest]})"
        if f"version:{version.info.version}" in self._rejected:
            return f"version {version.info.version} was withdrawn ({self._rejected['version:' + version.info.version]})"
        if digest == active.info.digest:
            return ""
        a, b = active.info.inputs[0], version.info.inputs[0]
        if a.width != b.width or (
            active.info.manifest is not None
            and version.info.manifest is not None
            and active.info.manifest.features != version.info.manifest.features
        ):
            return (
                f"it takes input {b.shape} with other features than the running {active.model_id} ({a.shape}); "
                "an update must keep the model's input"
            )
        return version_problem(version.info, active.info, allow_downgrade=self._allow_downgrade)

    def _rollback_request(self, inbox: dict[str, Any]) -> None:
        version = str(inbox.get("version", ""))
        reason = f"rollback ordered: {inbox.get('reason') or 'no reason given'}"
        with self._lock:
            self._rejected[f"version:{version}"] = reason
            state = self.state
            if state.phase == "shadow" and state.other is not None and state.other.info.version == version:
                self.state = SlotState(state.active)
                self._reject(state.other, reason, inbox)
                return
            if self._pending is not None and self._pending[0].info.version == version:
                pending, self._pending = self._pending, None
                self._reject(pending[0], reason, inbox)
                return
            if state.active.info.version == version:
                good = state.other if state.phase == "watch" else self.fallback(state.active)
                if good is not None:
                    self._rollback(state.active, good, reason, inbox, None)
                    return
                self._event("rollback_impossible", f"cannot roll back {state.active.model_id}: no other good version",
                            state.active, inbox, reason=reason)  # fmt: skip
                return
            self._seq = max(self._seq, _seq_of(inbox))
            self._event("withdrawn", f"version {version} withdrawn before it arrived here ({reason})", None, inbox,
                        reason=reason, model=version)  # fmt: skip


def _seq_of(request: dict[str, Any] | None) -> int:
    return int((request or {}).get("seq") or 0)


def _figures_text(figures: dict[str, Any]) -> str:
    if not figures:
        return ""
    return (
        f"{figures['windows']:,} windows, agreement {100 * figures['agreement']:.1f} %, anomaly rate "
        f"{100 * figures['anomaly_rate']:.1f} % vs {100 * figures['reference_rate']:.1f} %, "
        f"errors {figures['errors']}, "
        f"CPU p99 {figures['p99_us']:,.0f} us per batch"
    )


def _signed_text(version: Version) -> str:
    signer = version.info.signer
    if signer is None:
        return " (unsigned: verification is off)"
    return f" (signed by {signer.key_name}{', a TEST key' if signer.test_key else ''})"


def _run(handler: Any, feats: np.ndarray) -> tuple[np.ndarray, Exception | None, str | None]:
    """Scores, the exception raised (if any) and what went wrong for a gate (an exception or non-finite scores)."""
    try:
        scores = np.asarray(handler.score(feats))
    except Exception as exc:  # judged by the caller: a gate error, a stand-in, or the step's dead letters
        return np.empty(0, np.float32), exc, f"{type(exc).__name__}: {exc}"
    return scores, None, None if np.isfinite(scores).all() else "non-finite score"
