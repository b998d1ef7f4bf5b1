"""The MQTT source: paho's network thread -> bounded hand-off queue -> ``next_batch`` on the worker.

Messages are decoded on the worker (the network thread only enqueues); each
batch is handed on as one :class:`~edgeflow.records.SampleBlock` per sensor
(the sensor its topic maps to), in arrival order. A block's ``t_in`` is the
time its newest message reached the hand-off queue, so latency includes any
queueing. A live source has
no natural end; it stops when any of its stop conditions holds:

* ``eos_topic``: a message on this topic (published after the data, same QoS,
  by the same publisher) ends the stream once everything before it is handed on;
* ``idle_timeout_s``: no message for this long (counted from the start too);
* ``max_samples``: this many samples were emitted.

Without any of them the flow runs until it is stopped.

QoS 1 is at least once: a message the broker delivers again (DUP flag, e.g.
after it restarted with a persistent session) adds only its samples newer than
the sensor's newest; the rest are counted in ``mqtt.duplicates``.

Messages stamped with a sequence number per topic (MQTT v5 user properties
``seq``/``pub``, see :mod:`edgeflow.mqtt.codecs`; ``edgeflow publish`` stamps
them) are checked against it: a gap counts the missing messages in
``mqtt.lost_upstream`` (lost before they reached the flow, e.g. dropped by the
broker's queue; messages this source dropped itself are in ``mqtt.dropped``
only), and a number already seen is a duplicate, however it is flagged.

The partition's snapshot (:class:`MqttSourceState`) holds the samples emitted
so far (``max_samples`` counts across a resume), each sensor's newest
timestamp (after a resume, samples at or before it, such as QoS 1 messages the
broker delivers again, are dropped and counted in ``mqtt.duplicates``), each
topic's last sequence stamp, the messages and dead letters seen, and whether
``eos_topic`` ended the stream.

**Acknowledged once a snapshot covers it.** With recovery on (the flow's
``recovery_dir``), a QoS 1 subscription with a persistent session
(``clean_session=False``) acknowledges each message only after the snapshot
that covers it *and the next one* were taken (``ack_lag_snapshots=1``), so the
covering snapshot is in the store before the broker forgets the message: after a
``kill -9`` the flow resumes from its last snapshot and the broker sends again
everything after it. Without recovery, paho acknowledges each message as it
arrives.

>>> state = MqttSourceState(emitted=3, newest_ts={"pump-1": 1772438400.5}, messages=2, dead_letters=1)
>>> import pickle; pickle.loads(pickle.dumps(state)) == state
True
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from time import perf_counter_ns
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from edgeflow.errors import EdgeflowError
from edgeflow.metrics import FlowStats
from edgeflow.mqtt.client import (
    RECEIVE_MAXIMUM,
    BrokerConfig,
    connect_async,
    describe_connect_error,
    describe_refusal,
    make_client,
    unique_suffix,
)
from edgeflow.mqtt.codecs import CodecName, PayloadError, SampleTuple, Stamp, make_codec, read_stamp
from edgeflow.mqtt.handoff import HandOff, OverloadPolicy, PriorityHandOff, PriorityPolicy
from edgeflow.mqtt.topics import TopicTemplate, check_filter, check_topic
from edgeflow.records import DeadLetter, SampleBlock

__all__ = ["MqttSource", "MqttSourceConfig", "MqttSourcePartition", "MqttSourceState", "priority_policy"]

_log = logging.getLogger("edgeflow.mqtt")
_PAYLOAD_SHOWN = 512
_LOSSES_SHOWN = 10


class MqttSourceConfig(BaseModel):
    """Settings of :func:`edgeflow.operators.mqtt_source`.

    >>> cfg = MqttSourceConfig(template="plant/{line}/{sensor}/accel", channels=("accel",))
    >>> cfg.filters, cfg.qos, cfg.overload
    (('plant/+/+/accel',), 1, 'block')
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)  # inputs may hold a password

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    template: str = "sensors/{sensor}"
    """Topic template; its ``{sensor}`` level (or *key*) gives the sensor key."""
    key: str | None = None
    """Sensor key as a format string over the template's levels, e.g. ``"{line}/{sensor}"``."""
    topics: tuple[str, ...] = ()
    """Subscription filters; default: the template's filter."""
    channels: tuple[str, ...] = Field(default=("value",), min_length=1)
    codec: CodecName = "json"
    rate_hz: PositiveFloat | None = None
    """Sample rate for the ``f32`` codec when the message does not carry it."""
    value_range: tuple[float, float] | None = None
    """Values outside ``[lo, hi]`` make the payload a dead letter."""
    qos: int = Field(default=1, ge=0, le=1)
    clean_session: bool = True
    """``False``: a persistent session; the broker keeps QoS 1 messages while the flow is down."""
    session_expiry_s: int = Field(default=3600, ge=0)
    """How long the broker keeps a persistent session (MQTT v5)."""
    client_id: str | None = None
    """Default: ``edgeflow-<flow>-<step>``, plus a random suffix for clean sessions."""
    queue_size: PositiveInt = 10_000
    """Messages the hand-off queue holds."""
    overload: OverloadPolicy = "block"
    block_timeout_s: PositiveFloat = 1.0
    """With ``overload="block"``: longest wait for room before dropping the oldest message."""
    batch_size: PositiveInt = Field(default=1024, le=65_536)
    """Messages handed to the flow per ``next_batch``."""
    eos_topic: str | None = None
    idle_timeout_s: PositiveFloat | None = None
    idle_poll_s: PositiveFloat = Field(default=0.0002, le=0.1)
    """How long the worker sleeps after finding the hand-off queue empty."""
    max_samples: PositiveInt | None = None
    dead_letter_topic: str | None = None
    """Also publish each dead letter (JSON, QoS 0) on this topic."""
    check_broker: bool = True
    """Fail at compile time when no broker answers (``edgeflow run`` fails fast)."""
    connect_timeout_s: PositiveFloat = 3.0
    ack_lag_snapshots: PositiveInt = 1
    """With recovery and a persistent session: a message is acknowledged once the snapshot covering it and this
    many more were taken (1: the next one; raise it when a step can hold a worker longer than a snapshot interval)."""
    receive_maximum: int = Field(default=RECEIVE_MAXIMUM, ge=1, le=RECEIVE_MAXIMUM)
    """With late acknowledgements (MQTT v5): how many unacknowledged messages the broker may send."""
    priority_handoff: bool = True
    """When the flow gives sensors ``high`` priority (``eo.infer(priorities=...)``): their messages go through a
    hand-off queue of their own that is drained first. ``False``: one queue for all."""
    priority_batch_s: PositiveFloat | None = None
    """With priorities and a latency budget: the worker time a batch should take; normal messages beyond it wait
    for a later batch (default: an eighth of the flow's ``latency_budget_ms``: a high-priority message waits for
    the batch in progress and then its own)."""
    shed_after_s: PositiveFloat | None = None
    """With priorities and a latency budget: normal-priority messages that waited longer in the hand-off are shed
    (``mqtt.dropped|shed``, still acknowledged; default: the flow's ``latency_budget_ms``)."""
    shared: bool = True
    """With several workers (``-w``/``-p``): every worker subscribes through a shared subscription and a keyed step
    puts each sensor's messages back in order (:mod:`edgeflow.mqtt.resequence`); ``False``: one worker subscribes."""
    reorder_window: PositiveInt = 10_000
    """Shared: later messages of a topic held before a gap in its stamps counts as lost (unstamped: samples held)."""
    reorder_hold_s: PositiveFloat = 5.0
    """Shared: longest a stamped message waits for a missing predecessor before the gap counts as lost."""
    reorder_delay_s: PositiveFloat = 0.2
    """Shared, unstamped publishers: how long a sample waits for earlier ones (the latency it gains)."""

    @model_validator(mode="after")
    def _check(self) -> MqttSourceConfig:
        tpl = TopicTemplate(self.template, self.key)  # raises ValueError with the reason
        for f in self.topics:
            check_filter(f)
        for name in ("eos_topic", "dead_letter_topic"):
            value = getattr(self, name)
            if value is not None:
                check_topic(value)
        if self.eos_topic is not None and tpl.match(self.eos_topic) is not None:
            msg = f"eos_topic {self.eos_topic!r} fits the data template {self.template!r}; pick a topic outside it"
            raise ValueError(msg)
        if self.overload == "block" and self.block_timeout_s * 2 >= self.broker.keepalive_s:
            msg = (
                f"block_timeout_s={self.block_timeout_s} must be under half the keepalive "
                f"({self.broker.keepalive_s} s) or the broker drops the connection"
            )
            raise ValueError(msg)
        if self.codec == "f32" and self.rate_hz is None and "rate_hz" not in tpl.fields:
            _log.debug("f32 codec without rate_hz: every message must carry a rate_hz user property")
        return self

    @property
    def filters(self) -> tuple[str, ...]:
        """The subscription filters in use."""
        return self.topics or (TopicTemplate(self.template, self.key).filter,)


