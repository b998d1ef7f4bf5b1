"""The MQTT sink with store-and-forward.

Every outgoing message is first committed to the outbox (:class:`~edgeflow.mqtt.spool.Spool`,
SQLite WAL on disk, or memory), then published while the broker is connected,
at most ``max_inflight`` unacknowledged at a time, and deleted from the outbox
only when the broker acknowledges it (PUBACK for QoS 1; written to the socket
for QoS 0). While the broker is away the outbox grows up to ``capacity``; when
it returns the backlog drains in order (alerts first with ``alerts_first``),
before newer messages. A file outbox survives a restart and drains on the next
start. Delivery is at least once at QoS 1: a message in flight when the process stops
is sent again after the restart.

The client runs without paho's network thread. The worker publishes itself, so a
message goes onto the socket in the thread that produced it, with no thread
switch (it only tries the I/O lock and never waits for it). An I/O thread owns
the rest: reconnecting, reading acknowledgements, keepalive, and draining the
backlog after a reconnect. Every paho call holds the I/O lock; paho callbacks
only set flags and enqueue acknowledgements.

Why not paho's own reconnect logic: it lives in ``loop_forever`` (what
``loop_start``'s network thread runs), which owns the socket and takes none of
our locks. A publish from the worker then either goes to that thread (a thread
switch per message, which is what this design removes from the latency path)
or, without the thread, writes to the socket itself, racing paho's loop for
the packet queue. So the I/O thread reconnects itself, by paho's rule: the
delay set with ``reconnect_delay_set`` (``reconnect_min_s``, doubling up to
``reconnect_max_s``), reset once a CONNACK accepts the connection.

Each partition reports through the run's stats: its connection as the link ``uplink:<step>``
(``uplink:<step>#<worker>`` with several workers; down from the start until a CONNACK, so
``/healthz`` fails once it has been down longer than its limit), the outbox depth (``outbox.depth``, summed
over the process's workers) and when its oldest waiting message was queued
(``outbox.oldest_enqueued|<link>``, epoch seconds, 0 when empty).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt, field_validator

from edgeflow.jsontext import dumps
from edgeflow.metrics import FlowStats
from edgeflow.mqtt.client import (
    BrokerConfig,
    configure_connect,
    describe_connect_error,
    describe_refusal,
    make_client,
    unique_suffix,
)
from edgeflow.mqtt.spool import OverflowPolicy, Spool
from edgeflow.mqtt.topics import TopicTemplate
from edgeflow.records import DeadLetter, clip
from edgeflow.sinks import append_dead_letters, ingest_time, to_json, worker_path

__all__ = ["MqttSink", "MqttSinkConfig", "MqttSinkPartition"]

_log = logging.getLogger("edgeflow.mqtt")
_TOPIC_FIELDS = {"flow", "sensor", "kind", "step"}
_AGE_EVERY_S = 0.2
"""The outbox's age is read (one query) at most this often per partition, and whenever it empties."""


