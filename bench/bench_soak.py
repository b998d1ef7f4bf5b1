"""Soak: paced MQTT input for minutes while the broker and the flow are killed at random moments.

    python bench/bench_soak.py                        # 3 minutes, prints a Markdown table
    python bench/bench_soak.py --minutes 10 --seed 7  # longer; the seed fixes the moments of the kills

It starts its own Mosquitto (persistence on, saving every second) on a free 127.0.0.1 port and runs
this file's flow with ``edgeflow run --recovery-dir`` in a subprocess: a persistent QoS 1 MQTT source ->
500 Hz windows -> rms/std -> z-score -> 1 s summaries to a JSONL file and, through a file outbox, back to the
broker; a sink of the raw samples the source handed on; a dead-letter file. This process publishes stamped
samples from a few sensors at a steady rate (and, every so often, a payload that cannot be read), keeps a
"witness" subscriber on the broker, and at random moments kills the flow (SIGKILL, restarted after a
random pause) or the broker (SIGKILL, restarted on the same port from its database).

At the end it counts: samples sent, processed (handed on at least once), dead-lettered (the unreadable
payloads), lost (sent but never processed: must be 0), handed on again after a restart (duplicates), the
summaries against an uninterrupted replay of the very samples sent, summaries delivered upstream, and the
flow's resident memory at the start and at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import edgeflow.operators as eo  # noqa: E402
from edgeflow import Flow  # noqa: E402

T0 = 1_772_438_400.0
TOPIC = "soak/{line}/{sensor}/accel"
SAMPLES_AT = "soak/l1/{sensor}/accel"
EOS = "soak/eos"
UPLINK = "soak/up/{sensor}/{kind}"


def _raw(block: Any) -> dict[str, Any]:
    return {"sensor": block.sensor, "ts": block.ts.tolist()}


def make_flow(broker: str, folder: str, rate_hz: float, recording: str | None = None) -> Flow:
    """The soak's flow: MQTT (or a replay of *recording*) -> windows -> z-score -> 1 s summaries, raw samples."""
    out = Path(folder)
    name = "soak_replay" if recording else "soak"
    flow = Flow(name, dead_letter_path=str(out / f"{name}.dead.jsonl"))
    settings = {"reconnect_min_s": 0.2, "reconnect_max_s": 2.0}
    if recording is not None:
        samples = eo.replay("samples", flow, recording)
    else:
        samples = eo.mqtt_source(
            "samples",
            flow,
            TOPIC,
            broker={**_address(broker), **settings},
            channels=["accel"],
            eos_topic=EOS,
            clean_session=False,
            client_id="soak-source",
            session_expiry_s=3600,
        )
    eo.output("raw", eo.map("raw_rows", samples, _raw), eo.jsonl(out / f"{name}.raw.jsonl"))
    windows = eo.window("win", samples, rate_hz=rate_hz, size=64, hop=64, max_gap_s=0.05)
    scores = eo.zscore_detector("detect", eo.features("feat", windows, ["rms", "std"]), threshold=6.0, warmup=5)
    summaries = eo.summarize("summary", scores, every_s=1.0, sink=eo.jsonl(out / f"{name}.summary.jsonl"))
    if recording is None:
        uplink = eo.mqtt_sink(
            UPLINK, broker={**_address(broker), **settings}, spool=out / "outbox.sqlite", drain_timeout_s=10.0
        )
        eo.output("uplink", summaries, uplink)
    return flow


def _address(broker: str) -> dict[str, Any]:
    host, _, port = broker.rpartition(":")
    return {"host": host, "port": int(port)}


