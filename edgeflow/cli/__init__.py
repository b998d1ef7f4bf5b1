"""The ``edgeflow`` command: run, validate, graph and scaffold flows; record and publish MQTT; build models.

One module per command group: :mod:`edgeflow.cli.flows` (``validate``, ``graph``,
``run``, ``init``), :mod:`edgeflow.cli.evaluate` (``eval``), :mod:`edgeflow.cli.mqtt`
(``record``, ``publish``) and :mod:`edgeflow.cli.model` (``model ...``, ``fleet ...``). Heavy libraries
(paho, LiteRT, TensorFlow, the dataflow engine) are imported by the command that needs them.

Exit codes are in :mod:`edgeflow.terminal`: 0 success, 1 failed while running, 2 bad command
line, 3 invalid flow (nothing ran), 4 flow file not loadable. ``edgeflow --debug COMMAND``
shows the full traceback behind an error.

>>> sorted(typer.main.get_command(app).commands)
['eval', 'fleet', 'graph', 'init', 'model', 'publish', 'record', 'run', 'validate']
"""

from __future__ import annotations

from typing import Annotated

import typer

from edgeflow.cli import evaluate, flows, model, mqtt
from edgeflow.cli.errors import Options

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Stream-processing dataflows for edge gateways.")


@app.callback()
def _options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="EDGEFLOW_DEBUG", help="Show the full traceback behind an error")
    ] = False,
) -> None:
    ctx.obj = Options(debug=debug)


flows.register(app)
evaluate.register(app)
mqtt.register(app)
model.register(app)
model.register_fleet(app)


def main() -> None:
    """Console-script entry point (``edgeflow = "edgeflow.cli:main"``)."""
    app(prog_name="edgeflow")
