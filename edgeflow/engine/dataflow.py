"""Lower a compiled flow to a bytewax ``Dataflow``.

Items travel as ``(shard, item)`` pairs (:meth:`~edgeflow.engine.shards.Shards.route`)
so bytewax routes each sensor's state to one worker. Keyed steps run with
``stateful_batch``, one Python call per shard and batch (a
:class:`~edgeflow.engine.shards.SensorBank` of per-sensor states), fused
stateless chains with ``flat_map_batch``, and after every stage that can fail
a ``branch`` sends dead letters to the flow's dead-letter sink, counted by step
and reason on the way.

The engine also watches each step from outside, per batch, into the run's
:class:`~edgeflow.metrics.FlowStats`: the time each step spends on a batch,
what each source hands on (samples, newest event time, its end), and, after
every step that emits scored windows, which sensors were flagged and when, the
model in use and the newest verdict's event time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from edgeflow.connectors import DEAD_LETTERS, Sink, Source, SourcePartition
from edgeflow.context import RunContext
from edgeflow.engine.adapters import EngineSink, EngineSource
from edgeflow.engine.shards import SensorBank, Shards, TimedSensorBank
from edgeflow.graph import MapLogic
from edgeflow.metrics import FlowStats, Histogram
from edgeflow.records import DeadLetter, Sample, SampleBlock, Scored
from edgeflow.sinks import DeadLetterSink

if TYPE_CHECKING:
    from edgeflow.compiler import CompiledFlow, Stage

__all__ = ["FLUSH_MARK", "StepWatch", "build_dataflow", "fused_function"]

_max = np.maximum.reduce

FLUSH_MARK: Any = type("FlushMark", (), {"__repr__": lambda self: "FLUSH_MARK", "sensor": ""})()
"""What a chain whose steps hold items emits once per batch, keyed like the batch (see :func:`_flush_path`)."""


class StepWatch:
    """Watches one step from outside: its time per batch and, for a scoring step, its verdicts.

    >>> from edgeflow.records import Window
    >>> import numpy as np
    >>> stats = FlowStats()
    >>> watch = StepWatch("detect", stats, scores=True)
    >>> w = Window("pump-2", 20.0, 20.5, np.zeros((1, 2), np.float32), 4.0, 2, 20, 0)
    >>> watch.done(time.perf_counter_ns(), [Scored(w, 9.1, True, "zscore")])
    >>> stats.flags["pump-2"].windows, stats.models, stats.histograms["step.detect"].count
    (1, {'detect': 'zscore'}, 1)
    """

    __slots__ = ("_hist", "_scores", "_stats", "step_id")

    def __init__(self, step_id: str, stats: FlowStats, *, scores: bool = False) -> None:
        self.step_id = step_id
        self._stats = stats
        self._hist: Histogram = stats.histogram(f"step.{step_id}")
        self._scores = scores

    def done(self, t0: int, out: Sequence[Any]) -> None:
        """Record a batch that started at *t0* (``perf_counter_ns``) and emitted *out* (items or ``(key, item)``)."""
        self._hist.observe_ns(time.perf_counter_ns() - t0)
        if not self._scores or not out:
            return
        stats = self._stats
        last: Scored | None = None
        newest = -math.inf
        for item in out:
            if type(item) is tuple:
                item = item[1]
            if type(item) is Scored:
                last = item
                w = item.window
                if w.end > newest:
                    newest = w.end
                if item.anomaly:
                    stats.flagged(w.sensor, w.start, w.end)
        if last is not None:
            stats.scored(self.step_id, last.model, newest)


def fused_function(
    chain: Iterable[MapLogic],
    watches: Sequence[StepWatch | None] | None = None,
    *,
    route: Callable[[str], str],
    mark: bool = False,
) -> Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]:
    """Chain stateless steps into one batch function over ``(key, item)`` pairs.

    A step's ``batch`` function gets all the batch's items at once (vectorized across sensors);
    otherwise its ``fn`` runs per item, ``None`` dropping it (what a batch function returns is keyed by
    *route* of its ``.sensor``). Dead letters leave the chain at once.
    *watches* (one per step, or ``None``) see each step's batch time and what it kept. With *mark*, every
    non-empty batch also emits ``(key of its first item, FLUSH_MARK)``: it wakes the flush path of a chain
    whose steps hold items (see :func:`_flush_path`).

    >>> chain = [MapLogic(fn=lambda x: x + 1), MapLogic(fn=lambda x: x * 10 if x < 3 else None)]
    >>> run = fused_function(chain, route=Shards(1).route)
    >>> run([("a", 1), ("b", 2)])
    [('a', 20)]
    """
    logics = list(chain)
    steps = tuple(
        (logic.fn, logic.batch, watch)
        for logic, watch in zip(logics, watches if watches is not None else [None] * len(logics), strict=True)
    )

    def run_batch(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [(items[0][0], FLUSH_MARK)] if mark and items else []
        pairs = items
        for fn, batch, watch in steps:
            t0 = time.perf_counter_ns() if watch is not None else 0
            kept: list[tuple[str, Any]] = []
            if batch is not None:
                for value in batch([value for _key, value in pairs]):
                    (out if type(value) is DeadLetter else kept).append((route(value.sensor), value))
            else:
                assert fn is not None
                for key, value in pairs:
                    value = fn(value)
                    if value is not None:
                        (out if type(value) is DeadLetter else kept).append((key, value))
            if watch is not None:
                watch.done(t0, kept)
            pairs = kept
            if not pairs:
                break
        out.extend(pairs)
        return out

    return run_batch


class _Forwarding:
    """A wrapper that forwards every attribute it does not define to what it wraps (``_inner``).

    The engine may ask a step's object for more than its protocol (e.g. whether a keyed state can be
    discarded); a watch must not hide it.
    """

    __slots__ = ()
    _inner: Any

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)


class _WatchedBank(SensorBank):
    """A keyed step's shard of per-sensor states, each batch timed and its verdicts watched."""

    def __init__(self, watch: StepWatch, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch = watch

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        t0 = time.perf_counter_ns()
        out, keep = super().on_batch(values)
        self._watch.done(t0, out)
        return out, keep

    def on_eof(self) -> tuple[list[Any], bool]:
        t0 = time.perf_counter_ns()
        out, keep = super().on_eof()
        self._watch.done(t0, out)
        return out, keep


class _WatchedPartition(_Forwarding):
    """A source partition whose batches are counted per step (samples, newest event time, end)."""

    def __init__(self, part: SourcePartition, step_id: str, stats: FlowStats) -> None:
        self._inner = part
        self._step_id = step_id
        self._stats = stats

    def next_batch(self) -> Sequence[Any]:
        try:
            items = self._inner.next_batch()
        except StopIteration:
            self._stats.source_ended(self._step_id)
            raise
        if items:
            n, newest = 0, -math.inf
            for item in items:
                kind = type(item)
                if kind is SampleBlock:
                    ts = item.ts
                    rows = len(ts)
                    if rows:
                        n += rows
                        top = float(ts[0]) if rows == 1 else float(_max(ts))
                        if top > newest:
                            newest = top
                elif kind is Sample:
                    n += 1
                    if item.ts > newest:
                        newest = item.ts
            if n:
                self._stats.source_batch(self._step_id, n, newest)
        return items

    def next_awake(self) -> Any:
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class _WatchedSource(_Forwarding):
    """A source whose partitions are watched (see :class:`_WatchedPartition`)."""

    def __init__(self, source: Source, step_id: str, operator: str, stats: FlowStats) -> None:
        self._inner = source
        self._step_id = step_id
        self._operator = operator
        self._stats = stats
        self._total: int | None = None

    def partitions(self) -> list[str]:
        parts = self._inner.partitions()
        self._total = len(parts)
        return parts

    def open(self, partition: str, resume: Any | None) -> _WatchedPartition:
        part = self._inner.open(partition, resume)
        self._stats.source_opened(self._step_id, self._operator, self._total)
        return _WatchedPartition(part, self._step_id, self._stats)


class _WatchedSinkPartition(_Forwarding):
    def __init__(self, part: Any, watch: StepWatch) -> None:
        self._inner = part
        self._watch = watch

    def write_batch(self, items: Sequence[Any]) -> None:
        t0 = time.perf_counter_ns()
        self._inner.write_batch(items)
        self._watch.done(t0, ())

    def close(self) -> None:
        self._inner.close()


class _WatchedSink(_Forwarding):
    """A sink whose batches are timed."""

    def __init__(self, sink: Sink, watch: StepWatch) -> None:
        self._inner = sink
        self._watch = watch

    def open(self, worker_index: int, worker_count: int) -> _WatchedSinkPartition:
        return _WatchedSinkPartition(self._inner.open(worker_index, worker_count), self._watch)


class _FlushTicker(StatefulBatchLogic[Any, Any, None]):
    """Calls a chain's flush hooks: every ``every_s`` while the flow runs, and once its input has ended."""

    def __init__(self, flush: Callable[[bool], list[tuple[str, Any]]], every_s: float) -> None:
        self._flush = flush
        self._every = timedelta(seconds=every_s)

    def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Any], bool]:
        return self._flush(False), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        return self._flush(True), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return datetime.now(timezone.utc) + self._every

    def snapshot(self) -> None:
        return None


