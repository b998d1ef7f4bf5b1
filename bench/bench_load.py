"""Load test: ramp the input rate until the flow is overloaded; per step, throughput, latency p50/p99 and drops.

    python bench/bench_load.py                  # MQTT: ramp until overload (~1 min), Markdown table
    python bench/bench_load.py --quick          # shorter steps
    python bench/bench_load.py --source replay  # replay the shipped recording ever faster (no broker)

MQTT: starts its own Mosquitto on a free 127.0.0.1 port and runs the flow (MQTT source with a
bounded hand-off queue -> 32-point windows at 128 Hz -> rms/std -> z-score -> every window's
verdict published with ``mqtt_sink``) in a separate process with one worker, serving Prometheus
metrics. This process publishes samples from 10 sensors at each step's rate (one sample per
message unless ``--batch``), subscribes to the verdicts, and reads the flow's ``/metrics`` before
and after each step. Per step:

* offered: samples/s this process published; processed: samples/s the flow took in
  (``edgeflow_samples_in_total``) while the step's input was being published;
* p50/p99: publish of the sample that completed a window -> its verdict received here (same clock);
* dropped: samples the flow counted as lost (``edgeflow_dropped_total``, by cause: the hand-off
  queue's ``mqtt.dropped`` with ``--overload drop_oldest``), and verdicts that never came.

Replay: replays ``examples/data/pump_vibration.csv`` (windows, 4 features, z-score) at speeds
10x, 20x, 50x, ... (one run per step); processed is samples per second of wall time, p50/p99
the run's sample ingest -> window verdict latency (every verdict written), "behind" how much
longer the run took than the paced input.

A step is overloaded when the flow dropped samples or verdicts are missing, processed is under
90 % of offered, or p99 is over ``--budget-ms``; the ramp goes on for ``--after-overload`` more
steps (default 1) to show what overload does, then stops.

    python bench/bench_load.py --ladder         # the latency-budget ladder under MQTT overload (~40 s)

Ladder: the int8 reference pipeline (windows of 256 at 500 Hz -> 13 features + crest factor ->
``eo.infer`` with ``Flow(latency_budget_ms=...)``) on MQTT input from a real Mosquitto on a free
127.0.0.1 port, every verdict published back with ``mqtt_sink`` (QoS 1). The model is the shipped
int8 autoencoder on LiteRT plus an emulated heavier model: ``--model-ms`` of CPU per window and
``--invoke-ms`` per invoke (busy-waiting in the worker, as a real interpreter would), so that the
model is what overloads the gateway (the shipped model alone takes ~1 us a window). Sensors
``hi-0..3`` are given ``priorities={...: "high"}``; ``s-NN`` are normal. Each sensor publishes
500 Hz samples (values from the shipped recording) in messages of 32 samples (64 ms), stamped with
the wall clock. Phases add sensors until overload, then fall back to the starting load.
Per phase: offered samples/s, windows in, windows scored by the model and shed to the z-score
fallback (from the verdicts received), the ladder's rung over time (``edgeflow_ladder_level``
read every 0.5 s: F full, L lean, P priority, R raw), and the p99 of publish -> verdict received
for high-priority and normal sensors; then the same p99 by the rung in force when each sample was
published. At the end, every window is accounted for: windows = model + shed + dead letters, and
verdicts received = windows; samples published = taken in + shed at the MQTT hand-off (normal sensors' messages
that waited the whole budget: the hand-off drains high-priority sensors first) + dropped. Results: docs/operations.md.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mqtt import DT, HOP, SIZE, T0, Mosquitto  # noqa: E402

from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix  # noqa: E402

DT_LADDER = 1.0 / 500
EVENT0 = 1000.0
"""Event time of the first sample: a clock that runs at wall-clock speed (what the ladder's backlog gauge needs)
and stays small, so that ``EVENT0 + n / 500`` lands on the window's 500 Hz grid to far better than its 1e-9
tolerance (epoch seconds at 500 Hz do not: a window would complete one sample, here one message, late)."""

SENSORS = 10
MQTT_RATES = (1_000, 2_000, 4_000, 8_000, 12_000, 16_000, 24_000, 32_000, 48_000, 64_000)
REPLAY_SPEEDS = (10, 20, 50, 100, 200, 400, 800, 1_600)


class Receiver:
    """Subscribes in its own paho thread and timestamps every message on arrival."""

    def __init__(self, address: str, topic: str) -> None:
        self.got: list[tuple[int, str, bytes]] = []
        ready = threading.Event()
        cfg = BrokerConfig.model_validate(address)
        self.client = make_client(cfg, f"bench-rx-{unique_suffix()}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = lambda _c, _u, m: self.got.append((time.perf_counter_ns(), m.topic, m.payload))
        connect_async(self.client, cfg)
        assert ready.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Sender:
    """Publishes from this thread, driving paho's loop itself (no network thread)."""

    def __init__(self, address: str, qos: int = 1) -> None:
        cfg = BrokerConfig.model_validate(address)
        self.client = make_client(cfg, f"bench-tx-{unique_suffix()}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(cfg.host, cfg.port)
        self.qos = qos
        self.n = 0

    def send(self, topic: str, payload: bytes) -> int:
        """Publish *payload*; return when (``perf_counter_ns``)."""
        t = time.perf_counter_ns()
        self.client.publish(topic, payload, qos=self.qos)
        self.n += 1
        if self.n % 16 == 0:
            self.client.loop(0)
        return t

    def pause_until(self, due: float) -> None:
        """Serve the connection until ``perf_counter()`` reaches *due*."""
        while True:
            ahead = due - time.perf_counter()
            if ahead <= 0:
                return
            self.client.loop(min(ahead, 0.0005))

    def flush(self, seconds: float = 2.0) -> None:
        """Serve the connection for *seconds* (what is queued goes out)."""
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            self.client.loop(0.01)


def flow_factory(broker: str, queue: int, overload: str) -> Any:
    import edgeflow.operators as eo
    from edgeflow import Flow

    flow = Flow("bench_load")
    samples = eo.mqtt_source(
        "samples", flow, "load/in/{sensor}", broker=broker, eos_topic="load/eos", queue_size=queue, overload=overload
    )
    windows = eo.window("win", samples, rate_hz=128, size=SIZE, hop=HOP, max_gap_s=1.0)
    scores = eo.zscore_detector("detect", eo.features("feat", windows, ["rms", "std"]), warmup=5)
    eo.output("verdicts", scores, eo.mqtt_sink("load/out/{sensor}/{kind}", broker=broker, step_id="verdicts", qos=0))
    return flow


def serve_flow(broker: str, metrics_port: int, queue: int, overload: str) -> None:
    from edgeflow.jsontext import dumps
    from edgeflow.runtime import run

    report = run(flow_factory(broker, queue, overload), metrics_port=metrics_port, metrics_host="127.0.0.1")
    print(dumps(report.to_json()), flush=True)


class FlowMetrics:
    """The flow's own figures, read from its /metrics endpoint."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    def read(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url, timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "edgeflow_dropped_total":
                    out[f"dropped:{s.labels['cause']}"] = s.value
                elif s.name in ("edgeflow_samples_in_total", "edgeflow_dead_letters_total"):
                    out[s.name] = out.get(s.name, 0.0) + s.value
        return out

    def wait(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def pct(values_ns: list[int]) -> tuple[float, float]:
    if not values_ns:
        return float("nan"), float("nan")
    a = np.asarray(values_ns, dtype=np.float64) / 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def mqtt_step(
    tx: Sender, rx: Receiver, metrics: FlowMetrics, rate: float, seconds: float, batch: int, budget_ms: float
) -> dict[str, Any]:
    """Publish *rate* samples/s from 10 fresh sensors for *seconds*; measure what the flow made of it."""
    prefix = f"r{int(rate)}"
    per_sensor = int(rate * seconds / SENSORS)
    names = [f"{prefix}-{k}" for k in range(SENSORS)]
    published: dict[str, list[int]] = {s: [0] * per_sensor for s in names}
    before = metrics.read()
    start_rx = len(rx.got)
    t0 = time.perf_counter()
    messages = 0
    for i0 in range(0, per_sensor, batch):
        idx = range(i0, min(i0 + batch, per_sensor))
        for s in names:
            tx.pause_until(t0 + messages * batch / rate)
            body = [{"ts": T0 + i * DT, "value": float(np.sin(i * 0.3))} for i in idx]
            t = tx.send(f"load/in/{s}", json.dumps(body[0] if batch == 1 else body).encode())
            for i in idx:
                published[s][i] = t
            messages += 1
    sent_s = time.perf_counter() - t0
    during = metrics.read()
    expected = SENSORS * ((per_sensor - SIZE) // HOP + 1)
    deadline, last, quiet_since = time.perf_counter() + 5.0, -1, time.perf_counter()
    while time.perf_counter() < deadline:  # until verdicts stop coming (or all came)
        tx.client.loop(0.02)
        got_now = len(rx.got)
        if got_now != last:
            last, quiet_since = got_now, time.perf_counter()
        done = sum(1 for _t, topic, _p in rx.got[start_rx:] if topic.split("/")[2].startswith(prefix + "-"))
        if done >= expected or time.perf_counter() - quiet_since > 1.0:
            break
    after = metrics.read()
    latencies = []
    for t_rx, topic, payload in rx.got[start_rx:]:
        sensor = topic.split("/")[2]
        if sensor in published:
            end = datetime.fromisoformat(json.loads(payload)["end"]).timestamp()
            i = round((end - T0) / DT)
            if 0 <= i < per_sensor and published[sensor][i]:
                latencies.append(t_rx - published[sensor][i])
    p50, p99 = pct(latencies)
    dropped = {
        k[8:]: int(after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith("dropped:") and after[k] > before.get(k, 0)
    }
    processed = (during["edgeflow_samples_in_total"] - before["edgeflow_samples_in_total"]) / sent_s
    result = {
        "offered": per_sensor * SENSORS / sent_s,
        "target": rate,
        "processed": processed,
        "p50": p50,
        "p99": p99,
        "dropped": dropped,
        "verdicts": len(latencies),
        "expected": expected,
        "dead_letters": int(after.get("edgeflow_dead_letters_total", 0) - before.get("edgeflow_dead_letters_total", 0)),
    }
    result["missing"] = expected - len(latencies)
    result["overloaded"] = bool(
        dropped or result["missing"] > 0 or processed < 0.9 * result["offered"] or not p99 <= budget_ms
    )
    return result


def run_mqtt(args: argparse.Namespace) -> list[dict[str, Any]]:
    broker = Mosquitto()
    flow = None
    steps: list[dict[str, Any]] = []
    try:
        rx = Receiver(broker.address, "load/out/#")
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, __file__, "--serve-flow", broker.address, "--metrics-port", str(port)]
        cmd += ["--queue", str(args.queue), "--overload", args.overload]
        flow = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        metrics = FlowMetrics(port)
        metrics.wait()
        tx = Sender(broker.address, qos=args.qos)
        deadline, i = time.perf_counter() + 30, 0
        while not rx.got:  # warm up: until the flow answers
            assert time.perf_counter() < deadline, "the flow did not answer"
            tx.send("load/in/warm", json.dumps({"ts": T0 + i * DT, "value": 0.0}).encode())
            i += 1
            tx.pause_until(time.perf_counter() + 0.002)
        tx.flush(0.5)
        for rate in MQTT_RATES:
            step = mqtt_step(tx, rx, metrics, float(rate), args.step_s, args.batch, args.budget_ms)
            steps.append(step)
            _progress(step)
            if sum(s["overloaded"] for s in steps) > args.after_overload:
                break
        tx.send("load/eos", b"")
        tx.flush(1.0)
        flow.communicate(timeout=60)
        rx.close()
    finally:
        if flow is not None and flow.poll() is None:
            flow.kill()
        broker.stop()
    return steps


def run_replay(args: argparse.Namespace) -> list[dict[str, Any]]:
    import edgeflow.operators as eo
    from edgeflow import Flow
    from edgeflow.compiler import compile_flow
    from edgeflow.runtime import run

    steps: list[dict[str, Any]] = []
    out = Path("out/bench_load.verdicts.jsonl")
    for speed in REPLAY_SPEEDS:
        flow = Flow("bench_load_replay")
        samples = eo.replay("samples", flow, "examples/data/pump_vibration.csv", speed=float(speed))
        windows = eo.window("win", samples, rate_hz=500, size=256, hop=64, max_gap_s=0.05)
        feats = eo.features("feat", windows, ["mean", "std", "min", "max"])
        eo.output("verdicts", eo.zscore_detector("detect", feats, threshold=6.0, warmup=50), eo.jsonl(out))
        compiled = compile_flow(flow)
        report = run(compiled, handle_signals=False)
        s = report.stats
        paced_s = 60.0 / speed
        offered = s.samples_in / paced_s
        step = {
            "target": speed,
            "offered": offered,
            "processed": report.events_per_s,
            "p50": s.latency.percentile_us(50) / 1e3,
            "p99": s.latency.percentile_us(99) / 1e3,
            "dropped": {name: n for name, n in s.counts.items() if n and "dropped" in name},
            "behind_s": max(0.0, report.seconds - paced_s),
            "dead_letters": s.dead_letters,
        }
        step["overloaded"] = bool(
            step["dropped"] or step["processed"] < 0.9 * offered or not step["p99"] <= args.budget_ms
        )
        steps.append(step)
        _progress(step)
        if sum(s["overloaded"] for s in steps) > args.after_overload:
            break
    out.unlink(missing_ok=True)
    return steps


HIGH = tuple(f"hi-{k}" for k in range(4))
LADDER_PHASES = ((4, 8.0), (12, 8.0), (28, 8.0), (60, 14.0), (4, 30.0))
"""(normal sensors, seconds) per phase; the four high-priority sensors publish throughout."""
MSG = 32
"""Samples per message (64 ms at 500 Hz)."""
RUNG_LETTERS = "FLPR"
SHED = "dropped:mqtt.dropped|shed"
"""Normal-priority messages the MQTT hand-off shed (they waited the whole budget)."""
RUNGS_NAMES = ("full", "lean", "priority", "raw")


class HeavyModel:
    """The shipped int8 model on LiteRT, plus emulated CPU cost per invoke and per window (busy-waiting)."""

    def __init__(self, manifest: str, invoke_ms: float, model_ms: float) -> None:
        from edgeflow.model import LiteRTModelHandler

        self._inner = LiteRTModelHandler(manifest)
        self.invoke_s = invoke_ms / 1e3
        self.row_s = model_ms / 1e3

    @property
    def info(self) -> Any:
        return self._inner.info

    def load_model(self) -> Any:
        return self._inner.load_model()

    def run_inference(self, batch: np.ndarray) -> np.ndarray:
        return self._inner.run_inference(batch)

    def score(self, batch: np.ndarray) -> np.ndarray:
        until = time.perf_counter() + self.invoke_s + self.row_s * len(batch)
        while time.perf_counter() < until:
            pass
        return self._inner.score(batch)

    def swap(self, source: Any = None) -> Any:
        return self._inner.swap(source)


def ladder_flow(broker: str, queue: int, overload: str, budget_ms: float, invoke_ms: float, model_ms: float) -> Any:
    import edgeflow.operators as eo
    from edgeflow import Flow
    from flows.pump_int8 import MODEL, add_features

    flow = Flow("bench_ladder", latency_budget_ms=budget_ms)
    samples = eo.mqtt_source(
        "samples",
        flow,
        "ladder/in/{sensor}",
        broker=broker,
        eos_topic="ladder/eos",
        queue_size=queue,
        overload=overload,
    )
    model = HeavyModel(str(ROOT / MODEL), invoke_ms, model_ms)
    scores = eo.infer("model", add_features(samples), model=model, priorities=dict.fromkeys(HIGH, "high"))
    eo.output("verdicts", scores, eo.mqtt_sink("ladder/out/{sensor}/{kind}", broker=broker, step_id="verdicts"))
    return flow


def serve_ladder(args: argparse.Namespace) -> None:
    from edgeflow.jsontext import dumps
    from edgeflow.runtime import run

    flow = ladder_flow(args.serve_ladder, args.queue, args.overload, args.budget_ms, args.invoke_ms, args.model_ms)
    report = run(flow, metrics_port=args.metrics_port, metrics_host="127.0.0.1")
    print(dumps(report.to_json()), flush=True)


def _recording_values() -> list[np.ndarray]:
    """Each pump's accelerometer values from the shipped recording (what the model was trained on)."""
    values: dict[str, list[float]] = {}
    with (ROOT / "examples/data/pump_vibration.csv").open() as f:
        next(f)
        for line in f:
            _ts, sensor, v = line.rstrip().split(",")
            values.setdefault(sensor, []).append(float(v))
    return [np.asarray(values[k], dtype=np.float64) for k in sorted(values)]


def _scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "edgeflow_ladder_level":
                out["level"] = s.value
            elif s.name == "edgeflow_dropped_total":
                out[f"dropped:{s.labels['cause']}"] = out.get(f"dropped:{s.labels['cause']}", 0.0) + s.value
            elif s.name == "edgeflow_events_total":
                out[s.labels["name"]] = s.value
            elif s.name in ("edgeflow_windows_total", "edgeflow_samples_in_total", "edgeflow_dead_letters_total"):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def run_ladder(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Publish the phases, watch the rung, collect every verdict; return per-phase rows and the totals."""
    broker = Mosquitto()
    flow = None
    try:
        rx = Receiver(broker.address, "ladder/out/#")
        port = _free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, __file__, "--serve-ladder", broker.address, "--metrics-port", str(port)]
        cmd += ["--queue", str(args.queue), "--overload", args.overload, "--budget-ms", str(args.budget_ms)]
        cmd += ["--invoke-ms", str(args.invoke_ms), "--model-ms", str(args.model_ms)]
        flow = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:  # until the flow serves /metrics and has subscribed
            try:
                if _scrape(url).get("mqtt.subscriptions", 0) >= 1:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the flow did not start"
            time.sleep(0.1)
        tx = Sender(broker.address, qos=1)
        values = _recording_values()
        published: dict[tuple[str, int], int] = {}
        p0 = time.perf_counter()
        tick, phase_rows, levels = 0, [], []
        timeline: list[tuple[int, int]] = []  # (perf_counter_ns, rung) every 0.5 s
        next_scrape = p0
        for n_normal, seconds in LADDER_PHASES:
            sensors = [*HIGH, *(f"s-{k:02d}" for k in range(n_normal))]
            first_tick, before = tick, _scrape(url)
            rungs: list[int] = []
            rx_start = len(rx.got)
            end = p0 + (tick * MSG * DT_LADDER) + seconds
            while p0 + tick * MSG * DT_LADDER < end:
                due = p0 + (tick + 1) * MSG * DT_LADDER  # a message's last sample is due then
                tx.pause_until(due)
                stamps = [repr(EVENT0 + (tick * MSG + j) * DT_LADDER) for j in range(MSG)]
                for k, sensor in enumerate(sensors):
                    signal = values[k % len(values)]
                    i0 = (tick * MSG + 997 * k) % (len(signal) - MSG)
                    body = ",".join(f'{{"ts":{stamps[j]},"value":{signal[i0 + j]:.5f}}}' for j in range(MSG))
                    published[(sensor, tick)] = tx.send(f"ladder/in/{sensor}", f"[{body}]".encode())
                tick += 1
                if time.perf_counter() >= next_scrape:
                    next_scrape += 0.5
                    with contextlib.suppress(OSError):
                        rungs.append(int(_scrape(url).get("level", 0)))
                        timeline.append((time.perf_counter_ns(), rungs[-1]))
            after = _scrape(url)
            phase_rows.append(
                {
                    "sensors": len(sensors),
                    "normal": n_normal,
                    "seconds": seconds,
                    "offered": len(sensors) * (tick - first_tick) * MSG / seconds,
                    "ticks": (first_tick, tick),
                    "rungs": rungs,
                    "windows": after.get("edgeflow_windows_total", 0) - before.get("edgeflow_windows_total", 0),
                    "handoff_shed": after.get(SHED, 0) - before.get(SHED, 0),
                    "rx": (rx_start, None),
                    "steps": {
                        k: after[k] - before.get(k, 0)
                        for k in after
                        if k.startswith("ladder.") and after[k] > before.get(k, 0)
                    },
                }
            )
            levels.append(rungs)
            print(f"  {len(sensors):>3} sensors: rungs {''.join(RUNG_LETTERS[r] for r in rungs)}", file=sys.stderr)
        tx.send("ladder/eos", b"")
        tx.flush(1.0)
        out, _ = flow.communicate(timeout=120)
        tx.flush(1.0)
        rx.close()
    finally:
        if flow is not None and flow.poll() is None:
            flow.kill()
        broker.stop()
    report = json.loads(out.strip().splitlines()[-1])
    # every verdict received, attributed to the phase whose tick published the sample that completed its window
    by_phase: list[dict[str, list[float]]] = [{"high": [], "normal": [], "model": [], "shed": []} for _ in phase_rows]
    by_rung: list[dict[str, list[float]]] = [{"high": [], "normal": []} for _ in RUNG_LETTERS]
    stamps = [t for t, _r in timeline]
    for t_rx, topic, payload in rx.got:
        record = json.loads(payload)
        sensor = topic.split("/")[2]
        end = datetime.fromisoformat(record["end"]).timestamp()
        t = round((end - EVENT0) / DT_LADDER) // MSG
        sent = published.get((sensor, t))
        phase = next((i for i, r in enumerate(phase_rows) if r["ticks"][0] <= t < r["ticks"][1]), None)
        if sent is None or phase is None:
            continue
        row = by_phase[phase]
        row["high" if sensor in HIGH else "normal"].append((t_rx - sent) / 1e6)
        at = bisect.bisect_right(stamps, sent) - 1  # the rung last read before the sample was published
        if at >= 0:
            by_rung[timeline[at][1]]["high" if sensor in HIGH else "normal"].append((t_rx - sent) / 1e6)
        row["shed" if record["model"].startswith("fallback:") else "model"].append(1.0)
    for row, got in zip(phase_rows, by_phase, strict=True):
        row["p99_high"] = float(np.percentile(got["high"], 99)) if got["high"] else float("nan")
        row["p99_normal"] = float(np.percentile(got["normal"], 99)) if got["normal"] else float("nan")
        row["by_model"], row["shed"] = len(got["model"]), len(got["shed"])
    counts = report["counts"]
    shed = sum(n for k, n in counts.items() if k.startswith("infer.fallback|"))
    infer_dead = sum(d["count"] for d in report["dead_letters_by"] if d["step"] == "model")
    totals = {
        "published_samples": len(published) * MSG,
        "samples_in": report["samples_in"],
        "dropped": {k: n for k, n in counts.items() if "dropped" in k and n},
        "handoff_shed_samples": counts.get("mqtt.dropped|shed", 0) * MSG,
        "dead_letters": report["dead_letters"],
        "windows": report["windows"],
        "model": counts.get("infer.windows", 0),
        "shed": shed,
        "shed_by": {k: n for k, n in counts.items() if k.startswith("infer.fallback|")},
        "infer_dead_letters": infer_dead,
        "verdicts_received": len(rx.got),
        "ladder": {k: n for k, n in counts.items() if k.startswith("ladder.")},
        "coalesced": counts.get("infer.coalesced", 0),
        "flow_latency_ms": {k: round(v / 1e3, 2) for k, v in report["latency_us"].items() if k in ("p50", "p99")},
        "by_rung": [
            {
                "rung": RUNGS_NAMES[i],
                "seconds": 0.5 * sum(1 for _t, r in timeline if r == i),
                "verdicts_high": len(got["high"]),
                "p99_high": float(np.percentile(got["high"], 99)) if got["high"] else float("nan"),
                "p99_normal": float(np.percentile(got["normal"], 99)) if got["normal"] else float("nan"),
            }
            for i, got in enumerate(by_rung)
        ],
    }
    return phase_rows, totals


def ladder_table(rows: list[dict[str, Any]], totals: dict[str, Any], budget_ms: float) -> str:
    head = (
        f"| phase | sensors (4 high) | offered samples/s | messages shed at the hand-off | windows | by model "
        f"| shed to z-score | rung over time (0.5 s each) | p99 high-priority ms | p99 normal ms "
        f"| within {budget_ms:g} ms budget (high) |"
    )
    rule = "|---:|---:|---:|---:|---:|---:|---:|:---|---:|---:|:---:|"
    lines = [head, rule]
    for i, r in enumerate(rows, 1):
        rung = "".join(RUNG_LETTERS[x] for x in r["rungs"])
        ok = "yes" if r["p99_high"] <= budget_ms else "no"
        lines.append(
            f"| {i} | {r['sensors']} | {r['offered']:,.0f} | {r['handoff_shed']:,.0f} | {r['windows']:,.0f} "
            f"| {r['by_model']:,} | {r['shed']:,} "
            f"| `{rung}` | {r['p99_high']:.1f} | {r['p99_normal']:.1f} | {ok} |"
        )
    lines += [
        "",
        "| rung (when the sample was published) | time on it (s) | high-priority verdicts "
        "| p99 high-priority ms | p99 normal ms |",
        "|:---|---:|---:|---:|---:|",
    ]
    for r in totals["by_rung"]:
        lines.append(
            f"| {r['rung']} | {r['seconds']:.1f} | {r['verdicts_high']:,} | {r['p99_high']:.1f} "
            f"| {r['p99_normal']:.1f} |"
        )
    t = totals
    shed_by = ", ".join(f"{k.split(':')[-1]} {v:,}" for k, v in t["shed_by"].items()) or "none"
    lines += [
        "",
        f"Accounting: {t['published_samples']:,} samples published = {t['samples_in']:,} taken in + "
        f"{t['handoff_shed_samples']:,} shed at the hand-off (normal sensors' messages that waited the budget, "
        f"acknowledged) + {t['published_samples'] - t['samples_in'] - t['handoff_shed_samples']:,} otherwise lost; "
        f"dropped by cause: {', '.join(f'{k} {v:,}' for k, v in t['dropped'].items()) or 'none'}; "
        f"dead letters {t['dead_letters']:,}; {t['windows']:,} windows = "
        f"{t['model']:,} by the model + {t['shed']:,} shed to the z-score fallback "
        f"({shed_by}) + "
        f"{t['infer_dead_letters']:,} dead letters; {t['verdicts_received']:,} verdicts received. Ladder steps: "
        + ", ".join(f"{k[len('ladder.') :]} {v}" for k, v in sorted(t["ladder"].items())),
    ]
    return "\n".join(lines)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _progress(step: dict[str, Any]) -> None:
    print(
        f"  {step['target']:>8,} offered {step['offered']:>10,.0f}/s processed {step['processed']:>10,.0f}/s "
        f"p99 {step['p99']:8.2f} ms  dropped {sum(step['dropped'].values()):,}"
        + ("  OVERLOADED" if step["overloaded"] else ""),
        file=sys.stderr,
        flush=True,
    )


def table(steps: list[dict[str, Any]], source: str) -> str:
    """The ramp as a Markdown table."""
    if source == "replay":
        head = "| speed | offered (samples/s) | processed | p50 ms | p99 ms | behind (s) | dropped | overloaded |"
        rule = "|---:|---:|---:|---:|---:|---:|---:|:---:|"
        rows = [
            f"| {s['target']}x | {s['offered']:,.0f} | {s['processed']:,.0f} | {s['p50']:.2f} | {s['p99']:.2f} | "
            f"{s['behind_s']:.2f} | {sum(s['dropped'].values()):,} | {'yes' if s['overloaded'] else 'no'} |"
            for s in steps
        ]
    else:
        head = (
            "| target (samples/s) | offered | processed | p50 ms | p99 ms | dropped (flow, by cause) "
            "| verdicts got/expected | overloaded |"
        )
        rule = "|---:|---:|---:|---:|---:|---|---:|:---:|"
        rows = [
            f"| {s['target']:,.0f} | {s['offered']:,.0f} | {s['processed']:,.0f} | {s['p50']:.2f} | {s['p99']:.2f} | "
            f"{', '.join(f'{k} {v:,}' for k, v in s['dropped'].items()) or '0'} | "
            f"{s['verdicts']:,}/{s['expected']:,} | {'yes' if s['overloaded'] else 'no'} |"
            for s in steps
        ]
    return "\n".join([head, rule, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=("mqtt", "replay"), default="mqtt")
    ap.add_argument("--quick", action="store_true", help="2 s steps instead of 4 s")
    ap.add_argument("--batch", type=int, default=1, help="samples per MQTT message")
    ap.add_argument("--qos", type=int, default=1, choices=(0, 1), help="QoS of the published samples")
    ap.add_argument("--queue", type=int, default=2_000, help="the MQTT source's hand-off queue (messages)")
    ap.add_argument("--overload", default="drop_oldest", help="the hand-off queue's overload policy")
    ap.add_argument("--budget-ms", type=float, default=250.0, help="a step whose p99 is over this is overloaded")
    ap.add_argument("--after-overload", type=int, default=1, help="steps to go on with once overloaded")
    ap.add_argument("--json", help="--ladder: also write the figures as JSON to this file")
    ap.add_argument("--ladder", action="store_true", help="drive the latency-budget ladder (int8 flow, priorities)")
    ap.add_argument("--model-ms", type=float, default=2.0, help="--ladder: emulated model CPU per window")
    ap.add_argument("--invoke-ms", type=float, default=1.0, help="--ladder: emulated model CPU per invoke")
    ap.add_argument("--serve-flow", metavar="BROKER", help=argparse.SUPPRESS)
    ap.add_argument("--serve-ladder", metavar="BROKER", help=argparse.SUPPRESS)
    ap.add_argument("--metrics-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_flow:
        serve_flow(args.serve_flow, args.metrics_port, args.queue, args.overload)
        return
    if args.serve_ladder:
        serve_ladder(args)
        return
    if args.ladder:
        budget = args.budget_ms if args.budget_ms != 250.0 else 100.0
        args.budget_ms = budget
        rows, totals = run_ladder(args)
        print(
            f"\n{os.cpu_count()} cores, Python {sys.version.split()[0]}; Mosquitto on loopback, one flow worker, "
            f"latency_budget_ms={budget:g}, emulated model {args.model_ms:g} ms/window + {args.invoke_ms:g} ms/invoke, "
            f"hand-off queue {args.queue:,} ({args.overload}); rungs: F full, L lean, P priority, R raw\n"
        )
        print(ladder_table(rows, totals, budget))
        if args.json:
            Path(args.json).write_text(json.dumps({"phases": rows, "totals": totals}, default=str) + "\n")
        return
    args.step_s = 2.0 if args.quick else 4.0
    steps = run_mqtt(args) if args.source == "mqtt" else run_replay(args)
    where = (
        f"Mosquitto on loopback, one flow worker, QoS {args.qos} in, {args.batch} sample(s) per message, "
        f"hand-off queue {args.queue:,} ({args.overload}), {args.step_s:.0f} s steps"
        if args.source == "mqtt"
        else "replay of the shipped recording, one worker, one run per speed"
    )
    print(f"\n{os.cpu_count()} cores, Python {sys.version.split()[0]}; {where}; overloaded: drops, missing verdicts, "
          f"processed < 90 % of offered, or p99 > {args.budget_ms:g} ms\n")  # fmt: skip
    print(table(steps, args.source))


if __name__ == "__main__":
    main()
