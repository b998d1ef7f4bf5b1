"""MQTT in, verdicts out, on loopback: edgeflow beside a plain paho + numpy loop doing the same work.

    python bench/bench_mqtt.py                  # 3 interleaved rounds (~3-5 min), prints a Markdown table
    python bench/bench_mqtt.py --rounds 1 --quick

It starts its own Mosquitto on a free 127.0.0.1 port. Each round runs both
consumers, one after the other (the order alternates between rounds), each in
its own process with one worker:

* **edgeflow**: ``mqtt_source`` (JSON, QoS 1, sequence stamps checked) -> 32-point
  windows at 128 Hz, hop 8 -> rms/std -> z-score -> every verdict published with
  ``mqtt_sink`` (QoS 1, in-memory outbox);
* **edgeflow -p 2** (``--consumers flow,flow2``): the same flow with ``edgeflow run -p 2``: two processes, each
  reading a member of one shared subscription, the sensors' messages put back in order by the resequencing step;
* **baseline**: a plain paho client (``loop_start``; ``on_message`` appends to a
  deque) and a loop that decodes each payload with ``json.loads``, resamples each
  sensor onto the same 128 Hz grid (``np.interp``), cuts the same windows with a
  sliding view, computes rms/std for all of a batch's windows at once, scores them
  against the first 5 windows and publishes each verdict as JSON (QoS 1).

Equal work: the same messages in, the same windows, the same two features, one
z-score verdict per window out through the same broker; edgeflow also checks
stamps (duplicates, losses), dead letters, late samples and byte accounting.

Load: publisher processes using edgeflow's ``Publisher`` (what ``edgeflow publish``
sends with), one JSON sample per message, stamped, 10 sensors, QoS 1.

* **latency**: 5,000 messages/s for a few seconds; latency of a verdict = when it
  arrives here - when the sample completing its window was published (one clock:
  ``perf_counter_ns`` is CLOCK_MONOTONIC for all processes).
* **throughput**: a ladder of offered rates; a rate is sustained when the
  publishers reached 95 % of it, every expected verdict arrived within 3 s after
  the last message, and the consumer dropped nothing and received every message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix  # noqa: E402

T0 = 1_772_438_400.0
DT = 1.0 / 128  # exactly representable: window ends land exactly on sample times
SIZE, HOP, WARMUP = 32, 8, 5
SENSORS = 10
EOS = "bench/eos"
GRACE_S = 0.5
"""A rate is sustained when every verdict arrived within this long after the publishers finished."""


# consumers -----------------------------------------------------------------------------------------------------
def flow_factory(broker: str, client_id: str) -> Any:
    """The edgeflow consumer, resuming the persistent session *client_id* (it holds the backlog)."""
    import edgeflow.operators as eo
    from edgeflow import Flow

    flow = Flow("bench_mqtt")
    samples = eo.mqtt_source(
        "samples",
        flow,
        "bench/in/{sensor}",
        broker=broker,
        eos_topic=EOS,
        queue_size=100_000,
        clean_session=False,
        client_id=client_id,
        session_expiry_s=300,
    )
    windows = eo.window("win", samples, rate_hz=128, size=SIZE, hop=HOP, max_gap_s=1.0)
    scores = eo.zscore_detector("detect", eo.features("feat", windows, ["rms", "std"]), warmup=WARMUP)
    eo.output("verdicts", scores, eo.mqtt_sink("bench/out/{sensor}/{kind}", broker=broker, step_id="verdicts"))
    return flow


def serve_flow(broker: str, client_id: str) -> None:
    """Run the edgeflow consumer until the end-of-stream message; print its counters as JSON."""
    from edgeflow.runtime import run

    if os.environ.get("BENCH_SWITCH_S"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_S"]))
    report = run(flow_factory(broker, client_id))
    s = report.stats
    c = s.counts
    print(
        json.dumps(
            {
                "messages": c.get("mqtt.messages", 0) - 1,  # the end-of-stream marker
                "samples": s.samples_in,
                "dropped": c.get("mqtt.dropped", 0),
                "lost": c.get("mqtt.lost_upstream", 0),
                "dead_letters": s.dead_letters,
            }
        )
    )


def serve_flow_processes(broker: str, client_id: str, processes: int = 2) -> None:
    """Run the same flow with ``edgeflow run -p N`` (a shared subscription, one member per process); print counters."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        target = f"bench/bench_mqtt.py:flow_factory({broker!r}, {client_id!r})"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEFLOW_CLUSTER_PORT": str(_free_port_pair())}
        cmd = [sys.executable, "-m", "edgeflow", "run", target, "-p", str(processes), "-q"]
        subprocess.run([*cmd, "--report-json", str(report)], cwd=ROOT, env=env, check=False)
        doc = json.loads(report.read_text())
    c = doc["counts"]
    print(
        json.dumps(
            {
                "messages": c.get("mqtt.messages", 0) - processes,  # every member sees the end-of-stream marker
                "samples": doc["samples_in"],
                "dropped": c.get("mqtt.dropped", 0),
                "lost": c.get("mqtt.lost_upstream", 0) + c.get("mqtt.late_messages", 0),
                "dead_letters": doc["dead_letters"],
            }
        )
    )