def _chain_flush(
    logics: Sequence[MapLogic], watches: Sequence[StepWatch], route: Callable[[str], str]
) -> Callable[[bool], list[tuple[str, Any]]]:
    """Return ``flush(final)`` for a chain: each holding step's flushed items go through the steps after it."""
    rests = [fused_function(logics[i + 1 :], watches[i + 1 :], route=route) for i in range(len(logics))]

    def flush(final: bool) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for logic, rest in zip(logics, rests, strict=True):
            if logic.flush is None:
                continue
            items = logic.flush(final)
            if not items:
                continue
            dead = [(route(item.sensor), item) for item in items if type(item) is DeadLetter]
            pairs = [(route(item.sensor), item) for item in items if type(item) is not DeadLetter]
            out += dead + (rest(pairs) if pairs else [])
        return out

    return flush


def _is_mark(pair: tuple[str, Any]) -> bool:
    return pair[1] is FLUSH_MARK


def _flush_path(
    sid: str, main: Any, logics: Sequence[MapLogic], watches: Sequence[StepWatch], route: Callable[[str], str]
) -> Any:
    """Merge into *main* what the chain's steps flush, timed by one ticker per worker that ran the chain.

    The chain marks each batch with the key of its first item: upstream is keyed, so that key lives on
    this worker and its ticker flushes this process's steps; the ticker's input follows the chain's
    output, so its end-of-input flush comes after the chain's last batch.
    """
    split = op.branch(f"{sid}_marks", main, _is_mark)
    every = min(logic.flush_every_s for logic in logics if logic.flush is not None)
    flush = _chain_flush(logics, watches, route)
    ticks = op.stateful_batch(f"{sid}_flush", split.trues, lambda _resume: _FlushTicker(flush, every))
    flushed = op.map(f"{sid}_flushed", ticks, lambda pair: pair[1])
    return op.merge(f"{sid}_with_flushed", split.falses, flushed)


