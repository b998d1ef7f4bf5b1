r"""Pump vibration monitoring on live MQTT: the reference flow of ``flows/pump_vibration.py`` fed by a broker.

Samples arrive as JSON on ``plant/<line>/<sensor>/accel``; 10 s summaries go to
``out/pump_mqtt.summary.jsonl`` and, with store-and-forward, to
``edgeflow/pump_mqtt/<sensor>/summary`` (``.../alert`` when anomalous). The flow
ends when a message arrives on ``plant/eos`` (``edgeflow publish --eos-topic``).
The broker is ``$EDGEFLOW_MQTT_BROKER`` or ``127.0.0.1:1883``. Run from the project root::

    mosquitto -p 1883 &
    edgeflow run flows/pump_mqtt.py &
    edgeflow publish examples/data/pump_vibration.csv --speed 5 \\
        --topic-template 'plant/line1/{sensor}/accel' --eos-topic plant/eos
    mosquitto_sub -t 'edgeflow/pump_mqtt/#' -v
"""

from __future__ import annotations

import os

from pump_vibration import FEATURES

import edgeflow.operators as eo
from edgeflow import Flow
from operators.crest_factor import crest_factor

__all__ = ["make_flow"]


def make_flow(
    broker: str | None = None,
    template: str = "plant/{line}/{sensor}/accel",
    codec: str = "json",
    eos_topic: str | None = "plant/eos",
    idle_timeout_s: float | None = None,
    out: str = "out/pump_mqtt.summary.jsonl",
    uplink_topic: str = "edgeflow/{flow}/{sensor}/{kind}",
    spool: str | None = "out/pump_mqtt.outbox.sqlite",
    name: str = "pump_mqtt",
    dead_letters: str | None = None,
) -> Flow:
    """Build the live reference flow; *broker* defaults to ``$EDGEFLOW_MQTT_BROKER`` or ``127.0.0.1:1883``.

    The broker may carry a login, ``user:password@host:port`` (``mqtts://`` for TLS); it is never printed.
    Dead letters go to *dead_letters*, by default ``out/<name>.dead_letters.jsonl``.
    """
    broker = broker or os.environ.get("EDGEFLOW_MQTT_BROKER", "127.0.0.1:1883")
    flow = Flow(name, dead_letter_path=dead_letters or f"out/{name}.dead_letters.jsonl")
    samples = eo.mqtt_source(
        "samples",
        flow,
        template,
        broker=broker,
        channels=["accel"],
        codec=codec,  # type: ignore[arg-type]
        eos_topic=eos_topic,
        idle_timeout_s=idle_timeout_s,
    )
    windows = eo.window("win", samples, rate_hz=500, size=256, hop=64, max_gap_s=0.05)
    feats = crest_factor("crest", eo.features("feat", windows, FEATURES))
    scores = eo.zscore_detector("detect", feats, threshold=6.0, warmup=50)
    summaries = eo.summarize("summary", scores, every_s=10, sink=eo.jsonl(out))
    eo.output("uplink", summaries, eo.mqtt_sink(uplink_topic, broker=broker, spool=spool))
    return flow


flow = make_flow()
