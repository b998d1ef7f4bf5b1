"""Readiness and health of a live MQTT flow against a real Mosquitto on loopback, asked over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.mqtt.client import BrokerConfig, make_client, unique_suffix
from edgeflow.observe.health import HealthConfig
from tests.mqtt.mqtt_support import Broker, _free_port
from tests.test_metrics import T0, RunInThread, Scrape, free_port, get, wait_for


def _publish(address: str, messages: list[tuple[str, str]]) -> None:
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


def test_ready_once_subscribed_unhealthy_while_stalled_healthy_again_with_data(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.port = _free_port()  # known before the broker runs: the flow starts first
    flow = Flow("live_health")
    samples = eo.mqtt_source(
        "samples",
        flow,
        "t/{sensor}",
        broker={"host": "127.0.0.1", "port": broker.port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1},
        check_broker=False,
        eos_topic="t-eos",
    )
    windows = eo.window("win", samples, rate_hz=100, size=10, hop=10)
    eo.output("out", eo.features("feat", windows, ["rms"]), eo.jsonl(tmp_path / "out.jsonl"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    running = RunInThread(flow, metrics_port=port, metrics_host="127.0.0.1", health=HealthConfig(stall_s=0.5))
    try:

        def answer(path: str) -> tuple[int, str] | None:
            try:
                return get(url + path)
            except OSError:
                return None

        code, body = wait_for(lambda: (r := answer("/readyz")) and "not open yet" not in r[1] and r)  # run starting
        assert code == 503 and body == "MQTT source 'samples' has not subscribed yet\n"
        assert Scrape(get(f"{url}/metrics")[1]).value("edgeflow_ready") == 0.0

        broker.start()
        assert wait_for(lambda: answer("/readyz") == (200, "ok\n"), timeout=10)
        code, body = wait_for(lambda: (r := answer("/healthz")) and r[0] == 503 and r, timeout=10)
        assert body.startswith("source 'samples' handed on nothing for ") and body.endswith("(limit 0.5 s)\n")

        batch = [{"ts": T0 + i / 100, "value": float(i % 7)} for i in range(40)]
        _publish(broker.address, [("t/s1", json.dumps(batch))])
        assert wait_for(lambda: answer("/healthz") == (200, "ok\n"), timeout=5)
        scrape = Scrape(get(f"{url}/metrics")[1])
        assert scrape.value("edgeflow_source_samples_total", step="samples") == 40.0
        assert scrape.value("edgeflow_events_total", name="mqtt.subscriptions") >= 1.0
        assert scrape.value("edgeflow_ready") == 1.0
    finally:
        try:
            if broker.proc is None:
                broker.start()
            _publish(broker.address, [("t-eos", "end")])
            report = running.join(timeout=20)
        finally:
            broker.stop()
    assert report.stats.samples_in == 40 and report.stats.windows == 4
