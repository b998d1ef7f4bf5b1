"""``edgeflow run -p N``: a flow split by sensor runs as processes that share nothing; others as a cluster."""

from __future__ import annotations

import json
from pathlib import Path

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.compiler import compile_flow
from tests.test_cli import _free_port_pair, edgeflow

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "examples/data/pump_vibration.csv"

FLOW = """
import edgeflow.operators as eo
from edgeflow import Flow

flow = Flow("procs")
s = eo.replay("samples", flow, {recording!r}{extra})
w = eo.window("win", s, rate_hz=500, size=256, hop=64, max_gap_s=0.05)
scores = eo.zscore_detector("detect", eo.features("feat", w, ["rms"]))
eo.summarize("summary", scores, every_s=10, sink=eo.jsonl({out!r}))
"""


def _summaries(folder: Path, stem: str) -> list[dict[str, object]]:
    rows = [json.loads(line) for f in sorted(folder.glob(f"{stem}*.jsonl")) for line in f.read_text().splitlines()]
    return sorted(rows, key=lambda r: (str(r["sensor"]), str(r["interval"])))


def _flow_file(tmp_path: Path, name: str, recording: Path, extra: str = "") -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(FLOW.format(recording=str(recording), extra=extra, out=str(tmp_path / f"{name}.jsonl")))
    return path


def test_a_split_flow_shares_nothing_and_each_process_snapshots_apart(tmp_path: Path) -> None:
    one, two = _flow_file(tmp_path, "one", RECORDING), _flow_file(tmp_path, "two", RECORDING)
    assert edgeflow("run", str(one), "-q").returncode == 0
    env = {"EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())}
    done = edgeflow("run", str(two), "-p", "2", "-q", "--recovery-dir", str(tmp_path / "snap"), env=env)
    assert done.returncode == 0, done.stderr
    assert _summaries(tmp_path, "two") == _summaries(tmp_path, "one")
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == ["process-0-of-2", "process-1-of-2"]
    assert all(any(p.glob("part-*.sqlite3")) for p in (tmp_path / "snap").iterdir())
    sensors = [{r["sensor"] for r in _summaries(tmp_path, f"two.w{i}")} for i in (0, 1)]
    assert sensors[0] and sensors[1] and not sensors[0] & sensors[1]  # each sensor in one process only


def test_a_flow_that_cannot_split_by_sensor_runs_as_a_cluster(tmp_path: Path) -> None:
    lines = RECORDING.read_text().splitlines()
    pump1 = tmp_path / "pump1.csv"  # one sensor, no sensor column: replay(sensor=...) cannot split it
    pump1.write_text(
        "\n".join(["ts,accel", *(f"{r.split(',')[0]},{r.split(',')[2]}" for r in lines[1:] if ",pump-1," in r)]) + "\n"
    )
    flow = Flow("one_sensor")
    w = eo.window("win", eo.replay("samples", flow, pump1, sensor="pump-1"), rate_hz=500, size=256, hop=64)
    eo.output("out", w, eo.jsonl(tmp_path / "w.jsonl"))
    assert not compile_flow(flow).splits_by_sensor
    one = _flow_file(tmp_path, "one", pump1, ", sensor='pump-1'")
    two = _flow_file(tmp_path, "two", pump1, ", sensor='pump-1'")
    assert edgeflow("run", str(one), "-q").returncode == 0
    done = edgeflow("run", str(two), "-p", "2", "-q", env={"EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())})
    assert done.returncode == 0, done.stderr
    assert _summaries(tmp_path, "two") == _summaries(tmp_path, "one") != []


def test_sigterm_to_a_two_process_run_stops_both_cleanly_with_one_report(tmp_path: Path) -> None:
    """The parent passes SIGTERM on to its children: each flushes and reports, the run exits 0, none is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    flow = _flow_file(tmp_path, "paced", RECORDING, extra=", speed=1.0")
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "edgeflow", "run", str(flow), "-p", "2", "-q", "--report-json", str(report)]
    env = {**os.environ, "EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # both children running the 60 s recording in real time
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2 and proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _out, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    merged = json.loads(report.read_text())
    assert [p["samples_in"] > 0 for p in merged["processes"]] == [True, True]
    assert 0 < merged["samples_in"] < 118_050  # stopped part-way, both shares counted
    assert {s["sensor"] for s in _summaries(tmp_path, "paced")} == {"pump-1", "pump-2", "pump-3", "pump-4"}
    for child in children:  # gone, not orphaned
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()


def test_children_that_fail_fail_the_run_with_their_message(tmp_path: Path) -> None:
    flow = _flow_file(tmp_path, "broken", tmp_path / "missing.csv")
    done = edgeflow("run", str(flow), "-p", "2", "-q", env={"EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())})
    assert done.returncode != 0
    assert "missing.csv" in done.stderr
