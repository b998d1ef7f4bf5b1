"""A hypothesis fuzzer for MQTT payloads against a real Mosquitto ("Done when" of issue 8).

Each example runs a flow whose source reads one codec (json, csv or f32) and publishes a random mix of valid
payloads, random bytes, random JSON, CSV-like text and float32 frames (NaN, inf, out of range, missing
metadata) on the source's topics and on topics outside its template, every message stamped with its sequence
number. For every run: messages sent = processed + dead letters + counted drops (the hand-off queue's
``mqtt.dropped``, the broker's ``mqtt.lost_upstream``) + duplicates, and what was processed is exactly what
the payloads held.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.mqtt.client import BrokerConfig
from edgeflow.mqtt.codecs import PayloadError, make_codec, stamp_properties
from edgeflow.mqtt.player import Publisher
from edgeflow.mqtt.topics import TopicTemplate

from .mqtt_support import Broker, FlowThread

TEMPLATE = "plant/{line}/{sensor}/accel"
RANGE = (-100.0, 100.0)
RATE_HZ = 100.0

_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-150, max_value=150),
    st.integers(min_value=-(2**70), max_value=2**70),
)
_json = st.recursive(
    st.none() | st.booleans() | _number | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["ts", "accel", "value", "values", "seq", "pub", "x"]), inner, max_size=4)
    ),
    max_leaves=8,
)
_csv_cell = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "x", "2026-03-02T08:00:01Z", "2026-03-02T08:00:01", "1e400", " 1.5"]),
    _number.map(repr),
)
_samples = st.lists(
    st.tuples(st.floats(min_value=1e9, max_value=4e9), st.floats(min_value=-99.0, max_value=99.0)),
    min_size=1,
    max_size=4,
)


@st.composite
def _message(draw: st.DrawFn, codec: str) -> tuple[str, bytes, dict[str, str]]:
    """A topic, a payload and its user properties (before the sequence stamp)."""
    sensor = draw(st.sampled_from(["p1", "p2", "p3"]))
    topic = draw(st.sampled_from([f"plant/l1/{sensor}/accel", f"plant/l1/{sensor}/accel", f"plant/l1/{sensor}/temp"]))
    kind = draw(st.sampled_from(["valid", "valid", "bytes", "json", "csv", "f32"]))
    props: dict[str, str] = {}
    if kind == "valid":
        samples = [(ts, (v,)) for ts, v in draw(_samples)]
        payload, props = make_codec(codec, ("accel",), rate_hz=RATE_HZ).encode(samples, RATE_HZ)  # type: ignore[arg-type]
        if draw(st.booleans()) and len(payload) > 2:
            payload = payload[: draw(st.integers(1, len(payload) - 1))]  # cut short on the way
    elif kind == "bytes":
        payload = draw(st.binary(max_size=48))
    elif kind == "json":
        payload = json.dumps(draw(_json), allow_nan=True).encode()
    elif kind == "csv":
        rows = draw(st.lists(st.lists(_csv_cell, min_size=1, max_size=3), min_size=1, max_size=3))
        payload = "\n".join(",".join(row) for row in rows).encode()
    else:
        floats = draw(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=6))
        payload = struct.pack(f"<{len(floats)}f", *floats) + draw(st.sampled_from([b"", b"", b"\x00"]))
        if draw(st.booleans()):
            props = {"ts": draw(st.sampled_from(["1772438400.5", "yesterday", "nan", "1e12"])), "rate_hz": "100"}
    return topic, payload, props


def _expected(codec: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> tuple[int, int, int]:
    """What the flow must do with *messages*: (accepted messages, their samples, dead letters)."""
    coder = make_codec(codec, ("accel",), RANGE, RATE_HZ)  # type: ignore[arg-type]
    template = TopicTemplate(TEMPLATE)
    accepted = samples = dead = 0
    for topic, payload, props in messages:
        fields = template.match(topic)
        if fields is None:
            dead += 1
            continue
        try:
            got = coder.decode(payload, fields, props)
        except PayloadError:
            dead += 1
            continue
        accepted += 1
        samples += len(got)
    return accepted, samples, dead


@pytest.mark.parametrize("codec", ["json", "csv", "f32"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), queue_size=st.sampled_from([10_000, 4]))
def test_every_message_is_processed_dead_lettered_or_counted(
    broker: Broker, tmp_path: Path, codec: str, data: st.DataObject, queue_size: int
) -> None:
    messages = data.draw(st.lists(_message(codec), min_size=1, max_size=40), label="messages")
    name = f"fuzz-{codec}-{os.urandom(3).hex()}"
    out, dead = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.dead.jsonl"
    flow = Flow(name, dead_letter_path=str(dead))
    samples = eo.mqtt_source(
        "samples",
        flow,
        TEMPLATE,
        topics=["plant/#"],  # topics outside the template arrive too: dead letters
        broker=broker.address,
        channels=["accel"],
        codec=codec,  # type: ignore[arg-type]
        rate_hz=RATE_HZ,
        value_range=RANGE,
        eos_topic="eos",
        idle_timeout_s=10.0,  # a safety net: the end-of-stream marker arrives last and is never dropped
        queue_size=queue_size,
        overload="drop_oldest",  # a tiny queue drops: counted, never silent
    )
    eo.output("out", eo.map("rows", samples, lambda b: {"sensor": b.sensor, "ts": b.ts.tolist()}), eo.jsonl(out))
    running = FlowThread(flow)
    for _ in range(1000):  # at most 10 s
        if running.count("mqtt.subscriptions") >= 1 or not running.thread.is_alive():
            break
        running.thread.join(0.01)
    publisher = Publisher(BrokerConfig.model_validate(broker.address))
    try:
        for topic, payload, props in messages:
            publisher.publish(topic, payload, {**props, **stamp_properties(publisher.stamp(topic))})
        assert publisher.wait_acked(10)
        publisher.publish("eos", b"")
        assert publisher.wait_acked(10)
    finally:
        publisher.close()
    report = running.join(30)
    counts = report.stats.counts
    taken = counts.get("mqtt.messages", 0) - 1  # the end-of-stream marker
    accepted, lost = counts.get("mqtt.accepted", 0), counts.get("mqtt.lost_upstream", 0)
    dropped, repeated = counts.get("mqtt.dropped", 0), counts.get("mqtt.duplicate_messages", 0)
    letters = [json.loads(line) for line in dead.read_text().splitlines()] if dead.is_file() else []
    assert len(letters) == report.stats.dead_letters
    assert all(letter["step"] == "samples" and letter["reason"] for letter in letters)
    # sent = processed + dead letters + counted drops (+ duplicates, none here: nothing is sent twice)
    assert len(messages) == accepted + report.stats.dead_letters + dropped + lost + repeated, counts
    assert taken == accepted + report.stats.dead_letters + repeated
    assert dropped == lost == 0 or queue_size < 10_000  # the hand-off queue drops only when it is tiny
    assert dropped + lost == 0 or counts.get("mqtt.dropped", 0) > 0  # the broker itself dropped nothing
    handed_on = sum(len(json.loads(line)["ts"]) for line in out.read_text().splitlines()) if out.is_file() else 0
    assert handed_on == report.stats.samples_in
    if dropped == 0:  # nothing dropped: exactly what the payloads held
        got = (accepted, report.stats.samples_in, report.stats.dead_letters)
        assert got == _expected(codec, messages)


def test_the_accounting_counters_exist_in_a_plain_run(broker: Broker, tmp_path: Path) -> None:
    """A run with nothing special still reports mqtt.accepted (what the identity above adds up)."""
    flow = Flow("accounting")
    samples = eo.mqtt_source("samples", flow, "s/{sensor}", broker=broker.address, eos_topic="eos")
    eo.output("out", samples, eo.jsonl(tmp_path / "o.jsonl"))
    running = FlowThread(flow)
    while running.count("mqtt.subscriptions") < 1 and running.thread.is_alive():
        running.thread.join(0.01)
    publisher = Publisher(BrokerConfig.model_validate(broker.address))
    try:
        publisher.publish("s/a", b'{"ts": 1000000000, "value": 1}')
        publisher.publish("s/a", b"nope")
        publisher.publish("eos", b"")
        assert publisher.wait_acked(10)
    finally:
        publisher.close()
    counts: dict[str, Any] = running.join(20).stats.counts
    assert counts["mqtt.accepted"] == 1 and counts["mqtt.messages"] == 3
