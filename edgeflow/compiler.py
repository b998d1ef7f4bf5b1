"""Check a :class:`~edgeflow.graph.Flow`, fuse stateless chains and lower it to bytewax.

Everything here runs before any data flows, so a broken flow fails with the
step's name instead of halfway through a recording.

>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> flow = Flow("demo")
>>> s = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
>>> w = eo.window("win", s, size=256, hop=64, rate_hz=500)
>>> f = eo.features("feat", w, ["mean", "rms"])
>>> eo.output("print", f, eo.stdout())
>>> print(compile_flow(flow).describe())
flow 'demo': 4 steps in 4 engine steps
  [source] samples (replay) -> samples[accel]
  [keyed]  win (window) -> windows[accel] x256 @ 500 Hz
  [map]    feat (features) -> windows[accel] x256 @ 500 Hz, 2 features
  [sink]   print (stdout)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, Schema, Step

__all__ = ["CompiledFlow", "Stage", "compile_flow"]


@dataclass(frozen=True, slots=True)
class Stage:
    """One engine step: a single flow step, or a fused chain of stateless ones."""

    steps: tuple[Step, ...]

    @property
    def stage_id(self) -> str:
        """The engine step's id: the step ids joined with ``+``."""
        return "+".join(step.step_id for step in self.steps)

    @property
    def kind(self) -> str:
        """The kind shared by the stage's steps."""
        return self.steps[0].kind

    @property
    def inputs(self) -> tuple[str, ...]:
        """Step ids feeding the stage's first step."""
        return self.steps[0].inputs

    @property
    def can_fail(self) -> bool:
        """Whether any step of the stage may emit dead letters."""
        return any(step.can_fail for step in self.steps)


@dataclass(frozen=True)
class CompiledFlow:
    """A checked flow: steps in order, their schemas, and the fused stages."""

    flow: Flow
    order: tuple[Step, ...]
    schemas: dict[str, Schema]
    stages: tuple[Stage, ...]

    def describe(self) -> str:
        """Text view of the engine steps, one line per flow step."""
        lines = [f"flow {self.flow.name!r}: {len(self.order)} steps in {len(self.stages)} engine steps"]
        for stage in self.stages:
            fused = len(stage.steps) > 1
            for i, step in enumerate(stage.steps):
                tag = f"[{step.kind}]".ljust(8)
                if fused:
                    tag = ("┌" if i == 0 else "└" if i == len(stage.steps) - 1 else "│") + f"[{step.kind}]".ljust(7)
                out = "" if step.kind == "sink" else f" -> {_schema_text(self.schemas[step.step_id])}"
                lines.append(f"  {tag} {step.step_id} ({step.operator}){out}")
        if any(len(stage.steps) > 1 for stage in self.stages):
            lines.append("  (┌└: stateless steps fused into one engine step)")
        return "\n".join(lines)

    def mermaid(self) -> str:
        """Mermaid flowchart; fused steps share a subgraph."""
        lines = ["flowchart LR"]
        for n, stage in enumerate(self.stages):
            if len(stage.steps) > 1:
                lines.append(f'  subgraph fused{n}["fused: {stage.stage_id}"]')
            for step in stage.steps:
                lines.append(f'    {_node(step.step_id)}["{step.step_id}<br/>{step.operator}"]')
            if len(stage.steps) > 1:
                lines.append("  end")
        lines.extend(f"  {_node(src)} --> {_node(step.step_id)}" for step in self.order for src in step.inputs)
        return "\n".join(lines)

    def dot(self) -> str:
        """Graphviz DOT; fused steps share a cluster."""
        lines = [f'digraph "{self.flow.name}" {{', "  rankdir=LR;"]
        for n, stage in enumerate(self.stages):
            indent = "  "
            if len(stage.steps) > 1:
                lines.append(f'  subgraph cluster_{n} {{ label="fused"; style=dashed;')
                indent = "    "
            for step in stage.steps:
                lines.append(f'{indent}"{step.step_id}" [label="{step.step_id}\\n{step.operator}"];')
            if len(stage.steps) > 1:
                lines.append("  }")
        lines.extend(f'  "{src}" -> "{step.step_id}";' for step in self.order for src in step.inputs)
        lines.append("}")
        return "\n".join(lines)

    def to_bytewax(self, sinks: Mapping[str, Any] | None = None) -> Any:
        """Build the bytewax ``Dataflow`` that runs this flow (*sinks* replaces sinks by step id)."""
        from edgeflow.engine import build_dataflow

        return build_dataflow(self, sinks)