class _Baseline:
    """Per sensor: resampling state, a window buffer and the z-score baseline."""

    __slots__ = ("buf", "feats", "last_t", "last_v", "mu", "next_t", "sd", "seen")

    def __init__(self, t: float, v: float) -> None:
        self.last_t, self.last_v, self.next_t = t, v, t + DT
        self.buf = np.array([v])
        self.seen = 1  # grid points so far
        self.feats: list[np.ndarray] = []
        self.mu = self.sd = None


def serve_baseline(broker: str, client_id: str) -> None:
    """The baseline consumer: plain paho + json + numpy, one loop on the main thread."""
    from numpy.lib.stride_tricks import sliding_window_view
    from paho.mqtt.client import CallbackAPIVersion, Client
    from paho.mqtt.enums import MQTTProtocolVersion

    cfg = BrokerConfig.model_validate(broker)
    inbox: deque[tuple[str, bytes]] = deque()
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe([("bench/in/+", 1), (EOS, 1)])
    client.on_message = lambda _c, _u, m: inbox.append((m.topic, m.payload))
    client.connect(cfg.host, cfg.port, clean_start=False, properties=_session_properties())
    client.loop_start()
    state: dict[str, _Baseline] = {}
    messages = samples = 0
    done = False
    while not done:
        if not inbox:
            time.sleep(0.0002)
            continue
        batch = [inbox.popleft() for _ in range(len(inbox))]
        grouped: dict[str, tuple[list[float], list[float]]] = {}
        for topic, payload in batch:
            if topic == EOS:
                done = True
                continue
            doc = json.loads(payload)
            ts, vs = grouped.setdefault(topic.rpartition("/")[2], ([], []))
            ts.append(doc["ts"])
            vs.append(doc["value"])
            messages += 1
        for sensor, (ts, vs) in grouped.items():
            samples += len(ts)
            st = state.get(sensor)
            if st is None:
                st = state[sensor] = _Baseline(ts[0], vs[0])
                ts, vs = ts[1:], vs[1:]
                if not ts:
                    continue
            t = np.asarray([st.last_t, *ts])
            v = np.asarray([st.last_v, *vs])
            n = int((t[-1] - st.next_t) / DT + 1e-9) + 1
            if n <= 0:
                continue
            grid = st.next_t + DT * np.arange(n)
            st.buf = np.concatenate([st.buf, np.interp(grid, t, v)])
            first = st.seen
            st.seen += n
            st.last_t, st.last_v, st.next_t = float(t[-1]), float(v[-1]), float(grid[-1] + DT)
            # windows end at grid points SIZE, SIZE + HOP, ... (1-based); the buffer starts at point first - len
            ends = [e for e in range(max(SIZE, first + 1), st.seen + 1) if (e - SIZE) % HOP == 0]
            if not ends:
                st.buf = st.buf[-SIZE:]
                continue
            offset = st.seen - len(st.buf)  # grid points before the buffer
            views = sliding_window_view(st.buf, SIZE)[[e - SIZE - offset for e in ends]]
            rms = np.sqrt(np.mean(views * views, axis=1))
            std = views.std(axis=1)
            feats = np.stack([rms, std], axis=1)
            t_end = st.next_t - DT * (st.seen - np.asarray(ends) + 1)
            for k in range(len(ends)):
                f = feats[k]
                if st.mu is None:
                    st.feats.append(f)
                    score = 0.0
                    if len(st.feats) == WARMUP:
                        arr = np.stack(st.feats)
                        st.mu, st.sd = arr.mean(axis=0), np.maximum(arr.std(axis=0), 1e-9)
                else:
                    score = float(np.max(np.abs((f - st.mu) / st.sd)))
                end = float(t_end[k])
                verdict = {
                    "sensor": sensor,
                    "start": datetime.fromtimestamp(end - (SIZE - 1) * DT, timezone.utc).isoformat(),
                    "end": datetime.fromtimestamp(end, timezone.utc).isoformat(),
                    "features": [round(float(x), 6) for x in f],
                    "score": round(score, 4),
                    "anomaly": score > 3.0,
                    "model": "zscore",
                }
                client.publish(f"bench/out/{sensor}/verdict", json.dumps(verdict, separators=(",", ":")), qos=1)
            st.buf = st.buf[-SIZE:]
    time.sleep(0.5)  # let the last verdicts go out
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"messages": messages, "samples": samples, "dropped": 0, "lost": 0, "dead_letters": 0}))


