"""One partition of an MQTT source read by several workers through a shared subscription.

Partition ``mqtt#i/N`` subscribes to ``$share/edgeflow-<flow>-<step>/<filter>`` with a session of its own
(client id ``...-i``), and to the end-of-stream topic without sharing, so every partition sees the end. The broker
gives each data message to one partition. A partition only decodes: it hands on each sensor's messages as
:class:`~edgeflow.mqtt.resequence.Arrivals` with their stamps and DUP flags, and the keyed
:class:`~edgeflow.mqtt.resequence.Resequencer` on the worker that owns the sensor checks sequence numbers and
duplicates and puts the messages back in order. What the partition keeps in its snapshot is what it counts itself
(messages and samples taken, dead letters, the end); its acknowledgements (once a snapshot covers a message) are
its own, as with one partition.

``max_samples`` and ``idle_timeout_s`` hold per partition.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from edgeflow.mqtt.codecs import PayloadError, read_stamp
from edgeflow.mqtt.resequence import Arrivals, Arrived
from edgeflow.mqtt.source import MqttSourcePartition, MqttSourceState, _Message

__all__ = ["SharedMqttSourcePartition"]


class SharedMqttSourcePartition(MqttSourcePartition):
    """A member of a shared subscription: decodes, and leaves order and duplicates to the resequencing step.

    >>> from edgeflow.metrics import FlowStats
    >>> from edgeflow.mqtt.source import MqttSourceConfig
    >>> cfg = MqttSourceConfig(template="s/{sensor}", check_broker=False)
    >>> part = SharedMqttSourcePartition("samples", cfg, "doc", FlowStats(), MqttSourceState(ended=True), share=(1, 2))
    >>> part._filters
    ('$share/edgeflow-doc-samples/s/+',)
    >>> part.close()
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Take the arguments of :class:`~edgeflow.mqtt.source.MqttSourcePartition`, with ``share=(index, count)``."""
        self._void_lock = threading.Lock()
        self._voided: list[_Message] = []  # dropped by the hand-off queue (on paho's thread): their numbers are taken
        super().__init__(*args, **kwargs)

    def _on_drop(self, message: _Message) -> None:
        super()._on_drop(message)
        with self._void_lock:
            self._voided.append(message)

    def _void(self, message: _Message, out: dict[str, list[Arrived]]) -> None:
        """Hand on a message counted elsewhere (dropped, dead letter) as void: its stamp keeps its place."""
        stamp = read_stamp(message.props) if message.props else None
        key = self._template.sensor_key(message.topic) if stamp is not None else None
        if stamp is not None and key is not None:
            void = Arrived(message.topic, stamp.publisher, stamp.seq, message.dup, message.t_in, 0, [], True)
            out.setdefault(key, []).append(void)

    def next_batch(self) -> list[Any]:
        """Decode what the hand-off queue holds into one :class:`Arrivals` per sensor (and dead letters)."""
        messages = self._take_messages()
        groups: dict[str, list[Arrived]] = {}
        if self._voided:
            with self._void_lock:
                voided, self._voided = self._voided, []
            for message in voided:
                self._void(message, groups)
        if not messages and not groups:
            if self._finished():
                raise StopIteration
            self._idle = True
            return []
        self._idle = False
        out: list[Any] = []
        if messages:
            self._last_message = time.monotonic()
        eos, limit = self._cfg.eos_topic, self._cfg.max_samples
        consumed = self._consumed
        n = 0
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
            key = self._template.sensor_key(message.topic)
            if key is None:
                out.append(self._dead(f"does not fit the template {self._cfg.template!r}", message))
                continue
            fields = self._template.match(message.topic) if self._needs_fields else None
            try:
                samples, stamp = self._codec.decode_stamped(message.payload, fields, message.props)
            except PayloadError as exc:
                out.append(self._dead(str(exc), message))
                self._void(message, groups)
                continue
            samples = self._within_limit(samples, n)
            publisher, seq = (stamp.publisher, stamp.seq) if stamp is not None else (None, 0)
            arrived = Arrived(message.topic, publisher, seq, message.dup, message.t_in, len(message.payload), samples)
            groups.setdefault(key, []).append(arrived)
            n += len(samples)
        out.extend(Arrivals(key, arrived) for key, arrived in groups.items())
        self._emitted += n
        self._messages += taken
        if messages:
            self._stats.count("mqtt.messages", len(messages))
        return out

    def snapshot(self) -> MqttSourceState:
        """Return what this partition counts itself (order and duplicates are the resequencing step's)."""
        state = MqttSourceState(self._emitted, {}, self._messages, self._dead_letters, self._eos, {})
        if self._manual:
            self._acknowledge()
        return state