class MqttSinkConfig(BaseModel):
    """Settings of :func:`edgeflow.operators.mqtt_sink`.

    >>> MqttSinkConfig(topic="gw/{sensor}/summary").qos
    1
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # inputs may hold a password

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    topic: str = "edgeflow/{flow}/{sensor}/{kind}"
    """Topic template over ``{flow}``, ``{sensor}``, ``{kind}`` (``summary`` or ``alert``) and ``{step}``."""
    alert_topic: str | None = None
    """Topic template for alerts (items with ``anomaly: true``); default: *topic*."""
    qos: int = Field(default=1, ge=0, le=1)
    retain: bool = False
    spool: Path | None = None
    """Outbox file (SQLite); ``None`` keeps it in memory (lost on exit)."""
    capacity: PositiveInt = 100_000
    """Messages the outbox holds."""
    overflow: OverflowPolicy = "drop_oldest"
    alerts_first: bool = False
    """Drain alerts before routine messages after an outage (breaks strict order between them)."""
    max_inflight: PositiveInt = Field(default=100, le=65_535)
    drain_timeout_s: NonNegativeFloat = 5.0
    """At the end of input, how long to wait for the outbox to empty before leaving the rest on disk."""
    client_id: str | None = None
    check_broker: bool | None = None
    """Fail at compile time when no broker answers; default: only without a *spool* file."""
    connect_timeout_s: float = Field(default=3.0, gt=0)

    @field_validator("topic", "alert_topic")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tpl = TopicTemplate(value, key="{topic}")
        unknown = set(tpl.fields) - _TOPIC_FIELDS
        if unknown or "+" in value or "#" in value:
            msg = f"topic {value!r}: levels may be literal or one of {{{'}, {'.join(sorted(_TOPIC_FIELDS))}}}"
            raise ValueError(msg)
        return value


def _is_alert(record: dict[str, Any]) -> bool:
    return record.get("anomaly") is True


class MqttSinkPartition:
    """One worker's MQTT connection and outbox (a :class:`~edgeflow.connectors.SinkPartition`).

    *spool* is this worker's outbox file, or ``None`` for an in-memory outbox.
    """

    def __init__(
        self,
        step_id: str,
        cfg: MqttSinkConfig,
        flow_name: str,
        stats: FlowStats,
        spool: Path | None,
        client_id: str,
        adopt: Sequence[Path] = (),
        dead_letter_path: Path | None = None,
        link: str = "",
    ) -> None:
        self._cfg = cfg
        self._step_id = step_id
        self._dead_letter_path = dead_letter_path
        self._flow = flow_name
        self._stats = stats
        self._topic = TopicTemplate(cfg.topic, key="{topic}")
        self._alert_topic = TopicTemplate(cfg.alert_topic or cfg.topic, key="{topic}")
        self._topics: dict[tuple[str, bool], str] = {}
        self._spool = Spool(spool, cfg.capacity, cfg.overflow, alerts_first=cfg.alerts_first)
        for orphan in adopt:
            moved = self._spool.adopt(orphan)
            self._stats.count("mqtt.sink_adopted", moved)
            _log.info("%s: took over %d messages from %s (left by a run with other workers)", step_id, moved, orphan)
        if len(self._spool):
            self._stats.count("mqtt.sink_backlog_at_start", len(self._spool))
            _log.info("%s: %d messages waiting in %s from a previous run", step_id, len(self._spool), spool)
        self._link = link or f"uplink:{step_id}"
        self._stats.link(self._link, False)  # down until the broker accepts us: its clock starts now
        self._depth = 0  # what this partition added to the outbox.depth gauge (shared by the process's workers)
        self._gauge_lock = threading.Lock()  # the worker and the I/O thread both report
        self._gauged = 0.0  # time.monotonic() of the last outbox age reading
        self._gauges(force=True)
        self._io = threading.Lock()  # held for every paho call: the client has no network thread of its own
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq; under _io
        self._qos0_in_flight: set[int] = set()  # mids of QoS 0 messages not yet written to the socket
        self._rescan = False  # read the outbox from its start next time (rows behind in-flight ones need sending)
        self._acked: deque[int] = deque()  # mids, appended in paho callbacks
        self._connected = False
        self._ever_connected = False
        self._refusal: str | None = None  # why the broker or TLS refused us last (not: nobody answered)
        self._failure: str | None = None  # why the last connection attempt failed, logged once per new reason
        self._delay: float | None = None  # paho's rule: None until a connection attempt fails, reset by a CONNACK
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # waking must never block: the I/O thread does not read while disconnected
        self._client = make_client(cfg.broker, client_id)
        self._client.connect_timeout = min(self._client.connect_timeout, cfg.connect_timeout_s)
        self._client.max_inflight_messages_set(cfg.max_inflight)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        configure_connect(self._client, cfg.broker)
        self._io_thread = threading.Thread(target=self._run_io, name=f"edgeflow-mqtt-sink-{step_id}", daemon=True)
        self._io_thread.start()

    # paho callbacks (called under _io by whoever drives the client): flags only ------
    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            self._stats.count("mqtt.connect_refused")
            self._refusal = describe_refusal(reason_code)
            self._failed(self._refusal)
            return
        self._connected = self._ever_connected = True
        self._stats.link(self._link, True)
        self._delay = None
        if self._failure is not None:
            _log.warning("%s: connected to %s", self._step_id, self._cfg.broker.address)
        self._failure = self._refusal = None

    def _failed(self, reason: str) -> None:
        """Log a failed connection attempt once per new reason (retries back off; a storm of lines helps nobody)."""
        if reason != self._failure:
            self._failure = reason
            _log.warning(
                "%s: cannot connect to %s: %s; retrying with backoff up to %g s (the outbox keeps every message)",
                self._step_id,
                self._cfg.broker.address,
                reason,
                self._cfg.broker.reconnect_max_s,
            )

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if self._connected:
            self._stats.count("mqtt.sink_disconnects")
        self._connected = False
        self._stats.link(self._link, False)
        # paho re-sends unacknowledged QoS 1 messages after a reconnect but drops unwritten QoS 0 ones:
        # forget those so their outbox rows are published again
        for mid in self._qos0_in_flight:
            self._inflight.pop(mid, None)
        if self._qos0_in_flight:
            self._qos0_in_flight.clear()
            self._rescan = True

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason_code: Any, _props: Any) -> None:
        self._acked.append(mid)
        self._qos0_in_flight.discard(mid)

    # worker and forwarder ------------------------------------------------
    def _topic_for(self, sensor: str, alert: bool) -> str:
        topic = self._topics.get((sensor, alert))
        if topic is None:
            tpl = self._alert_topic if alert else self._topic
            kind = "alert" if alert else "summary"
            fields = {"flow": self._flow, "sensor": sensor, "kind": kind, "step": self._step_id}
            topic = self._topics[(sensor, alert)] = tpl.render(fields)
        return topic

    def write_batch(self, items: Sequence[Any]) -> None:
        now = time.perf_counter_ns()
        rows = []
        nbytes = 0
        qos, retain = self._cfg.qos, self._cfg.retain
        for item in items:
            record = to_json(item)
            alert = _is_alert(record)
            payload = dumps(record).encode()
            nbytes += len(payload)
            sensor = str(record.get("sensor", getattr(item, "sensor", "unknown")))
            topic = self._topic_for(sensor, alert)
            problem = unsendable(topic)
            if problem is not None:
                self._move_aside(topic, payload, problem)
                continue
            rows.append((topic, payload, qos, retain, int(alert)))
            t_in = ingest_time(item)
            if t_in:
                self._stats.latency.record(now - t_in)
        dropped = self._spool.put(rows)
        if dropped:
            self._stats.count("mqtt.sink_dropped", dropped)
        self._gauges()
        self._stats.add(items_out=len(items), bytes_out=nbytes)
        if self._io.acquire(blocking=False):  # publish from this thread now; never wait for the I/O thread
            try:
                self._publish_ready()
            finally:
                self._io.release()
        else:
            self._wake()

    def _move_aside(self, topic: str, payload: bytes, problem: str) -> None:
        """Turn a message that can never be sent into a dead letter (counted as ``mqtt.sink_rejected``)."""
        self._stats.count("mqtt.sink_rejected")
        reason = f"cannot be published: {problem}; topic {clip(topic, 200)!r}"
        append_dead_letters(self._dead_letter_path, [DeadLetter(self._step_id, reason, clip(payload.decode(), 200))])

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe (BlockingIOError) means a wake-up is pending anyway
            self._wake_w.send(b"x")

    def _pump(self) -> None:
        """Settle acknowledgements, then publish what is ready (holds _io)."""
        self._settle()
        self._publish_ready()

    def _settle(self) -> None:
        """Delete acknowledged messages from the outbox (the I/O thread's job, off the worker's path)."""
        done = []
        while self._acked:
            seq = self._inflight.pop(self._acked.popleft(), None)
            if seq is not None:
                done.append(seq)
        if done:
            self._spool.ack(done)
            self._stats.count("mqtt.sink_delivered", len(done))
        self._gauges(force=bool(done) and not len(self._spool))

    def _gauges(self, force: bool = False) -> None:
        """Report the outbox's depth (every call) and its oldest message's enqueue time (at most every 0.2 s)."""
        with self._gauge_lock:
            depth = len(self._spool)
            if depth != self._depth:
                self._stats.add_gauge("outbox.depth", depth - self._depth)
                self._depth = depth
            now = time.monotonic()
            if not (force or now - self._gauged >= _AGE_EVERY_S):
                return
            self._gauged = now
            oldest = self._spool.oldest_enqueued()
            self._stats.set_gauge(f"outbox.oldest_enqueued|{self._link}", 0.0 if oldest is None else oldest)

    def _publish_ready(self) -> None:
        """Publish the next rows in drain order while connected, at most ``max_inflight`` unacknowledged."""
        room = self._cfg.max_inflight - len(self._inflight)
        if not self._connected or room <= 0 or len(self._spool) <= len(self._inflight):
            return
        inflight = set(self._inflight.values())
        after = 0 if self._rescan else max(inflight, default=0)
        self._rescan = False
        for row in self._spool.next_rows(room, skip=inflight, after=after):
            problem = unsendable(row.topic)
            if problem is None:
                try:
                    info = self._client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
                except ValueError as exc:  # paho refuses it outright: it can never be sent
                    problem = str(exc)
            if problem is not None:  # e.g. left at the head of the outbox by an older run: set aside, go on
                self._move_aside(row.topic, row.payload, problem)
                self._spool.ack([row.seq])
                continue
            if info.rc != 0 and row.qos == 0:  # not sent and not queued by paho: retry later
                self._rescan = True
                break
            # QoS 1 without a connection stays queued in paho and is sent on reconnect
            self._inflight[info.mid] = row.seq
            if row.qos == 0 and not info.is_published():
                self._qos0_in_flight.add(info.mid)

    def _reconnect(self) -> None:
        with self._io:
            try:
                self._client.reconnect()
            except Exception as exc:  # refused, unreachable, TLS: try again after the backoff
                reason = describe_connect_error(exc, self._cfg.broker)
                if reason.startswith("TLS"):
                    self._refusal = reason
                self._failed(reason)

    def _next_delay(self) -> float:
        """Return the next reconnect delay by paho's rule: ``reconnect_min_s``, doubling up to ``reconnect_max_s``."""
        broker = self._cfg.broker
        self._delay = broker.reconnect_min_s if self._delay is None else min(2 * self._delay, broker.reconnect_max_s)
        return self._delay

    def _run_io(self) -> None:
        """Connect (with paho's backoff rule), read acknowledgements, keep alive, drain the backlog."""
        first = True
        while not self._stop.is_set():
            sock = self._client.socket()
            if sock is None:
                if not first:  # as paho's loop_forever: wait before every attempt but the first
                    self._stop.wait(self._next_delay())
                first = False
                if not self._stop.is_set():
                    self._reconnect()
                continue
            try:
                wants = [sock] if self._client.want_write() else []
                readable, writable, _ = select.select([sock, self._wake_r], wants, [], 0.05)
            except (OSError, ValueError):  # the socket closed under us: reconnect
                readable, writable = [], []
            if self._wake_r in readable:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            with self._io:
                try:
                    if sock in readable:
                        self._client.loop_read()
                    if sock in writable:
                        self._client.loop_write()
                    self._client.loop_misc()
                    self._pump()
                except Exception:  # keep going; the outbox still holds everything
                    _log.exception("%s: forwarding failed", self._step_id)

    def close(self) -> None:
        """Wait up to ``drain_timeout_s`` for the outbox to empty, then leave the rest in it (counted) and disconnect.

        Bounded whatever the broker does: waking the I/O thread never blocks, and a connection attempt
        in progress is given at most ``connect_timeout_s`` to finish.
        """
        deadline = time.monotonic() + self._cfg.drain_timeout_s
        self._wake()
        while len(self._spool) and time.monotonic() < deadline:
            if self._connected:
                self._wake()
            self._stop.wait(0.005)
        self._stop.set()
        self._io_thread.join(timeout=self._cfg.connect_timeout_s + 1.0)
        locked = self._io.acquire(timeout=self._cfg.connect_timeout_s + 1.0)
        try:
            if locked:
                self._settle()  # late acknowledgements; publishing now would only send duplicates after a restart
            self._gauges(force=True)
            left = len(self._spool)
            if left:
                self._stats.count("mqtt.sink_left_in_spool", left)
                _log.warning(
                    "%s: %d messages left in the outbox %s for the next run", self._step_id, left, self._spool.path
                )
            if not self._ever_connected and self._refusal is not None:
                self._stats.problem(
                    f"step {self._step_id!r}: never connected to the MQTT broker at {self._cfg.broker.address}: "
                    f"{self._refusal}"
                )
            if locked:
                self._client.disconnect()
        finally:
            if locked:
                self._io.release()
        self._wake_r.close()
        self._wake_w.close()
        self._spool.close()


