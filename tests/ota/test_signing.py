"""Signed models: every tampering case is refused with its reason, and the running model keeps scoring."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgeflow.model import LiteRTModelHandler, ModelLoadError
from edgeflow.model.signing import SignatureError, TrustedKeys, generate_key
from edgeflow.model.verify import verify_model
from edgeflow.ota.store import ModelStore

from .ota_support import MODEL_DIR, feed, make_slot, release, trusted


def _refused(manifest: Path, match: str) -> None:
    """Refused by the offline check and by the runtime's loader, with the same reason."""
    with pytest.raises(ModelLoadError, match=match):
        verify_model(manifest, trusted())
    with pytest.raises(ModelLoadError, match=match):
        LiteRTModelHandler(manifest, trusted_keys=trusted()).load_model()


def test_the_shipped_model_verifies_with_the_test_key_and_says_it_is_a_test_key() -> None:
    checked = verify_model(MODEL_DIR / "manifest.json", trusted())
    assert checked.signer is not None and checked.signer.test_key
    assert checked.signer.key_name == "TEST-ONLY-ed25519"
    info = LiteRTModelHandler(MODEL_DIR / "manifest.json", trusted_keys=trusted()).load_model()
    assert info.signer == checked.signer and info.digest == checked.digest
    assert any("TEST KEY" in line for line in info.lines())


def test_unsigned_manifest_is_refused(tmp_path: Path) -> None:
    manifest = release(tmp_path / "m", "1.1.0")
    raw = json.loads(manifest.read_text())
    del raw["signature"]
    manifest.write_text(json.dumps(raw))
    _refused(manifest, "it is not signed")


def test_byte_flip_in_the_tflite_is_refused(tmp_path: Path) -> None:
    manifest = release(tmp_path / "m", "1.1.0")
    model = manifest.parent / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    _refused(manifest, r"model_int8.tflite'.* is damaged or was replaced: sha256")


def test_reweighted_model_with_a_recomputed_sha256_is_refused(tmp_path: Path) -> None:
    """The attacker flips weights and fixes the manifest's hash and size: the signature no longer matches."""
    manifest = release(tmp_path / "m", "1.1.0")
    model = manifest.parent / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    raw = json.loads(manifest.read_text())
    raw["variants"]["int8"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    manifest.write_text(json.dumps(raw, indent=2))
    _refused(manifest, "the signature does not match the content: it was changed after it was signed")


def test_threshold_raised_in_a_signed_manifest_is_refused(tmp_path: Path) -> None:
    manifest = release(tmp_path / "m", "1.1.0")
    raw = json.loads(manifest.read_text())
    raw["threshold"] = raw["variants"]["int8"]["threshold"] = 1e9
    manifest.write_text(json.dumps(raw, indent=2))
    _refused(manifest, "the signature does not match the content")


def test_whitespace_and_key_order_do_not_matter(tmp_path: Path) -> None:
    manifest = release(tmp_path / "m", "1.1.0")
    raw = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(dict(reversed(list(raw.items())))))  # other order, no indentation
    assert verify_model(manifest, trusted()).manifest.version == "1.1.0"


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.tflite"])
def test_a_signed_manifest_naming_a_file_outside_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    """Even correctly signed: nothing outside the model folder is ever read or hashed."""
    manifest = release(tmp_path / "m", "1.1.0")
    raw = json.loads(manifest.read_text())
    raw["variants"]["float32"]["file"] = name
    manifest.write_text(json.dumps(raw))
    _refused(manifest, r"(leads out of the model folder|is an absolute path)")


def test_a_symlink_leading_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    """The link's target has the right bytes and hash: it is refused for where it is, not for what it holds."""
    outside = tmp_path / "outside.tflite"
    outside.write_bytes((MODEL_DIR / "model_int8.tflite").read_bytes())
    manifest = release(tmp_path / "m", "1.1.0")
    (manifest.parent / "model_int8.tflite").unlink()
    os.symlink(outside, manifest.parent / "model_int8.tflite")
    _refused(manifest, "is a symbolic link to .*outside the model folder")


def test_a_model_signed_by_an_untrusted_key_is_refused(tmp_path: Path) -> None:
    manifest = release(tmp_path / "m", "1.1.0", key=generate_key())
    _refused(manifest, r"signed by key other \([0-9a-f]{16}\), which this gateway does not trust; trusted: TEST-ONLY")


