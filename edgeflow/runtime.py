"""Run a compiled flow on the dataflow engine, in this process or as one process of a cluster.

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
from edgeflow.errors import EdgeflowError
from edgeflow.graph import Flow
from edgeflow.metrics import FlowStats
from edgeflow.observe.health import RUN, HealthConfig

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
    process: int | None = None
    """This process's id in a cluster, ``None`` alone."""
    processes: tuple[RunReport, ...] = ()
    """For a report merged from several processes (``edgeflow run -p N``), each one's own report."""

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
        """Readable report lines (see :func:`edgeflow.observe.report.report_lines`)."""
        from edgeflow.observe.report import report_lines

        return report_lines(self)

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (see :func:`edgeflow.observe.report.report_document`)."""
        from edgeflow.observe.report import report_document

        return report_document(self)


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
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",  # Prometheus scrapes from another host, as its exporters do
    health: HealthConfig | None = None,
    report_json: str | Path | None = None,
    share: tuple[int, int] | None = None,
) -> RunReport:
    """Run a compiled flow until its sources end; return a :class:`RunReport`.

    A plain :class:`Flow` is compiled first (once). With *addresses* and *process_id* this process
    joins a cluster. *sinks* replaces sinks by step id (see :func:`edgeflow.testing.run_capture`).

    With *handle_signals* (and when called from the main thread), SIGTERM or Ctrl-C stops the run
    cleanly: sources stop taking input, the flow finishes what it holds and flushes its sinks, and
    ``run`` returns its report (``stopped_by`` says which signal). A second Ctrl-C exits at once (130).
    *recovery_dir* overrides the flow's own: with one, the run snapshots its sources and state every
    ``snapshot_every_s`` and a restart after a crash resumes from the last snapshot.

    *metrics_port* (default: the flow's ``metrics_port``) serves ``/metrics``, ``/healthz`` and
    ``/readyz`` on *metrics_host* while the flow runs (:mod:`edgeflow.observe.exporter`; in a cluster,
    process *i* serves port + *i*), with *health*'s limits. *report_json* writes the final report as
    strict JSON.

    *share* ``(index, count)`` makes this process one of *count* that share nothing: each runs the whole
    flow on its share of the sensors, with no engine cluster between them (for flows whose every source
    splits by sensor, see :attr:`CompiledFlow.splits_by_sensor`); its snapshots go to a folder of its own.
    """
    compiled = flow if isinstance(flow, CompiledFlow) else compile_flow(flow)
    dead_letters = compiled.flow.dead_letter_path
    recovery = recovery_dir if recovery_dir is not None else compiled.flow.recovery_dir
    alone = share is not None and share[1] > 1
    if alone and recovery is not None:
        assert share is not None
        recovery = Path(recovery) / f"process-{share[0]}-of-{share[1]}"
    ctx = RunContext(
        compiled.name,
        dead_letter_path=None if dead_letters is None else Path(dead_letters),
        recovery_dir=None if recovery is None else Path(recovery),
        snapshot_every_s=compiled.flow.snapshot_every_s,
        latency_budget_ms=compiled.flow.latency_budget_ms,
        workers=workers * (share[1] if share is not None and alone else len(addresses) if addresses else 1),
        own_workers=range(share[0] * workers, (share[0] + 1) * workers) if share is not None and alone else None,
    )
    stats = ctx.stats
    stats.expected_bytes_in = _replay_bytes(compiled)
    stats.set_ready(RUN, False)
    if not addresses:  # this process opens every partition: ready once all are open
        stats.expect_sources(step.step_id for step in compiled.order if step.kind == "source")
    port = metrics_port if metrics_port is not None else compiled.flow.metrics_port
    server = None
    if port is not None:
        server = _serve_metrics(stats, compiled.name, port, metrics_host, process_id, health)
    done = threading.Event()
    ticker = None
    if progress is not None:

        def tick() -> None:
            while not done.wait(progress_every_s):
                progress(stats)

        ticker = threading.Thread(target=tick, name="edgeflow-progress", daemon=True)
        ticker.start()
    # Objects alive now (modules, the dataflow, models) never become garbage: moving them out of the
    # collector's reach keeps full collections short, which is most of the per-event p99. No collection
    # first: it would walk every object (~10 ms at start-up) to free a few hundred; unfreeze gives them back.
    gc.freeze()
    started = time.perf_counter()
    stopped: list[str] = []
    restore = _stop_on_signals(ctx, stopped) if handle_signals else None
    try:
        stats.set_ready(RUN, True)  # models loaded when the flow compiled; sources say for themselves
        execute(compiled, ctx, workers=workers, process_id=process_id, addresses=addresses, sinks=sinks)
    finally:
        if restore is not None:
            restore()
        gc.unfreeze()
        done.set()
        if ticker is not None:
            ticker.join()
        if server is not None:
            server.close()
    windows = any(step.operator == "window" for step in compiled.order)
    report = RunReport(
        compiled.name,
        time.perf_counter() - started,
        stats,
        stopped[0] if stopped else None,
        windows,
        process=process_id if addresses or alone else None,
    )
    if report_json is not None:
        from edgeflow.observe.report import write_report

        write_report(report_json, report)
    return report


def _serve_metrics(
    stats: FlowStats, flow: str, port: int, host: str, process_id: int | None, health: HealthConfig | None
) -> Any:
    """Start the metrics server of this process (port + process id in a cluster), or say why it cannot start."""
    from edgeflow.observe.exporter import MetricsServer

    if port and process_id:
        port += process_id
    if not 0 <= port <= 65_535:
        msg = (
            f"metrics port got {port}: must be between 0 and 65535. Hint: pass --metrics-port (or Flow(metrics_port=))"
        )
        raise EdgeflowError(msg)
    try:
        return MetricsServer(stats, flow, port=port, host=host, process=process_id or 0, health=health)
    except OSError as exc:
        msg = (
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}. Hint: pick another --metrics-port "
            "(in a cluster, process i takes port + i), or stop what listens there"
        )
        raise EdgeflowError(msg) from None


def _replay_bytes(compiled: CompiledFlow) -> int | None:
    """Bytes of input when every source replays a plain (not compressed) file: what progress is measured against."""
    total = 0
    for step in compiled.order:
        if step.kind != "source":
            continue
        path = getattr(step.config, "path", None)
        if step.operator != "replay" or path is None or Path(path).suffix == ".gz":
            return None
        try:
            total += Path(path).stat().st_size
        except OSError:
            return None
    return total or None


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
