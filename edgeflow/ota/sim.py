"""A simulated fleet: many gateways, each running the real update logic, in one process.

A :class:`SimGateway` is what a gateway runs, minus the dataflow engine: the real
:class:`~edgeflow.ota.agent.GatewayAgent` (its own MQTT connection, signed commands,
resumable chunk transfer, verification, its own model store) and the real
:class:`~edgeflow.ota.slot.ModelSlot` (shadow, gates, atomic switch, health watch,
rollback, restart from the store) scoring recorded feature vectors on the real LiteRT
runtime. :class:`SimFleet` drives them all from a few threads, round-robin, so 200+
gateways cost 200+ paho network threads and nothing more.
"""

from __future__ import annotations

import collections
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeflow.metrics import FlowStats
from edgeflow.model import LiteRTModelHandler
from edgeflow.model.signing import TrustedKeys
from edgeflow.model.verify import sign_model
from edgeflow.mqtt.client import BrokerConfig
from edgeflow.ota.agent import AgentSettings, GatewayAgent
from edgeflow.ota.fleet import RolloutController, RolloutPlan, RolloutReport
from edgeflow.ota.gates import Gates
from edgeflow.ota.restore import restore
from edgeflow.ota.slot import Loader, ModelSlot, Runner, Version

__all__ = ["SCENARIOS", "BrokerControl", "ScenarioResult", "SimFleet", "SimGateway", "main", "run_scenarios"]


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
    threads: int = 1
    pause_s: float = 0.002
    """Sleep between rounds (each gateway scores one batch per round): lets paho's threads have the GIL."""
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


# ----------------------------------------------------------------------------- scenarios