@dataclass(frozen=True)
class MqttSourceState:
    """What an MQTT source partition resumes from (picklable).

    With recovery, QoS 1 input is acknowledged only once a snapshot covers it; *messages* counts what was
    taken off the hand-off queue up to this snapshot.
    """

    emitted: int = 0
    """Samples handed on so far (counted against ``max_samples``)."""
    newest_ts: dict[str, float] = field(default_factory=dict)
    """Each sensor's newest emitted timestamp: after a resume, samples at or before it are duplicates."""
    messages: int = 0
    """Messages taken off the hand-off queue (data, dead letters and the end-of-stream marker)."""
    dead_letters: int = 0
    ended: bool = False
    """A message on ``eos_topic`` ended the stream: a resumed partition ends at once."""
    seqs: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Each stamped topic's publisher and last sequence number: after a resume, numbers up to it are duplicates."""


class _Message(NamedTuple):
    topic: str
    payload: bytes
    props: dict[str, str] | None
    t_in: int
    dup: bool
    """The broker delivers it again (MQTT DUP flag), e.g. after it restarted with the session."""
    ack: tuple[int, int] | None = None
    """``(connection, mid)`` to acknowledge once a snapshot covers it (late acknowledgement only)."""


_QUEUE_COUNTERS = (("dropped", "mqtt.dropped"), ("blocked", "mqtt.blocked"), ("shed", "mqtt.dropped|shed"))
"""The hand-off queue's counts and the run's counters they go to."""


