"""The MQTT update channel: topics, signed announcements and rollback orders, and model files in chunks.

Topics, under a prefix (default ``edgeflow/ota``)::

    PREFIX/gw/GATEWAY/control     commands for one gateway (retained, QoS 1)
    PREFIX/group/GROUP/control    commands for a group of gateways (retained, QoS 1)
    PREFIX/gw/GATEWAY/status      the gateway's latest state (retained): online, received, verified, shadowing,
                                  promoted, healthy, rejected (why), rolled_back (why)
    PREFIX/gw/GATEWAY/events      every state change, in order (QoS 1)
    PREFIX/blobs/SHA256/INDEX     a model file in chunks (retained): the broker is the file server

A command is a JSON document signed like a manifest but for another purpose
(:data:`ANNOUNCEMENT_CONTEXT`), so neither can pass for the other: ``deploy`` names
the version, the manifest's content digest and where its files are (chunks over
MQTT, or a folder the gateway can read); ``rollback`` names a version to leave.
Commands expire, and a gateway handles each rollout id once.

>>> from edgeflow.model.signing import TrustedKeys, generate_key
>>> key = generate_key()
>>> order = sign_command(rollback_order("r1", "1.1.0", "canary failed"), key, key_name="ops")
>>> verify_command(order, TrustedKeys.of({"ops": key.public_key()}))["kind"]
'rollback'
>>> gateway_topics("edgeflow/ota", "gw-7", "site-a")
('edgeflow/ota/gw/gw-7/control', 'edgeflow/ota/group/site-a/control')
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edgeflow.model.signing import SignatureError, TrustedKeys, sign_document, verify_document
from edgeflow.model.verify import VerifiedModel

__all__ = [
    "ANNOUNCEMENT_CONTEXT",
    "DEFAULT_PREFIX",
    "blob_topic",
    "deploy_announcement",
    "file_chunks",
    "gateway_topics",
    "publish_files",
    "rollback_order",
    "sign_command",
    "status_topic",
    "verify_command",
]

ANNOUNCEMENT_CONTEXT = "edgeflow-ota-command-v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_PREFIX = "edgeflow/ota"
DEFAULT_CHUNK_BYTES = 16_384


def gateway_topics(prefix: str, gateway: str, group: str | None) -> tuple[str, ...]:
    """Return the control topics a gateway subscribes to: its own and its group's."""
    own = f"{prefix}/gw/{gateway}/control"
    return (own, f"{prefix}/group/{group}/control") if group else (own,)


def status_topic(prefix: str, gateway: str, kind: str = "status") -> str:
    """``PREFIX/gw/GATEWAY/status`` (latest, retained) or ``.../events`` (every change)."""
    return f"{prefix}/gw/{gateway}/{kind}"


def blob_topic(prefix: str, sha256: str, index: int) -> str:
    """Where chunk *index* of the file with *sha256* is retained."""
    return f"{prefix}/blobs/{sha256}/{index}"


def file_chunks(content: bytes, chunk_bytes: int) -> list[bytes]:
    """*content* cut into chunks of *chunk_bytes* (one empty chunk for an empty file).

    >>> [len(c) for c in file_chunks(b"x" * 10, 4)]
    [4, 4, 2]
    """
    return [content[i : i + chunk_bytes] for i in range(0, len(content), chunk_bytes)] or [b""]


