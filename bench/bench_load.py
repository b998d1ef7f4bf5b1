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
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mqtt import DT, HOP, SIZE, T0, Mosquitto, Receiver, Sender  # noqa: E402

SENSORS = 10
MQTT_RATES = (1_000, 2_000, 4_000, 8_000, 12_000, 16_000, 24_000, 32_000, 48_000, 64_000)
REPLAY_SPEEDS = (10, 20, 50, 100, 200, 400, 800, 1_600)


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
    ap.add_argument("--serve-flow", metavar="BROKER", help=argparse.SUPPRESS)
    ap.add_argument("--metrics-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_flow:
        serve_flow(args.serve_flow, args.metrics_port, args.queue, args.overload)
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
