"""The degradation ladder driven with explicit latencies: steps down on a broken budget, up after a quiet spell."""

from __future__ import annotations

import pytest

from edgeflow.metrics import FlowStats
from edgeflow.operators.ladder import RUNGS, Ladder


def test_the_ladder_steps_down_each_rung_then_back_up_with_hysteresis() -> None:
    stats = FlowStats()
    ladder = Ladder(0.015, window=8, hold=16, stats=stats, name="model")
    for _ in range(8 * 5):  # far over budget for long: down every full window, never below the last rung
        ladder.observe(0.040)
    assert ladder.rung == "raw"
    assert [e.dst for e in ladder.events] == list(RUNGS[1:])
    assert all(e.down and "p99 40.0 ms > budget 15.0 ms" in e.reason for e in ladder.events)
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
        "ladder.down|lean": 1,
        "ladder.down|priority": 1,
        "ladder.down|raw": 1,
        "ladder.up|priority": 1,
        "ladder.up|lean": 1,
        "ladder.up|full": 1,
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
