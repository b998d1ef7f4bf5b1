"""Issue 8.7: a flow killed with SIGKILL at random moments and restarted loses nothing and repeats little."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.testing import run_capture

ROOT = Path(__file__).resolve().parent.parent
REC = str(ROOT / "examples/data/pump_vibration.csv")

FLOW = """
import sys
import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.runtime import run

flow = Flow("crashy", recovery_dir=sys.argv[1] + "/state", snapshot_every_s=0.25,
            dead_letter_path=sys.argv[1] + "/dead.jsonl")
s = eo.replay("samples", flow, sys.argv[2], speed=float(sys.argv[3]))
f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms", "p95"])
out = eo.jsonl(sys.argv[1] + "/s.jsonl")
eo.summarize("summary", eo.zscore_detector("detect", f, threshold=6), every_s=10, sink=out)
print("samples", run(flow, workers=int(sys.argv[4]) if len(sys.argv) > 4 else 1).stats.samples_in, flush=True)
"""


def _reference(rec: str = REC) -> list[dict]:
    flow = Flow("crashy")
    s = eo.replay("samples", flow, rec)
    f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["rms", "p95"])
    eo.summarize("summary", eo.zscore_detector("detect", f, threshold=6), every_s=10, sink=eo.stdout())
    return run_capture(flow).only()


def test_kill_9_at_random_moments_loses_no_summary_and_repeats_few(tmp_path: Path) -> None:
    rng = random.Random(8)
    # 60 s of data in 6 s: a run killed after 0.8-2.0 s has handed on at most ~20 s of it, so the first three
    # runs are always killed before the end, however fast the machine starts a flow
    cmd = [sys.executable, "-c", FLOW, str(tmp_path), REC, "10"]
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.8, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert kills >= 3
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    by_key: dict[tuple[str, str], dict] = {}
    repeated = 0
    for record in lines:
        key = (record["sensor"], record["interval"][0])
        if key in by_key:
            repeated += 1
            assert by_key[key] == record  # a repeat is the same summary, never a different one
        by_key[key] = record
    reference = {(r["sensor"], r["interval"][0]): r for r in _reference()}
    assert by_key == reference  # nothing lost, nothing changed by the crashes
    assert repeated <= 4 * kills  # at most a snapshot interval's output (one summary per sensor) per crash
    assert (tmp_path / "dead.jsonl").read_text() == ""  # no resumed sample was taken for a late one


def test_a_store_begun_by_one_worker_is_resumed_by_two_without_loss(tmp_path: Path) -> None:
    # one worker keeps every sensor's state in one shard; the store keeps that count, so a restart with two
    # workers (of a source not split by worker: a JSON Lines recording is one partition) finds every sensor
    import csv

    from edgeflow.engine.execute import SHARDS_FILE

    rec = tmp_path / "pump.jsonl"
    with open(REC, newline="") as f:
        rows = [{**row, "accel": float(row["accel"])} for row in csv.DictReader(f)]
    rec.write_text("".join(json.dumps(row) + "\n" for row in rows))
    proc = subprocess.Popen([sys.executable, "-c", FLOW, str(tmp_path), str(rec), "10"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 30
    out = tmp_path / "s.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:  # 60 s of data at 10x: a summary every second
        if out.exists() and len(out.read_text().splitlines()) >= 8:  # 20 s of data handed on, snapshots on the way
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert (tmp_path / "state" / SHARDS_FILE).read_text() == "1\n"
    done = subprocess.run([sys.executable, "-c", FLOW, str(tmp_path), str(rec), "10", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    resumed = int(done.stdout.split()[-1])
    assert 0 < resumed < 118_050  # it resumed part-way: the first run's samples were not read again
    lines = [
        line for out in sorted(tmp_path.glob("s*.jsonl")) for line in out.read_text().splitlines()
    ]  # a file a worker
    by_key = {(r["sensor"], r["interval"][0]): r for r in map(json.loads, lines)}
    assert by_key == {(r["sensor"], r["interval"][0]): r for r in _reference(str(rec))}


def test_a_store_resumed_with_another_worker_count_or_recording_is_refused_clearly(tmp_path: Path) -> None:
    # a replay split by sensor keeps a read position per worker's share, and a source's partitions carry its path
    from edgeflow.errors import EdgeflowError
    from edgeflow.runtime import run
    from edgeflow.testing import write_csv_recording

    rows = [(f"2026-01-01T00:00:{i // 4 // 10:02d}.{i // 4 % 10}00Z", f"s{i % 4}", float(i % 5)) for i in range(400)]

    def flow(recording: str) -> Flow:
        f = Flow("split", recovery_dir=tmp_path / "store")
        w = eo.window(
            "win", eo.replay("samples", f, write_csv_recording(tmp_path / recording, rows)), rate_hz=10, size=8
        )
        eo.output("out", w, eo.jsonl(tmp_path / "o"))
        return f

    run(flow("r.csv"), handle_signals=False)
    with pytest.raises(EdgeflowError, match=r"\(.*/r\.csv\): a source's partitions are named by its path.*\(2 in this"):
        run(flow("r.csv"), workers=2, handle_signals=False)
    with pytest.raises(EdgeflowError, match=r"\(.*/r\.csv\): a source's partitions are named by its path.*\(1 in this"):
        run(flow("renamed.csv"), handle_signals=False)
