"""edgeflow: stream-processing dataflows for AI on IoT edge gateways.

The names below are imported on first use, so ``import edgeflow`` (and the
``edgeflow`` command) loads nothing a flow does not need.

>>> import edgeflow.operators as eo
>>> from edgeflow import Flow
>>> flow = Flow("pump")
>>> samples = eo.replay("samples", flow, "examples/data/pump_vibration.csv")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeflow.errors import EdgeflowError, FlowValidationError
    from edgeflow.graph import Flow, Schema, Step, Stream, build_config

__all__ = ["EdgeflowError", "Flow", "FlowValidationError", "Schema", "Step", "Stream", "build_config"]
__version__ = "0.1.0"

_HOMES = {
    "EdgeflowError": "edgeflow.errors",
    "FlowValidationError": "edgeflow.errors",
    "Flow": "edgeflow.graph",
    "Schema": "edgeflow.graph",
    "Step": "edgeflow.graph",
    "Stream": "edgeflow.graph",
    "build_config": "edgeflow.graph",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    msg = f"module 'edgeflow' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
