"""Prometheus metrics of a running flow, scraped over real HTTP on 127.0.0.1 and parsed with prometheus_client."""

from __future__ import annotations

import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.metrics import FlowStats
from edgeflow.observe.exporter import MetricsServer
from edgeflow.observe.health import HealthConfig
from edgeflow.records import Sample
from edgeflow.runtime import RunReport, run

T0 = 1_772_438_400.0
"""2026-03-02T08:00:00Z"""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def write_recording(
    path: Path, *, seconds: float = 2.0, rate: int = 100, tail_s: float = 6.0, tails: tuple[str, ...] = ("s1",)
) -> dict[str, Any]:
    """Two sensors at *rate* Hz; s2 jumps by 40 from 60 % to 75 % of the way; two bad rows; one late sample.

    The last row of each sensor in *tails* lies *tail_s* after the rest in event time, so a paced replay
    waits before it: everything before it has been processed while the flow still runs.
    """
    rng = np.random.default_rng(3)
    lines = ["ts,sensor,value"]
    for i in range(int(seconds * rate)):
        t = T0 + i / rate
        for sensor in ("s1", "s2"):
            value = rng.normal(0.0, 1.0) + (40.0 if sensor == "s2" and 0.6 <= i / (seconds * rate) < 0.75 else 0.0)
            lines.append(f"{iso(t)},{sensor},{value:.5f}")
        if i == 50:
            lines.append(f"{iso(t)},s1")  # two columns: a dead letter of the replay
            lines.append("yesterday,s1,1.0")  # no timestamp: a dead letter of the replay
        if i == 80:
            lines.append(f"{iso(T0 + 0.2)},s1,0.0")  # older than s1's newest: a dead letter of the window
    tail_rows = [f"{iso(T0 + seconds + tail_s)},{sensor},0.0" for sensor in tails]
    lines += tail_rows
    path.write_text("\n".join(lines) + "\n")
    good = 2 * int(seconds * rate) + 1 + len(tails)  # the late sample and the tails are samples too
    return {"samples": good, "tail_bytes": sum(len(tail) + 1 for tail in tail_rows)}


