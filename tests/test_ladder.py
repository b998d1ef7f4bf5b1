"""The degradation ladder driven with explicit latencies: steps down on a broken budget, up after a quiet spell."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.metrics import FlowStats
from edgeflow.model import ModelInfo
from edgeflow.operators.ladder import FALLBACK, RUNGS, Ladder
from edgeflow.testing import run_capture
from flows.pump_int8 import add_features
from tests.infer.infer_support import MANIFEST, RECORDING


def test_the_ladder_steps_down_each_rung_then_back_up_with_hysteresis() -> None:
    stats = FlowStats()
    ladder = Ladder(0.015, window=8, hold=16, stats=stats, name="model")
    for _ in range(8 * 5):  # far over budget for long: down every full window, never below the last rung
        ladder.observe(0.040)
    assert ladder.rung == "raw"
    assert [e.dst for e in ladder.events] == list(RUNGS[1:])
    assert all(e.down and e.cause == "latency" and "p99 40.0 ms > budget 15.0 ms" in e.reason for e in ladder.events)
    for _ in range(15):  # under budget but not under half of it: no step up (hysteresis)
        ladder.observe(0.010)
    assert ladder.rung == "raw"
    for _ in range(15):  # under half the budget, one batch short of the hold
        ladder.observe(0.002)
    assert ladder.rung == "raw"
    ladder.observe(0.002)
    assert ladder.rung == "priority"
    for _ in range(16 * 2):
        ladder.observe(0.002)
    assert ladder.rung == "full"
    assert stats.counts == {
        "ladder.down|lean|latency": 1,
        "ladder.down|priority|latency": 1,
        "ladder.down|raw|latency": 1,
        "ladder.up|priority|recovered": 1,
        "ladder.up|lean|recovered": 1,
        "ladder.up|full|recovered": 1,
    }
    assert stats.gauges["ladder.level|model"] == 0


def test_one_slow_batch_in_a_window_does_not_break_a_p99_budget_of_many() -> None:
    ladder = Ladder(0.015, window=200, hold=10)
    for i in range(400):
        ladder.observe(0.050 if i == 100 else 0.005)
    assert ladder.rung == "full" and ladder.events == []


def test_bad_settings_are_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"ladder 'model': got budget_s=0.*Hint"):
        Ladder(0.0, name="model")


class SlowOnDemand:
    """The shipped model on LiteRT, sleeping ``per_row_s`` per row while its row count is in ``slow_rows``."""

    def __init__(self, per_row_s: float, slow_rows: range) -> None:
        from edgeflow.model import LiteRTModelHandler

        self._inner = LiteRTModelHandler(MANIFEST)
        self.rows = 0
        self.per_row_s = per_row_s
        self.slow_rows = slow_rows

    @property
    def info(self) -> ModelInfo:
        return self._inner.info

    def load_model(self) -> ModelInfo:
        return self._inner.load_model()

    def run_inference(self, batch: np.ndarray) -> np.ndarray:
        return self._inner.run_inference(batch)

    def score(self, batch: np.ndarray) -> np.ndarray:
        if self.rows in self.slow_rows:
            time.sleep(self.per_row_s * len(batch))
        self.rows += len(batch)
        return self._inner.score(batch)

    def swap(self, source: Any = None) -> ModelInfo:
        return self._inner.swap(source)


def test_a_slow_model_engages_the_ladder_keeps_the_high_priority_sensor_on_the_model_and_recovers() -> None:
    flow = Flow("ladder", latency_budget_ms=15)
    feats = add_features(eo.replay("samples", flow, RECORDING, speed=10))
    handler = SlowOnDemand(0.006, range(200, 400))
    scores = eo.infer("model", feats, model=handler, priorities={"pump-1": "high"})
    eo.output("scores", scores, eo.stdout())
    eo.summarize("summary", scores, every_s=10, sink=eo.stdout())
    capture = run_capture(flow)
    counts = capture.report.stats.counts
    # the slow model breaks the latency budget first; the replay then falls behind (a backlog) too
    downs = {rung: sum(n for k, n in counts.items() if k.startswith(f"ladder.down|{rung}|")) for rung in RUNGS[1:]}
    assert counts.get("ladder.down|lean|latency", 0) >= 1 and downs["priority"] >= 1
    # recovered once the model was fast again: back up, to full unless a relapse doubled the hold (a busy machine)
    ups = sum(n for k, n in counts.items() if k.startswith("ladder.up|"))
    deepest = 3 if any(k.startswith("ladder.down|raw|") for k in counts) else 2
    assert ups >= 1 and capture.report.stats.gauges["ladder.level|model"] < deepest
    scored = capture.outputs["scores"]
    shed = [s for s in scored if s["model"] == FALLBACK]
    by_priority = counts["infer.fallback|ladder:priority"]
    by_raw = counts.get("infer.fallback|ladder:raw", 0)  # a busy machine may push the ladder to its last rung
    assert shed and by_priority > 0 and by_priority + by_raw == len(shed)  # every shed window counted
    assert {s["sensor"] for s in shed} - {"pump-1"}  # the normal-priority sensors were shed
    high_shed = sum(s["sensor"] == "pump-1" for s in shed)
    assert high_shed == 0 if by_raw == 0 else high_shed <= by_raw  # the high one only on the raw rung
    assert any(s.get("degraded") for s in capture.outputs["summary_out"])


def test_a_lightly_loaded_flow_steps_up_after_hold_s_of_calm_with_few_batches() -> None:
    ladder = Ladder(0.015, window=8, hold=64, hold_s=4.0)
    for i in range(8):
        ladder.observe(0.040, now=float(i))
    assert ladder.rung == "lean"
    for i in range(7):  # calm, but fewer than MIN_QUIET batches, though seconds apart
        ladder.observe(0.001, now=10.0 + i)
    assert ladder.rung == "lean"
    ladder.observe(0.001, now=17.0)  # 8 calm batches over 7 s >= hold_s: up, long before 64 batches
    assert ladder.rung == "full"


def test_a_relapse_right_after_a_step_up_doubles_the_hold() -> None:
    ladder = Ladder(0.015, window=4, hold=8, hold_s=1e9)
    for _ in range(4):
        ladder.observe(0.040)
    for _ in range(8):
        ladder.observe(0.001)
    assert ladder.rung == "full" and ladder.hold_now == 8
    for _ in range(4):  # the load is still there: down again at once
        ladder.observe(0.040)
    assert ladder.rung == "lean" and ladder.hold_now == 16
    for _ in range(15):
        ladder.observe(0.001)
    assert ladder.rung == "lean"  # the doubled hold is not over yet
    ladder.observe(0.001)
    assert ladder.rung == "full"
    for _ in range(4 * 16 + 1):  # the step up lasted: the hold relaxes
        ladder.observe(0.001)
    assert ladder.hold_now == 8
