"""The MQTT source says when it is ready (subscribed) and how deep its hand-off queue is, in the run's stats."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.mqtt.client import BrokerConfig, make_client, unique_suffix

from .mqtt_support import Broker, FlowThread

T0 = 1_772_438_400.0


def publish(address: str, messages: list[tuple[str, str]]) -> None:
    cfg = BrokerConfig.model_validate(address)
    client = make_client(cfg, f"test-pub-{unique_suffix()}")
    client.connect(cfg.host, cfg.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_ready_follows_the_subscription_through_a_broker_restart_and_the_queue_gauge_ends_empty(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    flow = Flow("gauges")
    samples = eo.mqtt_source(
        "samples",
        flow,
        "g/{sensor}",
        broker={"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1},
        eos_topic="g-eos",
    )
    eo.output("out", samples, eo.jsonl(tmp_path / "out.jsonl"))
    running = FlowThread(flow)
    try:
        ready = lambda: running.stats is not None and running.stats.readiness.get("source:samples") is True  # noqa: E731
        _wait(ready, 10, "the source to subscribe")
        broker.kill()
        _wait(lambda: running.stats.readiness.get("source:samples") is False, 10, "not ready while disconnected")
        broker.start()
        _wait(ready, 10, "ready again once subscribed")
        publish(broker.address, [("g/s1", json.dumps({"ts": T0 + i, "value": 1.0})) for i in range(50)])
        _wait(lambda: running.samples_in == 50, 10, "the samples")
        publish(broker.address, [("g-eos", "")])
        report = running.join(20)
    finally:
        broker.stop()
    assert report.stats.samples_in == 50
    assert report.stats.counts.get("mqtt.reconnects", 0) >= 1
    assert report.stats.gauges.get("queue.depth") == 0.0  # every message taken off the queue: none left counted
