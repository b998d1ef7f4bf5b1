"""The ``edgeflow`` command: run, validate, graph and scaffold flows.

Exit codes are in :mod:`edgeflow.terminal`: 0 success, 1 failed while running, 2 bad command
line, 3 invalid flow (nothing ran), 4 flow file not loadable.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from edgeflow.errors import EdgeflowError, FlowValidationError
from edgeflow.loader import FlowLoadError, load_flow
from edgeflow.terminal import EXIT_FAILED, EXIT_INVALID, EXIT_LOAD_FAILED, err

__all__ = ["app", "main"]


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Stream-processing dataflows for edge gateways.")

FlowArg = Annotated[str, typer.Argument(help="Flow file, optionally FILE.py:NAME or FILE.py:factory(arg=...)")]


class GraphFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


def _load_and_compile(target: str):  # type: ignore[no-untyped-def]
    from edgeflow.compiler import compile_flow

    try:
        flow = load_flow(target)
    except FlowValidationError as exc:
        err.print(f"[red]invalid flow[/red] {target}: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    except FlowLoadError as exc:
        err.print(f"[red]cannot load[/red] {exc}")
        raise typer.Exit(EXIT_LOAD_FAILED) from None
    try:
        return compile_flow(flow)
    except FlowValidationError as exc:
        err.print(f"[red]invalid flow[/red] {flow.name!r}: {exc}")
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
def validate(target: FlowArg) -> None:
    """Check a flow (graph, settings, files, shapes) without running it."""
    compiled = _load_and_compile(target)
    err.print(f"[green]ok[/green] flow {compiled.flow.name!r}: {len(compiled.order)} steps, "
              f"{len(compiled.stages)} engine steps")


@app.command()
def graph(
    target: FlowArg,
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f", help="text, mermaid or dot")] = GraphFormat.text,
) -> None:
    """Show the compiled graph, with fused steps marked."""
    compiled = _load_and_compile(target)
    text = {"text": compiled.describe, "mermaid": compiled.mermaid, "dot": compiled.dot}[fmt.value]()
    typer.echo(text)


def _progress_line(stats) -> str:  # type: ignore[no-untyped-def]
    import time

    elapsed = max(time.monotonic() - stats.started, 1e-9)
    return (
        f"{stats.samples_in:>12,} samples  {stats.samples_in / elapsed:>10,.0f}/s  windows {stats.windows:,}  "
        f"anomalous {stats.anomalies:,}  dead {stats.dead_letters}  "
        f"p99 {stats.latency.percentile_us(99):,.0f} us"
    )


@app.command()
def run(
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
) -> None:
    """Run a flow until its sources end (bytewax; one worker by default, cluster mode with -w/-p/-a)."""
    if processes > 1 and addresses is None:
        raise typer.Exit(_spawn_cluster(target, processes, workers, quiet))
    compiled = _load_and_compile(target)
    from edgeflow.runtime import run as run_flow

    show = not quiet and (sys.stderr.isatty() if progress is None else progress)
    try:
        report = run_flow(
            compiled.flow,
            workers=workers,
            process_id=process_id,
            addresses=addresses.split(";") if addresses else None,
            progress=(lambda s: err.print(_progress_line(s))) if show else None,
        )
    except FlowValidationError as exc:
        err.print(f"[red]invalid flow[/red]: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    except (EdgeflowError, RuntimeError, OSError) as exc:
        err.print(f"[red]flow {compiled.flow.name!r} failed[/red]: {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    if not quiet:
        for line in report.lines():
            err.print(line)


def _spawn_cluster(target: str, processes: int, workers: int, quiet: bool) -> int:
    base = int(os.environ.get("EDGEFLOW_CLUSTER_PORT", "2101"))
    addresses = ";".join(f"127.0.0.1:{base + i}" for i in range(processes))
    cmd = [sys.executable, "-m", "edgeflow", "run", target, "-w", str(workers), "-a", addresses]
    if quiet:
        cmd.append("--quiet")
    procs = [subprocess.Popen([*cmd, "-i", str(i)]) for i in range(processes)]
    codes = [p.wait() for p in procs]
    return max(codes)


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="New project folder")]) -> None:
    """Scaffold a project: flows/, operators/, models/, tests/ and a small recording."""
    from edgeflow.scaffold import scaffold

    try:
        created = scaffold(directory)
    except FileExistsError as exc:
        err.print(f"[red]cannot init[/red]: {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    for path in created:
        typer.echo(str(path))
    err.print(f"[green]ready[/green]: cd {directory} && edgeflow run flows/example.py && python -m pytest")


# Command groups that live beside their feature register themselves here.
def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is absent
        return False


for _module in ("edgeflow.cli.mqtt", "edgeflow.cli.model"):
    if _exists(_module):
        importlib.import_module(_module).register(app)


def main() -> None:
    """Console-script entry point."""
    app()
