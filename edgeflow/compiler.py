"""Check a :class:`~edgeflow.graph.Flow` and plan its engine steps, fusing stateless chains.

Everything here runs before any data flows, so a broken flow fails with the
step's name instead of halfway through a recording. A flow is compiled once:
files are read, models loaded and brokers probed here, and what the checks
prepared is handed to the steps when :func:`edgeflow.runtime.run` starts them.

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

import re
from dataclasses import dataclass, field
from typing import Any

from edgeflow.context import RunContext
from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, Schema, Step, StepContext

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
    prepared: dict[str, Any] = field(default_factory=dict)
    """What each step's compile-time ``check`` returned, by step id."""

    @property
    def name(self) -> str:
        """The flow's name."""
        return self.flow.name

    @property
    def splits_by_sensor(self) -> bool:
        """Whether every source can split its input by sensor among processes that then share nothing.

        Such a flow's processes need no engine cluster: every step after the source is per sensor (a replay
        of a CSV file with a sensor column says so through its settings' ``splits_by_sensor``).
        """
        sources = [step for step in self.order if step.kind == "source"]
        return bool(sources) and all(getattr(step.config, "splits_by_sensor", False) for step in sources)

    @property
    def priorities(self) -> dict[str, str]:
        """The sensors a step of the flow gives ``high`` priority (``eo.infer(priorities=...)``), for every step.

        A sensor is high-priority when any step says so; the other sensors are normal.
        """
        high: dict[str, str] = {}
        for step in self.order:
            declared = getattr(step.config, "priorities", None)
            if isinstance(declared, dict):
                high.update((str(sensor), "high") for sensor, level in declared.items() if level == "high")
        return high

    def context(self, step: Step, run: RunContext) -> StepContext:
        """Return the :class:`StepContext` *step*'s factory gets in *run*."""
        inputs = tuple(self.schemas[src] for src in step.inputs)
        schema, prepared = self.schemas[step.step_id], self.prepared.get(step.step_id)
        return StepContext(step.step_id, inputs, schema, run, prepared, self.priorities)

    def build(self, step: Step, run: RunContext) -> Any:
        """Call *step*'s factory for *run*."""
        assert step.build is not None, f"step {step.step_id!r} has no build factory"
        return step.build(self.context(step, run))

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


_FLOW_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _check_name(flow: Flow) -> None:
    if not _FLOW_NAME.match(flow.name):
        raise FlowValidationError(
            flow.name,
            "name",
            flow.name,
            "a flow name may hold only letters, digits, '_' and '-'",
            hint="the name labels metrics and output files; try " + repr(re.sub(r"[^A-Za-z0-9_-]", "_", flow.name)),
        )


def compile_flow(flow: Flow) -> CompiledFlow:
    """Check *flow* and plan its engine steps; raise :class:`FlowValidationError` if it cannot run."""
    _check_name(flow)
    order = _topological_order(flow)
    consumers = _consumers(order)
    _check_connected(flow, order, consumers)
    schemas: dict[str, Schema] = {}
    prepared: dict[str, Any] = {}
    for step in order:
        if step.check is not None:
            prepared[step.step_id] = step.check()
        schemas[step.step_id] = step.schema(tuple(schemas[src] for src in step.inputs))
    return CompiledFlow(flow, tuple(order), schemas, tuple(_fuse(order, consumers)), prepared)
