"""Built-in operators: plain functions ``(step_id, up, ...) -> Stream``.

Operators that need a heavy dependency (MQTT, the model runtime) are imported
only when a flow first uses them, so a flow that does not pays nothing for them.

>>> import edgeflow.operators as eo
>>> sorted(eo.__all__)[:4]
['ewma_detector', 'features', 'filter', 'infer']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgeflow.operators.baselines import robust_detector, seasonal_detector
from edgeflow.operators.custom import filter, map
from edgeflow.operators.detect import ewma_detector, zscore_detector
from edgeflow.operators.features import features
from edgeflow.operators.output import jsonl, output, stdout
from edgeflow.operators.replay import replay
from edgeflow.operators.stateful import stateful
from edgeflow.operators.summarize import summarize
from edgeflow.operators.window import window
from edgeflow.operators.window_feature import window_feature

if TYPE_CHECKING:
    from edgeflow.operators.inference import infer
    from edgeflow.operators.mqtt import mqtt_sink, mqtt_source
    from edgeflow.operators.river_anomaly import river_detector

__all__ = [
    "ewma_detector",
    "features",
    "filter",
    "infer",
    "jsonl",
    "map",
    "mqtt_sink",
    "mqtt_source",
    "output",
    "replay",
    "river_detector",
    "robust_detector",
    "seasonal_detector",
    "stateful",
    "stdout",
    "summarize",
    "window",
    "window_feature",
    "zscore_detector",
]

_LAZY = {
    "infer": "edgeflow.operators.inference",
    "mqtt_sink": "edgeflow.operators.mqtt",
    "mqtt_source": "edgeflow.operators.mqtt",
    "river_detector": "edgeflow.operators.river_anomaly",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    msg = f"module 'edgeflow.operators' has no attribute {name!r}"
    raise AttributeError(msg)
