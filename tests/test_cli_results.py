"""Issue 8.6: a run that produced nothing trustworthy says so in one line and exits 5; validate reads the first rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _edgeflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edgeflow", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


FLOW = """
import edgeflow.operators as eo
from edgeflow import Flow

flow = Flow("tiny")
s = eo.replay("samples", flow, "rec.csv")
f = eo.features("feat", eo.window("win", s, rate_hz=10, size=64, hop=64), ["rms"])
eo.summarize("summary", eo.zscore_detector("detect", f), every_s=10, sink=eo.jsonl("out.jsonl"))
"""


def _project(tmp_path: Path, rows: list[str]) -> Path:
    (tmp_path / "flow.py").write_text(FLOW)
    (tmp_path / "rec.csv").write_text("ts,sensor,v\n" + "".join(rows))
    return tmp_path


def test_a_run_where_no_window_closed_exits_5_with_one_clear_line(tmp_path: Path) -> None:
    rows = [f"2026-01-01T00:00:{i:02d}.{j}00Z,a,{i}\n" for i in range(3) for j in range(10)]  # 3 s at 10 Hz
    done = _edgeflow("run", "flow.py", cwd=_project(tmp_path, rows))
    assert done.returncode == 5, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("no trustworthy result")]
    assert line == (
        "no trustworthy result from flow 'tiny': no window closed in 30 samples (0 gaps): check the window's "
        "rate_hz, size and max_gap_s against the data's sampling interval"
    )


def test_a_healthy_run_exits_0(tmp_path: Path) -> None:
    rows = [f"2026-01-01T00:{i // 600:02d}:{i // 10 % 60:02d}.{i % 10}00Z,a,{i % 7}\n" for i in range(1_200)]
    done = _edgeflow("run", "flow.py", cwd=_project(tmp_path, rows))
    assert done.returncode == 0, done.stderr
    assert "no trustworthy result" not in done.stderr


def test_validate_reads_the_first_rows_and_refuses_a_timezone_less_file(tmp_path: Path) -> None:
    rows = [f"2026-01-01T00:00:{i:02d},a,{i}\n" for i in range(20)]
    done = _edgeflow("validate", "flow.py", cwd=_project(tmp_path, rows))
    assert done.returncode == 3, done.stderr
    assert "all of the first 20 rows are dead letters" in done.stderr and "set tz=" in done.stderr
