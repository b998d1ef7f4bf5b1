"""The MQTT source and sink against a real Mosquitto on loopback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.loader import load_flow
from edgeflow.metrics import FlowStats
from edgeflow.mqtt.codecs import PayloadError, make_codec
from edgeflow.mqtt.player import publish_recording, record
from edgeflow.mqtt.source import MqttSource, MqttSourceConfig
from edgeflow.recordings import read_recording

from .mqtt_support import RECORDING, ROOT, Broker, Collector, FlowThread, _free_port

TEMPLATE = "plant/line1/{sensor}/accel"


def _slice(folder: Path, name: str, first: int, last: int) -> Path:
    lines = RECORDING.read_text().splitlines(keepends=True)
    path = folder / name
    path.write_text(lines[0] + "".join(lines[1 + first : 1 + last]))
    return path


def _summaries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summaries without the transport-dependent raw byte count, in (sensor, interval) order."""
    out = [{k: v for k, v in r.items() if k != "raw_bytes"} for r in records]
    return sorted(out, key=lambda r: (r["sensor"], r["interval"][0]))


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _start(flow: Any) -> FlowThread:
    thread = FlowThread(flow)
    _wait(
        lambda: thread.count("mqtt.subscriptions") >= 1 or not thread.thread.is_alive(), 10, "the source to subscribe"
    )
    return thread


def _replay_summaries(tmp_path: Path, recording: Path, name: str) -> list[dict[str, Any]]:
    from .mqtt_flows import small_flow

    out = tmp_path / f"{name}.jsonl"
    FlowThread(small_flow(name, str(out), recording=str(recording))).join(30)
    return _summaries(out)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payloads=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.text(max_size=30).map(str.encode),
            st.sampled_from(
                [
                    b'{"ts": 1e9, "accel": NaN}',
                    b'{"ts": 1e9, "accel": 1e9}',
                    b'{"ts": "yesterday", "accel": 1}',
                    b"[1, 2]",
                    b"{}",
                ]
            ),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_malformed_payloads_become_dead_letters_and_the_flow_keeps_running(
    broker: Broker, tmp_path: Path, payloads: list[bytes]
) -> None:
    name = f"fuzz-{os.urandom(3).hex()}"
    dead = tmp_path / f"{name}.dead.jsonl"
    flow = Flow(name, dead_letter_path=str(dead))
    samples = eo.mqtt_source(
        "samples",
        flow,
        "plant/{line}/{sensor}/accel",
        broker=broker.address,
        channels=["accel"],
        eos_topic="plant/eos",
        value_range=(-100.0, 100.0),
    )
    eo.output("out", samples, eo.jsonl(tmp_path / f"{name}.out.jsonl"))
    running = _start(flow)
    coder = make_codec("json", ("accel",), value_range=(-100.0, 100.0))
    bad = good = 0
    for payload in payloads:
        try:
            good += len(coder.decode(payload))
        except PayloadError:
            bad += 1
    good += 2
    stream = [b'{"ts": 1772438400.0, "accel": 0.5}', *payloads, b'{"ts": 1772438401.0, "accel": -0.5}']
    import paho.mqtt.publish as publish

    msgs = [{"topic": "plant/l1/pump-1/accel", "payload": p, "qos": 1} for p in stream]
    msgs += [{"topic": "plant/bogus", "payload": b"x", "qos": 1}, {"topic": "plant/eos", "payload": b"", "qos": 1}]
    publish.multiple(msgs, hostname="127.0.0.1", port=broker.port)
    report = running.join(20)
    assert report.stats.samples_in == good
    assert report.stats.dead_letters == bad  # the bogus topic is outside the subscription
    letters = [json.loads(line) for line in dead.read_text().splitlines()] if bad else []
    assert len(letters) == bad and all(letter["step"] == "samples" and letter["reason"] for letter in letters)


def test_topic_outside_template_is_a_dead_letter(broker: Broker, tmp_path: Path) -> None:
    name = f"tpl-{os.urandom(3).hex()}"
    dead = tmp_path / "dead.jsonl"
    flow = Flow(name, dead_letter_path=str(dead))
    samples = eo.mqtt_source(
        "samples",
        flow,
        "plant/{line}/{sensor}/accel",
        topics=["plant/#"],
        broker=broker.address,
        eos_topic="plant/eos",
        dead_letter_topic="gw/dead",
    )
    eo.output("out", samples, eo.jsonl(tmp_path / "out.jsonl"))
    letters = Collector(broker.address, "gw/dead")
    running = _start(flow)
    import paho.mqtt.publish as publish

    publish.multiple(
        [
            {"topic": "plant/l1/p1/temp", "payload": b'{"ts": 1e9, "value": 1}', "qos": 1},
            {"topic": "plant/eos", "payload": b"", "qos": 1},
        ],
        hostname="127.0.0.1",
        port=broker.port,
    )
    assert running.join(20).stats.dead_letters == 1
    assert "does not fit the template" in json.loads(dead.read_text())["reason"]
    assert "does not fit the template" in json.loads(letters.wait_for(1)[0][1])["reason"]
    letters.close()


