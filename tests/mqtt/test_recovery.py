"""Issue 8.7 (MQTT part): input acknowledged only once a snapshot covers it, so kill -9 at any moment loses nothing.

A flow with a snapshot store reads a persistent QoS 1 session on a real Mosquitto while a publisher sends stamped
samples; the flow is killed with SIGKILL several times at random moments and restarted each time. At the end every
published sample reached the flow (a sink of raw samples holds each one), the summaries, each interval's last copy,
equal those of an uninterrupted replay of the same samples, and redelivered input was counted as duplicates.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edgeflow.mqtt.player import PublishReport, publish_recording
from edgeflow.recordings import read_recording

from .mqtt_support import RECORDING, ROOT, Broker, Collector, FlowThread

TEMPLATE = "plant/line1/{sensor}/accel"


def _slice(folder: Path, name: str, first: int, last: int) -> Path:
    lines = RECORDING.read_text().splitlines(keepends=True)
    path = folder / name
    path.write_text(lines[0] + "".join(lines[1 + first : 1 + last]))
    return path


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _by_interval(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last copy of each (sensor, interval), without the transport-dependent byte count, in order."""
    last = {(r["sensor"], r["interval"][0]): {k: v for k, v in r.items() if k != "raw_bytes"} for r in records}
    return [last[k] for k in sorted(last)]


class FlowProcess:
    """`edgeflow run` of a small MQTT flow with a snapshot store, as a service would run it."""

    def __init__(self, target: str, recovery: Path, folder: Path) -> None:
        self.target = target
        self.recovery = recovery
        self.folder = folder
        self.runs = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.runs += 1
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'mqtt'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cmd = [sys.executable, "-m", "edgeflow", "run", self.target, "--recovery-dir", str(self.recovery)]
        cmd += ["--quiet", "--report-json", str(self.folder / f"report.{self.runs}.json")]
        err = (self.folder / f"stderr.{self.runs}.txt").open("w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        err.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def stderr(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.folder.glob("stderr.*.txt")))


def _prepare_session(broker: Broker, client_id: str) -> None:
    """Open the flow's persistent session before anything is published: the broker keeps what comes before it runs."""
    for topic in ("plant/+/+/accel", "plant/eos"):
        Collector(broker.address, topic, client_id=client_id, clean=False).close()


def test_sigkill_at_random_moments_loses_no_input_and_no_summary(broker: Broker, tmp_path: Path) -> None:
    """The broker keeps the flow's session in memory (it is not restarted here; the soak benchmark restarts it)."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    recording = _slice(tmp_path, "s.csv", 0, 12_000)
    replayed = tmp_path / "replay.jsonl"
    from .mqtt_flows import small_flow

    FlowThread(small_flow("replay", str(replayed), recording=str(recording))).join(60)
    expected = _by_interval(_lines(replayed))
    name = "kill9"
    out, raw, dead = tmp_path / "summaries.jsonl", tmp_path / "raw.jsonl", tmp_path / "dead.jsonl"
    target = (
        f"tests/mqtt/mqtt_flows.py:small_flow('{name}', '{out}', broker='{broker.address}', clean_session=False, "
        f"raw='{raw}', dead_letters='{dead}', snapshot_every_s=0.25)"
    )
    _prepare_session(broker, f"{name}-source")
    flow = FlowProcess(target, tmp_path / "recovery", tmp_path)
    flow.start()
    sent: list[PublishReport] = []
    publisher = threading.Thread(
        target=lambda: sent.append(publish_recording(recording, broker.address, template=TEMPLATE, batch=4, rate=1_500))
    )
    publisher.start()
    kills = 0
    while publisher.is_alive() and kills < 4:
        size = raw.stat().st_size if raw.is_file() else 0
        deadline = time.monotonic() + 30
        while (raw.stat().st_size if raw.is_file() else 0) == size and time.monotonic() < deadline:
            time.sleep(0.01)  # it hands on samples again: started, resumed, subscribed
        # a random moment: before the first snapshot, between a snapshot and its acknowledgements, or well after;
        # the last kill comes after a few snapshots, so the last run resumes from one
        time.sleep(rng.uniform(1.0, 1.5) if kills == 3 else rng.uniform(0.0, 1.2))
        if not publisher.is_alive():
            break
        flow.kill()
        kills += 1
        flow.start()
    publisher.join(60)
    assert sent and sent[0].acked, f"the publisher did not finish (seed {seed})"
    publish_recording(_slice(tmp_path, "none.csv", 0, 0), broker.address, eos_topic="plant/eos")
    code = flow.wait(60)
    assert code == 0, f"seed {seed}: exit {code}\n{flow.stderr()}"
    assert kills >= 2, f"seed {seed}: only {kills} kills happened while publishing"

    _, rows = read_recording(recording)
    published: dict[str, list[float]] = {}
    for sensor, ts, _values in rows:
        published.setdefault(sensor, []).append(ts)
    total = sum(len(v) for v in published.values())
    assert total == 12_000
    handed_on: dict[str, list[float]] = {}
    for line in _lines(raw):
        handed_on.setdefault(line["sensor"], []).extend(line["ts"])
    for sensor, stamps in published.items():
        got = handed_on.get(sensor, [])
        assert set(got) == set(stamps), f"seed {seed}: {sensor} lost {len(set(stamps) - set(got))} samples"
    # what a killed run handed on after its last persisted snapshot comes again after the restart: how much
    # depends on when the kill fell (before a new run's first snapshot, everything it handed on repeats),
    # so the figure is reported, not asserted; bench/bench_soak.py measures it over minutes (2-3 %)
    repeated = sum(len(v) for v in handed_on.values()) - total
    assert _lines(dead) == [], f"seed {seed}: dead letters (a duplicate reached the window step?)"
    assert _by_interval(_lines(out)) == expected, f"seed {seed}: summaries differ from the uninterrupted replay"
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("report.*.json"))]
    assert reports, "the last run wrote no report"
    final = reports[-1]["counts"]
    assert final.get("mqtt.lost_upstream", 0) == 0
    assert final.get("mqtt.acked", 0) > 0  # acknowledged late, by this flow
    if kills == 4:  # resumed from a snapshot: what it covered but had not acknowledged came again, and was dropped
        assert final.get("mqtt.duplicates", 0) > 0
    print(f"seed {seed}: {kills} kills, {repeated} samples handed on again, final run {final}")
