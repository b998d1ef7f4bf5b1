"""Run a compiled flow on bytewax, in this process or as one process of a cluster.

>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> from edgeflow.compiler import compile_flow
>>> flow = Flow("doc-run")
>>> s = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
>>> f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms"])
>>> _ = eo.summarize("summary", eo.zscore_detector("detect", f), sink=eo.jsonl("out/doc-run.jsonl"))
>>> report = run(compile_flow(flow))
>>> report.stats.samples_in
118050
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeflow.compiler import CompiledFlow, compile_flow
from edgeflow.connectors import Sink
from edgeflow.context import RunContext
from edgeflow.engine import execute
from edgeflow.graph import Flow
from edgeflow.metrics import FlowStats

__all__ = ["RunReport", "run"]


@dataclass(frozen=True)
class RunReport:
    """What a finished run did."""

    flow: str
    seconds: float
    stats: FlowStats

    @property
    def events_per_s(self) -> float:
        """Samples processed per second of wall time."""
        return self.stats.samples_in / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Readable report lines."""
        s = self.stats
        return [
            f"flow {self.flow!r}: {s.samples_in:,} samples in {self.seconds:.2f} s ({self.events_per_s:,.0f}/s)",
            f"  windows {s.windows:,}  anomalous {s.anomalies:,}  gaps {s.gaps}  late {s.late}  dead letters "
            f"{s.dead_letters}",
            f"  latency ingest->output p50 {s.latency.percentile_us(50):.0f} us  "
            f"p99 {s.latency.percentile_us(99):.0f} us  ({s.latency.count:,} outputs; unpaced runs include queueing)",
            f"  bytes in {s.bytes_in:,}  out {s.bytes_out:,}  reduction {100 * s.reduction:.2f} %",
        ]


def run(
    flow: CompiledFlow | Flow,
    *,
    workers: int = 1,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
    sinks: Mapping[str, Sink] | None = None,
    progress: Callable[[FlowStats], None] | None = None,
    progress_every_s: float = 1.0,
) -> RunReport:
    """Run a compiled flow until its sources end; return a :class:`RunReport`.

    A plain :class:`Flow` is compiled first (once). With *addresses* and *process_id* this process
    joins a bytewax cluster. *sinks* replaces sinks by step id (see :func:`edgeflow.testing.run_capture`).
    """
    compiled = flow if isinstance(flow, CompiledFlow) else compile_flow(flow)
    dead_letters = compiled.flow.dead_letter_path
    ctx = RunContext(compiled.name, dead_letter_path=None if dead_letters is None else Path(dead_letters))
    stats = ctx.stats
    done = threading.Event()
    ticker = None
    if progress is not None:

        def tick() -> None:
            while not done.wait(progress_every_s):
                progress(stats)

        ticker = threading.Thread(target=tick, name="edgeflow-progress", daemon=True)
        ticker.start()
    # Objects alive now (modules, the dataflow, models) never become garbage: moving them out of the
    # collector's reach keeps full collections short, which is most of the per-event p99.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    try:
        execute(compiled, ctx, workers=workers, process_id=process_id, addresses=addresses, sinks=sinks)
    finally:
        gc.unfreeze()
        done.set()
        if ticker is not None:
            ticker.join()
    return RunReport(compiled.name, time.perf_counter() - started, stats)
