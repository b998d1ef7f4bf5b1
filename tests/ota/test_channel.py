"""The MQTT update channel against a real Mosquitto: signed commands, chunked resumable transfer, status reports."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeflow.model.signing import generate_key
from edgeflow.model.verify import verify_model
from edgeflow.mqtt.client import BrokerConfig
from edgeflow.ota.agent import AgentSettings
from edgeflow.ota.channel import deploy_announcement, rollback_order, sign_command
from edgeflow.ota.fleet import RolloutController
from edgeflow.ota.gates import Gates
from edgeflow.ota.sim import SimGateway
from tests.mqtt.mqtt_support import Broker, Collector

from .ota_support import MODEL_DIR, TEST_KEY, release, trusted

OLD = "pump_ae@1.0.0+5c8ff791/int8"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", persistence=True)  # retained chunks survive a broker restart
    b.start()
    yield b
    b.stop()


def _cfg(broker: Broker) -> BrokerConfig:
    return BrokerConfig.model_validate(broker.address).model_copy(
        update={"reconnect_min_s": 0.05, "reconnect_max_s": 0.5}
    )


def _gateway(tmp_path: Path, broker: Broker, recorded: Any, name: str = "gw-1", **settings: Any) -> SimGateway:
    agent = AgentSettings(gateway=name, group="site-a", store=tmp_path / name, broker=_cfg(broker), **settings)
    healthy = recorded.x[recorded.y == 0]
    return SimGateway(agent, MODEL_DIR / "manifest.json", healthy, gates=Gates(windows=16, health_windows=32),
                      trusted=trusted())  # fmt: skip


def _until(gateway: SimGateway, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Drive *gateway* (the work a gateway's threads do) until *done* holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gateway.tick()
        if done():
            return
        time.sleep(0.005)
    msg = f"not done within {timeout} s; published: {[p['state'] for p in gateway.agent.published]}"
    raise AssertionError(msg)


def _states(gateway: SimGateway, rollout: str) -> list[str]:
    return [p["state"] for p in gateway.agent.published if p.get("rollout") == rollout]


def _controller(broker: Broker) -> RolloutController:
    return RolloutController(_cfg(broker), TEST_KEY)


def test_a_signed_version_arrives_in_chunks_and_is_shadowed_promoted_and_reported(
    tmp_path: Path, broker: Broker, recorded: Any
) -> None:
    gateway = _gateway(tmp_path, broker, recorded)
    watcher = Collector(broker.address, "edgeflow/ota/gw/gw-1/events")
    gateway.agent.start()
    controller = _controller(broker)
    try:
        _until(gateway, lambda: gateway.agent.connected)
        model, source = controller.publish_version(release(tmp_path / "v", "1.1.0").parent, chunk_bytes=4096)
        controller.send(deploy_announcement("r1", model, source), gateway="gw-1")
        _until(gateway, lambda: "healthy" in _states(gateway, "r1"))
        assert _states(gateway, "r1") == ["received", "verified", "shadowing", "promoted", "healthy"]
        assert gateway.slot.state.active.model_id == "pump_ae@1.1.0/int8"
        assert (
            gateway.agent.counts["chunks"] == sum(f["chunks"] for f in source["files"])
            and not gateway.agent.counts["chunks_again"]
        )
        installed = verify_model(tmp_path / "gw-1" / "versions" / "pump_ae@1.1.0", trusted())
        assert installed.digest == model.digest
        reports = [json.loads(p) for _, p in watcher.wait_for(6)]
        assert [r["state"] for r in reports] == ["online", "received", "verified", "shadowing", "promoted", "healthy"]
        assert reports[-1]["active"] == "pump_ae@1.1.0/int8" and reports[4]["figures"]["agreement"] == 1.0
        controller.discover(expect=1)
        assert controller.fleet["gw-1"]["state"] == "healthy"  # the retained status
    finally:
        watcher.close()
        controller.close()
        gateway.agent.stop()


def test_commands_signed_by_an_untrusted_key_or_expired_are_refused(
    tmp_path: Path, broker: Broker, recorded: Any
) -> None:
    gateway = _gateway(tmp_path, broker, recorded)
    gateway.agent.start()
    controller = _controller(broker)
    try:
        _until(gateway, lambda: gateway.agent.connected)
        model, source = controller.publish_version(release(tmp_path / "v", "1.1.0").parent)
        forged = sign_command(deploy_announcement("evil", model, source), generate_key(), key_name="mallory")
        controller._publish("edgeflow/ota/gw/gw-1/control", json.dumps(forged))
        _until(gateway, lambda: "rejected" in _states(gateway, "evil"))
        assert "which this gateway does not trust" in gateway.agent.published[-1]["reason"]
        stale = deploy_announcement("stale", model, source)
        stale["valid_until"] = "2000-01-01T00:00:00+00:00"
        controller.send(stale, gateway="gw-1")
        _until(gateway, lambda: "rejected" in _states(gateway, "stale"))
        assert "no longer valid" in gateway.agent.published[-1]["reason"]
        assert gateway.slot.state.active.model_id == OLD and gateway.agent.counts["chunks"] == 0
    finally:
        controller.close()
        gateway.agent.stop()


def test_a_command_whose_files_are_not_the_signed_version_is_refused(
    tmp_path: Path, broker: Broker, recorded: Any
) -> None:
    """A valid command pointing at other (also validly signed) files: the digest it names does not match."""
    gateway = _gateway(tmp_path, broker, recorded)
    gateway.agent.start()
    controller = _controller(broker)
    try:
        _until(gateway, lambda: gateway.agent.connected)
        good, _ = controller.publish_version(release(tmp_path / "a", "1.1.0").parent)
        _, other_source = controller.publish_version(release(tmp_path / "b", "1.1.0", threshold=1e9).parent)
        controller.send(deploy_announcement("swap", good, other_source), gateway="gw-1")
        _until(gateway, lambda: "rejected" in _states(gateway, "swap"))
        assert (
            "not the" in gateway.agent.published[-1]["reason"]
            and "the command names" in gateway.agent.published[-1]["reason"]
        )
        assert gateway.slot.state.active.model_id == OLD
    finally:
        controller.close()
        gateway.agent.stop()


def test_a_transfer_cut_by_a_broker_crash_resumes_where_it_stopped(
    tmp_path: Path, broker: Broker, recorded: Any
) -> None:
    gateway = _gateway(tmp_path, broker, recorded, window=4)
    gateway.agent.start()
    controller = _controller(broker)
    try:
        _until(gateway, lambda: gateway.agent.connected)
        model, source = controller.publish_version(release(tmp_path / "v", "1.1.0").parent, chunk_bytes=1024)
        total = sum(f["chunks"] for f in source["files"])
        controller.send(deploy_announcement("r1", model, source), gateway="gw-1")
        controller.close()
        _until(gateway, lambda: gateway.agent.counts["chunks"] >= total // 3)
        broker.kill()  # mid-transfer: the network is gone
        have = gateway.agent.counts["chunks"]
        _until(gateway, lambda: not gateway.agent.connected)
        assert have < total
        broker.start()  # same port, retained chunks persisted
        _until(gateway, lambda: "healthy" in _states(gateway, "r1"), timeout=30)
        assert gateway.agent.counts["reconnects"] >= 1
        assert gateway.agent.counts["chunks"] == total  # each chunk stored once...
        assert gateway.agent.counts["chunks_again"] <= 4  # ...and at most the in-flight window fetched twice
        assert gateway.slot.state.active.model_id == "pump_ae@1.1.0/int8"
    finally:
        gateway.agent.stop()


def test_a_restarted_agent_resumes_a_transfer_from_its_chunks_on_disk(
    tmp_path: Path, broker: Broker, recorded: Any
) -> None:
    gateway = _gateway(tmp_path, broker, recorded, window=4)
    gateway.agent.start()
    controller = _controller(broker)
    try:
        _until(gateway, lambda: gateway.agent.connected)
        model, source = controller.publish_version(release(tmp_path / "v", "1.1.0").parent, chunk_bytes=1024)
        total = sum(f["chunks"] for f in source["files"])
        controller.send(deploy_announcement("r1", model, source), gateway="gw-1")
        _until(gateway, lambda: gateway.agent.counts["chunks"] >= total // 2)
        before = gateway.agent.counts["chunks"]
        gateway.restart()  # the gateway process dies mid-update and starts again
        assert gateway.slot.state.active.model_id == OLD  # back on a working model at once
        _until(gateway, lambda: "healthy" in _states(gateway, "r1"), timeout=30)
        assert before + gateway.agent.counts["chunks"] == total  # only the missing chunks were fetched again
        assert gateway.slot.state.active.model_id == "pump_ae@1.1.0/int8"
    finally:
        controller.close()
        gateway.agent.stop()


def test_a_group_rollback_order_rolls_back_the_gateways_running_that_version(
    tmp_path: Path, broker: Broker, recorded: Any
) -> None:
    gateways = [_gateway(tmp_path, broker, recorded, f"gw-{i}") for i in range(3)]
    for g in gateways:
        g.agent.start()
    controller = _controller(broker)
    try:
        for g in gateways:
            _until(g, lambda g=g: g.agent.connected)  # type: ignore[misc]
        model, source = controller.publish_version(release(tmp_path / "v", "1.1.0").parent)
        for g in gateways[:2]:
            controller.send(deploy_announcement("r1", model, source), gateway=g.name)
        for g in gateways[:2]:
            _until(g, lambda g=g: "healthy" in _states(g, "r1"))  # type: ignore[misc]
        controller.send(rollback_order("r1-abort", "1.1.0", "fleet health"), group="site-a")
        for g in gateways[:2]:
            _until(g, lambda g=g: "rolled_back" in _states(g, "r1-abort"))  # type: ignore[misc]
            assert g.slot.state.active.model_id == OLD
        _until(gateways[2], lambda: "withdrawn" in _states(gateways[2], "r1-abort"))
        assert np.all([g.slot.state.active.model_id == OLD for g in gateways])
    finally:
        controller.close()
        for g in gateways:
            g.agent.stop()


def test_a_running_flow_takes_an_update_from_the_agent(tmp_path: Path, broker: Broker) -> None:
    """The whole gateway: `edgeflow model agent` logic in a thread, eo.infer(store=...) in a bytewax flow."""
    import threading

    import edgeflow.operators as eo
    from edgeflow import Flow
    from edgeflow.ota.agent import GatewayAgent
    from edgeflow.testing import run_capture
    from flows.pump_int8 import add_features

    from .ota_support import RECORDING

    store = tmp_path / "store"
    agent = GatewayAgent(AgentSettings(gateway="gw-1", store=store, broker=_cfg(broker)), trusted=trusted())
    stop = threading.Event()
    worker = threading.Thread(target=agent.run, args=(stop, 0.02), daemon=True)
    agent.start()
    worker.start()
    controller = _controller(broker)
    try:
        model, source = controller.publish_version(release(tmp_path / "v", "1.1.0").parent)
        controller.send(deploy_announcement("r1", model, source), gateway="gw-1")
        for _ in range(500):
            if any(p["state"] == "verified" for p in agent.published):
                break
            time.sleep(0.01)
        flow = Flow("gateway")
        feats = add_features(eo.replay("samples", flow, RECORDING))
        scores = eo.infer("model", feats, model=MODEL_DIR / "manifest.json", store=store, reload_check_s=0.05,
                          shadow=Gates(windows=200, health_windows=200))  # fmt: skip
        eo.output("scored", scores, eo.stdout())
        capture = run_capture(flow)
        models = [s["model"] for s in capture.outputs["scored"]]
        assert models[0] == OLD and models[-1] == "pump_ae@1.1.0/int8"
        for _ in range(500):
            if "healthy" in [p["state"] for p in agent.published]:
                break
            time.sleep(0.01)
        assert [p["state"] for p in agent.published if p.get("rollout") == "r1"] == [
            "received", "verified", "shadowing", "promoted", "healthy"
        ]  # fmt: skip
    finally:
        stop.set()
        worker.join(5)
        controller.close()
        agent.stop()


def test_fleet_rollout_command(tmp_path: Path, broker: Broker, recorded: Any) -> None:
    from typer.testing import CliRunner

    from edgeflow.cli import app
    from edgeflow.ota.sim import SimFleet

    fleet = SimFleet([_gateway(tmp_path, broker, recorded, f"gw-{i}") for i in range(4)])
    fleet.start()
    try:
        assert fleet.connected()
        folder = release(tmp_path / "v", "1.1.0").parent
        result = CliRunner().invoke(app, ["fleet", "rollout", str(folder), "--key", str(TEST_KEY), "--broker",
                                          broker.address, "--stages", "0.25,1", "--expect", "4"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "complete" in result.output and "stage 2: 4 gateways, healthy 3, failed 0" in result.output
        status = CliRunner().invoke(app, ["fleet", "status", "--broker", broker.address, "--wait", "0.5"])
        assert status.output.count("active pump_ae@1.1.0/int8") == 4
    finally:
        fleet.stop()
