"""Run a compiled flow on bytewax, in this process or as one process of a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from bytewax.run import cli_main

from edgeflow.connectors import Sink
from edgeflow.context import RunContext
from edgeflow.engine.dataflow import build_dataflow

if TYPE_CHECKING:
    from edgeflow.compiler import CompiledFlow

__all__ = ["execute"]


def execute(
    compiled: CompiledFlow,
    run: RunContext,
    *,
    workers: int = 1,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
    sinks: Mapping[str, Sink] | None = None,
) -> None:
    """Run *compiled* until its sources end (blocking); several *workers* share this process."""
    dataflow = build_dataflow(compiled, run, sinks)
    cli_main(
        dataflow,
        workers_per_process=workers,
        process_id=process_id,
        addresses=list(addresses) if addresses else None,
    )
