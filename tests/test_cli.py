"""The edgeflow command, run as a user runs it (subprocesses, real files, exit codes)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeflow import Flow
from edgeflow.compiler import CompiledFlow

ROOT = Path(__file__).resolve().parent.parent
FLOW = "flows/pump_vibration.py"


def edgeflow(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeflow", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


def _bad_flow(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad_flow.py"
    path.write_text(
        "import edgeflow.operators as eo\nfrom edgeflow import Flow\n"
        "flow = Flow('bad')\n"
        f"s = eo.replay('samples', flow, '{ROOT / 'examples/data/pump_vibration.csv'}')\n" + body
    )
    return str(path)


def test_validate_ok_and_graph_formats() -> None:
    done = edgeflow("validate", FLOW)
    assert done.returncode == 0, done.stderr
    assert "ok flow 'pump_vibration': 7 steps, 6 engine steps" in done.stderr
    text = edgeflow("graph", FLOW).stdout
    assert "┌[map]   feat (features)" in text and "└[map]   crest (crest_factor)" in text
    assert edgeflow("graph", FLOW, "--format", "mermaid").stdout.startswith("flowchart LR")
    assert edgeflow("graph", FLOW, "-f", "dot").stdout.startswith('digraph "pump_vibration"')


def test_invalid_settings_exit_3_naming_step_field_value(tmp_path: Path) -> None:
    target = _bad_flow(tmp_path, "w = eo.window('win', s, rate_hz=500, size=256, hop=512)\n")
    done = edgeflow("validate", target)
    assert done.returncode == 3
    assert done.stderr.startswith(f"invalid flow {target}:5: step 'win': field 'hop' got 512: ")
    assert "step 'win': field 'hop' got 512: must be between 1 and the window size 256" in done.stderr


def test_invalid_graph_exits_3_before_any_data_flows(tmp_path: Path) -> None:
    target = _bad_flow(tmp_path, "w = eo.window('win', s, rate_hz=500, size=256)\n")
    done = edgeflow("run", target)
    assert done.returncode == 3
    assert "step 'win': its output goes nowhere" in done.stderr
    assert "samples in" not in done.stderr


def test_missing_flow_file_exits_4() -> None:
    done = edgeflow("run", "flows/nope.py")
    assert done.returncode == 4 and "flows/nope.py' does not exist" in done.stderr


def test_run_writes_summaries_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    done = edgeflow("run", f"{FLOW}:make_flow(out='{out}')")
    assert done.returncode == 0, done.stderr
    assert "118,050 samples" in done.stderr and "reduction 99." in done.stderr
    summaries = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(summaries) == 24 and sum(s["anomaly"] for s in summaries) >= 3
    quiet = edgeflow("run", f"{FLOW}:make_flow(out='{out}')", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    msg = "no two free adjacent ports"
    raise RuntimeError(msg)


def test_cluster_mode_two_processes_gives_the_same_summaries(tmp_path: Path) -> None:
    single, cluster = tmp_path / "single.jsonl", tmp_path / "cluster.jsonl"
    assert edgeflow("run", f"{FLOW}:make_flow(out='{single}')", "-q").returncode == 0
    done = edgeflow(
        "run",
        f"{FLOW}:make_flow(out='{cluster}')",
        "-p",
        "2",
        "-q",
        env={"EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())},
    )
    assert done.returncode == 0, done.stderr
    parts = sorted(tmp_path.glob("cluster.w*.jsonl"))
    assert [p.name for p in parts] == ["cluster.w0.jsonl", "cluster.w1.jsonl"]

    def load(paths: list[Path]) -> list[dict]:
        rows = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
        return sorted(rows, key=lambda s: (s["sensor"], s["interval"][0]))

    assert load(parts) == load([single])


def test_init_scaffolds_a_project_whose_test_passes(tmp_path: Path) -> None:
    project = tmp_path / "plant"
    assert edgeflow("init", str(project)).returncode == 0
    assert {p.name for p in project.iterdir()} >= {"flows", "operators", "models", "tests", "data"}
    assert edgeflow("run", "flows/example.py", "-q", cwd=project).returncode == 0
    assert (project / "out/summary.jsonl").read_text().count("\n") == 16
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert tests.returncode == 0, tests.stdout
    again = edgeflow("init", str(project))
    assert again.returncode == 1 and "is not empty" in again.stderr


def test_progress_lines_while_a_paced_run_goes_on(tmp_path: Path) -> None:
    done = edgeflow("run", f"{FLOW}:make_flow(speed=20, out='{tmp_path / 's.jsonl'}')", "--progress")
    assert done.returncode == 0, done.stderr
    ticks = [line for line in done.stderr.splitlines() if "samples" in line and "/s" in line and "p99" in line]
    assert len(ticks) >= 2  # 60 s of data at 20x: about three seconds of progress
    firsts = [line.split()[0].replace(",", "") for line in ticks]
    counts = [int(n) for n in firsts if n.isdigit()]
    assert counts == sorted(counts) and counts[-1] > 0


def test_run_compiles_the_flow_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeflow.compiler
    import edgeflow.runtime
    from edgeflow.cli import app

    compiled: list[str] = []
    real = edgeflow.compiler.compile_flow

    def counting(flow: Flow) -> CompiledFlow:
        compiled.append(flow.name)
        return real(flow)

    monkeypatch.setattr(edgeflow.compiler, "compile_flow", counting)
    monkeypatch.setattr(edgeflow.runtime, "compile_flow", counting, raising=False)
    monkeypatch.chdir(ROOT)
    out = tmp_path / "s.jsonl"
    done = CliRunner().invoke(app, ["run", f"{FLOW}:make_flow(out='{out}')", "--quiet"])
    assert done.exit_code == 0, done.output
    assert compiled == ["pump_vibration"]
    assert out.read_text().count("\n") == 24


def test_console_script_and_module_run_the_same_command() -> None:
    script = shutil.which("edgeflow")
    assert script is not None, "the edgeflow console script is missing: pip install -e ."
    by_script = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert by_script.returncode == 0, by_script.stderr
    assert by_script.stdout == edgeflow("--help").stdout
    for command in ("validate", "graph", "run", "init", "record", "publish", "model"):
        assert f" {command} " in by_script.stdout


def test_starting_the_command_imports_no_heavy_library() -> None:
    code = (
        "import sys, edgeflow.cli\n"
        "heavy = {'paho', 'ai_edge_litert', 'tensorflow', 'bytewax'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m == 'edgeflow.mqtt.client'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_publish_help_shows_the_default_broker() -> None:
    from edgeflow.mqtt.client import DEFAULT_BROKER

    done = edgeflow("publish", "--help", env={"COLUMNS": "200"})
    assert done.returncode == 0
    assert f"host:port, default {DEFAULT_BROKER} (mqtts://host:port for TLS)" in done.stdout
