"""The rollout controller: takes a signed version to a fleet in stages, watching the gateways' own reports.

A small control-plane process beside the broker (``edgeflow fleet rollout``). It
learns the fleet from the gateways' retained status messages, publishes the
version's files as retained chunks, and sends signed ``deploy`` commands stage by
stage (a canary of 5-10 %, then more): a stage passes when every gateway in it
reports ``healthy`` (the version passed the shadow gates, was promoted and stayed
healthy for its watch period) and at most ``max_failures`` reported ``rejected`` or
``rolled_back`` or stayed silent. A failed stage aborts the rollout: a signed
``rollback`` order goes to every gateway that was sent the version (and its group),
and no further gateway is sent it.

>>> plan = RolloutPlan(stages=(0.05, 0.25, 1.0))
>>> [plan.stage_sizes(200)[i] for i in range(3)]
[10, 50, 200]
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, field_validator

from edgeflow.model.signing import load_private_key
from edgeflow.model.verify import VerifiedModel, verify_model
from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix
from edgeflow.ota.channel import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_PREFIX,
    blob_topic,
    deploy_announcement,
    publish_files,
    rollback_order,
    sign_command,
)

__all__ = ["RolloutController", "RolloutPlan", "RolloutReport"]

_DONE_OK = {"healthy"}
_DONE_BAD = {"rejected", "rolled_back"}


class RolloutPlan(BaseModel):
    """How a rollout proceeds: stage sizes (cumulative fractions of the targeted gateways) and gates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stages: tuple[float, ...] = (0.05, 0.25, 1.0)
    """Cumulative share of the gateways that has the version after each stage; the last must be 1."""
    group: str | None = None
    """Only gateways of this group (``None``: all that reported a status)."""
    max_failures: NonNegativeInt = 0
    """Gateways of one stage that may reject the version, roll it back or stay silent before the rollout aborts."""
    stage_timeout_s: PositiveFloat = 600.0
    """A gateway that has not reported healthy (or a failure) this long after its command counts as failed."""
    chunk_bytes: int = Field(default=DEFAULT_CHUNK_BYTES, ge=256, le=256 * 1024)

    @field_validator("stages")
    @classmethod
    def _increasing(cls, stages: tuple[float, ...]) -> tuple[float, ...]:
        if not stages or any(not 0 < s <= 1 for s in stages) or list(stages) != sorted(stages) or stages[-1] != 1:
            msg = f"stages {stages} must increase within (0, 1] and end at 1, e.g. (0.05, 0.25, 1.0)"
            raise ValueError(msg)
        return stages

    def stage_sizes(self, n: int) -> list[int]:
        """Gateways that have the version after each stage, out of *n* (at least one in the first)."""
        return [max(1, min(n, math.ceil(s * n - 1e-9))) for s in self.stages]


@dataclass
class RolloutReport:
    """What a rollout did."""

    rollout: str
    version: str
    targeted: int
    outcome: str = "running"
    """``complete``, ``aborted`` (why in ``reason``)."""
    reason: str = ""
    stages: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    """Gateways the version was sent to, in order."""
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each gateway's last report about this rollout."""
    seconds: float = 0.0

    def count(self, *states: str) -> int:
        """Gateways whose last report for this rollout is one of *states*."""
        return sum(1 for s in self.states.values() if s.get("state") in states)

    def lines(self) -> list[str]:
        """Readable report."""
        out = [f"rollout {self.rollout} of {self.version}: {self.outcome} in {self.seconds:.1f} s"
               + (f" ({self.reason})" if self.reason else "")]  # fmt: skip
        for stage in self.stages:
            out.append(
                f"  stage {stage['stage']}: {stage['gateways']} gateways, healthy {stage['healthy']}, "
                f"failed {stage['failed']} ({stage['seconds']:.1f} s)"
            )
        return out


