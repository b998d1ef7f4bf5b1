"""edgeflow's paho client reads in large pieces, joins queued packets into one send, and can hand on a PUBLISH's
parts read straight from the packet: nothing is lost, changed or reordered.

A real Mosquitto on loopback; payload sizes from 0 bytes to 200 KiB so that packets straddle the 64 KiB reads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix
from edgeflow.mqtt.player import Publisher

from .mqtt_support import Broker

SIZES = (0, 1, 2, 127, 128, 129, 16_383, 16_384, 65_535, 65_536, 65_537, 200_000)


def _payload(i: int) -> bytes:
    size = SIZES[i % len(SIZES)] if i % 7 == 0 else 20 + i % 50
    return (b"%d:" % i + bytes(range(256)) * (size // 256 + 1))[:size] if size else b""


@pytest.mark.parametrize("parts", [False, True], ids=["on_message", "on_message_parts"])
def test_every_message_arrives_once_in_order_with_its_bytes(broker: Broker, parts: bool) -> None:
    cfg = BrokerConfig.model_validate(broker.address)
    got: list[tuple[str, bytes, dict[str, str] | None]] = []
    ready = threading.Event()
    sub = make_client(cfg, f"test-rx-{unique_suffix()}")

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        props = getattr(m.properties, "UserProperty", None)
        got.append((m.topic, m.payload, dict(props) if props else None))

    def on_parts(topic: str, payload: bytes, props: dict[str, str] | None, _dup: bool, _qos: int, _mid: int) -> None:
        got.append((topic, payload, props))

    sub.on_connect = lambda c, *_: c.subscribe("io/#", qos=1)
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = on_message
    if parts:  # read straight from the packets; paho's way only for what that cannot read
        sub.on_message_parts = on_parts
    connect_async(sub, cfg)
    try:
        assert ready.wait(10)
        pub = Publisher(cfg, 1)
        n = 3_000
        sent = []
        for i in range(n):
            topic = f"io/{i % 3}"
            stamp = pub.stamp(topic)
            props = {"seq": str(stamp.seq), "pub": stamp.publisher}
            pub.publish(topic, _payload(i), props)  # queued, written 32 at a time in one send
            sent.append((topic, _payload(i), props))
        assert pub.wait_acked(30), f"{pub.acked} of {pub.sent} acknowledged"
        pub.close()
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert len(got) == n
    assert got == sent