def _node(step_id: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in step_id)


def _schema_text(schema: Schema) -> str:
    text = f"{schema.kind}[{','.join(schema.channels)}]" if schema.channels else schema.kind
    if schema.window_size:
        text += f" x{schema.window_size}"
    if schema.rate_hz:
        text += f" @ {schema.rate_hz:g} Hz"
    if schema.features:
        text += f", {schema.n_features} features"
    return text


def _topological_order(flow: Flow) -> list[Step]:
    by_id = {step.step_id: step for step in flow.steps}
    for step in flow.steps:
        for src in step.inputs:
            if src not in by_id:
                raise FlowValidationError(
                    step.step_id, "inputs", src, "no step has this id", hint=f"known steps: {sorted(by_id)}"
                )
            if by_id[src].kind == "sink":
                raise FlowValidationError(step.step_id, "inputs", src, "a sink has no output to read")
    order: list[Step] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(step: Step, path: tuple[str, ...]) -> None:
        if state.get(step.step_id) == 2:
            return
        if state.get(step.step_id) == 1:
            cycle = " -> ".join((*path[path.index(step.step_id) :], step.step_id))
            raise FlowValidationError(
                step.step_id, "inputs", list(step.inputs), f"cycle {cycle}", hint="a flow is acyclic"
            )
        state[step.step_id] = 1
        for src in step.inputs:
            visit(by_id[src], (*path, step.step_id))
        state[step.step_id] = 2
        order.append(step)

    for step in flow.steps:
        visit(step, ())
    return order


def _consumers(order: list[Step]) -> dict[str, list[str]]:
    consumers: dict[str, list[str]] = {step.step_id: [] for step in order}
    for step in order:
        for src in step.inputs:
            consumers[src].append(step.step_id)
    return consumers


def _check_connected(flow: Flow, order: list[Step], consumers: dict[str, list[str]]) -> None:
    if not any(step.kind == "source" for step in order):
        raise FlowValidationError(
            flow.name, None, None, "the flow has no source", hint="start with e.g. eo.replay(...)"
        )
    for step in order:
        if step.kind != "source" and not step.inputs:
            raise FlowValidationError(
                step.step_id, "inputs", [], "the step has no input", hint="connect it to a stream"
            )
    for step in order:
        if step.kind != "sink" and not consumers[step.step_id]:
            raise FlowValidationError(
                step.step_id,
                None,
                None,
                "its output goes nowhere",
                hint="feed it to another step or a sink such as eo.stdout",
            )


def _fuse(order: list[Step], consumers: dict[str, list[str]]) -> list[Stage]:
    stages: list[Stage] = []
    by_id = {step.step_id: step for step in order}
    absorbed: set[str] = set()
    for step in order:
        if step.step_id in absorbed:
            continue
        chain = [step]
        while chain[-1].kind == "map" and len(consumers[chain[-1].step_id]) == 1:
            nxt = by_id[consumers[chain[-1].step_id][0]]
            if nxt.kind != "map" or len(nxt.inputs) != 1:
                break
            chain.append(nxt)
            absorbed.add(nxt.step_id)
        stages.append(Stage(tuple(chain)))
    return stages


def compile_flow(flow: Flow) -> CompiledFlow:
    """Check *flow* and plan its engine steps; raise :class:`FlowValidationError` if it cannot run."""
    order = _topological_order(flow)
    consumers = _consumers(order)
    _check_connected(flow, order, consumers)
    schemas: dict[str, Schema] = {}
    for step in order:
        if step.check is not None:
            step.check()
        schemas[step.step_id] = step.schema(tuple(schemas[src] for src in step.inputs))
    return CompiledFlow(flow, tuple(order), schemas, tuple(_fuse(order, consumers)))


def fused_function(steps: Iterable[Step]) -> Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]:
    """Chain stateless steps into one batch function over ``(key, item)`` pairs.

    A step's ``batch`` function gets all the batch's items at once (vectorized across sensors);
    otherwise its ``fn`` runs per item, ``None`` dropping it. Dead letters leave the chain at once.

    >>> run = fused_function([Step("a", "map", "map", (), fn=lambda x: x + 1),
    ...                       Step("b", "map", "map", (), fn=lambda x: x * 10 if x < 3 else None)])
    >>> run([("a", 1), ("b", 2)])
    [('a', 20)]
    """
    from edgeflow.records import DeadLetter

    chain = tuple((step.fn, step.batch) for step in steps)

    def run_batch(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        pairs = items
        for fn, batch in chain:
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
