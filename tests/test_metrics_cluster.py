"""``edgeflow run -p 2 --metrics-port P``: process i serves P + i with a ``process`` label; the figures add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.test_cli import _free_port_pair
from tests.test_metrics import Scrape, get, wait_for, write_recording

ROOT = Path(__file__).resolve().parent.parent

FLOW = """
import edgeflow.operators as eo
from edgeflow import Flow

flow = Flow("cluster_metrics")
samples = eo.replay("samples", flow, {recording!r}, speed=4.0)
windows = eo.window("win", samples, rate_hz=100, size=20, hop=10, max_gap_s=0.5)
scores = eo.zscore_detector("detect", eo.features("feat", windows, ["mean", "std", "rms"]), threshold=8, warmup=10)
eo.summarize("summary", scores, every_s=1.0, sink=eo.jsonl({out!r}))
"""


def test_each_process_serves_its_own_labelled_port_and_the_report_sums_them(tmp_path: Path) -> None:
    # the processes share nothing (each replays its share of the sensors and ends on its own): both sensors
    # end with a paced tail, so both processes are still running, all else done, when they are scraped
    data = write_recording(tmp_path / "rec.csv", tails=("s1", "s2"))
    flow_file = tmp_path / "flow.py"
    flow_file.write_text(FLOW.format(recording=str(tmp_path / "rec.csv"), out=str(tmp_path / "s.jsonl")))
    port = _free_port_pair()
    cmd = [sys.executable, "-m", "edgeflow", "run", str(flow_file), "-p", "2", "--metrics-port", str(port)]
    cmd += ["--metrics-host", "127.0.0.1", "--report-json", str(tmp_path / "r.json"), "--progress"]
    env = {**os.environ, "EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def both() -> list[Scrape] | None:
            try:
                scrapes = [Scrape(get(f"http://127.0.0.1:{port + i}/metrics")[1]) for i in (0, 1)]
            except OSError:
                return None
            taken = sum(s.value("edgeflow_samples_in_total") for s in scrapes)
            return scrapes if taken == data["samples"] - 2 else None  # all but the paced tail rows

        scrapes = wait_for(both, timeout=30, every=0.1)
        time.sleep(0.3)
        scrapes = wait_for(both, timeout=5)
    finally:
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    ticks = [line for line in stderr.splitlines() if " samples " in line and "/s  windows" in line]
    assert ticks and "nan" not in stderr  # not a terminal: one line a second for both processes together
    for i, scrape in enumerate(scrapes):
        assert {s.labels["process"] for s in scrape.samples if "process" in s.labels} == {str(i)}
        assert {s.labels["flow"] for s in scrape.samples if "flow" in s.labels} == {"cluster_metrics"}
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["samples_in"] == data["samples"]
    by_process = {p["process"]: p for p in doc["processes"]}
    for i, scrape in enumerate(scrapes):  # settled: only the tail row (one sample) came after the scrape
        assert scrape.value("edgeflow_windows_total") == by_process[i]["windows"]
        assert scrape.value("edgeflow_anomalies_total") == by_process[i]["anomalies"]
        assert by_process[i]["samples_in"] - scrape.value("edgeflow_samples_in_total") in (0, 1)
    assert sum(s.value("edgeflow_windows_total") for s in scrapes) == doc["windows"]
    late = [
        x.value
        for s in scrapes
        for x in s.samples
        if x.name == "edgeflow_dead_letters_total" and x.labels["step"] == "win"
    ]
    assert late == [1.0]