@pytest.mark.parametrize(("policy", "blocked"), [("drop_oldest", 0), ("block", 6)])
def test_overload_policy_drops_are_counted(broker: Broker, policy: str, blocked: int) -> None:
    name = f"overload-{policy}"
    cfg = MqttSourceConfig(
        broker=broker.address, template="s/{sensor}", queue_size=4, overload=policy, block_timeout_s=0.05
    )  # type: ignore[arg-type]
    stats = FlowStats()
    part = MqttSource("samples", cfg, name, stats).open("mqtt", None)
    try:
        _wait(lambda: stats.counts.get("mqtt.subscriptions", 0) >= 1, 5, "subscribe")
        import paho.mqtt.publish as publish

        publish.multiple(
            [{"topic": "s/a", "payload": json.dumps({"ts": 1e9 + i, "value": i}), "qos": 1} for i in range(10)],
            hostname="127.0.0.1",
            port=broker.port,
        )
        _wait(lambda: part._queue.dropped == 6, 5, "drops")
        (block,) = part.next_batch()
        assert block.sensor == "a" and block.values[:, 0].tolist() == [6.0, 7.0, 8.0, 9.0]  # the newest survive
        assert stats.counts["mqtt.dropped"] == 6
        assert stats.counts.get("mqtt.blocked", 0) == blocked
    finally:
        part.close()


def test_max_samples_stops_the_source_while_messages_keep_coming(broker: Broker) -> None:
    name = f"limit-{os.urandom(3).hex()}"
    cfg = MqttSourceConfig(broker=broker.address, template="s/{sensor}", max_samples=3)  # type: ignore[arg-type]
    stats = FlowStats()
    part = MqttSource("samples", cfg, name, stats).open("mqtt", None)
    try:
        _wait(lambda: stats.counts.get("mqtt.subscriptions", 0) >= 1, 5, "subscribe")
        import paho.mqtt.publish as publish

        def send(first: int) -> None:
            publish.multiple(
                [
                    {"topic": "s/a", "payload": json.dumps({"ts": 1e9 + i, "value": i}), "qos": 1}
                    for i in range(first, first + 5)
                ],
                hostname="127.0.0.1",
                port=broker.port,
            )

        send(0)
        _wait(lambda: len(part._queue) == 5, 5, "five messages")
        (block,) = part.next_batch()
        assert block.sensor == "a" and len(block) == 3 and block.t_ins is not None and len(block.t_ins) == 3
        assert stats.counts["mqtt.after_end"] == 2
        send(5)  # more traffic after the end must not keep the source alive
        _wait(lambda: len(part._queue) == 5, 5, "five more messages")
        with pytest.raises(StopIteration):
            part.next_batch()
        assert stats.counts["mqtt.after_end"] == 7
    finally:
        part.close()


def test_source_broker_killed_and_restarted_with_persistent_session(persistent_broker: Broker, tmp_path: Path) -> None:
    from .mqtt_flows import small_flow

    first, second = _slice(tmp_path, "a.csv", 0, 4000), _slice(tmp_path, "b.csv", 4000, 8000)
    expected = _replay_summaries(tmp_path, _slice(tmp_path, "ab.csv", 0, 8000), "src-replay")
    out = tmp_path / "mqtt.jsonl"
    flow = small_flow("src-kill", str(out), broker=persistent_broker.address, clean_session=False)
    running = _start(flow)
    publish_recording(first, persistent_broker.address, template=TEMPLATE, batch=25)
    _wait(lambda: running.samples_in == 4000, 10, "the first half")
    persistent_broker.kill()
    time.sleep(0.3)
    persistent_broker.start()
    _wait(lambda: running.count("mqtt.subscriptions") >= 2, 10, "the source to reconnect")
    publish_recording(second, persistent_broker.address, template=TEMPLATE, batch=25, eos_topic="plant/eos")
    report = running.join(20)
    # with the session persisted, the broker may deliver again (DUP) what it sent just before it died: not counted twice
    assert report.stats.samples_in == 8000, report.stats.counts
    assert report.stats.counts["mqtt.reconnects"] >= 1
    assert _comparable(_summaries(out)) == _comparable(expected)


