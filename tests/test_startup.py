"""Start-up: what ``import edgeflow``, the ``edgeflow`` command and a tiny replay run load (and do not).

Each check runs in a fresh interpreter and looks at ``sys.modules``; none times anything
(``bench/bench_startup.py`` measures the wall time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import edgeflow.cli
import edgeflow.operators as eo

ROOT = Path(__file__).resolve().parent.parent

NEVER_FOR_A_REPLAY = (
    "paho",
    "scipy",
    "rich",
    "ai_edge_litert",
    "tensorflow",
    "river",
    "prometheus_client",
    "sqlite3",
    "edgeflow.mqtt",
    "edgeflow.model",
    "edgeflow.ota",
    "edgeflow.observe.live",
    "edgeflow.operators.inference",
    "edgeflow.operators.baselines",
    "edgeflow.cli.model",
    "edgeflow.cli.mqtt",
    "edgeflow.cli.evaluate",
)
"""Modules a replay -> window -> features -> z-score -> summary run must not import (nor any of their submodules)."""

ENGINE_AND_LIBRARIES = ("numpy", "pydantic", "bytewax", "typer", "asyncio", "ssl", *NEVER_FOR_A_REPLAY)

TINY_FLOW = """
import edgeflow.operators as eo
from edgeflow import Flow

flow = Flow("tiny")
s = eo.replay("samples", flow, {csv!r})
w = eo.window("win", s, rate_hz=500, size=16, hop=8, max_gap_s=0.05)
f = eo.features("feat", w, ["mean", "std"])
eo.summarize("summary", eo.zscore_detector("detect", f, warmup=5), every_s=10, sink=eo.jsonl({out!r}))
"""


def _loaded_after(code: str, cwd: Path = ROOT) -> set[str]:
    """Run *code* in a fresh interpreter; return the names in its ``sys.modules`` afterwards."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _among(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    """The entries of *names* that are in *loaded*, themselves or through a submodule."""
    return sorted(name for name in names if any(m == name or m.startswith(name + ".") for m in loaded))


@pytest.mark.parametrize(
    "code",
    ["import edgeflow", "import edgeflow.operators", "from edgeflow import Flow, FlowValidationError, Schema"],
)
def test_importing_the_api_loads_no_library(code: str) -> None:
    loaded = _loaded_after(code)
    assert _among(loaded, ENGINE_AND_LIBRARIES) == []
    assert sorted(m for m in loaded if m.startswith("edgeflow.operators.")) == []


def test_the_command_imports_only_the_parser() -> None:
    loaded = _loaded_after("import edgeflow.cli")
    assert _among(loaded, ("numpy", "pydantic", "bytewax", "rich", "edgeflow.cli.flows", *NEVER_FOR_A_REPLAY)) == []


def test_a_quiet_replay_run_loads_only_what_it_uses(tmp_path: Path) -> None:
    csv, out = tmp_path / "tiny.csv", tmp_path / "summaries.jsonl"
    lines = (ROOT / "examples/data/pump_vibration.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    csv.write_text("".join(lines[:301]), encoding="utf-8")
    flow = tmp_path / "tiny.py"
    flow.write_text(TINY_FLOW.format(csv=str(csv), out=str(out)), encoding="utf-8")
    code = (
        "import sys\nfrom edgeflow.cli import main\n"
        f"sys.argv = ['edgeflow', 'run', {str(flow)!r}, '--quiet']\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
    )
    loaded = _loaded_after(code, cwd=tmp_path)
    assert {"bytewax.operators", "edgeflow.operators.replay", "edgeflow.runtime"} <= loaded  # it did run
    assert sorted(json.loads(line)["sensor"] for line in out.read_text().splitlines()) == [
        f"pump-{i}" for i in (1, 2, 3, 4)
    ]
    # ssl and asyncio come with pydantic on Python 3.11 (typing_extensions.deprecated imports asyncio), so they
    # are not checked here; rich (no panel, nothing printed), MQTT, the model runtime and scipy are.
    assert _among(loaded, NEVER_FOR_A_REPLAY) == []


def test_every_command_is_listed_where_its_module_adds_it() -> None:
    group = typer.main.get_command(edgeflow.cli.app)
    assert isinstance(group, typer.core.TyperGroup)
    assert list(group.commands) == list(edgeflow.cli.COMMANDS)
    for name in edgeflow.cli.COMMANDS:
        command = group.commands[name]
        assert command.name == name
        assert command.help or isinstance(command, typer.core.TyperGroup)


def test_every_module_adds_only_commands_the_table_knows() -> None:
    import importlib

    for module, function in set(edgeflow.cli.COMMANDS.values()):
        app = typer.Typer()
        getattr(importlib.import_module(module), function)(app)
        names = {
            info.name or typer.main.get_command_name(getattr(info.callback, "__name__", ""))
            for info in app.registered_commands
        }
        names |= {str(info.name) for info in app.registered_groups}
        assert names <= {name for name, home in edgeflow.cli.COMMANDS.items() if home == (module, function)}, module


def test_operators_are_functions_whatever_is_imported_first() -> None:
    import edgeflow.operators.window
    import edgeflow.operators.window_feature  # imports edgeflow.operators.window too

    assert sorted(eo._LAZY) == sorted(eo.__all__)
    for name in ("window", "window_feature", "features", "replay", "summarize", "stateful", "output", "jsonl"):
        operator = getattr(eo, name)
        assert callable(operator) and operator.__name__ == name, name
    assert eo.window is edgeflow.operators.window  # `import edgeflow.operators.window` names the operator, as before
    assert set(eo.__all__) <= set(dir(eo))
    with pytest.raises(AttributeError, match="no attribute 'windw'"):
        _ = eo.windw
