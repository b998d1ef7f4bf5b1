"""Issue 11.3 (MQTT): with several workers every worker ingests, through a shared subscription, on a real Mosquitto.

The messages are queued at the broker for the flow's persistent sessions before it starts (one session per member
of the shared group), then ``edgeflow run -p 2`` / ``-w 2`` reads them: each message reaches exactly one partition,
the keyed resequencing step puts every sensor's messages back in order, and the summaries equal those of a
one-process replay of the same samples.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgeflow.mqtt.client import BrokerConfig, connect_async, make_client, unique_suffix
from edgeflow.mqtt.player import publish_recording

from .mqtt_support import ROOT, Broker, Collector, FlowThread
from .test_recovery import TEMPLATE, _by_interval, _lines, _slice

GROUP_FILTER = "$share/edgeflow-{name}-samples/plant/+/+/accel"


def _prepare_members(broker: Broker, name: str, members: int) -> None:
    """Open each member's persistent session and shared subscription before anything is published."""
    for i in range(members):
        client_id = f"{name}-source-{i}"
        Collector(broker.address, GROUP_FILTER.format(name=name), client_id=client_id, clean=False).close()
        Collector(broker.address, "plant/eos", client_id=client_id, clean=False).close()


def _run(target: str, tmp_path: Path, *options: str, tag: str) -> subprocess.Popen[str]:
    from tests.test_cli import _free_port_pair

    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'tests' / 'mqtt'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "EDGEFLOW_CLUSTER_PORT": str(_free_port_pair()),
    }
    cmd = [sys.executable, "-m", "edgeflow", "run", target, *options, "-q"]
    cmd += ["--report-json", str(tmp_path / f"report.{tag}.json")]
    err = (tmp_path / f"stderr.{tag}.txt").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
    err.close()
    return proc


def _expected(tmp_path: Path, recording: Path) -> list[dict[str, Any]]:
    from .mqtt_flows import small_flow

    replayed = tmp_path / "replay.jsonl"
    FlowThread(small_flow("replay", str(replayed), recording=str(recording))).join(60)
    return _by_interval(_lines(replayed))


def _raw(tmp_path: Path, stem: str) -> dict[str, list[float]]:
    handed_on: dict[str, list[float]] = {}
    for path in sorted(tmp_path.glob(f"{stem}*.jsonl")):
        for line in _lines(path):
            handed_on.setdefault(line["sensor"], []).extend(line["ts"])
    return handed_on


def _published(recording: Path) -> dict[str, list[float]]:
    from edgeflow.recordings import read_recording

    _, rows = read_recording(recording)
    out: dict[str, list[float]] = {}
    for sensor, ts, _values in rows:
        out.setdefault(sensor, []).append(ts)
    return out


@pytest.mark.parametrize("how", [("-p", "2"), ("-w", "2")], ids=["processes", "workers"])
def test_two_members_share_the_messages_and_summaries_equal_one_process(
    broker: Broker, tmp_path: Path, how: tuple[str, str]
) -> None:
    recording = _slice(tmp_path, "s.csv", 0, 8_000)
    expected = _expected(tmp_path, recording)
    name = "share" + how[0].strip("-")
    out, raw, dead = tmp_path / "summaries.jsonl", tmp_path / "raw.jsonl", tmp_path / "dead.jsonl"
    _prepare_members(broker, name, 2)
    sent = publish_recording(recording, broker.address, template=TEMPLATE, eos_topic="plant/eos")
    assert sent.acked and sent.messages == 8_000 + 1
    target = (
        f"tests/mqtt/mqtt_flows.py:small_flow('{name}', '{out}', broker='{broker.address}', clean_session=False, "
        f"raw='{raw}', dead_letters='{dead}')"
    )
    proc = _run(target, tmp_path, *how, tag="run")
    assert proc.wait(120) == 0, (tmp_path / "stderr.run.txt").read_text()

    handed_on = _raw(tmp_path, "raw")
    for sensor, stamps in _published(recording).items():
        got = handed_on.get(sensor, [])
        assert sorted(got) == sorted(stamps), f"{sensor}: {len(set(stamps) - set(got))} missing, {len(got)} handed on"
        assert got == sorted(got), f"{sensor}: handed on out of order"
    summaries = [r for path in sorted(tmp_path.glob("summaries*.jsonl")) for r in _lines(path)]
    assert _by_interval(summaries) == expected
    assert not any(_lines(p) for p in tmp_path.glob("dead*.jsonl"))
    report = json.loads((tmp_path / "report.run.json").read_text())
    counts = report["counts"]
    assert counts["mqtt.messages"] == 8_000 + 2  # each data message once, the end-of-stream marker in each member
    assert counts.get("mqtt.lost_upstream", 0) == 0 and counts.get("mqtt.duplicates", 0) == 0
    assert counts.get("mqtt.late_messages", 0) == 0 and counts["mqtt.accepted"] == 8_000
    if how[0] == "-p":  # both processes ingested (the broker alternates members message by message)
        per_process = [p["counts"]["mqtt.messages"] for p in report["processes"]]
        assert len(per_process) == 2 and min(per_process) > 1_000, per_process


