"""Issue 8.3 and 8.5: one far-future timestamp does not kill a sensor; rejected sensors cost bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.operators.window import SensorAdmission, SensorWindows, WindowConfig
from edgeflow.records import DeadLetter, Sample, Window

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _samples(times: np.ndarray) -> list[Sample]:
    return [Sample(float(t), "s", (float(i % 7),), 20, 0) for i, t in enumerate(times)]


def _state(**settings: float) -> tuple[SensorWindows, FlowStats]:
    stats = FlowStats()
    cfg = WindowConfig(rate_hz=10, size=20, hop=20, max_gap_s=1.0, **settings)
    return SensorWindows("win", cfg, 1, SensorAdmission(10), stats), stats


def test_one_sample_from_2096_is_a_dead_letter_and_the_sensor_goes_on() -> None:
    state, stats = _state()
    times = T0 + np.arange(3000) / 10
    future = 4_000_000_000.0  # 2096-10-02
    samples = _samples(times)
    samples.insert(1500, Sample(future, "s", (1.0,), 20, 0))
    out = [x for i in range(0, len(samples), 100) for x in state.on_batch(samples[i : i + 100])]
    dead = [x for x in out if isinstance(x, DeadLetter)]
    (letter,) = dead
    assert letter.reason.startswith("timestamp 2096-10-02T07:06:40+00:00 is ") and "not the sensor's new clock" in (
        letter.reason
    )
    assert stats.late == 0
    assert sum(isinstance(x, Window) for x in out) == 3000 // 20  # every window of the real timeline


def test_a_sensor_that_really_jumps_ahead_is_followed_once_a_second_sample_confirms_it() -> None:
    state, stats = _state()
    before = T0 + np.arange(200) / 10
    after = T0 + 2 * 86_400 + np.arange(200) / 10  # back two days later
    out = state.on_batch(_samples(np.concatenate((before, after))))
    assert not [x for x in out if isinstance(x, DeadLetter)]
    assert sum(isinstance(x, Window) for x in out) == 20 and stats.gaps == 1


def test_a_jump_held_when_the_input_ends_is_a_dead_letter() -> None:
    state, _stats = _state()
    state.on_batch(_samples(T0 + np.arange(50) / 10))
    assert state.on_batch(_samples(np.array([T0 + 86_400.0]))) == []
    (letter,) = state.on_eof()
    assert "the input ended before a second sample confirmed it" in letter.reason


def test_a_jump_held_at_the_end_of_a_batch_waits_for_the_next_batch() -> None:
    state, _stats = _state()
    assert not [x for x in state.on_batch(_samples(T0 + np.arange(50) / 10)) if isinstance(x, DeadLetter)]
    assert state.on_batch(_samples(np.array([T0 + 86_400.0]))) == []  # held, not yet judged
    out = state.on_batch(_samples(T0 + 5.0 + np.arange(10) / 10))  # the timeline goes on: it was an outlier
    assert [type(x).__name__ for x in out].count("DeadLetter") == 1


SCRIPT = """
import resource, sys
import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.runtime import run
flow = Flow("many")
s = eo.replay("samples", flow, sys.argv[1])
eo.output("out", eo.window("win", s, rate_hz=10, size=16, hop=16, max_sensors=10), eo.jsonl(sys.argv[2]))
report = run(flow, handle_signals=False)
print(report.stats.dead_letters, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _rss_with(tmp_path: Path, sensors: int) -> tuple[int, int]:
    rec = tmp_path / f"r{sensors}.csv"
    with rec.open("w") as f:
        f.write("ts,sensor,value\n")
        f.writelines(f"2026-01-01T00:00:{i // 1000 % 60:02d}.{i % 1000:03d}Z,s{i},1.0\n" for i in range(sensors))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(rec), str(tmp_path / "o.jsonl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    dead, rss = done.stdout.split()
    return int(dead), int(rss)


def test_rejected_sensors_cost_bounded_memory(tmp_path: Path) -> None:
    few_dead, few_rss = _rss_with(tmp_path, 1_000)
    many_dead, many_rss = _rss_with(tmp_path, 100_000)
    assert (few_dead, many_dead) == (990, 99_990)  # max_sensors=10: every other sensor is refused, counted
    assert (many_rss - few_rss) * 1024 / 99_000 < 512  # bytes per refused sensor (ru_maxrss is in KiB)
