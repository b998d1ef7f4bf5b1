"""Move recordings between files and MQTT.

:func:`publish_recording` plays a recording to a broker; :func:`record`
captures live traffic into the replay JSONL format (``ts``, ``sensor``, one
key per channel).

A recorded file replays with ``eo.replay(...)``, so field data becomes a regression test.
Recordings are read by :func:`edgeflow.recordings.read_recording`, the parser replay uses.

>>> PublishReport(samples=1000, messages=40, seconds=0.5, acked=True).samples_per_s
2000.0
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix
from edgeflow.mqtt.codecs import CodecName, PayloadError, make_codec
from edgeflow.mqtt.topics import TopicTemplate
from edgeflow.recordings import read_recording

__all__ = ["PublishReport", "RecordReport", "publish_recording", "record"]


@dataclass(frozen=True)
class PublishReport:
    """What :func:`publish_recording` sent."""

    samples: int
    messages: int
    seconds: float
    acked: bool
    """Whether the broker acknowledged every QoS 1 message before the deadline."""

    @property
    def samples_per_s(self) -> float:
        """Achieved publish rate."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class _Publisher:
    """A paho client driven from the calling thread (no network thread): the fastest way to publish from Python."""

    def __init__(self, broker: BrokerConfig, qos: int) -> None:
        self.qos = qos
        self.sent = 0
        self.acked = 0
        self.client = make_client(broker, f"edgeflow-publish-{unique_suffix()}")
        self.client.max_inflight_messages_set(1000)
        self.client.on_publish = self._on_publish
        try:
            self.client.connect(broker.host, broker.port, broker.keepalive_s)
        except OSError as exc:
            msg = f"no MQTT broker reachable at {broker.address} ({exc.strerror or exc})"
            raise ConnectionError(msg) from None

    def _on_publish(self, *_args: Any) -> None:
        self.acked += 1

    def publish(self, topic: str, payload: bytes, props: dict[str, str] | None = None) -> None:
        properties = None
        if props:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = list(props.items())
        self.client.publish(topic, payload, qos=self.qos, properties=properties)
        self.sent += 1
        if self.sent % 64 == 0:
            self.client.loop(0)

    def idle(self, seconds: float) -> None:
        """Serve the network (acks, keepalive) for about *seconds*."""
        deadline = time.perf_counter() + seconds
        self.client.loop(min(max(seconds, 0.0), 0.01))
        remaining = deadline - time.perf_counter()
        if remaining > 0.0002:
            time.sleep(remaining)

    def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            self.client.loop(0.01)
        return self.acked >= self.sent

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(0.01)


def publish_recording(
    path: str | Path,
    broker: str | BrokerConfig,
    *,
    template: str = "edgeflow/{sensor}/samples",
    codec: CodecName = "json",
    rate: float | None = None,
    speed: float | None = None,
    batch: int = 1,
    qos: int = 1,
    rate_hz: float | None = None,
    eos_topic: str | None = None,
    limit: int | None = None,
    time_column: str = "ts",
    sensor_column: str = "sensor",
    ack_timeout_s: float = 30.0,
) -> PublishReport:
    """Publish a recording sample by sample (or *batch* samples of one sensor per message).

    Pace: *rate* samples per second, or *speed* times real time (event time), or
    as fast as possible when both are ``None``. Each sensor's samples go out in
    order on ``template.render(sensor=...)``; *eos_topic* gets an empty message
    after everything else was acknowledged.
    """
    if rate is not None and speed is not None:
        msg = "give rate (samples/s) or speed (times real time), not both"
        raise ValueError(msg)
    if batch < 1:
        msg = f"batch must be at least 1, got {batch}"
        raise ValueError(msg)
    broker_cfg = broker if isinstance(broker, BrokerConfig) else BrokerConfig.model_validate(broker)
    channels, rows = read_recording(path, time_column=time_column, sensor_column=sensor_column, limit=limit)
    coder = make_codec(codec, channels, rate_hz=rate_hz)
    tpl = TopicTemplate(template)
    topics: dict[str, str] = {}
    pending: dict[str, list[tuple[float, tuple[float, ...]]]] = {}
    pub = _Publisher(broker_cfg, qos)
    n = 0
    t0 = time.perf_counter()
    ts0: float | None = None

    def flush(sensor: str) -> None:
        samples = pending.pop(sensor)
        topic = topics.get(sensor) or topics.setdefault(sensor, tpl.render(sensor=sensor))
        payload, props = coder.encode(samples, rate_hz)
        pub.publish(topic, payload, props)

    try:
        for sensor, ts, values in rows:
            if rate is not None:
                due = t0 + n / rate
            elif speed is not None:
                ts0 = ts if ts0 is None else ts0
                due = t0 + (ts - ts0) / speed
            else:
                due = 0.0
            ahead = due - time.perf_counter()
            if ahead > 0.0005:
                pub.idle(ahead)
            pending.setdefault(sensor, []).append((ts, values))
            if len(pending[sensor]) >= batch:
                flush(sensor)
            n += 1
        for sensor in list(pending):
            flush(sensor)
        acked = pub.wait_acked(ack_timeout_s) if qos else True
        seconds = time.perf_counter() - t0
        if eos_topic is not None:
            pub.publish(eos_topic, b"")
            acked = (pub.wait_acked(ack_timeout_s) if qos else True) and acked
    finally:
        pub.close()
    return PublishReport(n, pub.sent, seconds, acked)