def small_flow(recording: Path, out: Path, *, speed: float | None = 4.0, name: str = "metrics_demo") -> Flow:
    flow = Flow(name, dead_letter_path=str(out.with_suffix(".dead.jsonl")))
    samples = eo.replay("samples", flow, recording, speed=speed)
    windows = eo.window("win", samples, rate_hz=100, size=20, hop=10, max_gap_s=0.5)
    scores = eo.zscore_detector("detect", eo.features("feat", windows, ["mean", "std", "rms"]), threshold=8, warmup=10)
    eo.summarize("summary", scores, every_s=1.0, sink=eo.jsonl(out))
    return flow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Scrape:
    """One parsed /metrics page: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, /, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()]
        assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
        return float(found[0])

    def labelled(self, name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in self.samples if s.name == name}


def wait_for(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


class RunInThread:
    def __init__(self, flow: Flow, **kwargs: Any) -> None:
        self.report: RunReport | None = None
        self.error: BaseException | None = None

        def go() -> None:
            try:
                self.report = run(flow, handle_signals=False, **kwargs)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30.0) -> RunReport:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the flow did not end"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def test_scraped_figures_of_a_running_paced_replay_match_its_report(tmp_path: Path) -> None:
    data = write_recording(tmp_path / "rec.csv")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flow = small_flow(tmp_path / "rec.csv", tmp_path / "s.jsonl")
    running = RunInThread(flow, metrics_port=port, metrics_host="127.0.0.1")

    def settled() -> Scrape | None:  # everything but the tail row handed on, and nothing moving any more
        try:
            first = Scrape(get(f"{url}/metrics")[1])
            time.sleep(0.15)
            second = Scrape(get(f"{url}/metrics")[1])
        except OSError:
            return None  # not serving yet
        done = first.value("edgeflow_samples_in_total") == data["samples"] - 1
        return second if done and _same(first, second) else None

    scrape = wait_for(settled)
    ready, health = get(f"{url}/readyz"), get(f"{url}/healthz")
    assert ready == (200, "ok\n") and health == (200, "ok\n")
    assert get(f"{url}/nothing")[0] == 404
    report = running.join()
    s = report.stats

    assert scrape.value("edgeflow_samples_in_total", flow="metrics_demo", process="0") == s.samples_in - 1
    assert scrape.value("edgeflow_source_samples_total", step="samples") == s.samples_in - 1
    assert scrape.value("edgeflow_input_bytes_total") == s.bytes_in - data["tail_bytes"]
    assert scrape.value("edgeflow_windows_total") == s.windows > 0
    assert scrape.value("edgeflow_anomalies_total") == s.anomalies > 0
    assert scrape.value("edgeflow_late_samples_total") == s.late == 1
    assert scrape.value("edgeflow_window_gaps_total") == s.gaps - 1  # the tail row comes after a silence
    assert scrape.labelled("edgeflow_sensor_flagged_windows_total", "sensor") == {"s2": s.flags["s2"].windows}
    assert scrape.value("edgeflow_sensor_last_flag_timestamp_seconds", sensor="s2") == s.flags["s2"].last

    dead = {
        (x.labels["step"], x.labels["reason"]): x.value
        for x in scrape.samples
        if x.name == "edgeflow_dead_letters_total"
    }
    assert dead == {key: float(n) for key, n in s.dead_letters_by.items()}
    assert sum(dead.values()) == s.dead_letters == 3
    assert set(dead) == {
        ("samples", "expected N columns, got N"),
        ("samples", "Invalid isoformat string"),
        ("win", "late sample"),
    }

    assert scrape.value("edgeflow_model_info", step="detect", model="zscore") == 1.0
    assert scrape.value("edgeflow_ready") == 1.0 and scrape.value("edgeflow_healthy") == 1.0
    assert scrape.value("edgeflow_progress_ratio") > 0.9
    assert 0.0 <= scrape.value("edgeflow_verdict_lag_seconds", step="detect") < 1.0
    assert scrape.value("edgeflow_event_time_lag_seconds", step="samples") > 0  # the recording is from the past

    outputs = scrape.value("edgeflow_ingest_to_output_seconds_count")
    assert 0 < outputs <= s.latency.count  # the last summaries come out when the input ends
    buckets = scrape.labelled("edgeflow_ingest_to_output_seconds_bucket", "le")
    assert buckets["+Inf"] == outputs and list(buckets.values()) == sorted(buckets.values())
    steps = {x.labels["step"] for x in scrape.samples if x.name == "edgeflow_step_batch_seconds_count"}
    assert steps == {"win", "feat", "detect", "summary", "summary_out"}
    assert scrape.families["edgeflow_windows"].type == "counter"
    assert scrape.families["edgeflow_ingest_to_output_seconds"].type == "histogram"
    assert scrape.families["edgeflow_model_info"].type == "gauge"  # how the text format carries an info metric


def _same(a: Scrape, b: Scrape) -> bool:
    keep = (
        "edgeflow_samples_in_total",
        "edgeflow_windows_total",
        "edgeflow_dead_letters_total",
        "edgeflow_outputs_total",
    )
    pick = lambda s: sorted((x.name, sorted(x.labels.items()), x.value) for x in s.samples if x.name in keep)  # noqa: E731
    return pick(a) == pick(b)


def test_a_flow_setting_serves_metrics_and_the_server_goes_away_with_the_run(tmp_path: Path) -> None:
    write_recording(tmp_path / "rec.csv", seconds=0.5, tail_s=0.0)
    port = free_port()
    flow = small_flow(tmp_path / "rec.csv", tmp_path / "s.jsonl", speed=None)
    flow.metrics_port = port
    report = run(flow, metrics_host="127.0.0.1", handle_signals=False)
    assert report.stats.samples_in > 0
    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{port}/metrics")  # released: nothing listens any more


def test_a_metrics_port_in_use_fails_the_run_before_any_data_flows() -> None:
    from tests.test_cli import edgeflow

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = edgeflow("run", "flows/pump_vibration.py", "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        f"flow 'pump_vibration' failed: cannot serve metrics on 127.0.0.1:{port}: Address already in use. "
        "Hint: pick another --metrics-port (in a cluster, process i takes port + i), or stop what listens there"
    )
    assert "samples in" not in done.stderr


def test_health_and_readiness_answers_follow_the_stats() -> None:
    stats = FlowStats()
    server = MetricsServer(stats, "demo", port=0, host="127.0.0.1", health=HealthConfig(uplink_down_s=0.0, stall_s=0.2))
    try:
        code, body = get(f"{server.url}/readyz")
        assert (code, body) == (503, "the run has not started\n")
        stats.set_ready("run", True)
        stats.set_ready("model:infer", False)
        assert get(f"{server.url}/readyz") == (503, "model:infer is not ready\n")
        stats.set_ready("model:infer", True)
        assert get(f"{server.url}/readyz") == (200, "ok\n")

        stats.source_opened("samples", "replay")
        assert get(f"{server.url}/healthz") == (200, "ok\n")
        time.sleep(0.3)
        code, body = get(f"{server.url}/healthz")
        assert code == 503 and body.startswith("source 'samples' handed on nothing for ")
        stats.source_batch("samples", 10, T0)
        stats.link("uplink:out", False)
        code, body = get(f"{server.url}/healthz")
        assert code == 503 and body.startswith("uplink:out is down for ")
        stats.link("uplink:out", True)
        assert get(f"{server.url}/healthz") == (200, "ok\n")
        scrape = Scrape(get(f"{server.url}/metrics")[1])
        assert scrape.value("edgeflow_link_up", link="uplink:out") == 1.0
        assert scrape.value("edgeflow_link_down_seconds", link="uplink:out") == 0.0
    finally:
        server.close()


def test_losses_outbox_and_model_updates_are_read_from_the_operator_counters() -> None:
    stats = FlowStats(counts={"mqtt.dropped": 4, "mqtt.sink_dropped": 2, "infer.swaps": 1, "mqtt.sink_delivered": 9})
    stats.set_gauge("outbox.depth", 12)
    stats.set_gauge("outbox.oldest_enqueued", time.time() - 30)
    stats.observe("infer.invoke", 0.000_002)
    server = MetricsServer(stats, "demo", port=0, host="127.0.0.1", process=3)
    try:
        scrape = Scrape(get(f"{server.url}/metrics")[1])
    finally:
        server.close()
    assert scrape.labelled("edgeflow_dropped_total", "cause") == {"mqtt.dropped": 4.0, "mqtt.sink_dropped": 2.0}
    assert scrape.labelled("edgeflow_model_updates_total", "result") == {
        "swapped": 1.0,
        "rejected": 0.0,
        "rolled_back": 0.0,
    }
    assert scrape.value("edgeflow_outbox_delivered_total", process="3") == 9.0
    assert scrape.value("edgeflow_outbox_messages") == 12.0
    assert 29.0 < scrape.value("edgeflow_outbox_oldest_age_seconds") < 60.0
    assert scrape.value("edgeflow_model_invoke_seconds_count") == 1.0
    assert math.isclose(scrape.value("edgeflow_model_invoke_seconds_sum"), 0.000_002)
    assert scrape.value("edgeflow_events_total", name="infer.swaps") == 1.0


def test_the_engine_watch_on_a_keyed_step_times_each_shard_batch_and_drops_discarded_states() -> None:
    from edgeflow.engine.dataflow import StepWatch, _WatchedBank

    class Refused:  # a keyed state the engine may drop (it asks for ``discard``)
        discard = True

        def on_batch(self, items: list[Any]) -> list[Any]:
            return items

        def on_eof(self) -> list[Any]:
            return []

        def snapshot(self) -> None:
            return None

    stats = FlowStats()
    bank = _WatchedBank(StepWatch("win", stats), lambda _resume: Refused(), None, keep=False)
    sample = Sample(1.0, "s1", (1.0,), 8, 0)
    out, discard = bank.on_batch([sample, sample])
    assert out == [sample, sample] and stats.histograms["step.win"].count == 1
    assert bank.states == {} and discard is True  # the refused sensor's state and the empty shard are dropped
