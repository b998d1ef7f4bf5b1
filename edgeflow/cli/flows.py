"""``edgeflow validate``, ``graph``, ``run`` and ``init``: check, show, run and scaffold flows.

Each command loads the flow file and compiles it once; ``run`` hands that compiled
flow to :func:`edgeflow.runtime.run`, so models load and brokers are probed once per
process. Mistakes in a flow file exit 4 with the file and line, an invalid flow exits 3.

>>> app = typer.Typer()
>>> register(app)
>>> list(typer.main.get_command(app).commands)
['validate', 'graph', 'run', 'init']
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from edgeflow import terminal
from edgeflow.cli.errors import debug_enabled, fail
from edgeflow.errors import EdgeflowError, FlowValidationError
from edgeflow.loader import FlowLoadError, load_flow, user_code_line
from edgeflow.terminal import EXIT_FAILED, EXIT_INVALID, EXIT_LOAD_FAILED, EXIT_NO_RESULT

if TYPE_CHECKING:
    import subprocess

    from edgeflow.compiler import CompiledFlow
    from edgeflow.metrics import FlowStats
    from edgeflow.runtime import RunReport

__all__ = ["compile_target", "register"]

FlowArg = Annotated[str, typer.Argument(help="Flow file, optionally FILE.py:NAME or FILE.py:factory(arg=...)")]


class GraphFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


def compile_target(target: str, *, debug: bool = False) -> CompiledFlow:
    """Load the flow *target* names and compile it, or exit 4 (not loadable), 3 (invalid) or 1 (failed).

    >>> compile_target("flows/pump_vibration.py").flow.name
    'pump_vibration'
    """
    from edgeflow.compiler import compile_flow

    try:
        flow = load_flow(target)
    except FlowValidationError as exc:  # raised by an operator while the flow file runs: say where
        fail(f"invalid flow {user_code_line(exc) or target}", exc, EXIT_INVALID, debug=debug)
    except FlowLoadError as exc:
        fail("cannot load flow", exc, EXIT_LOAD_FAILED, debug=debug)
    try:
        return compile_flow(flow)
    except FlowValidationError as exc:
        fail(f"invalid flow {flow.name!r}", exc, EXIT_INVALID, debug=debug)
    except Exception as exc:  # a bug in a step's own code, found while compiling
        fail(f"cannot compile flow {flow.name!r}", _named(exc), EXIT_FAILED, debug=debug)


def _named(exc: Exception) -> Exception:
    """*exc* if it is one of edgeflow's own (its message says enough), else one that starts with its type."""
    if isinstance(exc, EdgeflowError):
        return exc
    named = RuntimeError(f"{type(exc).__name__}: {exc}")
    named.__cause__ = exc
    return named


def validate(ctx: typer.Context, target: FlowArg) -> None:
    """Check a flow (graph, settings, files, shapes) without running it."""
    compiled = compile_target(target, debug=debug_enabled(ctx))
    terminal.err.print(
        f"[green]ok[/green] flow {compiled.flow.name!r}: {len(compiled.order)} steps, "
        f"{len(compiled.stages)} engine steps"
    )


def graph(
    ctx: typer.Context,
    target: FlowArg,
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f", help="text, mermaid or dot")] = GraphFormat.text,
) -> None:
    """Show the compiled graph, with fused steps marked."""
    compiled = compile_target(target, debug=debug_enabled(ctx))
    text = {"text": compiled.describe, "mermaid": compiled.mermaid, "dot": compiled.dot}[fmt.value]()
    typer.echo(text)


