"""Issue 8.9: SIGTERM and Ctrl-C stop a flow cleanly: input stops, what it holds is flushed, a report, exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys, time
import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.operators.output import SinkSpec
from edgeflow.runtime import run
from edgeflow.sinks import CaptureSink

class SlowToClose(CaptureSink):  # an uplink that takes a while to drain when the flow stops
    def close(self):
        time.sleep(float(sys.argv[2]))

flow = Flow("stoppable")
s = eo.replay("samples", flow, "examples/data/pump_vibration.csv", speed=1.0)
f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms"])
eo.summarize("summary", eo.zscore_detector("detect", f), every_s=10, sink=eo.jsonl(sys.argv[1]))
eo.output("uplink", f, SinkSpec("slow", lambda ctx: SlowToClose()))
print("ready", flush=True)
report = run(flow)
print("stopped_by", report.stopped_by, report.stats.samples_in, flush=True)
"""


def _start(tmp_path: Path, close_s: float = 0.0) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / "summary.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), str(close_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(3.0)  # about 3 s of the 60 s recording, paced in real time
    return proc, out


def test_sigterm_flushes_what_the_flow_holds_and_returns_a_report(tmp_path: Path) -> None:
    proc, out = _start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping input" in stderr and "panic" not in stderr.lower()
    _, by, samples = stdout.split()
    assert by == "SIGTERM" and 2_000 < int(samples) < 60_000
    summaries = [json.loads(line) for line in out.read_text().splitlines()]
    assert {s["sensor"] for s in summaries} == {"pump-1", "pump-2", "pump-3", "pump-4"}  # open intervals flushed
    assert sum(s["samples"] for s in summaries) <= int(samples)


def test_a_second_ctrl_c_exits_130_at_once(tmp_path: Path) -> None:
    proc, _out = _start(tmp_path, close_s=30.0)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(1.0)  # the flow is now waiting for its slow sink to drain
    os.kill(proc.pid, signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "second Ctrl-C: exiting now" in stderr and "panic" not in stderr.lower()