class MqttSink:
    """Publishes each item as JSON; one connection and outbox per worker (a :class:`~edgeflow.connectors.Sink`).

    >>> cfg = MqttSinkConfig(topic="gw/{sensor}", broker="127.0.0.1:1", drain_timeout_s=0)  # no broker there
    >>> stats = FlowStats()
    >>> part = MqttSink("uplink", cfg, "doc", stats).open(worker_index=0, worker_count=1)
    >>> part.write_batch([{"sensor": "pump-1", "rms": 0.21}])
    >>> part.close()
    >>> stats.items_out, stats.counts["mqtt.sink_left_in_spool"]  # kept in the outbox (in memory here)
    (1, 1)
    """

    def __init__(
        self,
        step_id: str,
        cfg: MqttSinkConfig,
        flow_name: str,
        stats: FlowStats,
        dead_letter_path: Path | None = None,
    ) -> None:
        self.step_id = step_id
        self.cfg = cfg
        self.flow_name = flow_name
        self.stats = stats
        self.dead_letter_path = dead_letter_path

    def open(self, worker_index: int, worker_count: int) -> MqttSinkPartition:
        spool = None if self.cfg.spool is None else worker_path(self.cfg.spool, worker_index, worker_count)
        client_id = self.cfg.client_id or f"edgeflow-{self.flow_name}-{self.step_id}-w{worker_index}-{unique_suffix()}"
        adopt = _orphaned_outboxes(self.cfg.spool, worker_count) if self.cfg.spool and worker_index == 0 else []
        link = f"uplink:{self.step_id}" if worker_count == 1 else f"uplink:{self.step_id}#{worker_index}"
        return MqttSinkPartition(
            self.step_id, self.cfg, self.flow_name, self.stats, spool, client_id, adopt, self.dead_letter_path, link
        )


MAX_TOPIC_BYTES = 65_535
"""MQTT's limit on a topic name, in UTF-8 bytes."""


def unsendable(topic: str) -> str | None:
    """Why *topic* can never be published, or ``None`` if it can.

    >>> unsendable("gw/pump-1/summary") is None, unsendable("gw/" + "s" * 65_533)
    (True, 'the topic is 65,536 bytes; MQTT allows at most 65,535')
    """
    size = len(topic.encode("utf-8", errors="replace"))
    if size > MAX_TOPIC_BYTES:
        return f"the topic is {size:,} bytes; MQTT allows at most {MAX_TOPIC_BYTES:,}"
    if not topic or any(c in topic for c in "+#\x00"):
        return "a topic to publish on must be non-empty, without wildcards (+, #) or NUL"
    return None


def _orphaned_outboxes(spool: Path, worker_count: int) -> list[Path]:
    """Outbox files of this sink that no current worker owns (the last run had more or fewer workers)."""
    owned = {worker_path(spool, i, worker_count) for i in range(worker_count)}
    siblings = [spool, *sorted(spool.parent.glob(f"{spool.stem}.w*{spool.suffix}"))]
    return [path for path in siblings if path.is_file() and path not in owned]