def run(
    ctx: typer.Context,
    target: FlowArg,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker threads per process")] = 1,
    processes: Annotated[int, typer.Option("--processes", "-p", min=1, help="Local processes to spawn")] = 1,
    process_id: Annotated[int | None, typer.Option("--process-id", "-i", help="This process's index")] = None,
    addresses: Annotated[
        str | None, typer.Option("--addresses", "-a", help="host:port of every process, separated by ';'")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or report")] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Live panel on a terminal, a line every second otherwise (default: terminal)",
        ),
    ] = None,
    recovery_dir: Annotated[
        Path | None,
        typer.Option("--recovery-dir", help="Snapshot store: a restart resumes where a crash or stop left off"),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus /metrics, /healthz and /readyz on this port (process i of a cluster: port + i)",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the metrics server listens on (127.0.0.1: this host only)")
    ] = "0.0.0.0",  # Prometheus scrapes from another host, as its exporters do
    health_uplink_s: Annotated[
        float, typer.Option("--health-uplink-s", min=0, help="/healthz fails when a connection is down this long")
    ] = 60.0,
    health_stall_s: Annotated[
        float,
        typer.Option("--health-stall-s", min=0, help="/healthz fails when a source is silent this long (0: never)"),
    ] = 60.0,
    report_json: Annotated[
        Path | None, typer.Option("--report-json", help="Write the final report as JSON to this file (for scripts, CI)")
    ] = None,
    cluster_dir: Annotated[Path | None, typer.Option("--cluster-dir", hidden=True)] = None,
) -> None:
    """Run a flow until its sources end (one worker by default, cluster mode with -w/-p/-a)."""
    debug = debug_enabled(ctx)
    show = not quiet and (terminal.err.is_terminal if progress is None else progress)
    settings = _RunSettings(
        workers, recovery_dir, metrics_port, metrics_host, health_uplink_s, health_stall_s, debug=debug
    )
    if processes > 1 and addresses is None:
        import edgeflow.observe.health  # noqa: F401  (numpy and the run's settings: imported once, before the fork)

        code = _spawn_cluster(target, processes, settings, quiet=quiet, show=show, report_json=report_json)
        raise typer.Exit(code)
    _run_here(
        target,
        settings,
        process_id,
        addresses,
        quiet=quiet,
        show=show,
        report_json=report_json,
        cluster_dir=cluster_dir,
    )


class _RunSettings(NamedTuple):
    """What ``edgeflow run`` passes on to each process of ``-p N``."""

    workers: int
    recovery_dir: Path | None
    metrics_port: int | None
    metrics_host: str
    health_uplink_s: float
    health_stall_s: float
    debug: bool = False

    def options(self) -> list[str]:
        """Return the settings as options of ``edgeflow run`` (for a child started afresh, not forked)."""
        out = ["-w", str(self.workers), "--metrics-host", self.metrics_host]
        out += ["--health-uplink-s", str(self.health_uplink_s), "--health-stall-s", str(self.health_stall_s)]
        if self.metrics_port is not None:
            out += ["--metrics-port", str(self.metrics_port)]
        if self.recovery_dir is not None:
            out += ["--recovery-dir", str(self.recovery_dir)]
        return out


def _run_here(
    target: str,
    settings: _RunSettings,
    process_id: int | None,
    addresses: str | None,
    *,
    quiet: bool,
    show: bool,
    report_json: Path | None,
    cluster_dir: Path | None,
) -> None:
    """Run *target* in this process (alone, or as process *process_id* of a cluster); exit as ``run`` says."""
    workers, recovery_dir, metrics_port, metrics_host, health_uplink_s, health_stall_s, debug = settings
    from edgeflow.observe.health import HealthConfig  # imported here: a parent of `-p N` forks before it needs it

    health = HealthConfig(uplink_down_s=health_uplink_s, stall_s=health_stall_s or None)
    compiled = compile_target(target, debug=debug)
    from edgeflow.runtime import run as run_flow

    ticks: Callable[[FlowStats], None] | None = None
    view: AbstractContextManager[Any] = contextlib.nullcontext()
    if cluster_dir is not None:  # a child of `edgeflow run -p N`: the parent shows and reports
        from edgeflow.observe.cluster import write_status

        folder, child, name = cluster_dir, process_id or 0, compiled.name

        def ticks(stats: FlowStats) -> None:
            write_status(folder, child, stats, name)

    elif show and terminal.err.is_terminal:
        from edgeflow.observe.live import LiveView

        seen: list[FlowStats] = []  # the run's stats, once the run has made them

        def ticks(stats: FlowStats) -> None:
            if not seen:
                seen.append(stats)

        view = LiveView(compiled.name, lambda: [("", stats.to_json()) for stats in seen], terminal.err)
    elif show:
        from edgeflow.observe.live import status_line

        def ticks(stats: FlowStats) -> None:
            terminal.err.print(status_line(stats.to_json()), markup=False)

    peers = addresses.split(";") if addresses else None
    share = None
    if cluster_dir is not None and peers and compiled.splits_by_sensor:  # `-p N` of a flow split by sensor
        share, peers = (process_id or 0, len(peers)), None  # the processes share nothing: no engine cluster
    try:
        with view:
            report = run_flow(
                compiled,
                workers=workers,
                process_id=process_id,
                addresses=peers,
                share=share,
                progress=ticks,
                progress_every_s=_tick_s(cluster_dir is not None, isinstance(view, contextlib.nullcontext)),
                recovery_dir=recovery_dir,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                health=health,
                report_json=report_json if cluster_dir is None else None,
            )
    except FlowValidationError as exc:
        fail(f"invalid flow {compiled.flow.name!r}", exc, EXIT_INVALID, debug=debug)
    except (EdgeflowError, RuntimeError, OSError) as exc:
        fail(f"flow {compiled.flow.name!r} failed", _with_root_cause(exc), EXIT_FAILED, debug=debug)
    if cluster_dir is not None:
        from edgeflow.observe.report import save_part

        save_part(cluster_dir, process_id or 0, report)
        return
    _finish(report, quiet=quiet)


