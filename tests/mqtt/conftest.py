"""A real Mosquitto on a free loopback port per test (helpers live in mqtt_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .mqtt_support import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "persistent-broker", persistence=True)
    b.start()
    yield b
    b.stop()
