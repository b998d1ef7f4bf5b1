"""eo.infer with any object that follows the ModelHandler protocol, as Beam's RunInference takes any ModelHandler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError
from edgeflow.compiler import compile_flow
from edgeflow.model import LiteRTModelHandler
from edgeflow.testing import run_capture
from flows.pump_int8 import add_features

from .handler_support import ZScoreModel, save_zscore_model
from .infer_support import MANIFEST, RECORDING

FAULTS = {("pump-2", "08:00:20"), ("pump-3", "08:00:40"), ("pump-4", "08:00:50")}


def _flow(model: Any, **settings: Any) -> Flow:
    flow = Flow("infer-handler")
    scores = eo.infer("model", add_features(eo.replay("samples", flow, RECORDING)), model=model, **settings)
    eo.output("scores", scores, eo.stdout())
    eo.summarize("summary", scores, every_s=10, sink=eo.stdout())
    return flow


@pytest.fixture
def zscore_model(tmp_path: Path, recorded: Any) -> ZScoreModel:
    healthy = recorded.x[recorded.y == 0]
    return ZScoreModel(save_zscore_model(tmp_path / "zscore.npz", healthy, threshold=10.0))


def test_a_numpy_handler_runs_end_to_end(zscore_model: ZScoreModel) -> None:
    capture = run_capture(_flow(zscore_model))
    scored = capture.outputs["scores"]
    assert len(scored) == capture.report.stats.windows == capture.report.stats.counts["infer.windows"] > 1800
    assert {s["model"] for s in scored} == {"zscore@1"}
    features = np.array([s["features"] for s in scored], dtype=np.float32)
    expected = zscore_model.score(features)  # the handler itself, on the feature vectors the flow sent
    np.testing.assert_allclose([s["score"] for s in scored], expected, rtol=1e-4, atol=1e-4)
    assert [s["anomaly"] for s in scored] == (expected > 10.0).tolist()
    flagged = {(s["sensor"], s["interval"][0][11:19]) for s in capture.outputs["summary_out"] if s["anomaly"]}
    assert flagged == FAULTS
    assert capture.dead_letters == []
    assert zscore_model.loads == 1


def test_a_handler_object_of_the_builtin_runtime_is_accepted() -> None:
    handler = LiteRTModelHandler(MANIFEST, variant="float32")
    capture = run_capture(_flow(handler))
    assert {s["model"] for s in capture.outputs["scores"]} == {handler.info.model_id}
    flagged = {(s["sensor"], s["interval"][0][11:19]) for s in capture.outputs["summary_out"] if s["anomaly"]}
    assert flagged == FAULTS


class _Half:
    """Has the look of a model but not the protocol: no run_inference, no swap."""

    info = None

    def load_model(self) -> None: ...

    def score(self, batch: np.ndarray) -> np.ndarray:
        return batch[:, 0]


def test_an_object_that_is_not_a_handler_is_refused_when_declared() -> None:
    with pytest.raises(
        FlowValidationError,
        match=r"step 'model': field 'model' got <.*_Half object.*>: a _Half is not a model handler: "
        r"it lacks run_inference, swap \(the ModelHandler protocol: info, load_model\(\), .*\)\. "
        r"Hint: pass the path of a manifest.json or .tflite file, or an object following edgeflow.model.ModelHandler",
    ):
        _flow(_Half())
    with pytest.raises(FlowValidationError, match=r"field 'model' got 42: a int is not a model handler: it lacks info"):
        _flow(42)


def test_runtime_settings_belong_to_the_handler(zscore_model: ZScoreModel) -> None:
    with pytest.raises(
        FlowValidationError,
        match=r"step 'model': field 'variant' got 'float32': variant shapes the LiteRT handler made from a path, "
        r"but model= is a ZScoreModel\. Hint: set variant on the handler",
    ):
        _flow(zscore_model, variant="float32")
    with pytest.raises(
        FlowValidationError, match=r"field 'reload_check_s' got 1\.0: .*needs refresh\(min_interval_s\)"
    ):
        _flow(zscore_model, reload_check_s=1.0)


def test_a_handler_that_fails_to_load_names_the_step(tmp_path: Path) -> None:
    with pytest.raises(
        FlowValidationError,
        match=r"step 'model': field 'model' got .*cannot read z-score model .*missing\.npz.*"
        r"Hint: fix what ZScoreModel\.load_model\(\) reports",
    ):
        compile_flow(_flow(ZScoreModel(tmp_path / "missing.npz")))


def test_a_handler_for_other_features_is_refused_at_compile_time(tmp_path: Path) -> None:
    handler = ZScoreModel(save_zscore_model(tmp_path / "z3.npz", np.ones((4, 3)), threshold=1.0))
    with pytest.raises(
        FlowValidationError, match=r"step 'model'.*model takes input shape \(batch, 3\) float32 .*\(batch, 14\) float32"
    ):
        compile_flow(_flow(handler))


class _OneScorePerBatch(ZScoreModel):
    def score(self, batch: np.ndarray) -> np.ndarray:
        return np.array([super().score(batch).max()])


def test_a_handler_must_give_one_score_per_row(tmp_path: Path, recorded: Any) -> None:
    handler = _OneScorePerBatch(save_zscore_model(tmp_path / "z.npz", recorded.x, threshold=1.0))
    with pytest.raises(
        FlowValidationError, match=r"step 'model'.*score\(\) of 2 rows returned shape \(1,\), expected \(2,\)"
    ):
        compile_flow(_flow(handler))
