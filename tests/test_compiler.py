"""Compile-time checks name the step, the field and the value; fusion shows in the graph."""

from __future__ import annotations

import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError, Step
from edgeflow.compiler import compile_flow
from operators.crest_factor import crest_factor

REC = "examples/data/pump_vibration.csv"


def _features_flow(name: str = "f") -> tuple[Flow, object]:
    flow = Flow(name)
    s = eo.replay("samples", flow, REC)
    w = eo.window("win", s, rate_hz=500, size=256, hop=64)
    return flow, eo.features("feat", w, ["min", "max", "rms"])


def test_duplicate_step_id_is_refused_at_once() -> None:
    flow, _ = _features_flow()
    with pytest.raises(FlowValidationError, match="step 'win': field 'step_id' got 'win': another step already uses"):
        eo.window("win", eo.replay("samples2", flow, REC), rate_hz=500, size=64)


def test_unknown_input_names_the_step_and_the_missing_id() -> None:
    flow, _ = _features_flow()
    flow.add_step(Step("orphan", "map", "map", ("nowhere",)))
    with pytest.raises(FlowValidationError, match="step 'orphan': field 'inputs' got 'nowhere': no step has this id"):
        compile_flow(flow)


def test_cycle_is_reported_with_its_path() -> None:
    flow = Flow("cyclic")
    eo.replay("samples", flow, REC)
    flow.add_step(Step("a", "map", "map", ("b",)))
    flow.add_step(Step("b", "map", "map", ("a",)))
    with pytest.raises(FlowValidationError, match=r"cycle a -> b -> a"):
        compile_flow(flow)


def test_dangling_output_and_missing_source_are_reported() -> None:
    flow, _ = _features_flow()
    with pytest.raises(FlowValidationError, match=r"step 'feat': its output goes nowhere.*eo\.stdout"):
        compile_flow(flow)
    empty = Flow("empty")
    with pytest.raises(FlowValidationError, match="the flow has no source"):
        compile_flow(empty)


def test_custom_operator_checks_feature_names_at_compile_time() -> None:
    flow = Flow("crest")
    s = eo.replay("samples", flow, REC)
    f = eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), ["mean", "rms"])
    eo.output("out", crest_factor("crest", f), eo.stdout())
    with pytest.raises(
        FlowValidationError, match=r"step 'crest': field 'up' got \['mean', 'rms'\]: needs features \['min', 'max'\]"
    ):
        compile_flow(flow)


def test_step_that_needs_features_refuses_windows_without_them() -> None:
    flow = Flow("nofeat")
    w = eo.window("win", eo.replay("samples", flow, REC), rate_hz=500, size=256, hop=64)
    eo.summarize("summary", eo.zscore_detector("detect", w), sink=eo.stdout())
    with pytest.raises(
        FlowValidationError, match="step 'detect': field 'up' got 'windows': the detector needs feature vectors"
    ):
        compile_flow(flow)


def test_band_above_nyquist_names_the_step() -> None:
    flow = Flow("nyq")
    w = eo.window("win", eo.replay("samples", flow, REC), rate_hz=500, size=256, hop=64)
    eo.output("out", eo.features("feat", w, ["fft_bands(0-100,300-400)"]), eo.stdout())
    with pytest.raises(
        FlowValidationError, match=r"step 'feat': field 'names'.*300-400 Hz starts above the Nyquist frequency 250 Hz"
    ):
        compile_flow(flow)


def test_bad_feature_name_fails_when_declared() -> None:
    flow = Flow("badname")
    w = eo.window("win", eo.replay("samples", flow, REC), rate_hz=500, size=256, hop=64)
    with pytest.raises(
        FlowValidationError, match=r"step 'feat': field 'names' got \['rms', 'median'\]: unknown feature 'median'"
    ):
        eo.features("feat", w, ["rms", "median"])


