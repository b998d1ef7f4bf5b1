"""The LiteRT model handler on the committed reference model: real runtime, real files, no fakes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeflow.model import LiteRTModelHandler, ModelLoadError, TensorSpec, load_manifest

from .infer_support import MANIFEST, MODEL_DIR

# Tolerances of the int8 model against its float32 twin (same pruned weights, no quantization), stated here
# and in docs/inference.md. One output quantization step is ~0.033 (see `edgeflow model info`).
HEALTHY_OUTPUT_ATOL = 0.15  # per reconstructed feature on healthy windows: under 5 output steps
HEALTHY_SCORE_ATOL = 0.005  # anomaly score on healthy windows: under 15 % of the threshold
FAULT_SCORE_MEDIAN_RTOL = 0.05  # median relative score difference on faulty windows


def _handlers() -> tuple[LiteRTModelHandler, LiteRTModelHandler]:
    return LiteRTModelHandler(MANIFEST), LiteRTModelHandler(MANIFEST, variant="float32_pruned")


def test_describes_int8_input_and_output() -> None:
    info = LiteRTModelHandler(MANIFEST).load_model()
    (inp,), (out,) = info.inputs, info.outputs
    assert (inp.dtype, inp.shape, out.dtype, out.shape) == ("int8", (-1, 14), "int8", (-1, 14))
    assert inp.quantized and out.quantized and -128 <= inp.zero_point <= 127
    assert info.model_id == f"pump_ae@{load_manifest(MANIFEST).version}/int8"
    assert info.threshold == load_manifest(MANIFEST).variants["int8"].threshold


def test_int8_matches_float32_within_tolerance(recorded) -> None:  # type: ignore[no-untyped-def]
    int8, f32 = _handlers()
    healthy, faulty = recorded.y == 0, recorded.y == 1
    out_diff = np.abs(int8.run_inference(recorded.x) - f32.run_inference(recorded.x))
    assert out_diff[healthy].max() <= HEALTHY_OUTPUT_ATOL
    s8, s32 = int8.score(recorded.x), f32.score(recorded.x)
    assert np.abs(s8 - s32)[healthy].max() <= HEALTHY_SCORE_ATOL
    assert np.median(np.abs(s8 - s32)[faulty] / s32[faulty]) <= FAULT_SCORE_MEDIAN_RTOL
    assert np.corrcoef(s8, s32)[0, 1] > 0.999
    labelled = recorded.y >= 0
    verdict8, verdict32 = s8 > int8.info.threshold, s32 > f32.info.threshold
    assert np.array_equal(verdict8[labelled], verdict32[labelled])
    assert np.array_equal(verdict8[labelled], recorded.y[labelled] == 1)


def test_quantizes_with_the_models_own_parameters(recorded) -> None:  # type: ignore[no-untyped-def]
    """The handler equals a hand-written quantize -> invoke -> dequantize on the raw interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    manifest = json.loads(MANIFEST.read_text())
    interpreter = Interpreter(model_path=str(MODEL_DIR / "model_int8.tflite"))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = recorded.x[:16].astype(np.float64)
    z = (x - manifest["normalization"]["mean"]) / manifest["normalization"]["std"]
    u = np.sign(z) * np.log1p(np.abs(z))
    (s_in, zp_in), (s_out, zp_out) = inp["quantization"], out["quantization"]
    q = np.clip(np.round(u / s_in) + zp_in, -128, 127).astype(np.int8)
    interpreter.resize_tensor_input(inp["index"], [16, 14])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], q)
    interpreter.invoke()
    expected = (interpreter.get_tensor(out["index"]).astype(np.float64) - zp_out) * s_out
    np.testing.assert_allclose(LiteRTModelHandler(MANIFEST).run_inference(recorded.x[:16]), expected, atol=1e-5)