def _session_properties() -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    return props


def _free_port_pair() -> int:
    """A free loopback port whose next port is free too (the cluster of ``-p 2`` listens on both)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    msg = "no two free adjacent ports on 127.0.0.1"
    raise RuntimeError(msg)


def drop_session(address: str, client_id: str) -> None:
    """End the persistent session *client_id* (clean start, no expiry): a member that is gone leaves its group.

    A shared subscription's offline member keeps getting its share until its session ends; the next round's
    members must be the only ones.
    """
    from paho.mqtt.client import CallbackAPIVersion, Client
    from paho.mqtt.enums import MQTTProtocolVersion

    cfg = BrokerConfig.model_validate(address)
    done = threading.Event()
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda *_: done.set()
    client.connect(cfg.host, cfg.port, clean_start=True)
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()


def make_session(address: str, client_id: str, topic: str = "bench/in/+") -> None:
    """Create the consumer's persistent session (subscribed, then offline) so that the broker keeps a backlog."""
    from paho.mqtt.client import CallbackAPIVersion, Client
    from paho.mqtt.enums import MQTTProtocolVersion

    cfg = BrokerConfig.model_validate(address)
    done = threading.Event()
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe([(topic, 1), (EOS, 1)])
    client.on_subscribe = lambda *_: done.set()
    client.connect(cfg.host, cfg.port, clean_start=True, properties=_session_properties())
    client.loop_start()
    assert done.wait(5)
    client.disconnect()
    client.loop_stop()


# load --------------------------------------------------------------------------------------------------------
def payloads(prefix: str, sensors: list[int], per_sensor: int) -> list[tuple[str, bytes]]:
    """One JSON sample per message, sensors interleaved sample by sample."""
    out = []
    for i in range(per_sensor):
        body = b'{"ts":%r,"value":%r}' % (T0 + i * DT, round(float(np.sin(i * 0.3)), 6))
        out += [(f"bench/in/{prefix}-{j}", body) for j in sensors]
    return out


def serve_publisher(broker: str, prefix: str, k: int, of: int, rate: float, per_sensor: int, start: float) -> None:
    """Publish sensors k, k + of, ... at *rate* messages/s from wall time *start*; print the achieved rate."""
    from edgeflow.mqtt.player import Publisher

    pub = Publisher(BrokerConfig.model_validate(broker), 1)
    msgs = payloads(prefix, list(range(k, SENSORS, of)), per_sensor)
    stamped = [(topic, body, pub.stamp(topic)) for topic, body in msgs]
    props = [(topic, body, {"seq": str(s.seq), "pub": s.publisher}) for topic, body, s in stamped]
    while time.time() < start:
        pub.idle(min(0.01, start - time.time()))
    t0 = time.perf_counter()
    for m, (topic, body, p) in enumerate(props):
        ahead = t0 + m / rate - time.perf_counter()
        if ahead > 0.0005:
            pub.idle(ahead)
        pub.publish(topic, body, p)
    seconds = time.perf_counter() - t0
    acked = pub.wait_acked(30)
    pub.close()
    print(json.dumps({"sent": len(props), "rate": len(props) / seconds, "acked": acked}))