def _enqueued(message: _Message) -> int:
    return message.t_in


def _user_props(message: Any) -> dict[str, str] | None:
    props = getattr(message, "properties", None)
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    return dict(pairs) if pairs else None


def priority_policy(cfg: MqttSourceConfig, budget_ms: float | None) -> PriorityPolicy:
    """How the hand-off protects high-priority sensors: *cfg*'s settings, else derived from the flow's budget.

    >>> priority_policy(MqttSourceConfig(), 100.0)
    PriorityPolicy(batch_s=0.0125, shed_after_s=0.1, min_batch=16)
    >>> priority_policy(MqttSourceConfig(), None)
    PriorityPolicy(batch_s=None, shed_after_s=None, min_batch=16)
    """
    budget_s = budget_ms / 1e3 if budget_ms is not None else None
    batch_s = cfg.priority_batch_s or (budget_s / 8 if budget_s is not None else None)
    return PriorityPolicy(batch_s=batch_s, shed_after_s=cfg.shed_after_s or budget_s)


class MqttSourcePartition:
    """One MQTT subscription (a :class:`~edgeflow.connectors.SourcePartition`); ``next_batch`` never waits."""

    def __init__(
        self,
        step_id: str,
        cfg: MqttSourceConfig,
        flow_name: str,
        stats: FlowStats,
        resume: MqttSourceState | None = None,
        *,
        late_acks: bool = False,
        high: frozenset[str] = frozenset(),
        priority: PriorityPolicy | None = None,
        share: tuple[int, int] | None = None,
    ) -> None:
        """*late_acks*: acknowledge QoS 1 messages only once a snapshot covers them (the run has recovery on).

        *high*: sensor keys whose messages go through a hand-off queue of their own, drained first (with
        *priority*: normal messages are deferred to keep batches short and shed once stale).

        *share* ``(index, count)``: this is partition *index* of *count* reading one shared subscription.
        """
        state = _resume_state(step_id, resume)
        self._step_id = step_id
        self._cfg = cfg
        self._stats = stats
        self._template = TopicTemplate(cfg.template, cfg.key)
        self._codec = make_codec(cfg.codec, cfg.channels, cfg.value_range, cfg.rate_hz)
        self._needs_fields = cfg.codec == "f32"
        self._wants_props = cfg.broker.protocol == "5"  # user properties: f32 metadata and sequence stamps
        self._filters = cfg.filters if share is None else shared_filters(cfg, flow_name, step_id)
        self._manual = late_acks and cfg.qos == 1 and not cfg.clean_session
        self._gen = 0  # connection generation: a mid is acknowledged only on the connection it came on
        self._consumed: list[tuple[int, int]] = []  # acks of messages taken since the last snapshot
        self._covered: deque[list[tuple[int, int]]] = deque()  # acks per snapshot taken, oldest first
        self._drops = threading.Lock()  # guards the two below, filled by the hand-off queue on paho's thread
        self._dropped_acks: list[tuple[int, int]] = []
        self._local_drops: dict[str, int] = {}  # messages per topic this source dropped (not lost upstream)
        self._high = high
        self._high_topics: dict[str, bool] = {}  # topic -> whether its sensor is high-priority (paho's thread)
        self._queue: HandOff[_Message]
        if high:
            self._queue = PriorityHandOff(
                cfg.queue_size,
                cfg.overload,
                cfg.block_timeout_s,
                on_drop=self._on_drop,
                stamp=_enqueued,
                priority=priority,
                on_shed=self._on_drop,  # like a drop: not lost upstream, acknowledged with the next snapshot
            )
        else:
            self._queue = HandOff(cfg.queue_size, cfg.overload, cfg.block_timeout_s, on_drop=self._on_drop)
        self._letters_in_flight: list[Any] = []  # paho MQTTMessageInfo of dead letters sent to dead_letter_topic
        self._idle = False
        self._reported = {"dropped": 0, "blocked": 0, "shed": 0}
        self._depth = 0  # the hand-off queue's depth last added to the run's ``queue.depth`` gauge
        stats.add_gauge("queue.depth", 0)  # the gauge exists (0) from the start
        self._ready_name = f"source:{step_id}"
        self._emitted = state.emitted
        self._newest = dict(state.newest_ts)
        self._seen = dict(state.newest_ts)  # sensors not yet past their resumed timestamp
        self._messages = state.messages
        self._dead_letters = state.dead_letters
        self._eos = state.ended
        self._seqs: dict[str, tuple[str, int]] = dict(getattr(state, "seqs", {}))
        self._lost: dict[str, int] = {}  # messages lost upstream, by sensor
        self._started = self._last_message = time.monotonic()
        self._connects = 0
        self._refusal: str | None = None  # why the broker (or TLS) refused the last attempt
        self._failure: str | None = None  # why the last attempt failed, logged once per new reason
        client_id = cfg.client_id or f"edgeflow-{flow_name}-{step_id}"
        if share is not None:  # one session per member of the group
            client_id += f"-{share[0]}"
        if cfg.client_id is None and cfg.clean_session:
            client_id += f"-{unique_suffix()}"
        self._client = make_client(cfg.broker, client_id, clean_session=cfg.clean_session)
        self._client.connect_timeout = min(self._client.connect_timeout, cfg.connect_timeout_s)
        if self._manual:
            self._client.manual_ack_set(True)
            if cfg.broker.protocol != "5":
                _log.warning(
                    "%s: MQTT 3.1.1 cannot ask for a Receive Maximum: the broker's max_inflight_messages "
                    "(Mosquitto: 20) bounds the messages taken per snapshot; raise it or use protocol 5",
                    step_id,
                )
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_message_parts = self._on_parts_by_priority if high else self._on_parts
        self._client.on_subscribe = self._on_subscribe
        self._live = not self._ended()  # a stream that ended before its snapshot does not subscribe again
        if self._live:  # ``/readyz`` waits for the first SUBACK (``mqtt.subscriptions``), then follows set_ready
            connect_async(
                self._client,
                cfg.broker,
                clean_session=cfg.clean_session,
                session_expiry_s=cfg.session_expiry_s,
                receive_maximum=cfg.receive_maximum if self._manual else None,
            )

    # paho network thread -------------------------------------------------
    def _failed(self, reason: str) -> None:
        """Log a failed connection attempt once per new reason (paho retries with the capped backoff)."""
        if reason != self._failure:
            self._failure = reason
            _log.warning(
                "%s: cannot connect to %s: %s; retrying with backoff up to %g s",
                self._step_id,
                self._cfg.broker.address,
                reason,
                self._cfg.broker.reconnect_max_s,
            )

    def _on_connect_fail(self, client: Any, _userdata: Any) -> None:
        error = getattr(client, "last_error", None)
        reason = describe_connect_error(error, self._cfg.broker) if error is not None else "no connection"
        if reason.startswith("TLS"):
            self._refusal = reason
        self._failed(reason)

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            self._stats.count("mqtt.connect_refused")
            self._refusal = describe_refusal(reason_code)
            self._failed(self._refusal)
            return
        if self._failure is not None:
            _log.warning("%s: connected to %s", self._step_id, self._cfg.broker.address)
        self._failure = self._refusal = None
        self._gen += 1
        self._connects += 1
        if self._connects > 1:
            self._stats.count("mqtt.reconnects")
        subs = [(f, self._cfg.qos) for f in self._filters]
        if self._cfg.eos_topic is not None:
            subs.append((self._cfg.eos_topic, self._cfg.qos))
        client.subscribe(subs)

    def _on_subscribe(self, _client: Any, _userdata: Any, _mid: int, reason_codes: Any, _props: Any) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            _log.warning("%s: subscription refused: %s", self._step_id, failed)
        self._stats.count("mqtt.subscriptions")
        self._stats.set_ready(self._ready_name, not failed)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        self._gen += 1  # acknowledgements of this connection's messages are void: the broker sends them again
        if not self._connects:  # a refused or failed attempt, not a lost connection
            return
        self._stats.set_ready(self._ready_name, False)
        self._stats.count("mqtt.disconnects")
        _log.info("%s: disconnected from %s: %s", self._step_id, self._cfg.broker.address, reason_code)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        """On paho's thread: only queue the message's parts (decoding is the worker's, many messages at once)."""
        props = _user_props(message) if self._wants_props else None
        ack = (self._gen, message.mid) if self._manual and message.qos == 1 else None
        item = _Message(message.topic, message.payload, props, perf_counter_ns(), message.dup, ack)
        if self._high and self._is_high(message.topic):
            self._queue.put_high(item)  # type: ignore[attr-defined]
        else:
            self._queue.put(item)

    def _on_parts(
        self, topic: str, payload: bytes, props: dict[str, str] | None, dup: bool, qos: int, mid: int
    ) -> None:
        """On paho's thread: the same as :meth:`_on_message`, from the packet's parts (the usual way)."""
        ack = (self._gen, mid) if self._manual and qos == 1 else None
        self._queue.put(_Message(topic, payload, props if self._wants_props else None, perf_counter_ns(), dup, ack))

    def _on_parts_by_priority(
        self, topic: str, payload: bytes, props: dict[str, str] | None, dup: bool, qos: int, mid: int
    ) -> None:
        """On paho's thread: :meth:`_on_parts`, into the high-priority queue when the topic's sensor is high."""
        ack = (self._gen, mid) if self._manual and qos == 1 else None
        item = _Message(topic, payload, props if self._wants_props else None, perf_counter_ns(), dup, ack)
        if self._is_high(topic):
            self._queue.put_high(item)  # type: ignore[attr-defined]
        else:
            self._queue.put(item)

    def _is_high(self, topic: str) -> bool:
        """Whether *topic*'s sensor is high-priority (remembered per topic; a sensor always maps to one queue)."""
        high = self._high_topics.get(topic)
        if high is None:
            if len(self._high_topics) >= 100_000:  # topics without end (a mistake upstream): start over
                self._high_topics.clear()
            high = self._high_topics[topic] = self._template.sensor_key(topic) in self._high
        return high

    def _on_drop(self, message: _Message) -> None:
        """Note that the hand-off queue dropped or shed *message* (not lost upstream); acknowledge it later.

        Called on paho's thread for a drop, on the worker for a shed message, with the queue's lock held.
        """
        with self._drops:
            self._local_drops[message.topic] = self._local_drops.get(message.topic, 0) + 1
            if message.ack is not None:
                self._dropped_acks.append(message.ack)

    # worker --------------------------------------------------------------
    def _dead(self, reason: str, message: _Message) -> DeadLetter:
        text = message.payload[:_PAYLOAD_SHOWN].decode("utf-8", errors="backslashreplace")
        letter = DeadLetter(self._step_id, f"topic {message.topic!r}: {reason}", text)
        self._dead_letters += 1
        if self._cfg.dead_letter_topic is not None:
            info = self._client.publish(self._cfg.dead_letter_topic, json.dumps(letter.to_json()), qos=1)
            if len(self._letters_in_flight) >= 64:
                self._letters_in_flight = [i for i in self._letters_in_flight if not i.is_published()]
            self._letters_in_flight.append(info)
        return letter

    def _report_queue(self, depth: int | None = None) -> None:
        """Count new drops, sheds and blocking episodes; set this partition's part of the ``queue.depth`` gauge."""
        for name, counter in _QUEUE_COUNTERS:
            now = getattr(self._queue, name)
            if now != self._reported[name]:
                self._stats.count(counter, now - self._reported[name])
                self._reported[name] = now
        depth = len(self._queue) if depth is None else depth
        if depth != self._depth:
            self._stats.add_gauge("queue.depth", depth - self._depth)  # summed over partitions and processes
            self._depth = depth

    def _finished(self) -> bool:
        cfg = self._cfg
        if self._ended():
            return True
        return cfg.idle_timeout_s is not None and time.monotonic() - self._last_message > cfg.idle_timeout_s

    def _ended(self) -> bool:
        limit = self._cfg.max_samples
        return self._eos or (limit is not None and self._emitted >= limit)

    def _fresh(self, key: str, samples: list[SampleTuple], pending: dict[str, Any]) -> list[SampleTuple]:
        """Drop samples already handed on (counted in ``mqtt.duplicates``).

        Those at or before a resumed snapshot's mark, or, in a message the broker delivers again (DUP),
        those at or before the sensor's newest sample (this batch's, *pending*, included).
        """
        mark = self._seen.get(key)
        if mark is None:  # a redelivery while running
            pending_ts = pending[key][0] if key in pending else ()
            mark = max(self._newest.get(key, -math.inf), max(pending_ts, default=-math.inf))
        fresh = [sample for sample in samples if sample[0] > mark]
        if len(fresh) < len(samples):
            self._stats.count("mqtt.duplicates", len(samples) - len(fresh))
        if fresh and key in self._seen:  # past the snapshot: later samples are new (out of order: the window step's)
            del self._seen[key]
        return fresh

    def _take_messages(self) -> list[_Message]:
        """Take the next batch from the hand-off; ``StopIteration`` once the source has ended."""
        if self._ended():  # stop even while messages keep coming; count what came after the end
            self._stats.count("mqtt.after_end", len(self._queue.take(max(len(self._queue), 1))))
            raise StopIteration
        messages = self._queue.take(self._cfg.batch_size)
        self._report_queue()
        return messages

    def _within_limit(self, samples: list[SampleTuple], n: int) -> list[SampleTuple]:
        """Cut *samples* to what ``max_samples`` still allows after *n* taken in this batch; count the rest."""
        room = self._cfg.max_samples
        if room is None or len(samples) <= room - self._emitted - n:
            return samples
        room -= self._emitted + n
        self._stats.count("mqtt.after_end_samples", len(samples) - room)
        return samples[:room]

    def next_batch(self) -> list[Any]:
        messages = self._take_messages()
        if not messages:
            if self._finished():
                raise StopIteration
            # nothing queued: let the worker sleep a little instead of spinning on the GIL,
            # which the paho network threads need to hand messages over
            self._idle = True
            return []
        self._idle = False
        self._last_message = time.monotonic()
        out: list[Any] = []
        groups: dict[str, tuple[list[float], list[tuple[float, ...]], list[int], list[int]]] = {}
        eos, limit = self._cfg.eos_topic, self._cfg.max_samples
        consumed = self._consumed
        n = nbytes = accepted = 0
        taken = len(messages)
        for i, message in enumerate(messages):
            if self._eos or (limit is not None and self._emitted + n >= limit):
                self._stats.count("mqtt.after_end", len(messages) - i)
                taken = i
                break
            if message.ack is not None:
                consumed.append(message.ack)
            if message.topic == eos:
                self._eos = True
                continue
            stamp = read_stamp(message.props) if message.props else None
            if stamp is not None and not self._in_sequence(message, stamp):
                continue
            key = self._template.sensor_key(message.topic)
            if key is None:
                out.append(self._dead(f"does not fit the template {self._cfg.template!r}", message))
                continue
            fields = self._template.match(message.topic) if self._needs_fields else None
            try:
                if stamp is None:
                    samples, in_payload = self._codec.decode_stamped(message.payload, fields, message.props)
                else:
                    samples, in_payload = self._codec.decode(message.payload, fields, message.props), None
            except PayloadError as exc:
                out.append(self._dead(str(exc), message))
                continue
            if in_payload is not None:
                stamp = in_payload
                if not self._in_sequence(message, stamp, samples):
                    continue
            if stamp is not None:  # the stamp decides what is new
                if key in self._seen:
                    del self._seen[key]
            elif message.dup or (self._seen and key in self._seen):
                samples = self._fresh(key, samples, groups)
                if not samples:
                    self._stats.count("mqtt.duplicate_messages")
                    continue
            samples = self._within_limit(samples, n)
            size = len(message.payload)
            share, extra = divmod(size, len(samples))
            ts, values, sizes, t_ins = groups.setdefault(key, ([], [], [], []))
            for ts_i, values_i in samples:
                ts.append(ts_i)
                values.append(values_i)
                sizes.append(share)
                t_ins.append(message.t_in)
            sizes[-len(samples)] += extra
            n += len(samples)
            accepted += 1
            nbytes += size
        newest = self._newest
        for key, (ts, values, sizes, t_ins) in groups.items():
            block = SampleBlock(
                key,
                np.asarray(ts, dtype=np.float64),
                np.asarray(values, dtype=np.float64).reshape(len(ts), -1),
                np.asarray(sizes, dtype=np.int64),
                t_ins[-1],
                np.asarray(t_ins, dtype=np.int64),
            )
            out.append(block)
            top = max(ts)
            if top > newest.get(key, -np.inf):
                newest[key] = top
        self._emitted += n
        self._messages += taken
        self._stats.add(samples_in=n, bytes_in=nbytes)
        self._stats.count("mqtt.messages", len(messages))
        if accepted:
            self._stats.count("mqtt.accepted", accepted)
        return out

    def next_awake(self) -> datetime | None:
        """After an empty poll, wake again in ``idle_poll_s``; otherwise poll at once."""
        if self._idle:
            return datetime.now(timezone.utc) + timedelta(seconds=self._cfg.idle_poll_s)
        return None

    def _in_sequence(self, message: _Message, stamp: Stamp, samples: list[SampleTuple] | None = None) -> bool:
        """Check *stamp* against its topic's last one: count a gap as lost upstream; ``False`` for a duplicate."""
        topic = message.topic
        dropped_here = 0
        if self._local_drops:  # rare: only after the hand-off queue dropped something
            with self._drops:
                dropped_here = self._local_drops.pop(topic, 0)
        last = self._seqs.get(topic)
        if last is not None and last[0] == stamp.publisher:
            if stamp.seq <= last[1]:  # sent again (QoS 1 redelivery, a publisher's resend after a reconnect)
                self._duplicate(message, samples)
                return False
            lost = stamp.seq - last[1] - 1 - dropped_here
            if lost > 0:
                sensor = self._template.sensor_key(topic) or topic
                self._lost[sensor] = self._lost.get(sensor, 0) + lost
                self._stats.count("mqtt.lost_upstream", lost)
        # else: the first message of this publisher on this topic sets the baseline
        self._seqs[topic] = (stamp.publisher, stamp.seq)
        return True

    def _duplicate(self, message: _Message, samples: list[SampleTuple] | None) -> None:
        self._stats.count("mqtt.duplicate_messages")
        if samples is None:
            with contextlib.suppress(PayloadError):
                fields = self._template.match(message.topic) if self._needs_fields else None
                samples = self._codec.decode(message.payload, fields, message.props)
        if samples:
            self._stats.count("mqtt.duplicates", len(samples))

    def snapshot(self) -> MqttSourceState:
        """Return the state right after the items handed on so far (and acknowledge what an older snapshot covers)."""
        state = MqttSourceState(
            self._emitted, dict(self._newest), self._messages, self._dead_letters, self._eos, dict(self._seqs)
        )
        if self._manual:
            self._acknowledge()
        return state

    def _acknowledge(self) -> None:
        """Acknowledge what the snapshot ``ack_lag_snapshots`` before this one covers; this one covers what came since.

        A snapshot is taken at the end of an epoch; the one before it is in the recovery store by the time the next
        is taken, so acknowledging its messages now cannot lose them. Messages of an earlier connection are not
        acknowledged: the broker sends them again on the new one.
        """
        with self._drops:
            dropped, self._dropped_acks = self._dropped_acks, []
        self._covered.append(self._consumed + dropped if dropped else self._consumed)
        self._consumed = []
        acked = 0
        while len(self._covered) > self._cfg.ack_lag_snapshots:
            gen = self._gen
            acked += self._client.ack_many([mid for message_gen, mid in self._covered.popleft() if message_gen == gen])
        if acked:
            self._stats.count("mqtt.acked", acked)

    def _settle_acks(self, deadline: float) -> None:
        """Wait (until *deadline*) for the broker to answer a packet sent after the acknowledgements sent so far.

        It answers in order, so the acknowledgements (of taken and of shed messages) were processed: without this, a
        close right after a snapshot loses them (the socket closes before the broker reads them) and the broker
        sends those messages again. The packet is an UNSUBSCRIBE of a filter never subscribed.
        """
        if not self._client.is_connected():
            return
        answered = threading.Event()
        self._client.on_unsubscribe = lambda *_args: answered.set()
        rc, _mid = self._client.unsubscribe(f"edgeflow-ack-barrier/{self._step_id}/{unique_suffix()}")
        if rc == 0:
            answered.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        left = len(self._queue)
        self._report_queue(0)
        if left:  # received but never read: the flow ended first
            self._stats.count("mqtt.after_end", left)
        if self._lost:
            worst = sorted(self._lost.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{sensor} {n:,}" for sensor, n in worst[:_LOSSES_SHOWN])
            more = f" and {len(worst) - _LOSSES_SHOWN} more sensors" if len(worst) > _LOSSES_SHOWN else ""
            _log.warning(
                "%s: %s messages lost upstream (gaps in the publishers' sequence numbers): %s%s",
                self._step_id,
                f"{sum(self._lost.values()):,}",
                shown,
                more,
            )
        if not self._live:
            return
        if not self._connects:
            why = self._refusal or self._failure or "no answer"
            self._stats.problem(
                f"step {self._step_id!r}: never connected to the MQTT broker at {self._cfg.broker.address}: {why}"
            )
        # dead letters published to the broker must not die with the connection: wait (boundedly) for their PUBACKs
        deadline = time.monotonic() + 2.0
        for info in self._letters_in_flight:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        if self._manual:
            self._settle_acks(deadline)
        self._client.disconnect()
        self._client.loop_stop()


def shared_filters(cfg: MqttSourceConfig, flow_name: str, step_id: str) -> tuple[str, ...]:
    """Return the source's filters as members of the group ``edgeflow-<flow>-<step>`` of a shared subscription.

    >>> shared_filters(MqttSourceConfig(template="plant/{sensor}"), "pumps", "samples")
    ('$share/edgeflow-pumps-samples/plant/+',)
    """
    group = f"edgeflow-{flow_name}-{step_id}".translate(_NOT_IN_GROUP)
    return tuple(f"$share/{group}/{f}" for f in cfg.filters)


_NOT_IN_GROUP = str.maketrans({"/": "_", "+": "_", "#": "_"})


def _resume_state(step_id: str, resume: object) -> MqttSourceState:
    if resume is None:
        return MqttSourceState()
    if not isinstance(resume, MqttSourceState):
        msg = (
            f"step {step_id!r}: cannot resume the MQTT source from a {type(resume).__name__}; expected an "
            "MqttSourceState. Hint: the recovery data was written by another step or version; start without it"
        )
        raise EdgeflowError(msg)
    return resume


class MqttSource:
    """One MQTT subscription read by one worker (a :class:`~edgeflow.connectors.Source` with one partition).

    >>> src = MqttSource("samples", MqttSourceConfig(template="s/{sensor}"), "doc", FlowStats())
    >>> src.partitions()
    ['mqtt']
    >>> part = src.open("mqtt", resume=MqttSourceState(ended=True))
    >>> part.next_batch()
    Traceback (most recent call last):
    ...
    StopIteration
    >>> part.close()
    """

    def __init__(
        self,
        step_id: str,
        cfg: MqttSourceConfig,
        flow_name: str,
        stats: FlowStats,
        *,
        recovery: bool = False,
        high: frozenset[str] = frozenset(),
        priority: PriorityPolicy | None = None,
        workers: int = 1,
    ) -> None:
        """*recovery*: the run snapshots (a persistent QoS 1 session then acknowledges once a snapshot covers it).

        *high* and *priority*: see :class:`MqttSourcePartition`.

        *workers*: the run's workers over all processes; with more than one (and ``cfg.shared``) every worker reads
        a partition ``mqtt#i/N`` of one shared subscription, and :meth:`resequencer` puts the sensors' messages back
        in order.
        """
        self.step_id = step_id
        self.cfg = cfg
        self.flow_name = flow_name
        self.stats = stats
        self.recovery = recovery
        self.high = high if cfg.priority_handoff else frozenset()
        self.priority = priority
        self.parts = workers if cfg.shared and workers > 1 else 1

    def partitions(self) -> list[str]:
        if self.parts == 1:
            return ["mqtt"]
        return [f"mqtt#{i}/{self.parts}" for i in range(self.parts)]

    def resequencer(self) -> Callable[[Any | None], Any] | None:
        """Return the keyed step that follows the partitions of a shared subscription (``None`` with one partition).

        It is a factory ``new_state(resume)`` of :class:`~edgeflow.mqtt.resequence.Resequencer`, one per sensor.
        """
        if self.parts == 1:
            return None
        from edgeflow.mqtt.resequence import Resequencer, ResequenceSettings

        cfg = self.cfg
        settings = ResequenceSettings(self.step_id, cfg.reorder_window, cfg.reorder_hold_s, cfg.reorder_delay_s)
        stats = self.stats
        return lambda resume: Resequencer(settings, stats, resume)

    def open(self, partition: str, resume: MqttSourceState | None) -> MqttSourcePartition:
        if self.recovery and self.cfg.clean_session:
            _log.warning(
                "%s: the run takes snapshots but the MQTT source has a clean session: messages sent while the flow "
                "is down are lost. Hint: clean_session=False keeps them at the broker until a snapshot covers them",
                self.step_id,
            )
        kind, share = MqttSourcePartition, None
        if self.parts > 1:
            from edgeflow.mqtt.shared import SharedMqttSourcePartition

            kind, share = SharedMqttSourcePartition, (int(partition.rpartition("#")[2].partition("/")[0]), self.parts)
        return kind(
            self.step_id,
            self.cfg,
            self.flow_name,
            self.stats,
            resume,
            late_acks=self.recovery,
            high=self.high,
            priority=self.priority,
            share=share,
        )