def test_an_expired_signature_is_refused_for_new_installs(tmp_path: Path) -> None:
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    manifest = release(tmp_path / "m", "1.1.0", expires=past)
    _refused(manifest, "the signature expired at")
    assert verify_model(manifest, trusted(), check_expiry=False).manifest.version == "1.1.0"  # once accepted
    future = release(tmp_path / "n", "1.1.0", expires=datetime.now(timezone.utc) + timedelta(days=30))
    assert verify_model(future, trusted()).signer is not None


def _slot_with_update(tmp_path: Path, candidate: Path, recorded: Any, **kwargs: Any) -> tuple[Any, Any, list[Any]]:
    store = ModelStore(tmp_path / "store")
    slot, stats = make_slot(store=store, **kwargs)
    before = feed(slot, recorded.x[:64])
    store.submit({"kind": "candidate", "path": str(candidate)})  # as found, not installed: the slot must refuse it
    slot.poll_now()
    assert slot.flush()
    after = feed(slot, recorded.x[64:128], first=64)
    assert slot.flush()
    return slot, stats, before + after


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("threshold", "signature does not match"),
        ("flip", "damaged or was replaced"),
        ("untrusted", "does not trust"),
        ("downgrade", "is older than the running 1.0.0"),
    ],
)
def test_refused_update_leaves_the_running_model_scoring(tmp_path: Path, recorded: Any, case: str, match: str) -> None:
    """At run time (the gateway's slot on the real runtime): one rejection with the reason, no window lost."""
    if case == "downgrade":
        candidate = release(tmp_path / "cand", "0.9.0")
    elif case == "untrusted":
        candidate = release(tmp_path / "cand", "1.1.0", key=generate_key())
    else:
        candidate = release(tmp_path / "cand", "1.1.0")
        if case == "threshold":
            raw = json.loads(candidate.read_text())
            raw["threshold"] = raw["variants"]["int8"]["threshold"] = 1e9
            candidate.write_text(json.dumps(raw))
        else:
            model = candidate.parent / "model_int8.tflite"
            model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    slot, stats, rows = _slot_with_update(tmp_path, candidate, recorded)
    assert [r[0] for r in rows] == list(range(128))  # every window scored once
    assert {r[1] for r in rows} == {"pump_ae@1.0.0+5c8ff791/int8"}
    assert stats.counts.get("infer.swap_rejected") == 1 and "infer.swaps" not in stats.counts
    (event,) = [e for e in slot.history if e["event"] == "rejected"]
    assert event["reason"] and __import__("re").search(match, event["reason"])
    assert len(slot.notes) == 1 and slot.notes[0][0].startswith("model update rejected, still running pump_ae@1.0.0")
    store_events = [e["event"] for e in ModelStore(tmp_path / "store").events()[0]]
    assert store_events == ["rejected"]


def test_a_downgrade_is_accepted_when_explicitly_allowed(tmp_path: Path, recorded: Any) -> None:
    candidate = release(tmp_path / "cand", "0.9.0")
    slot, stats, _ = _slot_with_update(tmp_path, candidate, recorded, allow_downgrade=True)
    assert slot.state.phase == "serving" and slot.state.active.info.version == "0.9.0"
    assert stats.counts["infer.swaps"] == 1


def test_the_same_version_number_with_other_content_is_refused(tmp_path: Path, recorded: Any) -> None:
    def edit(raw: dict[str, Any]) -> None:
        raw["description"] = "same number, other content"

    candidate = release(tmp_path / "cand", "1.0.0+5c8ff791", edit=edit)
    slot, stats, _ = _slot_with_update(tmp_path, candidate, recorded)
    assert stats.counts["infer.swap_rejected"] == 1
    assert "already running with other content" in slot.history[-1]["reason"]


def test_signatures_are_checked_on_what_is_loaded_not_on_a_second_read(tmp_path: Path) -> None:
    """The manifest is read once: the bytes verified are the bytes whose hashes and settings are used."""
    manifest = release(tmp_path / "m", "1.1.0")
    info = LiteRTModelHandler(manifest, trusted_keys=trusted()).load_model()
    assert info.manifest is not None and info.manifest.signature is not None
    assert info.threshold == pytest.approx(json.loads(manifest.read_text())["threshold"])


def test_trusted_keys_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="do not exist"):
        TrustedKeys.load(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SignatureError, match=r"no trusted public key \(\*\.pub\)"):
        TrustedKeys.load(tmp_path / "empty")
