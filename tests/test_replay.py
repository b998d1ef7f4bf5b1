"""Replay of CSV / JSONL / gzip recordings, bad rows, pacing and determinism."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError
from edgeflow.compiler import compile_flow
from edgeflow.testing import run_capture, write_csv_recording


def _by_sensor(summaries: list[dict]) -> list[dict]:
    """Each sensor's summaries in order (the interleaving of sensors depends on batching)."""
    return sorted(summaries, key=lambda s: (s["sensor"], s["interval"][0]))


def _summary_flow(path: Path, name: str, speed: float | None = None, **replay_kw: object) -> Flow:
    flow = Flow(name)
    s = eo.replay("samples", flow, path, speed=speed, **replay_kw)  # type: ignore[arg-type]
    w = eo.window("win", s, rate_hz=100, size=50, hop=25, max_gap_s=0.1)
    f = eo.features("feat", w, ["mean", "max"])
    eo.summarize("summary", eo.zscore_detector("detect", f, warmup=5), every_s=1, sink=eo.stdout())
    return flow


def _rows(n: int = 300, sensors: tuple[str, ...] = ("a", "b")) -> list[tuple[str, str, float]]:
    return [
        (f"2026-01-01T00:00:{i // 100:02d}.{i % 100:02d}0000+00:00", s, float((i * 7 + k) % 13))
        for i in range(n)
        for k, s in enumerate(sensors)
    ]


def test_csv_and_jsonl_and_gzip_give_the_same_summaries(tmp_path: Path) -> None:
    rows = _rows()
    csv_path = write_csv_recording(tmp_path / "r.csv", rows)
    jsonl_path = tmp_path / "r.jsonl"
    jsonl_path.write_text("".join(json.dumps({"ts": t, "sensor": s, "value": v}) + "\n" for t, s, v in rows))
    gz_path = tmp_path / "r.csv.gz"
    gz_path.write_bytes(gzip.compress(csv_path.read_bytes()))
    outs = [
        _by_sensor(run_capture(_summary_flow(p, f"fmt{i}")).only())
        for i, p in enumerate((csv_path, jsonl_path, gz_path))
    ]
    assert len(outs[0]) == 6  # 2 sensors x 3 s
    assert outs[0] == outs[2]  # gzip is transparent, byte counts included
    raw_csv = [s.pop("raw_bytes") for s in outs[0]]
    raw_jsonl = [s.pop("raw_bytes") for s in outs[1]]
    assert outs[0] == outs[1]
    assert all(j > c for j, c in zip(raw_jsonl, raw_csv, strict=True))  # JSON lines are longer


def test_bad_rows_become_dead_letters_and_the_rest_flows(tmp_path: Path) -> None:
    rows = _rows(200, ("a",))
    path = write_csv_recording(tmp_path / "r.csv", rows)
    lines = path.read_text().splitlines()
    lines.insert(10, "2026-01-01T00:00:00.095000,a,1.0")  # no timezone
    lines.insert(20, "2026-01-01T00:00:00.195000+00:00,a,nan")
    lines.insert(30, "not-a-time,a,1.0")
    lines.insert(40, "2026-01-01T00:00:00.395000+00:00,a,abc")
    lines.insert(50, "nan,a,1.0")
    path.write_text("\n".join(lines) + "\n")
    result = run_capture(_summary_flow(path, "bad-rows"))
    reasons = [d["reason"] for d in result.dead_letters]
    assert len(reasons) == 5
    assert "line 11: timestamp '2026-01-01T00:00:00.095000' has no timezone" in reasons[0]
    assert "non-finite value" in reasons[1]
    assert "Invalid isoformat string" in reasons[2]
    assert "could not convert string to float: 'abc'" in reasons[3]
    assert "timestamp 'nan' is not a finite number" in reasons[4]
    assert all(d["step"] == "samples" for d in result.dead_letters)
    assert result.report.stats.samples_in == 200
    assert result.report.stats.dead_letters == 5
    assert sum(s["samples"] for s in result.only()) > 150


def test_paced_replay_gives_identical_output_and_takes_its_time(tmp_path: Path) -> None:
    path = write_csv_recording(tmp_path / "r.csv", _rows(300))  # 3 s of data
    fast = _by_sensor(run_capture(_summary_flow(path, "fast")).only())
    started = time.monotonic()
    paced = _by_sensor(run_capture(_summary_flow(path, "paced", speed=6.0)).only())
    elapsed = time.monotonic() - started
    assert paced == fast
    assert elapsed >= 0.4  # 3 s of data at 6x real time is ~0.5 s


def test_missing_file_and_missing_columns_fail_at_compile_time(tmp_path: Path) -> None:
    with pytest.raises(FlowValidationError, match=r"step 'samples': field 'path' got 'nope.csv': no such file"):
        compile_flow(_summary_flow(Path("nope.csv"), "missing"))
    path = write_csv_recording(tmp_path / "r.csv", _rows(10))
    with pytest.raises(FlowValidationError, match=r"field 'time_column' got 'time': not a column"):
        compile_flow(_summary_flow(path, "cols", time_column="time"))
    with pytest.raises(FlowValidationError, match=r"field 'value_columns' got \['x'\]"):
        compile_flow(_summary_flow(path, "vals", value_columns=["x"]))


def test_snapshot_of_a_paced_replay_never_skips_rows_not_yet_sent(tmp_path: Path) -> None:
    from edgeflow.metrics import FlowStats
    from edgeflow.operators.replay import ReplayConfig, ReplaySource

    path = write_csv_recording(tmp_path / "r.csv", _rows(300, ("a",)))
    cfg = ReplayConfig(path=path, speed=1.0, batch_size=100)  # 3 s of data in real time
    part = ReplaySource("samples", cfg, ("value",), FlowStats()).open(str(path), None)
    sent = sum(len(block) for block in part.next_batch())
    assert 0 < sent < 100  # only what is due: the rest of the first 100 rows waits
    resumed = ReplaySource("samples", cfg, ("value",), FlowStats()).open(str(path), part.snapshot())
    first = next(iter(resumed.next_batch()))
    assert first.ts[0] == _row_ts(path, sent)  # exactly the first row not yet sent
    part.close()
    resumed.close()


def _row_ts(path: Path, row: int) -> float:
    from edgeflow.records import parse_timestamp

    return parse_timestamp(path.read_text().splitlines()[1 + row].split(",")[0])


def test_replay_reports_its_progress_in_bytes() -> None:
    flow = Flow("progress")
    eo.output("out", eo.replay("samples", flow, "examples/data/pump_vibration.csv"), eo.jsonl("out/progress.jsonl"))
    counts = run_capture(flow).report.stats.counts
    assert 0.999 < counts["replay.bytes_read"] / counts["replay.bytes_total"] <= 1.0
