"""Live MQTT benchmark on loopback: per-event latency and highest sustained input rate, beside the bare paho floor.

    python bench/bench_mqtt.py                 # full run (~1 min), prints a Markdown table
    python bench/bench_mqtt.py --quick         # shorter phases

It starts its own Mosquitto on a free 127.0.0.1 port and runs the flow
(MQTT source -> 32-point windows -> rms/std -> z-score -> every window's
verdict and 1 s summaries published with ``mqtt_sink``, QoS 1) in a separate
process with one worker. This process publishes synthetic samples from 10
sensors and subscribes to the verdicts. Latency of an event = time the
verdict arrives here - time the sample that completed its window was
published here (same clock). The floor is a bare paho QoS 1 publish ->
subscribe round trip through the same broker at the same rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix  # noqa: E402

T0 = 1_772_438_400.0
DT = 1.0 / 128  # exactly representable: window ends land exactly on sample times
SIZE, HOP = 32, 8


def flow_factory(broker: str) -> Any:
    import edgeflow.operators as eo
    from edgeflow import Flow

    flow = Flow("bench_mqtt")
    samples = eo.mqtt_source(
        "samples", flow, "bench/in/{sensor}", broker=broker, eos_topic="bench/eos", queue_size=50_000
    )
    windows = eo.window("win", samples, rate_hz=128, size=SIZE, hop=HOP, max_gap_s=1.0)
    scores = eo.zscore_detector("detect", eo.features("feat", windows, ["rms", "std"]), warmup=5)
    eo.output("verdicts", scores, eo.mqtt_sink("bench/out/{sensor}/{kind}", broker=broker, step_id="verdicts"))
    eo.summarize(
        "summary", scores, every_s=1.0, sink=eo.mqtt_sink("bench/summary/{sensor}", broker=broker, step_id="summaries")
    )
    return flow


def serve_flow(broker: str) -> None:
    from edgeflow.runtime import run

    report = run(flow_factory(broker))
    s = report.stats
    print(
        json.dumps(
            {"samples_in": s.samples_in, "dead_letters": s.dead_letters, "counts": s.counts, "seconds": report.seconds}
        )
    )


class Mosquitto:
    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).is_file():
            sys.exit("mosquitto is not installed: sudo apt-get install -y mosquitto")
        self.dir = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
            "max_inflight_messages 1000\n"
        )
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


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
        t = time.perf_counter_ns()
        self.client.publish(topic, payload, qos=self.qos)
        self.n += 1
        if self.n % 16 == 0:
            self.client.loop(0)
        return t

    def pause_until(self, due: float) -> None:
        while True:
            ahead = due - time.perf_counter()
            if ahead <= 0:
                return
            self.client.loop(min(ahead, 0.0005))

    def flush(self, seconds: float = 2.0) -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            self.client.loop(0.01)


def pct(ns: list[int]) -> tuple[float, float, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def floor_roundtrip(address: str, rate: float, seconds: float) -> dict[str, Any]:
    rx = Receiver(address, "bench/floor")
    tx = Sender(address)
    n = int(rate * seconds)
    sent = []
    t0 = time.perf_counter()
    for i in range(n):
        tx.pause_until(t0 + i / rate)
        sent.append(tx.send("bench/floor", b"%d" % i))
    tx.flush(1.0)
    rx.close()
    lat = [t_rx - sent[int(p)] for t_rx, _t, p in rx.got]
    return {"n": n, "got": len(rx.got), "lat": pct(lat)}


def run_phase(tx: Sender, rx: Receiver, prefix: str, sensors: int, rate: float, seconds: float, batch: int) -> dict:
    """Publish *rate* samples/s from *sensors* sensors for *seconds*; return latency and completeness."""
    per_sensor = int(rate * seconds / sensors)
    names = [f"{prefix}-{k}" for k in range(sensors)]
    pub: dict[str, list[int]] = {s: [0] * per_sensor for s in names}
    start_rx = len(rx.got)
    t0 = time.perf_counter()
    msg_rate = rate / batch
    m = 0
    for i0 in range(0, per_sensor, batch):
        idx = range(i0, min(i0 + batch, per_sensor))
        for s in names:
            tx.pause_until(t0 + m / msg_rate)
            body = [{"ts": T0 + i * DT, "value": float(np.sin(i * 0.3))} for i in idx]
            payload = json.dumps(body[0] if batch == 1 else body).encode()
            t = tx.send(f"bench/in/{s}", payload)
            for i in idx:
                pub[s][i] = t
            m += 1
    achieved = per_sensor * sensors / (time.perf_counter() - t0)
    expected = sensors * ((per_sensor - SIZE) // HOP + 1)
    deadline = time.perf_counter() + 3.0
    while time.perf_counter() < deadline:
        tx.client.loop(0.01)
        done = sum(1 for _t, topic, _p in rx.got[start_rx:] if topic.split("/")[2].startswith(prefix + "-"))
        if done >= expected:
            break
    lat = []
    got = 0
    for t_rx, topic, payload in rx.got[start_rx:]:
        sensor = topic.split("/")[2]
        if sensor not in pub:
            continue
        rec = json.loads(payload)
        i = round((datetime.fromisoformat(rec["end"]).timestamp() - T0) / DT)
        lat.append(t_rx - pub[sensor][i])
        got += 1
    return {
        "rate": rate,
        "achieved": achieved,
        "expected": expected,
        "got": got,
        "lat": pct(lat) if lat else (float("nan"),) * 3,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve-flow", metavar="BROKER")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.serve_flow:
        serve_flow(args.serve_flow)
        return
    seconds = 4.0 if args.quick else 10.0
    broker = Mosquitto()
    flow = None
    try:
        floor = floor_roundtrip(broker.address, 1000.0, seconds)
        rx = Receiver(broker.address, "bench/out/#")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        flow = subprocess.Popen(
            [sys.executable, __file__, "--serve-flow", broker.address],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        tx = Sender(broker.address)
        # warm up: until the flow answers
        deadline = time.perf_counter() + 30
        i = 0
        while not rx.got:
            assert time.perf_counter() < deadline, "the flow did not answer"
            tx.send("bench/in/warm", json.dumps({"ts": T0 + i * DT, "value": 0.0}).encode())
            i += 1
            tx.pause_until(time.perf_counter() + 0.002)
        tx.flush(0.5)
        latency = run_phase(tx, rx, "lat", 10, 1000.0, seconds, 1)
        steps = []
        step_s = 2.0 if args.quick else 3.0
        for batch, rates in ((1, (2_000, 5_000, 10_000, 15_000)), (20, (20_000, 40_000, 80_000, 160_000))):
            for rate in rates:
                r = run_phase(tx, rx, f"b{batch}r{rate}", 10, float(rate), step_s, batch)
                r["batch"] = batch
                r["ok"] = r["got"] == r["expected"] and r["achieved"] >= 0.95 * rate and r["lat"][1] < 250.0
                steps.append(r)
                if not r["ok"]:
                    break
        tx.send("bench/eos", b"")
        tx.flush(1.0)
        out, _ = flow.communicate(timeout=60)
        stats = json.loads(out.strip().splitlines()[-1])
        rx.close()
    finally:
        if flow is not None and flow.poll() is None:
            flow.kill()
        broker.stop()
    print(f"\nmosquitto {broker.address}, {os.cpu_count()} cores, one flow worker, QoS 1 in and out\n")
    print("| path | rate (samples/s) | events | p50 ms | p99 ms | max ms | lost |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    p50, p99, mx = floor["lat"]
    print(
        f"| floor: bare paho publish -> subscribe | 1,000 | {floor['got']:,} | {p50:.2f} | {p99:.2f} | {mx:.2f} | "
        f"{floor['n'] - floor['got']} |"
    )
    p50, p99, mx = latency["lat"]
    print(
        f"| edgeflow: publish sample -> window verdict received (10 sensors) | 1,000 | {latency['got']:,} | "
        f"{p50:.2f} | {p99:.2f} | {mx:.2f} | {latency['expected'] - latency['got']} |"
    )
    print("\n| samples per message | target samples/s | achieved | verdicts got/expected | p99 ms | sustained |")
    print("|---:|---:|---:|---:|---:|:---:|")
    for r in steps:
        print(
            f"| {r['batch']} | {r['rate']:,.0f} | {r['achieved']:,.0f} | {r['got']:,}/{r['expected']:,} | "
            f"{r['lat'][1]:.1f} | {'yes' if r['ok'] else 'no'} |"
        )
    best = max((r["rate"] for r in steps if r["ok"]), default=0)
    print(
        f"\nhighest sustained rate without loss: {best:,.0f} samples/s; flow counters: dropped "
        f"{stats['counts'].get('mqtt.dropped', 0)}, dead letters {stats['dead_letters']}, "
        f"samples in {stats['samples_in']:,}"
    )


if __name__ == "__main__":
    main()
