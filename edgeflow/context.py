"""The run context: what one run of a compiled flow shares between its steps.

Each run gets a fresh context, so two runs (or two flows with one name) never
share counters or per-run state.

>>> ctx = RunContext("demo")
>>> ctx.stats.add(samples_in=2)
>>> ctx.stats.samples_in
2
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeflow.metrics import FlowStats

__all__ = ["RunContext"]


def _new_stats() -> FlowStats:
    from edgeflow.metrics import FlowStats

    return FlowStats()


@dataclass
class RunContext:
    """One run of a flow: its name, its counters, where dead letters go, and whether it was asked to stop."""

    flow_name: str
    stats: FlowStats = field(default_factory=_new_stats)
    dead_letter_path: Path | None = None
    recovery_dir: Path | None = None
    """Snapshot store folder (see :attr:`edgeflow.graph.Flow.recovery_dir`)."""
    snapshot_every_s: float = 1.0
    workers: int = 1
    """Workers of the whole run (threads per process times processes): a source may split its input among them."""
    own_workers: range | None = None
    """The workers (global indexes) this process runs when processes share nothing (each runs the whole flow on
    its share of the sensors); ``None`` in one process or a cluster, where the engine places partitions."""
    latency_budget_ms: float | None = None
    """Ingest → verdict budget of the flow (see :attr:`edgeflow.graph.Flow.latency_budget_ms`); ``None``: none."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set to stop taking input: sources end, the flow finishes what it holds and flushes its sinks."""
