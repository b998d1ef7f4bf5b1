r"""Serve a running flow's figures to Prometheus: ``/metrics``, ``/healthz`` and ``/readyz``.

One custom collector reads the run's :class:`~edgeflow.metrics.FlowStats` at each
scrape (no global registry, nothing copied while the flow runs). Every series has
the labels ``flow`` and ``process`` (the process id in a cluster, ``0`` alone); each
process serves its own port. Names follow Prometheus conventions: counters end in
``_total``, durations are ``_seconds``, sizes ``_bytes``.

>>> from edgeflow.metrics import FlowStats
>>> stats = FlowStats(samples_in=3)
>>> text = exposition(stats, "demo")
>>> "edgeflow_samples_in_total{flow=\"demo\",process=\"0\"} 3.0" in text
True
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from edgeflow.metrics import FlowStats, Histogram, is_loss
from edgeflow.observe.health import HealthConfig, not_ready, unhealthy
from edgeflow.observe.live import progress_fraction

__all__ = ["FlowCollector", "MetricsServer", "exposition"]

_MODEL_UPDATES = {"infer.swaps": "swapped", "infer.swap_rejected": "rejected", "infer.rollbacks": "rolled_back"}
_GAUGES = {
    "outbox.depth": ("edgeflow_outbox_messages", "Messages waiting in the MQTT sink's outbox."),
    "queue.depth": ("edgeflow_input_queue_messages", "Messages waiting in the MQTT source's hand-off queue."),
}


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(bound) else repr(bound), float(n)) for bound, n in h.buckets()]


class FlowCollector(Collector):
    """The figures of one process of one flow, read from its stats at every scrape."""

    def __init__(
        self, stats: FlowStats, flow: str, process: int = 0, health: HealthConfig | None = None, started: float = 0.0
    ) -> None:
        self._stats = stats
        self._flow = flow
        self._process = str(process)
        self._health = health or HealthConfig()
        self._started = started or time.time()

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        data = stats.to_json()
        base = ["flow", "process"]
        ids = [self._flow, self._process]
        now = time.time()

        def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=base + list(labels or {}))
            family.add_metric(ids + list((labels or {}).values()), value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=base)
            family.add_metric(ids, value)
            return family

        yield counter("edgeflow_samples_in", "Samples the flow's sources took in.", data["samples_in"])
        per_source = CounterMetricFamily(
            "edgeflow_source_samples", "Samples each source step handed on in this process.", labels=[*base, "step"]
        )
        for step, source in data["sources"].items():
            per_source.add_metric([*ids, step], source["samples"])
        yield per_source
        yield counter("edgeflow_input_bytes", "Raw bytes the sources took in.", data["bytes_in"])
        yield counter("edgeflow_output_bytes", "Bytes the sinks sent on (upstream).", data["bytes_out"])
        yield gauge(
            "edgeflow_data_reduction_ratio", "Share of raw input bytes that did not leave the gateway.", stats.reduction
        )
        yield counter("edgeflow_windows", "Windows closed.", data["windows"])
        yield counter("edgeflow_window_gaps", "Silences that reset a sensor's window.", data["gaps"])
        yield counter("edgeflow_late_samples", "Samples older than their sensor's newest (dead letters).", data["late"])
        yield counter("edgeflow_anomalies", "Windows flagged as anomalous.", data["anomalies"])
        yield counter("edgeflow_outputs", "Items the sinks wrote.", data["items_out"])

        flagged = CounterMetricFamily(
            "edgeflow_sensor_flagged_windows", "Flagged windows by sensor.", labels=[*base, "sensor"]
        )
        last_flag = GaugeMetricFamily(
            "edgeflow_sensor_last_flag_timestamp_seconds",
            "Event time the sensor's last flagged window ended (Unix seconds).",
            labels=[*base, "sensor"],
        )
        for sensor, flags in sorted(data["flags"].items()):
            flagged.add_metric([*ids, sensor], flags["windows"])
            last_flag.add_metric([*ids, sensor], flags["last"])
        yield flagged
        yield last_flag

        dead = CounterMetricFamily(
            "edgeflow_dead_letters",
            "Dead letters by the step that made them and their reason.",
            labels=[*base, "step", "reason"],
        )
        for row in data["dead_letters_by"]:
            dead.add_metric([*ids, row["step"], row["reason"]], row["count"])
        yield dead

        dropped = CounterMetricFamily(
            "edgeflow_dropped", "Data lost or shed, by cause (the operator's counter).", labels=[*base, "cause"]
        )
        for name, n in sorted(data["counts"].items()):
            if is_loss(name):
                dropped.add_metric([*ids, name], n)
        yield dropped

        updates = CounterMetricFamily(
            "edgeflow_model_updates",
            "Model updates by result: swapped, rejected, rolled_back.",
            labels=[*base, "result"],
        )
        for name, result in _MODEL_UPDATES.items():
            updates.add_metric([*ids, result], data["counts"].get(name, 0))
        yield updates
        if "mqtt.sink_delivered" in data["counts"]:
            yield counter(
                "edgeflow_outbox_delivered", "Messages the broker acknowledged.", data["counts"]["mqtt.sink_delivered"]
            )

        events = CounterMetricFamily(
            "edgeflow_events", "Every operator counter by name (e.g. mqtt.reconnects).", labels=[*base, "name"]
        )
        for name, n in sorted(data["counts"].items()):
            events.add_metric([*ids, name], n)
        yield events

        models = InfoMetricFamily("edgeflow_model", "The model each scoring step used last.", labels=[*base, "step"])
        for step, model in sorted(data["models"].items()):
            name, _, version = model.partition("@")
            models.add_metric([*ids, step], {"model": model, "name": name, "version": version})
        yield models

        # lag behind event time
        lag = GaugeMetricFamily(
            "edgeflow_event_time_lag_seconds",
            "Wall clock minus the newest event time the source handed on (how far behind live input is).",
            labels=[*base, "step"],
        )
        newest_in = -math.inf
        for step, source in sorted(data["sources"].items()):
            ts = source["newest_ts"]
            if ts is not None and math.isfinite(ts):
                lag.add_metric([*ids, step], now - ts)
                newest_in = max(newest_in, ts)
        yield lag
        behind = GaugeMetricFamily(
            "edgeflow_verdict_lag_seconds",
            "Newest input event time minus the newest event time a scoring step gave a verdict for.",
            labels=[*base, "step"],
        )
        for step, ts in sorted(data["verdict_ts"].items()):
            if math.isfinite(newest_in):
                behind.add_metric([*ids, step], max(0.0, newest_in - ts))
        yield behind
        idle = GaugeMetricFamily(
            "edgeflow_source_idle_seconds", "Seconds since the source last handed on data.", labels=[*base, "step"]
        )
        for step, source in sorted(data["sources"].items()):
            idle.add_metric([*ids, step], source["idle_s"])
        yield idle

        # outbox, queues, links, other gauges
        gauges = dict(data["gauges"])
        for key, (name, doc) in _GAUGES.items():
            if key in gauges:
                yield gauge(name, doc, gauges.pop(key))
        enqueued = [gauges.pop(k) for k in sorted(gauges) if k.split("|", 1)[0] == "outbox.oldest_enqueued"]
        if enqueued:  # one per sink partition (0: empty); the oldest of them
            oldest = min((t for t in enqueued if t > 0), default=0.0)
            age = max(0.0, now - oldest) if oldest > 0 else 0.0
            yield gauge("edgeflow_outbox_oldest_age_seconds", "Age of the oldest message in the outbox.", age)
        drift = GaugeMetricFamily(
            "edgeflow_model_input_drift",
            "Recent median of a model input feature minus its training mean, in training standard deviations.",
            labels=[*base, "model", "feature"],
        )
        for name in sorted(k for k in gauges if k.startswith("model.drift|")):
            _, model, feature = name.split("|", 2)
            drift.add_metric([*ids, model, feature], gauges.pop(name))
        yield drift
        psi = GaugeMetricFamily(
            "edgeflow_model_input_psi",
            "Population stability index of a model input feature's recent values against its training bins.",
            labels=[*base, "model", "feature"],
        )
        for name in sorted(k for k in gauges if k.startswith("model.psi|")):
            _, model, feature = name.split("|", 2)
            psi.add_metric([*ids, model, feature], gauges.pop(name))
        yield psi
        health = {"model.inputs": "edgeflow_model_input_values", "model.saturated": "edgeflow_model_saturated_values"}
        health["model.drift_alarms"] = "edgeflow_model_drift_alarms"
        health["model.psi_alarms"] = "edgeflow_model_psi_alarms"
        for key, metric in health.items():
            family = CounterMetricFamily(
                metric, f"Per model version: {key} (see edgeflow.operators.health).", labels=[*base, "model"]
            )
            for name, n in sorted(data["counts"].items()):
                if name.startswith(key + "|"):
                    family.add_metric([*ids, name.split("|", 1)[1]], n)
            yield family
        ladder = CounterMetricFamily(
            "edgeflow_ladder_steps",
            "Latency-ladder steps by direction, the rung reached and the cause (latency, backlog, recovered).",
            labels=[*base, "direction", "rung", "cause"],
        )
        for name, n in sorted(data["counts"].items()):
            if name.startswith("ladder."):
                direction, rung, *cause = name[len("ladder.") :].split("|", 2)
                ladder.add_metric([*ids, direction, rung, cause[0] if cause else ""], n)
        yield ladder
        for key, metric, doc in (
            ("ladder.level|", "edgeflow_ladder_level", "Rung of a scoring step's ladder (0 full .. 3 raw)."),
            ("ladder.backlog_s|", "edgeflow_ladder_backlog_seconds", "Verdicts' lag behind event time, over usual."),
        ):
            by_step = GaugeMetricFamily(metric, doc, labels=[*base, "step"])
            for name in sorted(k for k in gauges if k.startswith(key)):
                by_step.add_metric([*ids, name[len(key) :]], gauges.pop(name))
            yield by_step
        other = GaugeMetricFamily("edgeflow_gauge", "Other current values by name.", labels=[*base, "name"])
        for name, value in sorted(gauges.items()):
            other.add_metric([*ids, name], value)
        yield other
        up = GaugeMetricFamily(
            "edgeflow_link_up", "Whether a connection is up (1) or down (0).", labels=[*base, "link"]
        )
        down = GaugeMetricFamily(
            "edgeflow_link_down_seconds", "How long a connection has been down (0 while up).", labels=[*base, "link"]
        )
        for name, link in sorted(data["links"].items()):
            up.add_metric([*ids, name], 1.0 if link["up"] else 0.0)
            down.add_metric([*ids, name], 0.0 if link["up"] else link["for_s"])
        yield up
        yield down

        progress = progress_fraction(data)
        if progress is not None:
            yield gauge("edgeflow_progress_ratio", "Share of a replay's input read so far (0..1).", progress)
        yield gauge("edgeflow_ready", "1 once sources are connected and models loaded.", 0.0 if not_ready(stats) else 1)
        yield gauge("edgeflow_healthy", "1 while the flow is healthy (see /healthz).", 0 if self._unhealthy() else 1)
        yield gauge(
            "edgeflow_run_problems", "Problems that make the run's result untrustworthy.", len(data["problems"])
        )
        yield gauge("edgeflow_start_time_seconds", "When the run started (Unix seconds).", self._started)

        # histograms
        latency = HistogramMetricFamily(
            "edgeflow_ingest_to_output_seconds",
            "From a sample's ingest to the output it contributed to (sinks).",
            labels=base,
        )
        latency.add_metric(ids, _buckets(stats.latency.histogram), stats.latency.histogram.sum_s)
        yield latency
        steps = HistogramMetricFamily(
            "edgeflow_step_batch_seconds", "Time a step spends on one batch.", labels=[*base, "step"]
        )
        invoke = HistogramMetricFamily(
            "edgeflow_model_invoke_seconds", "Time of one model invoke (where the step records it).", labels=base
        )
        durations = HistogramMetricFamily(
            "edgeflow_duration_seconds", "Other durations by name.", labels=[*base, "name"]
        )
        scores = HistogramMetricFamily(
            "edgeflow_model_score", "Anomaly scores by model version (score units).", labels=[*base, "model"]
        )
        for name, h in sorted(dict(stats.histograms).items()):
            if name.startswith("model.score|"):
                scores.add_metric([*ids, name.split("|", 1)[1]], _buckets(h), h.sum_s)
            elif name.startswith("step."):
                steps.add_metric([*ids, name[5:]], _buckets(h), h.sum_s)
            elif name == "infer.invoke":
                invoke.add_metric(ids, _buckets(h), h.sum_s)
            else:
                durations.add_metric([*ids, name], _buckets(h), h.sum_s)
        yield scores
        yield steps
        yield invoke
        yield durations

    def _unhealthy(self) -> list[str]:
        return unhealthy(self._stats, self._health)


def exposition(stats: FlowStats, flow: str, process: int = 0, health: HealthConfig | None = None) -> str:
    """Return the Prometheus text exposition of *stats* (what ``/metrics`` serves)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowCollector(stats, flow, process, health))
    return generate_latest(registry).decode()


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` of one process, served from a daemon thread.

    *port* 0 picks a free port (see :attr:`port`). ``/healthz`` and ``/readyz`` answer 200 with
    ``ok``, or 503 with one reason per line.
    """

    def __init__(
        self,
        stats: FlowStats,
        flow: str,
        *,
        port: int,
        host: str = "0.0.0.0",  # Prometheus scrapes from another host, as its exporters do
        process: int = 0,
        health: HealthConfig | None = None,
    ) -> None:
        self.health = health or HealthConfig()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FlowCollector(stats, flow, process, self.health))
        self._stats = stats
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    reasons = unhealthy(stats, server.health) if path == "/healthz" else not_ready(stats)
                    body = ("\n".join(reasons) if reasons else "ok") + "\n"
                    self._send(503 if reasons else 200, body.encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Say nothing: a scrape every few seconds is not news."""

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        """The port served (the one picked when *port* was 0)."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgeflow-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:9464``."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
