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
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    stopped_by: str | None = None
    """The signal that stopped the run early (``"SIGTERM"``, ``"SIGINT"``), or ``None``."""
    expects_windows: bool = False
    """Whether the flow cuts windows (so a run that closed none produced nothing)."""

    @property
    def problem(self) -> str | None:
        """Why this run's result cannot be trusted although it ended, in one line; ``None`` when it can.

        >>> RunReport("f", 1.0, FlowStats(dead_letters=5)).problem
        'no sample was processed: all 5 inputs were dead letters'
        """
        s = self.stats
        if s.problems:
            return "; ".join(s.problems)
        if s.samples_in == 0 and s.dead_letters:
            return f"no sample was processed: all {s.dead_letters:,} inputs were dead letters"
        if self.expects_windows and s.samples_in and not s.windows:
            return (
                f"no window closed in {s.samples_in:,} samples ({s.gaps:,} gaps): check the window's rate_hz, size "
                "and max_gap_s against the data's sampling interval"
            )
        return None

    @property
    def events_per_s(self) -> float:
        """Samples processed per second of wall time."""
        return self.stats.samples_in / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Readable report lines."""
        s = self.stats
        lines = [
            f"flow {self.flow!r}: {s.samples_in:,} samples in {self.seconds:.2f} s ({self.events_per_s:,.0f}/s)",
            f"  windows {s.windows:,}  anomalous {s.anomalies:,}  gaps {s.gaps}  late {s.late}  dead letters "
            f"{s.dead_letters}",
            f"  latency ingest->output p50 {s.latency.percentile_us(50):.0f} us  "
            f"p99 {s.latency.percentile_us(99):.0f} us  ({s.latency.count:,} outputs; unpaced runs include queueing)",
            f"  bytes in {s.bytes_in:,}  out {s.bytes_out:,}  reduction {100 * s.reduction:.2f} %",
        ]
        losses = {name: n for name, n in sorted(s.counts.items()) if n and _is_loss(name)}
        if losses:
            lines.append("  losses " + "  ".join(f"{name} {n:,}" for name, n in losses.items()))
        if self.stopped_by:
            lines.append(f"  stopped by {self.stopped_by}: input ended early, what the flow held was flushed")
        return lines


_LOSS_WORDS = ("dropped", "lost", "overflow", "rejected", "shed", "discarded")


def _is_loss(counter: str) -> bool:
    """Whether a counter counts data that did not make it (every such counter is reported when non-zero)."""
    return any(word in counter for word in _LOSS_WORDS)


def run(
    flow: CompiledFlow | Flow,
    *,
    workers: int = 1,
    process_id: int | None = None,
    addresses: Sequence[str] | None = None,
    sinks: Mapping[str, Sink] | None = None,
    progress: Callable[[FlowStats], None] | None = None,
    progress_every_s: float = 1.0,
    handle_signals: bool = True,
    recovery_dir: str | Path | None = None,
) -> RunReport:
    """Run a compiled flow until its sources end; return a :class:`RunReport`.

    A plain :class:`Flow` is compiled first (once). With *addresses* and *process_id* this process
    joins a cluster. *sinks* replaces sinks by step id (see :func:`edgeflow.testing.run_capture`).

    With *handle_signals* (and when called from the main thread), SIGTERM or Ctrl-C stops the run
    cleanly: sources stop taking input, the flow finishes what it holds and flushes its sinks, and
    ``run`` returns its report (``stopped_by`` says which signal). A second Ctrl-C exits at once (130).
    *recovery_dir* overrides the flow's own: with one, the run snapshots its sources and state every
    ``snapshot_every_s`` and a restart after a crash resumes from the last snapshot.
    """
    compiled = flow if isinstance(flow, CompiledFlow) else compile_flow(flow)
    dead_letters = compiled.flow.dead_letter_path
    recovery = recovery_dir if recovery_dir is not None else compiled.flow.recovery_dir
    ctx = RunContext(
        compiled.name,
        dead_letter_path=None if dead_letters is None else Path(dead_letters),
        recovery_dir=None if recovery is None else Path(recovery),
        snapshot_every_s=compiled.flow.snapshot_every_s,
    )
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
    stopped: list[str] = []
    restore = _stop_on_signals(ctx, stopped) if handle_signals else None
    try:
        execute(compiled, ctx, workers=workers, process_id=process_id, addresses=addresses, sinks=sinks)
    finally:
        if restore is not None:
            restore()
        gc.unfreeze()
        done.set()
        if ticker is not None:
            ticker.join()
    windows = any(step.operator == "window" for step in compiled.order)
    return RunReport(compiled.name, time.perf_counter() - started, stats, stopped[0] if stopped else None, windows)


def _stop_on_signals(ctx: RunContext, stopped: list[str]) -> Callable[[], None] | None:
    """Make SIGINT/SIGTERM set the run's stop event (a second SIGINT exits 130); return a function undoing it."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stopped and signum == signal.SIGINT:
            sys.stderr.write("second Ctrl-C: exiting now, without flushing\n")
            sys.stderr.flush()
            os._exit(130)
        if not stopped:
            stopped.append(name)
            sys.stderr.write(f"{name}: stopping input, finishing what the flow holds (Ctrl-C again to quit at once)\n")
            sys.stderr.flush()
        ctx.stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
