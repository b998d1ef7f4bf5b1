"""Paths and helpers shared by the inference tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["MANIFEST", "MODEL_DIR", "RECORDING", "ROOT", "load_build_module"]

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "pump_ae"
MANIFEST = MODEL_DIR / "manifest.json"
RECORDING = ROOT / "examples" / "data" / "pump_vibration.csv"


def load_build_module() -> ModuleType:
    """``models/build.py`` as a module (it imports TensorFlow only inside ``build``)."""
    name = "_pump_ae_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "models" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
