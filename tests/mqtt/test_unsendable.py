"""Issue 8.4: a row that can never be sent (a topic over MQTT's 65,535 bytes) is moved aside, counted, and the rows
behind it go on; one left at the head of an outbox by an older run no longer blocks every restart."""

from __future__ import annotations

import json
from pathlib import Path

from edgeflow.metrics import FlowStats
from edgeflow.mqtt.sink import MqttSink, MqttSinkConfig
from edgeflow.mqtt.spool import Spool

from .mqtt_support import Broker, Collector

LONG = "s" * 65_530  # a valid input topic, but "gw/<sensor>/summary" is over 65,535 bytes


def _sink(broker: Broker, spool: Path, stats: FlowStats, dead: Path) -> object:
    cfg = MqttSinkConfig(topic="gw/{sensor}/{kind}", broker=broker.address, spool=spool)
    return MqttSink("uplink", cfg, "f", stats, dead_letter_path=dead).open(0, 1)


def test_a_row_whose_topic_is_too_long_is_moved_aside_and_the_rest_go_on(broker: Broker, tmp_path: Path) -> None:
    stats, dead = FlowStats(), tmp_path / "dead.jsonl"
    uplink = Collector(broker.address, "gw/#")
    part = _sink(broker, tmp_path / "outbox.sqlite", stats, dead)
    part.write_batch([{"sensor": "pump-1", "n": 1}, {"sensor": LONG, "n": 2}, {"sensor": "pump-2", "n": 3}])
    got = uplink.wait_for(2, 10)
    part.close()
    uplink.close()
    assert [json.loads(payload)["n"] for _topic, payload in got] == [1, 3]
    assert stats.counts["mqtt.sink_rejected"] == 1
    (letter,) = [json.loads(x) for x in dead.read_text().splitlines()]
    assert letter["step"] == "uplink" and "65,535" in letter["reason"] and len(letter["payload"]) < 1_200


def test_an_unsendable_row_left_by_an_older_run_is_moved_aside_on_restart(broker: Broker, tmp_path: Path) -> None:
    spool = tmp_path / "outbox.sqlite"
    old = Spool(spool, 100, "drop_oldest")
    old.put([(f"gw/{LONG}/summary", b'{"n":0}', 1, False, 0), ("gw/pump-1/summary", b'{"n":1}', 1, False, 0)])
    old.close()
    stats, dead = FlowStats(), tmp_path / "dead.jsonl"
    uplink = Collector(broker.address, "gw/#")
    part = _sink(broker, spool, stats, dead)
    part.write_batch([{"sensor": "pump-2", "n": 2}])
    got = uplink.wait_for(2, 10)
    part.close()
    uplink.close()
    assert [json.loads(payload)["n"] for _topic, payload in got] == [1, 2]
    assert stats.counts["mqtt.sink_rejected"] == 1 and len(dead.read_text().splitlines()) == 1
