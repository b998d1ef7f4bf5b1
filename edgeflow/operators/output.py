"""Sinks as flow steps: ``output(step_id, up, sink)`` with ``stdout()`` or ``jsonl(path)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow.graph import Step, Stream
from edgeflow.sinks import JsonlSink, StdoutSink

__all__ = ["SinkSpec", "jsonl", "output", "stdout"]


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """Where a stream goes: a name for the graph and a builder taking the flow's name."""

    name: str
    build: Callable[[str], Any]
    check: Callable[[], None] | None = None


def stdout() -> SinkSpec:
    """Readable lines on standard output.

    >>> stdout().name
    'stdout'
    """
    return SinkSpec("stdout", StdoutSink)


def jsonl(path: str | Path) -> SinkSpec:
    """One JSON object per line in *path* (created with its folder; one file per worker).

    >>> jsonl("out/summary.jsonl").name
    'jsonl'
    """
    return SinkSpec("jsonl", lambda flow_name: JsonlSink(path, flow_name))


def output(step_id: str, up: Stream, sink: SinkSpec) -> None:
    """Send *up* to *sink*.

    >>> from edgeflow import Flow
    >>> import edgeflow.operators as eo
    >>> s = eo.replay("samples", Flow("doc"), "examples/data/pump_vibration.csv")
    >>> output("print", s, stdout())
    """
    flow = up.flow
    flow.add_step(
        Step(step_id, sink.name, "sink", (up.step_id,), None, sink=lambda: sink.build(flow.name), check=sink.check)
    )
