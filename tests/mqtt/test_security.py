"""Issue 8.12: credentials never shown, refused logins back off and make the run exit 5, TLS failures say why."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import edgeflow.operators as eo
from edgeflow import Flow
from edgeflow.compiler import compile_flow
from edgeflow.errors import FlowValidationError
from edgeflow.mqtt.client import BrokerConfig, make_client
from edgeflow.mqtt.player import publish_recording

from .mqtt_support import RECORDING, ROOT, Broker, Collector, FlowThread
from .tls_support import make_ca, make_server_cert

SECRET = "S3cr3t-P@ss"  # an '@' inside: the address must split at the last one
USER = "edge"


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_broker_address_with_a_password_holding_at_signs() -> None:
    cfg = BrokerConfig.model_validate(f"mqtts://{USER}:{SECRET}@gw.example:8884")
    assert (cfg.username, cfg.host, cfg.port, cfg.tls) == (USER, "gw.example", 8884, True)
    assert cfg.password is not None and cfg.password.get_secret_value() == SECRET
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.model_dump())
    assert BrokerConfig.model_validate("user@127.0.0.1:1884").username == "user"
    with pytest.raises(ValueError, match=r"broker 'edge:\*\*\*@'") as err:
        BrokerConfig.model_validate(f"{USER}:{SECRET}@")
    assert SECRET not in str(err.value)


def test_password_without_tls_to_another_host_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgeflow.mqtt")
    make_client(BrokerConfig.model_validate(f"{USER}:{SECRET}@127.0.0.1:1883"), "loopback")
    make_client(BrokerConfig.model_validate(f"{USER}:{SECRET}@localhost:1883"), "loopback-name")
    assert not caplog.records  # on this host the password does not cross a network
    make_client(BrokerConfig.model_validate(f"{USER}:{SECRET}@192.0.2.7:1883"), "remote")
    make_client(BrokerConfig.model_validate(f"{USER}:{SECRET}@192.0.2.7:1883"), "remote-again")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "sent without TLS" in warned[0] and "mqtts://192.0.2.7" in warned[0]
    assert SECRET not in warned[0]
    caplog.clear()
    make_client(BrokerConfig.model_validate(f"mqtts://{USER}:{SECRET}@192.0.2.8:8883"), "tls")
    assert not caplog.records


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("certs")
    ca, other = make_ca(folder, "gateway-ca"), make_ca(folder, "stranger-ca")
    return {
        "ca": ca.cert,
        "good": make_server_cert(ca, folder, "good"),
        "expired": make_server_cert(ca, folder, "expired", expired=True),
        "hostname": make_server_cert(ca, folder, "hostname", hosts=("broker.elsewhere.example",)),
        "unknown_ca": make_server_cert(other, folder, "unknown"),
    }


def _tls_broker(folder: Path, files: dict[str, Path]) -> Broker:
    broker = Broker(folder, tls=files)
    broker.start()
    return broker


def test_tls_with_the_right_ca_carries_samples(tmp_path: Path, certificates: dict[str, Any]) -> None:
    broker = _tls_broker(tmp_path / "tls", certificates["good"])
    try:
        tls = {"host": "localhost", "port": broker.port, "tls": True, "ca_certs": certificates["ca"]}
        flow = Flow("tls-ok", dead_letter_path=str(tmp_path / "dead.jsonl"))
        samples = eo.mqtt_source(
            "samples", flow, "plant/{line}/{sensor}/accel", broker=tls, channels=["accel"], eos_topic="plant/eos"
        )
        eo.output("out", samples, eo.jsonl(tmp_path / "out.jsonl"))
        running = FlowThread(flow)
        _wait(lambda: running.count("mqtt.subscriptions") >= 1, 10, "the source to subscribe over TLS")
        sent = publish_recording(
            RECORDING, BrokerConfig(**tls), template="plant/l1/{sensor}/accel", limit=200, eos_topic="plant/eos"
        )
        report = running.join(20)
        cli = _cli_publish(broker.port, certificates["ca"])  # the CLI takes the same TLS settings
    finally:
        broker.stop()
    assert cli.exit_code == 0 and "published 40 samples" in cli.output, cli.output
    assert sent.acked and report.stats.samples_in == 200 and report.problem is None


def _cli_publish(port: int, ca: Path) -> Any:
    from typer.testing import CliRunner

    from edgeflow.cli import app

    args = ["publish", str(RECORDING), "--broker", f"localhost:{port}", "--ca-certs", str(ca), "--limit", "40"]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("expired", "the broker's certificate has expired"),
        ("hostname", "the broker's certificate does not name the host 'localhost' (hostname mismatch)"),
        ("unknown_ca", "the broker's certificate is signed by an unknown CA"),
    ],
)
def test_tls_failure_says_which_certificate_check_failed(
    tmp_path: Path, certificates: dict[str, Any], case: str, said: str
) -> None:
    broker = _tls_broker(tmp_path / case, certificates[case])
    try:
        tls = {"host": "localhost", "port": broker.port, "tls": True, "ca_certs": certificates["ca"]}
        flow = Flow(f"tls-{case}")
        eo.output("out", eo.mqtt_source("samples", flow, "s/{sensor}", broker=tls), eo.jsonl(tmp_path / "o.jsonl"))
        with pytest.raises(FlowValidationError, match="the TLS connection to localhost") as err:
            compile_flow(flow)  # the source's compile-time check makes the handshake
        assert said in str(err.value) and "Hint: check ca_certs" in str(err.value)

        # a sink with an outbox file is not probed: it finds out while running, and the run is a problem
        flow = Flow(f"tls-sink-{case}")
        head = tmp_path / "head.csv"
        head.write_text("".join(RECORDING.read_text().splitlines(keepends=True)[:6001]))  # 1.5 s of 4 sensors
        replay = eo.replay("samples", flow, str(head))
        summaries = eo.summarize(
            "summary",
            eo.zscore_detector("z", eo.features("f", eo.window("w", replay, rate_hz=500, size=64, hop=64), ["rms"])),
            every_s=0.5,
        )
        eo.output(
            "up", summaries, eo.mqtt_sink("up/{sensor}", broker=tls, spool=tmp_path / "o.sqlite", drain_timeout_s=0.5)
        )
        report = FlowThread(flow).join(30)
        cli = _cli_publish(broker.port, certificates["ca"])
    finally:
        broker.stop()
    assert cli.exit_code == 1 and said in cli.output and "Hint: check --ca-certs" in cli.output, cli.output
    assert report.problem is not None and said in report.problem, report.problem
    assert "never connected to the MQTT broker at localhost" in report.problem
    assert report.stats.counts["mqtt.sink_left_in_spool"] == report.stats.items_out > 0


def test_refused_login_backs_off_and_is_a_run_problem(tmp_path: Path) -> None:
    """The source retries at 0.05, 0.1, 0.2, 0.4, 0.4 ... s (not in a loop); a run that never got in is not trusted."""
    broker = Broker(tmp_path / "auth", users={USER: SECRET})
    broker.start()
    try:
        wrong = {"host": "127.0.0.1", "port": broker.port, "username": USER, "password": "wrong"}
        settings = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.4}
        flow = Flow("refused")
        samples = eo.mqtt_source("samples", flow, "s/{sensor}", broker={**wrong, **settings}, idle_timeout_s=2.0)
        eo.output("out", samples, eo.jsonl(tmp_path / "o.jsonl"))
        report = FlowThread(flow).join(30)
    finally:
        broker.stop()
    refused = report.stats.counts.get("mqtt.connect_refused", 0)
    assert 4 <= refused <= 10, f"{refused} refused logins in about 2 s"
    assert report.problem is not None
    assert "step 'samples': never connected to the MQTT broker at 127.0.0.1" in report.problem
    assert "the broker refused the login" in report.problem and "check username and password" in report.problem


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeflow", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_secrets_never_appear_in_any_output(tmp_path: Path) -> None:
    """A password-protected broker: a good run, a refused run, bad settings, publish and record; grep everything."""
    broker = Broker(tmp_path / "auth", users={USER: SECRET, "device": SECRET})
    broker.start()
    outputs: list[str] = []
    try:
        address = f"{USER}:{SECRET}@127.0.0.1:{broker.port}"
        out, spool = tmp_path / "summary.jsonl", tmp_path / "outbox.sqlite"
        dead, report = tmp_path / "dead.jsonl", tmp_path / "report.json"
        target = f"flows/pump_mqtt.py:make_flow(out='{out}', spool='{spool}', dead_letters='{dead}', name='secret_run')"
        uplink = Collector(f"127.0.0.1:{broker.port}", "edgeflow/#", username=USER, password=SECRET)
        env = {"EDGEFLOW_MQTT_BROKER": address}
        flow = subprocess.Popen(
            [sys.executable, "-m", "edgeflow", "run", target, "--report-json", str(report), "--no-progress"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait(lambda: "as edgeflow-secret_run-samples" in broker.log(), 30, "the flow to log in")
        bad = Collector(f"127.0.0.1:{broker.port}", "x", username="device", password=SECRET)
        for payload in (b"not json", b'{"ts": "yesterday", "accel": 1}'):
            bad.client.publish("plant/line1/pump-9/accel", payload, qos=1).wait_for_publish(5)
        bad.close()
        published = _run(
            [
                "publish",
                str(RECORDING),
                "--broker",
                address,
                "--limit",
                "6000",
                "--batch",
                "20",
                "--eos-topic",
                "plant/eos",
            ]
        )
        stdout, stderr = flow.communicate(timeout=60)
        outputs += [stdout, stderr, published.stdout, published.stderr]
        assert flow.returncode == 0, stderr
        assert uplink.wait_for(1, 10), "no summary went up"
        uplink.close()
        files = [out, dead, report]
        assert all(path.is_file() for path in files)
        assert json.loads(report.read_text())["dead_letters"] == 2
        outputs += [path.read_text() for path in files]
        outputs += [payload.decode() for _topic, payload in uplink.messages]

        refused = _run(
            ["run", "flows/pump_mqtt.py:make_flow(idle_timeout_s=1.5, eos_topic=None, spool=None, name='refused')"],
            env={"EDGEFLOW_MQTT_BROKER": f"{USER}:wrong-{SECRET}@127.0.0.1:{broker.port}"},
        )
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 5, refused.stderr
        assert "the broker refused the login" in refused.stderr

        invalid = _run(["validate", f"flows/pump_mqtt.py:make_flow(broker='{USER}:{SECRET}@127.0.0.1:0')"])
        outputs += [invalid.stdout, invalid.stderr]
        assert invalid.returncode == 3
        recorded = _run(
            [
                "record",
                "-o",
                str(tmp_path / "rec.jsonl"),
                "--broker",
                f"127.0.0.1:{broker.port}",
                "-u",
                USER,
                "-d",
                "0.5",
            ],
            env={"EDGEFLOW_MQTT_PASSWORD": SECRET},
        )
        outputs += [recorded.stdout, recorded.stderr]
        assert recorded.returncode == 0, recorded.stderr
        outputs.append(broker.log())
    finally:
        broker.stop()
    leaks = [text for text in outputs if SECRET in text]
    assert not leaks, f"the password appears in: {[text[:300] for text in leaks]}"
    assert "published 6,000 samples" in published.stderr
