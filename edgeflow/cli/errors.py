"""How every ``edgeflow`` command reports a failure: one short line, the whole traceback with ``--debug``.

>>> Options(debug=True).debug
True
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import NoReturn

import typer

from edgeflow import terminal

__all__ = ["Options", "debug_enabled", "fail"]


@dataclass(frozen=True)
class Options:
    """The global options, given before the command (``edgeflow --debug run ...``)."""

    debug: bool = False


def debug_enabled(ctx: typer.Context) -> bool:
    """Whether ``--debug`` (or ``EDGEFLOW_DEBUG=1``) was given to the ``edgeflow`` command of *ctx*."""
    return isinstance(ctx.obj, Options) and ctx.obj.debug


def fail(headline: str, exc: BaseException, code: int, *, debug: bool = False) -> NoReturn:
    r"""Print ``headline: exc`` on stderr and exit with *code*; with *debug*, print the traceback first.

    >>> from typer.testing import CliRunner
    >>> app = typer.Typer()
    >>> @app.command()
    ... def go() -> None:
    ...     fail("cannot go", ValueError("no [road] here"), 4)
    >>> result = CliRunner().invoke(app, [])
    >>> result.exit_code, result.output
    (4, 'cannot go: no [road] here\n')
    """
    from rich.markup import escape

    if debug:
        sys.stderr.write("".join(traceback.format_exception(exc)))
    terminal.err.print(f"[red]{escape(headline)}[/red]: {escape(str(exc))}")
    if not debug and exc.__cause__ is not None:
        terminal.err.print("[dim](edgeflow --debug ... shows the full traceback)[/dim]")
    raise typer.Exit(code)
