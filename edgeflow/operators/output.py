"""Sinks as flow steps: ``output(step_id, up, sink)`` with ``stdout()`` or ``jsonl(path)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow.connectors import Sink
from edgeflow.graph import Step, StepContext, Stream
from edgeflow.sinks import JsonlSink, StdoutSink

__all__ = ["SinkSpec", "jsonl", "output", "stdout"]


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """Where a stream goes: a name for the graph and a factory making the :class:`~edgeflow.connectors.Sink` of a run.

    *check* runs once at compile time; what it returns reaches *build* as ``ctx.prepared``.
    """

    name: str
    build: Callable[[StepContext], Sink]
    check: Callable[[], Any] | None = None


def stdout() -> SinkSpec:
    """Readable lines on standard output.

    >>> stdout().name
    'stdout'
    """
    return SinkSpec("stdout", lambda ctx: StdoutSink(ctx.run.stats))


def jsonl(path: str | Path) -> SinkSpec:
    """One JSON object per line in *path* (created with its folder; one file per worker).

    >>> jsonl("out/summary.jsonl").name
    'jsonl'
    """
    return SinkSpec("jsonl", lambda ctx: JsonlSink(path, ctx.run.stats))


def output(step_id: str, up: Stream, sink: SinkSpec) -> None:
    """Send *up* to *sink*.

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> output("print", s, stdout())
    """
    up.flow.add_step(Step(step_id, sink.name, "sink", (up.step_id,), None, build=sink.build, check=sink.check))