class RolloutController:
    """Publishes versions and commands and follows the gateways' reports (see the module docstring)."""

    def __init__(
        self,
        broker: BrokerConfig | str,
        key: Any,
        *,
        key_name: str = "",
        prefix: str = DEFAULT_PREFIX,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.broker = broker if isinstance(broker, BrokerConfig) else BrokerConfig.model_validate(broker)
        if isinstance(key, (str, Path)):
            key_name = key_name or Path(key).stem
            key = load_private_key(key)
        self.key, self.key_name = key, key_name
        self.prefix = prefix
        self.log = log or (lambda _line: None)
        self.fleet: dict[str, dict[str, Any]] = {}
        """Latest status of every gateway heard of (from the retained status topic)."""
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._retained: dict[str, bytes | str] = {}
        """What this controller keeps retained on the broker (chunks, commands): sent again after a reconnect, in
        case the broker lost it (a restart without persistence)."""
        client = make_client(self.broker, f"edgeflow-rollout-{unique_suffix()}")
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        connect_async(client, self.broker)
        if not self._ready.wait(10):
            self.close()
            msg = f"rollout controller: no connection to the broker at {self.broker.address} within 10 s"
            raise ConnectionError(msg)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            return
        client.subscribe([(f"{self.prefix}/gw/+/status", 1), (f"{self.prefix}/gw/+/events", 1)])
        if self._ready.is_set():
            with self._lock:
                again = list(self._retained.items())
            for topic, payload in again:
                client.publish(topic, payload, qos=1, retain=True)
        self._ready.set()

    def _on_message(self, _client: Any, _u: Any, message: Any) -> None:
        try:
            record = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(record, dict) or "gateway" not in record:
            return
        with self._lock:
            if message.topic.endswith("/status"):
                self.fleet[str(record["gateway"])] = record
            else:
                self._events.append(record)

    # -- publishing

    def _publish(self, topic: str, payload: bytes | str, retain: bool = True, wait: bool = True) -> Any:
        if retain:
            with self._lock:
                if payload:
                    self._retained[topic] = payload
                else:
                    self._retained.pop(topic, None)
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(30)
        return info

    @staticmethod
    def _delivered(infos: list[Any]) -> None:
        for info in infos:
            info.wait_for_publish(30)

    def publish_version(
        self, folder: str | Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> tuple[VerifiedModel, dict[str, Any]]:
        """Verify *folder* (signature by the controller's own key) and publish its files; return it and the source."""
        from edgeflow.model.signing import TrustedKeys

        model = verify_model(folder, TrustedKeys.of({self.key_name or "controller": self.key.public_key()}))
        infos: list[Any] = []
        source = publish_files(lambda t, data: infos.append(self._publish(t, data, wait=False)), model, self.prefix,
                               chunk_bytes)  # fmt: skip
        self._delivered(infos)
        return model, source

    def unpublish(self, source: dict[str, Any]) -> None:
        """Clear a version's retained chunks from the broker."""
        for entry in source.get("files", []):
            for i in range(int(entry["chunks"])):
                self._publish(blob_topic(self.prefix, entry["sha256"], i), b"")

    def send(
        self, command: dict[str, Any], *, gateway: str | None = None, group: str | None = None, wait: bool = True
    ) -> Any:
        """Sign *command* and send it to one gateway's or one group's control topic (retained)."""
        signed = sign_command(command, self.key, key_name=self.key_name)
        topic = f"{self.prefix}/gw/{gateway}/control" if gateway else f"{self.prefix}/group/{group}/control"
        return self._publish(topic, json.dumps(signed), wait=wait)

    # -- the fleet

    def discover(self, settle_s: float = 1.0, expect: int | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until *expect* gateways reported (or *settle_s* without a new one); return the fleet."""
        deadline = time.monotonic() + timeout_s
        last, seen_at = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = len(self.fleet)
            if expect is not None and n >= expect:
                break
            if n != last:
                last, seen_at = n, time.monotonic()
            elif expect is None and time.monotonic() - seen_at >= settle_s:
                break
            time.sleep(0.05)
        return dict(self.fleet)

    def _order(self, gateways: list[str], rollout: str) -> list[str]:
        """Return a fixed pseudo-random order per rollout: canaries spread over the fleet, not the first names."""
        return sorted(gateways, key=lambda g: hashlib.sha256(f"{rollout}/{g}".encode()).hexdigest())

    def rollout(self, folder: str | Path, plan: RolloutPlan, *, rollout: str | None = None) -> RolloutReport:
        """Roll the signed version in *folder* out to the fleet stage by stage; return what happened."""
        started = time.monotonic()
        rollout = rollout or f"r-{unique_suffix()}"
        model, source = self.publish_version(folder, plan.chunk_bytes)
        online = [g for g, s in self.fleet.items() if s.get("state") != "offline"]
        targets = self._order([g for g in online if plan.group is None or self.fleet[g].get("group") == plan.group],
                              rollout)  # fmt: skip
        report = RolloutReport(rollout, model.manifest.version, len(targets))
        if not targets:
            report.outcome, report.reason = "aborted", "no gateway to roll out to"
            return report
        command = deploy_announcement(rollout, model, source, valid_for=timedelta(seconds=plan.stage_timeout_s * 4))
        self.log(
            f"rollout {rollout}: {model.model_id} to {len(targets)} gateways in stages {plan.stage_sizes(len(targets))}"
        )
        done = 0
        for number, size in enumerate(plan.stage_sizes(len(targets)), start=1):
            stage_started = time.monotonic()
            batch = targets[done:size]
            self._delivered([self.send(command, gateway=gateway, wait=False) for gateway in batch])
            report.sent += batch
            done = size
            healthy, failed = self._wait(rollout, batch, plan, report)
            seconds = round(time.monotonic() - stage_started, 2)
            report.stages.append(
                {"stage": number, "gateways": len(report.sent), "healthy": healthy, "failed": len(failed),
                 "seconds": seconds}
            )  # fmt: skip
            self.log(report.lines()[-1] if report.lines() else "")
            if len(failed) > plan.max_failures:
                why = "; ".join(f"{g}: {report.states.get(g, {}).get('reason') or 'no report'}" for g in failed[:3])
                report.outcome = "aborted"
                report.reason = f"stage {number}: {len(failed)} of {len(batch)} gateways failed ({why})"
                self.abort(rollout, model.manifest.version, report.reason, report.sent, plan.group)
                break
        else:
            report.outcome = "complete"
        report.seconds = time.monotonic() - started
        return report

    def abort(self, rollout: str, version: str, reason: str, gateways: list[str], group: str | None) -> None:
        """Order every gateway that was sent *version* (and *group*, if any) to leave it."""
        order = rollback_order(f"{rollout}-abort", version, f"rollout {rollout} aborted: {reason}")
        self._delivered([self.send(order, gateway=gateway, wait=False) for gateway in gateways])
        if group is not None:
            self.send(order, group=group)

    def _wait(self, rollout: str, batch: list[str], plan: RolloutPlan, report: RolloutReport) -> tuple[int, list[str]]:
        """Follow the gateways of *batch* until each reported healthy or failed, or the stage timed out."""
        deadline = time.monotonic() + plan.stage_timeout_s
        pending = set(batch)
        failed: list[str] = []
        seen = 0
        while pending and time.monotonic() < deadline:
            with self._lock:
                events, seen = self._events[seen:], len(self._events)
            with self._lock:  # the retained latest status too: events sent while this controller was cut off
                latest = [s for g, s in self.fleet.items() if g in pending and s.get("rollout") == rollout]
            for event in [*events, *latest]:
                gateway = str(event["gateway"])
                if event.get("rollout") != rollout:
                    continue
                report.states[gateway] = event
                if gateway in pending and event.get("state") in _DONE_OK:
                    pending.discard(gateway)
                elif gateway in pending and event.get("state") in _DONE_BAD:
                    pending.discard(gateway)
                    failed.append(gateway)
                if len(failed) > plan.max_failures:
                    return len(batch) - len(pending) - len(failed), failed  # no need to wait for the rest
            time.sleep(0.05)
        for gateway in sorted(pending):
            report.states.setdefault(
                gateway, {"state": "silent", "reason": f"no report within {plan.stage_timeout_s:g} s"}
            )
            failed.append(gateway)
        return len(batch) - len(failed), failed
