"""Issue 8.9: the systemd unit's ExecStart runs the MQTT flow as a service would, and SIGTERM stops it cleanly."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from edgeflow.mqtt.player import publish_recording

from .mqtt_support import Broker

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "examples/deploy/edgeflow.service"


def _exec_start() -> list[str]:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(UNIT)
    return shlex.split(unit["Service"]["ExecStart"])


def test_the_units_exec_start_runs_the_flow_and_sigterm_stops_it_cleanly(tmp_path: Path, broker: Broker) -> None:
    cmd = _exec_start()
    assert cmd[:3] == ["/usr/bin/env", "edgeflow", "run"]
    project = tmp_path / "opt-edgeflow"  # WorkingDirectory: the project, as installed on a gateway
    project.mkdir()
    for name in ("flows", "operators", "models"):
        (project / name).symlink_to(ROOT / name)
    env = {**os.environ, "EDGEFLOW_MQTT_BROKER": broker.address}
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (project / "out").exists() and time.monotonic() < deadline:  # the flow has started
            time.sleep(0.1)
        time.sleep(1.0)
        publish_recording(
            ROOT / "examples/data/pump_vibration.csv",
            broker.address,
            template="plant/line1/{sensor}/accel",
            batch=20,
            limit=40_000,
        )
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping input" in err and "stopped by SIGTERM" in err and "panic" not in err.lower()
    summaries = [json.loads(x) for x in (project / "out/pump_mqtt.summary.jsonl").read_text().splitlines()]
    assert {s["sensor"] for s in summaries} == {"pump-1", "pump-2", "pump-3", "pump-4"}
    assert (project / "out/state").is_dir()  # snapshots for the next start


def test_the_dockerfile_runs_the_same_command_as_the_unit() -> None:
    cmd_line = next(x for x in (ROOT / "examples/deploy/Dockerfile").read_text().splitlines() if x.startswith("CMD "))
    assert json.loads(cmd_line[4:]) == _exec_start()[1:]