def _publish_stamped(address: str, topic: str, seqs: list[int], publisher: str) -> None:
    """Publish one JSON sample per number in *seqs* (ts = number / 500), stamped with that number, QoS 1."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    cfg = BrokerConfig.model_validate(address)
    client = make_client(cfg, f"stamper-{unique_suffix()}")
    connect_async(client, cfg)
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    infos = []
    for n in seqs:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("seq", str(n)), ("pub", publisher)]
        payload = json.dumps({"ts": 1_772_438_400 + n / 500, "accel": (n % 7) / 10})
        infos.append(client.publish(topic, payload, qos=1, properties=props))
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_gaps_and_duplicates_are_counted_once_across_members(broker: Broker, tmp_path: Path) -> None:
    """Numbers 1-400 of one topic with 10 missing and 25 sent twice, spread over two members by the broker."""
    name = "sharegaps"
    _prepare_members(broker, name, 2)
    missing = set(range(100, 110))
    seqs = [n for n in range(1, 401) if n not in missing]
    seqs += list(range(200, 225))  # sent again later: a publisher's resend
    _publish_stamped(broker.address, "plant/line1/pump-9/accel", seqs, "pub-a")
    publish_recording(_slice(tmp_path, "none.csv", 0, 0), broker.address, eos_topic="plant/eos")
    out, raw = tmp_path / "summaries.jsonl", tmp_path / "raw.jsonl"
    target = (
        f"tests/mqtt/mqtt_flows.py:small_flow('{name}', '{out}', broker='{broker.address}', clean_session=False, "
        f"raw='{raw}')"
    )
    proc = _run(target, tmp_path, "-w", "2", tag="gaps")
    assert proc.wait(120) == 0, (tmp_path / "stderr.gaps.txt").read_text()
    counts = json.loads((tmp_path / "report.gaps.json").read_text())["counts"]
    assert counts["mqtt.messages"] == len(seqs) + 2
    assert counts["mqtt.lost_upstream"] == 10
    assert counts["mqtt.duplicate_messages"] == 25 and counts["mqtt.duplicates"] == 25
    got = _raw(tmp_path, "raw")["pump-9"]
    assert len(got) == 390 and got == sorted(got)


def test_kill_9_of_one_process_and_a_restart_lose_nothing(broker: Broker, tmp_path: Path) -> None:
    """``-p 2`` with a snapshot store: one process is killed mid-run (the cluster then stops), the run is started
    again and resumes; every sample reaches the flow and the summaries equal a one-process replay."""
    recording = _slice(tmp_path, "s.csv", 0, 16_000)
    expected = _expected(tmp_path, recording)
    name = "sharekill"
    out, raw, dead = tmp_path / "summaries.jsonl", tmp_path / "raw.jsonl", tmp_path / "dead.jsonl"
    _prepare_members(broker, name, 2)
    publish_recording(recording, broker.address, template=TEMPLATE, eos_topic="plant/eos")
    target = (
        f"tests/mqtt/mqtt_flows.py:small_flow('{name}', '{out}', broker='{broker.address}', clean_session=False, "
        f"raw='{raw}', dead_letters='{dead}', snapshot_every_s=0.1, source={{'batch_size': 64}})"
    )
    recovery = ["--recovery-dir", str(tmp_path / "recovery")]
    proc = _run(target, tmp_path, "-p", "2", *recovery, tag="first")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # wait for progress past a few snapshots
        if sum(len(v) for v in _raw(tmp_path, "raw").values()) > 4_000:
            break
        time.sleep(0.02)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert proc.poll() is None and children, "the run ended before it could be killed: make the input longer"
    os.kill(int(children[-1]), signal.SIGKILL)  # one of the two processes, without a goodbye
    proc.wait(60)  # the other one cannot go on without it
    for child in children[:-1]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    again = _run(target, tmp_path, "-p", "2", *recovery, tag="second")
    assert again.wait(120) == 0, (tmp_path / "stderr.second.txt").read_text()

    handed_on = _raw(tmp_path, "raw")
    for sensor, stamps in _published(recording).items():
        got = set(handed_on.get(sensor, []))
        assert got == set(stamps), f"{sensor}: {len(set(stamps) - got)} samples lost"
    summaries = [r for path in sorted(tmp_path.glob("summaries*.jsonl")) for r in _lines(path)]
    assert _by_interval(summaries) == expected
    assert not any(_lines(p) for p in tmp_path.glob("dead*.jsonl"))
    counts = json.loads((tmp_path / "report.second.json").read_text())["counts"]
    assert counts.get("mqtt.lost_upstream", 0) == 0 and counts.get("mqtt.late_messages", 0) == 0