class Mosquitto:
    """A broker with a database on disk, killed with SIGKILL and started again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).is_file():
            sys.exit("mosquitto is not installed: sudo apt-get install -y mosquitto")
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "max_queued_messages 0",  # no limit: what a session misses while the flow is down stays queued
                    "max_inflight_messages 1000",
                    "persistence true",
                    f"persistence_location {folder}/",
                    "autosave_interval 1",  # save every second (after every change costs a full save each time)
                    f"log_dest file {folder / 'mosquitto.log'}",
                    "log_type error",
                    "log_type warning",
                    f"user {os.environ.get('USER') or 'root'}",
                ]
            )
            + "\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        sys.exit(f"mosquitto did not start (see {self.folder / 'mosquitto.log'})")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class FlowProcess:
    """``edgeflow run`` of :func:`make_flow` with a snapshot store, as a service manager would run it."""

    def __init__(self, broker: str, folder: Path, rate_hz: float) -> None:
        self.folder = folder
        self.target = f"{Path(__file__).resolve()}:make_flow(broker='{broker}', folder='{folder}', rate_hz={rate_hz})"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        self.starts += 1
        cmd = [sys.executable, "-m", "edgeflow", "run", self.target, "--recovery-dir", str(self.folder / "recovery")]
        cmd += ["--quiet", "--report-json", str(self.folder / f"report.{self.starts}.json")]
        with (self.folder / f"flow.{self.starts}.stderr").open("w") as err:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1

    def rss_mb(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


class Witness:
    """A subscriber with its own persistent session: which stamped messages the broker delivered at all."""

    def __init__(self, broker: str) -> None:
        from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client

        cfg = BrokerConfig.model_validate({**_address(broker), "reconnect_min_s": 0.1, "reconnect_max_s": 1.0})
        self.seen: set[tuple[str, int]] = set()
        self.uplink: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.client = make_client(cfg, "soak-witness", clean_session=False)
        self.client.on_connect = lambda c, *_: c.subscribe([("soak/l1/#", 1), ("soak/up/#", 1)])
        self.client.on_message = self._on_message
        connect_async(self.client, cfg, clean_session=False, session_expiry_s=3600)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        props = dict(getattr(message.properties, "UserProperty", []) or []) if message.properties else {}
        with self._lock:
            if message.topic.startswith("soak/up/"):
                doc = json.loads(message.payload)
                self.uplink.add((doc["sensor"], doc["interval"][0]))
            elif "seq" in props:
                self.seen.add((message.topic, int(props["seq"])))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Sent:
    """What the publisher sent: samples per sensor, unreadable payloads, messages per topic."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    bad: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Unreadable payload id -> (topic, seq)."""
    stamps: dict[tuple[str, int], tuple[str, float, int]] = field(default_factory=dict)
    """(topic, seq) -> (sensor, first ts, samples) of every data message."""
    messages: int = 0
    reconnects: int = 0


def publish(broker: str, sent: Sent, *, seconds: float, rate: float, sensors: int, batch: int, bad_every: int) -> None:
    """Send *rate* samples/s, *batch* samples of one sensor per message, for *seconds*; every *bad_every*-th
    message is a payload that cannot be read."""
    from edgeflow.mqtt.client import BrokerConfig
    from edgeflow.mqtt.codecs import make_codec, stamp_properties
    from edgeflow.mqtt.player import Publisher

    cfg = BrokerConfig.model_validate({**_address(broker), "reconnect_min_s": 0.1, "reconnect_max_s": 1.0})
    pub = Publisher(cfg, 1, reconnect_timeout_s=120)
    codec = make_codec("json", ("accel",))
    per_sensor = rate / sensors
    rng = random.Random(1)
    names = [f"pump-{i + 1}" for i in range(sensors)]
    index = dict.fromkeys(names, 0)
    msg_rate = rate / batch
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        due = t0 + n / msg_rate
        ahead = due - time.perf_counter()
        if ahead > 0.0005:
            pub.idle(ahead)
        sensor = names[n % sensors]
        topic = SAMPLES_AT.format(sensor=sensor)
        stamp = pub.stamp(topic)
        if bad_every and n % bad_every == bad_every - 1:
            tag = f"bad-{n}"
            payload, props = json.dumps({"ts": tag, "accel": 0}).encode(), stamp_properties(stamp)
            sent.bad[tag] = (topic, stamp.seq)
        else:
            k = index[sensor]
            samples = []
            for j in range(k, k + batch):
                ts = T0 + j / per_sensor
                value = 0.3 * math.sin(2 * math.pi * 7.0 * ts) + rng.gauss(0, 0.05)
                samples.append((ts, (value,)))
            index[sensor] = k + batch
            payload, props = codec.encode(samples, None, stamp)
            sent.samples.setdefault(sensor, []).extend(ts for ts, _ in samples)
            sent.values.setdefault(sensor, []).extend(v for _, (v,) in samples)
            sent.stamps[(topic, stamp.seq)] = (sensor, samples[0][0], batch)
        t0 += pub.publish(topic, payload, props)  # time spent reconnecting: keep the pace, no burst after it
        n += 1
    if not pub.wait_acked(120):
        print("warning: not every message was acknowledged by the broker", file=sys.stderr)
    sent.messages = pub.sent
    sent.reconnects = pub.reconnects
    pub.close()


