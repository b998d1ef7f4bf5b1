"""Population stability index of model inputs against the manifest's training bins, on the real LiteRT runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.model import load_manifest
from edgeflow.model.psi import FLOOR, PsiBins, quantile_bins
from edgeflow.model.verify import sign_model
from edgeflow.observe.exporter import exposition
from edgeflow.testing import run_capture, write_csv_recording
from flows.pump_int8 import add_features

from .infer_support import MANIFEST, RECORDING, ROOT


def _flow(model: Any, recording: Path = RECORDING, **settings: Any) -> Flow:
    flow = Flow("infer-psi")
    scores = eo.infer("model", add_features(eo.replay("samples", flow, recording)), model=model, **settings)
    eo.summarize("summary", scores, every_s=10, sink=eo.stdout())
    return flow


def _offset(tmp_path: Path, offset: float) -> Path:
    lines = RECORDING.read_text().splitlines()
    rows = (line.split(",") for line in lines[1:])
    return write_csv_recording(tmp_path / "shifted.csv", ((r[0], r[1], float(r[2]) + offset) for r in rows), "accel")


def _psi(capture: Any) -> list[dict[str, Any]]:
    return [s["model_health"]["psi"] for s in capture.outputs["summary_out"] if "psi" in s.get("model_health", {})]


def test_the_manifest_stores_training_bins_for_every_feature() -> None:
    dist = load_manifest(MANIFEST).distribution
    assert dist is not None and dist.names == load_manifest(MANIFEST).features
    assert all(
        len(p) == len(e) + 1 and abs(sum(p) - 1.0) < 1e-9 for e, p in zip(dist.edges, dist.proportions, strict=True)
    )


def test_a_shifted_input_raises_the_psi_alarm_and_the_metric_shows_it(tmp_path: Path) -> None:
    normal = run_capture(_flow(str(MANIFEST), psi_alarm=4.0))
    model_id = normal.report.stats.models["model"]
    assert f"model.psi_alarms|{model_id}" not in normal.report.stats.counts
    # the shipped recording's four pumps are other units than the sixteen the model was trained on: their
    # features sit in a few of the training bins (PSI ~1.5-1.7), far from a shifted input's
    assert max(p["value"] for p in _psi(normal)) < 2.5
    shifted = run_capture(_flow(str(MANIFEST), _offset(tmp_path, 0.05), psi_alarm=4.0))  # +0.05 g on every sample
    stats = shifted.report.stats
    assert stats.counts[f"model.psi_alarms|{model_id}"] == 1  # raised once, held while the shift lasts
    last = shifted.outputs["summary_out"][-1]["model_health"]
    assert last["psi_alarm"] is True and last["psi"]["value"] > 4.0
    families = {f.name: f for f in text_string_to_metric_families(exposition(stats, "psi"))}
    values = {s.labels["feature"]: s.value for s in families["edgeflow_model_input_psi"].samples}
    assert len(values) == 14 and max(values.values()) > 4.0
    alarms = families["edgeflow_model_psi_alarms"].samples
    assert [s.value for s in alarms if s.name.endswith("_total")] == [1.0]


def test_an_older_manifest_without_bins_still_runs_and_has_no_psi(tmp_path: Path) -> None:
    folder = tmp_path / "pump_ae"
    shutil.copytree(MANIFEST.parent, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["distribution"]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_model(folder / "manifest.json", ROOT / "models" / "keys" / "TEST-ONLY-ed25519.key")
    capture = run_capture(_flow(str(folder / "manifest.json"), psi_alarm=0.25))
    assert capture.outputs["summary_out"] and not _psi(capture)
    assert not any(name.startswith("model.psi") for name in capture.report.stats.gauges)
    assert "drift" in capture.outputs["summary_out"][-1]["model_health"]  # drift still works


def test_psi_of_all_features_at_once_equals_the_definition_feature_by_feature() -> None:
    rng = np.random.default_rng(4)
    train = rng.normal(0.0, 1.0, (2_000, 5))
    train[:, 2] = np.round(train[:, 2])  # few distinct values: merged edges, fewer bins for this feature
    edges, props = quantile_bins(train, bins=10)
    recent = rng.normal(0.3, 1.5, (256, 5))
    for i, (e, q) in enumerate(zip(edges, props, strict=True)):
        counts = np.bincount(np.searchsorted(e, recent[:, i], side="right"), minlength=len(q))
        p, qq = np.maximum(counts / 256, FLOOR), np.maximum(q, FLOOR)
        expected = float(np.sum((p - qq) * np.log(p / qq)))
        assert PsiBins(edges, props).psi(recent)[i] == pytest.approx(expected, rel=1e-12, abs=1e-15)
