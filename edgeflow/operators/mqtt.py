"""MQTT as a flow step: :func:`mqtt_source` reads samples, :func:`mqtt_sink` publishes summaries and alerts.

Both check their settings when the flow is built, and the broker once when it
is compiled (the step's ``check``; running the compiled flow does not probe
again), so ``edgeflow run`` fails fast, with how to start Mosquitto, when no
broker answers. See ``docs/mqtt.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeflow.errors import FlowValidationError
from edgeflow.graph import Flow, Schema, Step, StepContext, Stream, build_config
from edgeflow.mqtt.client import (
    DEFAULT_BROKER,
    BrokerConfig,
    BrokerRejectedError,
    BrokerUnreachableError,
    probe_broker,
    start_hint,
)
from edgeflow.mqtt.codecs import CodecName
from edgeflow.mqtt.sink import MqttSink, MqttSinkConfig
from edgeflow.mqtt.source import MqttSource, MqttSourceConfig, priority_policy
from edgeflow.mqtt.spool import OverflowPolicy
from edgeflow.operators.output import SinkSpec

__all__ = ["mqtt_sink", "mqtt_source"]


def _broker_settings(broker: str | dict[str, Any] | BrokerConfig, extra: dict[str, Any]) -> Any:
    if isinstance(broker, BrokerConfig):
        return broker.model_copy(update=extra) if extra else broker
    if isinstance(broker, str):
        return _with_address(broker, extra)
    return {**broker, **extra}


def _with_address(address: str, extra: dict[str, Any]) -> Any:
    try:
        base = BrokerConfig.model_validate(address).model_dump(exclude_unset=True)
    except ValueError:
        return address  # let build_config report it with the step's name
    return {**base, **extra}


def _probe(step_id: str, broker: BrokerConfig, timeout_s: float) -> None:
    try:
        probe_broker(broker, timeout_s)
    except BrokerUnreachableError as exc:
        hint = start_hint(broker.address)
        raise FlowValidationError(step_id, "broker", broker.address, str(exc), hint=hint) from None
    except BrokerRejectedError as exc:
        hint = "check ca_certs (the CA that signed the broker's certificate), the host name and the certificate's dates"
        raise FlowValidationError(step_id, "broker", broker.address, str(exc), hint=hint) from None


def mqtt_source(
    step_id: str,
    flow: Flow,
    template: str,
    *,
    broker: str | dict[str, Any] | BrokerConfig = DEFAULT_BROKER,
    channels: Sequence[str] = ("value",),
    codec: CodecName = "json",
    key: str | None = None,
    topics: Sequence[str] = (),
    qos: int = 1,
    clean_session: bool = True,
    client_id: str | None = None,
    username: str | None = None,
    password: str | None = None,
    eos_topic: str | None = None,
    idle_timeout_s: float | None = None,
    max_samples: int | None = None,
    **settings: Any,
) -> Stream:
    """Subscribe to the topics of *template* and emit ``(sensor, Sample)`` pairs.

    *template* names topic levels, e.g. ``plant/{line}/{sensor}/accel``; it
    gives the subscription filter (``plant/+/+/accel``) and the sensor key
    (``{sensor}``, or *key*). Other settings, such as ``value_range``,
    ``queue_size``, ``overload``, ``rate_hz``, ``dead_letter_topic`` or TLS files
    (``broker={"host": ..., "tls": True, "ca_certs": ...}``), are those of
    :class:`~edgeflow.mqtt.source.MqttSourceConfig`.

    >>> from edgeflow import Flow
    >>> flow = Flow("doc-mqtt")
    >>> s = mqtt_source("samples", flow, "plant/{line}/{sensor}/accel", channels=["accel"], eos_topic="plant/eos")
    >>> flow.steps[0].config.filters
    ('plant/+/+/accel',)
    >>> mqtt_source("bad", flow, "plant/{sensor}", qos=2)
    Traceback (most recent call last):
    ...
    edgeflow.errors.FlowValidationError: step 'bad': field 'qos' got 2: Input should be less than or equal to 1...
    """
    extra = {k: v for k, v in (("username", username), ("password", password)) if v is not None}
    cfg: MqttSourceConfig = build_config(
        step_id,
        MqttSourceConfig,
        broker=_broker_settings(broker, extra),
        template=template,
        key=key,
        topics=tuple(topics),
        channels=tuple(channels),
        codec=codec,
        qos=qos,
        clean_session=clean_session,
        client_id=client_id,
        eos_topic=eos_topic,
        idle_timeout_s=idle_timeout_s,
        max_samples=max_samples,
        **settings,
    )

    def check() -> None:
        if cfg.check_broker:
            _probe(step_id, cfg.broker, cfg.connect_timeout_s)

    def schema(_inputs: tuple[Schema, ...]) -> Schema:
        return Schema("samples", channels=cfg.channels, rate_hz=cfg.rate_hz)

    def build(ctx: StepContext) -> MqttSource:
        high = frozenset(sensor for sensor, level in ctx.priorities.items() if level == "high")
        return MqttSource(
            step_id,
            cfg,
            ctx.run.flow_name,
            ctx.run.stats,
            recovery=ctx.run.recovery_dir is not None,
            high=high,
            priority=priority_policy(cfg, ctx.run.latency_budget_ms),
            workers=ctx.run.workers,
        )

    return flow.add_step(
        Step(step_id, "mqtt_source", "source", (), cfg, schema=schema, build=build, can_fail=True, check=check)
    )


def mqtt_sink(
    topic: str = "edgeflow/{flow}/{sensor}/{kind}",
    *,
    broker: str | dict[str, Any] | BrokerConfig = DEFAULT_BROKER,
    qos: int = 1,
    retain: bool = False,
    alert_topic: str | None = None,
    spool: str | Path | None = None,
    capacity: int = 100_000,
    overflow: OverflowPolicy = "drop_oldest",
    alerts_first: bool = False,
    username: str | None = None,
    password: str | None = None,
    step_id: str = "mqtt_sink",
    **settings: Any,
) -> SinkSpec:
    """Publish each item as compact JSON on *topic* (rendered per sensor), with store-and-forward.

    Use with ``eo.output(step_id, stream, mqtt_sink(...))`` or ``eo.summarize(..., sink=mqtt_sink(...))``.
    Items whose JSON has ``"anomaly": true`` are alerts: ``{kind}`` renders as
    ``alert`` and *alert_topic* applies. *spool* is the SQLite outbox file
    that keeps messages while the broker is unreachable and across restarts.
    *step_id* only names the sink in error messages and client ids.

    >>> spec = mqtt_sink("gw/{sensor}/summary", spool="out/outbox.sqlite", alerts_first=True)
    >>> spec.name
    'mqtt_sink'
    """
    extra = {k: v for k, v in (("username", username), ("password", password)) if v is not None}
    cfg: MqttSinkConfig = build_config(
        step_id,
        MqttSinkConfig,
        broker=_broker_settings(broker, extra),
        topic=topic,
        alert_topic=alert_topic,
        qos=qos,
        retain=retain,
        spool=spool,
        capacity=capacity,
        overflow=overflow,
        alerts_first=alerts_first,
        **settings,
    )

    def check() -> None:
        wanted = cfg.check_broker if cfg.check_broker is not None else cfg.spool is None
        if wanted:
            _probe(step_id, cfg.broker, cfg.connect_timeout_s)

    def build(ctx: StepContext) -> MqttSink:
        return MqttSink(step_id, cfg, ctx.run.flow_name, ctx.run.stats, ctx.run.dead_letter_path)

    return SinkSpec("mqtt_sink", build, check=check)
