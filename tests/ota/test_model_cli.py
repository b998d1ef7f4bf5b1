"""`edgeflow model keygen / sign / verify / deploy / rollback / status`, end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from edgeflow.cli import app
from edgeflow.ota.store import ModelStore

from .ota_support import KEYS, MODEL_DIR, TEST_KEY, release

runner = CliRunner()


def test_keygen_sign_verify_round_trip(tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "keygen", "ops", "--out", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    assert "never on a gateway" in result.output
    assert (tmp_path / "keys" / "ops.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["model", "keygen", "ops", "--out", str(tmp_path / "keys")])
    assert again.exit_code == 1 and "exists already" in again.output

    folder = tmp_path / "pump_ae"
    shutil.copytree(MODEL_DIR, folder)
    signed = runner.invoke(app, ["model", "sign", str(folder), "--key", str(tmp_path / "keys/ops.key"),
                                 "--expires", "30d"])  # fmt: skip
    assert signed.exit_code == 0, signed.output
    assert "signed pump_ae@1.0.0+5c8ff791" in signed.output and "with ops (" in signed.output
    assert "expires 20" in signed.output

    # only the new key is trusted: the folder verifies, the shipped (TEST-signed) model does not
    keys = ["--trusted-keys", str(tmp_path / "keys")]
    ok = runner.invoke(app, ["model", "verify", str(folder / "manifest.json"), *keys])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("ok pump_ae@1.0.0+5c8ff791: signed by ops") and "3 files match" in ok.output
    refused = runner.invoke(app, ["model", "verify", str(MODEL_DIR), *keys])
    assert refused.exit_code == 3
    assert "refused" in refused.output and "which this gateway does not trust" in refused.output


def test_verify_names_the_tampering(tmp_path: Path) -> None:
    manifest = release(tmp_path / "m", "1.1.0")
    raw = json.loads(manifest.read_text())
    raw["threshold"] = 1e9
    manifest.write_text(json.dumps(raw))
    result = runner.invoke(app, ["model", "verify", str(manifest), "--trusted-keys", str(KEYS)])
    assert result.exit_code == 3
    assert "the signature does not match the content" in result.output


def test_verify_warns_about_the_test_key() -> None:
    result = runner.invoke(app, ["model", "verify", str(MODEL_DIR)])
    assert result.exit_code == 0, result.output
    assert "TEST key whose private half is in the repository" in result.output


def test_sign_refuses_files_that_do_not_match_unless_told_to_rehash(tmp_path: Path) -> None:
    folder = tmp_path / "pump_ae"
    shutil.copytree(MODEL_DIR, folder)
    (folder / "model_float32.tflite").write_bytes((folder / "model_float32.tflite").read_bytes() + b"\0")
    result = runner.invoke(app, ["model", "sign", str(folder), "--key", str(TEST_KEY)])
    assert result.exit_code == 3 and "damaged or was replaced" in result.output
    result = runner.invoke(app, ["model", "sign", str(folder), "--key", str(TEST_KEY), "--update-hashes"])
    assert result.exit_code == 0, result.output


def test_deploy_installs_a_verified_copy_and_refuses_a_tampered_one(tmp_path: Path) -> None:
    store = tmp_path / "store"
    good = release(tmp_path / "good", "1.1.0")
    result = runner.invoke(app, ["model", "deploy", str(good.parent), "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "installed pump_ae@1.1.0 into" in result.output and "request #1" in result.output
    inbox = ModelStore(store).inbox()
    assert inbox is not None and inbox["kind"] == "candidate" and inbox["version"] == "1.1.0"
    assert Path(inbox["path"]).parent == (store / "versions" / "pump_ae@1.1.0").resolve()

    bad = release(tmp_path / "bad", "1.2.0")
    (bad.parent / "model_int8.tflite").write_bytes(b"\0" * 64)
    result = runner.invoke(app, ["model", "deploy", str(bad.parent), "--store", str(store)])
    assert result.exit_code == 3 and "damaged or was replaced" in result.output
    assert not (store / "versions" / "pump_ae@1.2.0").exists()
    assert ModelStore(store).inbox()["seq"] == 1  # type: ignore[index]

    rolled = runner.invoke(app, ["model", "rollback", "1.1.0", "--store", str(store), "--reason", "bad vibes"])
    assert rolled.exit_code == 0 and "rollback of 1.1.0 requested (#2)" in rolled.output
    status = runner.invoke(app, ["model", "status", "--store", str(store)])
    assert status.exit_code == 0 and "inbox      #2 rollback 1.1.0" in status.output
