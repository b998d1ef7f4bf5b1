"""``edgeflow eval FLOW --labels labels.json``: run a flow and score its flags against labelled intervals.

The flow is compiled once and run to the end with its sinks captured (nothing
is written); the flags of its scored steps are scored per sensor by
:mod:`edgeflow.evaluate`, printed as a table on stdout and, with ``--json``,
written to a file.

>>> app = typer.Typer(add_completion=False)
>>> register(app)
>>> [param.name for param in typer.main.get_command(app).params]
['target', 'labels', 'json_out', 'step', 'grace_s', 'merge_s']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeflow.cli.errors import debug_enabled, fail
from edgeflow.cli.flows import FlowArg, compile_target
from edgeflow.errors import EdgeflowError, FlowValidationError
from edgeflow.terminal import EXIT_FAILED, EXIT_INVALID, EXIT_USAGE, err

__all__ = ["eval_flow", "register"]


def eval_flow(
    ctx: typer.Context,
    target: FlowArg,
    labels: Annotated[
        Path, typer.Option("--labels", "-l", help="JSON label file: intervals with sensor, start, end (and kind)")
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores as JSON to this file")] = None,
    step: Annotated[
        str | None, typer.Option("--step", help="The scored step to evaluate (default: the flow's last ones)")
    ] = None,
    grace_s: Annotated[
        float, typer.Option("--grace-s", min=0, help="Flags this long after a label's end count neither way")
    ] = 0.0,
    merge_s: Annotated[
        float, typer.Option("--merge-s", min=0, help="False flags closer than this form one false-alarm stretch")
    ] = 0.0,
) -> None:
    """Run a flow and score its window-level flags against labelled intervals, per sensor."""
    from edgeflow.evaluate import evaluate, load_labels

    debug = debug_enabled(ctx)
    try:
        intervals = load_labels(labels)
    except (OSError, ValueError) as exc:
        fail("cannot read labels", exc, EXIT_USAGE, debug=debug)
    compiled = compile_target(target, debug=debug)
    try:
        result = evaluate(compiled, intervals, step=step, grace_s=grace_s, merge_s=merge_s)
    except FlowValidationError as exc:
        fail(f"invalid flow {compiled.flow.name!r}", exc, EXIT_INVALID, debug=debug)
    except (EdgeflowError, RuntimeError, OSError) as exc:
        fail(f"cannot evaluate flow {compiled.flow.name!r}", exc, EXIT_FAILED, debug=debug)
    typer.echo(result.table())
    unknown = sorted({x.sensor for x in intervals} - {s for s, score in result.sensors.items() if score.windows})
    if unknown:
        err.print(f"[yellow]labels for sensors without scored windows[/yellow]: {', '.join(unknown)}", markup=True)
    if result.report is not None:
        for line in result.report.lines()[:2]:
            err.print(line, markup=False)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        err.print(f"scores written to {json_out}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``edgeflow`` command."""
    app.command("eval")(eval_flow)
