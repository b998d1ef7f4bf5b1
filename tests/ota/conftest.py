"""Fixtures for the OTA tests: real features of the shipped recording, computed once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infer.infer_support import RECORDING, load_build_module


@pytest.fixture(scope="session")
def recorded() -> Any:
    """Feature vectors (x), labels (y: 1 fault, 0 healthy, -1 edge) and sensors of every window, in time order."""
    return load_build_module().recording_features(RECORDING)