def test_batches_give_the_same_scores_as_single_windows(recorded) -> None:  # type: ignore[no-untyped-def]
    x = recorded.x[:37]
    one_by_one = np.concatenate([LiteRTModelHandler(MANIFEST).score(row[None, :]) for row in x])
    chunked = LiteRTModelHandler(MANIFEST, max_batch=8).score(x)
    np.testing.assert_array_equal(LiteRTModelHandler(MANIFEST).score(x), one_by_one)
    np.testing.assert_array_equal(chunked, one_by_one)


def test_tensor_spec_saturates() -> None:
    spec = TensorSpec("x", (-1, 3), "int8", scale=0.1, zero_point=0)
    assert spec.quantize(np.array([[100.0, -100.0, 0.04]], dtype=np.float32)).tolist() == [[127, -128, 0]]


def test_missing_and_corrupt_files_are_refused(tmp_path: Path, model_copy: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        LiteRTModelHandler(tmp_path / "nope.tflite").load_model()
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ModelLoadError, match="not a valid TFLite model"):
        LiteRTModelHandler(garbage).load_model()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes((MODEL_DIR / "model_int8.tflite").read_bytes()[:3000])
    with pytest.raises(ModelLoadError, match="not a valid TFLite model"):
        LiteRTModelHandler(truncated).load_model()
    model_file = model_copy.parent / "model_int8.tflite"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights still parses: the manifest's sha256 catches it
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="damaged or was replaced"):
        LiteRTModelHandler(model_copy).load_model()
    model_copy.write_text("{not json")
    with pytest.raises(ModelLoadError, match="is not valid"):
        LiteRTModelHandler(model_copy).load_model()


def test_failed_swap_keeps_the_running_model(model_copy: Path, recorded) -> None:  # type: ignore[no-untyped-def]
    handler = LiteRTModelHandler(model_copy)
    before = handler.score(recorded.x[:8])
    model_id = handler.info.model_id
    (model_copy.parent / "model_int8.tflite").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="damaged or was replaced"):
        handler.refresh(min_interval_s=0)
    assert handler.refresh(min_interval_s=0) is None  # the same bad file is reported once
    assert handler.info.model_id == model_id
    np.testing.assert_array_equal(handler.score(recorded.x[:8]), before)


def test_refresh_swaps_in_a_new_version(model_copy: Path) -> None:
    handler = LiteRTModelHandler(model_copy)
    assert handler.refresh(min_interval_s=0) is None
    manifest = json.loads(model_copy.read_text())
    manifest["version"] = "2.0.0"
    model_copy.write_text(json.dumps(manifest))
    info = handler.refresh(min_interval_s=0)
    assert info is not None and info.model_id == "pump_ae@2.0.0/int8" == handler.info.model_id


def test_swap_must_keep_the_input(model_copy: Path) -> None:
    handler = LiteRTModelHandler(model_copy)
    handler.load_model()
    manifest = json.loads(model_copy.read_text())
    manifest["features"][0] = manifest["normalization"]["names"][0] = "median"
    other = model_copy.with_name("other_manifest.json")
    other.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="a swap must keep the input"):
        handler.swap(other)
    assert handler.source == model_copy


def test_missing_runtime_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match=r"pip install 'edgeflow\[infer\]'"):
        LiteRTModelHandler(MANIFEST).load_model()


def test_update_whose_manifest_lands_before_its_model_file_is_picked_up_later(tmp_path: Path) -> None:
    import shutil
    import time

    folder = tmp_path / "m"
    shutil.copytree(MODEL_DIR, folder)
    handler = LiteRTModelHandler(folder / "manifest.json")
    old = handler.load_model().model_id
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["variants"]["int8"]["file"] = "new_model_int8.tflite"
    manifest["version"] = "1.0.1"
    time.sleep(0.02)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=r"new_model_int8\.tflite"):
        handler.refresh(0.0)
    assert handler.refresh(0.0) is None  # the same broken update is not retried over and over
    time.sleep(0.02)
    shutil.copy(folder / "model_int8.tflite", folder / "new_model_int8.tflite")
    info = handler.refresh(0.0)
    assert info is not None and info.version == "1.0.1" and info.model_id != old