def chaos(
    stop: threading.Event, flow: FlowProcess, broker: Mosquitto, rng: random.Random, every_s: tuple[float, float]
) -> list[str]:
    """Kill the flow (two times in three) or the broker at random moments until *stop*; restart each after a pause."""
    log = []
    t0 = time.monotonic()
    while not stop.wait(rng.uniform(*every_s)):
        if rng.random() < 2 / 3:
            flow.kill()
            pause = rng.uniform(0.1, 2.0)
            time.sleep(pause)
            flow.start()
            log.append(f"{time.monotonic() - t0:.0f} s: flow killed, {pause:.1f} s down")
        else:
            broker.kill()
            pause = rng.uniform(0.2, 3.0)
            time.sleep(pause)
            broker.start()
            log.append(f"{time.monotonic() - t0:.0f} s: broker killed, {pause:.1f} s down")
    return log


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line cut short by SIGKILL
            out.append(json.loads(line))
    return out


def _summaries(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The last copy of each (sensor, interval), without the transport-dependent byte count."""
    return {(r["sensor"], r["interval"][0]): {k: v for k, v in r.items() if k != "raw_bytes"} for r in _lines(path)}


def replay_summaries(sent: Sent, folder: Path, rate_hz: float) -> dict[tuple[str, str], dict[str, Any]]:
    """Summaries of an uninterrupted replay of exactly the samples sent."""
    from edgeflow.runtime import run

    recording = folder / "sent.csv"
    rows = sorted(
        (ts, sensor, v)
        for sensor in sent.samples
        for ts, v in zip(sent.samples[sensor], sent.values[sensor], strict=True)
    )
    recording.write_text("ts,sensor,accel\n" + "".join(f"{ts!r},{s},{v!r}\n" for ts, s, v in rows))
    run(make_flow("127.0.0.1:1", str(folder), rate_hz, recording=str(recording)), handle_signals=False)
    return _summaries(folder / "soak_replay.summary.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to publish (default 3)")
    parser.add_argument("--rate", type=float, default=2000.0, help="samples per second, all sensors (default 2000)")
    parser.add_argument("--sensors", type=int, default=4)
    parser.add_argument("--batch", type=int, default=5, help="samples of one sensor per message (default 5)")
    parser.add_argument("--bad-every", type=int, default=500, help="every n-th message is unreadable (default 500)")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(8.0, 25.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    rate_hz = args.rate / args.sensors
    folder = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    broker = Mosquitto(folder)
    broker.start()
    witness = Witness(broker.address)
    flow = FlowProcess(broker.address, folder, rate_hz)
    flow.start()
    rss: list[tuple[float, int, float]] = []
    sampling = threading.Event()

    def sample_rss() -> None:
        t0 = time.monotonic()
        while not sampling.wait(1.0):
            value = flow.rss_mb()
            if value is not None:
                rss.append((time.monotonic() - t0, flow.starts, value))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    time.sleep(3.0)  # the flow subscribes (its session then exists) before the first sample
    sent = Sent()
    seconds = args.minutes * 60
    print(f"soak: {args.minutes:g} min at {args.rate:,.0f} samples/s, seed {seed}, in {folder}", file=sys.stderr)
    publisher = threading.Thread(
        target=publish,
        args=(broker.address, sent),
        kwargs={
            "seconds": seconds,
            "rate": args.rate,
            "sensors": args.sensors,
            "batch": args.batch,
            "bad_every": args.bad_every,
        },
    )
    stop = threading.Event()
    events: list[str] = []
    chaos_thread = threading.Thread(
        target=lambda: events.extend(chaos(stop, flow, broker, rng, tuple(args.kill_every))), daemon=True
    )
    started = time.monotonic()
    publisher.start()
    chaos_thread.start()
    publisher.join()
    print(f"published for {time.monotonic() - started:.0f} s", file=sys.stderr)
    stop.set()
    chaos_thread.join()
    from edgeflow.mqtt.client import BrokerConfig
    from edgeflow.mqtt.player import Publisher

    eos = Publisher(BrokerConfig.model_validate(broker.address))
    eos.publish(EOS, b"")
    eos.wait_acked(30)
    eos.close()
    assert flow.proc is not None
    print(f"end of stream sent at {time.monotonic() - started:.0f} s", file=sys.stderr)
    try:
        code = flow.proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        flow.kill()
        code = -9
    wall = time.monotonic() - started
    time.sleep(2.0)  # the last summaries reach the witness
    sampling.set()
    witness.close()
    broker.stop()

    processed: dict[str, set[float]] = {}
    handed_on = 0
    for line in _lines(folder / "soak.raw.jsonl"):
        processed.setdefault(line["sensor"], set()).update(line["ts"])
        handed_on += len(line["ts"])
    total = sum(len(v) for v in sent.samples.values())
    unique = sum(len(processed.get(s, set()) & set(ts)) for s, ts in sent.samples.items())
    letters = _lines(folder / "soak.dead.jsonl")
    bad_seen = {tag for tag in sent.bad if any(tag in str(letter.get("payload", "")) for letter in letters)}
    other_letters = [letter for letter in letters if not any(tag in str(letter.get("payload", "")) for tag in sent.bad)]
    lost_samples = total - unique
    lost_messages = [key for key, (sensor, ts0, _n) in sent.stamps.items() if ts0 not in processed.get(sensor, set())]
    lost_bad = [tag for tag in sent.bad if tag not in bad_seen]
    witnessed = sum(1 for key in lost_messages if key in witness.seen)
    reports = [json.loads(p.read_text()) for p in sorted(folder.glob("report.*.json"))]
    final = reports[-1] if reports else {"counts": {}}
    live = _summaries(folder / "soak.summary.jsonl")
    replayed = replay_summaries(sent, folder, rate_hz)
    same = live == replayed
    rss_start = next((mb for t, _n, mb in rss if t >= 5.0), float("nan"))
    rss_end = rss[-1][2] if rss else float("nan")
    rss_max = max((mb for _t, _n, mb in rss), default=float("nan"))
    runs: dict[int, list[tuple[float, float]]] = {}
    for t, n, mb in rss:
        runs.setdefault(n, []).append((t, mb))
    longest = max(runs.values(), key=lambda v: v[-1][0] - v[0][0], default=[(0.0, float("nan"))])
    settled = [(t, mb) for t, mb in longest if t >= longest[0][0] + 5.0] or longest

    rows = [
        (
            "wall time",
            f"{wall:,.0f} s ({args.minutes:g} min publishing at {args.rate:,.0f} samples/s, "
            f"{args.sensors} sensors, {args.batch} samples per message)",
        ),
        ("flow killed (SIGKILL) / broker killed (SIGKILL)", f"{flow.kills} / {broker.kills}"),
        ("messages sent (acknowledged by the broker)", f"{sent.messages:,} ({sent.reconnects} publisher reconnects)"),
        ("samples sent", f"{total:,}"),
        ("samples processed (handed on at least once)", f"{unique:,}"),
        ("unreadable payloads sent / dead-lettered", f"{len(sent.bad):,} / {len(bad_seen):,}"),
        ("other dead letters", f"{len(other_letters):,}"),
        (
            "**lost** (sent, never processed nor dead-lettered)",
            f"**{lost_samples + len(lost_bad):,}**"
            + (f" ({witnessed} of {len(lost_messages)} lost messages reached the witness)" if lost_messages else ""),
        ),
        ("samples handed on again after a restart (duplicates)", f"{handed_on - unique:,}"),
        (
            "redelivered messages dropped by the last run (`mqtt.duplicate_messages`)",
            f"{final['counts'].get('mqtt.duplicate_messages', 0):,}",
        ),
        ("summaries (sensor x 1 s) / equal to an uninterrupted replay", f"{len(live):,} / {'yes' if same else 'NO'}"),
        ("summaries delivered upstream (unique)", f"{len(witness.uplink & set(live)):,} of {len(live):,}"),
        ("flow RSS at start / end / max", f"{rss_start:.0f} / {rss_end:.0f} / {rss_max:.0f} MB"),
        (
            "flow RSS over its longest run without a kill",
            f"{settled[0][1]:.0f} -> {settled[-1][1]:.0f} MB in {settled[-1][0] - settled[0][0]:.0f} s",
        ),
        ("last run's exit code", str(code)),
    ]
    print("| soak | |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nseed {seed}; events: {'; '.join(events)}")
    if not same:
        differ = [k for k in set(live) | set(replayed) if live.get(k) != replayed.get(k)]
        print(f"{len(differ)} summaries differ, e.g. {sorted(differ)[:3]}")
    failed = lost_samples + len(lost_bad) > 0 or code != 0 or not same
    if args.keep or failed:
        print(f"kept {folder}")
        for path in sorted(folder.glob("flow.*.stderr")):
            text = path.read_text()
            if "Traceback" in text or "failed" in text:
                print(f"--- {path.name}\n{text[-3000:]}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
