"""A simulated fleet: many gateways, each running the real update logic, in one process.

A :class:`SimGateway` is what a gateway runs, minus bytewax: the real
:class:`~edgeflow.ota.agent.GatewayAgent` (its own MQTT connection, signed commands,
resumable chunk transfer, verification, its own model store) and the real
:class:`~edgeflow.ota.slot.ModelSlot` (shadow, gates, atomic switch, health watch,
rollback, restart from the store) scoring recorded feature vectors on the real LiteRT
runtime. :class:`SimFleet` drives them all from a few threads, round-robin, so 200+
gateways cost 200+ paho network threads and nothing more.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.model import LiteRTModelHandler
from edgeflow.model.signing import TrustedKeys
from edgeflow.ota.agent import AgentSettings, GatewayAgent
from edgeflow.ota.gates import Gates
from edgeflow.ota.restore import restore
from edgeflow.ota.slot import Loader, ModelSlot, Runner, Version

__all__ = ["SimFleet", "SimGateway"]


def _loader(trusted: TrustedKeys) -> Loader:
    def load(path: Path, check_expiry: bool) -> Version:
        handler = LiteRTModelHandler(path, trusted_keys=trusted, check_expiry=check_expiry)
        info = handler.load_model()
        if info.threshold is None:
            msg = f"model {info.model_id} has no threshold"
            raise ValueError(msg)
        return Version(handler, info, info.threshold, path)

    return load


class SimGateway:
    """One simulated gateway (see the module docstring); :meth:`tick` does one round of its work."""

    def __init__(
        self,
        settings: AgentSettings,
        shipped: Path,
        features: np.ndarray,
        *,
        gates: Gates,
        trusted: TrustedKeys,
        batch: int = 4,
        offset: int = 0,
    ) -> None:
        self.settings = settings
        self.features = features
        self.batch = batch
        self.row = offset % len(features)
        self.gates = gates
        self.trusted = trusted
        self.shipped = shipped
        self.stats = FlowStats()
        self.served: collections.Counter[str] = collections.Counter()
        """Windows scored, by the model id that scored them."""
        self.agent = GatewayAgent(settings, trusted=trusted)
        self.slot = self._slot()
        self.runner = Runner()
        self.lock = threading.Lock()

    def _slot(self) -> ModelSlot:
        load = _loader(self.trusted)
        restored = restore(self.agent.store, load, lambda: load(self.shipped, True), self.gates)
        return ModelSlot(
            self.settings.gateway,
            restored.initial,
            load=load,
            gates=self.gates,
            stats=self.stats,
            store=self.agent.store,
            last_good=restored.last_good,
            seq=restored.seq,
            rejected=restored.rejected,
            inline=True,
        )

    @property
    def name(self) -> str:
        """The gateway id."""
        return self.settings.gateway

    def tick(self) -> None:
        """Take commands and chunks, look at the store, score one batch, report what changed."""
        with self.lock:
            self.agent.step()
            self.slot.poll_now()
            rows = np.arange(self.row, self.row + self.batch) % len(self.features)
            self.row = int(rows[-1] + 1) % len(self.features)
            outcome = self.slot.score(self.runner, self.features[rows])
            self.served[outcome.version.model_id] += len(outcome.scores)
            self.agent.step()

    def restart(self) -> None:
        """Crash and come back: a new agent and slot from what is on disk (the store, the agent's state, chunks)."""
        with self.lock:
            self.agent.stop()
            self.agent = GatewayAgent(self.settings, trusted=self.trusted)
            self.slot = self._slot()
            self.runner = Runner()
            self.agent.start()


@dataclass
class SimFleet:
    """Drives many :class:`SimGateway` from *threads* threads until stopped."""

    gateways: list[SimGateway]
    threads: int = 2
    pause_s: float = 0.0
    """Sleep between rounds (each gateway scores one batch per round)."""
    rounds: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Connect every gateway's agent and start driving them."""
        for gateway in self.gateways:
            gateway.agent.start()
        for k in range(self.threads):
            share = self.gateways[k :: self.threads]
            worker = threading.Thread(target=self._drive, args=(share,), name=f"sim-fleet-{k}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _drive(self, share: list[SimGateway]) -> None:
        while not self._stop.is_set():
            for gateway in share:
                try:
                    gateway.tick()
                except Exception as exc:  # a simulated gateway's bug is a finding, not a reason to stop the fleet
                    self.errors.append(f"{gateway.name}: {type(exc).__name__}: {exc}")
            self.rounds += 1
            if self.pause_s:
                time.sleep(self.pause_s)

    def connected(self, timeout_s: float = 30.0) -> bool:
        """Wait until every agent is connected."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(g.agent.connected for g in self.gateways):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop driving and disconnect every agent."""
        self._stop.set()
        for worker in self._workers:
            worker.join(10)
        for gateway in self.gateways:
            gateway.agent.stop()
