"""Model health (drift, saturation, scores) and the fallback when the model fails, on the real LiteRT runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.metrics import FlowStats
from edgeflow.model import LiteRTModelHandler, ModelInfo
from edgeflow.operators.health import ModelHealth, _column_medians
from edgeflow.operators.ladder import FALLBACK
from edgeflow.testing import run_capture, write_csv_recording
from flows.pump_int8 import add_features

from .infer_support import MANIFEST, RECORDING


def _flow(model: Any, recording: Path = RECORDING, **settings: Any) -> Flow:
    flow = Flow("infer-health")
    scores = eo.infer("model", add_features(eo.replay("samples", flow, recording)), model=model, **settings)
    eo.output("scores", scores, eo.stdout())
    eo.summarize("summary", scores, every_s=10, sink=eo.stdout())
    return flow


def _shifted(tmp_path: Path, offset: float) -> Path:
    lines = RECORDING.read_text().splitlines()
    header, rows = lines[0], [line.split(",") for line in lines[1:]]
    column = header.split(",")[-1]
    rows_out = ((r[0], r[1], float(r[2]) + offset) for r in rows)
    return write_csv_recording(tmp_path / "shifted.csv", rows_out, value=column)


def test_the_shipped_recording_is_healthy() -> None:
    capture = run_capture(_flow(str(MANIFEST)))
    counts = capture.report.stats.counts
    model_id = capture.outputs["scores"][0]["model"]
    assert counts.get(f"model.drift_alarms|{model_id}", 0) == 0
    assert counts[f"model.inputs|{model_id}"] >= 14 * 1800
    assert counts.get(f"model.saturated|{model_id}", 0) / counts[f"model.inputs|{model_id}"] < 0.01
    health = [s["model_health"] for s in capture.outputs["summary_out"] if "model_health" in s]
    assert health and max(h["drift"]["shift_sd"] for h in health) < 3.0
    assert not any(h["drift_alarm"] for h in health)
    assert capture.report.stats.histograms[f"model.score|{model_id}"].count == counts["infer.windows"]


def test_a_large_offset_raises_the_drift_alarm_and_saturates(tmp_path: Path) -> None:
    capture = run_capture(_flow(str(MANIFEST), _shifted(tmp_path, 50.0), drift_alarm=3.0))
    counts = capture.report.stats.counts
    model_id = capture.outputs["scores"][0]["model"]
    assert counts[f"model.drift_alarms|{model_id}"] >= 1
    assert counts[f"model.saturated|{model_id}"] > 0
    last = capture.outputs["summary_out"][-1]["model_health"]
    assert last["drift_alarm"] is True and last["drift"]["shift_sd"] > 3.0 and last["saturation_rate"] > 0


class FailsOnDemand:
    """The shipped model on LiteRT; score raises once it has scored ``fail_after`` rows (a runtime failure)."""

    def __init__(self, fail_after: int) -> None:
        self._inner = LiteRTModelHandler(MANIFEST)
        self.rows = 0
        self.fail_after = fail_after
        """Rows scored before every further call fails."""

    @property
    def info(self) -> ModelInfo:
        return self._inner.info

    def load_model(self) -> ModelInfo:
        return self._inner.load_model()

    def run_inference(self, batch: np.ndarray) -> np.ndarray:
        return self._inner.run_inference(batch)

    def score(self, batch: np.ndarray) -> np.ndarray:
        if self.rows >= self.fail_after:
            msg = "delegate lost"
            raise RuntimeError(msg)
        self.rows += len(batch)
        return self._inner.score(batch)

    def swap(self, source: Any = None) -> ModelInfo:
        return self._inner.swap(source)


def test_a_failing_model_falls_back_to_the_zscore_baseline() -> None:
    handler = FailsOnDemand(fail_after=1000)  # the baseline learns from ~1,000 windows, then the model fails
    capture = run_capture(_flow(handler))
    scored = capture.outputs["scores"]
    fallback = [s for s in scored if s["model"] == FALLBACK]
    assert fallback and len(scored) == capture.report.stats.windows  # no window lost
    assert all(s.get("degraded") is True for s in fallback)  # each verdict says it is not the model's
    assert not any(s.get("degraded") for s in scored if s["model"] != FALLBACK)
    counts = capture.report.stats.counts
    assert counts["infer.fallback|model_failed"] == len(fallback) == counts["infer.failed"]
    assert all("scored by fallback:zscore" in d["reason"] for d in capture.dead_letters)
    assert len(capture.dead_letters) < len(fallback)  # one letter per failed batch, not per window
    degraded = [s for s in capture.outputs["summary_out"] if s.get("degraded")]
    assert degraded and all(FALLBACK in s["model"] for s in degraded)
    # the baseline learnt from healthy windows: the fault after the failure (pump-4 at 50 s) is still flagged
    assert any(s["anomaly"] and s["sensor"] == "pump-4" for s in fallback)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 300), st.integers(1, 6)), elements=st.floats(-1e12, 1e12)),
)
def test_drift_medians_equal_numpy_median(x: np.ndarray) -> None:
    assert np.array_equal(_column_medians(x), np.median(x, axis=0))


def test_drift_is_measured_every_16_vectors_whatever_the_batching() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(0.0, 1.0, (100, 2))
    one, batched = (ModelHealth("m@1", ("a", "b"), np.zeros(2), np.ones(2), None, FlowStats()) for _ in range(2))
    seen = []
    for i, row in enumerate(rows):  # one vector at a time: measured at 16, 32, 48, 64, 80, 96
        one.update(row[None], np.zeros(1))
        if i + 1 == 16:
            assert one.drift is not None
        seen.append(None if one.drift is None else one.drift.tolist())
    assert seen[14] is None and seen[15] == seen[30] != seen[31]
    for lo, hi in ((0, 7), (7, 40), (40, 100)):  # the last multiple each batch reaches: 32, then 96
        batched.update(rows[lo:hi], np.zeros(hi - lo))
    assert batched.drift is not None and batched.drift.tolist() == seen[-1]
