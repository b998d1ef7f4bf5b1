"""The gateway's update agent: takes signed commands over MQTT, fetches and verifies versions, reports their state.

It runs beside the flow (``edgeflow model agent``, or in a thread) and talks to it
only through the model store (:mod:`edgeflow.ota.store`): a verified version is
installed and offered there, and whatever the flow then does with it (shadowing,
promoted, healthy, rejected, rolled_back) is read back from the store's events and
published on the gateway's status topic. See :mod:`edgeflow.ota.channel` for topics
and commands.

The transfer is resumable: chunks are kept on disk as they arrive, at most
``window`` are asked for at a time, and after a reconnect (or a restart of the
agent) only the missing ones are fetched. A version is installed only when every
file matches the SHA-256 the signed command names and the model folder verifies.

All work happens in :meth:`GatewayAgent.step`, called by one thread (:meth:`run`,
or a driver shared by many simulated gateways); paho's network thread only queues
commands and writes chunks.

>>> settings = AgentSettings(gateway="gw-1", group="site-a", store="var/store")
>>> settings.prefix, settings.window, str(settings.trusted_keys)
('edgeflow/ota', 8, 'models/keys')
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from edgeflow.jsontext import dumps as json_dumps
from edgeflow.model.errors import ModelLoadError
from edgeflow.model.signing import SignatureError, TrustedKeys
from edgeflow.model.verify import write_json_atomic
from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client
from edgeflow.ota.channel import DEFAULT_PREFIX, blob_topic, gateway_topics, source_dir, status_topic, verify_command
from edgeflow.ota.store import ModelStore, now_iso

__all__ = ["AgentSettings", "GatewayAgent"]

_NAME = r"^[A-Za-z0-9_.-]+$"


class AgentSettings(BaseModel):
    """Who the gateway is, where its store is, which broker and keys to use, and how to fetch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gateway: str = Field(pattern=_NAME)
    group: str | None = Field(default=None, pattern=_NAME)
    store: Path
    broker: BrokerConfig = BrokerConfig()
    trusted_keys: Path | tuple[Path, ...] = Path("models/keys")
    prefix: str = DEFAULT_PREFIX
    window: PositiveInt = 8
    """Chunks asked for at a time."""
    transfer_timeout_s: PositiveFloat = 300.0
    """Give up a transfer (keeping its chunks for the next attempt) after this long."""
    durable: bool = True
    """Flush the store's and the agent's files to the disk on every change (off only for simulated fleets)."""


@dataclass
class _Transfer:
    command: dict[str, Any]
    folder: Path
    started: float
    inflight: set[tuple[str, int]] = field(default_factory=set)
    damaged: int = 0
    have: set[tuple[str, int]] = field(default_factory=set)
    """Chunks on disk (read from the folder once, then kept up to date)."""

    def __post_init__(self) -> None:
        self.order = [(f["sha256"], i) for f in self.files for i in range(int(f["chunks"]))]
        self.wanted = set(self.order)
        self.have = {m for m in self.order if self.chunk(*m).exists()}

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.command["source"]["files"])

    def chunk(self, sha: str, index: int) -> Path:
        return self.folder / "chunks" / f"{sha}.{index:05d}"

    def missing(self) -> list[tuple[str, int]]:
        return [m for m in self.order if m not in self.have]

    def forget(self, sha: str) -> None:
        """Drop a file's chunks (it arrived damaged)."""
        for m in [m for m in self.have if m[0] == sha]:
            self.chunk(*m).unlink(missing_ok=True)
            self.have.discard(m)


