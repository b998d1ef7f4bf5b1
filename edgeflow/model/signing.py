"""Ed25519 signatures over model manifests (and OTA messages): keys, canonical JSON, sign and verify.

A manifest pins every file's SHA-256 and every setting that changes what a model
does (threshold, preprocessing, normalisation, feature names, variants); signing
the whole manifest therefore signs the model. The signature lives in the manifest
itself, in a ``signature`` block over the canonical JSON of everything else
(keys sorted, no spaces, UTF-8), so whitespace does not matter but any changed
value does. The block names the signing key (``key_id``: the first 16 hex digits
of the SHA-256 of its raw public bytes) and may carry an expiry time.

Keys are PEM files: ``NAME.key`` (PKCS#8, private: keep it off the gateway) and
``NAME.pub`` (SubjectPublicKeyInfo). A gateway trusts the ``*.pub`` files of a
folder (:class:`TrustedKeys`). A key whose file name contains ``TEST`` is a test
key: models it signed verify, but every check says so.

>>> private = generate_key()
>>> trusted = TrustedKeys.of({"ops": private.public_key()})
>>> signed = sign_document({"name": "m", "threshold": 0.5}, private, key_name="ops")
>>> verify_document(signed, trusted).key_name
'ops'
>>> signed["threshold"] = 1e9
>>> verify_document(signed, trusted)
Traceback (most recent call last):
...
edgeflow.model.signing.SignatureError: the signature does not match the content: ... was changed after it was signed ...
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeflow.model.errors import ModelLoadError

__all__ = [
    "MANIFEST_CONTEXT",
    "SignatureError",
    "Signer",
    "TrustedKeys",
    "canonical_json",
    "content_digest",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_document",
    "verify_document",
    "write_keypair",
]

MANIFEST_CONTEXT = "edgeflow-model-manifest-v1"
"""What a manifest signature is for; an OTA announcement uses another, so one can never pass for the other."""

_ALGORITHM = "ed25519"


class SignatureError(ModelLoadError):
    """A document is unsigned, signed by a key the gateway does not trust, changed after signing, or expired."""


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - cryptography is a core dependency
        msg = f"model signatures need the 'cryptography' package ({exc}); pip install cryptography"
        raise ImportError(msg) from None
    return ed25519


def canonical_json(document: Any) -> bytes:
    """Return the one byte form of a JSON document that is signed: sorted keys, no spaces, UTF-8, no NaN.

    >>> canonical_json({"b": 1.5, "a": [1, "x"]})
    b'{"a":[1,"x"],"b":1.5}'
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def content_digest(document: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a document's canonical JSON without its ``signature`` block: what it *is*, whoever signed it.

    >>> content_digest({"a": 1}) == content_digest({"a": 1, "signature": {"value": "x"}})
    True
    """
    body = {k: v for k, v in document.items() if k != "signature"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def generate_key() -> Any:
    """Make a new Ed25519 private key."""
    return _crypto().Ed25519PrivateKey.generate()


def _raw_public(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def key_id(public_key: Any) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key: how a signature names its key."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def write_keypair(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Make a key pair; write ``NAME.key`` (mode 0600) and ``NAME.pub`` into *folder*; refuse to overwrite.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     private, public = write_keypair(tmp, "ops")
    ...     (private.name, public.name, oct(private.stat().st_mode & 0o777))
    ('ops.key', 'ops.pub', '0o600')
    """
    from cryptography.hazmat.primitives import serialization

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            msg = f"key file {str(path)!r} exists already; pick another name or delete it first"
            raise FileExistsError(msg)
    key = generate_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def load_private_key(path: str | Path) -> Any:
    """Read an Ed25519 private key (PEM, PKCS#8, unencrypted)."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read private key {str(path)!r}: {exc}"
        raise SignatureError(msg) from None
    if not isinstance(key, _crypto().Ed25519PrivateKey):
        msg = f"key {str(path)!r} is a {type(key).__name__}, expected an Ed25519 private key (edgeflow model keygen)"
        raise SignatureError(msg)
    return key


def load_public_key(path: str | Path) -> Any:
    """Read an Ed25519 public key (PEM, SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        msg = f"cannot read public key {str(path)!r}: {exc}"
        raise SignatureError(msg) from None
    if not isinstance(key, _crypto().Ed25519PublicKey):
        msg = f"key {str(path)!r} is a {type(key).__name__}, expected an Ed25519 public key (edgeflow model keygen)"
        raise SignatureError(msg)
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a gateway accepts signatures from, by key id.

    >>> keys = TrustedKeys.load("models/keys")
    >>> [(k.name, k.test) for k in keys.keys.values()]
    [('TEST-ONLY-ed25519', True)]
    """

    keys: Mapping[str, _Key]
    source: str = "(in memory)"

    @classmethod
    def of(cls, named: Mapping[str, Any], source: str = "(in memory)") -> TrustedKeys:
        """Trust the given public keys, by name."""
        return cls({key_id(k): _Key(name, k, "TEST" in name.upper()) for name, k in named.items()}, source)

    @classmethod
    def load(cls, where: str | Path | list[str | Path] | tuple[str | Path, ...]) -> TrustedKeys:
        """Trust every ``*.pub`` in a folder, or the listed ``.pub`` files (at least one key)."""
        if isinstance(where, (list, tuple)):
            files, source = [Path(p) for p in where], ", ".join(str(p) for p in where)
        else:
            folder = Path(where)
            source = str(folder)
            if folder.is_file():
                files = [folder]
            elif folder.is_dir():
                files = sorted(folder.glob("*.pub"))
            else:
                msg = f"trusted keys {source!r} do not exist (looked from {Path.cwd()})"
                raise SignatureError(msg)
        if not files:
            msg = f"no trusted public key (*.pub) in {source!r}"
            raise SignatureError(msg)
        return cls.of({p.stem: load_public_key(p) for p in files}, source)

    def describe(self) -> str:
        """Key names and ids, for messages."""
        return ", ".join(f"{k.name} ({kid})" for kid, k in self.keys.items()) or "none"


@dataclass(frozen=True)
class _Key:
    name: str
    public_key: Any
    test: bool


@dataclass(frozen=True)
class Signer:
    """Who signed a verified document, and until when the signature holds."""

    key_id: str
    key_name: str
    test_key: bool
    signed_at: str | None
    expires: str | None


def _payload(document: Mapping[str, Any], context: str) -> bytes:
    body = dict(document)
    block = dict(body.get("signature") or {})
    block.pop("value", None)
    body["signature"] = block
    return context.encode() + b"\n" + canonical_json(body)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def sign_document(
    document: Mapping[str, Any],
    private_key: Any,
    *,
    key_name: str = "",
    expires: datetime | None = None,
    context: str = MANIFEST_CONTEXT,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Return a copy of *document* with a ``signature`` block (any old one is replaced).

    *expires* (timezone-aware) is when the signature stops being accepted for new installs.
    """
    if expires is not None and expires.tzinfo is None:
        msg = f"expires {expires!r} has no timezone; give an aware datetime, e.g. with tzinfo=timezone.utc"
        raise ValueError(msg)
    signed = copy.deepcopy({k: v for k, v in document.items() if k != "signature"})
    block: dict[str, Any] = {
        "algorithm": _ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "key_name": key_name,
        "signed_at": _iso(now or datetime.now(timezone.utc)),
        "expires": None if expires is None else _iso(expires),
    }
    signed["signature"] = block
    value = private_key.sign(_payload(signed, context))
    block["value"] = base64.b64encode(value).decode()
    return signed


def verify_document(
    document: Mapping[str, Any],
    trusted: TrustedKeys,
    *,
    context: str = MANIFEST_CONTEXT,
    now: datetime | None = None,
    check_expiry: bool = True,
) -> Signer:
    """Check *document*'s signature against *trusted*; return the signer or raise :class:`SignatureError` saying why."""
    block = document.get("signature")
    if not isinstance(block, Mapping) or not block.get("value"):
        msg = (
            "it is not signed (no signature block); sign it with `edgeflow model sign` and a key the gateway "
            f"trusts ({trusted.describe()})"
        )
        raise SignatureError(msg)
    if block.get("algorithm") != _ALGORITHM:
        msg = f"signature algorithm {block.get('algorithm')!r} is not supported (expected {_ALGORITHM!r})"
        raise SignatureError(msg)
    kid = str(block.get("key_id", ""))
    key = trusted.keys.get(kid)
    if key is None:
        msg = (
            f"it is signed by key {block.get('key_name') or '?'} ({kid}), which this gateway does not trust; "
            f"trusted: {trusted.describe()} from {trusted.source}"
        )
        raise SignatureError(msg)
    try:
        payload = _payload(document, context)
    except ValueError as exc:
        msg = f"it cannot be checked: {exc} (NaN and Infinity have no canonical JSON form)"
        raise SignatureError(msg) from None
    try:
        raw = base64.b64decode(str(block["value"]), validate=True)
        key.public_key.verify(raw, payload)
    except Exception:  # InvalidSignature, or a value that is not base64
        msg = (
            f"the signature does not match the content: it was changed after it was signed by {key.name} ({kid}) "
            "(a file hash, threshold or other setting edited)"
        )
        raise SignatureError(msg) from None
    expires = block.get("expires")
    if check_expiry and expires:
        try:
            until = datetime.fromisoformat(str(expires))
        except ValueError:
            msg = f"the signature's expiry {expires!r} is not an ISO 8601 time"
            raise SignatureError(msg) from None
        moment = now or datetime.now(timezone.utc)
        if until.tzinfo is None or moment >= until:
            msg = f"the signature expired at {expires} (now {_iso(moment)}); sign it again with a later --expires"
            raise SignatureError(msg)
    return Signer(kid, key.name, key.test, block.get("signed_at"), expires)
