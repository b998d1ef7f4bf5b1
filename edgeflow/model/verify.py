"""Sign a model folder and verify one, without running it: what ``edgeflow model sign / verify`` do.

:func:`verify_model` checks everything a gateway checks before a version may run,
except loading it: the manifest's signature against trusted keys (and its
expiry), that every file it names lies inside the folder, exists, and has the
SHA-256 and size the manifest pins. :func:`sign_model` signs a folder whose files
match their manifest (``update_hashes=True`` first rewrites the pinned hashes
and sizes from the files).

>>> from edgeflow.model.signing import TrustedKeys
>>> checked = verify_model("models/pump_ae/manifest.json", TrustedKeys.load("models/keys"))
>>> checked.manifest.name, checked.signer.test_key, sorted(checked.files)
('pump_ae', True, ['model_float32.tflite', 'model_float32_pruned.tflite', 'model_int8.tflite'])
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeflow.model.errors import ModelLoadError
from edgeflow.model.manifest import Manifest, contained_path, read_manifest, sha256_of
from edgeflow.model.signing import (
    SignatureError,
    Signer,
    TrustedKeys,
    content_digest,
    load_private_key,
    sign_document,
    verify_document,
)

__all__ = ["VerifiedModel", "sign_model", "verify_model", "write_json_atomic"]


@dataclass(frozen=True)
class VerifiedModel:
    """A model folder that passed :func:`verify_model`."""

    path: Path
    """The manifest."""
    raw: dict[str, Any]
    manifest: Manifest
    signer: Signer | None
    digest: str
    """Content digest of the manifest (without its signature)."""
    files: dict[str, str]
    """Every file the manifest names, by name, with its SHA-256."""

    @property
    def model_id(self) -> str:
        """``name@version``."""
        return f"{self.manifest.name}@{self.manifest.version}"


def _check_files(path: Path, manifest: Manifest) -> dict[str, str]:
    files: dict[str, str] = {}
    for key, entry in manifest.variants.items():
        file = contained_path(path.parent, entry.file)
        if not file.is_file():
            msg = f"model file {str(file)!r} (variant {key!r}) named by {str(path)!r} does not exist"
            raise ModelLoadError(msg)
        digest = sha256_of(file)
        if digest != entry.sha256:
            msg = (
                f"model file {str(file)!r} (variant {key!r}) is damaged or was replaced: sha256 {digest[:12]}... "
                f"but the manifest pins {entry.sha256[:12]}..."
            )
            raise ModelLoadError(msg)
        size = file.stat().st_size
        if size != entry.bytes:
            msg = f"model file {str(file)!r} has {size} bytes but the manifest says {entry.bytes}"
            raise ModelLoadError(msg)
        files[entry.file] = digest
    return files


def verify_model(
    manifest_path: str | Path,
    trusted: TrustedKeys | None,
    *,
    now: datetime | None = None,
    check_expiry: bool = True,
) -> VerifiedModel:
    """Verify a model folder's signature (unless *trusted* is ``None``) and every file; raise :class:`ModelLoadError`.

    The signature error (:class:`~edgeflow.model.signing.SignatureError`) says whether the manifest is unsigned,
    signed by an untrusted key, changed after signing, or expired.
    """
    path = Path(manifest_path)
    if path.is_dir():
        path = path / "manifest.json"
    raw, manifest = read_manifest(path)
    signer = None
    if trusted is not None:
        try:
            signer = verify_document(raw, trusted, now=now, check_expiry=check_expiry)
        except SignatureError as exc:
            msg = f"model {str(path)!r} is refused: {exc}"
            raise SignatureError(msg) from None
    files = _check_files(path, manifest)
    return VerifiedModel(path, raw, manifest, signer, content_digest(raw), files)


def write_json_atomic(path: Path, document: Any, *, durable: bool = True) -> None:
    """Write JSON to *path* through a temporary file and a rename, so a reader never sees half a file.

    *durable* also flushes it to the disk before the rename (survives a power cut, costs milliseconds).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(document, indent=2) + "\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sign_model(
    manifest_path: str | Path,
    private_key: Any,
    *,
    key_name: str = "",
    expires: datetime | None = None,
    update_hashes: bool = False,
) -> VerifiedModel:
    """Sign the manifest of a model folder in place (replacing any old signature); return the folder as verified.

    *private_key* is a key object or the path of a ``.key`` file (its stem becomes *key_name* by default).
    Every file must match the manifest, unless *update_hashes* rewrites the pinned SHA-256 and sizes first.
    """
    path = Path(manifest_path)
    if path.is_dir():
        path = path / "manifest.json"
    if isinstance(private_key, (str, Path)):
        key_name = key_name or Path(private_key).stem
        private_key = load_private_key(private_key)
    raw, manifest = read_manifest(path)
    if update_hashes:
        for entry in raw.get("variants", {}).values():
            file = contained_path(path.parent, str(entry["file"]))
            if not file.is_file():
                msg = f"model file {str(file)!r} named by {str(path)!r} does not exist; cannot sign"
                raise ModelLoadError(msg)
            entry["sha256"], entry["bytes"] = sha256_of(file), file.stat().st_size
        manifest = Manifest.model_validate(raw)
    _check_files(path, manifest)
    signed = sign_document(raw, private_key, key_name=key_name, expires=expires)
    write_json_atomic(path, signed)
    return verify_model(path, TrustedKeys.of({key_name or "signer": private_key.public_key()}), check_expiry=False)
