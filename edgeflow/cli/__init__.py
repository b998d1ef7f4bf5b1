"""The ``edgeflow`` command: run, validate, graph and scaffold flows; record and publish MQTT; build models.

One module per command group: :mod:`edgeflow.cli.flows` (``validate``, ``graph``,
``run``, ``init``), :mod:`edgeflow.cli.evaluate` (``eval``), :mod:`edgeflow.cli.mqtt`
(``record``, ``publish``) and :mod:`edgeflow.cli.model` (``model ...``, ``fleet ...``). A command's
module is imported only when that command runs (or help lists it), and heavy libraries (paho,
LiteRT, TensorFlow, the dataflow engine) only by the command that needs them.

Exit codes are in :mod:`edgeflow.terminal`: 0 success, 1 failed while running, 2 bad command
line, 3 invalid flow (nothing ran), 4 flow file not loadable. ``edgeflow --debug COMMAND``
shows the full traceback behind an error.

>>> sorted(typer.main.get_command(app).commands)
['eval', 'fleet', 'graph', 'init', 'model', 'publish', 'record', 'run', 'validate']
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from edgeflow.cli.errors import Options

if TYPE_CHECKING:
    from typer._click import Command

__all__ = ["app", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("edgeflow.cli.flows", "register"),
    "graph": ("edgeflow.cli.flows", "register"),
    "run": ("edgeflow.cli.flows", "register"),
    "init": ("edgeflow.cli.flows", "register"),
    "eval": ("edgeflow.cli.evaluate", "register"),
    "record": ("edgeflow.cli.mqtt", "register"),
    "publish": ("edgeflow.cli.mqtt", "register"),
    "model": ("edgeflow.cli.model", "register"),
    "fleet": ("edgeflow.cli.model", "register_fleet"),
}
"""Every sub-command, in the order help lists them: the module and the function that adds it to a ``Typer``."""


def _load_command(name: str) -> Command:
    """Import the module of command *name* and build that command alone, as ``app.command()`` would have."""
    module, function = COMMANDS[name]
    commands = typer.Typer()
    getattr(importlib.import_module(module), function)(commands)
    commands.registered_commands = [
        info
        for info in commands.registered_commands
        if (info.name or typer.main.get_command_name(info.callback.__name__ if info.callback else "")) == name
    ]
    commands.registered_groups = [info for info in commands.registered_groups if info.name == name]
    return typer.main.get_group(commands).commands[name]


class _LazyCommands(MutableMapping[str, "Command"]):
    """The sub-commands of ``edgeflow`` by name, each built (and its module imported) on first use."""

    def __init__(self, built: MutableMapping[str, Command]) -> None:
        self._built = dict(built)

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = _load_command(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._built.keys())

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._built


class _LazyGroup(TyperGroup):
    """The ``edgeflow`` group: lists every command, imports only the one that runs."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _LazyCommands(self.commands)


app = typer.Typer(
    cls=_LazyGroup, add_completion=False, no_args_is_help=True, help="Stream-processing dataflows for edge gateways."
)


@app.callback()
def _options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="EDGEFLOW_DEBUG", help="Show the full traceback behind an error")
    ] = False,
) -> None:
    ctx.obj = Options(debug=debug)


def main() -> None:
    """Console-script entry point (``edgeflow = "edgeflow.cli:main"``)."""
    try:
        app(prog_name="edgeflow")
    finally:
        # Everything alive now lives until the process ends: the interpreter's last collections need not walk it
        # (tens of milliseconds with numpy, pydantic and the engine loaded). Files were closed by their sinks.
        gc.freeze()