# harness -----------------------------------------------------------------------------------------------------
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
            "max_inflight_messages 0\n"
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
    """Subscribes to the verdicts in its own paho thread and timestamps each on arrival."""

    def __init__(self, address: str) -> None:
        self.got: list[tuple[int, str, bytes]] = []
        ready = threading.Event()
        cfg = BrokerConfig.model_validate(address)
        self.client = make_client(cfg, f"bench-rx-{unique_suffix()}")
        self.client.on_connect = lambda c, *_: c.subscribe("bench/out/#", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = lambda _c, _u, m: self.got.append((time.perf_counter_ns(), m.topic, m.payload))
        connect_async(self.client, cfg)
        assert ready.wait(5)

    def of(self, prefix: str) -> list[tuple[int, str, bytes]]:
        return [g for g in list(self.got) if g[1].split("/")[2].startswith(prefix + "-")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _expected(per_sensor: int) -> int:
    return SENSORS * ((per_sensor - SIZE) // HOP + 1)


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, *args]
    profile = os.environ.get("BENCH_MQTT_PROFILE")  # e.g. /tmp/flow.raw: py-spy the edgeflow consumer
    if profile and args[0] == "--serve-flow":
        cmd = ["py-spy", "record", "-f", "raw", "-o", profile, "--", *cmd]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def latency_phase(address: str, rx: Receiver, prefix: str, rate: float, seconds: float) -> dict[str, Any]:
    """Publish *rate* messages/s from this process; latency of every verdict."""
    from edgeflow.mqtt.player import Publisher

    pub = Publisher(BrokerConfig.model_validate(address), 1)
    per_sensor = int(rate * seconds / SENSORS)
    msgs = payloads(prefix, list(range(SENSORS)), per_sensor)
    stamped = [(topic, body, pub.stamp(topic)) for topic, body in msgs]
    props = [(topic, body, {"seq": str(s.seq), "pub": s.publisher}) for topic, body, s in stamped]
    sent = np.zeros(len(props), dtype=np.int64)
    t0 = time.perf_counter()
    for m, (topic, body, p) in enumerate(props):
        ahead = t0 + m / rate - time.perf_counter()
        if ahead > 0.0002:
            pub.idle(ahead)
        sent[m] = time.perf_counter_ns()
        pub.publish(topic, body, p)
        pub.client.loop_write()  # a paced publisher writes each message at once, not every 32
    pub.wait_acked(10)
    pub.close()
    expected = _expected(per_sensor)
    deadline = time.perf_counter() + 5
    while len(rx.of(prefix)) < expected and time.perf_counter() < deadline:
        time.sleep(0.01)
    lat = []
    for t_rx, topic, payload in rx.of(prefix):
        j = int(topic.split("/")[2].rpartition("-")[2])
        i = round((datetime.fromisoformat(json.loads(payload)["end"]).timestamp() - T0) / DT)
        lat.append(t_rx - sent[i * SENSORS + j])
    a = np.asarray(lat, dtype=np.float64) / 1e6
    return {
        "got": len(lat),
        "expected": expected,
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
    }


def rate_phase(address: str, rx: Receiver, prefix: str, rate: float, seconds: float, publishers: int) -> dict[str, Any]:
    """Offer *rate* messages/s from *publishers* processes; whether every verdict came back in time."""
    per_sensor = int(rate * seconds / SENSORS)
    start = time.time() + 1.0
    procs = [
        _spawn(
            "--publish", address, prefix, str(k), str(publishers), str(rate / publishers), str(per_sensor), repr(start)
        )
        for k in range(publishers)
    ]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    achieved = sum(o["rate"] for o in outs)
    expected = _expected(per_sensor)
    deadline = time.perf_counter() + GRACE_S
    while len(rx.of(prefix)) < expected and time.perf_counter() < deadline:
        time.sleep(0.01)
    got = len(rx.of(prefix))
    return {
        "rate": rate,
        "achieved": achieved,
        "got": got,
        "expected": expected,
        "sent": sum(o["sent"] for o in outs),
        "ok": got == expected and achieved >= 0.95 * rate and all(o["acked"] for o in outs),
        "short": achieved < 0.95 * rate,
    }


def publish_backlog(address: str, prefix: str, per_sensor: int, publishers: int) -> int:
    """Publish a backlog as fast as the publishers go (the consumer is offline); return the messages sent."""
    procs = [
        _spawn("--publish", address, prefix, str(k), str(publishers), "1e9", str(per_sensor), repr(time.time()))
        for k in range(publishers)
    ]
    return sum(json.loads(p.communicate()[0])["sent"] for p in procs)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process *pid* and the processes it started used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(cpu_s(int(c)) for c in children)


def drain_rate(rx: Receiver, prefix: str, expected: int, messages: int, pid: int) -> tuple[float, float]:
    """Messages/s the consumer worked through its backlog (first to last verdict of it), and its CPU µs each."""
    deadline = time.perf_counter() + 120
    while not rx.of(prefix) and time.perf_counter() < deadline:
        time.sleep(0.001)
    cpu0 = cpu_s(pid)
    while len(rx.of(prefix)) < expected and time.perf_counter() < deadline:
        time.sleep(0.001)
    cpu1 = cpu_s(pid)
    got = rx.of(prefix)
    if len(got) < expected:
        return 0.0, 0.0
    first, last = got[0][0], got[-1][0]
    done = messages - SENSORS * SIZE  # after the first windows closed
    return done / ((last - first) / 1e9), (cpu1 - cpu0) / done * 1e6


def run_consumer(
    which: str, address: str, rates: list[float], seconds: float, publishers: int, backlog: int
) -> dict[str, Any]:
    rx = Receiver(address)
    client_id = f"bench-{which}-{unique_suffix()}"
    sessions = [client_id]
    if which == "flow2":  # one persistent session per member of the shared subscription
        sessions = [f"{client_id}-{i}" for i in range(2)]
        for member in sessions:
            make_session(address, member, "$share/edgeflow-bench_mqtt-samples/bench/in/+")
    else:
        make_session(address, client_id)
    per_sensor = backlog // SENSORS
    queued = publish_backlog(address, f"{which}drain", per_sensor, publishers)
    proc = _spawn(f"--serve-{which}", address, client_id)
    try:
        drained, cpu_us = drain_rate(rx, f"{which}drain", _expected(per_sensor), queued, proc.pid)
        latency_phase_warmup(address, rx, proc)
        lat = latency_phase(address, rx, f"{which}lat", 5000.0, seconds)
        sent = queued + SENSORS * int(5000.0 * seconds / SENSORS)
        best = 0.0
        steps = []
        for rate in rates:
            step = rate_phase(address, rx, f"{which}r{int(rate)}", rate, seconds, publishers)
            steps.append(step)
            sent += step["sent"]
            if not step["ok"]:
                break
            best = rate
        from edgeflow.mqtt.player import Publisher

        pub = Publisher(BrokerConfig.model_validate(address), 1)
        pub.publish(EOS, b"")
        pub.wait_acked(5)
        pub.close()
        out, _ = proc.communicate(timeout=120)
        stats = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    finally:
        if proc.poll() is None:
            proc.kill()
        rx.close()
        for session in sessions:
            drop_session(address, session)
    clean = stats["messages"] >= sent and stats["dropped"] == 0 and stats["lost"] == 0
    return {
        "lat": lat,
        "steps": steps,
        "best": best if clean else 0.0,
        "drain": drained if clean else 0.0,
        "cpu_us": cpu_us,
        "stats": stats,
        "sent": sent,
        "clean": clean,
    }


def latency_phase_warmup(address: str, rx: Receiver, proc: subprocess.Popen[str]) -> int:
    """Send samples of a warm-up sensor until the consumer answers; return how many were sent."""
    from edgeflow.mqtt.player import Publisher

    pub = Publisher(BrokerConfig.model_validate(address), 1)
    deadline = time.perf_counter() + 60
    i = 0
    while not rx.of("warm"):
        if time.perf_counter() > deadline or proc.poll() is not None:
            msg = "the consumer did not answer within 60 s"
            raise RuntimeError(msg)
        pub.publish("bench/in/warm-0", b'{"ts":%r,"value":0.0}' % (T0 + i * DT))
        i += 1
        pub.idle(0.002)
    pub.wait_acked(5)
    pub.close()
    time.sleep(0.3)
    return i


def _span(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve-flow", nargs=2, metavar=("BROKER", "CLIENT_ID"))
    ap.add_argument("--serve-baseline", nargs=2, metavar=("BROKER", "CLIENT_ID"))
    ap.add_argument("--serve-flow2", nargs=2, metavar=("BROKER", "CLIENT_ID"))
    ap.add_argument(
        "--consumers",
        default="flow,baseline",
        help="which consumers, interleaved: flow (one process), flow2 (edgeflow run -p 2), baseline",
    )
    ap.add_argument("--backlog", type=int, default=100_000, help="messages queued for the drain phase")
    ap.add_argument("--publish", nargs=7, metavar="ARG")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--publishers", type=int, default=2)
    args = ap.parse_args()
    if args.serve_flow:
        serve_flow(*args.serve_flow)
        return
    if args.serve_baseline:
        serve_baseline(*args.serve_baseline)
        return
    if args.serve_flow2:
        serve_flow_processes(*args.serve_flow2)
        return
    if args.publish:
        a = args.publish
        serve_publisher(a[0], a[1], int(a[2]), int(a[3]), float(a[4]), int(a[5]), float(a[6]))
        return
    seconds = 2.0 if args.quick else 4.0
    rates = [10_000.0, 15_000.0, 20_000.0, 25_000.0, 30_000.0]
    load = os.getloadavg()
    broker = Mosquitto()
    consumers = [c for c in args.consumers.split(",") if c]
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in consumers}
    try:
        for r in range(args.rounds):
            order = consumers[r % len(consumers) :] + consumers[: r % len(consumers)]
            for which in order:
                res = run_consumer(which, broker.address, rates, seconds, args.publishers, args.backlog)
                results[which].append(res)
                steps = ", ".join(
                    f"{s['rate'] / 1000:g}k {'ok' if s['ok'] else 'NO'}{' - publishers short' if s['short'] else ''} "
                    f"(sent at {s['achieved']:,.0f}/s, "
                    f"verdicts {s['got']}/{s['expected']})"
                    for s in res["steps"]
                )
                print(
                    f"round {r + 1} {which}: drain {res['drain']:,.0f} msg/s, {res['cpu_us']:.1f} CPU us/msg; "
                    f"p50 {res['lat']['p50']:.2f} ms p99 {res['lat']['p99']:.2f} ms "
                    f"({res['lat']['got']}/{res['lat']['expected']} verdicts); {steps}; "
                    f"sent {res['sent']:,}, counters {res['stats']}",
                    file=sys.stderr,
                )
    finally:
        broker.stop()
    after = os.getloadavg()
    print(
        f"\nmosquitto 2.0 on {broker.address}, {os.cpu_count()} cores, one consumer worker, QoS 1 in and out, "
        f"{args.rounds} interleaved rounds, median (min-max); load average {load[0]:.2f} before, {after[0]:.2f} after\n"
    )
    print(
        "| consumer (equal work: JSON decode, 128 Hz windows 32/8, rms+std, z-score, QoS 1 verdict per window) "
        "| sustained msg/s, nothing lost (1 sample/msg) | backlog drained, msg/s | CPU µs per message (backlog) "
        "| p50 ms @ 5k msg/s | p99 ms @ 5k msg/s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    names = {
        "flow": "edgeflow (`mqtt_source` ... `mqtt_sink`)",
        "flow2": "edgeflow, `edgeflow run -p 2` (shared subscription, resequenced)",
        "baseline": "baseline: plain paho + json + numpy loop",
    }
    for which in consumers:
        rs = results[which]
        print(
            f"| {names[which]} | {_span([x['best'] for x in rs], ',.0f')} | "
            f"{_span([x['drain'] for x in rs], ',.0f')} | {_span([x['cpu_us'] for x in rs], '.1f')} | "
            f"{_span([x['lat']['p50'] for x in rs], '.2f')} | {_span([x['lat']['p99'] for x in rs], '.2f')} |"
        )
    for which in consumers:
        stops = [x["steps"][-1] for x in results[which] if x["steps"] and not x["steps"][-1]["ok"]]
        short = sum(1 for st in stops if st["short"])
        print(
            f"\n{names[which].split(' (')[0]}: the ladder stopped {len(stops)} times: {short} because the publishers "
            f"could not offer the rate (the consumer not at fault), {len(stops) - short} because verdicts fell behind"
        )
    print(
        f"\nladder {', '.join(f'{x:,.0f}' for x in rates)} msg/s, {seconds:g} s each, {args.publishers} publisher "
        f"processes (edgeflow's Publisher), {SENSORS} sensors; a rate counts when the publishers reached 95 % of it, "
        f"every verdict arrived within {GRACE_S:g} s after the last message and the consumer received every message, "
        f"dropping none; backlog: {args.backlog:,} messages queued at the broker for the offline consumer's persistent "
        "session, then worked through (first to last verdict)"
    )


if __name__ == "__main__":
    main()
