"""The model store on a gateway: installed versions, what the flow runs, what it refused, and requests to it.

One folder, shared by whoever brings updates (``edgeflow model deploy``, the MQTT
agent) and the flow that runs them; each file has one writer, and every write is
a whole-file replace or a one-line append, so readers never see half of one::

    STORE/versions/NAME@VERSION/   installed versions (manifest + files), verified before and after the copy
    STORE/inbox.json               requests in order: candidates to try, rollbacks (written by deploy/agent)
    STORE/state.json               active and last good versions, refused digests, requests handled (by the flow)
    STORE/events.jsonl             what happened: shadowing, promoted, rejected, rolled_back, healthy...

A restart reads ``state.json``: the flow comes back on the active version (or the
last good one, or the flow's own model), never on a refused one.

>>> import tempfile
>>> from edgeflow.model.signing import TrustedKeys
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = ModelStore(tmp)
...     installed = store.install("models/pump_ae", TrustedKeys.load("models/keys"))
...     seq = store.offer(installed)
...     (installed.path.parent.name, seq, store.inbox()["kind"])
('pump_ae@1.0.0+5c8ff791', 1, 'candidate')
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeflow.jsontext import dumps as json_dumps
from edgeflow.model.errors import ModelLoadError
from edgeflow.model.signing import TrustedKeys
from edgeflow.model.verify import VerifiedModel, verify_model, write_json_atomic

__all__ = ["ModelStore", "now_iso"]


def now_iso() -> str:
    """Return the time now, ISO 8601 UTC, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ModelStore:
    """A gateway's model store folder (see the module docstring)."""

    def __init__(self, root: str | Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        """Flush every state and request file to the disk (``False`` only for simulations sharing one disk)."""
        self.versions = self.root / "versions"
        self.inbox_path = self.root / "inbox.json"
        self.state_path = self.root / "state.json"
        self.events_path = self.root / "events.jsonl"
        self._lock = threading.Lock()
        self._inbox_cache: tuple[tuple[int, int, int], list[dict[str, Any]]] | None = None

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # -- installing (deploy, agent)

    def install(self, source: str | Path, trusted: TrustedKeys | None, *, now: datetime | None = None) -> VerifiedModel:
        """Verify the model folder *source*, copy it into ``versions/`` and verify the copy; return the copy.

        Only the manifest and the files it names are copied. A version already installed with the same content is
        reused; the same version with other content is refused.
        """
        checked = verify_model(source, trusted, now=now)
        target = self.versions / checked.model_id
        if target.exists():
            existing = verify_model(target, trusted, check_expiry=False)
            if existing.digest != checked.digest:
                msg = (
                    f"version {checked.model_id} is installed already with other content (digest "
                    f"{existing.digest[:12]}... vs {checked.digest[:12]}...); give every change a new version number"
                )
                raise ModelLoadError(msg)
            return existing
        self.versions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{checked.model_id}.", dir=self.versions))
        try:
            for name in (checked.path.name, *checked.files):
                shutil.copyfile(checked.path.parent / name, tmp / name)
            copied = verify_model(tmp / checked.path.name, trusted, now=now)
            if copied.digest != checked.digest:
                msg = f"model {str(source)!r} changed while it was copied; install it again"
                raise ModelLoadError(msg)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return verify_model(target, trusted, now=now)

    def submit(self, request: dict[str, Any]) -> int:
        """Append a request for the flow (numbered in order; the newest 32 are kept); return its number.

        Requests queue up, so one written between two polls of the flow is never lost. Writers in other processes
        (``edgeflow model deploy`` beside the agent) are serialised with a lock file.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock, _file_lock(self.root / "inbox.lock"):
            requests = self._requests_on_disk()
            seq = int(requests[-1]["seq"]) + 1 if requests else 1
            requests = [*requests[-31:], {**request, "seq": seq, "at": now_iso()}]
            write_json_atomic(self.inbox_path, {"requests": requests}, durable=self.durable)
        return seq

    def offer(self, installed: VerifiedModel, *, origin: str = "deploy", rollout: str | None = None) -> int:
        """Ask the flow to try *installed* (shadow, then promote); return the request's number."""
        return self.submit(
            {
                "kind": "candidate",
                "path": str(installed.path.resolve()),
                "version": installed.manifest.version,
                "model": installed.model_id,
                "digest": installed.digest,
                "origin": origin,
                "rollout": rollout,
            }
        )

    def request_rollback(self, version: str, reason: str, *, origin: str = "deploy", rollout: str | None = None) -> int:
        """Ask the flow to leave *version* (roll back if it runs it, drop it if a candidate); return the number."""
        return self.submit(
            {"kind": "rollback", "version": version, "reason": reason, "origin": origin, "rollout": rollout}
        )

    def _requests_on_disk(self) -> list[dict[str, Any]]:
        value = _read_json(self.inbox_path) or {}
        requests = value.get("requests", [])
        return [r for r in requests if isinstance(r, dict)] if isinstance(requests, list) else []

    def requests(self, after: int = 0) -> list[dict[str, Any]]:
        """Return the requests numbered above *after*, oldest first (re-read only when the file changed)."""
        try:
            st = self.inbox_path.stat()
        except FileNotFoundError:
            return []
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._inbox_cache
        if cached is None or cached[0] != stamp:
            cached = (stamp, self._requests_on_disk())
            self._inbox_cache = cached
        return [r for r in cached[1] if int(r.get("seq", 0)) > after]

    def inbox(self) -> dict[str, Any] | None:
        """Return the newest request, or ``None``."""
        pending = self.requests()
        return pending[-1] if pending else None

    # -- running (the flow)

    def state(self) -> dict[str, Any]:
        """Return what the flow last recorded: ``active``, ``last_good``, ``phase``, ``rejected``, ``seq``."""
        return _read_json(self.state_path) or {}

    def save_state(self, state: dict[str, Any]) -> None:
        """Replace ``state.json``."""
        write_json_atomic(self.state_path, state, durable=self.durable)

    def rejected(self) -> dict[str, str]:
        """Refused versions: content digest -> why."""
        return dict(self.state().get("rejected", {}))

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event to ``events.jsonl``; return it."""
        record = {"at": now_iso(), "event": kind, **fields}
        line = json_dumps(record) + "\n"
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return record

    def events(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Events from byte *offset* on (whole lines only) and the offset after them."""
        try:
            if self.events_path.stat().st_size <= offset:
                return [], offset
        except FileNotFoundError:
            return [], offset
        try:
            with self.events_path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        out = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        return out, offset + end


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock between processes (POSIX ``flock``; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"store file {str(path)!r} cannot be read: {exc}"
        raise ModelLoadError(msg) from None
    return value if isinstance(value, dict) else None
