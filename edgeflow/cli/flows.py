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

import os
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeflow.cli.errors import debug_enabled, fail
from edgeflow.errors import EdgeflowError, FlowValidationError
from edgeflow.loader import FlowLoadError, load_flow, user_code_line
from edgeflow.terminal import EXIT_FAILED, EXIT_INVALID, EXIT_LOAD_FAILED, EXIT_NO_RESULT, err

if TYPE_CHECKING:
    from edgeflow.compiler import CompiledFlow
    from edgeflow.metrics import FlowStats

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
    err.print(
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


def _progress_line(stats: FlowStats) -> str:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    return (
        f"{stats.samples_in:>12,} samples  {stats.samples_in / elapsed:>10,.0f}/s  windows {stats.windows:,}  "
        f"anomalous {stats.anomalies:,}  dead {stats.dead_letters}  "
        f"p99 {stats.latency.percentile_us(99):,.0f} us"
    )


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
        bool | None, typer.Option("--progress/--no-progress", help="Progress every second (default: on a terminal)")
    ] = None,
    recovery_dir: Annotated[
        Path | None,
        typer.Option("--recovery-dir", help="Snapshot store: a restart resumes where a crash or stop left off"),
    ] = None,
) -> None:
    """Run a flow until its sources end (bytewax; one worker by default, cluster mode with -w/-p/-a)."""
    debug = debug_enabled(ctx)
    if processes > 1 and addresses is None:
        raise typer.Exit(_spawn_cluster(target, processes, workers, quiet=quiet, debug=debug))
    compiled = compile_target(target, debug=debug)
    from edgeflow.runtime import run as run_flow

    show = not quiet and (sys.stderr.isatty() if progress is None else progress)
    try:
        report = run_flow(
            compiled,
            workers=workers,
            process_id=process_id,
            addresses=addresses.split(";") if addresses else None,
            progress=(lambda s: err.print(_progress_line(s))) if show else None,
            recovery_dir=recovery_dir,
        )
    except FlowValidationError as exc:
        fail(f"invalid flow {compiled.flow.name!r}", exc, EXIT_INVALID, debug=debug)
    except (EdgeflowError, RuntimeError, OSError) as exc:
        fail(f"flow {compiled.flow.name!r} failed", _with_root_cause(exc), EXIT_FAILED, debug=debug)
    if not quiet:
        for line in report.lines():
            err.print(line, markup=False)
    if report.problem is not None:
        err.print(f"[red]no trustworthy result[/red] from flow {compiled.flow.name!r}: ", end="")
        err.print(report.problem, markup=False)
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


def _spawn_cluster(target: str, processes: int, workers: int, *, quiet: bool, debug: bool) -> int:
    """Run *processes* copies of this command on local ports; each compiles the flow once for itself."""
    base = int(os.environ.get("EDGEFLOW_CLUSTER_PORT", "2101"))
    addresses = ";".join(f"127.0.0.1:{base + i}" for i in range(processes))
    cmd = [sys.executable, "-m", "edgeflow", *(["--debug"] if debug else []), "run", target]
    cmd += ["-w", str(workers), "-a", addresses, *(["--quiet"] if quiet else [])]
    procs = [subprocess.Popen([*cmd, "-i", str(i)]) for i in range(processes)]
    return max(p.wait() for p in procs)


def init(directory: Annotated[Path, typer.Argument(help="New project folder")]) -> None:
    """Scaffold a project: flows/, operators/, models/, tests/ and a small recording."""
    from edgeflow.scaffold import scaffold

    try:
        created = scaffold(directory)
    except FileExistsError as exc:
        fail("cannot init", exc, EXIT_FAILED)
    for path in created:
        typer.echo(str(path))
    err.print(f"[green]ready[/green]: cd {directory} && edgeflow run flows/example.py && python -m pytest")


def register(app: typer.Typer) -> None:
    """Add ``validate``, ``graph``, ``run`` and ``init`` to the ``edgeflow`` command."""
    for command in (validate, graph, run, init):
        app.command()(command)
