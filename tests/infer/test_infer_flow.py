"""eo.infer inside running flows: the reference flow flags the injected faults, and model updates never crash it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.model import load_manifest
from edgeflow.model.verify import sign_model
from edgeflow.records import Window
from edgeflow.testing import Capture, run_capture
from flows.pump_int8 import add_features, make_flow

from .infer_support import MANIFEST, RECORDING, ROOT

KEY = ROOT / "models" / "keys" / "TEST-ONLY-ed25519.key"

FAULTS = {("pump-2", "08:00:20"), ("pump-3", "08:00:40"), ("pump-4", "08:00:50")}


def _flagged(capture: Capture) -> set[tuple[str, str]]:
    return {(s["sensor"], s["interval"][0][11:19]) for s in capture.outputs["summary_out"] if s["anomaly"]}


@pytest.mark.parametrize("variant", ["int8", "float32"])
def test_reference_flow_flags_exactly_the_injected_faults(variant: str) -> None:
    capture = run_capture(make_flow(variant=variant))
    assert _flagged(capture) == FAULTS  # and no healthy interval of any pump
    assert capture.dead_letters == []
    version = load_manifest(MANIFEST).version
    assert {s["model"] for s in capture.outputs["summary_out"]} == {f"pump_ae@{version}/{variant}"}
    counts = capture.report.stats.counts
    assert counts["infer.windows"] == capture.report.stats.windows > 1800
    assert counts["infer.batches"] <= counts["infer.windows"]


def _tampered_flow(manifest: Path, at_window: int, tamper: Any) -> Flow:
    """The reference flow with a step that changes the model files once, while windows are flowing."""
    seen = [0]

    def maybe_tamper(w: Window) -> Window:
        seen[0] += 1
        if seen[0] == at_window:
            tamper()
        return w

    flow = Flow("infer-swap")
    feats = eo.map("tamper", add_features(eo.replay("samples", flow, RECORDING)), maybe_tamper)
    scores = eo.infer("model", feats, model=manifest, reload_check_s=0)
    eo.summarize("summary", scores, every_s=10, sink=eo.stdout())
    return flow


def test_corrupt_model_swapped_in_at_run_time_does_not_crash_the_flow(model_copy: Path) -> None:
    model_id = f"pump_ae@{load_manifest(model_copy).version}/int8"
    damaged = model_copy.parent / "model_int8.tflite"
    capture = run_capture(_tampered_flow(model_copy, 700, lambda: damaged.write_bytes(b"\x00garbage" * 64)))
    assert len(capture.dead_letters) == 1  # one report per rejected file version, not one per window
    assert capture.dead_letters[0]["step"] == "model"
    assert capture.dead_letters[0]["reason"].startswith(f"model update rejected, still running {model_id}")
    assert "damaged or was replaced" in capture.dead_letters[0]["reason"]
    stats = capture.report.stats
    assert stats.counts["infer.windows"] == stats.windows  # every window was still scored, by the old model
    assert stats.counts["infer.swap_rejected"] == 1
    assert _flagged(capture) == FAULTS
    assert {s["model"] for s in capture.outputs["summary_out"]} == {model_id}


def test_new_signed_model_version_is_shadowed_then_swapped_in_at_run_time(model_copy: Path) -> None:
    old_id = f"pump_ae@{load_manifest(model_copy).version}/int8"

    def release() -> None:  # sign beside it, then rename over it: the watcher never sees half an update
        manifest = json.loads(model_copy.read_text())
        manifest["version"] = "2.0.0"
        staged = model_copy.with_name("manifest.next.json")
        staged.write_text(json.dumps(manifest))
        sign_model(staged, KEY)
        os.replace(staged, model_copy)

    capture = run_capture(_tampered_flow(model_copy, 500, release))
    models = [s["model"] for s in capture.outputs["summary_out"]]
    assert old_id in models and models[-1] == "pump_ae@2.0.0/int8"
    assert capture.report.stats.counts["infer.swaps"] == 1
    assert capture.dead_letters == []
    assert _flagged(capture) == FAULTS


def test_an_unsigned_edit_is_not_swapped_in(model_copy: Path) -> None:
    """Issue 9: a manifest edited by anyone who can write the folder (threshold 1e9) never scores a window."""

    def edit() -> None:
        manifest = json.loads(model_copy.read_text())
        manifest["threshold"] = manifest["variants"]["int8"]["threshold"] = 1e9
        model_copy.write_text(json.dumps(manifest))

    capture = run_capture(_tampered_flow(model_copy, 300, edit))
    assert [d["reason"] for d in capture.dead_letters] == [
        d["reason"] for d in capture.dead_letters if "the signature does not match the content" in d["reason"]
    ]
    assert len(capture.dead_letters) == 1
    assert capture.report.stats.counts["infer.swap_rejected"] == 1
    assert _flagged(capture) == FAULTS


def test_every_model_invoke_is_timed_for_the_metrics() -> None:
    import edgeflow.operators as eo
    from edgeflow import Flow
    from edgeflow.observe.exporter import exposition
    from edgeflow.testing import run_capture
    from operators.crest_factor import crest_factor

    flow = Flow("timed")
    s = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
    names = [
        "mean",
        "std",
        "min",
        "max",
        "rms",
        "ptp",
        "skew",
        "kurtosis",
        "p5",
        "p95",
        "fft_bands(0-50,50-150,150-250)",
    ]
    f = crest_factor("crest", eo.features("feat", eo.window("win", s, rate_hz=500, size=256, hop=64), names))
    eo.output("out", eo.infer("model", f, model="models/pump_ae/manifest.json"), eo.jsonl("out/timed.jsonl"))
    stats = run_capture(flow).report.stats
    invokes = stats.histograms["infer.invoke"]
    assert invokes.count == stats.counts["infer.batches"] > 0
    assert 'edgeflow_model_invoke_seconds_count{flow="timed",process="0"}' in exposition(stats, "timed")
