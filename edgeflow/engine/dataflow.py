"""Lower a compiled flow to a bytewax ``Dataflow``.

Items travel as ``(sensor, item)`` pairs so bytewax routes each sensor's state
to one worker. Keyed steps run with ``stateful_batch`` (one Python call per
batch), fused stateless chains with ``flat_map_batch``, and after every stage
that can fail a ``branch`` sends dead letters to the flow's dead-letter sink,
counted on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from edgeflow.connectors import DEAD_LETTERS, Sink
from edgeflow.context import RunContext
from edgeflow.engine.adapters import EngineKeyed, EngineSink, EngineSource
from edgeflow.graph import MapLogic
from edgeflow.records import DeadLetter
from edgeflow.sinks import DeadLetterSink

if TYPE_CHECKING:
    from edgeflow.compiler import CompiledFlow, Stage

__all__ = ["build_dataflow", "fused_function"]


def fused_function(chain: Iterable[MapLogic]) -> Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]:
    """Chain stateless steps into one batch function over ``(key, item)`` pairs.

    A step's ``batch`` function gets all the batch's items at once (vectorized across sensors);
    otherwise its ``fn`` runs per item, ``None`` dropping it. Dead letters leave the chain at once.

    >>> run = fused_function([MapLogic(fn=lambda x: x + 1), MapLogic(fn=lambda x: x * 10 if x < 3 else None)])
    >>> run([("a", 1), ("b", 2)])
    [('a', 20)]
    """
    steps = tuple((logic.fn, logic.batch) for logic in chain)

    def run_batch(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        pairs = items
        for fn, batch in steps:
            kept: list[tuple[str, Any]] = []
            if batch is not None:
                for value in batch([value for _key, value in pairs]):
                    (out if type(value) is DeadLetter else kept).append((value.sensor, value))
            else:
                assert fn is not None
                for key, value in pairs:
                    value = fn(value)
                    if value is not None:
                        (out if type(value) is DeadLetter else kept).append((key, value))
            pairs = kept
            if not pairs:
                break
        out.extend(pairs)
        return out

    return run_batch


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
) -> Any:
    sid = _engine_id(stage.stage_id)
    first = stage.steps[0]
    if stage.kind == "source":
        return op.input(sid, df, EngineSource(compiled.build(first, run), run.stop))
    ups = [streams[src] for src in stage.inputs]
    up = ups[0] if len(ups) == 1 else op.merge(f"{sid}_merge", *ups)
    if stage.kind == "map":
        return op.flat_map_batch(sid, up, fused_function(compiled.build(step, run) for step in stage.steps))
    if stage.kind == "keyed":
        new_state = compiled.build(first, run)
        return op.stateful_batch(sid, up, lambda resume: EngineKeyed(new_state, resume))
    sink = sinks[first.step_id] if first.step_id in sinks else compiled.build(first, run)
    op.output(sid, up, EngineSink(sink))
    return None


def build_dataflow(compiled: CompiledFlow, run: RunContext, sinks: Mapping[str, Sink] | None = None) -> Dataflow:
    """Return a bytewax ``Dataflow`` equivalent to *compiled* for one *run*.

    *sinks* replaces sinks by step id (``"dead_letters"`` for the dead-letter sink), e.g. to capture
    outputs in tests.
    """
    sinks = sinks or {}
    df = Dataflow(compiled.name)
    streams: dict[str, Any] = {}
    dead: list[Any] = []
    for stage in compiled.stages:
        out = _lower_stage(compiled, stage, df, streams, sinks, run)
        if out is None:
            continue
        if stage.can_fail:
            split = op.branch(f"{_engine_id(stage.stage_id)}_dead_letters", out, _is_ok)
            out = split.trues
            dead.append(split.falses)
        streams[stage.steps[-1].step_id] = out
    if dead:
        merged = dead[0] if len(dead) == 1 else op.merge("dead_letters_merge", *dead)
        stats = run.stats
        merged = op.inspect("dead_letters_count", merged, lambda _step, _item: stats.add(dead_letters=1))
        dead_sink = sinks.get(DEAD_LETTERS) or DeadLetterSink(run.dead_letter_path)
        op.output(DEAD_LETTERS, merged, EngineSink(dead_sink))
    return df
