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

import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

from edgeflow.mqtt.client import (
    BrokerConfig,
    connect_async,
    describe_connect_error,
    describe_refusal,
    make_client,
    unique_suffix,
)
from edgeflow.mqtt.codecs import Codec, CodecName, JsonCodec, PayloadError, Stamp, make_codec, read_stamp
from edgeflow.mqtt.topics import TopicTemplate
from edgeflow.recordings import read_recording

__all__ = ["DEFAULT_RECORD_TEMPLATE", "PublishReport", "Publisher", "RecordReport", "publish_recording", "record"]


@dataclass(frozen=True)
class PublishReport:
    """What :func:`publish_recording` sent."""

    samples: int
    messages: int
    seconds: float
    acked: bool
    """Whether the broker acknowledged every QoS 1 message before the deadline."""
    reconnects: int = 0
    """Times the connection was lost and made again (unacknowledged messages were sent again)."""
    publisher: str = ""
    """The id stamped on every message (user property ``pub``) with its per-topic ``seq``."""

    @property
    def samples_per_s(self) -> float:
        """Achieved publish rate."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0


_INFLIGHT = 4096
"""Unacknowledged QoS 1 messages a publisher keeps in flight (paho's default is 20; Mosquitto's own limit applies)."""
_WRITE_EVERY = 32
"""Messages queued before the publisher writes them to the socket in one ``send`` and reads acknowledgements."""


def _no_op(*_args: Any) -> None:
    """Do nothing: as paho's ``on_socket_register_write`` hook it makes ``publish()`` queue without writing."""


