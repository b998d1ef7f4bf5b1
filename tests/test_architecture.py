"""Issue 7: one compile per run, bytewax behind one package, per-run state, custom operators from primitives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError, Stream
from edgeflow.compiler import compile_flow
from edgeflow.runtime import run
from edgeflow.testing import run_capture, write_csv_recording

ROOT = Path(__file__).resolve().parent.parent
REC = "examples/data/pump_vibration.csv"


def test_only_the_engine_package_knows_bytewax() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "edgeflow").rglob("*.py")
        if re.search(r"^\s*(from|import) bytewax", path.read_text(encoding="utf-8"), re.MULTILINE)
    )
    assert importers and all(u.startswith("edgeflow/engine/") for u in importers), importers
    mentions = sorted(  # `grep -rl bytewax edgeflow/`: not even a docstring elsewhere names it
        str(path.relative_to(ROOT)) for path in (ROOT / "edgeflow").rglob("*.py") if "bytewax" in path.read_text()
    )
    assert all(u.startswith("edgeflow/engine/") for u in mentions), mentions


def test_compiling_imports_neither_the_engine_nor_bytewax() -> None:
    code = (
        "import sys, edgeflow.operators as eo\n"
        "from edgeflow import Flow\nfrom edgeflow.compiler import compile_flow\n"
        "f = Flow('x'); s = eo.replay('s', f, 'examples/data/pump_vibration.csv'); eo.output('o', s, eo.stdout())\n"
        "compile_flow(f)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('bytewax', 'edgeflow.engine', 'paho', 'ai_edge'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _counting_flow(name: str, calls: list[str]) -> Flow:
    """A flow whose custom sink counts compile-time checks and run-time builds."""
    from edgeflow.operators.output import SinkSpec
    from edgeflow.sinks import CaptureSink

    def check() -> str:
        calls.append("check")
        return "prepared once"

    def build(ctx: Any) -> CaptureSink:
        calls.append(f"build:{ctx.prepared}")
        return CaptureSink()

    flow = Flow(name)
    s = eo.replay("samples", flow, REC)
    eo.output("out", eo.window("win", s, rate_hz=500, size=256, hop=256), SinkSpec("counting", build, check))
    return flow


def test_a_compiled_flow_is_checked_once_and_its_checks_reach_the_run() -> None:
    calls: list[str] = []
    compiled = compile_flow(_counting_flow("once", calls))
    assert calls == ["check"]
    run(compiled)
    assert calls == ["check", "build:prepared once"]


def test_two_flows_of_one_name_do_not_share_counters(tmp_path: Path) -> None:
    small = write_csv_recording(tmp_path / "small.csv", [(f"2026-01-01T00:00:{i:02d}Z", "a", 1.0) for i in range(10)])
    flows = []
    for path in (REC, small):
        flow = Flow("same-name")
        eo.output("out", eo.replay("samples", flow, path), eo.stdout() if False else eo.jsonl(tmp_path / "o.jsonl"))
        flows.append(compile_flow(flow))
    first, second = run(flows[0]), run(flows[1])
    assert (first.stats.samples_in, second.stats.samples_in) == (118_050, 10)


def test_a_compiled_flow_runs_twice_with_fresh_state() -> None:
    flow = Flow("twice")
    s = eo.replay("samples", flow, REC)
    w = eo.window("win", s, rate_hz=500, size=256, hop=64, max_sensors=2)
    f = eo.features("feat", w, ["rms"])
    eo.summarize("summary", eo.zscore_detector("detect", f), every_s=10, sink=eo.stdout())
    compiled = compile_flow(flow)
    a, b = run_capture(compiled), run_capture(compiled)
    assert a.only() == b.only() and len(a.dead_letters) == len(b.dead_letters) > 0
    assert {s["sensor"] for s in a.only()} == {s["sensor"] for s in b.only()} and len(
        {s["sensor"] for s in a.only()}
    ) == 2


# -- custom operators from primitives ---------------------------------------------------------------


@eo.window_feature(needs=["max", "rms"], adds=["peak_to_rms", "rms_sq"])
def peak_ratio(peak: np.ndarray, rms: np.ndarray, *, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    return scale * peak / rms, rms**2


def _feature_flow(name: str) -> tuple[Flow, Stream]:
    flow = Flow(name)
    s = eo.replay("samples", flow, REC)
    return flow, eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=256), ["max", "rms"])


def test_window_feature_adds_named_features_computed_per_window() -> None:
    flow, f = _feature_flow("wf")
    eo.output("out", peak_ratio("ratio", f, scale=2.0), eo.jsonl("out/wf.jsonl"))
    compiled = compile_flow(flow)
    assert compiled.schemas["ratio"].features == ("max", "rms", "peak_to_rms", "rms_sq")
    assert any(len(stage.steps) == 2 for stage in compiled.stages)  # fused with the features step
    records = run_capture(compiled).only()
    assert len(records) > 400
    for r in records:
        peak, rms, ratio, sq = r["features"]
        assert ratio == pytest.approx(2.0 * peak / rms, rel=1e-4) and sq == pytest.approx(rms**2, rel=1e-4)


def test_window_feature_errors_name_the_step_and_the_closest_setting() -> None:
    _flow, f = _feature_flow("wf-bad")
    with pytest.raises(FlowValidationError, match=r"step 'ratio': field 'scal' got 2.*did you mean 'scale'\?"):
        peak_ratio("ratio", f, scal=2)


def test_a_failing_feature_function_dead_letters_its_windows_and_the_flow_goes_on() -> None:
    @eo.window_feature(needs=["rms"], adds=["bad"])
    def broken(rms: np.ndarray) -> np.ndarray:
        return rms[:1]  # wrong length whenever a batch holds several windows

    flow, f = _feature_flow("wf-fail")
    eo.output("out", broken("broken", f), eo.jsonl("out/wf-fail.jsonl"))
    result = run_capture(flow)
    assert result.dead_letters and all(
        "broken failed: ValueError: returned shape" in d["reason"] for d in result.dead_letters
    )
    assert len(result.only()) + len(result.dead_letters) == result.report.stats.windows


class RunningPeak:
    """Per-sensor running maximum of the RMS: emits the window when it sets a new peak."""

    def __init__(self) -> None:
        self.peak = -np.inf
        self.seen = 0

    def update(self, window: Any) -> Any:
        self.seen += 1
        rms = float(window.features[1])
        if rms > self.peak:
            self.peak = rms
            return window
        return None


def test_stateful_keeps_one_state_per_sensor() -> None:
    flow, f = _feature_flow("peaks")
    eo.output("out", eo.stateful("peak", f, RunningPeak), eo.jsonl("out/peaks.jsonl"))
    records = run_capture(flow).only()
    by_sensor: dict[str, list[float]] = {}
    for r in records:
        by_sensor.setdefault(r["sensor"], []).append(r["features"][1])
    assert sorted(by_sensor) == ["pump-1", "pump-2", "pump-3", "pump-4"]
    assert all(v == sorted(v) and len(set(v)) == len(v) for v in by_sensor.values())  # strictly rising per sensor


def test_stateful_refuses_a_state_without_update() -> None:
    _flow, f = _feature_flow("peaks-bad")

    class NoUpdate:
        pass

    with pytest.raises(FlowValidationError, match=r"step 'peak': field 'new_state' got 'NoUpdate': has no update"):
        eo.stateful("peak", f, NoUpdate)
