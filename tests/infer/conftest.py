"""Fixtures for the inference tests: the committed reference model and features of the shipped recording."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .infer_support import MODEL_DIR, RECORDING, load_build_module


@pytest.fixture(scope="session")
def build_module() -> ModuleType:
    return load_build_module()


@pytest.fixture(scope="session")
def recorded(build_module: ModuleType) -> Any:
    """Feature vectors (and fault labels) of every window of the shipped recording, from the real flow steps."""
    return build_module.recording_features(RECORDING)


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A private copy of the reference model folder; returns its manifest path."""
    folder = tmp_path / "pump_ae"
    shutil.copytree(MODEL_DIR, folder)
    return folder / "manifest.json"
