"""The live view of ``edgeflow run``: a redrawn panel on a terminal (a real pseudo-terminal here), lines otherwise."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from edgeflow.metrics import FlowStats
from edgeflow.observe.live import render, status_line
from tests.test_metrics import T0, write_recording

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def shown(*args: object, **kwargs: object) -> str:
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(render(*args, **kwargs))  # type: ignore[arg-type]
    return console.export_text()


def test_before_the_first_output_figures_show_as_a_dash_never_nan() -> None:
    stats = FlowStats(samples_in=2_048, bytes_in=50_000, windows=3, expected_bytes_in=200_000)
    text = shown("demo", [("", stats.to_json())], rate=1_000.0, eta_s=12.5)
    assert "nan" not in text.lower()
    assert "p50 - us   p99 - us   (0 outputs)" in text
    assert "25.0 %  ETA 12.5 s" in text and "2,048   1,000/s" in text
    assert "none flagged yet" in text and "model    -" in text
    assert status_line(stats.to_json()).endswith("p99 - us")


def test_flagged_sensors_models_and_each_process_with_the_totals() -> None:
    a, b = FlowStats(samples_in=1_000, windows=10, anomalies=2), FlowStats(windows=4, dead_letters=1)
    a.flagged("pump-2", T0 + 20.0, T0 + 20.5)
    a.flagged("pump-2", T0 + 20.1, T0 + 20.6)
    b.count("mqtt.sink_dropped", 3)
    b.scored("model", "pump_ae@3", T0 + 21.0)
    b.count("infer.swaps")
    for ns in (1_000_000, 2_000_000):
        a.latency.record(ns)
    text = shown("demo", [("p0", a.to_json()), ("p1", b.to_json())])
    assert re.search(r"pump-2\s+2\s+08:00:20\.0\s+08:00:20\.6", text)
    assert "model: pump_ae@3   (swaps 1, rejected 0, rolled back 0)" in text
    assert "1,000" in text and "windows  14   anomalous 2" in text and "drops 3   dead letters 1" in text
    cells = [line.strip("│ ").split() for line in text.splitlines()]
    rows = {row[0]: row[1:] for row in cells if row and row[0] in ("p0", "p1")}
    assert rows == {"p0": ["1,000", "10", "2", "0", "0", "1,500", "1,990"], "p1": ["0", "4", "0", "1", "3", "-", "-"]}
    assert "p50 1,500 us   p99 1,990 us   (2 outputs)" in text  # one process had outputs: its own percentiles


def test_a_run_on_a_terminal_redraws_one_panel_then_prints_the_report(tmp_path: Path) -> None:
    write_recording(tmp_path / "rec.csv", tail_s=1.0)
    flow = tmp_path / "flow.py"
    flow.write_text(
        "from tests.test_metrics import small_flow\n"
        f"flow = small_flow({str(tmp_path / 'rec.csv')!r}, __import__('pathlib').Path({str(tmp_path / 's.jsonl')!r}))\n"
    )
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeflow", "run", str(flow)],
        cwd=ROOT,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65_536)
        except OSError:  # the terminal closed: the run is over
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    raw = b"".join(chunks).decode(errors="replace")
    text = ANSI.sub("", raw)
    frames = text.count("╭─ edgeflow run · metrics_demo")
    assert frames >= 3, text  # redrawn a few times a second while the paced replay runs
    assert "\x1b[2K" in raw or "\x1b[1A" in raw or "\x1b[A" in raw  # redrawn in place, not scrolled
    assert "nan" not in text.lower()
    assert "input " in text and "% " in text and "ETA" in text
    report = text[text.rindex("╰") :]
    assert "flow 'metrics_demo': 402 samples" in report and "flagged s2:" in report