@pytest.mark.parametrize("qos", [1])  # QoS 0 cannot promise this: a message on the wire when the broker dies is gone
def test_uplink_broker_killed_mid_run_loses_no_summary_and_keeps_order(
    broker: Broker, persistent_broker: Broker, tmp_path: Path, qos: int
) -> None:
    from .mqtt_flows import small_flow

    recording = _slice(tmp_path, "s.csv", 0, 16000)
    expected = _replay_summaries(tmp_path, recording, f"uplink-replay-{qos}")
    uplink = Collector(persistent_broker.address, "test/#", client_id=f"uplink-collector-{qos}", clean=False)
    flow = small_flow(
        f"uplink-kill-{qos}",
        str(tmp_path / "o.jsonl"),
        broker=broker.address,
        uplink=persistent_broker.address,
        uplink_qos=qos,
    )
    running = _start(flow)
    publisher = threading.Thread(
        target=publish_recording,
        args=(recording, broker.address),
        kwargs={"template": TEMPLATE, "batch": 20, "speed": 4.0, "eos_topic": "plant/eos"},
    )
    publisher.start()
    _wait(lambda: len(uplink.messages) >= 3, 10, "the first summaries upstream")
    persistent_broker.kill()
    time.sleep(0.5)
    persistent_broker.start()
    publisher.join(30)
    report = running.join(30)
    got = uplink.wait_for(len(expected), 15)
    uplink.close()
    assert report.stats.counts.get("mqtt.sink_disconnects", 0) >= 1, "the outage did not hit the sink"
    assert report.stats.counts.get("mqtt.sink_left_in_spool", 0) == 0
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for _topic, payload in got:  # QoS 1 is at least once: keep the first copy
        rec = json.loads(payload)
        seen.setdefault((rec["sensor"], rec["interval"][0]), rec)
    delivered = list(seen.values())
    assert _comparable(delivered) == _comparable(expected)
    for sensor in {r["sensor"] for r in expected}:
        mine = [r["interval"][0] for r in delivered if r["sensor"] == sensor]
        assert mine == sorted(mine), f"{sensor}: summaries out of order"


