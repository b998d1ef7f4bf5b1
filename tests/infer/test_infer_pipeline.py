"""The model pipeline's promises: checked on the committed files with the runtime only, and rebuilt when TF is here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeflow.cli import app
from edgeflow.model import LiteRTModelHandler, load_manifest, sha256_of
from edgeflow.model.signing import TrustedKeys

from .infer_support import MANIFEST, MODEL_DIR, ROOT


def test_committed_files_match_their_manifest() -> None:
    manifest = load_manifest(MANIFEST)
    assert manifest.version.endswith(manifest.variants["int8"].sha256[:8])
    for variant in manifest.variants.values():
        path = MODEL_DIR / variant.file
        assert sha256_of(path) == variant.sha256
        assert path.stat().st_size == variant.bytes


def test_int8_is_at_most_a_quarter_of_float32_and_as_accurate() -> None:
    v = load_manifest(MANIFEST).variants
    assert v["int8"].bytes <= 0.25 * v["float32"].bytes
    assert v["int8"].metrics["f1"] >= v["float32"].metrics["f1"] - 0.01
    assert v["int8"].metrics["f1"] >= v["float32_pruned"].metrics["f1"] - 0.01


@pytest.mark.parametrize("variant", ["int8", "float32", "float32_pruned"])
def test_manifest_metrics_reproduce_on_the_held_out_recording(
    variant: str, recorded: Any, build_module: ModuleType
) -> None:
    """Re-score the held-out recording with the committed file: the manifest's numbers are what the runtime gets."""
    entry = load_manifest(MANIFEST).variants[variant]
    assert entry.threshold is not None
    scores = LiteRTModelHandler(MANIFEST, variant=variant).score(recorded.x)
    metrics = build_module._f1(scores, recorded.y, entry.threshold)
    for name in ("f1", "precision", "recall", "accuracy", "false_positives", "false_negatives"):
        assert metrics[name] == entry.metrics[name], name


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="the training extra (TensorFlow) is absent")
def test_pipeline_rebuilds_a_model_that_meets_its_targets(tmp_path: Path) -> None:
    """`edgeflow model build DIR` runs models/build.py end to end (~20 s) into DIR."""
    result = CliRunner().invoke(app, ["model", "build", str(tmp_path), "--script", str(ROOT / "models" / "build.py")])
    assert result.exit_code == 0, result.output
    path = tmp_path / "pump_ae" / "manifest.json"
    assert f"wrote {path}" in result.output
    manifest = load_manifest(path)
    assert manifest.model_extra is not None and manifest.model_extra["checks"]["passed"]
    v = manifest.variants
    assert v["int8"].bytes <= 0.25 * v["float32"].bytes
    assert v["int8"].metrics["f1"] >= v["float32"].metrics["f1"] - 0.01
    info = LiteRTModelHandler(path, trusted_keys=TrustedKeys.load(ROOT / "models" / "keys")).load_model()
    assert info.inputs[0].dtype == "int8" and info.outputs[0].dtype == "int8"
    assert info.signer is not None and info.signer.test_key  # the build signs what it writes
    assert "signed pump_ae@" in result.output and "a TEST key" in result.output