@dataclass(frozen=True)
class RecordReport:
    """What :func:`record` captured."""

    samples: int
    messages: int
    bad_messages: int
    seconds: float


def record(
    broker: str | BrokerConfig,
    filters: Sequence[str],
    out: str | Path,
    *,
    template: str | None = None,
    key: str | None = None,
    codec: CodecName = "json",
    channels: Sequence[str] = ("value",),
    rate_hz: float | None = None,
    duration_s: float | None = None,
    count: int | None = None,
    qos: int = 1,
    dead_letters: TextIO | None = None,
    on_ready: Callable[[], None] | None = None,
) -> RecordReport:
    """Subscribe to *filters* and write each decoded sample as a JSONL line ``{"ts", "sensor", <channels>}``.

    The sensor key comes from *template* (default: the whole topic). Stops
    after *duration_s* seconds or *count* samples (at least one must be given
    unless you stop it with Ctrl-C); payloads that do not decode are counted
    and, with *dead_letters*, written there as JSONL. *on_ready* is called once subscribed.
    """
    broker_cfg = broker if isinstance(broker, BrokerConfig) else BrokerConfig.model_validate(broker)
    tpl = TopicTemplate(template, key) if template else None
    coder = make_codec(codec, channels, rate_hz=rate_hz)
    needs_props = codec == "f32"
    done = threading.Event()
    lock = threading.Lock()
    counts = {"samples": 0, "messages": 0, "bad": 0}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = path.open("w", encoding="utf-8")

    def bad(topic: str, reason: str, payload: bytes) -> None:
        counts["bad"] += 1
        if dead_letters is not None:
            text = payload[:512].decode("utf-8", errors="backslashreplace")
            dead_letters.write(json.dumps({"topic": topic, "reason": reason, "payload": text}) + "\n")

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        with lock:
            if done.is_set():
                return
            counts["messages"] += 1
            topic = message.topic
            sensor = tpl.sensor_key(topic) if tpl else topic
            if sensor is None:
                bad(topic, "topic does not fit the template", message.payload)
                return
            fields = tpl.match(topic) if (tpl and needs_props) else None
            props = None
            if needs_props and getattr(message, "properties", None) is not None:
                props = dict(getattr(message.properties, "UserProperty", []) or [])
            try:
                samples = coder.decode(message.payload, fields, props)
            except PayloadError as exc:
                bad(topic, str(exc), message.payload)
                return
            if count is not None:
                samples = samples[: count - counts["samples"]]
            for ts, values in samples:
                sink.write(json.dumps({"ts": ts, "sensor": sensor, **dict(zip(coder.channels, values, strict=True))}))
                sink.write("\n")
            counts["samples"] += len(samples)
            if count is not None and counts["samples"] >= count:
                done.set()

    subscribed = threading.Event()
    client = make_client(broker_cfg, f"edgeflow-record-{unique_suffix()}")
    client.on_connect = lambda c, *_: c.subscribe([(f, qos) for f in filters])
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    t0 = time.perf_counter()
    connect_async(client, broker_cfg)
    try:
        if not subscribed.wait(10):
            msg = f"could not subscribe at {broker_cfg.address} within 10 s; is a broker running there?"
            raise ConnectionError(msg)
        if on_ready is not None:
            on_ready()
        done.wait(duration_s)
        done.set()
    finally:
        client.disconnect()
        client.loop_stop()
        with lock:
            sink.close()
    return RecordReport(counts["samples"], counts["messages"], counts["bad"], time.perf_counter() - t0)
