"""Compile-time checks of eo.infer: every problem names the step and, for shapes, both shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError, Stream
from edgeflow.compiler import compile_flow
from flows.pump_int8 import add_features

from .infer_support import MANIFEST, MODEL_DIR, RECORDING


def _flow(feature_names: list[str] | None = None, **infer_settings: object) -> Flow:
    flow = Flow("infer-compile")
    samples = eo.replay("samples", flow, RECORDING)
    feats: Stream
    if feature_names is None:
        feats = add_features(samples)
    else:
        feats = eo.features("feat", eo.window("win", samples, rate_hz=500, size=256, hop=64), feature_names)
    settings = {"model": MANIFEST, **infer_settings}
    eo.output("print", eo.infer("model", feats, **settings), eo.stdout())  # type: ignore[arg-type]
    return flow


def test_reference_features_compile() -> None:
    compiled = compile_flow(_flow())
    assert compiled.schemas["model"].kind == "scored"
    assert compiled.schemas["model"].n_features == 14


def test_shape_mismatch_names_step_and_both_shapes() -> None:
    with pytest.raises(
        FlowValidationError,
        match=r"step 'model'.*model takes input shape \(batch, 14\) int8 .* vector has shape \(batch, 3\) float32",
    ):
        compile_flow(_flow(["rms", "p95", "kurtosis"]))


def test_shape_mismatch_on_a_bare_tflite_file() -> None:
    with pytest.raises(FlowValidationError, match=r"step 'model'.*\(batch, 14\) float32.*\(batch, 1\) float32"):
        compile_flow(_flow(["rms"], model=MODEL_DIR / "model_float32.tflite", threshold=1.0, trusted_keys=None))


def test_same_length_but_other_features_is_refused() -> None:
    names = ["mean", "std", "min", "max", "rms", "ptp", "skew", "kurtosis", "p5", "p95", "p1", "p99", "p50", "p25"]
    with pytest.raises(FlowValidationError, match=r"step 'model'.*was trained on features.*differ: band_0_50 != p1"):
        compile_flow(_flow(names))


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(FlowValidationError, match=r"step 'model': field 'model' got .*nope.json.*does not exist"):
        compile_flow(_flow(model=tmp_path / "nope.json"))


def test_corrupt_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" * 500)
    with pytest.raises(FlowValidationError, match=r"step 'model'.*not a valid TFLite model"):
        compile_flow(_flow(model=bad, threshold=1.0, trusted_keys=None))


def test_model_file_not_matching_its_manifest(model_copy: Path) -> None:
    (model_copy.parent / "model_int8.tflite").write_bytes((MODEL_DIR / "model_float32.tflite").read_bytes())
    with pytest.raises(FlowValidationError, match=r"step 'model'.*damaged or was replaced"):
        compile_flow(_flow(model=model_copy))


def test_unknown_variant() -> None:
    with pytest.raises(FlowValidationError, match=r"step 'model'.*no variant 'int4'"):
        compile_flow(_flow(variant="int4"))


def test_bare_model_needs_a_threshold() -> None:
    with pytest.raises(FlowValidationError, match=r"step 'model': field 'threshold'.*pass threshold="):
        compile_flow(_flow(model=MODEL_DIR / "model_int8.tflite", trusted_keys=None))


def test_a_bare_model_file_cannot_be_verified() -> None:
    with pytest.raises(FlowValidationError, match=r"step 'model'.*bare model file, which cannot be verified"):
        compile_flow(_flow(model=MODEL_DIR / "model_int8.tflite", threshold=1.0))


def test_bad_settings_fail_when_declared() -> None:
    with pytest.raises(FlowValidationError, match=r"step 'model': field 'num_threads' got 0"):
        _flow(num_threads=0)


def test_needs_feature_vectors() -> None:
    flow = Flow("infer-no-features")
    windows = eo.window("win", eo.replay("samples", flow, RECORDING), rate_hz=500, size=256)
    eo.output("print", eo.infer("model", windows, model=MANIFEST), eo.stdout())
    with pytest.raises(FlowValidationError, match=r"step 'model'.*needs feature vectors.*Hint: put eo.features"):
        compile_flow(flow)