def publish_files(
    publish: Callable[[str, bytes], None], model: VerifiedModel, prefix: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> dict[str, Any]:
    """Publish the manifest and every file of *model* as retained chunks; return the announcement's ``source``.

    *publish(topic, payload)* sends one retained QoS 1 message.
    """
    files = []
    for name in (model.path.name, *model.files):
        content = (model.path.parent / name).read_bytes()
        sha = hashlib.sha256(content).hexdigest()
        chunks = file_chunks(content, chunk_bytes)
        for i, chunk in enumerate(chunks):
            publish(blob_topic(prefix, sha, i), chunk)
        files.append({"name": name, "sha256": sha, "bytes": len(content), "chunks": len(chunks)})
    return {"type": "mqtt", "chunk_bytes": chunk_bytes, "files": files}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def deploy_announcement(
    rollout: str,
    model: VerifiedModel,
    source: dict[str, Any],
    *,
    valid_for: timedelta = timedelta(days=1),
    allow_downgrade: bool = False,
) -> dict[str, Any]:
    """Make an unsigned ``deploy`` command for *model*, whose files are at *source* (see :func:`publish_files`)."""
    now = _now()
    return {
        "kind": "deploy",
        "rollout": rollout,
        "name": model.manifest.name,
        "version": model.manifest.version,
        "digest": model.digest,
        "source": source,
        "allow_downgrade": allow_downgrade,
        "issued_at": now.isoformat(timespec="seconds"),
        "valid_until": (now + valid_for).isoformat(timespec="seconds"),
    }


def rollback_order(
    rollout: str, version: str, reason: str, *, valid_for: timedelta = timedelta(days=1)
) -> dict[str, Any]:
    """Make an unsigned ``rollback`` command: leave *version* (roll back to the last good one, or drop it)."""
    now = _now()
    return {
        "kind": "rollback",
        "rollout": rollout,
        "version": version,
        "reason": reason,
        "issued_at": now.isoformat(timespec="seconds"),
        "valid_until": (now + valid_for).isoformat(timespec="seconds"),
    }


def sign_command(command: dict[str, Any], private_key: Any, *, key_name: str = "") -> dict[str, Any]:
    """Sign a command for gateways (another purpose than a manifest signature)."""
    return sign_document(command, private_key, key_name=key_name, context=ANNOUNCEMENT_CONTEXT)


def verify_command(command: dict[str, Any], trusted: TrustedKeys, *, now: datetime | None = None) -> dict[str, Any]:
    """Check a command's signature and validity; return it or raise :class:`SignatureError` saying why."""
    verify_document(command, trusted, context=ANNOUNCEMENT_CONTEXT, now=now)
    kind = command.get("kind")
    if kind not in ("deploy", "rollback"):
        msg = f"unknown command kind {kind!r} (expected deploy or rollback)"
        raise SignatureError(msg)
    until = command.get("valid_until")
    try:
        expired = until is None or datetime.fromisoformat(str(until)) <= (now or _now())
    except ValueError:
        expired = True
    if expired:
        msg = f"the {kind} command of rollout {command.get('rollout')!r} is no longer valid (valid until {until})"
        raise SignatureError(msg)
    if kind == "deploy":
        source = command.get("source") or {}
        if not _HEX64.match(str(command.get("digest", ""))):
            msg = f"the deploy command's digest {command.get('digest')!r} is not a SHA-256 (64 hex digits)"
            raise SignatureError(msg)
        if source.get("type") == "mqtt":
            if not isinstance(source.get("chunk_bytes"), int) or not 0 < source["chunk_bytes"] <= 1 << 20:
                msg = f"the deploy command's chunk size {source.get('chunk_bytes')!r} is not 1 byte to 1 MiB"
                raise SignatureError(msg)
            for entry in source.get("files", []):
                if not _HEX64.match(str(entry.get("sha256", ""))):
                    msg = f"the deploy command gives {entry.get('sha256')!r} as a file's SHA-256"
                    raise SignatureError(msg)
                name = str(entry.get("name", ""))
                if "/" in name or "\\" in name or name in ("", ".", ".."):
                    msg = f"the deploy command names file {name!r}; model files are plain names in one folder"
                    raise SignatureError(msg)
                if not (isinstance(entry.get("chunks"), int) and 0 < entry["chunks"] <= math.ceil(1e9 / 1024)):
                    msg = f"the deploy command gives {entry.get('chunks')!r} chunks for {name!r}"
                    raise SignatureError(msg)
        elif source.get("type") != "dir":
            msg = f"the deploy command's source type {source.get('type')!r} is not mqtt or dir"
            raise SignatureError(msg)
    return command


def source_dir(command: dict[str, Any]) -> Path:
    """Return the folder a ``dir`` deploy command points at."""
    return Path(str(command["source"]["path"]))