def _tick_s(child: bool, lines: bool) -> float:
    """How often the run calls back: a child's status file and the live view often, progress lines every second."""
    if child:
        from edgeflow.observe.cluster import STATUS_EVERY_S

        return STATUS_EVERY_S
    return 1.0 if lines else 0.1


def _finish(report: RunReport, *, quiet: bool) -> None:
    """Print the report (unless *quiet*) and exit 5 when its result cannot be trusted."""
    if not quiet:
        for line in report.lines():
            terminal.err.print(line, markup=False)
    if report.problem is not None:
        terminal.err.print(f"[red]no trustworthy result[/red] from flow {report.flow!r}: ", end="")
        terminal.err.print(report.problem, markup=False)
        raise typer.Exit(EXIT_NO_RESULT)


def _with_root_cause(exc: Exception) -> Exception:
    """*exc*, or one whose message ends with the error that started it and where, in the user's code."""
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if root is exc:
        return exc
    where = user_code_line(root)
    told = RuntimeError(f"{exc}: {type(root).__name__}: {root}" + (f" at {where}" if where else ""))
    told.__cause__ = exc
    return told


def _spawn_cluster(
    target: str,
    processes: int,
    settings: _RunSettings,
    *,
    quiet: bool,
    show: bool,
    report_json: Path | None,
) -> int:
    """Run *processes* copies of this command on local ports and report for all of them; return the exit code.

    Each child compiles the flow once for itself, writes its status and final report to a
    temporary folder, and prints only errors (the engine's connection retries left out). The
    children run in their own session: Ctrl-C or SIGTERM here is passed on once, so they stop
    cleanly. A child that fails stops the others.
    """
    import shutil
    import tempfile

    base = int(os.environ.get("EDGEFLOW_CLUSTER_PORT", "2101"))
    addresses = ";".join(f"127.0.0.1:{base + i}" for i in range(processes))
    folder = Path(tempfile.mkdtemp(prefix="edgeflow-run-"))
    args = [*(["--debug"] if settings.debug else []), "run", target, "-a", addresses, "--cluster-dir", str(folder)]
    args += settings.options()
    try:
        procs = [
            _start_child(
                [*args, "-i", str(i)],
                functools.partial(
                    _run_here, target, settings, i, addresses, quiet=False, show=False, report_json=None,
                    cluster_dir=folder,
                ),
            )
            for i in range(processes)
        ]  # fmt: skip
        # imported once the children are on their way; the report's modules (numpy) a second later, once the
        # children are past their own start-up, not competing with it for the cores
        from edgeflow.observe.cluster import StderrForwarder, read_statuses

        preload = threading.Timer(1.0, importlib.import_module, ("edgeflow.observe.report",))
        preload.daemon = True
        preload.start()

        forwarders = [StderrForwarder(p.stderr) for p in procs if p.stderr is not None]
        view: AbstractContextManager[Any] = contextlib.nullcontext()
        if show:
            from edgeflow.observe.live import LineView, LiveView

            statuses = lambda: read_statuses(folder, processes)  # noqa: E731
            if terminal.err.is_terminal:
                view = LiveView(target, statuses, terminal.err)
            else:
                view = LineView(statuses, lambda line: terminal.err.print(line, markup=False))
        with view, _passing_signals_to(procs):
            codes = _wait_for(procs)
        for forwarder in forwarders:
            forwarder.join(timeout=5)
        from edgeflow.observe.report import load_parts, merge_reports, write_report

        failed = [code for code in codes if code > 0]
        if failed:
            return failed[0]
        if any(code < 0 for code in codes):
            return EXIT_FAILED
        parts = load_parts(folder, processes)
        missing = [i for i, part in enumerate(parts) if part is None]
        if missing:
            terminal.err.print(f"[red]no report[/red] from process {', '.join(map(str, missing))} of flow {target!r}")
            return EXIT_FAILED
        report = merge_reports([part for part in parts if part is not None])
        if report_json is not None:
            write_report(report_json, report)
        try:
            _finish(report, quiet=quiet)
        except typer.Exit as done:
            return int(done.exit_code)
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _ForkedChild:
    """``edgeflow <args>`` in a child forked from this process, in a session of its own, its stderr piped here.

    Forked rather than started afresh: the child skips the interpreter's start-up and the imports this process
    has done (typer, pydantic: ~0.13 s of each child's start), and calls *command* (what *args* would run)
    without parsing *args* again (~0.06 s more). Answers the few calls the parent makes of a
    :class:`subprocess.Popen`.
    """

    def __init__(self, args: list[str], command: Callable[[], None]) -> None:
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: run the command, never return into the parent's code
            code = 1
            try:
                os.setsid()
                os.close(read)
                os.dup2(write, 2)
                os.close(write)
                sys.argv = ["edgeflow", *args]  # what a flow file that reads it would see in a fresh child
                command()
                code = 0
            except typer.Exit as done:
                code = done.exit_code
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else int(done.code is not None)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(write)
        self.pid = pid
        self.stderr: IO[str] | None = os.fdopen(read, "r", errors="replace")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _start_child(args: list[str], command: Callable[[], None]) -> _ForkedChild | subprocess.Popen[str]:
    """Start ``edgeflow <args>`` in a session of its own with its stderr piped here: forked where the OS can.

    A forked child calls *command* (what *args* would run); one started afresh parses *args*.
    """
    if hasattr(os, "fork"):
        return _ForkedChild(args, command)
    import subprocess

    cmd = [sys.executable, "-m", "edgeflow", *args]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)