def _edgeflow_run(
    target: str, timeout: float = 60, report_json: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'mqtt'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    extra = [] if report_json is None else ["--report-json", str(report_json)]
    return subprocess.run(
        [sys.executable, "-m", "edgeflow", "run", target, "--quiet", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_store_and_forward_survives_a_process_restart(broker: Broker, tmp_path: Path) -> None:
    """Issue 8.10: with the default drain_timeout_s and the uplink down the run ends; the outbox keeps the rest."""
    spool = tmp_path / "outbox.sqlite"
    first, second = _slice(tmp_path, "a.csv", 0, 6000), _slice(tmp_path, "b.csv", 6000, 8000)
    dead_port = _free_port()
    target = (
        f"tests/mqtt/mqtt_flows.py:small_flow('sf-1', '{tmp_path / 'one.jsonl'}', recording='{first}', "
        f"uplink='127.0.0.1:{dead_port}', spool='{spool}')"
    )
    report_json = tmp_path / "one.report.json"
    done = _edgeflow_run(target, report_json=report_json)  # hung forever in MqttSinkPartition.close before the fix
    assert done.returncode == 0, done.stderr
    one = _summaries(tmp_path / "one.jsonl")
    with sqlite3.connect(spool) as db:
        queued = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY seq")]
    assert queued == one and len(one) > 10
    assert json.loads(report_json.read_text())["counts"]["mqtt.sink_left_in_spool"] == len(one)
    assert f"{len(one)} messages left in the outbox" in done.stderr
    uplink = Collector(broker.address, "test/#")
    target = (
        f"tests/mqtt/mqtt_flows.py:small_flow('sf-2', '{tmp_path / 'two.jsonl'}', recording='{second}', "
        f"uplink='{broker.address}', spool='{spool}')"
    )
    done = _edgeflow_run(target)
    assert done.returncode == 0, done.stderr
    two = _summaries(tmp_path / "two.jsonl")
    got = [json.loads(payload) for _topic, payload in uplink.wait_for(len(one) + len(two), 10)]
    uplink.close()
    assert got == one + two  # the backlog first, in order, then the new run's summaries
    with sqlite3.connect(spool) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_same_recording_same_summaries_over_mqtt_as_over_replay(broker: Broker, tmp_path: Path) -> None:
    recording = _slice(tmp_path, "s20.csv", 0, 40000)
    replayed = tmp_path / "replay.jsonl"
    FlowThread(load_flow(f"flows/pump_vibration.py:make_flow(recording='{recording}', out='{replayed}')")).join(60)
    live = tmp_path / "live.jsonl"
    flow = load_flow(
        f"flows/pump_mqtt.py:make_flow(broker='{broker.address}', out='{live}', spool=None, "
        f"codec='csv', name='pump_mqtt_test')"
    )
    uplink = Collector(broker.address, "edgeflow/pump_mqtt_test/#")
    running = _start(flow)
    publish_recording(recording, broker.address, template=TEMPLATE, codec="csv", batch=50, eos_topic="plant/eos")
    report = running.join(60)
    assert report.stats.samples_in == 40000 and report.stats.dead_letters == 0
    expected = _comparable(_summaries(replayed))
    assert len(expected) >= 8
    assert _comparable(_summaries(live)) == expected
    upstream = [json.loads(p) for _t, p in uplink.wait_for(len(expected), 10)]
    uplink.close()
    assert _comparable(upstream) == expected


def test_run_fails_fast_without_a_broker() -> None:
    port = _free_port()
    done = subprocess.run(
        [sys.executable, "-m", "edgeflow", "run", f"flows/pump_mqtt.py:make_flow(broker='127.0.0.1:{port}')"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert f"no MQTT broker reachable at 127.0.0.1:{port}" in done.stderr
    assert f"mosquitto -p {port}" in done.stderr and "apt-get install mosquitto" in done.stderr


def test_record_captures_what_publish_plays(broker: Broker, tmp_path: Path) -> None:
    from edgeflow.cli import app

    out = tmp_path / "rec.jsonl"
    ready = threading.Event()
    result: list[Any] = []
    recorder = threading.Thread(
        target=lambda: result.append(
            record(
                broker.address,
                ["plant/+/+/accel"],
                out,
                template="plant/{line}/{sensor}/accel",
                channels=["accel"],
                count=3000,
                duration_s=20,
                on_ready=ready.set,
            )
        )
    )
    recorder.start()
    assert ready.wait(10)
    cli = CliRunner().invoke(
        app,
        [
            "publish",
            str(RECORDING),
            "--broker",
            broker.address,
            "--limit",
            "3000",
            "--batch",
            "10",
            "--rate",
            "100000",
            "--topic-template",
            TEMPLATE,
        ],
    )
    assert cli.exit_code == 0, cli.output
    recorder.join(20)
    assert result and result[0].samples == 3000
    _, rows = read_recording(RECORDING, limit=3000)
    recorded = [json.loads(line) for line in out.read_text().splitlines()]
    by_sensor: dict[str, list[tuple[float, float]]] = {}
    for sensor, ts, values in rows:
        by_sensor.setdefault(sensor, []).append((ts, values[0]))
    got: dict[str, list[tuple[float, float]]] = {}
    for r in recorded:
        got.setdefault(r["sensor"], []).append((r["ts"], r["accel"]))
    assert got == by_sensor  # each sensor's samples, exactly and in order
    _, again = read_recording(out)
    assert sum(1 for _ in again) == 3000  # the recording replays


def test_outbox_left_by_a_run_with_more_workers_is_taken_over(broker: Broker, tmp_path: Path) -> None:
    from edgeflow.mqtt.sink import MqttSink, MqttSinkConfig
    from edgeflow.mqtt.spool import Spool

    spool = tmp_path / "outbox.sqlite"
    orphan = Spool(tmp_path / "outbox.w1.sqlite", capacity=100)  # what worker 1 of a 2-worker run left behind
    orphan.put([(f"left/{i}", f"m{i}".encode(), 1, False, 0) for i in range(3)])
    orphan.close()
    got = Collector(broker.address, "left/#")
    cfg = MqttSinkConfig.model_validate({"broker": broker.address, "spool": spool, "drain_timeout_s": 5})
    name = f"adopt-{os.urandom(3).hex()}"
    stats = FlowStats()
    part = MqttSink("uplink", cfg, name, stats).open(0, 1)
    try:
        assert [payload for _t, payload in got.wait_for(3)] == [b"m0", b"m1", b"m2"]
    finally:
        part.close()
        got.close()
    assert stats.counts["mqtt.sink_adopted"] == 3
    assert not (tmp_path / "outbox.w1.sqlite").exists()
