"""Issue 8.11: loss you can see. The broker drops what its queue cannot hold; sequence stamps make the flow count it.

Also: ``publish`` reconnects after a broker restart and resumes; ``record`` hears what ``publish`` sends by default.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.mqtt.client import BrokerConfig
from edgeflow.mqtt.codecs import make_codec
from edgeflow.mqtt.player import Publisher, PublishReport, publish_recording, record
from edgeflow.recordings import read_recording

from .mqtt_support import RECORDING, Broker, FlowThread

TEMPLATE = "plant/line1/{sensor}/accel"


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _raw_flow(name: str, broker: Broker, out: Path, **settings: Any) -> Flow:
    flow = Flow(name, dead_letter_path=str(out.with_suffix(".dead.jsonl")))
    samples = eo.mqtt_source("samples", flow, "plant/{line}/{sensor}/accel", broker=broker.address, **settings)
    eo.output("out", eo.map("rows", samples, lambda b: {"sensor": b.sensor, "n": len(b.ts)}), eo.jsonl(out))
    return flow


def test_messages_the_broker_drops_are_counted_as_lost_upstream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One sample per message as fast as possible into a broker that queues at most 100 messages per client.

    A loss shows once a later message of its topic arrives: after the burst, one more message per sensor from
    the same publisher makes the losses at the end visible too.
    """
    caplog.set_level(logging.WARNING, logger="edgeflow.mqtt")
    broker = Broker(tmp_path / "small", settings={"max_queued_messages": "100", "max_inflight_messages": "20"})
    broker.start()
    try:
        flow = _raw_flow("lossy", broker, tmp_path / "out.jsonl", channels=["accel"], idle_timeout_s=1.5)
        running = FlowThread(flow)
        _wait(lambda: running.count("mqtt.subscriptions") >= 1, 10, "the source to subscribe")
        pub = Publisher(BrokerConfig.model_validate(broker.address), 1)
        codec = make_codec("json", ("accel",))
        rows = list(read_recording(RECORDING, limit=20_000)[1])
        last: dict[str, float] = {}
        for sensor, ts, values in rows:  # as fast as it goes
            topic = TEMPLATE.format(sensor=sensor)
            pub.publish(topic, *codec.encode([(ts, values)], None, pub.stamp(topic)))
            last[sensor] = ts
        assert pub.wait_acked(30)
        seen = -1
        while running.count("mqtt.messages") != seen:  # the broker's queue drained into the flow
            seen = running.count("mqtt.messages")
            time.sleep(0.3)
        for sensor, ts in sorted(last.items()):
            topic = TEMPLATE.format(sensor=sensor)
            pub.publish(topic, *codec.encode([(ts + 1.0, (0.0,))], None, pub.stamp(topic)))
        assert pub.wait_acked(10)
        pub.close()
        sent = len(rows) + len(last)
        report = running.join(60)
        dropped_by_broker = "Outgoing messages are being dropped" in broker.log()
    finally:
        broker.stop()
    counts = report.stats.counts
    lost = counts.get("mqtt.lost_upstream", 0)
    assert dropped_by_broker and lost > 0, "the broker did not drop: the loss was not reproduced"
    # every message is accounted for: handed on, or lost upstream (nothing dropped here, no duplicates)
    assert counts.get("mqtt.dropped", 0) == 0 and counts.get("mqtt.duplicate_messages", 0) == 0
    # each sensor's first message (the baseline) reached the flow: the broker's queue was empty then
    assert report.stats.samples_in + lost == sent
    assert any(f"mqtt.lost_upstream {lost:,}" in line for line in report.lines()), report.lines()
    warned = [r.getMessage() for r in caplog.records if "lost upstream" in r.getMessage()]
    assert warned and "pump-1" in warned[0], warned


def test_publish_reconnects_after_a_broker_restart_and_resumes(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "restart", persistence=True, autosave=100)
    broker.start()
    try:
        flow = _raw_flow(
            "restart",
            broker,
            tmp_path / "out.jsonl",
            channels=["accel"],
            eos_topic="plant/eos",
            clean_session=False,
            client_id="restart-source",
        )
        running = FlowThread(flow)
        _wait(lambda: running.count("mqtt.subscriptions") >= 1, 10, "the source to subscribe")
        sent: list[PublishReport] = []
        paced = {"template": TEMPLATE, "limit": 8_000, "batch": 4, "rate": 4_000, "eos_topic": "plant/eos"}
        publisher = threading.Thread(target=lambda: sent.append(publish_recording(RECORDING, broker.address, **paced)))
        publisher.start()
        _wait(lambda: running.samples_in >= 2_000, 20, "a quarter of the samples")
        broker.stop()  # a clean restart: the broker saves its sessions and queues
        time.sleep(0.5)
        broker.start()
        publisher.join(60)
        report = running.join(60)
    finally:
        broker.stop()
    assert sent and sent[0].acked and sent[0].reconnects >= 1
    counts = report.stats.counts
    assert report.stats.samples_in == 8_000, counts  # every sample once: resent ones are duplicates, dropped
    assert counts.get("mqtt.lost_upstream", 0) == 0 and counts["mqtt.reconnects"] >= 1


def test_record_hears_what_publish_sends_with_the_defaults(broker: Broker, tmp_path: Path) -> None:
    from edgeflow.cli import app

    out = tmp_path / "rec.jsonl"
    ready = threading.Event()
    result: list[Any] = []
    recorder = threading.Thread(
        target=lambda: result.append(record(broker.address, out=out, count=400, duration_s=20, on_ready=ready.set))
    )
    recorder.start()
    assert ready.wait(10)
    cli = CliRunner().invoke(app, ["publish", str(RECORDING), "--broker", broker.address, "--limit", "400"])
    assert cli.exit_code == 0, cli.output
    recorder.join(20)
    assert result and result[0].samples == 400 and result[0].bad_messages == 0 and result[0].lost == 0
    assert result[0].channels == ("accel",)
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"ts", "sensor", "accel"} and first["sensor"].startswith("pump-")
