"""Lower a compiled flow to a bytewax ``Dataflow``: the only module that calls bytewax operators.

Items travel as ``(sensor, item)`` pairs so bytewax routes each sensor's state
to one worker. Keyed steps run with ``stateful_batch`` (one Python call per
batch), fused stateless chains with ``flat_map_batch``, and after every stage
that can fail a ``branch`` sends dead letters to the flow's dead-letter sink,
counted on the way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from edgeflow.compiler import fused_function
from edgeflow.metrics import flow_stats
from edgeflow.records import DeadLetter
from edgeflow.sinks import DeadLetterSink

if TYPE_CHECKING:
    from edgeflow.compiler import CompiledFlow, Stage
    from edgeflow.graph import KeyedLogic

__all__ = ["build_dataflow"]


class _Keyed(StatefulBatchLogic[Any, Any, None]):
    """Adapts an engine-neutral :class:`KeyedLogic` to bytewax."""

    def __init__(self, logic: KeyedLogic) -> None:
        self.logic = logic

    def on_batch(self, values: list[Any]) -> tuple[Any, bool]:
        return self.logic.on_batch(values), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Any, bool]:
        return self.logic.on_eof(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


def _is_ok(pair: tuple[str, Any]) -> bool:
    return type(pair[1]) is not DeadLetter


def _lower_stage(stage: Stage, df: Dataflow, streams: dict[str, Any], sinks: Mapping[str, Any]) -> Any:
    sid = stage.stage_id.replace(".", "_")
    first = stage.steps[0]
    if stage.kind == "source":
        assert first.source is not None
        return op.input(sid, df, first.source())
    ups = [streams[src] for src in stage.inputs]
    up = ups[0] if len(ups) == 1 else op.merge(f"{sid}_merge", *ups)
    if stage.kind == "map":
        return op.flat_map_batch(sid, up, fused_function(stage.steps))
    if stage.kind == "keyed":
        factory = first.logic
        assert factory is not None
        return op.stateful_batch(sid, up, lambda _resume: _Keyed(factory()))
    assert first.sink is not None
    op.output(sid, up, sinks[first.step_id] if first.step_id in sinks else first.sink())
    return None


def build_dataflow(compiled: CompiledFlow, sinks: Mapping[str, Any] | None = None) -> Dataflow:
    """Return a bytewax ``Dataflow`` equivalent to *compiled*; *sinks* replaces sinks by step id (for tests)."""
    sinks = sinks or {}
    df = Dataflow(compiled.flow.name)
    streams: dict[str, Any] = {}
    dead: list[Any] = []
    for stage in compiled.stages:
        out = _lower_stage(stage, df, streams, sinks)
        if out is None:
            continue
        if stage.can_fail:
            split = op.branch(f"{stage.stage_id.replace('.', '_')}_dead_letters", out, _is_ok)
            out = split.trues
            dead.append(split.falses)
        streams[stage.steps[-1].step_id] = out
    if dead:
        merged = dead[0] if len(dead) == 1 else op.merge("dead_letters_merge", *dead)
        name = compiled.flow.name
        merged = op.inspect("dead_letters_count", merged, lambda _step, _item: flow_stats(name).add(dead_letters=1))
        dead_sink = sinks.get("dead_letters") or DeadLetterSink(compiled.flow.dead_letter_path, compiled.flow.name)
        op.output("dead_letters", merged, dead_sink)
    return df