class GatewayAgent:
    """See the module docstring."""

    def __init__(self, settings: AgentSettings, *, trusted: TrustedKeys | None = None) -> None:
        self.settings = settings
        self.store = ModelStore(settings.store, durable=settings.durable)
        self.trusted = trusted if trusted is not None else TrustedKeys.load(
            list(settings.trusted_keys) if isinstance(settings.trusted_keys, tuple) else settings.trusted_keys
        )  # fmt: skip
        self.counts: collections.Counter[str] = collections.Counter()
        """chunks, chunks_again (fetched twice), commands, rejected, reconnects."""
        self.published: list[dict[str, Any]] = []
        """Every status this agent published, in order."""
        self._commands: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        self._transfer: _Transfer | None = None
        self._connected = False
        self._ever_connected = False
        self._client: Any = None
        self._state_path = self.store.root / "agent.json"
        saved = _read(self._state_path)
        self._handled: list[str] = list(saved.get("handled", []))
        self._offset = int(saved.get("events_offset", self.store.events()[1]))
        if saved.get("transfer"):
            self._begin_transfer(saved["transfer"], resumed=True)

    # -- MQTT

    def start(self) -> None:
        """Connect (in paho's network thread; it reconnects with backoff until :meth:`stop`)."""
        cfg = self.settings.broker
        client = make_client(cfg, f"edgeflow-agent-{self.settings.gateway}")
        offline = {"gateway": self.settings.gateway, "group": self.settings.group, "state": "offline"}
        client.will_set(status_topic(self.settings.prefix, self.settings.gateway), json.dumps(offline), 1, True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        connect_async(client, cfg)

    def stop(self) -> None:
        """Disconnect; the store, the agent's state and received chunks stay for the next start."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def partition(self) -> None:
        """Drop the connection without a goodbye, as a network failure would (paho reconnects by itself)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.socket().close()

    @property
    def connected(self) -> bool:
        """Whether the agent is connected to its broker now."""
        return self._connected

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            return
        topics = [
            (topic, 1) for topic in gateway_topics(self.settings.prefix, self.settings.gateway, self.settings.group)
        ]
        with self._lock:
            transfer = self._transfer
            topics += [
                (blob_topic(self.settings.prefix, sha, i), 1) for sha, i in (transfer.inflight if transfer else ())
            ]
        client.subscribe(topics)
        if self._ever_connected:
            self.counts["reconnects"] += 1
        self._connected = True
        if not self._ever_connected:
            self._ever_connected = True
            self._status("online")

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected = False

    def _on_message(self, client: Any, _userdata: Any, message: Any) -> None:
        topic, payload = message.topic, bytes(message.payload)
        blobs = f"{self.settings.prefix}/blobs/"
        if not topic.startswith(blobs):
            self._commands.append(payload)
            return
        sha, _, index = topic[len(blobs) :].partition("/")
        with self._lock:
            transfer = self._transfer
            if transfer is None or not index.isdigit() or (sha, int(index)) not in transfer.wanted:
                return
            key = (sha, int(index))
            if len(payload) > int(transfer.command["source"]["chunk_bytes"]):
                self.counts["chunks_refused"] += 1  # larger than the signed command allows: never written to disk
                return
            transfer.inflight.discard(key)
            if key in transfer.have:
                self.counts["chunks_again"] += 1
            else:
                path = transfer.chunk(*key)
                tmp = path.with_suffix(".part")
                tmp.write_bytes(payload)
                os.replace(tmp, path)
                transfer.have.add(key)
                self.counts["chunks"] += 1
        client.unsubscribe(topic)

    # -- the work

    def run(self, stop: threading.Event, tick_s: float = 0.05) -> None:
        """Call :meth:`step` every *tick_s* until *stop* is set."""
        while not stop.wait(tick_s):
            self.step()

    def step(self) -> None:
        """Handle queued commands, advance the transfer, publish what the flow did since the last step."""
        while self._commands:
            self._command(self._commands.popleft())
        if self._transfer is not None:
            self._advance(self._transfer)
        self._relay()

    def _command(self, payload: bytes) -> None:
        try:
            command = json.loads(payload)
            if not isinstance(command, dict):
                msg = "a command is a JSON object"
                raise ValueError(msg)
        except ValueError as exc:
            self._reject(None, f"unreadable command: {exc}")
            return
        rollout = str(command.get("rollout", ""))
        if rollout and rollout in self._handled:
            return  # a retained command seen before (after a reconnect or restart)
        try:
            verify_command(command, self.trusted)
        except SignatureError as exc:
            self._reject(command, f"command refused: {exc}")
            self._done(rollout)
            return
        self.counts["commands"] += 1
        if command["kind"] == "rollback":
            self._status("received", command, reason=str(command.get("reason", "")))
            transfer = self._transfer
            if transfer is not None and transfer.command.get("version") == command.get("version"):
                with self._lock:
                    self._transfer = None
                self._reject(transfer.command, f"transfer dropped: rollback ordered ({command.get('reason')})")
                self._done(str(transfer.command.get("rollout", "")))
            self.store.request_rollback(str(command["version"]), str(command.get("reason", "")), origin="mqtt",
                                        rollout=rollout)  # fmt: skip
            self._done(rollout)
            return
        rejected = self.store.rejected()
        if command.get("digest") in rejected:
            self._reject(command, f"this version was refused before ({rejected[command['digest']]})")
            self._done(rollout)
            return
        self._status("received", command)
        if command["source"]["type"] == "dir":
            self._install(command, source_dir(command))
            return
        self._begin_transfer(command)

    def _begin_transfer(self, command: dict[str, Any], resumed: bool = False) -> None:
        folder = self.store.root / "downloads" / str(command["digest"])[:32]
        (folder / "chunks").mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._transfer = _Transfer(command, folder, time.monotonic())
        self._save()
        if resumed:
            self._status("received", command, reason="transfer resumed after a restart")

    def _advance(self, transfer: _Transfer) -> None:
        missing = transfer.missing()
        if not missing:
            self._assemble(transfer)
            return
        if time.monotonic() - transfer.started > self.settings.transfer_timeout_s:
            have = len(transfer.wanted) - len(missing)
            with self._lock:
                self._transfer = None
            self._save()
            self._reject(transfer.command, f"transfer incomplete after {self.settings.transfer_timeout_s:g} s "
                         f"({have} of {have + len(missing)} chunks; kept for the next attempt)")  # fmt: skip
            return
        if not self._connected or self._client is None:
            return
        with self._lock:
            room = self.settings.window - len(transfer.inflight)
            # checked again under the lock: a chunk may have landed since `missing` was computed
            ask = [m for m in missing if m not in transfer.inflight and m not in transfer.have][: max(room, 0)]
            transfer.inflight.update(ask)
        if ask:
            self._client.subscribe([(blob_topic(self.settings.prefix, sha, i), 1) for sha, i in ask])

    def _assemble(self, transfer: _Transfer) -> None:
        model = transfer.folder / "model"
        shutil.rmtree(model, ignore_errors=True)
        model.mkdir(parents=True)
        for entry in transfer.files:
            content = b"".join(transfer.chunk(entry["sha256"], i).read_bytes() for i in range(int(entry["chunks"])))
            if hashlib.sha256(content).hexdigest() != entry["sha256"] or len(content) != entry["bytes"]:
                with self._lock:
                    transfer.forget(entry["sha256"])
                transfer.damaged += 1
                if transfer.damaged >= 3:
                    with self._lock:
                        self._transfer = None
                    self._save()
                    self._reject(transfer.command, f"{entry['name']} arrived damaged {transfer.damaged} times "
                                 "(its SHA-256 differs from the signed command's)")  # fmt: skip
                    self._done(str(transfer.command.get("rollout", "")))
                    return
                self._status("received", transfer.command, reason=f"{entry['name']} arrived damaged; fetching again")
                return
            (model / entry["name"]).write_bytes(content)
        with self._lock:
            self._transfer = None
        self._install(transfer.command, model)
        shutil.rmtree(transfer.folder, ignore_errors=True)

    def _install(self, command: dict[str, Any], folder: Path) -> None:
        rollout = str(command.get("rollout", ""))
        try:
            installed = self.store.install(folder, self.trusted)
            if installed.digest != command.get("digest"):
                msg = (
                    f"the files are version {installed.model_id} with digest {installed.digest[:12]}..., not the "
                    f"{str(command.get('digest'))[:12]}... the command names"
                )
                raise ModelLoadError(msg)
        except (ModelLoadError, OSError) as exc:
            self._reject(command, str(exc))
            self._done(rollout)
            return
        signer = installed.signer
        self._status("verified", command, reason=f"signed by {signer.key_name}" if signer else "")
        self.store.offer(installed, origin="mqtt", rollout=rollout or None)
        self._done(rollout)

    def _relay(self) -> None:
        events, offset = self.store.events(self._offset)
        if offset == self._offset:
            return
        self._offset = offset
        for event in events:
            if event.get("origin") != "flow":
                continue
            self._status(
                str(event["event"]),
                {"rollout": event.get("rollout"), "version": event.get("version")},
                model=event.get("model"),
                reason=event.get("reason"),
                figures=event.get("figures"),
            )
        self._save()

    # -- reporting, state

    def _reject(self, command: dict[str, Any] | None, reason: str) -> None:
        self.counts["rejected"] += 1
        self._status("rejected", command, reason=reason)

    def _status(self, state: str, command: dict[str, Any] | None = None, **fields: Any) -> None:
        active = (self.store.state().get("active") or {}).get("model")
        record = {
            "gateway": self.settings.gateway,
            "group": self.settings.group,
            "state": state,
            "rollout": (command or {}).get("rollout"),
            "version": (command or {}).get("version"),
            "active": active,
            "at": now_iso(),
            **{k: v for k, v in fields.items() if v not in (None, "", {})},
        }
        transfer = self._transfer
        if transfer is not None and state in ("received", "rejected"):
            record["chunks"] = {"total": len(transfer.wanted), "missing": len(transfer.missing())}
        self.published.append(record)
        client = self._client
        if client is not None:
            payload = json_dumps(record)
            client.publish(status_topic(self.settings.prefix, self.settings.gateway), payload, qos=1, retain=True)
            client.publish(status_topic(self.settings.prefix, self.settings.gateway, "events"), payload, qos=1)

    def _done(self, rollout: str) -> None:
        if rollout and rollout not in self._handled:
            self._handled = [*self._handled[-99:], rollout]
        self._save()

    def _save(self) -> None:
        transfer = self._transfer
        write_json_atomic(
            self._state_path,
            durable=self.settings.durable,
            document={
                "handled": self._handled,
                "events_offset": self._offset,
                "transfer": transfer.command if transfer is not None else None,
            },
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
