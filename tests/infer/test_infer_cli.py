"""The `edgeflow model` command group."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgeflow.cli import app
from edgeflow.model import load_manifest

from .infer_support import MANIFEST

runner = CliRunner()


def test_model_info_shows_tensors_quantization_and_metrics() -> None:
    result = runner.invoke(app, ["model", "info", str(MANIFEST)])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(MANIFEST)
    assert f"pump_ae@{manifest.version}/int8 " in result.output
    assert "signed by TEST-ONLY-ed25519" not in result.output  # info does not verify; `model verify` does
    assert "input  serving_default_x:0: int8 (-1, 14) scale=" in result.output
    assert "float32_pruned" in result.output and "f1=" in result.output


def test_model_info_of_a_float_variant() -> None:
    result = runner.invoke(app, ["model", "info", str(MANIFEST), "--variant", "float32"])
    assert result.exit_code == 0, result.output
    assert "/float32 " in result.output and "float32 (-1, 14)" in result.output


def test_model_info_refuses_a_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    result = runner.invoke(app, ["model", "info", str(bad)])
    assert result.exit_code == 3
    assert "not a valid TFLite model" in result.output


def test_model_build_without_a_pipeline_script(tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "build", "--script", str(tmp_path / "nope.py")])
    assert result.exit_code == 4
    assert "no model pipeline" in result.output


def test_model_build_runs_a_script_whose_dataclasses_need_their_module(tmp_path: Path) -> None:
    """Issue 9: the pipeline script must be in sys.modules while it runs (dataclasses look their module up)."""
    script = tmp_path / "build.py"
    script.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "@dataclass(frozen=True)\n"
        "class Report:\n"
        "    out: str\n"
        "def main(argv: list[str]) -> int:\n"
        "    print('built into', Report(argv[0]).out)\n"
        "    return 0\n"
    )
    result = runner.invoke(app, ["model", "build", str(tmp_path / "out"), "--script", str(script)])
    assert result.exit_code == 0, result.output
    assert f"built into {tmp_path / 'out'}" in result.output
