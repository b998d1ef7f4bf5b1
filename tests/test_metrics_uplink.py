"""The MQTT sink's uplink state and outbox in /metrics and /healthz, with a real Mosquitto killed and restarted."""

from __future__ import annotations

from pathlib import Path

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.metrics import FlowStats
from edgeflow.mqtt.spool import Spool
from edgeflow.observe.health import HealthConfig
from tests.infer.infer_support import RECORDING
from tests.mqtt.mqtt_support import Broker
from tests.test_metrics import RunInThread, Scrape, free_port, get, wait_for


def test_the_outbox_age_is_that_of_its_oldest_waiting_message() -> None:
    spool = Spool(None, capacity=10)
    assert spool.oldest_enqueued() is None
    spool.put([("t", b"1", 1, False, 0)])
    first = spool.oldest_enqueued()
    spool.put([("t", b"2", 1, False, 0), ("t", b"3", 1, False, 1)])
    assert first is not None and spool.oldest_enqueued() == first  # the oldest is still waiting
    spool.ack([spool.next_rows(1)[0].seq])  # message 1 delivered: the oldest waiting one is 2, queued later
    later = spool.oldest_enqueued()
    assert later is not None and later >= first
    spool.ack([row.seq for row in spool.next_rows(5)])
    assert spool.oldest_enqueued() is None


def test_merged_processes_keep_the_oldest_outbox_and_add_up_depths() -> None:
    a, b = FlowStats(), FlowStats()
    a.set_gauge("outbox.depth", 3)
    b.set_gauge("outbox.depth", 4)
    a.set_gauge("outbox.oldest_enqueued|uplink:out", 100.0)
    b.set_gauge("outbox.oldest_enqueued|uplink:out", 0.0)  # empty
    a.set_gauge("ladder.level|model", 1)
    b.set_gauge("ladder.level|model", 2)
    merged = FlowStats.merged([a, b]).gauges
    assert merged == {"outbox.depth": 7.0, "outbox.oldest_enqueued|uplink:out": 100.0, "ladder.level|model": 2.0}


def test_healthz_fails_while_the_uplink_is_down_longer_than_its_limit_and_recovers(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    flow = Flow("uplink_health")
    samples = eo.replay("samples", flow, RECORDING, speed=6)  # 10 s of summaries every second of event time
    feats = eo.features("feat", eo.window("win", samples, rate_hz=500, size=256, hop=64), ["rms", "std"])
    sink = eo.mqtt_sink(
        "gw/{sensor}/{kind}",
        broker={"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1},
        spool=tmp_path / "outbox.sqlite",
        drain_timeout_s=10,
    )
    eo.summarize("summary", eo.zscore_detector("detect", feats, threshold=6.0, warmup=20), every_s=0.5, sink=sink)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    health = HealthConfig(uplink_down_s=0.3, stall_s=None)
    running = RunInThread(flow, metrics_port=port, metrics_host="127.0.0.1", health=health)
    try:

        def scrape() -> Scrape | None:
            try:
                return Scrape(get(f"{url}/metrics")[1])
            except OSError:
                return None

        def up() -> bool:  # the sink's partition opens with the run: until then there is no such series
            s = scrape()
            link = [x for x in (s.samples if s else []) if x.labels.get("link") == "uplink:mqtt_sink"]
            return any(x.name == "edgeflow_link_up" and x.value == 1.0 for x in link)

        assert wait_for(up, timeout=10)
        assert wait_for(lambda: get(f"{url}/healthz") == (200, "ok\n"), timeout=5)
        broker.kill()  # SIGKILL: no goodbye; summaries keep coming and wait in the outbox
        _code, body = wait_for(lambda: (r := get(f"{url}/healthz"))[0] == 503 and r, timeout=10)
        assert body.startswith("uplink:mqtt_sink is down for ") and body.endswith("(limit 0.3 s)\n")

        def backlog() -> Scrape | None:
            s = scrape()
            return s if s and s.value("edgeflow_outbox_messages") >= 4 else None

        down = wait_for(backlog, timeout=10)
        assert down.value("edgeflow_link_up", link="uplink:mqtt_sink") == 0.0
        assert down.value("edgeflow_link_down_seconds", link="uplink:mqtt_sink") >= 0.3
        assert down.value("edgeflow_outbox_oldest_age_seconds") > 0.0
        assert down.value("edgeflow_healthy") == 0.0
        broker.start()  # same port: the sink reconnects and drains the outbox
        assert wait_for(lambda: get(f"{url}/healthz") == (200, "ok\n"), timeout=10)

        def drained() -> Scrape | None:
            s = scrape()
            return s if s and s.value("edgeflow_outbox_messages") == 0 else None

        after = wait_for(drained, timeout=10)
        assert after.value("edgeflow_outbox_oldest_age_seconds") == 0.0
        assert after.value("edgeflow_link_up", link="uplink:mqtt_sink") == 1.0
        report = running.join(timeout=30)
    finally:
        broker.stop()
    counts = report.stats.counts
    assert counts["mqtt.sink_disconnects"] >= 1 and "mqtt.sink_left_in_spool" not in counts
    assert counts["mqtt.sink_delivered"] == report.stats.items_out  # nothing lost across the outage
