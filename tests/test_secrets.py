"""Issue 8.12: a password never appears in an error, a report or a dead letter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgeflow.operators as eo
from edgeflow import Flow, FlowValidationError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "S3cr3t-P@ss"


@pytest.mark.parametrize(
    "broker",
    [
        {"host": "edge", "port": "not-a-port", "username": "gw", "password": SECRET},
        f"gw:{SECRET}@edge:99999",
        {"host": "edge", "username": "gw", "password": SECRET, "tls": "maybe"},
    ],
)
def test_setting_errors_hide_the_password(broker: object) -> None:
    with pytest.raises(FlowValidationError) as info:
        eo.mqtt_source("samples", Flow("f"), "plant/{sensor}", broker=broker)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.value)


def test_an_unreachable_broker_with_a_password_is_reported_without_it(tmp_path: Path) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text(
        "import edgeflow.operators as eo\nfrom edgeflow import Flow\nflow = Flow('secret')\n"
        f"s = eo.mqtt_source('samples', flow, 'plant/{{sensor}}', broker='gw:{SECRET}@127.0.0.1:1', "
        "connect_timeout_s=0.5)\n"
        "eo.output('out', s, eo.stdout())\n"
    )
    for debug in ([], ["--debug"]):
        done = subprocess.run(
            [sys.executable, "-m", "edgeflow", *debug, "validate", str(flow)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
        assert done.returncode == 3, done.stderr
        assert "no MQTT broker reachable at 127.0.0.1:1 (Connection refused)" in done.stderr
        if not debug:
            assert SECRET not in done.stdout + done.stderr
