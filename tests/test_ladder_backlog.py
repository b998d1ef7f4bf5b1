"""The ladder reacts to backlog (verdicts lagging behind event time), not only to ingest → verdict latency."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.metrics import FlowStats
from edgeflow.observe.exporter import exposition
from edgeflow.operators.ladder import Ladder, LagGauge
from edgeflow.testing import run_capture
from flows.pump_int8 import add_features
from tests.infer.infer_support import MANIFEST, RECORDING


def test_a_backlog_over_its_limit_steps_down_with_its_cause_and_holds_off_recovery() -> None:
    stats = FlowStats()
    ladder = Ladder(0.015, backlog_s=0.1, window=8, hold=16, stats=stats, name="model")
    for _ in range(3):  # latency well inside the budget, but the input waits before it is ingested
        ladder.observe(0.002, backlog_s=0.5)
    assert ladder.rung == "lean" and ladder.cause == "backlog"
    assert ladder.events[-1].cause == "backlog" and "backlog 0.500 s > 0.100 s" in ladder.events[-1].reason
    assert ladder.block() == {"rung": "lean", "cause": "backlog"}
    for _ in range(40):  # fast again, but the backlog is not under half its limit yet: no step up
        ladder.observe(0.002, backlog_s=0.06)
    assert ladder.rung == "lean"
    for _ in range(16):
        ladder.observe(0.002, backlog_s=0.01)
    assert ladder.rung == "full" and ladder.block() is None
    assert stats.counts == {"ladder.down|lean|backlog": 1, "ladder.up|full|recovered": 1}
    text = exposition(stats, "demo")
    assert (
        'edgeflow_ladder_steps_total{cause="backlog",direction="down",flow="demo",process="0",rung="lean"} 1.0' in text
    )
    assert 'edgeflow_ladder_level{flow="demo",process="0",step="model"} 0.0' in text


def test_latency_wins_when_both_break_and_a_lone_backlog_spike_is_ignored() -> None:
    ladder = Ladder(0.015, backlog_s=0.1, window=8, hold=16)
    for i in range(8):
        ladder.observe(0.002, backlog_s=5.0 if i == 3 else 0.0)  # one spike: the median of 3 stays at 0
    assert ladder.rung == "full"
    ladder = Ladder(0.015, backlog_s=0.1, window=8, hold=16)
    for i in range(8):  # the 8th batch fills the latency window while the backlog (of 3) breaks too
        ladder.observe(0.040, backlog_s=0.5 if i >= 6 else 0.0)
    assert [e.cause for e in ladder.events] == ["latency"]


def test_the_lag_gauge_ignores_each_sensors_own_clock_offset() -> None:
    lag = LagGauge()
    # sensor b's clock is 30 s behind: a constant offset, not a backlog
    assert lag.observe([("a", 10.0), ("b", -20.0)], now=10.1) == 0.0
    assert lag.observe([("a", 11.0), ("b", -19.0)], now=11.1) == 0.0
    assert lag.observe([("a", 12.0), ("b", -18.0)], now=12.1) == 0.0
    assert lag.observe([("a", 13.0), ("b", -17.0)], now=13.9) == pytest.approx(0.8, abs=0.05)


def test_bad_backlog_limit_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"ladder 'model': got .*backlog_s=-1.*Hint"):
        Ladder(0.015, backlog_s=-1, name="model")


class SlowDownstream:
    """Sleeps per window after the model: the worker falls behind its input, though each verdict is quick."""

    def __init__(self, per_window_s: float, windows: int) -> None:
        self.per_window_s = per_window_s
        self.left = windows

    def __call__(self, item: Any) -> Any:
        if self.left > 0:
            self.left -= 1
            time.sleep(self.per_window_s)
        return item


def test_a_flow_that_falls_behind_its_paced_input_steps_down_for_backlog(tmp_path: Path) -> None:
    # 5 s of the shipped recording replayed at real time; a slow step after the model holds the one worker, so
    # rows wait in the replay (due but not yet handed on) while each batch, once ingested, is scored in time
    lines = RECORDING.read_text().splitlines()
    head = [lines[0]] + [line for line in lines[1:] if line.startswith("2026-03-02T08:00:0") and line[18] < "5"]
    recording = tmp_path / "five_s.csv"
    recording.write_text("\n".join(head) + "\n")
    flow = Flow("backlog", latency_budget_ms=50)
    scores = eo.infer("model", add_features(eo.replay("samples", flow, recording, speed=1)), model=str(MANIFEST))
    slow = eo.map("slow", scores, SlowDownstream(0.08, windows=80))
    eo.summarize("summary", slow, every_s=1, sink=eo.stdout())
    capture = run_capture(flow)
    counts = capture.report.stats.counts
    assert sum(n for name, n in counts.items() if name.startswith("ladder.down|") and name.endswith("|backlog")) >= 1
    ladders = [
        s["model_health"]["ladder"] for s in capture.outputs["summary_out"] if "ladder" in s.get("model_health", {})
    ]
    assert {"rung": "lean", "cause": "backlog"} in ladders or any(b["cause"] == "backlog" for b in ladders)
