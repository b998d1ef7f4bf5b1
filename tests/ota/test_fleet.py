"""A simulated fleet of 200 gateways (the real agent, slot and runtime each) against one real Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeflow.ota.gates import Gates
from edgeflow.ota.sim import run_scenarios
from tests.mqtt.mqtt_support import Broker

from .ota_support import MODEL_DIR, TEST_KEY, trusted

GATEWAYS = 200


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", persistence=True)
    b.start()
    yield b
    b.stop()


def test_staged_rollouts_on_a_simulated_fleet(tmp_path: Path, broker: Broker, recorded: Any) -> None:
    lines: list[str] = []
    results = {
        r.name.split(" (")[0]: r
        for r in run_scenarios(
            broker,
            tmp_path / "fleet",
            recorded.x,
            shipped=MODEL_DIR / "manifest.json",
            key=TEST_KEY,
            trusted=trusted(),
            gateways=GATEWAYS,
            gates=Gates(windows=12, health_windows=24),
            settle_s=0.5,
            only=("good", "false_alarms", "crash_on_load", "restart"),  # all six: python -m edgeflow.ota.sim
            say=lines.append,
        )
    }
    print("\n".join(lines))
    print("\n".join(f"{r.name}: {r.detail}" for r in results.values() if r.detail != "[]"))
    good = results["good model"]
    assert good.outcome == "complete" and good.on_version == good.reached == GATEWAYS
    for name in ("false alarms", "crashes on load"):
        bad = results[name]
        assert bad.outcome.startswith("aborted: stage 1")
        assert bad.reached <= GATEWAYS // 10 and bad.served == 0 and bad.on_version == 0
        assert bad.without_working_model == 0  # everyone still on 1.1.0
    restart = next(r for name, r in results.items() if name.endswith("restart mid-update"))
    assert restart.outcome == "complete" and restart.on_version == GATEWAYS and restart.without_working_model == 0
