"""The final report: strict JSON for scripts and CI, flagged sensors and when, one report for ``-p N``."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edgeflow.metrics import FlowStats
from edgeflow.observe.report import load_parts, merge_reports, save_part, write_report
from edgeflow.runtime import RunReport, run
from tests.test_cli import _free_port_pair, edgeflow
from tests.test_metrics import small_flow, write_recording

ROOT = Path(__file__).resolve().parent.parent
FLOW = "flows/pump_vibration.py"
FAULTS = json.loads((ROOT / "examples/data/pump_vibration.faults.json").read_text())
WINDOW_S = 256 / 500


def strict_json(path: Path) -> Any:
    def refuse(token: str) -> None:
        msg = f"not strict JSON: {token}"
        raise ValueError(msg)

    return json.loads(path.read_text(), parse_constant=refuse)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    folder = tmp_path_factory.mktemp("single")
    done = edgeflow("run", f"{FLOW}:make_flow(out='{folder / 's.jsonl'}')", "--report-json", str(folder / "r.json"))
    assert done.returncode == 0, done.stderr
    return strict_json(folder / "r.json"), done.stderr


def test_report_json_names_each_faulty_sensor_and_when(single: tuple[Any, str]) -> None:
    doc, stderr = single
    assert doc["flow"] == "pump_vibration" and doc["problem"] is None and doc["processes"] == []
    assert doc["samples_in"] == 118_050 and f"{doc['samples_in']:,} samples" in stderr
    assert f"windows {doc['windows']:,}  anomalous {doc['anomalies']:,}" in stderr
    assert doc["latency_us"]["outputs"] == 20 and doc["latency_us"]["p99"] >= doc["latency_us"]["p50"] > 0
    assert doc["dead_letters"] == 0 and doc["dead_letters_by"] == [] and doc["losses"] == {}
    assert doc["models"] == {"detect": "zscore"}
    flagged = {f["sensor"]: f for f in doc["flagged"]}
    assert set(flagged) == {fault["sensor"] for fault in FAULTS["faults"]}
    assert sum(f["windows"] for f in flagged.values()) == doc["anomalies"]
    for fault in FAULTS["faults"]:
        f = flagged[fault["sensor"]]
        assert f["n_episodes"] == 1 and f["episodes"] == [[f["first"], f["last"]]]
        # flagged from the first window that reaches into the fault to the last one that does
        assert ts(fault["start"]) - WINDOW_S <= ts(f["first"]) <= ts(fault["start"]) + 1.0
        assert ts(fault["end"]) - 1.0 <= ts(f["last"]) <= ts(fault["end"]) + WINDOW_S
        day, start, end = f["first"][:10], f["first"][11:22], f["last"][11:22]
        assert f"  flagged {f['sensor']}: {f['windows']} windows, {day} {start}-{end} UTC" in stderr


def test_two_processes_give_one_report_with_each_process_labelled(tmp_path: Path, single: tuple[Any, str]) -> None:
    alone, _ = single
    done = edgeflow(
        "run",
        f"{FLOW}:make_flow(out='{tmp_path / 'c.jsonl'}')",
        "-p",
        "2",
        "--report-json",
        str(tmp_path / "r.json"),
        env={"EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())},
    )
    assert done.returncode == 0, done.stderr
    assert "retrying" not in done.stderr and "error connecting" not in done.stderr
    headers = [line for line in done.stderr.splitlines() if line.startswith("flow 'pump_vibration':")]
    assert len(headers) == 1 and headers[0].endswith(", 2 processes")
    assert [line.split(":")[0].strip() for line in done.stderr.splitlines() if "  process " in line] == [
        "process 0",
        "process 1",
    ]
    doc = strict_json(tmp_path / "r.json")
    for name in ("samples_in", "bytes_in", "bytes_out", "windows", "anomalies", "gaps", "items_out", "dead_letters"):
        assert doc[name] == alone[name] == sum(p[name] for p in doc["processes"]), name
    assert [p["process"] for p in doc["processes"]] == [0, 1]
    assert all(p["windows"] > 0 for p in doc["processes"])  # both processes did work: neither report is all zeros
    assert doc["latency_us"]["outputs"] == sum(p["latency_us"]["outputs"] for p in doc["processes"])
    strip = [{k: f[k] for k in ("sensor", "windows", "first", "last")} for f in doc["flagged"]]
    assert strip == [{k: f[k] for k in ("sensor", "windows", "first", "last")} for f in alone["flagged"]]


def test_two_processes_whose_run_cannot_be_trusted_say_so_once_and_exit_5(tmp_path: Path) -> None:
    write_recording(tmp_path / "rec.csv", seconds=0.5, tail_s=0.0)
    flow_file = tmp_path / "never.py"
    flow_file.write_text(
        "import edgeflow.operators as eo\nfrom edgeflow import Flow\n"
        "flow = Flow('never')\n"
        f"s = eo.replay('samples', flow, {str(tmp_path / 'rec.csv')!r})\n"
        "w = eo.window('win', s, rate_hz=100, size=200, hop=100)\n"  # 2 s windows over 0.5 s of data
        f"eo.output('out', eo.features('feat', w, ['rms']), eo.jsonl({str(tmp_path / 'o.jsonl')!r}))\n"
    )
    done = edgeflow("run", str(flow_file), "-p", "2", env={"EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())})
    assert done.returncode == 5, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("no trustworthy result")]
    assert re.search(r"no window closed in 101 samples \(0 gaps\)", line)  # 2 sensors x 50 rows + the tail row


def test_a_saved_process_report_reads_back_and_merges(tmp_path: Path) -> None:
    write_recording(tmp_path / "rec.csv", seconds=1.0, tail_s=0.0)
    report = run(small_flow(tmp_path / "rec.csv", tmp_path / "s.jsonl", speed=None), handle_signals=False)
    save_part(tmp_path, 0, report)
    save_part(tmp_path, 1, RunReport("metrics_demo", 0.25, FlowStats(windows=3)))
    (back, other) = load_parts(tmp_path, 2)
    assert back is not None and other is not None and load_parts(tmp_path, 3)[2] is None
    assert back.lines()[1:] == report.lines()[1:]  # the same figures, latency percentiles included
    assert back.stats.dead_letters_by == report.stats.dead_letters_by and back.process == 0
    merged = merge_reports([back, other])
    assert merged.stats.windows == report.stats.windows + 3 and merged.seconds == max(report.seconds, 0.25)
    assert merged.lines()[-1].startswith("  process 1: 0 samples  windows 3  anomalous 0  dead letters 0  p50 - us")
    doc = strict_json(write_report(tmp_path / "m.json", merged))
    assert doc["processes"][1]["latency_us"] == {"p50": None, "p99": None, "outputs": 0}  # no nan, even in JSON
    assert doc["dead_letters_by"] == [
        {"step": step, "reason": reason, "count": n}
        for (step, reason), n in sorted(report.stats.dead_letters_by.items())
    ]


def test_the_report_lists_model_swaps_rejections_and_rollbacks() -> None:
    from edgeflow.metrics import FlowStats
    from edgeflow.runtime import RunReport

    stats = FlowStats()
    stats.count("infer.swaps", 2)
    stats.count("infer.rollbacks")
    lines = RunReport("f", 1.0, stats).lines()
    assert "  model updates swapped 2  rejected 0  rolled back 1" in lines


def test_the_report_lists_ladder_steps_drift_alarms_and_fallbacks() -> None:
    from edgeflow.metrics import FlowStats
    from edgeflow.runtime import RunReport

    stats = FlowStats()
    stats.count("ladder.down|priority")
    stats.count("ladder.up|full")
    stats.count("model.drift_alarms|pump_ae@1/int8")
    (line,) = [x for x in RunReport("f", 1.0, stats).lines() if x.startswith("  degradation")]
    assert line == "  degradation ladder.down|priority 1  ladder.up|full 1  model.drift_alarms|pump_ae@1/int8 1"