class BrokerControl(Protocol):
    """A broker the scenarios can cut off and bring back (same port, retained messages persisted)."""

    @property
    def address(self) -> str: ...

    def kill(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class ScenarioResult:
    """One scenario's figures, as in the README table."""

    name: str
    outcome: str
    seconds: float
    gateways: int
    reached: int
    """Gateways the version was sent to."""
    served: int
    """Gateways on which the version scored live windows (was promoted)."""
    on_version: int
    """Gateways running the version at the end."""
    without_working_model: int
    chunks_again: int = 0
    note: str = ""
    detail: str = ""
    """The failed gateways' reports (an aborted rollout)."""

    def row(self) -> str:
        """Return the scenario as a Markdown table row."""
        share = 100 * self.reached / self.gateways
        return (
            f"| {self.name} | {self.outcome} | {self.seconds:.1f} | {self.reached} ({share:.0f} %)"
            f" | {self.served} | {self.on_version} | {self.without_working_model} | {self.note} |"
        )


SCENARIOS = ("good", "false_alarms", "crash_on_load", "partition", "restart", "group")
"""The scenarios :func:`run_scenarios` runs, in order (``only=`` picks some)."""

TABLE_HEADER = (
    "| scenario | outcome | seconds | reached (sent the version) | served outputs with it | running it at the end "
    "| gateways without a working model | notes |\n|---|---|---:|---:|---:|---:|---:|---|"
)


def _release(folder: Path, shipped: Path, version: str, key: Any, *, threshold: float | None = None,
             garbage: bool = False) -> Path:  # fmt: skip
    shutil.copytree(shipped.parent, folder)
    manifest = folder / shipped.name
    raw = json.loads(manifest.read_text())
    raw["version"] = version
    if threshold is not None:
        raw["threshold"] = threshold
        for variant in raw["variants"].values():
            variant["threshold"] = threshold
    manifest.write_text(json.dumps(raw, indent=2))
    if garbage:
        (folder / raw["variants"][raw["default"]]["file"]).write_bytes(b"TFL3" + bytes(range(256)) * 16)
    sign_model(manifest, key, key_name="TEST-ONLY-ed25519", update_hashes=True)
    return folder


def run_scenarios(
    broker: BrokerControl,
    workdir: Path,
    features: np.ndarray,
    *,
    shipped: Path,
    key: Path,
    trusted: TrustedKeys,
    gateways: int = 200,
    groups: int = 4,
    gates: Gates | None = None,
    settle_s: float = 1.0,
    only: tuple[str, ...] | None = None,
    say: Callable[[str], None] = print,
) -> list[ScenarioResult]:
    """Run the fleet scenarios on *gateways* simulated gateways against one broker; return their figures.

    1. a good version reaches every gateway; 2. a version with many false alarms and 3. one that crashes on load
    are stopped at the canary stage; 4. the broker dies mid-transfer and the rollout resumes; 5. a tenth of the
    gateways restart mid-update; 6. a rollout to one group only. *only* names some of :data:`SCENARIOS`.
    """
    gates = gates or Gates(windows=32, health_windows=64)
    cfg = BrokerConfig.model_validate(broker.address).model_copy(
        update={"reconnect_min_s": 0.05, "reconnect_max_s": 0.5}
    )
    fleet = SimFleet([
        SimGateway(
            AgentSettings(gateway=f"gw-{i:03d}", group=f"site-{'abcdefgh'[i % groups]}", store=workdir / f"gw-{i:03d}",
                          broker=cfg, durable=False),
            shipped, features, gates=gates, trusted=trusted, offset=37 * i,
        )
        for i in range(gateways)
    ])  # fmt: skip
    results: list[ScenarioResult] = []
    fleet.start()
    controller: RolloutController | None = None
    try:
        if not fleet.connected():
            msg = f"not every simulated gateway connected to {broker.address}"
            raise ConnectionError(msg)
        controller = RolloutController(cfg, key, log=say)
        controller.discover(expect=gateways)
        plan = RolloutPlan(stages=(0.05, 0.25, 1.0), stage_timeout_s=60)
        good = {"pump_ae@1.0.0+5c8ff791/int8"}

        def scenario(name: str, version: str, report: RolloutReport, note: str = "") -> ScenarioResult:
            time.sleep(settle_s)  # let stragglers act on what they were sent (or on the rollback order) first
            model_id = f"pump_ae@{version}/int8"
            served = sum(1 for g in fleet.gateways if g.served.get(model_id))
            on_version = sum(1 for g in fleet.gateways if g.slot.state.active.model_id == model_id)
            working = sum(1 for g in fleet.gateways if g.slot.state.active.model_id in good)
            again = sum(g.agent.counts["chunks_again"] for g in fleet.gateways)
            outcome = report.outcome if not report.reason else f"{report.outcome}: {report.reason[:80]}"
            failed = [s for s in report.states.values() if s.get("state") in ("rejected", "rolled_back", "silent")]
            result = ScenarioResult(name, outcome, report.seconds, gateways, len(report.sent), served, on_version,
                                    gateways - working, again, note, json.dumps(failed[:3]))  # fmt: skip
            results.append(result)
            say(result.row())
            return result

        say(TABLE_HEADER)
        want = set(only or SCENARIOS)
        if "good" in want:  # 1. a good version everywhere
            report = controller.rollout(_release(workdir / "v110", shipped, "1.1.0", key), plan, rollout="good-1.1.0")
            good = {"pump_ae@1.1.0/int8"}
            scenario("good model", "1.1.0", report)
        if "false_alarms" in want:  # 2. many false alarms: fails the shadow gates on the canaries
            noisy = _release(workdir / "v120", shipped, "1.2.0", key, threshold=0.004)
            scenario("false alarms (threshold 0.004)", "1.2.0", controller.rollout(noisy, plan, rollout="noisy-1.2.0"))
        if "crash_on_load" in want:  # 3. crashes on load: refused by the canaries
            broken = _release(workdir / "v121", shipped, "1.2.1", key, garbage=True)
            scenario("crashes on load", "1.2.1", controller.rollout(broken, plan, rollout="broken-1.2.1"))
        if "partition" in want:  # 4. the broker dies while the files travel
            outage, back = threading.Timer(0.3, broker.kill), threading.Timer(1.3, broker.start)
            outage.start()
            back.start()
            halves = RolloutPlan(stages=(0.5, 1.0), stage_timeout_s=60, chunk_bytes=4096)
            report = controller.rollout(_release(workdir / "v130", shipped, "1.3.0", key), halves,
                                        rollout="outage-1.3.0")  # fmt: skip
            outage.join()
            back.join()
            good = {"pump_ae@1.3.0/int8"}
            reconnects = sum(g.agent.counts["reconnects"] for g in fleet.gateways)
            scenario("broker down 1 s mid-transfer", "1.3.0", report, f"{reconnects} reconnects")
        if "restart" in want:  # 5. a tenth of the gateways crash and restart mid-update
            crashed = fleet.gateways[:: max(1, gateways // (gateways // 10 or 1))][: max(1, gateways // 10)]

            def crash() -> None:
                for g in crashed:
                    g.restart()

            restarts = threading.Timer(0.5, crash)
            restarts.start()
            everyone = RolloutPlan(stages=(1.0,), stage_timeout_s=60)
            report = controller.rollout(_release(workdir / "v140", shipped, "1.4.0", key), everyone,
                                        rollout="restart-1.4.0")  # fmt: skip
            restarts.join()
            good = {"pump_ae@1.4.0/int8"}
            scenario(f"{len(crashed)} gateways restart mid-update", "1.4.0", report)
        if "group" in want:  # 6. one group only
            in_group = RolloutPlan(stages=(0.1, 1.0), group="site-b", stage_timeout_s=60)
            report = controller.rollout(_release(workdir / "v150", shipped, "1.5.0", key), in_group,
                                        rollout="site-b-1.5.0")  # fmt: skip
            good = good | {"pump_ae@1.5.0/int8"}
            scenario("group site-b only", "1.5.0", report, f"{report.targeted} gateways in the group")
    finally:
        if controller is not None:
            controller.close()
        fleet.stop()
    if fleet.errors:
        say(f"simulated gateway errors: {fleet.errors[:5]}")
    return results


class _Mosquitto:
    """A Mosquitto of our own on a free loopback port, with persistence (for :func:`main`)."""

    def __init__(self, folder: Path) -> None:
        import socket

        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).is_file():
            msg = "mosquitto is not installed (Debian/Ubuntu: sudo apt-get install mosquitto)"
            raise FileNotFoundError(msg)
        self.binary, self.folder = binary, folder
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        import getpass

        (folder / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
            f"persistence true\npersistence_location {folder}/\nautosave_on_changes true\nautosave_interval 1\n"
            f"user {getpass.getuser()}\n"
        )
        self.proc: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        import socket
        import subprocess

        self.proc = subprocess.Popen([self.binary, "-c", str(self.folder / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for _ in range(250):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        msg = f"mosquitto did not start on {self.address}"
        raise RuntimeError(msg)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def main(argv: list[str] | None = None) -> int:
    """Run every scenario on a Mosquitto of its own and print the table: ``python -m edgeflow.ota.sim``."""
    import argparse
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description="Staged rollouts on a simulated fleet (the real gateway logic).")
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--only", nargs="*", choices=SCENARIOS)
    args = parser.parse_args(argv)
    root = Path.cwd()
    spec_path = root / "models" / "build.py"
    if not spec_path.is_file():
        print("run from the project root (models/build.py computes the recording's features)", file=sys.stderr)
        return 2
    import importlib.util

    spec = importlib.util.spec_from_file_location("_sim_build", spec_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    features = module.recording_features(root / "examples" / "data" / "pump_vibration.csv").x
    with tempfile.TemporaryDirectory() as tmp:
        broker = _Mosquitto(Path(tmp))
        broker.start()
        try:
            started = time.perf_counter()
            shipped = root / "models/pump_ae/manifest.json"
            results = run_scenarios(broker, Path(tmp) / "fleet", features, shipped=shipped,
                                    key=root / "models/keys/TEST-ONLY-ed25519.key",
                                    trusted=TrustedKeys.load(root / "models/keys"), gateways=args.gateways,
                                    only=tuple(args.only) if args.only else None)  # fmt: skip
            seconds = time.perf_counter() - started
            print(f"{len(results)} scenarios on {args.gateways} simulated gateways in {seconds:.0f} s")
        finally:
            broker.kill()
    return 0 if all(r.without_working_model == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
