"""Small flows for the MQTT tests; also run in subprocesses with `edgeflow run tests/mqtt/mqtt_flows.py:...`."""

from __future__ import annotations

from typing import Any

import edgeflow.operators as eo
from edgeflow import Flow

__all__ = ["raw_rows", "small_flow"]


def raw_rows(block: Any) -> dict[str, Any]:
    """A sample block as one JSON line: what the source handed on (a sink of raw samples)."""
    return {"sensor": block.sensor, "ts": block.ts.tolist()}


def small_flow(
    name: str,
    out: str,
    *,
    broker: str | None = None,
    recording: str | None = None,
    uplink: str | None = None,
    spool: str | None = None,
    drain_timeout_s: float = 5.0,
    dead_letters: str | None = None,
    clean_session: bool = True,
    uplink_qos: int = 1,
    raw: str | None = None,
    snapshot_every_s: float = 1.0,
    source: dict[str, Any] | None = None,
) -> Flow:
    """MQTT (or replay) -> 64-point windows -> rms/std -> z-score -> 1 s summaries -> JSONL (+ MQTT uplink).

    *raw* also writes what the source hands on (``{"sensor", "ts": [...]}`` per block); *source* adds settings
    of the MQTT source. Recovery comes from ``edgeflow run --recovery-dir``.
    """
    flow = Flow(name, dead_letter_path=dead_letters, snapshot_every_s=snapshot_every_s)
    if recording is not None:
        samples = eo.replay("samples", flow, recording)
    else:
        assert broker is not None
        samples = eo.mqtt_source(
            "samples",
            flow,
            "plant/{line}/{sensor}/accel",
            broker=broker,
            channels=["accel"],
            eos_topic="plant/eos",
            clean_session=clean_session,
            client_id=None if clean_session else f"{name}-source",
            **(source or {}),
        )
    if raw is not None:
        eo.output("raw", eo.map("raw_rows", samples, raw_rows), eo.jsonl(raw))
    windows = eo.window("win", samples, rate_hz=500, size=64, hop=64, max_gap_s=0.05)
    scores = eo.zscore_detector("detect", eo.features("feat", windows, ["rms", "std"]), threshold=6.0, warmup=5)
    summaries = eo.summarize("summary", scores, every_s=1, sink=eo.jsonl(out))
    if uplink is not None:
        sink = eo.mqtt_sink(
            "test/{sensor}/{kind}", broker=uplink, spool=spool, drain_timeout_s=drain_timeout_s, qos=uplink_qos
        )
        eo.output("uplink", summaries, sink)
    return flow
