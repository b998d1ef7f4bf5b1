"""The reference flow on the shipped recording: injected faults flagged, healthy periods quiet."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from edgeflow.loader import load_flow
from edgeflow.testing import Capture, run_capture

META = json.loads((Path(__file__).parent.parent / "examples/data/pump_vibration.faults.json").read_text())


@pytest.fixture(scope="module")
def result() -> Capture:
    import os

    os.chdir(Path(__file__).resolve().parent.parent)
    return run_capture("flows/pump_vibration.py")


def _overlaps(summary: dict, start: str, end: str) -> bool:
    lo, hi = (datetime.fromisoformat(x) for x in summary["interval"])
    f_lo, f_hi = datetime.fromisoformat(start), datetime.fromisoformat(end)
    return lo < f_hi and f_lo < hi


def test_every_injected_fault_is_flagged(result: Capture) -> None:
    summaries = result.only()
    for fault in META["faults"]:
        hits = [s for s in summaries if s["sensor"] == fault["sensor"] and _overlaps(s, fault["start"], fault["end"])]
        assert hits and all(s["anomaly"] for s in hits), fault
        assert max(s["score"]["max"] for s in hits) > 20


def test_healthy_periods_are_not_flagged(result: Capture) -> None:
    faulty = {(f["sensor"], f["start"], f["end"]) for f in META["faults"]}
    for s in result.only():
        in_fault = any(s["sensor"] == sensor and _overlaps(s, a, b) for sensor, a, b in faulty)
        if not in_fault:
            assert not s["anomaly"], s
            assert s["anomalous_windows"] == 0


def test_every_sample_is_accounted_for_and_data_shrinks(result: Capture) -> None:
    stats = result.report.stats
    with Path("examples/data/pump_vibration.csv").open() as f:
        rows = sum(1 for _ in f) - 1
    assert stats.samples_in == rows
    summarized = sum(s["samples"] for s in result.only())
    tail = stats.counts["window.tail_samples"]  # each sensor's samples after its last full window
    assert summarized + tail == rows and 0 < tail < 4 * 64
    assert stats.gaps == 2  # the two sensor dropouts of the recording
    assert result.dead_letters == [] and stats.late == 0
    sent = sum(len(json.dumps(s, separators=(",", ":"))) + 1 for s in result.only())
    assert sent / stats.bytes_in < 0.01  # > 99 % less data upstream


def test_summary_carries_stats_and_confidence_intervals(result: Capture) -> None:
    s = result.only()[5]
    assert set(s) >= {
        "sensor",
        "interval",
        "samples",
        "windows",
        "anomaly",
        "anomaly_rate",
        "score",
        "features",
        "model",
    }
    lo, hi = s["score"]["ci95"]
    assert lo <= s["score"]["mean"] <= hi
    r_lo, r_hi = s["anomaly_rate"]["ci95"]
    assert r_lo <= s["anomaly_rate"]["value"] <= r_hi
    for lo_f, mean_f, hi_f in s["features"].values():
        assert lo_f <= mean_f <= hi_f


def _by_sensor(summaries: list[dict]) -> list[dict]:
    return sorted(summaries, key=lambda s: (s["sensor"], s["interval"][0]))


def test_replay_is_deterministic_across_runs_and_workers(result: Capture) -> None:
    again = run_capture("flows/pump_vibration.py")
    assert again.only() == result.only()
    two_workers = run_capture("flows/pump_vibration.py", workers=2)
    assert _by_sensor(two_workers.only()) == _by_sensor(result.only())


def test_paced_replay_equals_fast_replay_on_a_slice(tmp_path: Path) -> None:
    lines = Path("examples/data/pump_vibration.csv").read_text().splitlines()[:12_001]  # ~3 s of data
    part = tmp_path / "slice.csv"
    part.write_text("\n".join(lines) + "\n")
    target = f"flows/pump_vibration.py:make_flow(recording='{part}', out='{tmp_path / 'o.jsonl'}')"
    fast = run_capture(load_flow(target)).only()
    paced = run_capture(load_flow(target.replace("make_flow(", "make_flow(speed=8, "))).only()
    assert fast and _by_sensor(paced) == _by_sensor(fast)