@functools.cache
def _packed_properties() -> tuple[Any, Any]:
    """Return a paho PUBLISH properties class packing from bytes made once, and paho's length encoder."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties, VariableByteIntegers

    class PackedProperties(Properties):  # type: ignore[misc]
        """User properties already in wire form (paho builds name tables per instance and packs by scanning)."""

        packetType = PacketTypes.PUBLISH

        def __init__(self, packed: bytes, pairs: list[tuple[str, str]]) -> None:
            object.__setattr__(self, "_packed", packed)
            object.__setattr__(self, "UserProperty", pairs)

        def pack(self) -> bytes:
            packed: bytes = self.__dict__["_packed"]
            return packed

        def __str__(self) -> str:
            return str({"UserProperty": self.__dict__["UserProperty"]})

    return PackedProperties, VariableByteIntegers.encode


def _user_properties(props: dict[str, str]) -> Any:
    """Return MQTT v5 PUBLISH properties holding *props* as user properties, in wire form."""
    cls, encode = _packed_properties()
    body = b"".join([b"\x26" + _utf8(k) + _utf8(v) for k, v in props.items()])  # 0x26: User Property
    return cls(encode(len(body)) + body, list(props.items()))


def _utf8(text: str) -> bytes:
    """Encode *text* as an MQTT UTF-8 string: two-byte length, then the bytes."""
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


class _NoSessionError(Exception):
    """The broker refused the client or sent no CONNACK."""


class Publisher:
    """A paho client driven from the calling thread (no network thread), which reconnects after a broker restart.

    Each message can be stamped with a per-topic sequence number (:meth:`stamp`) so that a subscriber can count
    what was lost on the way. When the connection drops, :meth:`publish` reconnects (backoff from
    ``reconnect_min_s`` up to ``reconnect_max_s``, for at most *reconnect_timeout_s*) and carries on; paho sends
    the unacknowledged QoS 1 messages again (they carry the same stamp, so a subscriber sees duplicates).
    """

    def __init__(self, broker: BrokerConfig, qos: int = 1, *, reconnect_timeout_s: float = 60.0) -> None:
        self.qos = qos
        self.broker = broker
        self.sent = 0
        self.acked = 0
        self.reconnects = 0
        self.publisher_id = unique_suffix()
        self.reconnect_timeout_s = reconnect_timeout_s
        self._seqs: dict[str, int] = {}
        self._connected = False
        self._refused: str | None = None
        self.client = make_client(broker, f"edgeflow-publish-{self.publisher_id}")
        self.client.max_inflight_messages_set(_INFLIGHT)
        self.client.max_queued_messages_set(0)  # 0: no limit (the pace bounds what waits)
        # an external-loop write hook: publish() only queues; our loop() writes the queue in one send
        self.client.on_socket_register_write = _no_op
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        try:
            self.client.connect(broker.host, broker.port, broker.keepalive_s)
            self._await_connack(10.0)
        except _NoSessionError as exc:
            raise ConnectionError(str(exc)) from None
        except OSError as exc:
            reason = describe_connect_error(exc, broker)
            if reason.startswith("TLS"):
                msg = f"the TLS connection to {broker.address} failed: {reason}"
            else:
                msg = f"no MQTT broker reachable at {broker.address} ({reason})"
            raise ConnectionError(msg) from None

    def _on_publish(self, *_args: Any) -> None:
        self.acked += 1

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            self._refused = describe_refusal(reason_code)
        else:
            self._connected, self._refused = True, None

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected = False

    def _await_connack(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._connected and self._refused is None and time.monotonic() < deadline:
            if self.client.loop(0.05) != 0:
                break
        if self._refused is not None:
            msg = f"{self.broker.address}: {self._refused}"
            raise _NoSessionError(msg)
        if not self._connected:
            msg = f"no MQTT connection to {self.broker.address} (no CONNACK within {timeout:g} s)"
            raise _NoSessionError(msg)

    def _reconnect(self) -> float:
        """Connect again with backoff; return the seconds it took. Raise ``ConnectionError`` after the timeout."""
        started = time.monotonic()
        delay = self.broker.reconnect_min_s
        while True:
            try:
                self.client.reconnect()
                self._await_connack(5.0)
            except _NoSessionError as exc:
                last = str(exc)
            except OSError as exc:
                last = describe_connect_error(exc, self.broker)
            else:
                self.reconnects += 1
                return time.monotonic() - started
            if self._refused is not None or time.monotonic() - started > self.reconnect_timeout_s:
                msg = f"lost the connection to {self.broker.address} and could not connect again: {last}"
                raise ConnectionError(msg)
            time.sleep(delay)
            delay = min(2 * delay, self.broker.reconnect_max_s)

    def stamp(self, topic: str) -> Stamp:
        """Return the next sequence stamp for *topic* (1, 2, 3 ... per topic)."""
        seq = self._seqs[topic] = self._seqs.get(topic, 0) + 1
        return Stamp(self.publisher_id, seq)

    def publish(self, topic: str, payload: bytes, props: dict[str, str] | None = None) -> float:
        """Publish one message; return the seconds spent reconnecting first (0.0 when connected)."""
        away = 0.0
        if not self._connected:
            away = self._reconnect()
        properties = _user_properties(props) if props and self.broker.protocol == "5" else None
        self.client.publish(topic, payload, qos=self.qos, properties=properties)
        self.sent += 1
        if self.sent % _WRITE_EVERY == 0:
            self.client.loop(0)
        return away

    def idle(self, seconds: float) -> None:
        """Serve the network (acks, keepalive) for about *seconds*."""
        deadline = time.perf_counter() + seconds
        self.client.loop(min(max(seconds, 0.0), 0.01))
        remaining = deadline - time.perf_counter()
        if remaining > 0.0002:
            time.sleep(remaining)

    def wait_acked(self, timeout: float) -> bool:
        """Serve the network until every QoS 1 message is acknowledged (reconnecting if needed), or *timeout*."""
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            if not self._connected:
                self._reconnect()
            self.client.loop(0.01)
        return self.acked >= self.sent

    def close(self) -> None:
        """Disconnect."""
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
    stamp: bool = True,
    reconnect_timeout_s: float = 60.0,
) -> PublishReport:
    """Publish a recording sample by sample (or *batch* samples of one sensor per message).

    Pace: *rate* samples per second, or *speed* times real time (event time), or
    as fast as possible when both are ``None``. Each sensor's samples go out in
    order on ``template.render(sensor=...)``; *eos_topic* gets an empty message
    after everything else was acknowledged. With *stamp*, every message carries
    its per-topic sequence number (MQTT v5 user properties ``seq``/``pub``; with
    MQTT 3.1.1, JSON keys of the payload, ``json`` codec only). After a broker
    restart the publisher reconnects and resumes at the same pace.
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
    in_payload = stamp and broker_cfg.protocol != "5" and isinstance(coder, JsonCodec)
    tpl = TopicTemplate(template)
    topics: dict[str, str] = {}
    pending: dict[str, list[tuple[float, tuple[float, ...]]]] = {}
    pub = Publisher(broker_cfg, qos, reconnect_timeout_s=reconnect_timeout_s)
    n = 0
    t0 = time.perf_counter()
    ts0: float | None = None

    def flush(sensor: str) -> float:
        samples = pending.pop(sensor)
        topic = topics.get(sensor) or topics.setdefault(sensor, tpl.render(sensor=sensor))
        mark = pub.stamp(topic) if stamp else None
        if in_payload and mark is not None:
            return pub.publish(topic, cast(JsonCodec, coder).encode_in_payload(samples, mark))
        payload, props = coder.encode(samples, rate_hz, mark)
        return pub.publish(topic, payload, props)

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
                t0 += flush(sensor)  # time spent reconnecting does not count: the pace resumes, no burst
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
    return PublishReport(n, pub.sent, seconds, acked, pub.reconnects, pub.publisher_id)


@dataclass(frozen=True)
class RecordReport:
    """What :func:`record` captured."""

    samples: int
    messages: int
    bad_messages: int
    seconds: float
    lost: int = 0
    """Messages missing from the publishers' sequence stamps (lost before they reached the recorder)."""
    duplicates: int = 0
    """Stamped messages received again (not written twice)."""
    channels: tuple[str, ...] = ()
    """The channel names written."""


DEFAULT_RECORD_TEMPLATE = "plant/{line}/{sensor}/accel"
"""What ``edgeflow record`` listens to by default: the topics ``edgeflow publish`` sends to by default."""


