"""Run a compiled flow on bytewax, in this process or as one process of a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bytewax.recovery import RecoveryConfig, init_db_dir
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
    recovery = None if run.recovery_dir is None else _recovery_store(run.recovery_dir)
    cli_main(
        dataflow,
        workers_per_process=workers,
        process_id=process_id,
        addresses=list(addresses) if addresses else None,
        epoch_interval=timedelta(seconds=run.snapshot_every_s) if recovery is not None else None,
        recovery_config=recovery,
    )


def _recovery_store(folder: Path) -> RecoveryConfig:
    """Return the snapshot store in *folder*, created on first use (one SQLite partition)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("part-*.sqlite3")):
        init_db_dir(folder, 1)
    return RecoveryConfig(folder)
