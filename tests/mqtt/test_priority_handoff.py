"""High-priority sensors first at the MQTT hand-off: a flooded queue, real Mosquitto, no timed assertions.

The flow's sensor priorities (``eo.infer(priorities=...)``) reach the MQTT source through the compiler; the
source keeps high-priority sensors' messages in a queue of their own, drained first, and with a latency budget
sheds normal messages that waited too long: counted (``mqtt.dropped|shed``), acknowledged, exported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.compiler import compile_flow
from edgeflow.context import RunContext
from edgeflow.mqtt.client import BrokerConfig, make_client, unique_suffix
from edgeflow.mqtt.handoff import PriorityHandOff, PriorityPolicy
from edgeflow.mqtt.source import MqttSource, MqttSourcePartition
from edgeflow.observe.exporter import exposition
from edgeflow.records import SampleBlock

from .mqtt_support import ROOT, Broker

T0 = 1000.0
MODEL = str(ROOT / "models" / "pump_ae" / "manifest.json")


def _publish(address: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish *messages* at QoS 1, in order, and wait until the broker has them all."""
    cfg = BrokerConfig.model_validate(address)
    client = make_client(cfg, f"test-pub-{unique_suffix()}")
    client.connect(cfg.host, cfg.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _message(sensor: str, n: int) -> tuple[str, bytes]:
    """Message *n* of *sensor*: two samples, timestamps increasing with *n*."""
    body = [{"ts": T0 + 2 * n * 0.002 + j * 0.002, "value": float(j)} for j in range(2)]
    return f"prio/{sensor}", json.dumps(body).encode()


def _flow(address: str, budget_ms: float, **source: Any) -> Flow:
    """MQTT source -> windows -> features -> int8 model with ``hi-0`` high-priority -> output."""
    from flows.pump_int8 import add_features

    flow = Flow("prio", latency_budget_ms=budget_ms)
    samples = eo.mqtt_source("samples", flow, "prio/{sensor}", broker=address, **source)
    scores = eo.infer("model", add_features(samples), model=MODEL, priorities={"hi-0": "high", "s-1": "normal"})
    eo.output("out", scores, eo.stdout())
    return flow


def _open(flow: Flow, run: RunContext) -> MqttSourcePartition:
    """Build the flow's source as ``edgeflow run`` would (the compiler's context) and open its partition."""
    compiled = compile_flow(flow)
    source: MqttSource = compiled.build(compiled.order[0], run)
    return source.open("mqtt", None)


def _wait(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _subscribed(run: RunContext) -> bool:
    return run.stats.counts.get("mqtt.subscriptions", 0) >= 1


def _blocks(items: list[Any]) -> list[SampleBlock]:
    return [item for item in items if isinstance(item, SampleBlock)]


def test_the_compiler_hands_the_flows_priorities_to_the_source(broker: Broker) -> None:
    flow = _flow(broker.address, 100.0)
    compiled = compile_flow(flow)
    assert compiled.priorities == {"hi-0": "high"}
    source = compiled.build(compiled.order[0], RunContext("prio", latency_budget_ms=100.0))
    assert source.high == frozenset({"hi-0"})
    assert source.priority == PriorityPolicy(batch_s=0.0125, shed_after_s=0.1)
    plain = Flow("plain")
    eo.output("out", eo.mqtt_source("samples", plain, "prio/{sensor}", broker=broker.address), eo.stdout())
    compiled = compile_flow(plain)
    assert compiled.priorities == {}
    assert compiled.build(compiled.order[0], RunContext("plain")).high == frozenset()  # one FIFO, as before
    off = compile_flow(_flow(broker.address, 100.0, priority_handoff=False))
    assert off.build(off.order[0], RunContext("prio")).high == frozenset()


def test_a_high_priority_sensor_is_handed_on_ahead_of_a_flooded_normal_backlog(broker: Broker) -> None:
    run = RunContext("prio", latency_budget_ms=60_000.0)  # a budget nothing here can break: nothing is shed
    part = _open(_flow(broker.address, 60_000.0, batch_size=100), run)
    try:
        _wait(lambda: _subscribed(run), "the subscription")
        backlog = [_message("s-1", n) for n in range(400)] + [_message("s-2", n) for n in range(200)]
        _publish(broker.address, [*backlog, *(_message("hi-0", n) for n in range(3))])
        _wait(lambda: len(part._queue) == 603, "the flood in the hand-off queue")
        first = _blocks(part.next_batch())
        # published last, behind 600 normal messages, taken first: one FIFO would hand it on five batches later
        assert first[0].sensor == "hi-0"
        assert isinstance(part._queue, PriorityHandOff)
        assert len(first[0].ts) == 6
        got: dict[str, list[float]] = {}
        for block in first:
            got.setdefault(block.sensor, []).extend(block.ts.tolist())
        for _ in range(20):  # bounded: 600 normal messages in batches of 100
            for block in _blocks(part.next_batch()):
                got.setdefault(block.sensor, []).extend(block.ts.tolist())
        assert {k: len(v) for k, v in got.items()} == {"hi-0": 6, "s-1": 800, "s-2": 400}
        assert all(v == sorted(v) for v in got.values())  # each sensor's order is kept
        assert run.stats.counts.get("mqtt.dropped|shed", 0) == 0
        assert run.stats.counts.get("mqtt.dropped", 0) == 0
    finally:
        part.close()


def test_stale_normal_messages_are_shed_counted_acknowledged_and_exported(persistent_broker: Broker) -> None:
    broker = persistent_broker
    run = RunContext("prio", latency_budget_ms=100.0, recovery_dir=Path("unused"))  # recovery: late acks
    source = {"clean_session": False, "client_id": f"prio-{unique_suffix()}", "shed_after_s": 0.05}
    flow = _flow(broker.address, 100.0, **source)
    part = _open(flow, run)
    try:
        _wait(lambda: _subscribed(run), "the subscription")
        _publish(broker.address, [_message("s-1", n) for n in range(300)] + [_message("hi-0", n) for n in range(5)])
        _wait(lambda: len(part._queue) == 305, "the flood in the hand-off queue")
        time.sleep(0.1)  # every normal message has now waited longer than shed_after_s
        handed = _blocks(part.next_batch())
        assert [(b.sensor, len(b.ts)) for b in handed] == [("hi-0", 10)]
        assert run.stats.counts["mqtt.dropped|shed"] == 300
        assert len(part._queue) == 0
        part.snapshot()  # covers the 5 taken and the 300 shed
        part.snapshot()  # the one before is stored: acknowledge them all
        assert run.stats.counts["mqtt.acked"] == 305
        families = text_string_to_metric_families(exposition(run.stats, "prio"))
        dropped = {
            s.labels["cause"]: s.value for f in families for s in f.samples if s.name == "edgeflow_dropped_total"
        }
        assert dropped["mqtt.dropped|shed"] == 300.0
        assert run.stats.to_json()["counts"]["mqtt.dropped|shed"] == 300
    finally:
        part.close()
    # the same persistent session again: acknowledged messages are not sent again, only what comes after
    run2 = RunContext("prio", latency_budget_ms=100.0, recovery_dir=Path("unused"))
    part = _open(_flow(broker.address, 100.0, **source), run2)
    try:
        _wait(lambda: _subscribed(run2), "the subscription")
        _publish(broker.address, [_message("hi-0", 100)])
        seen: list[SampleBlock] = []
        deadline = time.monotonic() + 15
        while not any(b.sensor == "hi-0" for b in seen):
            assert time.monotonic() < deadline, "timed out waiting for the new message"
            seen += _blocks(part.next_batch())
        assert [(b.sensor, len(b.ts)) for b in seen] == [("hi-0", 2)]
    finally:
        part.close()


@pytest.mark.parametrize("policy", ["drop_oldest", "block"])
def test_the_priority_hand_off_keeps_batches_short_by_deferring_normal_items(policy: str) -> None:
    q: PriorityHandOff[int] = PriorityHandOff(
        1_000,
        policy,
        stamp=lambda item: 0,
        priority=PriorityPolicy(batch_s=0.01, min_batch=4),  # type: ignore[arg-type]
    )
    for n in range(500):
        q.put(n)
    q.put_high(-1)
    ms = 1_000_000
    assert q.take(100, now_ns=0) == [-1, *range(99)]  # no cost known yet: the whole batch
    taken = q.take(100, now_ns=40 * ms)  # that batch kept the worker 40 ms: a quarter of its 99 normal items
    assert taken == list(range(99, 99 + 24))
    assert q.deferred == 1
    q.put_high(-2)
    assert q.take(100, now_ns=41 * ms)[:3] == [-2, 123, 124]  # 1 ms: twice as many (48), high first
    assert len(q.take(100, now_ns=1_041 * ms)) == 4  # a slow batch: never fewer than min_batch
    assert q.shed == 0
    assert q.dropped == 0