def _wait_for(procs: Sequence[_ForkedChild | subprocess.Popen[str]], grace_s: float = 3.0) -> list[int]:
    """Wait for every child; once one fails, stop the others (SIGTERM, then SIGKILL after *grace_s*)."""
    first_failure: float | None = None
    while True:
        codes = [p.poll() for p in procs]
        if all(code is not None for code in codes):
            return [int(code) for code in codes if code is not None]
        if first_failure is None and any(code not in (None, 0) for code in codes):
            first_failure = time.monotonic()
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        elif first_failure is not None and time.monotonic() - first_failure > grace_s:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.01)


@contextlib.contextmanager
def _passing_signals_to(procs: Sequence[_ForkedChild | subprocess.Popen[str]]) -> Iterator[None]:
    """While the children run, SIGINT and SIGTERM here are sent on to them (once each), not acted on here."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def init(directory: Annotated[Path, typer.Argument(help="New project folder")]) -> None:
    """Scaffold a project: flows/, operators/, models/, tests/ and a small recording."""
    from edgeflow.scaffold import scaffold

    try:
        created = scaffold(directory)
    except FileExistsError as exc:
        fail("cannot init", exc, EXIT_FAILED)
    for path in created:
        typer.echo(str(path))
    terminal.err.print(f"[green]ready[/green]: cd {directory} && edgeflow run flows/example.py && python -m pytest")


def register(app: typer.Typer) -> None:
    """Add ``validate``, ``graph``, ``run`` and ``init`` to the ``edgeflow`` command."""
    for command in (validate, graph, run, init):
        app.command()(command)
