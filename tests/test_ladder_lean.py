"""The ``lean`` rung holds windows across engine batches and runs them as larger batches; nothing held is lost."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.graph import MapLogic, Step, StepContext, Stream
from edgeflow.metrics import FlowStats
from edgeflow.model import LiteRTModelHandler
from edgeflow.operators.inference import InferConfig, InferLogic, PreparedModel
from edgeflow.records import Scored, Window
from edgeflow.testing import run_capture
from flows.pump_int8 import add_features
from tests.infer.infer_support import MANIFEST, RECORDING


def _windows(n: int, sensor_of: Any = lambda i: f"pump-{i % 4 + 1}", offset: int = 0) -> list[Window]:
    rng = np.random.default_rng(offset)
    return [
        Window(sensor_of(i), float(i), float(i) + 0.5, np.zeros((1, 256), np.float32), 500.0, 64, 2000, 1,
               features=rng.normal(0.5, 0.2, 14).astype(np.float32))
        for i in range(offset, offset + n)
    ]  # fmt: skip


def _logic(stats: FlowStats, **settings: Any) -> InferLogic:
    handler = LiteRTModelHandler(MANIFEST)
    info = handler.load_model()
    cfg = InferConfig(**settings)
    return InferLogic("model", cfg, PreparedModel(handler, info, info.threshold), stats, budget_ms=15.0)


def test_on_the_lean_rung_windows_wait_for_a_full_batch_and_the_end_flush_runs_the_rest() -> None:
    stats = FlowStats()
    logic = _logic(stats, max_batch=16, lean_hold_s=3600.0)  # only the count (or the end) releases them
    assert logic.ladder is not None
    logic.ladder.level = 1  # the lean rung, as if the budget had broken
    windows = _windows(30)
    outs = [logic.on_batch(windows[i : i + 5]) for i in range(0, 30, 5)]
    assert [len(out) for out in outs] == [0, 0, 0, 20, 0, 0]  # 20 >= 16 waiting: one run of all of them
    assert logic.flush(False) == []  # not overdue
    rest = logic.flush(True)
    assert len(rest) == 10
    scored = [item for out in [*outs, rest] for item in out]
    assert all(type(item) is Scored for item in scored)
    assert [s.window.start for s in scored] == [w.start for w in windows]  # in order, none lost or repeated
    reference = _logic(FlowStats())  # the full rung: every batch at once
    expected = [s.score for s in reference.on_batch(windows)]
    assert np.allclose([s.score for s in scored], expected, rtol=1e-6)
    assert stats.counts["infer.coalesced"] == 15 + 10  # windows that waited for a later run
    assert stats.counts["infer.coalesce_runs|count"] == 1 and stats.counts["infer.coalesce_runs|end"] == 1
    assert stats.counts["infer.batches"] == 2  # two model runs for six engine batches


def test_leaving_the_lean_rung_runs_what_is_held_with_the_next_batch() -> None:
    stats = FlowStats()
    logic = _logic(stats, max_batch=64, lean_hold_s=3600.0)
    assert logic.ladder is not None
    logic.ladder.level = 1
    assert logic.on_batch(_windows(3)) == []
    logic.ladder.level = 0  # recovered
    out = logic.on_batch(_windows(2, offset=3))
    assert [s.window.start for s in out] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert stats.counts["infer.coalesce_runs|rung"] == 1 and logic.flush(True) == []


class HoldAll:
    """A stateless step that holds every item until the engine flushes it (at the end, or when overdue)."""

    def __init__(self, release_when_overdue: bool) -> None:
        self.held: list[Any] = []
        self.release_when_overdue = release_when_overdue

    def on_batch(self, items: list[Any]) -> list[Any]:
        self.held += items
        return []

    def flush(self, final: bool) -> list[Any]:
        if not final and not self.release_when_overdue:
            return []
        out, self.held = self.held, []
        return out


def _hold(step_id: str, up: Stream, holder: HoldAll) -> Stream:
    def build(ctx: StepContext) -> MapLogic:
        return MapLogic(batch=holder.on_batch, flush=holder.flush, flush_every_s=0.01)

    return up.flow.add_step(Step(step_id, "hold", "map", (up.step_id,), build=build))


def test_the_engine_flushes_held_items_through_the_rest_of_the_chain_at_the_end_and_on_time() -> None:
    for release in (False, True):
        flow = Flow("hold")
        feats = add_features(eo.replay("samples", flow, RECORDING, speed=None if not release else 40))
        held = _hold("hold", feats, HoldAll(release))
        tagged = eo.map("after", held, lambda w: w)  # fused after the holding step: flushed items pass through it
        eo.output("out", tagged, eo.stdout())
        capture = run_capture(flow)
        out = capture.outputs["out"]
        assert len(out) == capture.report.stats.windows == 1833  # nothing held is lost
        for sensor in {w["sensor"] for w in out}:
            starts = [w["start"] for w in out if w["sensor"] == sensor]
            assert starts == sorted(starts)


class SlowModel:
    """The int8 model taking a set time per window (busy-waiting, as a larger model would)."""

    per_window_s = 0.002

    def __init__(self) -> None:
        self._inner = LiteRTModelHandler(MANIFEST)

    @property
    def info(self) -> Any:
        return self._inner.info

    def load_model(self) -> Any:
        return self._inner.load_model()

    def run_inference(self, batch: np.ndarray) -> np.ndarray:
        return self._inner.run_inference(batch)

    def score(self, batch: np.ndarray) -> np.ndarray:
        until = time.perf_counter() + self.per_window_s * len(batch)
        while time.perf_counter() < until:
            pass
        return self._inner.score(batch)


def test_with_high_priority_sensors_lean_holds_only_normal_windows_in_runs_cut_to_a_quarter_of_the_budget() -> None:
    stats = FlowStats()
    handler = SlowModel()
    info = handler.load_model()
    cfg = InferConfig(max_batch=64, lean_hold_s=3600.0, priorities={"pump-1": "high"})
    logic = InferLogic("model", cfg, PreparedModel(handler, info, info.threshold), stats, budget_ms=40.0)
    assert logic.ladder is not None
    first = logic.on_batch(_windows(8))  # full rung: the model's time per window is learnt (about 2 ms)
    assert len(first) == 8
    logic.ladder.level = 1  # lean
    outs = [logic.on_batch(_windows(4, offset=8 + 4 * i)) for i in range(8)]
    high = [[s.window.sensor for s in out if s.window.sensor == "pump-1"] for out in outs]
    assert high == [["pump-1"]] * 8  # each batch's high-priority window is scored at once, never held
    normal_runs = [len(out) - 1 for out in outs if len(out) > 1]
    # a run of held normal windows is cut to what ~2 ms each costs in 10 ms (a quarter of 40 ms), not max_batch
    assert normal_runs
    assert all(n <= 6 for n in normal_runs)
    rest = logic.flush(True)
    scored = [s for out in [first, *outs, rest] for s in out]
    assert sorted(s.window.start for s in scored) == [float(i) for i in range(40)]  # none lost or repeated
    for sensor in {s.window.sensor for s in scored}:
        starts = [s.window.start for s in scored if s.window.sensor == sensor]
        assert starts == sorted(starts)  # each sensor in order