def test_stateless_chains_are_fused_into_one_engine_step() -> None:
    flow, feats = _features_flow("fuse")
    crest = crest_factor("crest", feats)  # type: ignore[arg-type]
    kept = eo.filter("loud", crest, lambda w: w.features[2] > 0.01)
    eo.summarize("summary", eo.zscore_detector("detect", kept), sink=eo.jsonl("out/fuse.jsonl"))
    compiled = compile_flow(flow)
    assert [stage.stage_id for stage in compiled.stages] == [
        "samples",
        "win",
        "feat+crest+loud",
        "detect",
        "summary",
        "summary_out",
    ]
    assert len(compiled.order) == 8 and len(compiled.stages) == 6
    assert "┌[map]   feat" in compiled.describe() and "└[map]   loud" in compiled.describe()
    assert 'subgraph fused2["fused: feat+crest+loud"]' in compiled.mermaid()
    assert "subgraph cluster_2" in compiled.dot()


def test_fan_out_stops_fusion() -> None:
    flow, feats = _features_flow("fan")
    a = eo.map("a", feats, lambda w: w)  # type: ignore[arg-type]
    eo.output("out1", eo.map("b", a, lambda w: w), eo.stdout())
    eo.output("out2", eo.map("c", a, lambda w: w), eo.stdout())
    stages = [stage.stage_id for stage in compile_flow(flow).stages]
    assert "feat+a" in stages and "b" in stages and "c" in stages


def test_normalisation_file_is_checked_at_compile_time_and_applied(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from edgeflow.testing import run_capture

    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"names": ["rms", "max"], "mean": [0.0, 0.0], "std": [1.0, 1.0]}))
    flow = Flow("norm-bad")
    w = eo.window("win", eo.replay("samples", flow, REC), rate_hz=500, size=256, hop=64)
    eo.output("out", eo.features("feat", w, ["rms", "p95"], normalize=stats), eo.stdout())
    with pytest.raises(
        FlowValidationError, match=r"step 'feat': field 'normalize'.*differ from this step's \['rms', 'p95'\]"
    ):
        compile_flow(flow)

    stats.write_text(json.dumps({"names": ["rms"], "mean": [0.2, 0.3], "std": [0.01]}))
    flow = Flow("norm-short")
    w = eo.window("win", eo.replay("samples", flow, REC), rate_hz=500, size=256, hop=64)
    eo.output("out", eo.features("feat", w, ["rms"], normalize=stats), eo.stdout())
    with pytest.raises(FlowValidationError, match="it has 2 means and 1 standard deviations for 1 features"):
        compile_flow(flow)

    stats.write_text(json.dumps({"names": ["rms"], "mean": [0.2], "std": [0.01]}))
    flow = Flow("norm-ok")
    w = eo.window("win", eo.replay("samples", flow, REC), rate_hz=500, size=256, hop=64)
    eo.output("out", eo.features("feat", w, ["rms"], normalize=stats), eo.jsonl(tmp_path / "o.jsonl"))
    first = run_capture(flow).only()[0]
    assert first["features"][0] == pytest.approx((0.2261 - 0.2) / 0.01, abs=0.6)  # pump-1 healthy rms ~0.226 g


def test_inference_fuses_with_features_and_batches_across_sensors() -> None:
    from edgeflow.loader import load_flow
    from edgeflow.testing import run_capture

    flow = load_flow("flows/pump_int8.py")
    assert "feat+crest+model" in [stage.stage_id for stage in compile_flow(flow).stages]
    stats = run_capture(flow).report.stats
    assert stats.counts["infer.windows"] == stats.windows == 1833
    assert stats.counts["infer.batches"] < stats.windows / 2  # windows of several sensors share one invoke


def test_two_branches_reading_one_window_stream_do_not_share_features() -> None:
    from edgeflow.testing import run_capture

    flow = Flow("fanout")
    w = eo.window("win", eo.replay("samples", flow, REC), rate_hz=500, size=256, hop=64)
    eo.output("a", eo.features("feat_a", w, ["mean"]), eo.jsonl("out/fanout_a.jsonl"))
    eo.output("b", eo.features("feat_b", w, ["rms", "p95"]), eo.jsonl("out/fanout_b.jsonl"))
    result = run_capture(flow)
    assert {len(r["features"]) for r in result.outputs["a"]} == {1}
    assert {len(r["features"]) for r in result.outputs["b"]} == {2}