def _count_dead_letter(stats: FlowStats) -> Callable[[str, tuple[str, Any]], None]:
    def count(_step: str, pair: tuple[str, Any]) -> None:
        letter = pair[1]
        stats.dead_letter(getattr(letter, "step_id", "unknown"), getattr(letter, "reason", ""))

    return count


def _is_ok(pair: tuple[str, Any]) -> bool:
    return type(pair[1]) is not DeadLetter


def _engine_id(stage_id: str) -> str:
    return stage_id.replace(".", "_")


def _lower_stage(
    compiled: CompiledFlow,
    stage: Stage,
    df: Dataflow,
    streams: dict[str, Any],
    sinks: Mapping[str, Sink],
    run: RunContext,
    shards: Shards,
) -> Any:
    sid = _engine_id(stage.stage_id)
    first = stage.steps[0]
    stats = run.stats

    def watch(step_id: str) -> StepWatch:
        return StepWatch(step_id, stats, scores=compiled.schemas[step_id].kind == "scored")

    if stage.kind == "source":
        built = compiled.build(first, run)
        source = _WatchedSource(built, first.step_id, first.operator, stats)
        stream = op.input(sid, df, EngineSource(source, run.stop, shards))
        # a source read by several partitions at once may need its items put back in order per sensor
        order = getattr(built, "resequencer", None)
        new_order = order() if order is not None else None
        if new_order is None:
            return stream
        keep = run.recovery_dir is not None
        resequence = f"{sid}_resequence"
        return op.stateful_batch(
            resequence, stream, lambda resume: TimedSensorBank(new_order, resume, keep=keep, shards=shards.count)
        )
    ups = [streams[src] for src in stage.inputs]
    up = ups[0] if len(ups) == 1 else op.merge(f"{sid}_merge", *ups)
    if stage.kind == "map":
        logics = [compiled.build(step, run) for step in stage.steps]
        watches = [watch(step.step_id) for step in stage.steps]
        holds = any(logic.flush is not None for logic in logics)
        main = op.flat_map_batch(sid, up, fused_function(logics, watches, route=shards.route, mark=holds))
        return _flush_path(sid, main, logics, watches, shards.route) if holds else main
    if stage.kind == "keyed":
        new_state = compiled.build(first, run)
        keyed_watch = watch(first.step_id)
        keep = run.recovery_dir is not None
        return op.stateful_batch(
            sid,
            up,
            lambda resume: _WatchedBank(keyed_watch, new_state, resume, keep=keep, shards=shards.count),
        )
    sink = sinks[first.step_id] if first.step_id in sinks else compiled.build(first, run)
    op.output(sid, up, EngineSink(_WatchedSink(sink, watch(first.step_id)), run.own_workers, run.workers))
    return None


def build_dataflow(
    compiled: CompiledFlow, run: RunContext, sinks: Mapping[str, Sink] | None = None, *, shards: Shards
) -> Dataflow:
    """Return a bytewax ``Dataflow`` equivalent to *compiled* for one *run*, its keyed state in *shards*.

    *sinks* replaces sinks by step id (``"dead_letters"`` for the dead-letter sink), e.g. to capture
    outputs in tests.
    """
    sinks = sinks or {}
    df = Dataflow(compiled.name)
    streams: dict[str, Any] = {}
    dead: list[Any] = []
    for stage in compiled.stages:
        out = _lower_stage(compiled, stage, df, streams, sinks, run, shards)
        if out is None:
            continue
        if stage.can_fail:
            split = op.branch(f"{_engine_id(stage.stage_id)}_dead_letters", out, _is_ok)
            out = split.trues
            dead.append(split.falses)
        streams[stage.steps[-1].step_id] = out
    if dead:
        merged = dead[0] if len(dead) == 1 else op.merge("dead_letters_merge", *dead)
        merged = op.inspect("dead_letters_count", merged, _count_dead_letter(run.stats))
        dead_sink = sinks.get(DEAD_LETTERS) or DeadLetterSink(run.dead_letter_path)
        op.output(DEAD_LETTERS, merged, EngineSink(dead_sink, run.own_workers, run.workers))
    return df