def _json_channels(payload: bytes) -> tuple[str, ...] | None:
    """Channel names of a JSON sample as ``edgeflow publish`` writes it: its keys but ``ts`` and the stamp.

    >>> _json_channels(b'{"ts": 1, "accel": 0.5, "seq": 3, "pub": "a"}'), _json_channels(b"[1]")
    (('accel',), None)
    """
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    head = doc[0] if isinstance(doc, list) and doc else doc
    if not isinstance(head, dict):
        return None
    names = tuple(k for k in head if k not in ("ts", "seq", "pub", "sensor"))
    return names if names and "values" not in names else None


def record(
    broker: str | BrokerConfig,
    filters: Sequence[str] = (),
    out: str | Path = "recording.jsonl",
    *,
    template: str | None = None,
    key: str | None = None,
    codec: CodecName = "json",
    channels: Sequence[str] | None = None,
    rate_hz: float | None = None,
    duration_s: float | None = None,
    count: int | None = None,
    qos: int = 1,
    dead_letters: TextIO | None = None,
    on_ready: Callable[[], None] | None = None,
) -> RecordReport:
    """Subscribe to *filters* and write each decoded sample as a JSONL line ``{"ts", "sensor", <channels>}``.

    The sensor key comes from *template* (default: the whole topic; with neither *filters* nor *template*,
    :data:`DEFAULT_RECORD_TEMPLATE`, what ``edgeflow publish`` sends to). *filters* default to the template's.
    *channels* default to the keys of the first JSON sample (what ``publish`` sends, e.g. ``accel``), or
    ``value`` for the other codecs. Stops after *duration_s* seconds or *count* samples (at least one must be
    given unless you stop it with Ctrl-C); payloads that do not decode are counted and, with *dead_letters*,
    written there as JSONL. Stamped messages (``seq``/``pub``) are checked: gaps are counted as lost and
    repeats are not written twice. *on_ready* is called once subscribed.
    """
    broker_cfg = broker if isinstance(broker, BrokerConfig) else BrokerConfig.model_validate(broker)
    if template is None and not filters:
        template = DEFAULT_RECORD_TEMPLATE
    tpl = TopicTemplate(template, key) if template else None
    subscriptions = list(filters) or [cast(TopicTemplate, tpl).filter]
    coders: list[Codec] = (
        [] if channels is None and codec == "json" else [make_codec(codec, channels or ("value",), rate_hz=rate_hz)]
    )
    needs_fields = codec == "f32"
    done = threading.Event()
    lock = threading.Lock()
    counts = {"samples": 0, "messages": 0, "bad": 0, "lost": 0, "duplicates": 0}
    seqs: dict[str, tuple[str, int]] = {}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = path.open("w", encoding="utf-8")

    def bad(topic: str, reason: str, payload: bytes) -> None:
        counts["bad"] += 1
        if dead_letters is not None:
            text = payload[:512].decode("utf-8", errors="backslashreplace")
            dead_letters.write(json.dumps({"topic": topic, "reason": reason, "payload": text}) + "\n")

    def in_sequence(topic: str, stamp: Stamp | None) -> bool:
        if stamp is None:
            return True
        last = seqs.get(topic)
        if last is not None and last[0] == stamp.publisher:
            if stamp.seq <= last[1]:
                counts["duplicates"] += 1
                return False
            counts["lost"] += stamp.seq - last[1] - 1
        seqs[topic] = (stamp.publisher, stamp.seq)
        return True

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
            fields = tpl.match(topic) if (tpl and needs_fields) else None
            props = None
            if getattr(message, "properties", None) is not None:
                props = dict(getattr(message.properties, "UserProperty", []) or [])
            if not coders:  # channels named by the first JSON sample
                coders.append(make_codec("json", _json_channels(message.payload) or ("value",)))
            coder = coders[0]
            try:
                samples, stamp = coder.decode_stamped(message.payload, fields, props)
            except PayloadError as exc:
                in_sequence(topic, read_stamp(props))
                bad(topic, str(exc), message.payload)
                return
            if not in_sequence(topic, stamp):
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
    refused: list[str] = []

    def on_connect(client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            refused.append(describe_refusal(reason_code))
            subscribed.set()
            return
        client.subscribe([(f, qos) for f in subscriptions])

    client = make_client(broker_cfg, f"edgeflow-record-{unique_suffix()}")
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    t0 = time.perf_counter()
    connect_async(client, broker_cfg)
    try:
        if not subscribed.wait(10) or refused:
            error = getattr(client, "last_error", None)
            why = refused[0] if refused else describe_connect_error(error, broker_cfg) if error else "no answer"
            msg = f"could not subscribe at {broker_cfg.address} within 10 s: {why}"
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
    names = coders[0].channels if coders else ()
    return RecordReport(
        counts["samples"],
        counts["messages"],
        counts["bad"],
        time.perf_counter() - t0,
        counts["lost"],
        counts["duplicates"],
        names,
    )
